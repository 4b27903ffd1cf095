"""The supervised recognizer: DenseNet-B encoder and bidirectional transformer decoder (BTTR/CoMER).

With ModelConfig.fusion other than "none" it also holds stage 2's attention network (`attention`) and a
fusion module (`fusion`) that make the decoder's memory from the features and the attention maps
(model/attention.py); with "none" it has neither, and is exactly the plain recognizer.

Decoding methods run in the module's current mode: call `.eval()` first, or dropout and BatchNorm's
batch statistics make the results noisy.
"""

from __future__ import annotations

import torch
from torch import nn

from maskmatch.model import search
from maskmatch.model.attention import AttentionNetwork, build_fusion
from maskmatch.model.config import ModelConfig
from maskmatch.model.decoder import Decoder, DecoderCache, bidirectional_targets
from maskmatch.model.encoder import Encoder
from maskmatch.model.grammar import LatexGrammar
from maskmatch.model.search import Hypothesis

__all__ = ["HMERModel", "ModelConfig", "AttentionNetwork", "Encoder", "Decoder", "DecoderCache", "Hypothesis",
           "LatexGrammar", "bidirectional_targets"]


class HMERModel(search.Decoding, nn.Module):
    """Image to LaTeX token ids: encoder + decoder, trained in both directions, decoded greedily or by beam."""

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config or ModelConfig()
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        # built after encoder and decoder, so that those draw the same initial weights as the plain recognizer's
        fused = self.config.fusion != "none"
        self.attention = AttentionNetwork(self.config) if fused else None
        self.fusion = build_fusion(self.config)

    def forward(self, images: torch.Tensor, mask: torch.Tensor, tokens_in: torch.Tensor) -> torch.Tensor:
        """images (B, 1, H, W), mask (B, H, W), tokens_in (rB, L) with r = 1 or 2 -> logits (rB, L, V).
        With r = 2 the features are repeated: rows 0..B-1 and B..2B-1 of tokens_in both read images 0..B-1,
        which is the layout of `bidirectional_targets`."""
        return self.teacher_forced(*self.encode(images, mask), tokens_in)

    def teacher_forced(self, features: torch.Tensor, feature_mask: torch.Tensor,
                       tokens_in: torch.Tensor) -> torch.Tensor:
        """`forward` from the decoder's memory (`encode`'s output): features (B, h', w, d), feature_mask (B, h', w),
        tokens_in (rB, L) -> logits (rB, L, V); for a caller that also decodes from the same memory."""
        B, N = features.shape[0], tokens_in.shape[0]
        if N not in (B, 2 * B):
            raise ValueError(f"tokens_in has {N} rows for {B} images; expected {B} or {2 * B}")
        if N == 2 * B:
            features, feature_mask = torch.cat((features, features)), torch.cat((feature_mask, feature_mask))
        return self.decoder(features, feature_mask, tokens_in)

    def encode(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 1, H, W), mask (B, H, W) -> the decoder's memory (B, h', w, d) and its mask (B, h', w):
        h' = h = ceil(H / 16) except with token fusion, whose K tokens add ceil(K / w) rows below the map."""
        features, feature_mask = self.encoder(images, mask)  # (B, h, w, d), (B, h, w)
        if self.fusion is None:
            return features, feature_mask
        maps, embeddings = self.attention(features, feature_mask)  # (B, K, h, w), (B, K, d)
        return self.fusion(features, feature_mask, maps, embeddings)

    def attention_maps(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 1, H, W), mask (B, H, W) -> maps (B, K, h, w) and feature_mask (B, h, w) of a fused model."""
        if self.attention is None:
            raise ValueError("this model has no attention network (fusion 'none')")
        features, feature_mask = self.encoder(images, mask)
        return self.attention(features, feature_mask)[0], feature_mask
