"""Stage 2's attention network and the two ways its output reaches the decoder (stage 3's fusion).

AttentionNetwork: on the encoder's feature map, K spatial attention maps (a softmax over each image's
valid cells, exactly 0 on padding) and K attention-pooled embeddings. It reads padding as zeros, as the
encoder does, so in eval mode an image's maps do not depend on the batch it is padded into.

Fusion (ModelConfig.fusion), applied by HMERModel.encode to make the decoder's memory:
- gate: features (B, h, w, d) * 2 sigmoid(W s + b), s (B, h, w, K) the maps scaled to a peak of 1 per map;
  W and b start at zero, so a fresh gate is the identity and the recognizer starts as the plain one.
- tokens: the K embeddings, projected, join the memory as extra cells: ceil(K / w) rows appended below the
  feature map, filled row-major, the rest of those rows padding. The decoder flattens the memory and its
  cross-attention is a set operation (positions are inside the features), so the decoder, its KV cache and
  beam search are unchanged. Rows 0..h-1 stay the image's cells: a heat map of cross-attention crops them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from maskmatch.model.config import ModelConfig


class AttentionNetwork(nn.Module):
    """features (B, h, w, d), feature_mask (B, h, w) True on padding -> maps (B, K, h, w), embeddings (B, K, d).

    Scores: 3x3 conv, ReLU, 1x1 conv to K channels; maps: softmax of each channel over valid cells;
    embeddings: sum over cells of map * value(features), value a linear layer.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        d, K = config.d_model, config.attention_maps
        self.maps = K
        self.score = nn.Sequential(nn.Conv2d(d, d, kernel_size=3, padding=1), nn.ReLU(inplace=True),
                                   nn.Conv2d(d, K, kernel_size=1))
        self.value = nn.Linear(d, d)

    def forward(self, features: torch.Tensor, feature_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        valid = (~feature_mask)[..., None].to(features.dtype)  # (B, h, w, 1)
        x = (features * valid).permute(0, 3, 1, 2)  # (B, d, h, w), padding read as zeros
        logits = self.score(x).float()  # (B, K, h, w), softmax in float32 under autocast
        logits = logits.masked_fill(feature_mask[:, None], float("-inf"))
        maps = logits.flatten(2).softmax(-1).view_as(logits)  # (B, K, h, w), each map sums to 1 over valid cells
        values = self.value(features).float()  # (B, h, w, d)
        embeddings = torch.einsum("bkhw,bhwd->bkd", maps, values)  # (B, K, d)
        return maps, embeddings.to(features.dtype)


def peak_normalized(maps: torch.Tensor) -> torch.Tensor:
    """maps (B, K, h, w) -> the same divided by each map's maximum (B, K, h, w), in [0, 1]."""
    return maps / maps.flatten(2).amax(-1).clamp_min(1e-12)[..., None, None]


class GateFusion(nn.Module):
    """features * 2 sigmoid(W s + b): each channel scaled in (0, 2) by a learned mix of the peak-normalized maps s."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate = nn.Linear(config.attention_maps, config.d_model)
        nn.init.zeros_(self.gate.weight)  # a fresh gate is exactly 1: the plain recognizer's memory
        nn.init.zeros_(self.gate.bias)

    def forward(self, features: torch.Tensor, feature_mask: torch.Tensor, maps: torch.Tensor,
                embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, h, w, d), feature_mask (B, h, w), maps (B, K, h, w) -> (B, h, w, d), (B, h, w)."""
        s = peak_normalized(maps).permute(0, 2, 3, 1).to(features.dtype)  # (B, h, w, K)
        return features * (2 * torch.sigmoid(self.gate(s))), feature_mask  # padding stays 0


class TokenFusion(nn.Module):
    """The K embeddings as extra memory cells: LayerNorm(proj(e_k) + slot_k), in rows appended below the map."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.slot = nn.Parameter(torch.zeros(config.attention_maps, config.d_model))  # which map a token came from
        self.norm = nn.LayerNorm(config.d_model)

    def forward(self, features: torch.Tensor, feature_mask: torch.Tensor, maps: torch.Tensor,
                embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, h, w, d), feature_mask (B, h, w), embeddings (B, K, d) -> (B, h + r, w, d), (B, h + r, w)
        with r = ceil(K / w): cell (h + k // w, k % w) holds token k; the r * w - K cells after them are padding."""
        B, h, w, d = features.shape
        K = embeddings.shape[1]
        pad = (w - K % w) % w  # empty cells after the tokens, in their last row (shape arithmetic: ONNX-traceable)
        tokens = self.norm(self.proj(embeddings) + self.slot).to(features.dtype)  # (B, K, d)
        rows = F.pad(tokens, (0, 0, 0, pad))  # (B, r * w, d)
        rows_mask = (torch.arange(K + pad, device=feature_mask.device) >= K).expand(B, -1)  # (B, r * w)
        return (torch.cat((features, rows.view(B, -1, w, d)), 1),  # (B, h + r, w, d)
                torch.cat((feature_mask, rows_mask.reshape(B, -1, w)), 1))  # (B, h + r, w)


def build_fusion(config: ModelConfig) -> nn.Module | None:
    """The fusion module that ModelConfig.fusion names; None for "none"."""
    if config.fusion == "none":
        return None
    return {"gate": GateFusion, "tokens": TokenFusion}[config.fusion](config)
