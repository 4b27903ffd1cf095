"""Exponential moving average of a model's weights, used for validation and for the exported model."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """A frozen copy of `model` whose floating-point tensors (parameters and buffers) track the model's:

        ema <- decay * ema + (1 - decay) * model

    Integer buffers (BatchNorm's num_batches_tracked) are copied. The caller picks the decay each step
    (see `schedule.ema_decay`).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.module = copy.deepcopy(model).requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        mine, theirs = self.module.state_dict(), model.state_dict()
        floats = [k for k, v in mine.items() if v.is_floating_point()]
        torch._foreach_lerp_([mine[k] for k in floats], [theirs[k].detach() for k in floats], 1.0 - decay)
        for key in mine.keys() - set(floats):
            mine[key].copy_(theirs[key])
