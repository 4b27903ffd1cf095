"""Greedy decoding and batched beam search with right-to-left rescoring (BTTR/CoMER), over cached keys/values.

Scores: a hypothesis of n tokens is scored over its n+1 steps (the tokens and the closing EOS):
score = sum of log-probs / (n+1)**length_penalty. Greedy uses length_penalty 1 (the mean log-prob per
step). With rescoring, the right-to-left teacher-forced log-prob of the reversed sequence (its n tokens
and the closing SOS) is added to the sum before dividing, as CoMER does. A sequence cut off at max_len
steps, with no EOS, sums its n = max_len steps and is divided by (n+1)**length_penalty all the same.
PAD and the start token are never emitted: their logits are set to -inf before the softmax.

With a `LatexGrammar`, the tokens it does not allow at a step get log-prob -inf after the softmax (the
allowed ones keep the model's log-probs, so scores stay comparable): every output then parses with
`normalize_latex`, and none is cut off at max_len.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from maskmatch.data.vocab import EOS, PAD, SOS
from maskmatch.model.decoder import Decoder, DecoderCache, bidirectional_targets
from maskmatch.model.grammar import LatexGrammar


def next_logprobs(decoder: Decoder, tokens: torch.Tensor, cache: DecoderCache,
                  allowed: torch.Tensor | None = None) -> torch.Tensor:
    """tokens (N,) -> log-probs (N, V) of the next token, PAD and SOS excluded, and where allowed (N, V) is
    given the ids it does not allow; the cache takes the tokens in."""
    logits = decoder.step(tokens, cache)  # (N, V)
    logits[:, [PAD, SOS]] = float("-inf")
    logp = logits.log_softmax(-1)
    return logp if allowed is None else logp.masked_fill(~allowed, float("-inf"))


@dataclass
class Hypothesis:
    ids: list[int]  # token ids, without sos and eos
    score: float  # ranking score, see the module docstring


@torch.inference_mode()
def greedy(decoder: Decoder, features: torch.Tensor, feature_mask: torch.Tensor, max_len: int,
           grammar: LatexGrammar | None = None) -> list[Hypothesis]:
    """features (B, h, w, d), feature_mask (B, h, w) -> B hypotheses, the arg-max (allowed) token at each step.
    A row that emits EOS leaves the batch: the others decode on without it."""
    B = features.shape[0]
    cache = decoder.init_cache(features, feature_mask)
    tokens = torch.full((B,), SOS, dtype=torch.long, device=features.device)
    out = torch.full((B, max_len), PAD, dtype=torch.long, device=features.device)
    length = torch.full((B,), max_len, dtype=torch.long, device=features.device)  # tokens before EOS
    total = torch.zeros(B, device=features.device)
    rows = torch.arange(B, device=features.device)  # (A,) the images still decoding, in the cache's order
    states = [grammar.start()] * B if grammar else []  # (A,) grammar states of the live rows
    for t in range(max_len):
        allowed = grammar.masks(states, max_len - t - 1, features.device) if grammar else None
        best, tokens = next_logprobs(decoder, tokens, cache, allowed).max(-1)  # (A,), (A,)
        total[rows] += best
        out[rows, t] = tokens
        if grammar:
            states = [grammar.advance(s, tok) for s, tok in zip(states, tokens.tolist())]
        ends = tokens == EOS  # (A,)
        if ends.any():
            length[rows[ends]] = t
            live = (~ends).nonzero()[:, 0]
            if not len(live):
                break
            rows, tokens, cache = rows[live], tokens[live], cache.select(live)
            states = [states[i] for i in live.tolist()] if grammar else []
    return [Hypothesis(row[:n], s / (n + 1)) for row, n, s in zip(out.tolist(), length.tolist(), total.tolist())]


def _token_rows(ids: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ids -> tokens (M, L) PAD-padded, lengths (M,)."""
    M, L = len(ids), max((len(s) for s in ids), default=0)
    tokens = torch.full((M, L), PAD, dtype=torch.long, device=device)
    for m, s in enumerate(ids):
        tokens[m, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return tokens, torch.tensor([len(s) for s in ids], dtype=torch.long, device=device)


@torch.inference_mode()
def sequence_logprob(decoder: Decoder, features: torch.Tensor, feature_mask: torch.Tensor,
                     ids: list[list[int]], direction: str) -> torch.Tensor:
    """Teacher-forced log-prob of each sequence, features (M, h, w, d) for ids[m] -> (M,).
    'l2r' scores t1..tn, EOS; 'r2l' scores tn..t1, SOS; PAD and the start token are excluded from the softmax."""
    return cached_sequence_logprob(decoder, decoder.init_cache(features, feature_mask), ids, direction)


@torch.inference_mode()
def cached_sequence_logprob(decoder: Decoder, cache: DecoderCache, ids: list[list[int]], direction: str) -> torch.Tensor:
    """`sequence_logprob` over an empty cache whose row m reads the memory of ids[m] (the memory keys and
    values of beam search, reused: see `DecoderCache.for_entries`) -> (M,)."""
    M = len(ids)
    tokens, lengths = _token_rows(ids, cache.device)
    inputs, targets = bidirectional_targets(tokens, lengths)  # (2M, L+1)
    half = slice(0, M) if direction == "l2r" else slice(M, 2 * M)
    inputs, targets = inputs[half], targets[half]  # (M, L+1)
    logits = decoder.decode(inputs, cache)  # (M, L+1, V)
    logits[..., [PAD, SOS if direction == "l2r" else EOS]] = float("-inf")  # never emitted: as in decoding
    logp = logits.log_softmax(-1)  # (M, L+1, V)
    picked = logp.gather(2, targets[..., None])[..., 0]  # (M, L+1)
    return picked.masked_fill(targets == PAD, 0.0).sum(1)  # (M,)


@torch.inference_mode()
def r2l_logprob(decoder: Decoder, memory: DecoderCache, owners: list[int], ids: list[list[int]]) -> torch.Tensor:
    """The r2l log-prob of ids[m] over memory entry owners[m] of `memory` (M,). The images with the same number of
    rows are scored in one call, each image's rows grouped on its memory (`DecoderCache.group`): a memory is copied
    once per image and call, not once per row (which made the rescoring the peak of a recognize process's memory)."""
    runs: dict[int, list[int]] = {}  # image -> its rows
    for m, b in enumerate(owners):
        runs.setdefault(b, []).append(m)
    by_size: dict[int, list[int]] = {}  # rows per image -> those images
    for b, rows in runs.items():
        by_size.setdefault(len(rows), []).append(b)
    out = torch.empty(len(owners), device=memory.device)
    for images in by_size.values():
        rows = [m for b in images for m in runs[b]]
        cache = memory.for_entries([owners[m] for m in rows])  # equal runs: one memory entry per image
        out[rows] = cached_sequence_logprob(decoder, cache, [ids[m] for m in rows], "r2l")
    return out


@torch.inference_mode()
def r2l_logprob_of_contenders(decoder: Decoder, memory: DecoderCache, owner: list[int], ids: list[list[int]],
                              total: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """The r2l log-prob of each candidate that can still win its image (M,), -inf for the others.

    Candidate m of image owner[m] (memory entry) has l2r sum total[m] and divisor steps[m]. A log-prob is
    at most 0, so (total + r2l) / steps <= total / steps: each image's l2r-best candidate is rescored
    first, then only the candidates whose l2r score reaches the best rescored one (ties included). The
    winner is the same as when every candidate is rescored; it just skips those that cannot win.
    """
    bound = (total / steps).tolist()
    first: dict[int, int] = {}  # image -> its l2r-best candidate
    for m, b in enumerate(owner):
        if b not in first or bound[m] > bound[first[b]]:
            first[b] = m
    r2l = torch.full_like(total, float("-inf"))

    def score(rows: list[int]) -> None:
        if rows:
            r2l[rows] = r2l_logprob(decoder, memory, [owner[m] for m in rows], [ids[m] for m in rows])

    score(sorted(first.values()))
    best = ((total + r2l) / steps).tolist()
    score([m for m, b in enumerate(owner) if m != first[b] and bound[m] >= best[first[b]]])
    return r2l


@torch.inference_mode()
def beam_search(decoder: Decoder, features: torch.Tensor, feature_mask: torch.Tensor, beam_size: int, max_len: int,
                length_penalty: float = 1.0, rescore: bool = True, grammar: LatexGrammar | None = None,
                n_best: bool = False) -> list[Hypothesis] | list[list[Hypothesis]]:
    """Left-to-right beam search of all images at once (up to B * beam_size rows), then optional r2l rescoring.

    Each step, the 2K best extensions of an image's K beams are ranked; those among the first K that end
    in EOS are offered to the image's pool of K finished hypotheses (a better one evicts the worst), and
    the K best others live on. An image is done when its pool is full and its worst member's score is at
    least the best live beam's sum divided by the same step count (Hugging Face's rule, CoMER's scorer);
    for K = 1 this stops at greedy's EOS, so the result is greedy's. At max_len the live beams of images
    not yet done are offered too. The best pooled candidate by (rescored) score wins. A grammar masks each
    step's extensions (see the module docstring). n_best=True returns each image's whole pool instead (up to K
    hypotheses, every one rescored), best first: its first is the hypothesis n_best=False returns.

    Cost: an image starts with one row (its one live beam, SOS) and has K from the second step on; a done
    image's rows leave the batch. The memory's keys and values are computed once per image, shared by its
    beams, and reused by the rescoring, which skips the candidates that cannot win.
    """
    B, K, device = features.shape[0], beam_size, features.device
    memory = decoder.init_cache(features, feature_mask)  # the images' memory keys and values, kept for rescoring
    cache = memory.for_entries(list(range(B)))  # one row per image to start: its one live beam, SOS
    scores = torch.zeros((B, 1), device=device)  # (A, k) sum of log-probs of each live beam, k = 1 then K
    tokens = torch.full((B,), SOS, dtype=torch.long, device=device)  # (A*k,)
    seqs = torch.empty((B, 0), dtype=torch.long, device=device)  # (A*k, t) tokens of each live beam
    active = list(range(B))  # the images still searching, in the order of the live rows
    pools: list[list[tuple[list[int], float, float]]] = [[] for _ in range(B)]  # (ids, sum, normalized sum)
    done = [False] * B
    k = 1  # live beams per image: 1 at the start, then K
    states = [grammar.start()] * B if grammar else []  # (A*k,) grammar states of the live beams

    def offer(b: int, ids: list[int], total: float) -> None:
        entry, pool = (ids, total, total / (len(ids) + 1) ** length_penalty), pools[b]
        if len(pool) < K:
            pool.append(entry)
            return
        worst = min(range(K), key=lambda i: pool[i][2])
        if entry[2] > pool[worst][2]:
            pool[worst] = entry

    for t in range(max_len):
        A = scores.shape[0]
        allowed = grammar.masks(states, max_len - t - 1, device) if grammar else None
        logp = next_logprobs(decoder, tokens, cache, allowed)  # (A*k, V)
        V = logp.shape[1]
        top, index = (scores[:, :, None] + logp.view(A, k, V)).view(A, k * V).topk(min(2 * K, k * V), dim=1)
        beam, token = index // V, index % V  # (A, 2K)
        ends = token == EOS  # (A, 2K)
        for i, j in ends[:, :K].nonzero().tolist():
            if top[i, j] > float("-inf"):
                offer(active[i], seqs[i * k + beam[i, j]].tolist(), top[i, j].item())
        keep = torch.argsort(ends.to(torch.int8), dim=1, stable=True)[:, :K]  # (A, K) the K best non-EOS
        scores, tokens = top.gather(1, keep), token.gather(1, keep).view(-1)  # (A, K), (A*K,)
        rows = (torch.arange(A, device=device)[:, None] * k + beam.gather(1, keep)).view(-1)  # (A*K,) sources
        seqs = torch.cat((seqs[rows], tokens[:, None]), dim=1)  # (A*K, t+1)
        if grammar:
            states = [grammar.advance(states[r], tok) for r, tok in zip(rows.tolist(), tokens.tolist())]
        k = scores.shape[1]  # K, or fewer if the vocabulary is tiny
        cache.reorder(rows, group=k)
        bound = (scores.max(1).values / (t + 1) ** length_penalty).tolist()  # (A,) best live, normalized
        for b, x in zip(active, bound):
            done[b] = len(pools[b]) == K and min(e[2] for e in pools[b]) >= x
        searching = [i for i, b in enumerate(active) if not done[b]]
        if not searching:
            break
        if len(searching) < A:  # done images leave: their beams can no longer win
            live = torch.tensor(searching, device=device)
            rows = (live[:, None] * k + torch.arange(k, device=device)).view(-1)  # (A'*K,)
            active, scores, tokens, seqs = [active[i] for i in searching], scores[live], tokens[rows], seqs[rows]
            cache = cache.select(live)
            states = [states[r] for r in rows.tolist()] if grammar else []
    live_scores = scores.tolist()
    for i, b in enumerate(active):
        if not done[b]:  # cut off at max_len: live beams are candidates too
            for j, total in enumerate(live_scores[i]):
                if total > float("-inf"):
                    offer(b, seqs[i * k + j].tolist(), total)
    owner = [b for b in range(B) for _ in pools[b]]
    ids = [entry[0] for pool in pools for entry in pool]
    total = torch.tensor([entry[1] for pool in pools for entry in pool], device=device)  # (M,)
    steps = torch.tensor([len(s) + 1 for s in ids], dtype=torch.float, device=device) ** length_penalty  # (M,)
    if rescore and ids and n_best:  # every candidate ranked: each is rescored
        total = total + r2l_logprob(decoder, memory, owner, ids)
    elif rescore and ids:
        total = total + r2l_logprob_of_contenders(decoder, memory, owner, ids, total, steps)
    final = (total / steps).tolist()
    if n_best:
        ranked: list[list[Hypothesis]] = [[] for _ in range(B)]
        for b, s, f in zip(owner, ids, final):
            ranked[b].append(Hypothesis(s, f))
        return [sorted(r, key=lambda h: -h.score) for r in ranked]
    best: list[Hypothesis | None] = [None] * B
    for b, s, f in zip(owner, ids, final):
        if best[b] is None or f > best[b].score:
            best[b] = Hypothesis(s, f)
    return best


class Decoding:
    """Greedy and beam decoding for a module with `encode`, `decoder` and `config` (HMERModel, Ensemble).
    Decoding runs in the module's current mode: call `.eval()` first."""

    @torch.no_grad()
    def greedy(self, images: torch.Tensor, mask: torch.Tensor, max_len: int | None = None,
               grammar: LatexGrammar | None = None) -> list[Hypothesis]:
        """images (B, 1, H, W), mask (B, H, W) -> B hypotheses, left to right, arg-max at each step
        (among the tokens the grammar allows, if one is given)."""
        features, feature_mask = self.encode(images, mask)
        return greedy(self.decoder, features, feature_mask, max_len or self.config.max_len, grammar)

    @torch.no_grad()
    def beam_search(self, images: torch.Tensor, mask: torch.Tensor, beam_size: int = 10, max_len: int | None = None,
                    length_penalty: float = 1.0, rescore: bool = True, grammar: LatexGrammar | None = None,
                    n_best: bool = False) -> list[Hypothesis] | list[list[Hypothesis]]:
        """images (B, 1, H, W), mask (B, H, W) -> B hypotheses: l2r beam search (constrained by the grammar if
        one is given), rescored by r2l if asked; n_best=True: B lists of up to beam_size, best first."""
        if beam_size < 1:
            raise ValueError(f"beam_size must be positive, got {beam_size}")
        features, feature_mask = self.encode(images, mask)
        return beam_search(self.decoder, features, feature_mask, beam_size, max_len or self.config.max_len,
                           length_penalty, rescore, grammar, n_best)
