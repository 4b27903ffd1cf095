"""Users' pictures of handwritten math to the distribution of `render.render_strokes` (`normalize_bitmap`): the ink
found (illumination removed, Otsu with hysteresis, specks dropped), its pen width measured, scaled by the render's
`size_statistic` and redrawn along its medial ridge at the render's pen width (render.py says why that statistic).
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from maskmatch.data.render import EIGHT, RenderConfig, finish, fit_scale, size_statistic


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


# A measured pen share (pen width / size statistic) from here up marks ink that likely merges neighbouring strokes.
# CROHME 2014 drawn with a 12 px marker (results/foreign.md): expressions whose pen is at least a quarter of their
# symbol size read at 0-33% of our renders' rate, those under 0.15 at 90%; measured on 200 of them, the first
# mostly measure 0.15 or more (medians 0.20-0.22), the others less (90th percentile 0.12), and the thin and scan
# styles' pens under 0.09 (90th percentiles).
THICK_PEN = 0.15
_RIDGE_HALF = 0.25  # the ridge is 1-2 working px thick: the disc radius is reduced by half of the excess
_MAX_SIDE = 2048  # px: a larger picture is first shrunk to this by area averaging
_MIN_CONTRAST = 0.25  # ink must reach this contrast somewhere: below is paper texture, JPEG noise
# A pen within these shares of the render's, at its scale, is kept as drawn, not redrawn along its ridge: training
# draws 0.75-1.35 (DistortConfig.pen), and a render read back measures 0.72-1.2 (its pen quantized by the mask)
_AS_IS = (0.7, 1.35)
# ... and no more than this enlarged: a thin line blown up comes out blocky (1 px lines in a 256 px canvas, zoomed
# 1.75-3.4 times, read 0.5 points less of CROHME 2014 resampled than redrawn: `maskmatch foreign`, its thin style)
_AS_IS_ZOOM = 1.5


def _binarize(ink: np.ndarray) -> tuple[np.ndarray, float]:
    """ink map (H, W) -> (mask (H, W) bool, threshold): Otsu with hysteresis, so a component of
    pixels above Otsu's threshold is kept only if it also holds strong ink (drops JPEG specks)."""
    if ink.max(initial=0) < _MIN_CONTRAST:
        return np.zeros(ink.shape, bool), 1.0
    t = max(_otsu(ink), 0.1)
    low = ink > t
    labels, n = ndimage.label(low, structure=EIGHT)
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
    return read_bitmap(image, cfg)[0]


def read_bitmap(image: np.ndarray | Image.Image, cfg: RenderConfig = RenderConfig()) -> tuple[np.ndarray, float]:
    """`normalize_bitmap`, and the picture's pen width over its symbol size, as measured (`_pen_share`, THICK_PEN)."""
    images, share = read_bitmap_at(image, [cfg])
    return images[0], share


def read_bitmap_at(image: np.ndarray | Image.Image, cfgs: list[RenderConfig]) -> tuple[list[np.ndarray], float]:
    """`read_bitmap` for each of cfgs (e.g. the model's at several symbol sizes), the ink found once: the picture
    normalized per config, and its pen share."""
    ink, mask, threshold, width = _find_ink(image)
    stat = size_statistic(mask, width)
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    extent = (rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)  # the ink's height and width in px
    return [_drawn(ink, mask, threshold, width, stat, extent, cfg) for cfg in cfgs], _pen_share(mask, width, stat)


def _drawn(ink: np.ndarray, mask: np.ndarray, threshold: float, width: float, stat: float,
           extent: tuple[int, int], cfg: RenderConfig) -> np.ndarray:
    """The ink found by `_find_ink` (its size statistic `stat`, its extent in px) as render_strokes draws under cfg."""
    scale = cfg.symbol_size / stat if stat > 0 else cfg.stroke_width / width  # a lone dot stays a dot
    ext_h = max(extent[0] - width, 0) * scale
    ext_w = max(extent[1] - width, 0) * scale
    fit = fit_scale(ext_h, ext_w, cfg)
    k = min(cfg.supersample, 2)  # working supersample: ridge to 1/2 px, edges anti-aliased by distance
    pen = max(1.0, cfg.stroke_width * fit)
    # the render's own pen, near enough, and enough pixels to resample from: kept as drawn
    if _AS_IS[0] <= width * scale * fit / pen <= _AS_IS[1] and scale * fit <= _AS_IS_ZOOM:
        cover = _soft_zoomed(ink, mask, threshold, scale * fit * k)
    else:
        cover = _redraw(ink, mask, threshold, width, scale * fit * k, pen * k / 2)
    return finish(np.pad(cover * 255, k).round().astype(np.uint8), k, cfg)


def _pen_share(mask: np.ndarray, width: float, stat: float) -> float:
    """The pen's width over the writing's symbol size (0.0 for a lone dot). A pen thick enough to merge whole words
    into one component inflates the size statistic (it counts their widths) while their height still tells the
    symbols' size: so the size is taken as at most 4/3 of the median height of the components that are neither dots
    nor flat bars. On the first 300 CROHME 2014 expressions in each style of `data.foreign` (pen share by their
    strokes): of the markers with a pen of half a symbol or more, 14 of 27 measured over THICK_PEN by the statistic
    alone, 25 with the cap; of those under 0.15, none and 1 of 119; thin and scan, none of 300 either way."""
    if stat <= 0:
        return 0.0
    labels, _ = ndimage.label(mask, structure=EIGHT)
    boxes = [(r.stop - r.start, c.stop - c.start) for r, c in ndimage.find_objects(labels)]
    heights = np.array([tall for tall, wide in boxes if max(tall, wide) >= 3 * width and tall >= 2 * width])
    heights = heights[heights >= heights.max(initial=0) / 4]  # not a thin pen's dots and bars, a little slanted
    size = min(stat, 4 / 3 * float(np.median(heights))) if heights.size else stat
    return width / size


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
    labels, n = ndimage.label(mask, structure=EIGHT)
    mask &= (np.bincount(labels.ravel(), minlength=n + 1) >= 0.25 * width**2)[labels]
    if not mask.any():
        raise ValueError("no ink found in the image (only specks)")
    return ink, mask, threshold, width


def _soft_zoomed(ink: np.ndarray, mask: np.ndarray, threshold: float, zoom: float, widen: int = 1) -> np.ndarray:
    """The soft ink (h, w) of the kept components (anti-aliased edges kept, 0.5 at Otsu's threshold), widened by a
    `widen` px square max filter, padded and zoomed `zoom` times: the coverage (H, W) float in [0, 1]."""
    soft = np.clip(ink / (2 * threshold), 0, 1) * ndimage.binary_dilation(mask, EIGHT)
    if widen > 1:
        soft = ndimage.maximum_filter(soft, widen)
    soft = np.pad(soft, 2).astype(np.float32)
    size = (max(1, round(soft.shape[1] * zoom)), max(1, round(soft.shape[0] * zoom)))
    resample = Image.Resampling.BOX if zoom < 1 else Image.Resampling.BILINEAR
    return np.clip(np.asarray(Image.fromarray(soft).resize(size, resample)), 0, 1)


def _redraw(ink: np.ndarray, mask: np.ndarray, threshold: float, width: float, zoom: float,
            radius: float) -> np.ndarray:
    """The ink (h, w) of a `width` px pen, zoomed `zoom` times, redrawn with a pen of `radius`
    (in zoomed px): the coverage (H, W) float in [0, 1]."""
    # thickened first where shrinking could break strokes (the ridge stays)
    widen = 2 * int(np.ceil((3 / zoom - width) / 2)) + 1 if width * zoom < 3 else 1
    big = _soft_zoomed(ink, mask, threshold, zoom, widen) > 0.5
    # the medial ridge: local maxima of the distance to the background, minus boundary bumps
    d = ndimage.distance_transform_edt(big)
    ridge = big & (d >= ndimage.maximum_filter(d, 3) - 0.5)
    if ridge.any():
        ridge &= d >= 0.3 * float(np.median(d[ridge]))
    if not ridge.any():
        ridge = big
    # a disc along the ridge; a pixel at distance r + 0.5 -/+ 0.5 from the ridge is ~0..1 covered
    dist = ndimage.distance_transform_edt(~ridge)
    cover = np.clip(radius - _RIDGE_HALF + 0.5 - dist, 0, 1)
    # ink wider than the pen (strokes merged into a blot, a bowl filled in) is kept, thinned by the pen's
    # excess: the ridge alone would reduce a filled bowl to a line and two merged bars to a dot
    excess = (width * zoom - 2 * radius) / 2
    return np.maximum(cover, np.clip(d - excess, 0, 1)) if excess > 0 else cover
