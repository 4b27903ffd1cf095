"""Several recognizers decoding as one: at each step the members' log-probs are averaged (a normalized geometric
mean of their distributions, the usual ensemble of sequence models), so greedy, beam search and the r2l rescoring
of model/search.py run unchanged over an `Ensemble`.

The members must read the same vocabulary and give feature maps of one shape (h, w) for an image; their widths d
may differ. `Ensemble.encode` lays the members' maps side by side on the last axis and `EnsembleDecoder` splits
them again, one slice per member, so search.py's (features, feature_mask) pair carries them all. Its cost is the
members' costs added up.
"""

from __future__ import annotations

import torch
from torch import nn

from maskmatch.model.decoder import DecoderCache
from maskmatch.model.search import Decoding


def mean_logprobs(logits: list[torch.Tensor]) -> torch.Tensor:
    """The members' logits (..., V) each -> their mean log-probs (..., V): how an ensemble scores a token."""
    return torch.stack([x.log_softmax(-1) for x in logits]).mean(0)


class EnsembleCache:
    """One `DecoderCache` per member, moved together; the interface search.py uses."""

    def __init__(self, members: list[DecoderCache]):
        self.members = members

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    def reorder(self, rows: torch.Tensor, group: int | None = None) -> None:
        for cache in self.members:
            cache.reorder(rows, group)

    def select(self, entries: torch.Tensor) -> "EnsembleCache":
        return EnsembleCache([cache.select(entries) for cache in self.members])

    def for_entries(self, owners: list[int]) -> "EnsembleCache":
        return EnsembleCache([cache.for_entries(owners) for cache in self.members])


class EnsembleDecoder(nn.Module):
    """The members' decoders over their slices of the memory; `decode` and `step` return mean log-probs."""

    def __init__(self, decoders: list[nn.Module], widths: list[int]):
        super().__init__()
        self.members = nn.ModuleList(decoders)
        self.widths = widths

    def _split(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return features.split(self.widths, dim=-1)

    def init_cache(self, features: torch.Tensor, feature_mask: torch.Tensor) -> EnsembleCache:
        return EnsembleCache([d.init_cache(f, feature_mask) for d, f in zip(self.members, self._split(features))])

    def decode(self, tokens: torch.Tensor, cache: EnsembleCache) -> torch.Tensor:
        """tokens (N, T) -> the members' mean log-probs (N, T, V); each member's cache takes the tokens in."""
        return mean_logprobs([d.decode(tokens, c) for d, c in zip(self.members, cache.members)])

    def step(self, tokens: torch.Tensor, cache: EnsembleCache) -> torch.Tensor:
        return self.decode(tokens[:, None], cache)[:, 0]

    def cross_attention(self, features: torch.Tensor, feature_mask: torch.Tensor,
                        tokens_in: torch.Tensor) -> torch.Tensor:
        """The members' cross-attention maps (N, L, h, w), averaged."""
        maps = [d.cross_attention(f, feature_mask, tokens_in) for d, f in zip(self.members, self._split(features))]
        return torch.stack(maps).mean(0)


class Ensemble(Decoding, nn.Module):
    """HMERModels decoded as one: HMERModel's decoding interface (encode, greedy, beam_search, decoder.cross_attention)."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        if len(models) < 2:
            raise ValueError(f"an ensemble needs at least two models, got {len(models)}")
        first = models[0].config
        for m in models[1:]:
            if m.config.vocab_size != first.vocab_size:
                raise ValueError(f"ensemble members have vocabularies of {first.vocab_size} and "
                                 f"{m.config.vocab_size} symbols")
            if m.config.stride != first.stride:
                raise ValueError(f"ensemble members have feature strides {first.stride} and {m.config.stride}")
        self.members = nn.ModuleList(models)
        self.config = first  # vocabulary, stride and max_len, as decoding reads them
        self.attention = None  # stage 2's attention maps are each member's own; an ensemble draws none
        self.decoder = EnsembleDecoder([m.decoder for m in models], [m.config.d_model for m in models])

    def forward(self, images: torch.Tensor, mask: torch.Tensor, tokens_in: torch.Tensor) -> torch.Tensor:
        """HMERModel.forward's teacher-forced pass: images (B, 1, H, W), mask (B, H, W), tokens_in (rB, L) -> the
        members' mean log-probs (rB, L, V), logits of the distribution a decoding step draws from (PAD and SOS
        not yet excluded). Training through it costs the members' steps added up."""
        return mean_logprobs([m(images, mask, tokens_in) for m in self.members])

    def encode(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 1, H, W), mask (B, H, W) -> the members' memories side by side (B, h, w, sum of d), and the
        mask (B, h, w); ValueError if the members' maps differ in shape (e.g. token fusion's extra rows)."""
        encoded = [m.encode(images, mask) for m in self.members]
        shapes = {tuple(f.shape[:3]) for f, _ in encoded}
        if len(shapes) > 1:
            raise ValueError(f"ensemble members give feature maps of different shapes: {sorted(shapes)}")
        return torch.cat([f for f, _ in encoded], dim=-1), encoded[0][1]
