"""Global contrastive loss: NT-Xent (SimCLR's normalized temperature-scaled cross-entropy)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GlobalInfoNCE(nn.Module):
    """NT-Xent between two views of N images, the other 2N - 2 embeddings of the batch as negatives.

    z1, z2 (N, D): row n of each embeds view 1 and view 2 of image n. With u = normalize(cat(z1, z2))
    (2N, D), s_ik = <u_i, u_k> / temperature and pos(i) = i + N for i < N, i - N otherwise:

        L = 1 / (2N) * sum_i -log( exp(s_{i, pos(i)}) / sum_{k != i} exp(s_ik) )

    Computed in float32. Returns a scalar (0 for N = 1: no negatives).
    """

    def __init__(self, temperature: float):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        if z1.ndim != 2 or z1.shape != z2.shape or len(z1) < 1:
            raise ValueError(f"z1 and z2 must both be (N, D) with N >= 1, got {tuple(z1.shape)} and {tuple(z2.shape)}")
        n = len(z1)
        u = F.normalize(torch.cat((z1, z2)).float(), dim=1)  # (2N, D)
        logits = u @ u.T / self.temperature  # (2N, 2N)
        logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=u.device), float("-inf"))  # k != i
        positives = torch.cat((torch.arange(n, 2 * n), torch.arange(n))).to(u.device)  # (2N,)
        return F.cross_entropy(logits, positives)
