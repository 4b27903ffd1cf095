"""Stroke-level distortions of an expression's ink before rendering: more training data from the same ink.

Every transform is a pure function of (strokes, config, seed): the same seed gives the same variant, so a
cache of variants can be rebuilt exactly. Lengths are in units of the expression's typical stroke extent
(the median over strokes of max(width, height), dots excluded), so the ranges mean the same at any pen
resolution (CROHME's subsets are recorded at scales ~10,000 times apart). Applied in this order:

1. per stroke: a small rotation, scale and shift about the stroke's own centre (writers place and size each
   stroke a little differently);
2. along the strokes: a smooth elastic displacement, a sum of random sinusoids of wavelength about
   `elastic_wavelength` stroke extents (wobble that keeps each stroke's shape);
3. the whole expression: rotation, slant (x shifted in proportion to y) and aspect (x stretched against y).

Not here: the whole expression's scale, which `render_strokes` normalizes away (the training data's
`scale_range` rescales renders instead); per-symbol jitter and symbol swaps, which need the InkML symbol
segmentation. The pen width of a variant is `pen_width`, drawn from the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ELASTIC_WAVES = 4  # sinusoids per coordinate in the elastic field


@dataclass(frozen=True)
class DistortConfig:
    stroke_rotation: float = 5.0  # degrees, uniform in +-: each stroke about its centre
    stroke_scale: float = 0.08  # relative, uniform in +-: each stroke about its centre
    stroke_shift: float = 0.06  # stroke extents, uniform in +- per axis: each stroke
    elastic: float = 0.04  # stroke extents: amplitude of the smooth displacement along the strokes
    elastic_wavelength: float = 1.5  # stroke extents: typical wavelength of that displacement
    rotation: float = 4.0  # degrees, uniform in +-: the whole expression
    slant: float = 0.15  # uniform in +-: x += slant * y over the whole expression (italic writing)
    aspect: float = 0.12  # uniform in +- of log(x scale / y scale): the whole expression
    pen: tuple[float, float] = (0.75, 1.35)  # range of the render's stroke width multiplier

    def __post_init__(self):
        values = (self.stroke_rotation, self.stroke_scale, self.stroke_shift, self.elastic, self.rotation,
                  self.slant, self.aspect)
        if min(values) < 0 or self.elastic_wavelength <= 0 or self.stroke_scale >= 1:
            raise ValueError(f"distortion ranges must be >= 0 (stroke_scale < 1, wavelength > 0): {self}")
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


def distort(strokes: list[np.ndarray], cfg: DistortConfig = DistortConfig(), seed: int = 0) -> list[np.ndarray]:
    """(n_i, 2) stroke arrays of (x, y), y down -> the same strokes distorted (new arrays, same point counts)."""
    rng = np.random.default_rng(seed)
    strokes = [np.asarray(s, np.float64).reshape(-1, 2) for s in strokes]
    unit = typical_extent(strokes)
    out = []
    for s in strokes:  # 1. per stroke, about its centre
        centre = (s.min(axis=0) + s.max(axis=0)) / 2 if len(s) else np.zeros(2)
        k = 1 + rng.uniform(-cfg.stroke_scale, cfg.stroke_scale)
        m = k * _rotation(rng.uniform(-cfg.stroke_rotation, cfg.stroke_rotation))
        shift = rng.uniform(-cfg.stroke_shift, cfg.stroke_shift, 2) * unit
        out.append((s - centre) @ m.T + centre + shift)
    # 2. smooth elastic field: dx, dy = amplitude * mean of sinusoids with random directions and phases
    directions = rng.normal(size=(2, ELASTIC_WAVES, 2))
    directions *= 2 * np.pi / (cfg.elastic_wavelength * unit) / np.linalg.norm(directions, axis=2, keepdims=True)
    phases = rng.uniform(0, 2 * np.pi, (2, ELASTIC_WAVES))
    amplitude = cfg.elastic * unit * np.sqrt(2 / ELASTIC_WAVES)  # each coordinate's field has rms cfg.elastic
    out = [s + amplitude * np.stack([np.sin(s @ directions[c].T + phases[c]).sum(axis=1) for c in (0, 1)], axis=1)
           for s in out]
    # 3. the whole expression, about the centre of its ink
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
