"""`maskmatch finetune`'s typed config: model, data, optim and trainer sections, YAML holding values only."""

from __future__ import annotations

from dataclasses import dataclass, field

from maskmatch.data.loading import DataConfig
from maskmatch.engine.config import AdamWConfig, TrainerConfig
from maskmatch.model.config import ModelConfig


@dataclass(frozen=True)
class OptimConfig(AdamWConfig):
    label_smoothing: float = 0.1  # cross-entropy label smoothing (Szegedy et al. 2016; Vaswani et al. 2017)
    ema_decay: float = 0.999  # weight EMA decay, warmed up as min(decay, (1+t)/(10+t)) (TF ExponentialMovingAverage)

    def __post_init__(self):
        super().__post_init__()
        if not (0 <= self.label_smoothing < 1 and 0 <= self.ema_decay < 1):
            raise ValueError("label_smoothing and ema_decay must lie in [0, 1)")


@dataclass(frozen=True)
class FinetuneConfig:
    model: ModelConfig = field(default_factory=ModelConfig)  # the recognizer (DESIGN.md, Model)
    data: DataConfig = field(default_factory=DataConfig)  # where the data is and how it is batched
    optim: OptimConfig = field(default_factory=OptimConfig)  # loss, optimizer, schedule and EMA
    trainer: TrainerConfig = field(default_factory=TrainerConfig)  # how long, how precise, how often to log and save
    init: str | None = None  # weights file the model starts from (`maskmatch pretrain`'s encoder.safetensors); None: random
