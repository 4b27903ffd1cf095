"""`StageModule`: the LightningModule skeleton every stage shares, and its contract with the engine."""

from __future__ import annotations

from typing import Iterable

import lightning as L
import torch

from maskmatch.engine import common


class StageModule(L.LightningModule):
    """A stage's LightningModule. The engine (callbacks, runner) relies on exactly this:

    - `config` with `.model`, `.optim` (an AdamWConfig) and `.trainer.seed`;
    - `total_steps` and `planned`: the schedule's length, fixed by the budget planner, kept by checkpoints;
    - `step_lr` and `step_extras`: the latest training step's learning rate and extra values for log.jsonl
      (`note_step` keeps them; tensors are read only when a line is written, so no sync every step);
    - the value named by its Stage's `monitor`, set at each validation's end.

    A subclass sets STAGE and CHECKPOINT_FORMAT (what its checkpoints say they are), and may override
    `trainable` (what AdamW trains), DROPOUT_SALT (common.seed_dropout's salt) and `checkpoint_extra`.
    """

    STAGE = ""
    CHECKPOINT_FORMAT = 1
    DROPOUT_SALT: tuple[int, ...] = ()

    def __init__(self, config, channels_last: bool = False):
        super().__init__()
        self.config, self.channels_last = config, channels_last
        self.total_steps, self.planned = 1, False
        self.step_lr = 0.0
        self._extras: dict = {}

    @property
    def step_extras(self) -> dict[str, float]:
        return {k: round(float(v), 5) for k, v in self._extras.items()}

    def note_step(self, extras: dict | None = None) -> None:
        """Keeps the step's learning rate and its extra values (floats or 0-d tensors) for the log."""
        self.step_lr = self.optimizers().param_groups[0]["lr"]
        self._extras = extras or {}

    def as_input(self, images: torch.Tensor) -> torch.Tensor:
        """Images in the memory format the encoder was put in (channels-last on GPU)."""
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def trainable(self) -> Iterable[torch.nn.Parameter]:
        return self.parameters()

    def checkpoint_extra(self) -> dict:
        """Keys added to the checkpoint's maskmatch section (common.describe)."""
        return {}

    def configure_optimizers(self):
        return common.configure_adamw(self, self.trainable())

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        common.seed_dropout(self, *self.DROPOUT_SALT)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["maskmatch"] = common.describe(self, self.STAGE, self.CHECKPOINT_FORMAT, **self.checkpoint_extra())

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        common.restore(self, checkpoint, self.STAGE, self.CHECKPOINT_FORMAT)
