"""Entropy: keeps each attention map from spreading uniformly over the image."""

from __future__ import annotations

import math

import torch
from torch import nn


class EntropyLoss(nn.Module):
    """Mean entropy of the maps a (B, K, h, w) over each image's n_b valid cells, normalized by its maximum:

        L = 1/(B K) sum_b sum_k H(a_bk) / log(n_b),   H(a) = -sum_p a(p) log a(p)   (0 log 0 = 0)

    In [0, 1]: 1 for a uniform map, 0 for a map on one cell; an image of one valid cell counts 0.
    feature_mask (B, h, w) is True on padding.
    """

    def __init__(self, eps: float = 1e-12):
        super().__init__()
        if not eps > 0:
            raise ValueError(f"eps {eps} must be positive")
        self.eps = eps

    def forward(self, maps: torch.Tensor, feature_mask: torch.Tensor) -> torch.Tensor:
        if maps.ndim != 4 or maps.shape[:1] + maps.shape[2:] != feature_mask.shape:
            raise ValueError(f"maps {tuple(maps.shape)} must be (B, K, h, w) and feature_mask "
                             f"{tuple(feature_mask.shape)} (B, h, w)")
        a = maps.float().flatten(2)  # (B, K, hw)
        entropy = -(a * a.clamp_min(self.eps).log()).sum(-1)  # (B, K)
        n = (~feature_mask).flatten(1).sum(1).float()  # (B,)
        normalizer = n.log().clamp_min(math.log(2))[:, None]  # (B, 1); n = 1 has entropy 0 anyway
        return (entropy / normalizer).mean()
