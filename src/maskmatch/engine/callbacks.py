"""Callbacks of every training run: the time-budget planner, log.jsonl and curves.png (checkpoints: checkpoints.py)."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import lightning as L

from maskmatch.engine.schedule import plan_total_steps
from maskmatch.files import write_atomic

LOG, CURVES = "log.jsonl", "curves.png"


def read_log(path: Path) -> list[dict]:
    """The records of log.jsonl; a line cut short by a killed run is skipped."""
    records = []
    if path.is_file():
        for line in path.read_text("utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def plot_curves(records: list[dict], path: Path, panels: tuple) -> None:
    """Logged values against the step as a PNG (Agg, no pyplot): one panel per (keys, title) of `panels`.

    Training keys ("loss", "lr" and others logged every n steps) are lines; validation keys get markers.
    """
    from matplotlib.figure import Figure

    def series(key: str) -> tuple[list, list]:
        latest = {r["step"]: r[key] for r in records if key in r}  # a resumed run's repeats: keep the last
        steps = sorted(latest)
        return steps, [latest[s] for s in steps]

    fig = Figure(figsize=(4 * len(panels), 3.6), layout="constrained")
    for ax, (keys, title) in zip(fig.subplots(1, len(panels)), panels):
        every = []
        for key in keys:
            steps, values = series(key)
            every += values
            validation = key.startswith(("val_", "probe_"))
            ax.plot(steps, values, marker="o" if validation else None, markersize=3, label=key)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=7)
        if "loss" in keys and every and min(every) > 0:
            ax.set_yscale("log")
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=90))


class BudgetPlanner(L.Callback):
    """Fixes the schedule's length and ends the run in time.

    Without a time budget the run has max_epochs epochs. With one, the plan is made once, when
    plan_after_steps steps have been timed and either an epoch's end has been timed or a tenth of the
    training time has passed: the median step time (data loading included), the cost of an epoch's
    end (validation, checkpoint, plot; until one is seen, the sanity check's validation scaled to the
    whole set) and of a mid-epoch checkpoint give the steps that fit (`schedule.plan_total_steps`).
    Checkpoints keep the plan. After every step, the run stops when one more step, an epoch's end and
    the final export would pass the budget; stopping triggers a last validation and checkpoint.
    """

    WARMUP_STEPS = 3  # first steps of a session, not timed: allocation, autotuning, workers starting

    def __init__(self, max_epochs: int, time_budget: float | None, plan_after_steps: int, start: float,
                 checkpoints: "RunCheckpoints", log: "RunLog"):
        self.max_epochs, self.budget, self.plan_after = max_epochs, time_budget, plan_after_steps
        self.start, self.checkpoints, self.run_log = start, checkpoints, log
        self.step_times: list[float] = []  # seconds between consecutive step ends within an epoch
        self.end_seconds = 0.0  # seconds of an epoch's end: validation, checkpoint, plot, loader restart
        self._epoch_end_seen = False
        self._last_end: float | None = None  # when the latest step ended
        self._epoch_end_at: float | None = None  # when the last step of an epoch ended, until the next step ends
        self._train_start = self._val_start = 0.0
        self._steps_seen = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def reserve(self) -> float:
        """Seconds kept for the export and shutdown after the last checkpoint, and for noise."""
        return 2.0 + 0.01 * self.budget + 3 * self.checkpoints.save_seconds

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        meta = checkpoint.get("maskmatch", {})
        if meta.get("planned"):  # known before Lightning decides whether anything is left to do
            trainer.fit_loop.epoch_loop.max_steps = meta["total_steps"]

    def on_train_start(self, trainer, pl_module) -> None:
        if not pl_module.planned:
            pl_module.total_steps = self.max_epochs * trainer.num_training_batches
            pl_module.planned = self.budget is None
        trainer.fit_loop.epoch_loop.max_steps = pl_module.total_steps
        self._train_start = time.monotonic()

    def on_validation_start(self, trainer, pl_module) -> None:
        self._val_start = time.monotonic()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:  # a few batches: scaled to the whole validation, a first estimate
            done, total = sum(trainer.num_sanity_val_batches), sum(trainer.num_val_batches)
            self.end_seconds = (time.monotonic() - self._val_start) * total / max(done, 1)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.monotonic()
        self._steps_seen += 1
        step = statistics.median(self.step_times) if self.step_times else 0.0
        if self._epoch_end_at is not None:  # the first step after an epoch's end
            self.end_seconds, self._epoch_end_at = max(0.0, now - self._epoch_end_at - step), None
            self._epoch_end_seen = True
        elif self._last_end is not None and self._steps_seen > self.WARMUP_STEPS:
            self.step_times = (self.step_times + [now - self._last_end])[-200:]
        self._last_end = now
        if batch_idx + 1 == trainer.num_training_batches:
            self._epoch_end_at = now
        if trainer.global_step >= pl_module.total_steps:
            trainer.should_stop = True  # not only max_steps: stopping this way validates a last time
            return
        if self.budget is None or not self.step_times:
            return
        step = statistics.median(self.step_times)
        training = now - self._train_start
        strategy = trainer.strategy  # ranks time themselves apart: they plan and stop as one (DDP would hang)
        if not pl_module.planned and strategy.reduce_boolean_decision(
                len(self.step_times) >= self.plan_after - self.WARMUP_STEPS
                and (self._epoch_end_seen or training > 0.1 * (self.budget - (self._train_start - self.start))),
                all=False):
            self._plan(trainer, pl_module, step, batch_idx)
        if strategy.reduce_boolean_decision(self.elapsed() + step + self.end_seconds + self.reserve() > self.budget,
                                            all=False):
            if not trainer.should_stop and trainer.is_global_zero:
                print(f"\ntime budget: stopping at step {trainer.global_step}", flush=True)
            trainer.should_stop = True

    def _plan(self, trainer, pl_module, step: float, batch_idx: int) -> None:
        per_epoch, save = trainer.num_training_batches, self.checkpoints.save_seconds
        total = plan_total_steps(
            time_left=self.budget - self.elapsed() - self.reserve(), global_step=trainer.global_step,
            epoch=trainer.current_epoch, batch_in_epoch=batch_idx + 1, steps_per_epoch=per_epoch,
            max_epochs=self.max_epochs, step_seconds=step, end_seconds=self.end_seconds, save_seconds=save,
            saves_per_epoch=per_epoch // self.checkpoints.every_n_steps)
        total = trainer.strategy.broadcast(total, src=0)  # rank 0's plan for every rank
        pl_module.total_steps, pl_module.planned = total, True
        trainer.fit_loop.epoch_loop.max_steps = total
        self.run_log.write(trainer, {"event": "plan", "step": trainer.global_step, "planned_steps": total,
                                     "step_s": round(step, 4), "epoch_end_s": round(self.end_seconds, 3),
                                     "save_s": round(save, 3), "budget_s": self.budget})
        if trainer.is_global_zero:
            print(f"\ntime budget {self.budget:.0f} s: {step:.3f} s/step, {self.end_seconds:.1f} s per epoch end; "
                  f"planned {total} steps ({total / per_epoch:.2f} epochs of {per_epoch})", flush=True)


class RunLog(L.Callback):
    """Appends JSON lines to log.jsonl (training every n steps, each validation, events) and redraws curves.png.

    elapsed_s counts the seconds of all sessions of the run (checkpoints keep the earlier sessions' total).
    A training line holds the module's `step_extras` (engine/module.py); a validation line holds
    `validation_record(pl_module)`. With log_initial_validation, the sanity-check validation of a run that
    starts at step 0 is logged as step 0's (it must then cover the whole validation set).
    """

    def __init__(self, run_dir: Path, every_n_steps: int, start: float, validation_record,
                 panels: tuple = (), log_initial_validation: bool = False):
        self.path, self.every_n_steps, self.start = Path(run_dir) / LOG, every_n_steps, start
        self.validation_record, self.panels = validation_record, panels
        self.log_initial_validation = log_initial_validation
        self.seconds_before = 0.0  # seconds of earlier sessions of this run
        self._val_start = 0.0
        self._images, self._since = 0, time.monotonic()

    def run_seconds(self) -> float:
        return self.seconds_before + time.monotonic() - self.start

    def state_dict(self) -> dict:
        return {"seconds": self.run_seconds()}

    def load_state_dict(self, state: dict) -> None:
        self.seconds_before = float(state["seconds"])

    def write(self, trainer, record: dict) -> None:
        if trainer.is_global_zero:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def on_train_start(self, trainer, pl_module) -> None:
        self.write(trainer, {"event": "start", "step": trainer.global_step, "epoch": trainer.current_epoch,
                             "planned_steps": pl_module.total_steps, "devices": trainer.world_size})
        self._images, self._since = 0, time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._images += len(batch) * trainer.world_size  # all ranks, counted as this rank's batch size
        step = trainer.global_step
        if step % self.every_n_steps:
            return
        now = time.monotonic()
        self.write(trainer, {
            "step": step, "epoch": trainer.current_epoch, "loss": float(outputs["loss"]),
            "lr": pl_module.step_lr, **pl_module.step_extras,
            "images_per_s": round(self._images / max(now - self._since, 1e-9), 2),
            "elapsed_s": round(self.run_seconds(), 2)})
        self._images, self._since = 0, now

    def on_validation_start(self, trainer, pl_module) -> None:
        self._val_start = time.monotonic()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking and not (self.log_initial_validation and trainer.global_step == 0):
            return
        self.write(trainer, {"step": trainer.global_step, "epoch": trainer.current_epoch,
                             **self.validation_record(pl_module),
                             "val_s": round(time.monotonic() - self._val_start, 2),
                             "elapsed_s": round(self.run_seconds(), 2)})
        if trainer.is_global_zero:
            plot_curves(read_log(self.path), self.path.parent / CURVES, self.panels)
        self._images, self._since = 0, time.monotonic()
