"""The LightningModule of stage 2: student (encoder, attention network, feature predictor), EMA teacher, losses.

Progress is global_step / total_steps in [0, 1], as in finetune: `total_steps` is the schedules' length
(masking, learning rate, teacher momentum), set before training (a runner sets it, or its budget planner
fixes it: `planned`); checkpoints keep both.

A training step: the teacher encodes the whole images (features, maps, embeddings); blocks of ink are hidden
(`mask_ink_blocks`, at the schedule's values for this progress, guided by the teacher's maps, seeded by
(seed, rank, step)); the student encodes the masked images, and
    loss = w_match match(student embeddings, teacher's) + w_pred prediction(predicted features, teacher's, hidden cells)
         + w_div diversity(student maps) + w_ent entropy(student maps).
After the optimizer step the teacher takes the student's weights with momentum m(progress).

Hand-off to stage 3: the teacher's `encoder.*` and `attention.*` tensors (`handoff()`, `handoff_model`), named as
in HMERModel(ModelConfig(fusion=...)).state_dict() for a fusion other than "none". The teacher, as DINO exports it:
it reads whole images, as stage 3 and inference do (the student only ever saw masked ones), its maps are the
ones that guided the masking, and a momentum average of the student is the steadier of the two.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from maskmatch.attend.config import AttendConfig
from maskmatch.attend.diversity_loss import DiversityLoss
from maskmatch.attend.entropy_loss import EntropyLoss
from maskmatch.attend.masking import hide, mask_ink_blocks
from maskmatch.attend.match_loss import MatchLoss, top1_matches
from maskmatch.attend.prediction_loss import PredictionLoss
from maskmatch.attend.predictor import FeaturePredictor
from maskmatch.attend.teacher import Teacher, teacher_momentum
from maskmatch.config import from_dict
from maskmatch.data.batching import Batch
from maskmatch.engine import common
from maskmatch.engine.module import StageModule
from maskmatch.model import HMERModel
from maskmatch.model.attention import AttentionNetwork
from maskmatch.model.config import ModelConfig
from maskmatch.model.encoder import Encoder

CHECKPOINT_FORMAT = 1
STAGE = "attend"
VALIDATION_PROGRESS = 1.0  # validation masks at the schedule's end values, the same at every epoch


def mask_seed(seed: int, rank: int, step: int) -> int:
    """The masking seed of a training step: a pure function of (seed, rank, step), so a resumed run repeats it."""
    return common.step_seed(seed, rank, step, 1)


class AttendModule(StageModule):
    """Trains `encoder`, `attention` and `predictor` (the student); `teacher` is their EMA (encoder and attention).

    Logs per step: loss, match, prediction, diversity, entropy (unweighted terms), mask_ratio (hidden ink
    achieved), block (pixels), guided (share), momentum (also `step_extras`, for log.jsonl); per validation:
    val_match (top-1 % of student embeddings, on masked held-out images, whose nearest teacher embedding of the
    batch, same map, is their own image's) and val_loss (`val_record()`).
    """

    STAGE, CHECKPOINT_FORMAT = STAGE, CHECKPOINT_FORMAT

    def __init__(self, config: AttendConfig, channels_last: bool = False):
        super().__init__(config, channels_last)
        self.encoder = Encoder(config.model)
        self.attention = AttentionNetwork(config.model)
        self.predictor = FeaturePredictor(config.model.d_model)
        if channels_last:
            self.encoder.to(memory_format=torch.channels_last)
        self.teacher = Teacher(self.student())
        c = config.loss
        self.match_loss, self.prediction_loss = MatchLoss(c.temperature), PredictionLoss()
        self.diversity_loss, self.entropy_loss = DiversityLoss(), EntropyLoss()
        self.val_match, self.val_loss, self.val_n = float("nan"), float("nan"), 0
        self._val_sums = [0.0, 0.0, 0.0]  # matches, embeddings seen, loss * images

    def student(self) -> nn.ModuleDict:
        """The student's encoder and attention network as one module (not registered: it shares their weights)."""
        return nn.ModuleDict({"encoder": self.encoder, "attention": self.attention})

    def handoff(self) -> dict[str, torch.Tensor]:
        """Stage 3's initial tensors: the teacher's encoder.* and attention.* (HMERModel names)."""
        return dict(self.teacher.module.state_dict())

    def val_record(self) -> dict:
        """The latest validation, as log.jsonl records it."""
        return {"val_match": round(self.val_match, 4), "val_loss": round(self.val_loss, 5), "val_n": self.val_n}

    @property
    def progress(self) -> float:
        return min(1.0, self.global_step / max(1, self.total_steps))

    # ------------------------------------------------------------------ the objective

    def losses(self, images: torch.Tensor, mask: torch.Tensor, progress: float, seed: int) -> dict[str, torch.Tensor]:
        """images (B, 1, H, W), mask (B, H, W) -> the weighted total ("loss"), each term, and the masking's values."""
        params = self.config.masking.at(progress)
        t_features, feature_mask, t_maps, t_embeddings = self.teacher(images, mask)
        hidden = mask_ink_blocks(images, mask, params, seed, t_maps if params.guided > 0 else None,
                                 self.config.masking.ink_threshold)
        features, _ = self.encoder(hide(images, hidden.pixels), mask)  # (B, h, w, d)
        maps, embeddings = self.attention(features, feature_mask)  # (B, K, h, w), (B, K, d)
        predicted = self.predictor(features, feature_mask)  # (B, h, w, d)
        terms = {"match": self.match_loss(embeddings, t_embeddings),
                 "prediction": self.prediction_loss(predicted, t_features, hidden.cells),
                 "diversity": self.diversity_loss(maps), "entropy": self.entropy_loss(maps, feature_mask)}
        c = self.config.loss
        weights = {"match": c.match_weight, "prediction": c.prediction_weight, "diversity": c.diversity_weight,
                   "entropy": c.entropy_weight}
        loss = sum(weights[k] * v for k, v in terms.items())
        return {"loss": loss, **terms, "mask_ratio": hidden.ratio.mean(), "block": float(params.block),
                "guided": params.guided, "embeddings": embeddings, "teacher_embeddings": t_embeddings}

    # ------------------------------------------------------------------ training

    def trainable(self):
        return (p for n, p in self.named_parameters() if not n.startswith("teacher."))  # the student

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        seed = mask_seed(self.config.trainer.seed, self.global_rank, self.global_step)
        out = self.losses(self.as_input(batch.images), batch.mask, self.progress, seed)
        loss = out["loss"]
        common.check_finite(self, loss, batch, batch_idx)
        momentum = teacher_momentum(self.progress, *self.config.optim.teacher_momentum)
        for key in ("loss", "match", "prediction", "diversity", "entropy", "mask_ratio"):
            self.log(key, out[key].detach(), prog_bar=key == "loss", batch_size=len(batch))
        for key, value in (("block", out["block"]), ("guided", out["guided"]), ("momentum", momentum)):
            self.log(key, value, batch_size=len(batch))
        extras = {k: out[k].detach() for k in ("match", "prediction", "diversity", "entropy", "mask_ratio")}
        self.note_step({**extras, "block": out["block"], "guided": out["guided"], "momentum": momentum})
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        # global_step still counts the steps before this one here: the momentum of the progress after it
        progress = min(1.0, (self.global_step + 1) / max(1, self.total_steps))
        self.teacher.update(self.student(), teacher_momentum(progress, *self.config.optim.teacher_momentum))

    # ------------------------------------------------------------------ validation

    def on_validation_epoch_start(self) -> None:
        self._val_sums = [0.0, 0.0, 0.0]

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Masks at the schedule's end (VALIDATION_PROGRESS), seeded by the batch's index: the same every epoch."""
        seed = mask_seed(self.config.data.val_seed, self.global_rank, batch_idx)
        out = self.losses(self.as_input(batch.images), batch.mask, VALIDATION_PROGRESS, seed)
        matches = top1_matches(out["embeddings"], out["teacher_embeddings"])  # (B, K)
        self._val_sums[0] += float(matches.sum())
        self._val_sums[1] += matches.numel()
        self._val_sums[2] += float(out["loss"]) * len(batch)

    def on_validation_epoch_end(self) -> None:
        sums = torch.tensor(self._val_sums, dtype=torch.float64, device=self.device)
        matches, seen, loss = self.trainer.strategy.reduce(sums, reduce_op="sum").tolist()
        K = self.config.model.attention_maps
        self.val_match, self.val_n = 100.0 * matches / max(seen, 1), int(seen) // K
        self.val_loss = loss / max(self.val_n, 1)
        if not self.trainer.sanity_checking:
            self.log("val_match", self.val_match, prog_bar=True, sync_dist=True)  # equal on all ranks already
            self.log("val_loss", self.val_loss, sync_dist=True)

    # ------------------------------------------------------------------ checkpoints describe themselves



def checkpoint_meta(checkpoint: dict) -> dict:
    """The maskmatch section of a checkpoint, checked: ValueError if it is not a stage-2 checkpoint this code reads."""
    return common.checkpoint_meta(checkpoint, STAGE, CHECKPOINT_FORMAT)


def handoff_model(checkpoint: dict) -> HMERModel:
    """An HMERModel (fusion "gate" unless the config names another) whose encoder and attention network hold a
    stage-2 checkpoint's teacher; its decoder and fusion stay as initialized (the hand-off file leaves them out)."""
    config = from_dict(ModelConfig, checkpoint_meta(checkpoint)["config"]["model"])
    model = HMERModel(replace(config, fusion=config.fusion if config.fusion != "none" else "gate"))
    missing, unexpected = model.load_state_dict(common.state_under(checkpoint, "teacher.module."), strict=False)
    if unexpected or {k.split(".", 1)[0] for k in missing} - {"decoder", "fusion"}:
        raise ValueError(f"the checkpoint's teacher does not fit {sorted(unexpected or missing)[:3]}")
    return model.eval()
