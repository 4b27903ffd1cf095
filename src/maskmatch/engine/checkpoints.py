"""Checkpoints of every training run, written atomically: last.ckpt, best.ckpt and the kept ones."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from maskmatch.files import write_atomic

LAST, BEST, KEPT = "last.ckpt", "best.ckpt", "kept"


def remove_stale_temporaries(run_dir: Path) -> None:
    """Temporary files of writes that a killed run left behind (the files they replace are intact)."""
    for tmp in run_dir.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temporary file in the checkpoint's own folder, fsync, os.replace, fsync the folder.

    Lightning's TorchCheckpointIO writes local files through an fsspec transaction whose temporary file
    comes from tempfile.mkstemp() in the system temp folder, then shutil.move()s it into place: when
    that folder is on another file system the move is a copy into the destination, not atomic, and
    nothing is fsynced. Here the rename never leaves the run's folder.
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        write_atomic(Path(path), lambda f: torch.save(checkpoint, f))


class RunCheckpoints(L.Callback):
    """last.ckpt every n steps and after each validation; best.ckpt, a copy of it, when the monitored validation
    value (the module's attribute `monitor`: finetune's ExpRate by default) is the best so far, the highest
    for mode "max", the lowest for "min" (ties go to the later, longer-trained weights). With keep > 0, the
    last `keep` validations' checkpoints also stay in RUN_DIR/kept/ (step-N.ckpt), for `maskmatch average`."""

    def __init__(self, run_dir: Path, every_n_steps: int, log, monitor: str = "val_exprate", mode: str = "max",
                 keep: int = 0):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.run_dir, self.every_n_steps, self.run_log, self.keep = Path(run_dir), every_n_steps, log, keep
        self.monitor, self.mode = monitor, mode
        self.best: float | None = None  # best monitored value so far, of best.ckpt
        self.best_step, self.val_n = -1, 0
        self.save_seconds = 0.0
        self.saved_step = -1  # global step of the latest checkpoint written in this session

    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "val_n": self.val_n}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_step, self.val_n = state["best"], state["best_step"], state["val_n"]

    def _save(self, trainer, name: str) -> None:
        start = time.monotonic()
        trainer.save_checkpoint(self.run_dir / name, weights_only=False)  # every rank calls it; rank 0 writes
        self.save_seconds, self.saved_step = time.monotonic() - start, trainer.global_step
        self.run_log.write(trainer, {"event": "checkpoint", "file": name, "step": trainer.global_step,
                                     "epoch": trainer.current_epoch, "seconds": round(self.save_seconds, 3)})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        epoch_end = batch_idx + 1 == trainer.num_training_batches  # validation saves right after
        if trainer.global_step % self.every_n_steps == 0 and not (epoch_end or trainer.should_stop):
            self._save(trainer, LAST)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        value = float(getattr(pl_module, self.monitor))
        improved = self.best is None or (value >= self.best if self.mode == "max" else value <= self.best)
        if improved:
            self.best, self.best_step = value, trainer.global_step
        self.val_n = pl_module.val_n
        self._save(trainer, LAST)
        if improved and trainer.is_global_zero:
            self._copy(LAST, BEST)
            self.run_log.write(trainer, {"event": "checkpoint", "file": BEST, "step": trainer.global_step,
                                         "epoch": trainer.current_epoch, self.monitor: self.best})
        if self.keep and trainer.is_global_zero:
            (self.run_dir / KEPT).mkdir(exist_ok=True)
            self._copy(LAST, f"{KEPT}/step-{trainer.global_step:07d}.ckpt")
            for old in sorted((self.run_dir / KEPT).glob("step-*.ckpt"))[:-self.keep]:
                old.unlink()

    def _copy(self, source: str, target: str) -> None:
        with open(self.run_dir / source, "rb") as f:
            write_atomic(self.run_dir / target, lambda out: shutil.copyfileobj(f, out))

    def on_train_end(self, trainer, pl_module) -> None:
        if self.saved_step != trainer.global_step:
            self._save(trainer, LAST)
