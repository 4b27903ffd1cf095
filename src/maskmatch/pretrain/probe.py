"""The label-free probe of stage 1: can the encoder's own features (no projection head) find an image's other
view, and a point's correspondent?

Counts are returned as float64 tensors so that ranks can sum them; `ProbeCounts.summary` turns the sums
into rates (%) beside the rates a random guess would reach (chance).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from maskmatch.pretrain.local_loss import candidate_mask


def global_retrieval(e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
    """e1, e2 (N, D) pooled features of view 1 and 2 -> (hits, queries, sum of chance): each view queries the
    other view's N embeddings by cosine similarity; a hit is the same image's other view ranked first."""
    a, b = F.normalize(e1.float(), dim=1), F.normalize(e2.float(), dim=1)
    target = torch.arange(len(a), device=a.device)
    sim = a @ b.T  # (N, N)
    hits = (sim.argmax(1) == target).sum() + (sim.argmax(0) == target).sum()
    queries = 2 * len(a)
    return torch.stack((hits.double(), torch.tensor(float(queries), device=a.device, dtype=torch.float64),
                        torch.tensor(queries / len(a), device=a.device, dtype=torch.float64)))


def local_matching(f1: torch.Tensor, f2: torch.Tensor, points: torch.Tensor, valid: torch.Tensor,
                   radius: float) -> torch.Tensor:
    """f1, f2 (B, P, D) features at the same original points (B, P, 2) in the two views, valid (B, P) ->
    (hits, queries, sum of chance): each valid point of view 1 searches view 2 among the candidates of the
    local loss (`candidate_mask`: points of other images, and of its own image at least `radius` away)
    for its nearest neighbour by cosine similarity; a hit is its true correspondent."""
    anchors = valid.flatten()
    device = f1.device
    if not bool(anchors.any()):
        return torch.zeros(3, dtype=torch.float64, device=device)
    a, b = (F.normalize(f.flatten(0, 1).float(), dim=1) for f in (f1, f2))
    allowed = candidate_mask(points, valid, radius)[anchors]  # (A, M)
    sim = (a[anchors] @ b.T).masked_fill(~allowed, float("-inf"))
    hits = (sim.argmax(1) == torch.nonzero(anchors)[:, 0]).sum()
    chance = (1.0 / allowed.sum(1).double()).sum()
    return torch.stack((hits.double(), anchors.sum().double(), chance))


@dataclass
class ProbeCounts:
    """Sums over the validation batches: rows global and local, columns hits, queries, chance sum."""

    counts: torch.Tensor  # (2, 3) float64

    @classmethod
    def zeros(cls, device=None) -> "ProbeCounts":
        return cls(torch.zeros(2, 3, dtype=torch.float64, device=device))

    def summary(self) -> dict[str, float]:
        """probe_global, probe_local: top-1 rates in %; *_chance: a random guess's expected rate in %."""
        rates = {}
        for row, name in enumerate(("global", "local")):
            hits, queries, chance = self.counts[row].tolist()
            rates[f"probe_{name}"] = 100.0 * hits / queries if queries else float("nan")
            rates[f"probe_{name}_chance"] = 100.0 * chance / queries if queries else float("nan")
        return rates
