"""Pre-rendered variants of the training expressions: more training data from the same ink.

Variant 0 of an expression is its plain render (the split's cache); variants 1..K, in `<split>/variants/`,
are renders of its ink with symbols swapped across writers (swap.py, each symbol with probability
`swap_share`) and then distorted (distort.py), with a drawn pen width. Each variant is a pure function of
(ink, configs, name, v), so a build is reproducible. Entry i * K + (v - 1) of the variants cache is
variant v of entry i of the split's cache; its meta.json adds "variants", "distort" and "swap_share".
Only the training split gets variants: validation is carved from it but reads the plain cache, and the
test splits are never touched.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from maskmatch.data.distort import DistortConfig, distort, pen_width
from maskmatch.data.inkml import Ink
from maskmatch.data.render import RenderConfig, render_strokes
from maskmatch.data.swap import SymbolBank, swap_symbols

FOLDER = "variants"  # beside the split's cache/
SUBEXPRESSIONS = "subexpressions"  # beside it too: entry NAME~k is window k of expression NAME (subexpr.py)


@dataclass(frozen=True)
class VariantConfig:
    count: int = 0  # K variants per training expression, besides the plain render
    distort: DistortConfig = field(default_factory=DistortConfig)
    swap_share: float = 0.0  # chance that each symbol is redrawn by another writer (needs the InkML segmentation)
    subexpressions: bool = False  # also render each expression's unambiguous sub-expressions (subexpr.py)

    def __post_init__(self):
        if self.count < 0 or not 0 <= self.swap_share <= 1:
            raise ValueError(f"variants {self.count} must be >= 0 and swap share {self.swap_share} in [0, 1]")

    def meta(self) -> dict:
        return {"variants": self.count, "distort": asdict(self.distort), "swap_share": self.swap_share}

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
    return render_strokes(moved, replace(render, stroke_width=pen_width(render.stroke_width, config.distort, seed)))
