"""One Lightning run for every training command (pretrain, attend, finetune): config, resume checks, callbacks.

A stage describes what differs in a `Stage` (its config class, data, module, checkpoint check, monitored value,
log panels, and `finish`: what it reports and exports). `run_stage(stage, config, run_dir, ...)` takes a typed
config, refuses to overwrite a run, writes config.yaml, and fits with the budget planner, atomic checkpoints,
log.jsonl and curves.png; `train` adds the stage's `finish`. The commands only parse arguments and call
`train` (options.py); `maskmatch train` calls it directly for each stage. Lightning is imported inside, so
`maskmatch --help` stays fast.
"""

from __future__ import annotations

import argparse
import pickle
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from maskmatch.config import to_dict
from maskmatch.data.vocab import Vocabulary
from maskmatch.errors import UserError
from maskmatch.files import write_atomic

@dataclass(frozen=True)
class Stage:
    """What differs between the training commands."""

    name: str  # the command ("pretrain", "attend", "finetune"), as the user types it
    config_class: type  # its typed config: sections model, data, optim and trainer at least
    make_data: Callable[[Any], Any]  # config -> LightningDataModule (its `cache` holds the vocabulary)
    make_module: Callable[[Any, Any, bool], Any]  # (config, data, channels_last) -> LightningModule
    checkpoint_meta: Callable[[dict], dict]  # checkpoint -> its maskmatch section; ValueError if not this stage's
    monitor: str  # the module's validation attribute best.ckpt follows
    mode: str  # "max" or "min": which way the monitored value is better
    validation_record: Callable[[Any], dict]  # module -> the validation line of log.jsonl
    panels: tuple  # curves.png: ((log keys, title), ...)
    finish: Callable[["Run"], Path]  # a finished run -> the weights it exported (after saying what it learned)
    initialize: Callable[[Any, str | None], None] | None = None  # (module, config.init): a fresh run's start weights
    validate_first: bool = False  # a fresh run validates the whole held-out slice at step 0 and logs it


@dataclass(frozen=True)
class Hardware:
    """Where a run trains: devices per node, nodes (more than one device in all: DDP), accelerator."""

    devices: int = 1
    nodes: int = 1
    accelerator: str = "auto"  # "auto", "cpu" or "gpu"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Hardware":
        return cls(args.devices, args.nodes, args.accelerator)

    def words(self) -> list[str]:
        return [f"--devices={self.devices}", f"--nodes={self.nodes}", f"--accelerator={self.accelerator}"]


@dataclass
class Run:
    """A finished run, on rank 0, that validated at least once (best.ckpt exists)."""

    stage: Stage
    config: Any
    run_dir: Path
    data: Any
    trainer: Any
    checkpoints: Any  # RunCheckpoints: best, best_step, val_n
    log: Any  # RunLog: run_seconds()
    command: str  # the command line that trains it again, for the manifest

    def best_checkpoint(self) -> dict:
        """best.ckpt, loaded on the CPU (tensors only, never unpickled objects)."""
        import torch

        return torch.load(self.run_dir / "best.ckpt", map_location="cpu", weights_only=True)

    def preprocessing(self) -> dict:
        """The vocabulary and render config the run's data was built with: what exported weights carry."""
        from maskmatch.data.render import RenderConfig

        return {"vocabulary": Vocabulary(tuple(self.data.cache.vocabulary)),
                "render": RenderConfig(**self.data.cache.render_config)}

    def validations(self, key: str) -> dict[int, dict]:
        """The validation records of log.jsonl (those holding `key`) by step; a resumed run's repeats: the last."""
        from maskmatch.engine.callbacks import LOG, read_log

        return {r["step"]: r for r in read_log(self.run_dir / LOG) if key in r and "event" not in r}


def load_init(model, path: str):
    """`--init`: loads a hand-off file (or a whole model) into `model` through `weights.init_from_weights` (missing
    keys asserted), says what it loaded, and returns nothing; a file that does not fit is a UserError."""
    from maskmatch.weights import init_from_weights

    try:
        manifest = init_from_weights(model, path)
    except ValueError as e:
        raise UserError(f"--init: {e}") from None
    held = manifest.get("modules") or ["the whole model"]
    stage = (manifest.get("training") or {}).get("stage", "?")
    print(f"initialized {', '.join(held)} from {path} (stage {stage})", flush=True)


def check_resumable(path: Path, checkpoint_meta: Callable[[dict], dict]) -> None:
    """A checkpoint this stage can continue, or a UserError (memory-mapped: cheap even for a large file)."""
    import torch

    try:
        checkpoint_meta(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as e:
        raise UserError(f"{path}: cannot resume from it ({str(e).splitlines()[0]})") from None


def train(stage: Stage, config, run_dir: Path, *, command: str, resume: bool = False, hardware: Hardware = Hardware(),
          quiet: bool = False, start: float | None = None) -> Path | None:
    """`run_stage`, then the stage's `finish`: the weights it exported (None where run_stage returns None)."""
    run = run_stage(stage, config, run_dir, command=command, resume=resume, hardware=hardware, quiet=quiet,
                    start=start)
    return None if run is None else stage.finish(run)


def run_stage(stage: Stage, config, run_dir: Path, *, command: str, resume: bool = False,
              hardware: Hardware = Hardware(), quiet: bool = False, start: float | None = None) -> Run | None:
    """Trains `stage` with `config` (its config_class; init and time budget in it) in run_dir, from last.ckpt if
    `resume`. `command` is the line that trains it again (for the manifest); `start`, when the command's clock
    started (the time budget counts from it). None on ranks other than 0 and when no validation ran; a user's
    mistake is a UserError."""
    start = time.monotonic() if start is None else start
    if not resume and (run_dir / "last.ckpt").exists():
        raise UserError(f"{run_dir} already holds a run: add --resume to continue it, or choose another --out")

    import lightning as L
    import torch

    from maskmatch.engine.callbacks import BudgetPlanner, RunLog
    from maskmatch.engine.checkpoints import LAST, AtomicCheckpointIO, RunCheckpoints, remove_stale_temporaries
    from maskmatch.engine.common import NonFiniteLoss

    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")  # workers are a config choice
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")  # Lightning's, not ours
    t = config.trainer
    gpu = hardware.accelerator == "gpu" or (hardware.accelerator == "auto" and torch.cuda.is_available())
    data = stage.make_data(config)
    if len(data.cache.vocabulary) != config.model.vocab_size:
        raise UserError(f"model.vocab_size is {config.model.vocab_size}, the data's vocabulary has "
                        f"{len(data.cache.vocabulary)} symbols")
    if resume:
        check_resumable(run_dir / LAST, stage.checkpoint_meta)
    L.seed_everything(t.seed, verbose=False)
    module = stage.make_module(config, data, gpu)
    if stage.initialize and not resume:  # a resumed run's weights come from last.ckpt
        stage.initialize(module, config.init)
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(run_dir)
    text = yaml.safe_dump(to_dict(config), sort_keys=False).encode("utf-8")
    write_atomic(run_dir / "config.yaml", lambda f: f.write(text))

    log = RunLog(run_dir, t.log_every_n_steps, start, validation_record=stage.validation_record, panels=stage.panels,
                 log_initial_validation=stage.validate_first)
    checkpoints = RunCheckpoints(run_dir, t.checkpoint_every_n_steps, log, monitor=stage.monitor, mode=stage.mode,
                                 keep=t.keep_checkpoints)
    planner = BudgetPlanner(t.max_epochs, t.time_budget, t.plan_after_steps, start, checkpoints, log)
    many = hardware.devices * hardware.nodes > 1
    trainer = L.Trainer(
        accelerator=hardware.accelerator, devices=hardware.devices, num_nodes=hardware.nodes,
        strategy="ddp" if many else "auto",
        precision="bf16-mixed" if gpu and t.precision == "bf16-mixed" else "32-true",
        max_epochs=t.max_epochs, logger=False, enable_checkpointing=False, use_distributed_sampler=False,
        gradient_clip_val=config.optim.grad_clip or None, default_root_dir=run_dir,
        num_sanity_val_steps=-1 if stage.validate_first and not resume else 2,  # -1: the whole held-out slice
        callbacks=[planner, checkpoints, log],
        enable_progress_bar=not quiet, plugins=[AtomicCheckpointIO()], enable_model_summary=not quiet)
    try:
        trainer.fit(module, datamodule=data, ckpt_path=run_dir / LAST if resume else None)
    except NonFiniteLoss as e:
        last = run_dir / LAST
        raise UserError(f"{e}; " + (f"the last checkpoint is {last} (step {checkpoints.saved_step})" if last.is_file()
                                    else "no checkpoint was written")) from None
    if not trainer.is_global_zero:
        return None
    if checkpoints.best is None:
        print(f"no validation ran, so no best.ckpt; {run_dir}/last.ckpt holds the run")
        return None
    return Run(stage, config, run_dir, data, trainer, checkpoints, log, command)


def device_words(trainer) -> str:
    """What the run ran on, e.g. "NVIDIA H100 80GB HBM3" or "2 x CPU (1 thread)"."""
    import torch

    if trainer.strategy.root_device.type == "cuda":
        name = torch.cuda.get_device_name(trainer.strategy.root_device)
    else:
        threads = torch.get_num_threads()
        name = f"CPU ({threads} thread{'s' if threads > 1 else ''})"
    return f"{trainer.world_size} x {name}" if trainer.world_size > 1 else name


def manifest_training(run: Run, checkpoint_config: dict) -> dict:
    """The manifest's "command" and "training" sections of a run's exported weights (best.ckpt's)."""
    training = {"stage": run.stage.name, "config": checkpoint_config, "step": run.checkpoints.best_step,
                "device": device_words(run.trainer), "minutes": round(run.log.run_seconds() / 60, 2)}
    if checkpoint_config.get("init"):  # what the run started from, for the training history (history.py)
        training["init"] = {"file": checkpoint_config["init"], "sha256": weights_sha256(checkpoint_config["init"])}
    return {"command": run.command, "training": training}


def weights_sha256(path: str) -> str | None:
    """The sha256 its manifest gives a weights file (of the tensors), None if it has none or is gone."""
    from maskmatch.weights import read_manifest

    try:
        return read_manifest(path)["weights"]["sha256"]
    except (ValueError, KeyError, TypeError):
        return None
