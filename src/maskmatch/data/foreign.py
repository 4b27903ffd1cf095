"""Renders of InkML by someone else's pipeline (issue 12): plain PIL lines, none of this project's render code,
so that `maskmatch foreign` can measure how well the model reads images it was not trained on.

Each style is a pure function of the strokes and a seed -> a PIL image, as a user's file would arrive:
    thin     1 px black lines on a white 256 x 256 canvas, the expression fitted inside (a common converter)
    marker   12 px dark-blue lines with round ends on a 512 x 512 white canvas (a felt pen on a whiteboard)
    scan     3 px gray ink on uneven gray paper with noise, blurred, saved as a JPEG of quality 30 (a scan)

A fixed pen in a fixed canvas is thick for long expressions: `pen_share` is the pen's width over the
expression's symbol size in the canvas; above about a quarter, neighbouring strokes merge into blots.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from maskmatch.data.render import symbol_size

PEN = {"thin": 1, "marker": 12, "scan": 3}  # each style's pen width, canvas px
STYLES = {
    "thin": "1 px black PIL lines, white 256 x 256 canvas, PNG",
    "marker": "12 px dark-blue PIL lines with round ends, white 512 x 512 canvas, PNG",
    "scan": "3 px gray PIL lines, long side 1024 px, uneven noisy paper, Gaussian blur 0.8 px, JPEG quality 30",
}


def render_foreign(strokes: list[np.ndarray], style: str, seed: int = 0) -> tuple[bytes, str]:
    """(the encoded image file, its suffix) of the strokes (each (n, 2) x, y with y down) in `style`."""
    rng = np.random.default_rng(seed)
    if style == "thin":
        image = _draw(strokes, (256, 256), margin=8, width=PEN[style], ink=0, paper=255)
    elif style == "marker":
        image = _draw(strokes, (512, 512), margin=24, width=PEN[style], ink=(20, 30, 140), paper=(255, 255, 255))
    elif style == "scan":
        image = _scan(strokes, rng)
    else:
        raise ValueError(f"unknown style {style!r}: one of {', '.join(STYLES)}")
    out = io.BytesIO()
    if style == "scan":
        image.save(out, "JPEG", quality=30)
        return out.getvalue(), ".jpg"
    image.save(out, "PNG")
    return out.getvalue(), ".png"


def pen_share(strokes: list[np.ndarray], style: str) -> float:
    """The style's pen width over the expression's symbol size (render.symbol_size), both in the style's canvas."""
    return PEN[style] / (_canvas_scale(strokes, style) * symbol_size(strokes))


def _canvas_scale(strokes: list[np.ndarray], style: str) -> float:
    """Canvas pixels per ink unit of the style's drawing."""
    extent = np.maximum(np.ptp(np.concatenate(strokes), axis=0), 1e-9)
    if style == "scan":
        return 1024 / max(extent.max(), 1e-9)
    size, margin = {"thin": (256, 8), "marker": (512, 24)}[style]
    return float(min((size - 2 * margin) / extent[0], (size - 2 * margin) / extent[1]))


def _fit(strokes: list[np.ndarray], size: tuple[int, int], margin: int) -> list[np.ndarray]:
    """The strokes scaled uniformly (aspect kept) and centred into a canvas of `size` less `margin` each side."""
    points = np.concatenate(strokes)
    low, high = points.min(0), points.max(0)
    extent = np.maximum(high - low, 1e-9)
    scale = min((size[0] - 2 * margin) / extent[0], (size[1] - 2 * margin) / extent[1])
    offset = (np.array(size) - extent * scale) / 2
    return [(s - low) * scale + offset for s in strokes]


def _draw(strokes: list[np.ndarray], size: tuple[int, int], margin: int, width: int, ink, paper) -> Image.Image:
    image = Image.new("L" if isinstance(paper, int) else "RGB", size, paper)
    pen = ImageDraw.Draw(image)
    for stroke in _fit(strokes, size, margin):
        points = [tuple(p) for p in stroke]
        if len(points) > 1:
            pen.line(points, fill=ink, width=width, joint="curve")
        if width > 2 or len(points) == 1:  # round ends (PIL's lines end square); a lone point is a dot
            r = max(width / 2, 0.5)
            for x, y in (points[0], points[-1]):
                pen.ellipse((x - r, y - r, x + r, y + r), fill=ink)
    return image


def _scan(strokes: list[np.ndarray], rng: np.random.Generator) -> Image.Image:
    extent = np.maximum(np.ptp(np.concatenate(strokes), axis=0), 1e-9)
    size = tuple(int(v) for v in np.maximum(extent * _canvas_scale(strokes, "scan") + 80, 120))
    drawn = np.asarray(_draw(strokes, size, 40, PEN["scan"], ink=0, paper=255), dtype=np.float32) / 255
    h, w = drawn.shape
    light = 215 + 25 * np.linspace(0, 1, w)[None, :] * np.linspace(0.6, 1, h)[:, None]  # uneven lighting
    paper = light + rng.normal(0, 10, (h, w))
    pixels = paper * drawn + 60 * (1 - drawn)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image.filter(ImageFilter.GaussianBlur(0.8))
