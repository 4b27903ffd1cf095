"""Schedules and the time-budget plan: pure functions of the step and of measured costs; the loop passes values in."""

from __future__ import annotations

import math


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Multiplier of the peak learning rate for optimizer step `step` (0 = the first step).

    Linear warm-up (step + 1) / warmup_steps for step < warmup_steps, so the first step already moves;
    then cosine decay from 1 to min_ratio over the remaining total_steps - warmup_steps steps, then
    min_ratio. Step 0 never depends on total_steps, so the total may be fixed after it.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def ema_decay(step: int, decay: float) -> float:
    """EMA decay after `step` optimizer steps (1 = after the first): min(decay, (1 + step) / (10 + step)).

    The warm-up (TensorFlow's ExponentialMovingAverage with num_updates) keeps the average from being
    dominated by the random initialization during the first few hundred steps.
    """
    return min(decay, (1.0 + step) / (10.0 + step))


def plan_total_steps(*, time_left: float, global_step: int, epoch: int, batch_in_epoch: int, steps_per_epoch: int,
                     max_epochs: int, step_seconds: float, end_seconds: float, save_seconds: float,
                     saves_per_epoch: int) -> int:
    """The total optimizer steps that fit in `time_left` seconds, from `global_step`.

    The run is `batch_in_epoch` batches into epoch `epoch` (0-based). An epoch costs
    steps_per_epoch * step_seconds + saves_per_epoch * save_seconds (mid-epoch checkpoints) + end_seconds
    (its end: validation, checkpoint, plot). When the current epoch can end in time, the plan holds as many
    whole epochs as fit, then the steps of a last partial epoch that fit in the rest; otherwise it stops
    inside the current one. A stop inside an epoch costs one epoch's end. At least one more step is
    planned, and never more than max_epochs epochs. (Whole epochs alone would leave up to an epoch of the
    budget unused: a third of a 20-minute stage at 7 minutes an epoch.)
    """
    per_step = step_seconds + save_seconds * saves_per_epoch / steps_per_epoch
    finish_current = (steps_per_epoch - batch_in_epoch) * per_step + end_seconds
    cap = max_epochs * steps_per_epoch
    if finish_current > time_left:
        steps = int((time_left - end_seconds) // per_step) if per_step > 0 else 1
        return min(cap, global_step + max(1, steps))
    epoch_seconds = steps_per_epoch * per_step + end_seconds
    more_epochs = int((time_left - finish_current) // epoch_seconds) if epoch_seconds > 0 else max_epochs
    rest = time_left - finish_current - more_epochs * epoch_seconds - end_seconds  # the partial epoch's own end
    partial = int(rest // per_step) if per_step > 0 and rest > 0 else 0
    return min(cap, (epoch + 1 + more_epochs) * steps_per_epoch + partial)
