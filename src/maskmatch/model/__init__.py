"""The supervised recognizer: DenseNet-B encoder and bidirectional transformer decoder (BTTR/CoMER).

Decoding methods run in the module's current mode: call `.eval()` first, or dropout and BatchNorm's
batch statistics make the results noisy.
"""

from __future__ import annotations

import torch
from torch import nn

from maskmatch.model import search
from maskmatch.model.config import ModelConfig
from maskmatch.model.decoder import Decoder, DecoderCache, bidirectional_targets
from maskmatch.model.encoder import Encoder
from maskmatch.model.search import Hypothesis

__all__ = ["HMERModel", "ModelConfig", "Encoder", "Decoder", "DecoderCache", "Hypothesis", "bidirectional_targets"]


class HMERModel(nn.Module):
    """Image to LaTeX token ids: encoder + decoder, trained in both directions, decoded greedily or by beam."""

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config or ModelConfig()
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)

    def forward(self, images: torch.Tensor, mask: torch.Tensor, tokens_in: torch.Tensor) -> torch.Tensor:
        """images (B, 1, H, W), mask (B, H, W), tokens_in (rB, L) with r = 1 or 2 -> logits (rB, L, V).
        With r = 2 the features are repeated: rows 0..B-1 and B..2B-1 of tokens_in both read images 0..B-1,
        which is the layout of `bidirectional_targets`."""
        features, feature_mask = self.encode(images, mask)  # (B, h, w, d), (B, h, w)
        B, N = features.shape[0], tokens_in.shape[0]
        if N not in (B, 2 * B):
            raise ValueError(f"tokens_in has {N} rows for {B} images; expected {B} or {2 * B}")
        if N == 2 * B:
            features, feature_mask = torch.cat((features, features)), torch.cat((feature_mask, feature_mask))
        return self.decoder(features, feature_mask, tokens_in)

    def encode(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 1, H, W), mask (B, H, W) -> the decoder's memory (B, h, w, d) and its mask (B, h, w)."""
        return self.encoder(images, mask)

    @torch.no_grad()
    def greedy(self, images: torch.Tensor, mask: torch.Tensor, max_len: int | None = None) -> list[Hypothesis]:
        """images (B, 1, H, W), mask (B, H, W) -> B hypotheses, left to right, arg-max at each step."""
        features, feature_mask = self.encode(images, mask)
        return search.greedy(self.decoder, features, feature_mask, max_len or self.config.max_len)

    @torch.no_grad()
    def beam_search(self, images: torch.Tensor, mask: torch.Tensor, beam_size: int = 10, max_len: int | None = None,
                    length_penalty: float = 1.0, rescore: bool = True) -> list[Hypothesis]:
        """images (B, 1, H, W), mask (B, H, W) -> B hypotheses: l2r beam search, rescored by r2l if asked."""
        if beam_size < 1:
            raise ValueError(f"beam_size must be positive, got {beam_size}")
        features, feature_mask = self.encode(images, mask)
        return search.beam_search(self.decoder, features, feature_mask, beam_size, max_len or self.config.max_len,
                                  length_penalty, rescore)
