"""Stroke-level distortions of an expression's ink before rendering: more training data from the same ink.

Every transform is a pure function of (strokes, config, seed): the same seed gives the same variant, so a
cache of variants can be rebuilt exactly. Lengths are in units of the expression's typical stroke extent
(the median over strokes of max(width, height), dots excluded), so the ranges mean the same at any pen
resolution (CROHME's subsets are recorded at scales ~10,000 times apart). Applied in this order:

1. per symbol (where the InkML segmentation gives the symbols): a rotation, scale and shift about the
   symbol's centre (spacing, size and baseline vary between writers);
2. per stroke: a small rotation, scale and shift about the stroke's own centre (writers place and size each
   stroke a little differently);
3. along the strokes: a smooth elastic displacement, a sum of random sinusoids of wavelength about
   `elastic_wavelength` stroke extents (wobble that keeps each stroke's shape);
4. the whole expression: rotation, slant (x shifted in proportion to y) and aspect (x stretched against y).

Not here: the whole expression's scale, which `render_strokes` normalizes away (the training data's
`scale_range` rescales renders instead); symbol swaps across writers, which are `swap.py`'s. The pen width
of a variant is `pen_width`, drawn from the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ELASTIC_WAVES = 4  # sinusoids per coordinate in the elastic field


@dataclass(frozen=True)
class DistortConfig:
    symbol_rotation: float = 4.0  # degrees, uniform in +-: each symbol about its centre
    symbol_scale: float = 0.1  # relative, uniform in +-: each symbol about its centre
    symbol_shift: float = 0.08  # stroke extents, uniform in +- per axis: each symbol
    stroke_rotation: float = 3.0  # degrees, uniform in +-: each stroke about its centre
    stroke_scale: float = 0.05  # relative, uniform in +-: each stroke about its centre
    stroke_shift: float = 0.02  # stroke extents, uniform in +- per axis: each stroke (small: the dot of an i or !)
    elastic: float = 0.03  # stroke extents: rms of the smooth displacement along the strokes
    elastic_wavelength: float = 3.0  # stroke extents: its wavelength (rms strain 2 pi elastic / wavelength, ~6%)
    rotation: float = 4.0  # degrees, uniform in +-: the whole expression
    slant: float = 0.15  # uniform in +-: x += slant * y over the whole expression (italic writing)
    aspect: float = 0.12  # uniform in +- of log(x scale / y scale): the whole expression
    pen: tuple[float, float] = (0.75, 1.35)  # range of the render's stroke width multiplier

    def __post_init__(self):
        values = (self.symbol_rotation, self.symbol_scale, self.symbol_shift, self.stroke_rotation,
                  self.stroke_scale, self.stroke_shift, self.elastic, self.rotation, self.slant, self.aspect)
        if min(values) < 0 or self.elastic_wavelength <= 0 or max(self.stroke_scale, self.symbol_scale) >= 1:
            raise ValueError(f"distortion ranges must be >= 0 (scales < 1, wavelength > 0): {self}")
        if not 0 < self.pen[0] <= self.pen[1]:
            raise ValueError(f"pen range {self.pen} must satisfy 0 < low <= high")


def typical_extent(strokes: list[np.ndarray]) -> float:
    """Median over strokes of max(width, height), strokes below 5% of the largest (dots) excluded; 1.0 for
    ink that is all dots."""
    ext = np.array([np.ptp(s, axis=0).max() if len(s) else 0.0 for s in strokes])
    if ext.size == 0 or ext.max() <= 0:
        return 1.0
    return float(np.median(ext[ext >= 0.05 * ext.max()]))


def _rotation(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def _jitter(points: list[np.ndarray], rng: np.random.Generator, rotation: float, scale: float,
            shift: float) -> list[np.ndarray]:
    """Points of one part (a symbol's strokes, or one stroke) rotated, scaled and shifted about their centre."""
    ink = np.concatenate(points) if any(len(p) for p in points) else np.zeros((1, 2))
    centre = (ink.min(axis=0) + ink.max(axis=0)) / 2
    m = (1 + rng.uniform(-scale, scale)) * _rotation(rng.uniform(-rotation, rotation))
    move = rng.uniform(-shift, shift, 2)
    return [(p - centre) @ m.T + centre + move for p in points]


def distort(strokes: list[np.ndarray], cfg: DistortConfig = DistortConfig(), seed: int = 0,
            symbols: list[tuple[int, ...]] | None = None) -> list[np.ndarray]:
    """(n_i, 2) stroke arrays of (x, y), y down -> the same strokes distorted (new arrays, same point counts).
    symbols: the stroke indices of each symbol (`Ink.symbols`), for the per-symbol jitter; None or () skips it
    (the other transforms draw the same numbers either way: each step has its own generator)."""
    rng = np.random.default_rng(seed)
    out = [np.asarray(s, np.float64).reshape(-1, 2) for s in strokes]
    unit = typical_extent(out)
    symbol_rng = np.random.default_rng([seed, 2])
    for indices in symbols or ():  # 1. per symbol, about its centre
        moved = _jitter([out[i] for i in indices], symbol_rng, cfg.symbol_rotation, cfg.symbol_scale,
                        cfg.symbol_shift * unit)
        for i, m in zip(indices, moved):
            out[i] = m
    # 2. per stroke, about its centre
    out = [_jitter([s], rng, cfg.stroke_rotation, cfg.stroke_scale, cfg.stroke_shift * unit)[0] for s in out]
    # 3. smooth elastic field: dx, dy = amplitude * mean of sinusoids with random directions and phases
    directions = rng.normal(size=(2, ELASTIC_WAVES, 2))
    directions *= 2 * np.pi / (cfg.elastic_wavelength * unit) / np.linalg.norm(directions, axis=2, keepdims=True)
    phases = rng.uniform(0, 2 * np.pi, (2, ELASTIC_WAVES))
    amplitude = cfg.elastic * unit * np.sqrt(2 / ELASTIC_WAVES)  # each coordinate's field has rms cfg.elastic
    out = [s + amplitude * np.stack([np.sin(s @ directions[c].T + phases[c]).sum(axis=1) for c in (0, 1)], axis=1)
           for s in out]
    # 4. the whole expression, about the centre of its ink
    ink = np.concatenate(out) if any(len(s) for s in out) else np.zeros((1, 2))
    centre = (ink.min(axis=0) + ink.max(axis=0)) / 2
    stretch = np.exp(rng.uniform(-cfg.aspect, cfg.aspect) / 2)
    shape = np.array([[stretch, rng.uniform(-cfg.slant, cfg.slant)], [0.0, 1 / stretch]])  # slant, then aspect
    m = shape @ _rotation(rng.uniform(-cfg.rotation, cfg.rotation))
    return [(s - centre) @ m.T + centre for s in out]


def pen_width(base: float, cfg: DistortConfig = DistortConfig(), seed: int = 0) -> float:
    """The stroke width of variant `seed`: base times a factor drawn log-uniformly from cfg.pen."""
    low, high = np.log(cfg.pen)
    return float(base * np.exp(np.random.default_rng([seed, 1]).uniform(low, high)))
