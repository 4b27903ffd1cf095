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
`normalize_bitmap` on the binarized image at its own (measured) pen width; both then scale so it
equals `RenderConfig.symbol_size`, draw `RenderConfig.stroke_width` wide anti-aliased strokes and
crop to the ink plus padding, so training renders and users' images meet in one distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

_EIGHT = np.ones((3, 3), bool)  # 8-connectivity: a thin diagonal line is one component


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
    labels, n = ndimage.label(mask, structure=_EIGHT)
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


def _fit(ext_h: float, ext_w: float, cfg: RenderConfig) -> float:
    """Uniform factor <= 1 that fits ink of path extent (ext_h, ext_w) px, plus strokes and padding."""
    room_h = cfg.max_height - 2 * cfg.padding - 2  # 2 px slack for anti-aliasing's bleed
    room_w = cfg.max_width - 2 * cfg.padding - 2
    return min(1.0, room_h / (ext_h + cfg.stroke_width), room_w / (ext_w + cfg.stroke_width))


def _finish(canvas: np.ndarray, ss: int, cfg: RenderConfig) -> np.ndarray:
    """uint8 canvas supersampled ss times -> box-filtered, cropped to the ink, padded, within bounds."""
    return _finish_placed(canvas, ss, cfg)[0]


def _finish_placed(canvas: np.ndarray, ss: int, cfg: RenderConfig) -> tuple[np.ndarray, int, int, float]:
    """`_finish`, and where it put the reduced canvas: (image, top, left, k), canvas px (X, Y) / ss landing at
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
    fit = _fit(ext_h, ext_w, cfg)
    width = max(1.0, cfg.stroke_width * fit)
    ss = cfg.supersample
    margin = width / 2 + 1
    shape = (int(np.ceil(ext_h * fit + 2 * margin)) * ss, int(np.ceil(ext_w * fit + 2 * margin)) * ss)
    canvas = _draw([(s * (scale * fit) + margin) * ss for s in pts], width * ss, shape)
    image, top, left, k = _finish_placed(canvas, ss, cfg)
    s = scale * fit * k  # point - origin -> ((point - origin) scale fit + margin - crop) k + padding
    return image, Placement(s, (margin - left) * k + cfg.padding - origin[0] * s,
                            (margin - top) * k + cfg.padding - origin[1] * s)


# ---------------------------------------------------------------- bitmaps


def _to_gray(image: np.ndarray | Image.Image) -> np.ndarray:
    """Any PIL image or array (H, W) / (H, W, 1|3|4) -> float32 (H, W) in [0, 1]; transparency
    is composited onto a background that contrasts with the opaque pixels."""
    if not isinstance(image, Image.Image):
        a = np.asarray(image)
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[..., 0]
        if a.ndim == 3 and a.shape[2] in (3, 4) and a.dtype == np.uint8:
            image = Image.fromarray(a)  # Pillow converts 8-bit colour fastest
        elif a.ndim == 3 and a.shape[2] in (3, 4):
            rgb = _unit(a[..., :3]) @ np.array([0.299, 0.587, 0.114], np.float32)
            return _composite(rgb, _unit(a[..., 3]) if a.shape[2] == 4 else None)
        elif a.ndim == 2:
            return _unit(a)
        else:
            raise ValueError(f"expected an image (H, W) or (H, W, 3|4), got shape {a.shape}")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _unit(np.asarray(image))
    if image.mode in ("RGBA", "LA", "PA", "P", "RGBa", "La"):  # P: its palette may hold transparency
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), np.float32) / 255
        return _composite(np.asarray(rgba.convert("L"), np.float32) / 255, alpha)
    return np.asarray(image.convert("L"), np.float32) / 255


def _composite(gray: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """gray, alpha (H, W) in [0, 1] -> gray over a background opposite to the opaque pixels' mean."""
    if alpha is None or alpha.min() >= 1:
        return gray
    opaque = np.sum(gray * alpha) / max(float(np.sum(alpha)), 1e-6)
    return (gray * alpha + (1.0 if opaque < 0.5 else 0.0) * (1 - alpha)).astype(np.float32)


def _unit(a: np.ndarray) -> np.ndarray:
    """Array of any numeric dtype -> float32 in [0, 1]: divided by 1, 255 or 65535, the first that
    is >= its maximum (so floats in [0, 1], 8-bit and 16-bit data all keep their contrast)."""
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    top = max(float(a.max(initial=0)), 0.0)
    top = next((t for t in (1.0, 255.0, 65535.0) if top <= t), top)
    return np.clip(a, 0, None) / top


def _ink_map(gray: np.ndarray) -> np.ndarray:
    """gray (H, W) in [0, 1] -> ink strength (H, W) float32: 0 on the background, ~1 for ink of
    full contrast, whatever the polarity, the illumination and its shadows."""
    h, w = gray.shape
    k = max(1, -(-max(h, w) // 1024))
    low = _shrink(gray, k)  # <= 1024 px: the background is smooth enough for it

    # polarity: ink is the minority, so it makes the heavier tail of the deviations from a wide
    # median filter (which ignores a minority and keeps ramps and the steps of shadows), <= 64 px
    small = _shrink(low, max(1, -(-max(low.shape) // 64)))
    dev = small - ndimage.median_filter(small, max(3, max(small.shape) // 4) | 1, mode="nearest")
    tau = 3 * np.median(np.abs(dev)) + 1e-3  # beyond the noise
    if np.sum(np.clip(-dev - tau, 0, None)) < np.sum(np.clip(dev - tau, 0, None)):
        gray, low = 1 - gray, 1 - low  # from here on: dark ink on light paper

    # the pen's width in px, roughly: from the clear ink of a wide closing's top-hat, <= 256 px
    k2 = max(1, -(-max(low.shape) // 256))
    small = _shrink(low, k2)
    guess = _closing(small, max(3, max(small.shape) // 4) | 1) - small > 0.1
    pen = (_stroke_width(guess) if guess.any() else 1.0) * k2 * k

    # background: a grey closing (max then min filter) erases dark marks narrower than its window
    # but keeps shading and the steps of shadows; the window is 3 pen widths, within 4% and 12%
    # of the image
    bg = _closing(low, int(max(7, max(low.shape) / 25, min(3 * pen / k, max(low.shape) / 8))) | 1)
    if k > 1:
        bg = np.asarray(Image.fromarray(bg).resize((w, h), Image.Resampling.BILINEAR), np.float32)
    # ink / background ratio: contrast relative to the local light, as paper reflects it
    return np.clip((bg - gray) / np.maximum(bg, 0.1), 0, 1)


def _closing(a: np.ndarray, size: int, opening: bool = False) -> np.ndarray:
    """Grey closing (max then min filter) of (H, W) with a size x size square; or the opening."""
    grow, shrink = ndimage.maximum_filter, ndimage.minimum_filter
    if opening:
        grow, shrink = shrink, grow
    return shrink(grow(a, size, mode="nearest"), size, mode="nearest")


def _shrink(a: np.ndarray, k: int) -> np.ndarray:
    """float32 (H, W) -> (ceil(H / k), ceil(W / k)) block means."""
    if k == 1:
        return a
    size = (-(-a.shape[1] // k), -(-a.shape[0] // k))
    return np.asarray(Image.fromarray(a).resize(size, Image.Resampling.BOX), np.float32)


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of values in [0, 1] (H, W); a large image is sampled on a sparser grid."""
    step = max(1, int(np.sqrt(values.size / 1e6)))
    levels = np.minimum((values[::step, ::step].ravel() * 255).astype(np.int64), 255)
    hist = np.bincount(levels, minlength=256)
    p = hist / max(hist.sum(), 1)
    omega = np.cumsum(p)
    mu = np.cumsum(p * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * omega - mu) ** 2 / (omega * (1 - omega))
    return (int(np.nanargmax(np.nan_to_num(between, nan=-1))) + 0.5) / 255


def _stroke_width(mask: np.ndarray) -> float:
    """Pen width in px of a binary ink image (H, W): from the distance transform on the medial ridge
    (a band w px wide peaks at (w + 1) / 2 px from the background)."""
    d = ndimage.distance_transform_edt(mask)
    ridge = mask & (d >= ndimage.maximum_filter(d, 3))
    return max(1.0, 2 * float(np.median(d[ridge])) - 1)


_RIDGE_HALF = 0.25  # the ridge is 1-2 working px thick: the disc radius is reduced by half of the excess
_MAX_SIDE = 2048  # px: a larger picture is first shrunk to this by area averaging
_MIN_CONTRAST = 0.25  # ink must reach this contrast somewhere: below is paper texture, JPEG noise


def _binarize(ink: np.ndarray) -> tuple[np.ndarray, float]:
    """ink map (H, W) -> (mask (H, W) bool, threshold): Otsu with hysteresis, so a component of
    pixels above Otsu's threshold is kept only if it also holds strong ink (drops JPEG specks)."""
    if ink.max(initial=0) < _MIN_CONTRAST:
        return np.zeros(ink.shape, bool), 1.0
    t = max(_otsu(ink), 0.1)
    low = ink > t
    labels, n = ndimage.label(low, structure=_EIGHT)
    if n == 0:
        return low, t
    high = max(_MIN_CONTRAST, (t + float(np.mean(ink[low]))) / 2)
    strong = np.zeros(n + 1, bool)
    strong[labels[ink >= high]] = True
    strong[0] = False
    return strong[labels], t


def normalize_bitmap(image: np.ndarray | Image.Image, cfg: RenderConfig = RenderConfig()) -> np.ndarray:
    """A picture of handwritten math -> the same distribution as render_strokes: uint8 (H, W).

    image: PIL image (1, L, LA, P, RGB, RGBA, I;16, I, F, ...) or array (H, W) / (H, W, 1|3|4);
    any polarity, size, stroke thickness, uneven lighting, JPEG noise. Binarizes (illumination
    removed, Otsu + hysteresis, specks dropped), measures the pen's width and size_statistic,
    rescales so the statistic is cfg.symbol_size, redraws the strokes' medial ridge
    cfg.stroke_width wide, anti-aliased, cropped to the ink plus cfg.padding.
    Raises ValueError("no ink found ...") when nothing stands out from the background.
    """
    ink, mask, threshold, width = _find_ink(image)
    stat = size_statistic(mask, width)
    scale = cfg.symbol_size / stat if stat > 0 else cfg.stroke_width / width  # a lone dot stays a dot
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    ext_h = max(rows[-1] - rows[0] + 1 - width, 0) * scale
    ext_w = max(cols[-1] - cols[0] + 1 - width, 0) * scale
    fit = _fit(ext_h, ext_w, cfg)
    k = min(cfg.supersample, 2)  # working supersample: ridge to 1/2 px, edges anti-aliased by distance
    cover = _redraw(ink, mask, threshold, width, scale * fit * k, max(1.0, cfg.stroke_width * fit) * k / 2)
    return _finish(np.pad(cover * 255, k).round().astype(np.uint8), k, cfg)


def _find_ink(image: np.ndarray | Image.Image) -> tuple[np.ndarray, np.ndarray, float, float]:
    """image -> (ink map (h, w) float32, ink mask (h, w) bool, Otsu's threshold, pen width in px),
    cropped to the ink; raises ValueError if there is none."""
    gray = _to_gray(image)
    if gray.size == 0:
        raise ValueError("no ink found in the image: it is empty")
    if max(gray.shape) > _MAX_SIDE:  # bounds the time; pens stay >= ~2 px in any real photo
        gray = _shrink(gray, -(-max(gray.shape) // _MAX_SIDE))
    ink = _ink_map(gray)
    mask, threshold = _binarize(ink)
    if not mask.any():
        raise ValueError("no ink found in the image")
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    crop = np.s_[max(rows[0] - 2, 0) : rows[-1] + 3, max(cols[0] - 2, 0) : cols[-1] + 3]
    mask, ink = mask[crop], ink[crop]
    width = _stroke_width(mask)
    # specks: components smaller than a quarter of a pen-wide square (a dot is ~0.8 of it)
    labels, n = ndimage.label(mask, structure=_EIGHT)
    mask &= (np.bincount(labels.ravel(), minlength=n + 1) >= 0.25 * width**2)[labels]
    if not mask.any():
        raise ValueError("no ink found in the image (only specks)")
    return ink, mask, threshold, width


def _redraw(ink: np.ndarray, mask: np.ndarray, threshold: float, width: float, zoom: float,
            radius: float) -> np.ndarray:
    """The ink (h, w) of a `width` px pen, zoomed `zoom` times, redrawn with a pen of `radius`
    (in zoomed px): the coverage (H, W) float in [0, 1]."""
    # soft ink of the kept components (anti-aliased edges kept), 0.5 at Otsu's threshold
    soft = np.clip(ink / (2 * threshold), 0, 1) * ndimage.binary_dilation(mask, _EIGHT)
    if width * zoom < 3:  # thicken first so that shrinking cannot break strokes (the ridge stays)
        soft = ndimage.maximum_filter(soft, 2 * int(np.ceil((3 / zoom - width) / 2)) + 1)
    soft = np.pad(soft, 2).astype(np.float32)
    size = (max(1, round(soft.shape[1] * zoom)), max(1, round(soft.shape[0] * zoom)))
    resample = Image.Resampling.BOX if zoom < 1 else Image.Resampling.BILINEAR
    big = np.asarray(Image.fromarray(soft).resize(size, resample)) > 0.5
    # the medial ridge: local maxima of the distance to the background, minus boundary bumps
    d = ndimage.distance_transform_edt(big)
    ridge = big & (d >= ndimage.maximum_filter(d, 3) - 0.5)
    if ridge.any():
        ridge &= d >= 0.3 * float(np.median(d[ridge]))
    if not ridge.any():
        ridge = big
    # a disc along the ridge; a pixel at distance r + 0.5 -/+ 0.5 from the ridge is ~0..1 covered
    dist = ndimage.distance_transform_edt(~ridge)
    return np.clip(radius - _RIDGE_HALF + 0.5 - dist, 0, 1)
