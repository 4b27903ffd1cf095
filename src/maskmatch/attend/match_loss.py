"""Match: each student embedding against the teacher's for its image and map; the batch's other images are negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MatchLoss(nn.Module):
    """InfoNCE per map between student and teacher embeddings, s and t (B, K, d), with unit vectors s^, t^:

        L = -1/(B K) sum_b sum_k log( exp(s^_bk . t^_bk / tau) / sum_b' exp(s^_bk . t^_b'k / tau) )

    Only the student gets gradients (the teacher's embeddings are detached). With B = 1 it is 0.
    """

    def __init__(self, temperature: float = 0.1):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature {temperature} must be positive")
        self.temperature = temperature

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if student.shape != teacher.shape or student.ndim != 3:
            raise ValueError(f"student {tuple(student.shape)}, teacher {tuple(teacher.shape)} must both be (B, K, d)")
        s = F.normalize(student.float(), dim=-1).transpose(0, 1)  # (K, B, d)
        t = F.normalize(teacher.detach().float(), dim=-1).transpose(0, 1)  # (K, B, d)
        logits = s @ t.transpose(1, 2) / self.temperature  # (K, B, B): student b against teacher b'
        K, B, _ = logits.shape
        targets = torch.arange(B, device=logits.device).repeat(K)  # (K B,)
        return F.cross_entropy(logits.reshape(K * B, B), targets)


def top1_matches(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """student, teacher (B, K, d) -> (B, K) bool: the teacher embedding nearest (cosine) to s_bk is t_bk."""
    s, t = F.normalize(student.float(), dim=-1), F.normalize(teacher.float(), dim=-1)
    similarity = torch.einsum("bkd,ckd->kbc", s, t)  # (K, B, B)
    return (similarity.argmax(-1) == torch.arange(s.shape[0], device=s.device)).T  # (B, K)
