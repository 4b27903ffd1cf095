"""Diversity: keeps an image's K attention maps apart (each on its own part of the expression)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DiversityLoss(nn.Module):
    """Mean cosine similarity between different maps of one image, maps a (B, K, h, w), 0 on padding:

        L = 1/(B K (K-1)) sum_b sum_{k != l} <a_bk, a_bl> / (||a_bk|| ||a_bl||)

    In [0, 1] (maps are non-negative): 0 when the maps are disjoint, 1 when all are equal. 0 for K = 1.
    """

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        if not eps > 0:
            raise ValueError(f"eps {eps} must be positive")
        self.eps = eps

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        if maps.ndim != 4:
            raise ValueError(f"maps {tuple(maps.shape)} must be (B, K, h, w)")
        B, K = maps.shape[:2]
        if K < 2:
            return maps.sum() * 0.0
        a = F.normalize(maps.float().flatten(2), dim=-1, eps=self.eps)  # (B, K, hw)
        gram = a @ a.transpose(1, 2)  # (B, K, K)
        off_diagonal = gram.sum((1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(-1)  # (B,)
        return off_diagonal.sum() / (B * K * (K - 1))
