"""Exponential moving average of a model's weights: stage 3's EMA (validation and the exported model) and
stage 2's teacher (`attend/teacher.py`) are both one."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """A frozen copy of `model` whose floating-point parameters, and with `average_buffers` its floating-point
    buffers (BatchNorm's running statistics), track the model's:

        ema <- decay * ema + (1 - decay) * model

    The other tensors are copied: integer buffers (BatchNorm's num_batches_tracked), and every buffer without
    `average_buffers`. The caller picks the decay each step (see `schedule.ema_decay`).
    """

    def __init__(self, model: nn.Module, average_buffers: bool = True):
        super().__init__()
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.average_buffers = average_buffers

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        if not 0 <= decay <= 1:
            raise ValueError(f"decay {decay} must lie in [0, 1]")
        mine, theirs = self.module.state_dict(), model.state_dict()
        if mine.keys() != theirs.keys():
            raise ValueError("the model's tensors differ from its average's")
        averaged = [k for k, v in mine.items() if v.is_floating_point()] if self.average_buffers else \
            [k for k, _ in self.module.named_parameters()]
        torch._foreach_lerp_([mine[k] for k in averaged], [theirs[k].detach() for k in averaged], 1.0 - decay)
        for key in mine.keys() - set(averaged):
            mine[key].copy_(theirs[key])
