"""The student's feature predictor: from its view of the masked image, the teacher's features at hidden cells."""

from __future__ import annotations

import torch
from torch import nn


class FeaturePredictor(nn.Module):
    """The student's prediction head: features (B, h, w, d), feature_mask (B, h, w) -> predictions (B, h, w, d).
    3x3 conv, GELU, 1x1 conv, reading padding as zeros (as the encoder does)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(d_model, d_model, kernel_size=3, padding=1), nn.GELU(),
                                 nn.Conv2d(d_model, d_model, kernel_size=1))

    def forward(self, features: torch.Tensor, feature_mask: torch.Tensor) -> torch.Tensor:
        x = features.masked_fill(feature_mask[..., None], 0.0).permute(0, 3, 1, 2)  # (B, d, h, w)
        return self.net(x).permute(0, 2, 3, 1)  # (B, h, w, d)
