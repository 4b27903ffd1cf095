"""The progressive masking schedule: one config object, read as a pure function of training progress."""

from __future__ import annotations

import math
from dataclasses import dataclass

from maskmatch.model.config import STRIDE

RAMPS = ("linear", "cosine")


@dataclass(frozen=True)
class MaskParams:
    ratio: float  # share of the image's ink pixels to hide
    block: int  # side of the square blocks in pixels, a multiple of the encoder's stride
    guided: float  # share of the hidden ink chosen by the teacher's attention, the rest at random


@dataclass(frozen=True)
class MaskSchedule:
    ratio: tuple[float, float] = (0.1, 0.6)  # masked share of ink, start -> end (DESIGN.md's example)
    block_cells: tuple[int, int] = (1, 3)  # block side in 16-px encoder cells, start -> end (assumed: ~1/2 to 1 symbol)
    guided: tuple[float, float] = (0.0, 0.5)  # share of hidden ink picked by teacher attention (assumed; 0: random)
    ramp: str = "linear"  # "linear" or "cosine" (slow, fast, slow) interpolation between start and end
    span: tuple[float, float] = (0.0, 0.8)  # training progress at which the ramps start and end (assumed)
    ink_threshold: float = 0.5  # a pixel is ink when image >= this (images in [0, 1], ink bright; assumed)

    def __post_init__(self):
        if not all(0 <= r <= 1 for r in self.ratio + self.guided):
            raise ValueError(f"ratio {self.ratio} and guided {self.guided} must lie in [0, 1]")
        if min(self.block_cells) < 1:
            raise ValueError(f"block_cells {self.block_cells} must be positive")
        if self.ramp not in RAMPS:
            raise ValueError(f"ramp {self.ramp!r} must be one of {', '.join(RAMPS)}")
        if not 0 <= self.span[0] < self.span[1] <= 1:
            raise ValueError(f"span {self.span} must satisfy 0 <= start < end <= 1")
        if not 0 < self.ink_threshold <= 1:
            raise ValueError(f"ink_threshold {self.ink_threshold} must lie in (0, 1]")

    def fraction(self, progress: float) -> float:
        """How far along the ramps are at `progress` (0 = first step, 1 = end of training), in [0, 1]."""
        start, end = self.span
        f = min(1.0, max(0.0, (progress - start) / (end - start)))
        return f if self.ramp == "linear" else 0.5 * (1.0 - math.cos(math.pi * f))

    def at(self, progress: float) -> MaskParams:
        """The masking parameters at `progress` in [0, 1]; the block side is rounded half up to whole cells."""
        f = self.fraction(progress)
        lerp = lambda pair: pair[0] + (pair[1] - pair[0]) * f  # noqa: E731
        block = STRIDE * int(lerp(self.block_cells) + 0.5)
        return MaskParams(ratio=lerp(self.ratio), block=block, guided=lerp(self.guided))
