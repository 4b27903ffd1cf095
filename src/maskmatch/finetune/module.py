"""The LightningModule of stage 3: wraps an HMERModel with its loss, optimizer, schedule and weight EMA."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from maskmatch.config import from_dict
from maskmatch.data.batching import Batch
from maskmatch.data.vocab import PAD, Vocabulary
from maskmatch.engine import common
from maskmatch.engine.ema import EMA
from maskmatch.engine.module import StageModule
from maskmatch.engine.schedule import ema_decay
from maskmatch.finetune.config import FinetuneConfig
from maskmatch.metrics import canonical
from maskmatch.model import HMERModel, ModelConfig, bidirectional_targets, search

CHECKPOINT_FORMAT = 1
STAGE = "finetune"


def bidirectional_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Mean label-smoothed cross-entropy over the non-PAD targets of both directions.

    logits (2B, L+1, V), targets (2B, L+1) from `bidirectional_targets`:
    loss = sum_{rows, t: y != PAD} CE_eps(logits[r, t], y[r, t]) / #{y != PAD}, computed in float32.
    """
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=PAD,
                           label_smoothing=label_smoothing)


class FinetuneModule(StageModule):
    """Trains `self.model` (an HMERModel) and keeps `self.ema`, the average used for validation and export.

    `total_steps` is the schedule's length; the budget planner fixes it (`planned`) and checkpoints keep it.
    """

    STAGE, CHECKPOINT_FORMAT = STAGE, CHECKPOINT_FORMAT

    def __init__(self, config: FinetuneConfig, vocabulary: tuple[str, ...], channels_last: bool = False):
        super().__init__(config, channels_last)
        self.vocabulary = Vocabulary(tuple(vocabulary))
        self.model = HMERModel(config.model)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.ema = EMA(self.model)
        self.val_exprate, self.val_n, self.val_loss = float("nan"), 0, float("nan")
        self._val_counts = [0, 0, 0.0, 0]  # correct, seen, summed token cross-entropy, tokens

    # ------------------------------------------------------------------ training

    def trainable(self):
        return self.model.parameters()

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        inputs, targets = bidirectional_targets(batch.tokens, batch.lengths)  # (2B, L+1), (2B, L+1)
        logits = self.model(self.as_input(batch.images), batch.mask, inputs)  # (2B, L+1, V)
        loss = bidirectional_loss(logits, targets, self.config.optim.label_smoothing)
        common.check_finite(self, loss, batch, batch_idx)
        self.note_step()
        self.log("loss", loss.detach(), prog_bar=True, batch_size=len(batch))
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        # global_step still counts the steps before this one here
        self.ema.update(self.model, ema_decay(self.global_step + 1, self.config.optim.ema_decay))

    # ------------------------------------------------------------------ validation

    def on_validation_epoch_start(self) -> None:
        self._val_counts = [0, 0, 0.0, 0]

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Greedy decoding with the EMA weights; an expression counts when its canonical tokens match.

        Decoding stops after the longest reference plus 3 steps: a longer output is wrong anyway (and
        more than 2 edits away), so ExpRate is exactly that of unbounded decoding, at a fraction of an
        untrained model's cost. Also sums the token-level cross-entropy of both directions (teacher forcing,
        no label smoothing): `val_loss`, which separates recipes long before ExpRate does.
        """
        model = self.ema.module
        features, feature_mask = model.encode(self.as_input(batch.images), batch.mask)  # one encoder pass for both
        inputs, targets = bidirectional_targets(batch.tokens, batch.lengths)
        logits = model.teacher_forced(features, feature_mask, inputs)
        tokens = int((targets != PAD).sum())
        self._val_counts[2] += float(bidirectional_loss(logits, targets, 0.0)) * tokens
        self._val_counts[3] += tokens
        hyps = search.greedy(model.decoder, features, feature_mask, max_len=int(batch.lengths.max()) + 3)
        for hyp, row, n in zip(hyps, batch.tokens.tolist(), batch.lengths.tolist()):
            prediction, reference = self.vocabulary.decode(hyp.ids), self.vocabulary.decode(row[:n])
            self._val_counts[0] += canonical(prediction) == canonical(reference)
        self._val_counts[1] += len(batch)

    def on_validation_epoch_end(self) -> None:
        counts = torch.tensor(self._val_counts, dtype=torch.float64, device=self.device)
        correct, seen, loss_sum, tokens = self.trainer.strategy.reduce(counts, reduce_op="sum").tolist()
        self.val_exprate, self.val_n = 100.0 * correct / max(seen, 1), int(seen)
        self.val_loss = loss_sum / max(tokens, 1)
        if not self.trainer.sanity_checking:
            self.log("val_exprate", self.val_exprate, prog_bar=True, sync_dist=True)  # equal on all ranks already
            self.log("val_loss", self.val_loss, sync_dist=True)

    # ------------------------------------------------------------------ checkpoints describe themselves

    def checkpoint_extra(self) -> dict:
        return {"vocabulary": list(self.vocabulary.symbols)}


def checkpoint_meta(checkpoint: dict) -> dict:
    """The maskmatch section of a checkpoint, checked: ValueError if it is not a stage-3 checkpoint this code reads."""
    return common.checkpoint_meta(checkpoint, STAGE, CHECKPOINT_FORMAT)


def ema_model(checkpoint: dict) -> HMERModel:
    """The EMA weights of a finetune checkpoint as an HMERModel in eval mode."""
    meta = checkpoint_meta(checkpoint)
    model = HMERModel(from_dict(ModelConfig, meta["config"]["model"]))
    model.load_state_dict(common.state_under(checkpoint, "ema.module."), strict=True)
    return model.eval()
