"""The recognizer's hyper-parameters: DenseNet-B encoder and transformer decoder (CoMER/BTTR sizes)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

DENSE_BLOCKS = 3  # DenseNet-B has three dense blocks; with the stem this fixes the stride at 16
STRIDE = 16  # DenseNet: conv stride 2, max-pool 2, two transitions' average-pool 2; ResNet: four stride-2 convs
FUSIONS = ("none", "gate", "tokens")  # how stage 2's attention maps reach the decoder (model/attention.py)
ENCODERS = ("densenet", "resnet")  # CoMER/BTTR's DenseNet-B, or fewer and wider convolutions for CPUs (encoder.py)


@dataclass(frozen=True)
class ModelConfig:
    in_channels: int = 1  # image channels: grayscale, ink bright on a 0 background (data/batching.py)
    encoder: str = "densenet"  # densenet (CoMER/BTTR) or resnet (residual 3x3 stages; CPU recipe)
    growth_rate: int = 24  # channels each bottleneck layer adds (CoMER/BTTR DenseNet-B)
    block_layers: int = 16  # bottleneck layers in each of the three dense blocks (CoMER/BTTR)
    stage_layers: tuple[int, ...] = ()  # layers of each of the three blocks or stages, e.g. (6, 10, 12); (): block_layers
    stem_channels: int = 32  # resnet: channels of the stride-2 stem convolution
    stage_widths: tuple[int, ...] = (64, 128, 256)  # resnet: channels of the stages at strides 4, 8 and 16
    reduction: float = 0.5  # transitions keep floor(channels * reduction) channels (CoMER/BTTR)
    encoder_dropout: float = 0.2  # dropout after every DenseNet conv (CoMER use_dropout=True, p=0.2)
    d_model: int = 256  # width of projected features and of the decoder (CoMER/BTTR)
    nhead: int = 8  # attention heads in the decoder (CoMER/BTTR)
    num_decoder_layers: int = 3  # transformer decoder layers (CoMER/BTTR)
    dim_feedforward: int = 1024  # hidden width of each decoder layer's FFN (CoMER/BTTR)
    dropout: float = 0.3  # decoder dropout: attention weights, sublayer outputs, FFN (CoMER/BTTR)
    # dropout on the decoder's attention weights alone; None: `dropout`. At 0 PyTorch's CPU attention runs its fused
    # kernel, which takes no dropout (its math path's cross-attention, forward and backward, is 2-3x slower here)
    attention_dropout: float | None = None
    norm_first: bool = False  # pre-norm decoder layers; False is post-norm as nn.TransformerDecoderLayer (CoMER/BTTR)
    vocab_size: int = 113  # 110 CROHME symbols plus pad, sos, eos (data/vocab.py)
    max_len: int = 200  # decoding steps at most, eos included (CoMER's max_len=200)
    pos_temperature: float = 10000.0  # base of the sinusoidal positions (Vaswani et al.; CoMER's ImgPosEnc/WordPosEnc)
    fusion: str = "none"  # none (the plain recognizer), gate or tokens: how attention maps join (DESIGN.md, Stage 3)
    attention_maps: int = 8  # K maps of the stage-2 attention network (assumed: a few per symbol class of layout)

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "tuple[int, ...]":
                if not isinstance(value, (list, tuple)) or not all(type(v) is int for v in value):
                    raise TypeError(f"ModelConfig.{f.name} must be a list of integers, got {value!r}")
                object.__setattr__(self, f.name, tuple(value))  # YAML and JSON give lists
                continue
            kind = {"int": int, "float": (int, float), "float | None": (int, float, type(None)), "bool": bool,
                    "str": str}[f.type]
            if not isinstance(value, kind) or (f.type == "int" and isinstance(value, bool)):
                raise TypeError(f"ModelConfig.{f.name} must be {f.type}, got {value!r}")
        if self.d_model % 4:
            raise ValueError(f"d_model {self.d_model} must be a multiple of 4 (2-D sin/cos positions)")
        if self.d_model % self.nhead:
            raise ValueError(f"d_model {self.d_model} is not divisible by nhead {self.nhead}")
        if not 0 < self.reduction <= 1:
            raise ValueError(f"reduction {self.reduction} outside (0, 1]")
        if not all(0 <= p < 1 for p in (self.dropout, self.encoder_dropout, self.attention_dropout or 0)):
            raise ValueError("dropout probabilities must lie in [0, 1)")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion {self.fusion!r} must be one of {', '.join(FUSIONS)}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder {self.encoder!r} must be one of {', '.join(ENCODERS)}")
        if (self.stage_layers and len(self.stage_layers) != DENSE_BLOCKS) or len(self.stage_widths) != DENSE_BLOCKS:
            raise ValueError(f"stage_layers and stage_widths need {DENSE_BLOCKS} values (or stage_layers none)")
        if min(self.in_channels, self.growth_rate, self.block_layers, self.num_decoder_layers, self.stem_channels,
               self.dim_feedforward, self.vocab_size, self.max_len, self.attention_maps,
               *self.layers, *self.stage_widths) < 1:
            raise ValueError(f"sizes must be positive: {self}")

    @property
    def stride(self) -> int:
        return STRIDE

    @property
    def layers(self) -> tuple[int, ...]:
        """Layers of each of the three dense blocks (densenet) or residual stages (resnet)."""
        return self.stage_layers or (self.block_layers,) * DENSE_BLOCKS

    @property
    def encoder_channels(self) -> int:
        """Channels of the backbone's output: for the DenseNet defaults 684 (48 -> 432 -> 216 -> 600 -> 300 -> 684)."""
        if self.encoder == "resnet":
            return self.stage_widths[-1]
        channels = 2 * self.growth_rate
        for block in range(DENSE_BLOCKS):
            channels += self.layers[block] * self.growth_rate
            if block < DENSE_BLOCKS - 1:
                channels = int(math.floor(channels * self.reduction))
        return channels

    @classmethod
    def tiny(cls, **overrides) -> "ModelConfig":
        """A small configuration for CPU tests: same architecture, narrow and shallow."""
        small = dict(growth_rate=8, block_layers=2, encoder_dropout=0.0, d_model=64, nhead=4,
                     num_decoder_layers=1, dim_feedforward=128, dropout=0.0, max_len=32)
        return replace(cls(), **{**small, **overrides})
