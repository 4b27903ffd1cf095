"""The typed config of stage 2 (Mask & Match): model, masking, loss, data, optim and trainer sections, and init."""

from __future__ import annotations

from dataclasses import dataclass, field

from maskmatch.attend.schedule import MaskSchedule
from maskmatch.data.loading import DataConfig
from maskmatch.engine.config import AdamWConfig, TrainerConfig
from maskmatch.model.config import ModelConfig


@dataclass(frozen=True)
class LossConfig:
    match_weight: float = 1.0  # weight of the contrastive match of student to teacher embeddings (the main term)
    prediction_weight: float = 1.0  # weight of predicting the teacher's features at hidden cells (assumed: as match)
    diversity_weight: float = 0.1  # weight of the K maps' mean pairwise cosine similarity (assumed; a regularizer)
    entropy_weight: float = 0.05  # weight of the maps' normalized entropy (assumed; a regularizer, kept weaker)
    temperature: float = 0.1  # InfoNCE temperature of the match (SimCLR's and MoCo v2's 0.1-0.2; assumed)

    def __post_init__(self):
        if min(self.match_weight, self.prediction_weight, self.diversity_weight, self.entropy_weight) < 0:
            raise ValueError("loss weights must be non-negative")
        if not self.temperature > 0:
            raise ValueError(f"temperature {self.temperature} must be positive")


@dataclass(frozen=True)
class AttendOptimConfig(AdamWConfig):
    lr: float = 5e-4  # AdamW peak learning rate after warm-up (assumed; finetune's default)
    weight_decay: float = 0.04  # AdamW decoupled weight decay on weights of rank >= 2 (DINO's starting value)
    teacher_momentum: tuple[float, float] = (0.996, 1.0)  # teacher EMA momentum, cosine from start to end (DINO)

    def __post_init__(self):
        super().__post_init__()
        if not all(0 <= m <= 1 for m in self.teacher_momentum):
            raise ValueError(f"teacher_momentum {self.teacher_momentum} must lie in [0, 1]")


@dataclass(frozen=True)
class AttendConfig:
    model: ModelConfig = field(default_factory=ModelConfig)  # encoder and attention network (decoder, fusion unused)
    masking: MaskSchedule = field(default_factory=MaskSchedule)  # the progressive masking schedule
    loss: LossConfig = field(default_factory=LossConfig)  # loss weights and the match temperature
    data: DataConfig = field(default_factory=DataConfig)  # the train split less the held-out slice; labels unused
    optim: AttendOptimConfig = field(default_factory=AttendOptimConfig)  # optimizer, schedule, teacher momentum
    trainer: TrainerConfig = field(default_factory=TrainerConfig)  # how long, how precise, how often to log and save
    init: str | None = None  # stage 1's encoder.safetensors the student and teacher start from; None: random
