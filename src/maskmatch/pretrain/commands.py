"""`maskmatch pretrain`: stage 1, self-supervised training of the encoder on training images alone."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from maskmatch.cli_args import positive_int
from maskmatch.errors import UserError
from maskmatch.train.commands import RESUME_MAY_CHANGE, _command_line, _device_words, load_config

PRESETS = ("pretrain-tiny", "pretrain-small", "pretrain-crohme")
MONITOR, MODE = "val_loss", "min"  # best.ckpt: the lowest loss on the held-out slice's fixed views
PANELS = ((("loss", "loss_global", "loss_local"), "training loss"), (("lr",), "learning rate"),
          (("val_loss", "val_global", "val_local"), "held-out loss (fixed views)"),
          (("probe_global", "probe_local", "probe_global_chance", "probe_local_chance"), "probe top-1 (%)"))


def _config(args: argparse.Namespace):
    from maskmatch.pretrain.config import PretrainConfig

    return load_config(args, PretrainConfig, RESUME_MAY_CHANGE)


def _pretrain(args: argparse.Namespace) -> int:
    start = time.monotonic()
    if args.show_views:
        return _show_views(args)
    config = _config(args)
    run_dir = Path(args.out)
    if not args.resume and (run_dir / "last.ckpt").exists():
        raise UserError(f"{run_dir} already holds a run: add --resume to continue it, or choose another --out")

    import warnings

    import lightning as L
    import torch
    import yaml

    from maskmatch.config import to_dict
    from maskmatch.pretrain.data import PretrainData
    from maskmatch.pretrain.module import PretrainModule
    from maskmatch.train.callbacks import (LAST, AtomicCheckpointIO, BudgetPlanner, RunCheckpoints, RunLog,
                                           remove_stale_temporaries, write_atomic)
    from maskmatch.train.module import NonFiniteLoss

    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")  # workers are a config choice
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")  # Lightning's, not ours
    t = config.trainer
    gpu = args.accelerator == "gpu" or (args.accelerator == "auto" and torch.cuda.is_available())
    data = PretrainData(config.data, config.views, t.seed)
    if len(data.cache.vocabulary) != config.model.vocab_size:
        raise UserError(f"model.vocab_size is {config.model.vocab_size}, the data's vocabulary has "
                        f"{len(data.cache.vocabulary)} symbols (stage 3 needs them to agree)")
    if args.resume:
        check_resumable(run_dir / LAST)
    L.seed_everything(t.seed, verbose=False)
    module = PretrainModule(config, channels_last=gpu)
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(run_dir)
    text = yaml.safe_dump(to_dict(config), sort_keys=False).encode("utf-8")
    write_atomic(run_dir / "config.yaml", lambda f: f.write(text))

    log = RunLog(run_dir, t.log_every_n_steps, start, validation_record=lambda m: m.val_metrics, panels=PANELS,
                 log_initial_validation=True)
    checkpoints = RunCheckpoints(run_dir, t.checkpoint_every_n_steps, log, monitor=MONITOR, mode=MODE)
    planner = BudgetPlanner(t.max_epochs, t.time_budget, t.plan_after_steps, start, checkpoints, log)
    many = args.devices * args.nodes > 1
    trainer = L.Trainer(
        accelerator=args.accelerator, devices=args.devices, num_nodes=args.nodes, strategy="ddp" if many else "auto",
        precision="bf16-mixed" if gpu and t.precision == "bf16-mixed" else "32-true",
        max_epochs=t.max_epochs, logger=False, enable_checkpointing=False, use_distributed_sampler=False,
        gradient_clip_val=config.optim.grad_clip or None, default_root_dir=run_dir,
        num_sanity_val_steps=2 if args.resume else -1,  # a fresh run probes the whole held-out slice at step 0
        callbacks=[planner, checkpoints, log],
        enable_progress_bar=not args.quiet, plugins=[AtomicCheckpointIO()], enable_model_summary=not args.quiet)
    try:
        trainer.fit(module, datamodule=data, ckpt_path=run_dir / LAST if args.resume else None)
    except NonFiniteLoss as e:
        last = run_dir / LAST
        raise UserError(f"{e}; " + (f"the last checkpoint is {last} (step {checkpoints.saved_step})" if last.is_file()
                                    else "no checkpoint was written")) from None
    if not trainer.is_global_zero:
        return 0
    if checkpoints.best is None:
        print(f"no validation ran, so no best.ckpt; {run_dir}/last.ckpt holds the run")
        return 0
    records = _validations(run_dir)
    best, first = records.get(checkpoints.best_step, {}), records.get(0, {})
    print(f"best held-out loss {checkpoints.best:.4f} at step {checkpoints.best_step}: probe global "
          f"{best.get('probe_global', float('nan')):.1f}% (step 0: {first.get('probe_global', float('nan')):.1f}%, "
          f"chance {best.get('probe_global_chance', float('nan')):.1f}%), local {best.get('probe_local', float('nan')):.1f}% "
          f"(step 0: {first.get('probe_local', float('nan')):.1f}%, chance {best.get('probe_local_chance', float('nan')):.2f}%)"
          f"; {run_dir}/best.ckpt, last.ckpt, log.jsonl, curves.png")
    export(run_dir, data, checkpoints.best_step, best, first, command=_command_line(args, "pretrain"),
           minutes=log.run_seconds() / 60, device=_device_words(trainer))
    return 0


def _validations(run_dir: Path) -> dict[int, dict]:
    """The validation records of log.jsonl by step (a resumed run's repeats: the last)."""
    from maskmatch.train.callbacks import LOG, read_log

    return {r["step"]: r for r in read_log(run_dir / LOG) if "val_loss" in r and "event" not in r}


def check_resumable(path: Path) -> None:
    """A stage-1 checkpoint this code can continue, or a UserError."""
    import pickle

    import torch

    from maskmatch.pretrain.module import checkpoint_meta

    try:
        checkpoint_meta(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as e:
        raise UserError(f"{path}: cannot resume from it ({str(e).splitlines()[0]})") from None


def export(run_dir: Path, data, step: int, best: dict, first: dict, command: str, minutes: float,
           device: str) -> None:
    """Writes best.ckpt's encoder as RUN_DIR/encoder.safetensors (only `encoder.*`) + encoder.json, the manifest."""
    import torch

    from maskmatch.data.render import RenderConfig
    from maskmatch.data.vocab import Vocabulary
    from maskmatch.pretrain.module import checkpoint_meta, encoder_model
    from maskmatch.weights import save_module_weights

    checkpoint = torch.load(run_dir / "best.ckpt", map_location="cpu", weights_only=True)
    probe = lambda record: {k: v for k, v in record.items() if k.startswith(("probe_", "val_")) and k != "val_s"}  # noqa: E731
    manifest = {
        "metrics": {"validation": {**probe(best), "images": "held-out slice of the training split (fixed views)",
                                   "monitor": f"{MONITOR} ({MODE})"},
                    "step_0": probe(first)},
        "command": command,
        "training": {"stage": "pretrain", "config": checkpoint_meta(checkpoint)["config"], "step": step,
                     "device": device, "minutes": round(minutes, 2)},
    }
    path = run_dir / "encoder.safetensors"
    save_module_weights(path, encoder_model(checkpoint), ("encoder",), manifest,
                        vocabulary=Vocabulary(tuple(data.cache.vocabulary)),
                        render=RenderConfig(**data.cache.render_config))
    print(f"wrote {path} and its manifest: start `maskmatch finetune --init {path}` from it")


def _show_views(args: argparse.Namespace) -> int:
    """Draws N training images with their two views (seeded by trainer.seed); no training."""
    if args.resume:
        raise UserError("--show-views draws from a config: give --preset or --config, not --resume")
    if Path(args.out).suffix.lower() != ".png":
        raise UserError(f"--show-views writes a PNG: --out {args.out} must end in .png")
    config = _config(args)

    import numpy as np

    from maskmatch.data.batching import collate
    from maskmatch.pretrain.data import PretrainData
    from maskmatch.pretrain.pictures import draw_views
    from maskmatch.pretrain.views import make_views

    data = PretrainData(config.data, config.views, config.trainer.seed)
    n = min(args.show_views, len(data.train_set))
    positions = np.sort(np.random.default_rng(config.trainer.seed).choice(len(data.train_set), n, replace=False))
    batch = collate([data.train_set[int(p)] for p in positions])
    views = make_views(batch.images, batch.mask, config.views, config.loss.points, config.trainer.seed)
    draw_views(batch, views, Path(args.out), data.names(positions.tolist()))
    print(f"wrote {args.out}: {n} images, their two views and up to 12 matched points each")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    pretrain = commands.add_parser("pretrain", help="stage 1: self-supervised encoder pretraining on training "
                                                    "images alone (global + local contrastive)")
    source = pretrain.add_mutually_exclusive_group()
    source.add_argument("--preset", choices=PRESETS, help="a config shipped with maskmatch")
    source.add_argument("--config", metavar="FILE",
                        help="a YAML config (sections model, data, views, loss, optim, trainer)")
    pretrain.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="override one value, e.g. --set data.root=out/crohme --set loss.local_weight=0.5")
    pretrain.add_argument("--out", required=True, metavar="RUN_DIR",
                          help="run folder (checkpoints, log, curves, encoder.safetensors); with --show-views a PNG")
    pretrain.add_argument("--time-budget", type=float, metavar="SECONDS",
                          help="plan the run to end within this many seconds (trainer.time_budget)")
    pretrain.add_argument("--resume", action="store_true", help="continue RUN_DIR from last.ckpt")
    pretrain.add_argument("--show-views", type=positive_int, metavar="N",
                          help="draw N training images with their two views and matched points to --out, no training")
    pretrain.add_argument("--devices", type=positive_int, default=1, help="devices per node (default 1; >1 uses DDP)")
    pretrain.add_argument("--nodes", type=positive_int, default=1, help="nodes (default 1; >1 uses DDP)")
    pretrain.add_argument("--accelerator", choices=("auto", "cpu", "gpu"), default="auto", help="default auto")
    pretrain.add_argument("--quiet", action="store_true", help="no progress bar or model summary")
    pretrain.set_defaults(run=_pretrain)
