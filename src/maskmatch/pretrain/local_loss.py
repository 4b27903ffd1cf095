"""Local contrastive loss: InfoNCE between features at corresponding ink points of two views."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def candidate_mask(points: torch.Tensor, valid: torch.Tensor, radius: float) -> torch.Tensor:
    """Which points may compete with an anchor's true correspondent, for anchors and points flattened to M = B P.

    points (B, P, 2) in original pixels, valid (B, P) -> (M, M) bool: entry (a, c) is True when c is valid
    and c is a itself, or lies in another image, or lies in the same image at least `radius` away from a.
    """
    B, P, _ = points.shape
    image = torch.arange(B, device=points.device).repeat_interleave(P)  # (M,)
    flat = points.reshape(B * P, 2).float()
    near = (image[:, None] == image[None, :]) & (torch.cdist(flat, flat) < radius)  # (M, M)
    near.fill_diagonal_(False)
    return ~near & valid.reshape(1, B * P)


class LocalInfoNCE(nn.Module):
    """InfoNCE between the features of the same original point in two views; other points are negatives.

    f1, f2 (B, P, D): features of P points per image, sampled in view 1 and view 2 at the images of the
    same original points; points (B, P, 2) those points in original pixels; valid (B, P) bool (on ink and
    inside both views). With n1, n2 the L2-normalized features flattened to (M, D), M = B P, an anchor a
    (valid) and C(a) from `candidate_mask` (a itself, the valid points of other images, and the valid
    points of its own image at least `exclude_radius` away):

        L_12 = mean_a -log( exp(<n1_a, n2_a> / t) / sum_{c in C(a)} exp(<n1_a, n2_c> / t) )
        L = (L_12 + L_21) / 2        (L_21: the same with the views swapped)

    Computed in float32. Returns a scalar; 0 (still differentiable) when no point is valid.
    """

    def __init__(self, temperature: float, exclude_radius: float):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if not exclude_radius >= 0:
            raise ValueError(f"exclude_radius must be >= 0, got {exclude_radius}")
        self.temperature, self.exclude_radius = temperature, exclude_radius

    def forward(self, f1: torch.Tensor, f2: torch.Tensor, points: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if f1.ndim != 3 or f1.shape != f2.shape or points.shape != (*f1.shape[:2], 2) or valid.shape != f1.shape[:2]:
            raise ValueError(f"expected f1, f2 (B, P, D), points (B, P, 2), valid (B, P); got {tuple(f1.shape)}, "
                             f"{tuple(f2.shape)}, {tuple(points.shape)}, {tuple(valid.shape)}")
        anchors = valid.flatten()
        if not bool(anchors.any()):
            return (f1.sum() + f2.sum()) * 0.0
        n1, n2 = (F.normalize(f.flatten(0, 1).float(), dim=1) for f in (f1, f2))  # (M, D)
        allowed = candidate_mask(points, valid, self.exclude_radius)[anchors]  # (A, M)
        targets = torch.nonzero(anchors)[:, 0]  # (A,): an anchor's correspondent has its own index
        loss = 0.0
        for a, b in ((n1, n2), (n2, n1)):
            logits = (a[anchors] @ b.T / self.temperature).masked_fill(~allowed, float("-inf"))  # (A, M)
            loss = loss + F.cross_entropy(logits, targets) / 2
        return loss
