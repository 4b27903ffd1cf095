"""Greedy decoding and batched beam search with right-to-left rescoring (BTTR/CoMER), over cached keys/values.

Scores: a hypothesis of n tokens is scored over its n+1 steps (the tokens and the closing EOS):
score = sum of log-probs / (n+1)**length_penalty. Greedy uses length_penalty 1 (the mean log-prob per
step). With rescoring, the right-to-left teacher-forced log-prob of the reversed sequence (its n tokens
and the closing SOS) is added to the sum before dividing, as CoMER does. A sequence cut off at max_len
steps, with no EOS, sums its n = max_len steps and is divided by (n+1)**length_penalty all the same.
PAD and the start token are never emitted: their logits are set to -inf before the softmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from maskmatch.data.vocab import EOS, PAD, SOS
from maskmatch.model.decoder import Decoder, DecoderCache, bidirectional_targets


def next_logprobs(decoder: Decoder, tokens: torch.Tensor, cache: DecoderCache) -> torch.Tensor:
    """tokens (N,) -> log-probs (N, V) of the next token, PAD and SOS excluded; the cache takes the tokens in."""
    logits = decoder.step(tokens, cache)  # (N, V)
    logits[:, [PAD, SOS]] = float("-inf")
    return logits.log_softmax(-1)


@dataclass
class Hypothesis:
    ids: list[int]  # token ids, without sos and eos
    score: float  # ranking score, see the module docstring


@torch.no_grad()
def greedy(decoder: Decoder, features: torch.Tensor, feature_mask: torch.Tensor, max_len: int) -> list[Hypothesis]:
    """features (B, h, w, d), feature_mask (B, h, w) -> B hypotheses, the arg-max token at each step."""
    B = features.shape[0]
    cache = decoder.init_cache(features, feature_mask)
    tokens = torch.full((B,), SOS, dtype=torch.long, device=features.device)
    out = torch.full((B, max_len), PAD, dtype=torch.long, device=features.device)
    length = torch.full((B,), max_len, dtype=torch.long, device=features.device)  # tokens before EOS
    total = torch.zeros(B, device=features.device)
    done = torch.zeros(B, dtype=torch.bool, device=features.device)
    for t in range(max_len):
        best, tokens = next_logprobs(decoder, tokens, cache).max(-1)  # (B,), (B,)
        total += best.masked_fill(done, 0.0)
        out[:, t] = tokens
        ends = ~done & (tokens == EOS)
        length[ends] = t
        done |= ends
        if done.all():
            break
    return [Hypothesis(row[:n], s / (n + 1)) for row, n, s in zip(out.tolist(), length.tolist(), total.tolist())]


@torch.no_grad()
def sequence_logprob(decoder: Decoder, features: torch.Tensor, feature_mask: torch.Tensor,
                     ids: list[list[int]], direction: str) -> torch.Tensor:
    """Teacher-forced log-prob of each sequence, features (M, h, w, d) for ids[m] -> (M,).
    'l2r' scores t1..tn, EOS; 'r2l' scores tn..t1, SOS; PAD and the start token are excluded from the softmax."""
    M, L = len(ids), max((len(s) for s in ids), default=0)
    tokens = torch.full((M, L), PAD, dtype=torch.long, device=features.device)
    for m, s in enumerate(ids):
        tokens[m, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    lengths = torch.tensor([len(s) for s in ids], dtype=torch.long, device=features.device)
    inputs, targets = bidirectional_targets(tokens, lengths)  # (2M, L+1)
    half = slice(0, M) if direction == "l2r" else slice(M, 2 * M)
    inputs, targets = inputs[half], targets[half]  # (M, L+1)
    logits = decoder(features, feature_mask, inputs)  # (M, L+1, V)
    logits[..., [PAD, SOS if direction == "l2r" else EOS]] = float("-inf")  # never emitted: as in decoding
    logp = logits.log_softmax(-1)  # (M, L+1, V)
    picked = logp.gather(2, targets[..., None])[..., 0]  # (M, L+1)
    return picked.masked_fill(targets == PAD, 0.0).sum(1)  # (M,)


@torch.no_grad()
def beam_search(decoder: Decoder, features: torch.Tensor, feature_mask: torch.Tensor, beam_size: int, max_len: int,
                length_penalty: float = 1.0, rescore: bool = True) -> list[Hypothesis]:
    """Left-to-right beam search of all images at once (B * beam_size rows), then optional r2l rescoring.

    Each step, the 2K best extensions of an image's K beams are ranked; those among the first K that end
    in EOS are offered to the image's pool of K finished hypotheses (a better one evicts the worst), and
    the K best others live on. An image is done when its pool is full and its worst member's score is at
    least the best live beam's sum divided by the same step count (Hugging Face's rule, CoMER's scorer);
    for K = 1 this stops at greedy's EOS, so the result is greedy's. At max_len the live beams of images
    not yet done are offered too. The best pooled candidate by (rescored) score wins.
    """
    B, K, device = features.shape[0], beam_size, features.device
    cache = decoder.init_cache(features, feature_mask).repeat_interleave(K)  # image b owns rows b*K .. b*K+K-1
    scores = torch.full((B, K), float("-inf"), device=device)  # sum of log-probs of each live beam
    scores[:, 0] = 0.0  # one live beam at the start: the others would repeat it
    tokens = torch.full((B * K,), SOS, dtype=torch.long, device=device)
    seqs = torch.empty((B * K, 0), dtype=torch.long, device=device)  # (B*K, t) tokens of each live beam
    pools: list[list[tuple[list[int], float, float]]] = [[] for _ in range(B)]  # (ids, sum, normalized sum)
    done = [False] * B
    base = torch.arange(B, device=device)[:, None] * K  # (B, 1)

    def offer(b: int, ids: list[int], total: float) -> None:
        entry, pool = (ids, total, total / (len(ids) + 1) ** length_penalty), pools[b]
        if len(pool) < K:
            pool.append(entry)
            return
        worst = min(range(K), key=lambda i: pool[i][2])
        if entry[2] > pool[worst][2]:
            pool[worst] = entry

    for t in range(max_len):
        logp = next_logprobs(decoder, tokens, cache)  # (B*K, V)
        V = logp.shape[1]
        top, index = (scores[:, :, None] + logp.view(B, K, V)).view(B, K * V).topk(min(2 * K, K * V), dim=1)
        beam, token = index // V, index % V  # (B, 2K)
        ends = token == EOS  # (B, 2K)
        for b, j in ends[:, :K].nonzero().tolist():
            if not done[b] and top[b, j] > float("-inf"):
                offer(b, seqs[b * K + beam[b, j]].tolist(), top[b, j].item())
        keep = torch.argsort(ends.to(torch.int8), dim=1, stable=True)[:, :K]  # (B, K) the K best non-EOS
        scores, tokens = top.gather(1, keep), token.gather(1, keep).view(-1)  # (B, K), (B*K,)
        rows = (base + beam.gather(1, keep)).view(-1)  # (B*K,) where each new beam came from
        seqs = torch.cat((seqs[rows], tokens[:, None]), dim=1)  # (B*K, t+1)
        cache.reorder(rows)
        bound = (scores.max(1).values / (t + 1) ** length_penalty).tolist()  # (B,) best live, normalized
        done = [d or (len(p) == K and min(e[2] for e in p) >= x) for d, p, x in zip(done, pools, bound)]
        if all(done):
            break
    live_scores = scores.tolist()
    for b in range(B):
        if not done[b]:  # cut off at max_len: live beams are candidates too
            for k, total in enumerate(live_scores[b]):
                if total > float("-inf"):
                    offer(b, seqs[b * K + k].tolist(), total)
    finished = [[(ids, total) for ids, total, _ in pool] for pool in pools]
    owner = [b for b in range(B) for _ in finished[b]]
    ids = [c[0] for f in finished for c in f]
    total = torch.tensor([c[1] for f in finished for c in f], device=device)  # (M,)
    if rescore and ids:
        rows = torch.tensor(owner, device=device)
        total = total + sequence_logprob(decoder, features[rows], feature_mask[rows], ids, "r2l")
    steps = torch.tensor([len(s) + 1 for s in ids], dtype=torch.float, device=device)
    final = (total / steps**length_penalty).tolist()
    best: list[Hypothesis | None] = [None] * B
    for b, s, f in zip(owner, ids, final):
        if best[b] is None or f > best[b].score:
            best[b] = Hypothesis(s, f)
    return best
