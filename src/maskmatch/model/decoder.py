"""Transformer decoder over the flattened feature map, trained left-to-right and right-to-left (BTTR/CoMER).

The direction is told by the first input token only: SOS starts a left-to-right sequence, EOS a
right-to-left one. Layers cache their self-attention keys and values, so decoding one token costs one
step, and the memory's cross-attention keys and values are computed once per image: the rows that decode
one image (its beams) share them, their queries attending together in one call (`DecoderCache.group`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from maskmatch.data.vocab import EOS, PAD, SOS
from maskmatch.model.config import ModelConfig
from maskmatch.model.encoder import sinusoid

KV = tuple[torch.Tensor, torch.Tensor]  # keys, values (N, nhead, S, head_dim)


def bidirectional_targets(tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens (B, L) PAD-padded, lengths (B,) -> inputs (2B, L+1), targets (2B, L+1), PAD elsewhere.

    Rows 0..B-1, left to right: input [SOS, t1..tn], target [t1..tn, EOS].
    Rows B..2B-1, right to left: input [EOS, tn..t1], target [tn..t1, SOS] (BTTR's convention).
    """
    B, L = tokens.shape
    lengths = lengths.to(tokens.device)
    inside = torch.arange(L, device=tokens.device) < lengths[:, None]  # (B, L)
    forward = tokens.masked_fill(~inside, PAD)  # (B, L)
    flip = (lengths[:, None] - 1 - torch.arange(L, device=tokens.device)).clamp_min(0)  # (B, L)
    backward = tokens.gather(1, flip).masked_fill(~inside, PAD)  # (B, L)
    pad = torch.full((B, 1), PAD, dtype=tokens.dtype, device=tokens.device)
    rows = torch.arange(B, device=tokens.device)
    l2r_out, r2l_out = torch.cat((forward, pad), 1), torch.cat((backward, pad), 1)  # (B, L+1)
    l2r_out[rows, lengths], r2l_out[rows, lengths] = EOS, SOS
    l2r_in = torch.cat((torch.full_like(pad, SOS), forward), 1)  # (B, L+1)
    r2l_in = torch.cat((torch.full_like(pad, EOS), backward), 1)  # (B, L+1)
    return torch.cat((l2r_in, r2l_in)), torch.cat((l2r_out, r2l_out))


def entry_runs(owners: list[int]) -> tuple[list[int], int]:
    """Row owners -> (entries, group): owners is each of entries repeated group times in a row, or group is 1."""
    group = len(owners) // len(set(owners)) if owners else 1
    entries = owners[::group]
    if owners != [e for e in entries for _ in range(group)]:
        return owners, 1
    return entries, group


def take(kv: KV | None, rows: torch.Tensor) -> KV | None:
    """Keys and values of rows `rows` only (None stays None). index_select, not [rows]: the same copy, about 5x faster
    on this CPU (beam search reorders its caches every step)."""
    return None if kv is None else (kv[0].index_select(0, rows), kv[1].index_select(0, rows))


@dataclass
class DecoderCache:
    """Keys and values of N sequences decoded over E = N / group memories (images): rows n*group ..
    n*group + group-1 read memory entry n (group 1: one image per row; in beam search, an image's beams)."""

    memory_kv: list[KV]  # per layer: cross-attention keys and values of the memory (E, nhead, S, hd)
    memory_mask: torch.Tensor | None  # (E, 1, 1, S) bool, True on cells that may be attended; None: all cells
    self_kv: list[KV | None]  # per layer: self-attention keys and values of tokens so far (N, nhead, t, hd)
    length: int = 0  # tokens decoded so far: the position of the next one
    group: int = 1  # rows per memory entry

    @property
    def device(self) -> torch.device:
        return self.memory_kv[0][0].device

    def reorder(self, rows: torch.Tensor, group: int | None = None) -> None:
        """Row i takes the token history of row rows[i] (N',). N' may differ from N (an image's one start row
        becoming its K beams): `group` is then the new number of rows per memory entry. The memory is not
        moved: row i must read the same entry as row rows[i] (true in beam search, where beams of one image swap)."""
        self.self_kv = [take(kv, rows) for kv in self.self_kv]
        self.group = group or self.group

    def repeat_interleave(self, k: int) -> "DecoderCache":
        """Each row repeated k times in place (row b becomes rows b*k .. b*k+k-1); the memory is shared, not copied."""
        rep = lambda t: t.repeat_interleave(k, dim=0)  # noqa: E731
        return DecoderCache(self.memory_kv, self.memory_mask,
                            [None if kv is None else (rep(kv[0]), rep(kv[1])) for kv in self.self_kv],
                            self.length, self.group * k)

    def select(self, entries: torch.Tensor) -> "DecoderCache":
        """Only memory entries `entries` (E',) and their rows, in that order (beam search drops finished images)."""
        rows = (entries[:, None] * self.group + torch.arange(self.group, device=entries.device)).flatten()
        return DecoderCache([take(kv, entries) for kv in self.memory_kv],
                            None if self.memory_mask is None else self.memory_mask.index_select(0, entries),
                            [take(kv, rows) for kv in self.self_kv], self.length, self.group)

    def for_entries(self, owners: list[int]) -> "DecoderCache":
        """An empty cache (no tokens yet) for len(owners) new rows, row i reading memory entry owners[i] of this
        one (e.g. an image's candidates, rescored). Grouped, not copied per row, when owners come in equal runs."""
        entries, group = entry_runs(owners)
        index = torch.tensor(entries, dtype=torch.long, device=self.device)
        return DecoderCache([take(kv, index) for kv in self.memory_kv],
                            None if self.memory_mask is None else self.memory_mask.index_select(0, index),
                            [None] * len(self.self_kv), 0, group)


class Attention(nn.Module):
    """Multi-head attention whose keys and values are projected separately, so they can be cached."""

    def __init__(self, d_model: int, nhead: int, dropout: float):
        super().__init__()
        self.nhead, self.dropout = nhead, dropout
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def keys_values(self, x: torch.Tensor) -> KV:
        N, S, d = x.shape
        k, v = self.kv(x).view(N, S, 2, self.nhead, d // self.nhead).permute(2, 0, 3, 1, 4)  # 2 x (N, nh, S, hd)
        return k, v

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
                causal: bool = False, group: int = 1) -> torch.Tensor:
        """x (N, T, d) queries; k, v (N / group, nh, S, hd): each run of `group` rows of x reads one set, its
        group * T queries attending in one call (each query's attention is its own, so this changes nothing)."""
        N, T, d = x.shape
        q = self.q(x).view(N // group, group * T, self.nhead, d // self.nhead).transpose(1, 2)  # (N/g, nh, gT, hd)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)  # (N/g, nh, gT, hd)
        return self.out(y.transpose(1, 2).reshape(N, T, d))  # (N, T, d)

    def weights(self, x: torch.Tensor, k: torch.Tensor, attn_mask: torch.Tensor | None = None,
                group: int = 1) -> torch.Tensor:
        """The attention weights that `forward` applies (no causal mask, no dropout): x (N, T, d), k (N / group,
        nh, S, hd), attn_mask (N / group, 1, 1, S) True where allowed -> softmax(q k^T / sqrt(hd)) (N, nh, T, S)."""
        N, T, d = x.shape
        q = self.q(x).view(N // group, group * T, self.nhead, d // self.nhead).transpose(1, 2)  # (N/g, nh, gT, hd)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.nhead)  # (N/g, nh, gT, S)
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        w = scores.softmax(-1).view(N // group, self.nhead, group, T, -1)  # (N/g, nh, g, T, S)
        return w.transpose(1, 2).reshape(N, self.nhead, T, -1)  # (N, nh, T, S)


class DecoderLayer(nn.Module):
    """Self-attention, cross-attention, FFN; post-norm like nn.TransformerDecoderLayer, or pre-norm."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        d, p = config.d_model, config.dropout
        weights = p if config.attention_dropout is None else config.attention_dropout
        self.self_attn = Attention(d, config.nhead, weights)
        self.cross_attn = Attention(d, config.nhead, weights)
        self.ffn = nn.Sequential(nn.Linear(d, config.dim_feedforward), nn.ReLU(), nn.Dropout(p),
                                 nn.Linear(config.dim_feedforward, d))
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(p)
        self.norm_first = config.norm_first

    def _residual(self, x: torch.Tensor, y: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
        return x + self.drop(y) if self.norm_first else norm(x + self.drop(y))

    def forward(self, x: torch.Tensor, memory_kv: KV, memory_mask: torch.Tensor | None,
                past: KV | None = None, group: int = 1,
                capture: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, KV]:
        """x (N, T, d) at positions t..t+T-1, past keys/values (N, nh, t, hd) or None (t = 0), memory
        keys/values (N / group, nh, S, hd) -> x (N, T, d), self-attention keys/values (N, nh, t+T, hd).
        capture: a list that receives the cross-attention weights (N, nh, T, S); the output is unchanged."""
        T = x.shape[1]
        h = self.norm1(x) if self.norm_first else x
        k, v = self.self_attn.keys_values(h)  # (N, nh, T, hd)
        mask, causal = None, past is None  # causal holds for a single query too
        if past is not None:
            k, v = torch.cat((past[0], k), 2), torch.cat((past[1], v), 2)  # (N, nh, t+T, hd)
            if T > 1:
                t = past[0].shape[2]
                mask = torch.ones(T, t + T, dtype=torch.bool, device=x.device).tril(t)  # (T, t+T)
        x = self._residual(x, self.self_attn(h, k, v, attn_mask=mask, causal=causal), self.norm1)
        h = self.norm2(x) if self.norm_first else x
        if capture is not None:
            capture.append(self.cross_attn.weights(h, memory_kv[0], memory_mask, group))
        x = self._residual(x, self.cross_attn(h, *memory_kv, attn_mask=memory_mask, group=group), self.norm2)
        h = self.norm3(x) if self.norm_first else x
        x = self._residual(x, self.ffn(h), self.norm3)
        return x, (k, v)


class Decoder(nn.Module):
    """Token embedding (+ LayerNorm, CoMER) + 1-D sinusoidal positions, decoder layers, linear head."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.embed_norm = nn.LayerNorm(config.d_model)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_decoder_layers))
        self.final_norm = nn.LayerNorm(config.d_model) if config.norm_first else nn.Identity()
        self.head = nn.Linear(config.d_model, config.vocab_size)
        self._positions: torch.Tensor | None = None  # a cache of position encodings, not a buffer (nor saved)

    def positions(self, start: int, stop: int, device: torch.device) -> torch.Tensor:
        """Position encodings of start..stop-1 (T, d), from a table computed once per device (decoding asks for
        one position a step)."""
        table = self._positions
        if table is None or table.device != device or len(table) < stop:
            table = sinusoid(torch.arange(max(stop, self.config.max_len + 1), device=device), self.config.d_model,
                             self.config.pos_temperature)
            self._positions = table
        return table[start:stop]

    def init_cache(self, features: torch.Tensor, feature_mask: torch.Tensor) -> DecoderCache:
        """features (N, h, w, d), feature_mask (N, h, w) True on padding -> an empty cache for N sequences."""
        memory = features.flatten(1, 2)  # (N, S, d)
        memory_kv = [layer.cross_attn.keys_values(memory) for layer in self.layers]
        attend = None if not feature_mask.any() else ~feature_mask.flatten(1)[:, None, None, :]  # (N, 1, 1, S)
        return DecoderCache(memory_kv, attend, [None] * len(self.layers))

    def decode(self, tokens: torch.Tensor, cache: DecoderCache,
               capture: list[torch.Tensor] | None = None) -> torch.Tensor:
        """tokens (N, T) following the cache's tokens -> logits (N, T, V); the cache takes them in.
        capture: a list that receives each layer's cross-attention weights (N, nh, T, S), in layer order."""
        start, stop = cache.length, cache.length + tokens.shape[1]
        x = self.embed_norm(self.embed(tokens)) + self.positions(start, stop, tokens.device)  # (N, T, d)
        for i, layer in enumerate(self.layers):
            x, cache.self_kv[i] = layer(x, cache.memory_kv[i], cache.memory_mask, cache.self_kv[i], cache.group,
                                        capture)
        cache.length = stop
        return self.head(self.final_norm(x))  # (N, T, V)

    def step(self, tokens: torch.Tensor, cache: DecoderCache) -> torch.Tensor:
        """tokens (N,) -> logits (N, V) of the next token; the cache takes the tokens in."""
        return self.decode(tokens[:, None], cache)[:, 0]

    def forward(self, features: torch.Tensor, feature_mask: torch.Tensor, tokens_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: features (N, h, w, d), feature_mask (N, h, w), tokens_in (N, L) -> logits (N, L, V).
        Rows are independent: duplicate features for the l2r and r2l halves of `bidirectional_targets`."""
        return self.decode(tokens_in, self.init_cache(features, feature_mask))

    def cross_attention(self, features: torch.Tensor, feature_mask: torch.Tensor,
                        tokens_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing as `forward`, returning where each input position looks: the cross-attention
        weights averaged over heads and layers. features (N, h, w, d), feature_mask (N, h, w) True on padding,
        tokens_in (N, L) -> (N, L, h, w), each position's map summing to 1 over the valid cells (0 on padding).
        Position i reads tokens_in[:, :i+1], so for [SOS, t1..tn] row i is the attention that chose t(i+1)."""
        captured: list[torch.Tensor] = []
        self.decode(tokens_in, self.init_cache(features, feature_mask), captured)
        N, h, w = feature_mask.shape
        mean = torch.stack(captured).mean(dim=(0, 2))  # (N, L, S): layers, then heads
        return mean.view(N, tokens_in.shape[1], h, w)
