"""The LightningModule of stage 1: the recognizer's encoder, two projection heads, the global and local losses,
and the label-free probe at every validation (and before the first step).

Per batch: two views of every image on the device (`views.make_views`, seeded by (seed, rank, step) for
training and by (val_seed, first image) for validation), one encoder pass over all 2B views, then
    global: mask-aware mean of the features (2B, d) -> projector -> NT-Xent
    local:  features bilinearly sampled at the matched ink points (2B, P, d) -> pointwise head -> InfoNCE
    L = L_global + local_weight * L_local
The features are the encoder's content features, its backbone then the 1x1 projection (`Encoder.backbone`,
`Encoder.proj`), zeroed on padding: the encoder's last step adds 2-D sinusoidal positions and a
LayerNorm, and with positions in them features could match by where they are rather than by what they
show (a tiny test run's pooled features were all alike). `encoder.norm` is therefore not trained here; it
is exported at its initial values with the rest of `encoder.*`. The probe reads these same features
(pooled, and at the points), never the heads'.
"""

from __future__ import annotations

import torch
from torch import nn

from maskmatch.config import from_dict
from maskmatch.data.batching import Batch
from maskmatch.engine import common
from maskmatch.engine.module import StageModule
from maskmatch.engine.common import step_seed
from maskmatch.model import HMERModel, ModelConfig
from maskmatch.model.encoder import Encoder
from maskmatch.pretrain.config import PretrainConfig
from maskmatch.pretrain.global_loss import GlobalInfoNCE
from maskmatch.pretrain.local_loss import LocalInfoNCE
from maskmatch.pretrain.probe import ProbeCounts, global_retrieval, local_matching
from maskmatch.pretrain.views import ViewPair, make_views, sample_at

CHECKPOINT_FORMAT = 1
STAGE = "pretrain"


def projector(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    """SimCLR's projection head: Linear, BatchNorm, ReLU, Linear; (N, d_in) -> (N, d_out)."""
    return nn.Sequential(nn.Linear(d_in, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, d_out))


def pool(features: torch.Tensor, feature_mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid cells: features (N, h, w, d) (zero on padding), mask (N, h, w) True on padding -> (N, d)."""
    count = (~feature_mask).sum((1, 2)).clamp_min(1)[:, None]
    return features.sum((1, 2)) / count


class PretrainModule(StageModule):
    """Trains `self.encoder` (an `Encoder`, named as in HMERModel) with the heads; `total_steps` as in finetune."""

    STAGE, CHECKPOINT_FORMAT = STAGE, CHECKPOINT_FORMAT
    DROPOUT_SALT = (1,)  # salt 1: the views of the step take (seed, rank, step)

    def __init__(self, config: PretrainConfig, channels_last: bool = False):
        super().__init__(config, channels_last)
        d, loss = config.model.d_model, config.loss
        self.encoder = Encoder(config.model)
        self.global_head = projector(d, loss.projector_hidden, loss.projector_out)
        self.local_head = projector(d, loss.local_hidden, loss.projector_out)
        self.global_loss = GlobalInfoNCE(loss.global_temperature)
        self.local_loss = LocalInfoNCE(loss.local_temperature, loss.exclude_radius)
        self.val_loss, self.val_n, self.val_metrics = float("nan"), 0, {}  # of the latest validation
        self._val_sums = torch.zeros(4, dtype=torch.float64)  # loss, global, local (image-weighted), images
        self._probe = ProbeCounts.zeros()

    # ------------------------------------------------------------------ the forward pass

    def views(self, batch: Batch, seed: int) -> ViewPair:
        return make_views(batch.images, batch.mask, self.config.views, self.config.loss.points, seed)

    def features(self, views: ViewPair) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's content features of all 2B views -> pooled (2B, d), at the views' points (2B, P, d)."""
        images = self.as_input(views.images)
        valid = (~views.mask)[:, None].to(images.dtype)  # (2B, 1, H, W)
        x, valid = self.encoder.backbone(images, valid)  # (2B, C, h, w), (2B, 1, h, w)
        features = (self.encoder.proj(x) * valid).permute(0, 2, 3, 1)  # (2B, h, w, d), zero on padding
        feature_mask = valid[:, 0] == 0  # (2B, h, w)
        return pool(features, feature_mask), sample_at(features, views.view_points, self.config.model.stride)

    def losses(self, views: ViewPair, pooled: torch.Tensor, at_points: torch.Tensor) -> dict[str, torch.Tensor]:
        B, P = views.valid.shape
        z1, z2 = self.global_head(pooled).chunk(2)  # (B, D) each
        f1, f2 = self.local_head(at_points.flatten(0, 1)).view(2, B, P, -1)  # (B, P, D) each
        global_loss = self.global_loss(z1, z2)
        local_loss = self.local_loss(f1, f2, views.points, views.valid)
        total = global_loss + self.config.loss.local_weight * local_loss
        return {"loss": total, "loss_global": global_loss, "loss_local": local_loss}

    # ------------------------------------------------------------------ training

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        views = self.views(batch, step_seed(self.config.trainer.seed, self.global_rank, self.global_step))
        losses = self.losses(views, *self.features(views))
        loss = losses["loss"]
        common.check_finite(self, loss, batch, batch_idx)
        self.note_step({k: losses[k].detach() for k in ("loss_global", "loss_local")})
        self.log("loss", loss.detach(), prog_bar=True, batch_size=len(batch))
        return loss

    # ------------------------------------------------------------------ validation: losses and probe, fixed views

    def on_validation_epoch_start(self) -> None:
        self._val_sums = torch.zeros(4, dtype=torch.float64, device=self.device)
        self._probe = ProbeCounts.zeros(self.device)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        views = self.views(batch, step_seed(self.config.data.val_seed, int(batch.indices[0]), 2))
        pooled, at_points = self.features(views)
        losses = self.losses(views, pooled, at_points)
        n = len(batch)
        self._val_sums += torch.stack([losses[k].detach().double() * n for k in ("loss", "loss_global", "loss_local")]
                                      + [torch.tensor(float(n), dtype=torch.float64, device=self.device)])
        e1, e2 = pooled.chunk(2)
        f1, f2 = at_points.chunk(2)
        self._probe.counts[0] += global_retrieval(e1, e2)
        self._probe.counts[1] += local_matching(f1, f2, views.points, views.valid, self.config.loss.exclude_radius)

    def on_validation_epoch_end(self) -> None:
        sums = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum")
        probe = ProbeCounts(self.trainer.strategy.reduce(self._probe.counts, reduce_op="sum"))
        loss, global_loss, local_loss, n = sums.tolist()
        self.val_n = int(n)
        self.val_loss = loss / max(n, 1)
        self.val_metrics = {"val_loss": round(self.val_loss, 5), "val_global": round(global_loss / max(n, 1), 5),
                            "val_local": round(local_loss / max(n, 1), 5),
                            **{k: round(v, 3) for k, v in probe.summary().items()}, "val_n": self.val_n}
        if not self.trainer.sanity_checking:
            self.log("val_loss", self.val_loss, prog_bar=True, sync_dist=True)  # equal on all ranks already

    # ------------------------------------------------------------------ checkpoints describe themselves



def checkpoint_meta(checkpoint: dict) -> dict:
    """The maskmatch section of a checkpoint, checked: ValueError unless it is a stage-1 checkpoint this code reads."""
    return common.checkpoint_meta(checkpoint, STAGE, CHECKPOINT_FORMAT)


def encoder_model(checkpoint: dict) -> HMERModel:
    """An HMERModel whose encoder holds a pretrain checkpoint's encoder (its other modules stay as initialized)."""
    meta = checkpoint_meta(checkpoint)
    model = HMERModel(from_dict(ModelConfig, meta["config"]["model"]))
    model.encoder.load_state_dict(common.state_under(checkpoint, "encoder."), strict=True)
    return model.eval()
