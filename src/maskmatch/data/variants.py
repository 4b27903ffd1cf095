"""Pre-rendered variants of the training expressions: more training data from the same ink.

Variant 0 of an expression is its plain render (the split's cache); variants 1..K, in `<split>/variants/`,
are renders of its ink with symbols swapped across writers (swap.py, each symbol with probability
`swap_share`) and then distorted (distort.py), with a drawn pen width; with probability `photo_share` a
variant then arrives as a user's picture would (`photographed`: drawn at another size with a thin to
fifth-of-a-symbol pen, dark on light paper, blurred, noised, JPEG-compressed) and is read back by
`normalize_bitmap`, so that training sees what that path makes of a picture; with probability `thick_share` it is
photographed with a marker-thick pen instead (THICK_PENS of a symbol: neighbouring strokes merge, as a felt pen
on a long expression makes them). Each variant is a pure function of (ink, configs, name, v), so a build is
reproducible. Entry i * K + (v - 1) of the variants cache is
variant v of entry i of the split's cache; its meta.json adds "variants", "distort", "swap_share",
"photo_share" and "thick_share".
Only the training split gets variants: validation is carved from it but reads the plain cache, and the
test splits are never touched.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from maskmatch.data.bitmap import normalize_bitmap
from maskmatch.data.distort import DistortConfig, distort, pen_width
from maskmatch.data.inkml import Ink
from maskmatch.data.render import RenderConfig, render_strokes
from maskmatch.data.swap import SymbolBank, swap_symbols

FOLDER = "variants"  # beside the split's cache/
SUBEXPRESSIONS = "subexpressions"  # beside it too: entry NAME~k is window k of expression NAME (subexpr.py)
# A marker's width as a share of the symbol size: CROHME 2014 drawn with a 12 px pen on a 512 px canvas
# (results/foreign.md) spans 0.1 to over 0.35; from 0.15 up its expressions read at a third of our renders' rate,
# from 0.35 up at nearly none (blots that a reader could not read either)
THICK_PENS = (0.15, 0.35)


@dataclass(frozen=True)
class VariantConfig:
    count: int = 0  # K variants per training expression, besides the plain render
    distort: DistortConfig = field(default_factory=DistortConfig)
    swap_share: float = 0.0  # chance that each symbol is redrawn by another writer (needs the InkML segmentation)
    subexpressions: bool = False  # also render each expression's unambiguous sub-expressions (subexpr.py)
    photo_share: float = 0.0  # chance that a variant is photographed and read back by normalize_bitmap
    thick_share: float = 0.0  # chance that it is photographed with a marker-thick pen (THICK_PENS) instead

    def __post_init__(self):
        shares = (self.swap_share, self.photo_share, self.thick_share, self.photo_share + self.thick_share)
        if self.count < 0 or not all(0 <= p <= 1 for p in shares):
            raise ValueError(f"variants {self.count} must be >= 0; swap share {self.swap_share}, photo share "
                             f"{self.photo_share}, thick share {self.thick_share} and their last two's sum in [0, 1]")

    def meta(self) -> dict:
        return {"variants": self.count, "distort": asdict(self.distort), "swap_share": self.swap_share,
                "photo_share": self.photo_share, "thick_share": self.thick_share}

    @property
    def needs_ink(self) -> bool:
        return bool(self.count or self.subexpressions)


def variant_seed(name: str, v: int) -> int:
    """The seed of variant v of the expression called `name`: stable across runs and machines."""
    return zlib.crc32(name.encode("utf-8")) * 1024 + v


def render_variant(ink: Ink, render: RenderConfig, config: VariantConfig, bank: SymbolBank | None, seed: int) -> np.ndarray:
    """One variant of ink: symbols swapped (if a bank is given and swap_share > 0), distorted, rendered with a
    drawn pen width; uint8 (H, W) like `render_strokes`."""
    strokes, symbols = ink.strokes, ink.symbols
    if bank is not None and config.swap_share > 0 and symbols:
        strokes, symbols = swap_symbols(ink, bank, config.swap_share, seed)
    moved = distort(strokes, config.distort, seed, [s.strokes for s in symbols])
    draw = np.random.default_rng([seed, 2]).random()
    if draw < config.photo_share + config.thick_share:
        try:
            return normalize_bitmap(photographed(moved, render, seed, thick=draw >= config.photo_share), render)
        except ValueError:  # no ink found: the picture came out too faint; the render stands in for it
            pass
    return render_strokes(moved, replace(render, stroke_width=pen_width(render.stroke_width, config.distort, seed)))


def photographed(strokes: list[np.ndarray], render: RenderConfig, seed: int, thick: bool = False) -> Image.Image:
    """The strokes as a picture of them might arrive: drawn with symbols of 20 to 60 px and a pen of 1 px to a
    fifth of a symbol (thick: THICK_PENS of a symbol), dark ink on light paper of uneven brightness, blurred,
    noised and JPEG-compressed (quality 25-90); a pure function of the seed. The test renders of `maskmatch
    foreign` are drawn otherwise (PIL lines), so that they stay someone else's pipeline."""
    rng = np.random.default_rng([seed, 3])
    size = float(rng.uniform(20, 60))
    pen = float(np.exp(rng.uniform(np.log(1.0), np.log(size / 5))))
    if thick:  # placed at a thin pen, then widened: at a thick pen render_strokes would measure merged blots and
        # draw the expression several times too small; the wide margin: normalize_bitmap's background window
        # is at most an eighth of the picture, and must be wider than the pen
        pen = size * float(rng.uniform(*THICK_PENS))
    ink = render_strokes(strokes, replace(render, symbol_size=size, stroke_width=2.0 if thick else pen,
                                          max_height=1024, max_width=4096, padding=int(size * (2 if thick else 1)),
                                          supersample=2))
    if thick:
        r = (pen - 2.0) / 2
        y, x = np.mgrid[-int(r) : int(r) + 1, -int(r) : int(r) + 1]
        ink = ndimage.grey_dilation(ink, footprint=x**2 + y**2 <= r * r)
    cover = ink.astype(np.float32) / 255
    h, w = cover.shape
    paper = rng.uniform(180, 250) + rng.uniform(-20, 20) * np.linspace(-1, 1, w)[None, :]
    dark = rng.uniform(0, 80)  # at least 80 levels under the paper: normalize_bitmap's contrast floor is 64
    pixels = paper * (1 - cover) + dark * cover + rng.normal(0, rng.uniform(0, 12), (h, w))
    picture = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    picture = picture.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.5))))
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=int(rng.integers(25, 91)))
    return Image.open(io.BytesIO(out.getvalue()))
