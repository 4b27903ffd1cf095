"""Prediction: the teacher's features at hidden cells, predicted from the student's view of the masked image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PredictionLoss(nn.Module):
    """Normalized squared error at the hidden cells M (BYOL's form), p predicted and t teacher features (B, h, w, d):

        L = 1/|M| sum_{(b, i, j) in M} || p^_bij - t^_bij ||^2 = 1/|M| sum_M (2 - 2 cos(p_bij, t_bij))

    with x^ = x / ||x||; cells (B, h, w) bool marks M. In [0, 4]; 0 when no cell is hidden (still a graph
    node of p, so that every rank runs the same backward).
    """

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        if not eps > 0:
            raise ValueError(f"eps {eps} must be positive")
        self.eps = eps

    def forward(self, predicted: torch.Tensor, teacher: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        if predicted.shape != teacher.shape or predicted.shape[:3] != cells.shape:
            raise ValueError(f"predicted {tuple(predicted.shape)}, teacher {tuple(teacher.shape)} must be (B, h, w, d) "
                             f"and cells {tuple(cells.shape)} (B, h, w)")
        p = F.normalize(predicted.float(), dim=-1, eps=self.eps)  # (B, h, w, d)
        t = F.normalize(teacher.detach().float(), dim=-1, eps=self.eps)
        error = (p - t).pow(2).sum(-1)  # (B, h, w)
        return (error * cells).sum() / cells.sum().clamp_min(1)

