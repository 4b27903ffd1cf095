"""`maskmatch finetune`: stage 3, supervised training of the recognizer (alone, the supervised baseline)."""

from __future__ import annotations

import argparse
import shlex
import time
from importlib import resources
from pathlib import Path

from maskmatch.cli_args import positive_int
from maskmatch.errors import UserError

PRESETS = ("tiny", "small", "crohme")
RESUME_MAY_CHANGE = {"data.root", "data.workers", "trainer.time_budget", "trainer.log_every_n_steps",
                     "trainer.checkpoint_every_n_steps"}  # what --set may change on --resume: not what is learned


def load_config(args: argparse.Namespace, config_class=None, resume_may_change=RESUME_MAY_CHANGE):
    """The run's config (default FinetuneConfig): a preset, a file or (--resume) RUN_DIR/config.yaml, then --set,
    --time-budget and, for finetune, --label-fraction and --init."""
    import dataclasses

    import yaml

    from maskmatch.config import from_dict, override, to_dict
    from maskmatch.train.config import FinetuneConfig

    config_class = config_class or FinetuneConfig
    run_dir = Path(args.out)
    if args.resume:
        if args.preset or args.config:
            raise UserError("--resume continues RUN_DIR with its own config.yaml; drop --preset/--config")
        source = run_dir / "config.yaml"
        if not (run_dir / "last.ckpt").is_file() or not source.is_file():
            raise UserError(f"{run_dir}: no run to resume (config.yaml and last.ckpt needed)")
        text = source.read_text("utf-8")
    elif args.preset:
        text = resources.files("maskmatch").joinpath("presets", f"{args.preset}.yaml").read_text("utf-8")
    elif args.config:
        try:
            text = Path(args.config).read_text("utf-8")
        except OSError as e:
            raise UserError(f"{args.config}: cannot read config ({e.strerror})") from None
    else:
        raise UserError("give --preset, --config FILE or --resume")
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{source if args.resume else args.config or args.preset}: not valid YAML "
                        f"({str(e).splitlines()[0]})") from None
    saved = from_dict(config_class, values)
    config = override(saved, args.overrides)
    if args.time_budget is not None:
        config = override(config, [f"trainer.time_budget={args.time_budget}"])
    if getattr(args, "label_fraction", None) is not None:
        config = override(config, [f"data.label_fraction={args.label_fraction}"])
    if getattr(args, "init", None) is not None:
        config = dataclasses.replace(config, init=str(args.init))
    if args.resume:
        changed = sorted(set(_changed(to_dict(saved), to_dict(config))) - resume_may_change)
        if changed:
            raise UserError(f"--resume continues the run as configured: {changed[0]} cannot change "
                            f"(only {', '.join(sorted(resume_may_change))}); start a new run instead")
    return config


def _changed(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts of the same shape."""
    keys = []
    for key, value in a.items():
        if isinstance(value, dict) and isinstance(b[key], dict):
            keys += _changed(value, b[key], f"{prefix}{key}.")
        elif b[key] != value:
            keys.append(prefix + key)
    return keys


def _finetune(args: argparse.Namespace) -> int:
    start = time.monotonic()
    config = load_config(args)
    run_dir = Path(args.out)
    if not args.resume and (run_dir / "last.ckpt").exists():
        raise UserError(f"{run_dir} already holds a run: add --resume to continue it, or choose another --out")

    import warnings

    import lightning as L
    import torch
    import yaml

    from maskmatch.config import to_dict
    from maskmatch.train.callbacks import (LAST, AtomicCheckpointIO, BudgetPlanner, RunCheckpoints, RunLog,
                                           remove_stale_temporaries, write_atomic)
    from maskmatch.train.data import FinetuneData
    from maskmatch.train.module import FinetuneModule, NonFiniteLoss

    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")  # workers are a config choice
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")  # Lightning's, not ours
    t = config.trainer
    gpu = args.accelerator == "gpu" or (args.accelerator == "auto" and torch.cuda.is_available())
    data = FinetuneData(config.data, t.seed)
    if len(data.vocabulary) != config.model.vocab_size:
        raise UserError(f"model.vocab_size is {config.model.vocab_size}, the data's vocabulary has "
                        f"{len(data.vocabulary)} symbols")
    if args.resume:
        check_resumable(run_dir / LAST)
    L.seed_everything(t.seed, verbose=False)
    module = FinetuneModule(config, data.vocabulary, channels_last=gpu)
    if config.init and not args.resume:  # a resumed run's weights come from last.ckpt
        initialize(module, config.init)
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(run_dir)
    text = yaml.safe_dump(to_dict(config), sort_keys=False).encode("utf-8")
    write_atomic(run_dir / "config.yaml", lambda f: f.write(text))

    log = RunLog(run_dir, t.log_every_n_steps, start)
    checkpoints = RunCheckpoints(run_dir, t.checkpoint_every_n_steps, log)
    planner = BudgetPlanner(t.max_epochs, t.time_budget, t.plan_after_steps, start, checkpoints, log)
    many = args.devices * args.nodes > 1
    trainer = L.Trainer(
        accelerator=args.accelerator, devices=args.devices, num_nodes=args.nodes, strategy="ddp" if many else "auto",
        precision="bf16-mixed" if gpu and t.precision == "bf16-mixed" else "32-true",
        max_epochs=t.max_epochs, logger=False, enable_checkpointing=False, use_distributed_sampler=False,
        gradient_clip_val=config.optim.grad_clip or None, num_sanity_val_steps=2, default_root_dir=run_dir,
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
    print(f"best validation ExpRate {checkpoints.best:.2f}% (EMA, greedy, {checkpoints.val_n} held-out images) "
          f"at step {checkpoints.best_step}; {run_dir}/best.ckpt, last.ckpt, log.jsonl, curves.png")
    export(run_dir, data, checkpoints, command=_command_line(args), minutes=log.run_seconds() / 60,
           device=_device_words(trainer))
    return 0


def initialize(module, path: str) -> None:
    """Loads a hand-off file (or a whole model) into the module's model and its EMA; UserError if it does not fit."""
    from maskmatch.weights import init_from_weights

    try:
        manifest = init_from_weights(module.model, path)
    except ValueError as e:
        raise UserError(f"--init: {e}") from None
    module.ema.module.load_state_dict(module.model.state_dict())
    held = manifest.get("modules") or ["the whole model"]
    stage = (manifest.get("training") or {}).get("stage", "?")
    print(f"initialized {', '.join(held)} from {path} (stage {stage})", flush=True)


def check_resumable(path: Path) -> None:
    """A checkpoint this code can continue, or a UserError (memory-mapped: cheap even for a large file)."""
    import pickle

    import torch

    from maskmatch.train.module import checkpoint_meta

    try:
        checkpoint_meta(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as e:
        raise UserError(f"{path}: cannot resume from it ({str(e).splitlines()[0]})") from None


def export(run_dir: Path, data, checkpoints, command: str, minutes: float, device: str) -> None:
    """Writes the best checkpoint's EMA weights as RUN_DIR/model.safetensors (+ .json) with a manifest."""
    try:
        from maskmatch.weights import save_weights
    except ImportError:
        print("note: maskmatch.weights is not available; model.safetensors not written (best.ckpt holds the weights)")
        return
    import torch

    from maskmatch.data.render import RenderConfig
    from maskmatch.data.vocab import Vocabulary
    from maskmatch.train.module import checkpoint_meta, ema_model

    checkpoint = torch.load(run_dir / "best.ckpt", map_location="cpu", weights_only=True)
    manifest = {
        "metrics": {"validation": {"exprate": round(checkpoints.best, 4), "decoding": "greedy",
                                   "images": "held-out slice of the training split"}},
        "command": command,
        "training": {"stage": "finetune", "config": checkpoint_meta(checkpoint)["config"],
                     "step": checkpoints.best_step, "device": device,
                     "minutes": round(minutes, 2)},
    }
    path = run_dir / "model.safetensors"
    save_weights(path, ema_model(checkpoint), manifest, vocabulary=Vocabulary(tuple(data.vocabulary)),
                 render=RenderConfig(**data.cache.render_config))
    print(f"wrote {path} and its manifest")


def _command_line(args: argparse.Namespace, command: str = "finetune") -> str:
    """The command as a user would type it again (from the parsed arguments, so in-process calls get it right)."""
    words = ["maskmatch", command]
    words += ["--preset", args.preset] if args.preset else ["--config", args.config] if args.config else []
    for assignment in args.overrides:
        words += ["--set", assignment]
    words += ["--out", str(args.out)]
    words += ["--time-budget", f"{args.time_budget:g}"] if args.time_budget is not None else []
    words += ["--resume"] if args.resume else []
    words += ["--init", str(args.init)] if getattr(args, "init", None) else []
    words += ["--label-fraction", f"{args.label_fraction:g}"] if getattr(args, "label_fraction", None) else []
    words += [f"--devices={args.devices}", f"--nodes={args.nodes}", f"--accelerator={args.accelerator}"]
    return shlex.join(words)


def _device_words(trainer) -> str:
    import torch

    if trainer.strategy.root_device.type == "cuda":
        name = torch.cuda.get_device_name(trainer.strategy.root_device)
    else:
        name = f"CPU ({torch.get_num_threads()} threads)"
    return f"{trainer.world_size} x {name}" if trainer.world_size > 1 else name


def register(commands: argparse._SubParsersAction) -> None:
    finetune = commands.add_parser("finetune", help="stage 3: train the recognizer on labelled images "
                                                    "(alone: the supervised baseline)")
    source = finetune.add_mutually_exclusive_group()
    source.add_argument("--preset", choices=PRESETS, help="a config shipped with maskmatch")
    source.add_argument("--config", metavar="FILE", help="a YAML config (sections model, data, optim, trainer)")
    finetune.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="override one value, e.g. --set data.root=out/crohme --set optim.lr=3.0e-4")
    finetune.add_argument("--out", required=True, metavar="RUN_DIR",
                          help="run folder: checkpoints, log, curves, weights")
    finetune.add_argument("--time-budget", type=float, metavar="SECONDS",
                          help="plan the run to end within this many seconds (trainer.time_budget)")
    finetune.add_argument("--resume", action="store_true", help="continue RUN_DIR from last.ckpt")
    finetune.add_argument("--init", metavar="WEIGHTS", help="start from these weights, e.g. a pretrain run's "
                          "encoder.safetensors (config key init)")
    finetune.add_argument("--label-fraction", type=float, metavar="F",
                          help="train on a fixed random share F of the labelled images (data.label_fraction)")
    finetune.add_argument("--devices", type=positive_int, default=1, help="devices per node (default 1; >1 uses DDP)")
    finetune.add_argument("--nodes", type=positive_int, default=1, help="nodes (default 1; >1 uses DDP)")
    finetune.add_argument("--accelerator", choices=("auto", "cpu", "gpu"), default="auto", help="default auto")
    finetune.add_argument("--quiet", action="store_true", help="no progress bar or model summary")
    finetune.set_defaults(run=_finetune)
