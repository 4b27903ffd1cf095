"""What the three stages' LightningModules (pretrain, attend, finetune) share: checkpoints that describe
themselves, the optimizer and schedule, the per-step seeds, and the non-finite-loss check.

A module using these has `config` (with `.model`, `.optim`, `.trainer.seed`), `total_steps` and `planned`.
Each stage keeps its own STAGE name and CHECKPOINT_FORMAT and passes them in, so one stage's format can
change without the others'.
"""

from __future__ import annotations

from collections.abc import Iterable

import lightning as L
import numpy as np
import torch

from maskmatch.config import from_dict, to_dict
from maskmatch.data.batching import Batch
from maskmatch.engine.schedule import lr_factor
from maskmatch.model.config import ModelConfig
from maskmatch.version import __version__


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the batch."""


# ---------------------------------------------------------------------- checkpoints describe themselves


def describe(module: L.LightningModule, stage: str, fmt: int, **extra) -> dict:
    """checkpoint["maskmatch"] of `module`: format, stage, maskmatch_version, config, `extra` (as given), total_steps
    and planned."""
    return {"format": fmt, "stage": stage, "maskmatch_version": __version__, "config": to_dict(module.config),
            **extra, "total_steps": module.total_steps, "planned": module.planned}


def checkpoint_meta(checkpoint: dict, stage: str, fmt: int) -> dict:
    """The maskmatch section of a checkpoint, checked: ValueError unless it is a `stage` checkpoint of format `fmt`."""
    meta = checkpoint.get("maskmatch")
    if not isinstance(meta, dict) or meta.get("stage") != stage:
        raise ValueError(f"not a maskmatch {stage} checkpoint")
    if meta.get("format") != fmt:
        raise ValueError(f"checkpoint format {meta.get('format')}, this maskmatch reads {fmt}")
    return meta


def check_model(meta: dict, config: ModelConfig) -> None:
    """ValueError unless the checkpoint's model config is `config`; fields added since it was written take their
    defaults (the stored dict is read with `from_dict`, not compared raw)."""
    if from_dict(ModelConfig, meta["config"]["model"]) != config:
        raise ValueError("the checkpoint's model config differs from this run's")


def state_under(checkpoint: dict, prefix: str) -> dict:
    """The checkpoint's tensors whose names start with `prefix` (e.g. "ema.module."), named without it."""
    return {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}


def restore(module: L.LightningModule, checkpoint: dict, stage: str, fmt: int) -> dict:
    """`on_load_checkpoint`: checks the checkpoint (stage, format, model config) and takes its total_steps and
    planned into `module`; returns its maskmatch section."""
    meta = checkpoint_meta(checkpoint, stage, fmt)
    check_model(meta, module.config.model)
    module.total_steps, module.planned = meta["total_steps"], meta["planned"]
    return meta


# ---------------------------------------------------------------------- training


def configure_adamw(module: L.LightningModule, parameters: Iterable[torch.nn.Parameter]) -> dict:
    """`configure_optimizers`: AdamW over those of `parameters` that require grad, weight decay only on weights
    of rank >= 2, and a per-step LambdaLR of `lr_factor` over `module.total_steps` (read at every step). Until the
    total is fixed (`planned`), the warm-up is warmup_steps; the plan may then shorten it (AdamWConfig.warmup)."""
    o = module.config.optim
    params = [p for p in parameters if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": o.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]  # biases and norms
    # on the CPU PyTorch's default AdamW loops over the tensors one by one, its fused kernel takes them in one pass
    # (on a GPU the default is already foreach, and Lightning refuses fused optimizers under mixed precision)
    fused = all(p.device.type == "cpu" for p in params)
    optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, fused=fused)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, o.warmup(module.total_steps) if module.planned else o.warmup_steps,
                                  module.total_steps, o.min_lr_ratio))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def step_seed(*keys: int) -> int:
    """A seed that is a pure function of `keys`."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def seed_dropout(module: L.LightningModule, *salt: int) -> None:
    """`on_train_batch_start`: dropout draws from a seed that is a pure function of (seed, rank, step, *salt), so
    a resumed run repeats them; `salt` keeps it apart from the stage's other seeds of the step."""
    torch.manual_seed(step_seed(module.config.trainer.seed, module.global_rank, module.global_step, *salt))


def check_finite(module: L.LightningModule, loss: torch.Tensor, batch: Batch, batch_idx: int) -> None:
    """NonFiniteLoss on every rank if the loss is NaN or infinite on any; the message names the step and, on the
    rank where it happened, the batch's images."""
    finite = bool(torch.isfinite(loss))
    if not module.trainer.strategy.reduce_boolean_decision(finite, all=True):
        where = f"step {module.global_step + 1} (epoch {module.current_epoch}, batch {batch_idx}"
        if finite:
            raise NonFiniteLoss(f"non-finite loss on another rank at {where})")
        datamodule = module.trainer.datamodule
        names = datamodule.names(batch.indices) if datamodule is not None else batch.indices
        shown = ", ".join(map(str, names[:8])) + (", ..." if len(names) > 8 else "")
        raise NonFiniteLoss(f"non-finite loss ({loss.item()}) at {where}: images {shown})")
