"""`maskmatch pretrain`'s typed config: model (encoder fields only matter), data, views, loss, optim, trainer."""

from __future__ import annotations

from dataclasses import dataclass, field

from maskmatch.engine.config import AdamWConfig, TrainerConfig
from maskmatch.model.config import ModelConfig


@dataclass(frozen=True)
class PretrainDataConfig:
    root: str = "data/crohme"  # a `maskmatch data build --out` folder (the README's example path)
    train_split: str = "train"  # images trained on (labels never read): the CROHME 2014 training set (DESIGN.md)
    val_size: int = 500  # held-out images for the probe: the same slice as finetune's data.val_size (keep them equal)
    val_seed: int = 0  # which images form the held-out slice: the same as finetune's data.val_seed
    pixel_budget: int = 1_000_000  # padded pixels B x H x W per batch at the views' largest size; the encoder sees 2x
    max_batch_size: int = 64  # images per batch at most (two views each); contrastive losses want many (assumed)
    workers: int = 4  # data-loader processes per rank; 0 loads in the training process (as finetune)

    def __post_init__(self):
        if self.val_size < 1 or self.pixel_budget < 1 or self.max_batch_size < 2 or self.workers < 0:
            raise ValueError("val_size and pixel_budget must be positive, max_batch_size >= 2, workers >= 0")


@dataclass(frozen=True)
class ViewConfig:
    scale_range: tuple[float, float] = (0.8, 1.2)  # view scale, log-uniform (finetune's scale_range is 0.7-1.3; assumed)
    rotation: float = 8.0  # max |rotation| in degrees (assumed: handwriting slants a few degrees)
    shear: float = 10.0  # max |horizontal shear| in degrees (assumed: italic-like slant)
    translate: float = 8.0  # max shift in pixels of the content inside its view box, per axis (assumed; stride is 16)
    elastic_amplitude: float = 2.0  # std in pixels of the elastic displacement's control points (assumed; Simard 2003 style)
    elastic_spacing: float = 32.0  # pixels between elastic control points, upsampled bicubically (assumed: ~ a symbol)
    stroke_width: float = 1.0  # max |fractional dilation (+) or erosion (-)| in 3x3 max-pool steps (assumed; pen is 3 px)
    blur: float = 1.0  # max Gaussian blur sigma in pixels (assumed)
    noise: float = 0.05  # max std of additive Gaussian pixel noise, images in [0, 1] (assumed)
    min_contrast: float = 0.7  # ink intensity is scaled by a factor drawn from [min_contrast, 1] (assumed)
    ink_threshold: float = 0.5  # a pixel of the original is ink when its value exceeds this (ink is bright, 0-1)

    def __post_init__(self):
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ValueError(f"views.scale_range {self.scale_range} must satisfy 0 < low <= high")
        if not (0 <= self.rotation < 45 and 0 <= self.shear < 45):
            raise ValueError("views.rotation and views.shear must lie in [0, 45) degrees")
        if min(self.translate, self.elastic_amplitude, self.stroke_width, self.blur, self.noise) < 0:
            raise ValueError("views: translate, elastic_amplitude, stroke_width, blur, noise must be >= 0")
        if self.elastic_spacing < 8 or self.elastic_amplitude > 0.1 * self.elastic_spacing:
            raise ValueError("views.elastic_spacing must be >= 8 px and elastic_amplitude <= 0.1 x spacing "
                             "(a smooth, invertible warp)")
        if self.stroke_width > 1:
            raise ValueError("views.stroke_width must be at most 1 (one 3x3 dilation or erosion step)")
        if not (0 < self.min_contrast <= 1 and 0 < self.ink_threshold < 1):
            raise ValueError("views.min_contrast must lie in (0, 1], ink_threshold in (0, 1)")


@dataclass(frozen=True)
class LossConfig:
    global_temperature: float = 0.2  # NT-Xent temperature (SimCLR uses 0.1-0.5; assumed)
    local_temperature: float = 0.2  # local InfoNCE temperature (DenseCL's 0.2)
    local_weight: float = 1.0  # lambda in L = L_global + lambda L_local (DESIGN.md; 1.0 assumed)
    projector_hidden: int = 512  # hidden width of the global projector MLP (SimCLR uses 2048 for ResNet-50; assumed)
    projector_out: int = 128  # output width of both projectors (SimCLR's 128)
    local_hidden: int = 256  # hidden width of the dense (pointwise) projection head (assumed)
    points: int = 64  # ink points sampled per image for the local loss (assumed)
    exclude_radius: float = 24.0  # same-image points nearer than this (original pixels) are not negatives (~1.5 strides)

    def __post_init__(self):
        if self.global_temperature <= 0 or self.local_temperature <= 0 or self.local_weight < 0:
            raise ValueError("temperatures must be positive, local_weight >= 0")
        if min(self.projector_hidden, self.projector_out, self.local_hidden, self.points) < 1:
            raise ValueError("projector sizes and points must be positive")
        if self.exclude_radius < 0:
            raise ValueError("exclude_radius must be >= 0")


@dataclass(frozen=True)
class PretrainOptimConfig(AdamWConfig):
    lr: float = 1e-3  # AdamW peak learning rate after warm-up (assumed)
    weight_decay: float = 0.05  # AdamW decoupled weight decay on weights of rank >= 2 (MoCo v3 / DINO use 0.04-0.1)
    warmup_steps: int = 500  # linear warm-up to lr (assumed)


@dataclass(frozen=True)
class PretrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)  # the recognizer; stage 1 trains its encoder only
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)  # images (never labels), batching
    views: ViewConfig = field(default_factory=ViewConfig)  # how the two views of an image are made
    loss: LossConfig = field(default_factory=LossConfig)  # global + local InfoNCE, heads, points
    optim: PretrainOptimConfig = field(default_factory=PretrainOptimConfig)  # optimizer and schedule
    trainer: TrainerConfig = field(default_factory=TrainerConfig)  # as finetune: epochs, budget, precision, logging
