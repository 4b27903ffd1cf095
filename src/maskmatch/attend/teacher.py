"""The teacher: an exponential moving average of the student's encoder and attention network.

Momentum follows DINO's cosine schedule, a function of training progress: m(p) = end - (end - start)
(1 + cos(pi p)) / 2, from `start` at p = 0 to `end` at p = 1. Floating-point parameters are averaged;
buffers (BatchNorm's running statistics and counters) are copied from the student. The teacher runs
with BatchNorm on batch statistics and dropout off (`forward`), as DINO's and BYOL's teachers do, so
that its targets never depend on averaged running statistics that lag behind its averaged weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from maskmatch.engine.ema import EMA


def teacher_momentum(progress: float, start: float, end: float) -> float:
    """EMA momentum at `progress` in [0, 1]: cosine from start to end."""
    p = min(1.0, max(0.0, progress))
    return end - (end - start) * 0.5 * (1.0 + math.cos(math.pi * p))


class Teacher(EMA):
    """A frozen copy of `student` (a module with `encoder` and `attention`), updated by `update(student, m)`:

        teacher <- m * teacher + (1 - m) * student   (parameters; buffers are copied)
    """

    def __init__(self, student: nn.Module):
        super().__init__(student, average_buffers=False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """images (B, 1, H, W), mask (B, H, W) -> features (B, h, w, d), feature_mask (B, h, w),
        maps (B, K, h, w), embeddings (B, K, d); BatchNorm on batch statistics, dropout off."""
        self.module.train()
        for m in self.module.modules():
            if isinstance(m, nn.Dropout):
                m.eval()
        features, feature_mask = self.module.encoder(images, mask)
        maps, embeddings = self.module.attention(features, feature_mask)
        return features, feature_mask, maps, embeddings
