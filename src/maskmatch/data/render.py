"""Pen strokes and users' bitmaps to one normalized grayscale image distribution.

Image convention: every image here is a uint8 2-D numpy array (H, W), ink BRIGHT (255) on a
DARK (0) background, so zero padding equals background.

Scale: CROHME subsets are recorded at scales ~10,000 times apart and users' images come at any
resolution, so the scale is fixed by a statistic of the ink itself, `size_statistic`: over the
8-connected ink components, the longer side of the bounding box minus the stroke width (the
extent of the pen's path); dots ignored; summarized by the interquartile mean (the mean of the
middle half). Why this one:
  * components are what a bitmap offers, and most handwritten symbols are one component
    (multi-stroke symbols such as +, x, 4, k, pi, sqrt touch themselves): it measures symbols;
  * the longer side counts flat symbols (-, =) at their width, not their near-zero height;
  * the middle half ignores the outliers on both sides: fraction bars, tall brackets, big
    operators, scripts, commas, neighbours that touch; its mean, unlike the median, averages the
    pixel rounding of single components away (so a render measures 40.0, not 39 or 41);
  * subtracting the stroke width makes it independent of the pen's thickness.
Checked on 2,200 CROHME expressions against their symbol-level truth (a per-expression symbol
size fitted across symbol classes), it does as well as any candidate tried (median or
percentiles of stroke or component extents, median height of non-flat components): +-30% per
expression (log std 0.27; the spread of handwriting itself), subsets within +-10% of each other
(MathBrush +14%, the 25-sample extension set excepted).
Limit: a pen thicker than ~1/5 of the symbols merges neighbours into bigger components and the
image comes out smaller (a 9 px pen at 40 px symbols: median -4%, 1 image in 10 >23% small).

`render_strokes` measures it on quick binary renders of the strokes at the output pen width,
`bitmap.normalize_bitmap` on the binarized image at its own (measured) pen width; both then scale so it
equals `RenderConfig.symbol_size`, draw `RenderConfig.stroke_width` wide anti-aliased strokes and
crop to the ink plus padding, so training renders and users' images meet in one distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

EIGHT = np.ones((3, 3), bool)  # 8-connectivity: a thin diagonal line is one component


@dataclass(frozen=True)
class RenderConfig:
    symbol_size: float = 40.0  # target of size_statistic, px: symbols ~40 px, ~6 rows fit max_height
    stroke_width: float = 3.0  # output pen width, px: survives 16x downsampling, keeps small loops open
    padding: int = 8  # px of background on each side: room for convolutions' zero padding
    max_height: int = 256  # a taller image is scaled down uniformly (strokes too), never cropped or dropped
    max_width: int = 1024  # same for width; ~25 symbols fit before a long expression is scaled down
    supersample: int = 4  # draw at 4x and box-filter down: anti-aliasing with 1/4 px precision

    def __post_init__(self):
        if min(self.symbol_size, self.stroke_width) <= 0 or self.padding < 0 or self.supersample < 1:
            raise ValueError(f"invalid {self}")
        if min(self.max_height, self.max_width) < 2 * self.padding + 2 * self.stroke_width + 2:
            raise ValueError(f"max_height/max_width leave no room for ink: {self}")


# ---------------------------------------------------------------- the size statistic


def size_statistic(mask: np.ndarray, stroke_width: float) -> float:
    """Typical symbol size, in pixels, of a binary ink image `mask` (H, W) bool.

    Interquartile mean (the mean of the middle half, a smoother median) over 8-connected
    components of max(bbox height, bbox width) - stroke_width, ignoring dots: components whose
    extent is below 2 * stroke_width or a quarter of a first such mean (i-dots, decimal points,
    primes, specks; the second bound holds where a low resolution blurs the first). With only
    dots (\\ldots), the extent of all the ink; 0.0 when that too is a dot or there is no ink.
    """
    labels, n = ndimage.label(mask, structure=EIGHT)
    if n == 0:
        return 0.0
    boxes = ndimage.find_objects(labels)
    ext = np.sort([max(r.stop - r.start, c.stop - c.start) - stroke_width for r, c in boxes])
    big = ext[ext >= 2 * stroke_width]
    if big.size:
        return _middle_mean(ext[ext >= max(2 * stroke_width, _middle_mean(big) / 4)])
    rows, cols = np.nonzero(mask)
    total = max(np.ptp(rows), np.ptp(cols)) + 1 - stroke_width
    return float(total) if total >= 2 * stroke_width else 0.0


def _middle_mean(sorted_values: np.ndarray) -> float:
    """Interquartile mean: robust like the median, but averages the pixel rounding away."""
    n = sorted_values.size
    return float(np.mean(sorted_values[n // 4 : n - n // 4]))


def fit_scale(ext_h: float, ext_w: float, cfg: RenderConfig) -> float:
    """Uniform factor <= 1 that fits ink of path extent (ext_h, ext_w) px, plus strokes and padding."""
    room_h = cfg.max_height - 2 * cfg.padding - 2  # 2 px slack for anti-aliasing's bleed
    room_w = cfg.max_width - 2 * cfg.padding - 2
    return min(1.0, room_h / (ext_h + cfg.stroke_width), room_w / (ext_w + cfg.stroke_width))


def finish(canvas: np.ndarray, ss: int, cfg: RenderConfig) -> np.ndarray:
    """uint8 canvas supersampled ss times -> box-filtered, cropped to the ink, padded, within bounds."""
    return _finish_placed(canvas, ss, cfg)[0]


def _finish_placed(canvas: np.ndarray, ss: int, cfg: RenderConfig) -> tuple[np.ndarray, int, int, float]:
    """`finish`, and where it put the reduced canvas: (image, top, left, k), canvas px (X, Y) / ss landing at
    ((X / ss - left) k + padding, (Y / ss - top) k + padding)."""
    img = Image.fromarray(canvas)
    if ss > 1:
        img = img.reduce(ss)
    out = np.asarray(img)
    rows, cols = np.nonzero(out.any(1))[0], np.nonzero(out.any(0))[0]
    if rows.size == 0:  # cannot happen with a positive stroke width; keep a valid image anyway
        return np.zeros((2 * cfg.padding + 1, 2 * cfg.padding + 1), np.uint8), 0, 0, 1.0
    out = out[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    room_h, room_w = cfg.max_height - 2 * cfg.padding, cfg.max_width - 2 * cfg.padding
    k = 1.0
    if out.shape[0] > room_h or out.shape[1] > room_w:  # rounding overshoot: a pixel or two at most
        k = min(room_h / out.shape[0], room_w / out.shape[1])
        size = (max(1, int(out.shape[1] * k)), max(1, int(out.shape[0] * k)))
        out = np.asarray(Image.fromarray(out).resize(size, Image.Resampling.BOX))
    return np.pad(out, cfg.padding), int(rows[0]), int(cols[0]), k


# ---------------------------------------------------------------- strokes


def _draw(strokes: list[np.ndarray], width: float, shape: tuple[int, int]) -> np.ndarray:
    """Draws strokes (n_i, 2) of (x, y) pixel coordinates with round caps and joints -> uint8 (H, W)."""
    img = Image.new("L", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(img)
    w = max(1, round(width))
    r = (w - 1) / 2  # PIL's ellipse box is inclusive: x - r .. x + r spans w pixels
    for s in strokes:
        p = np.round(s, 2)
        if len(p) > 1:
            p = p[np.concatenate([[True], np.any(p[1:] != p[:-1], axis=1)])]  # repeated points
        if len(p) > 1:
            draw.line(p.ravel().tolist(), fill=255, width=w)
        # round caps, and round joints where the path turns by more than ~20 degrees
        # (PIL's own joint="curve" is pure Python per joint, too slow for dense CROHME traces)
        at = [0, len(p) - 1]
        if len(p) > 2 and w > 2:
            d = np.diff(p, axis=0)
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            at += (np.nonzero(np.sum(d[1:] * d[:-1], axis=1) < 0.94)[0] + 1).tolist()
        for x, y in p[np.unique(at)]:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    return np.asarray(img)


def _strokes_scale(strokes: list[np.ndarray], cfg: RenderConfig) -> float:
    """Pixels per pen unit that bring size_statistic of the render to cfg.symbol_size.

    strokes: (n_i, 2) arrays with the ink's top-left at the origin.
    """
    ext = np.array([np.ptp(s, axis=0).max() for s in strokes])
    total = max(np.concatenate(strokes).max(axis=0))
    if total == 0:  # a single dot: any scale
        return 1.0
    # start from the median stroke (strokes shorter than 5% of the longest are dots), then measure
    # the component statistic on quick 1x binary renders at the output stroke width, as
    # normalize_bitmap would see the output, and rescale until it is symbol_size (merging of
    # nearby strokes depends on the scale, so it takes a few steps; usually 1 or 2)
    scale = cfg.symbol_size / (np.median(ext[ext >= 0.05 * ext.max()]) if ext.max() > 0 else total)
    m = cfg.stroke_width
    for _ in range(3):
        scale = min(scale, 4000 / total)  # bounds the canvas for pathological inputs
        shape = np.ceil(np.concatenate(strokes).max(axis=0)[::-1] * scale + 2 * m + 2).astype(int)
        mask = _draw([s * scale + m for s in strokes], m, tuple(shape)) > 127
        stat = size_statistic(mask, m)
        if stat <= 0 or abs(stat - cfg.symbol_size) < 0.5:
            break
        scale *= cfg.symbol_size / stat
    return scale


def symbol_size(strokes: list[np.ndarray], cfg: RenderConfig = RenderConfig()) -> float:
    """The strokes' typical symbol size (size_statistic of their render at `cfg`) in their own units."""
    pts = [np.asarray(s, np.float64).reshape(-1, 2) for s in strokes]
    pts = [s for s in pts if len(s)]
    if not pts:
        raise ValueError("no ink: the strokes hold no point")
    origin = np.concatenate(pts).min(axis=0)
    return cfg.symbol_size / _strokes_scale([s - origin for s in pts], cfg)


@dataclass(frozen=True)
class Placement:
    """Where `place_strokes` drew the input: image pixel = input point * scale + (x, y), both axes alike."""

    scale: float
    x: float
    y: float


def render_strokes(strokes: list[np.ndarray], cfg: RenderConfig = RenderConfig()) -> np.ndarray:
    """Pen strokes -> normalized uint8 image (H, W), ink 255 on 0.

    strokes: (n_i, 2) float arrays of (x, y), y pointing down; one point is a dot. Any scale and
    offset; output is scaled so size_statistic == cfg.symbol_size (then shrunk uniformly if it
    would exceed cfg.max_height/max_width), with cfg.stroke_width wide round strokes and
    cfg.padding px of background around the ink. Raises ValueError when there is no point.
    """
    return place_strokes(strokes, cfg)[0]


def place_strokes(strokes: list[np.ndarray], cfg: RenderConfig = RenderConfig()) -> tuple[np.ndarray, Placement]:
    """`render_strokes`, and the transform it applied to the points (for drawing over the image in the
    strokes' own coordinates, as the page's attention overlay does)."""
    pts = [np.asarray(s, np.float64).reshape(-1, 2) for s in strokes]
    pts = [s[np.isfinite(s).all(axis=1)] for s in pts]
    pts = [s for s in pts if len(s)]
    if not pts:
        raise ValueError("no ink: the strokes hold no finite point")
    origin = np.concatenate(pts).min(axis=0)
    pts = [s - origin for s in pts]
    scale = _strokes_scale(pts, cfg)
    ext_w, ext_h = np.concatenate(pts).max(axis=0) * scale
    fit = fit_scale(ext_h, ext_w, cfg)
    width = max(1.0, cfg.stroke_width * fit)
    ss = cfg.supersample
    margin = width / 2 + 1
    shape = (int(np.ceil(ext_h * fit + 2 * margin)) * ss, int(np.ceil(ext_w * fit + 2 * margin)) * ss)
    canvas = _draw([(s * (scale * fit) + margin) * ss for s in pts], width * ss, shape)
    image, top, left, k = _finish_placed(canvas, ss, cfg)
    s = scale * fit * k  # point - origin -> ((point - origin) scale fit + margin - crop) k + padding
    return image, Placement(s, (margin - left) * k + cfg.padding - origin[0] * s,
                            (margin - top) * k + cfg.padding - origin[1] * s)

