"""The config sections every training stage shares: the AdamW optimizer and schedule, and the trainer (the data
section is data/loading.py's DataConfig). YAML holds values only; each field's comment says where its default
came from."""

from __future__ import annotations

import math
from dataclasses import dataclass

PRECISIONS = ("32", "bf16-mixed")


@dataclass(frozen=True)
class AdamWConfig:
    """The optimizer and schedule every stage shares (engine/common.py `configure_adamw`); a stage's config
    subclasses it with its own defaults and extras."""

    lr: float = 5e-4  # AdamW peak learning rate after warm-up (assumed; common for transformer decoders)
    weight_decay: float = 0.01  # AdamW decoupled weight decay, on weights of rank >= 2 only (PyTorch's default value)
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW moment decays (PyTorch's defaults)
    warmup_steps: int = 1000  # linear warm-up to lr (assumed; CROHME has 900 steps an epoch at the defaults)
    warmup_share: float = 0.2  # ... but at most this share of the planned steps, so a short run is not all warm-up
    min_lr_ratio: float = 0.01  # cosine decay ends at lr * min_lr_ratio (assumed)
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off (assumed)

    def __post_init__(self):
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0 or self.grad_clip < 0:
            raise ValueError("lr must be positive; weight_decay, warmup_steps, grad_clip non-negative")
        if not (0 < self.warmup_share <= 1 and 0 <= self.min_lr_ratio <= 1):
            raise ValueError("warmup_share must lie in (0, 1], min_lr_ratio in [0, 1]")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas {self.betas} must lie in [0, 1)")

    def warmup(self, total_steps: int) -> int:
        """The warm-up steps of a run of total_steps: warmup_steps, capped at warmup_share of the run."""
        return min(self.warmup_steps, math.ceil(self.warmup_share * total_steps))


@dataclass(frozen=True)
class TrainerConfig:
    max_epochs: int = 100  # epochs when no time budget shortens the run (assumed; CoMER trains 300 with SGD)
    time_budget: float | None = None  # seconds for the whole command; the run is planned to fit (None: no budget)
    precision: str = "bf16-mixed"  # "32" or "bf16-mixed"; bf16 autocast and channels-last apply on GPU only (DESIGN.md)
    seed: int = 0  # seeds initialization, batch order, augmentation and dropout
    log_every_n_steps: int = 50  # steps between lines of log.jsonl and the progress bar's loss
    checkpoint_every_n_steps: int = 500  # steps between mid-epoch last.ckpt writes, so a killed run loses little
    keep_checkpoints: int = 0  # also keep the last N validations' checkpoints (RUN_DIR/kept/), for maskmatch average
    plan_after_steps: int = 50  # with a time budget: steps timed (after 3 warm-up steps) before the plan is fixed

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} must be one of {', '.join(PRECISIONS)}")
        if self.keep_checkpoints < 0:
            raise ValueError(f"keep_checkpoints {self.keep_checkpoints} must be >= 0")
        if min(self.max_epochs, self.log_every_n_steps, self.checkpoint_every_n_steps) < 1 or self.plan_after_steps < 4:
            raise ValueError("max_epochs, log_every_n_steps, checkpoint_every_n_steps must be >= 1; "
                             "plan_after_steps >= 4")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ValueError(f"time_budget {self.time_budget} must be positive seconds")
