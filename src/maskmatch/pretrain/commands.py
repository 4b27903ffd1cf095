"""`maskmatch pretrain`: stage 1, self-supervised training of the encoder on training images alone."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from maskmatch.cli_args import positive_int
from maskmatch.engine.options import add_run_options, load_config, run_command
from maskmatch.engine.runner import Run, Stage, manifest_training
from maskmatch.errors import UserError

PRESETS = ("pretrain-tiny", "pretrain-small", "pretrain-cpu", "pretrain-crohme")
MONITOR, MODE = "val_loss", "min"  # best.ckpt: the lowest loss on the held-out slice's fixed views
PANELS = ((("loss", "loss_global", "loss_local"), "training loss"), (("lr",), "learning rate"),
          (("val_loss", "val_global", "val_local"), "held-out loss (fixed views)"),
          (("probe_global", "probe_local", "probe_global_chance", "probe_local_chance"), "probe top-1 (%)"))


def stage() -> Stage:
    from maskmatch.pretrain.config import PretrainConfig
    from maskmatch.pretrain.data import PretrainData
    from maskmatch.pretrain.module import PretrainModule, checkpoint_meta

    return Stage("pretrain", PretrainConfig, make_data=lambda c: PretrainData(c.data, c.views, c.trainer.seed),
                 make_module=lambda c, data, gpu: PretrainModule(c, channels_last=gpu),
                 checkpoint_meta=checkpoint_meta, monitor=MONITOR, mode=MODE,
                 validation_record=lambda m: m.val_metrics, panels=PANELS, finish=finish, validate_first=True)


def pretrain(args: argparse.Namespace) -> int:
    """The command; reads args.preset, config, overrides, out, time_budget, resume, devices, nodes, accelerator,
    quiet and (optional) show_views. Writes RUN_DIR/encoder.safetensors (+ encoder.json)."""
    start = time.monotonic()
    if getattr(args, "show_views", None):
        return _show_views(args)
    return run_command(args, stage(), start)


def finish(run: Run) -> Path:
    records = run.validations("val_loss")
    best, first = records.get(run.checkpoints.best_step, {}), records.get(0, {})
    nan = float("nan")
    print(f"best held-out loss {run.checkpoints.best:.4f} at step {run.checkpoints.best_step}: probe global "
          f"{best.get('probe_global', nan):.1f}% (step 0: {first.get('probe_global', nan):.1f}%, "
          f"chance {best.get('probe_global_chance', nan):.1f}%), local {best.get('probe_local', nan):.1f}% "
          f"(step 0: {first.get('probe_local', nan):.1f}%, chance {best.get('probe_local_chance', nan):.2f}%)"
          f"; {run.run_dir}/best.ckpt, last.ckpt, log.jsonl, curves.png")
    return export(run, best, first)


def export(run: Run, best: dict, first: dict) -> Path:
    """Writes best.ckpt's encoder as RUN_DIR/encoder.safetensors (only `encoder.*`) + encoder.json, the manifest."""
    from maskmatch.pretrain.module import checkpoint_meta, encoder_model
    from maskmatch.weights import save_module_weights

    checkpoint = run.best_checkpoint()
    probe = lambda record: {k: v for k, v in record.items() if k.startswith(("probe_", "val_")) and k != "val_s"}  # noqa: E731
    manifest = {
        "metrics": {"validation": {**probe(best), "images": "held-out slice of the training split (fixed views)",
                                   "monitor": f"{MONITOR} ({MODE})"},
                    "step_0": probe(first)},
        **manifest_training(run, checkpoint_meta(checkpoint)["config"]),
    }
    path = run.run_dir / "encoder.safetensors"
    save_module_weights(path, encoder_model(checkpoint), ("encoder",), manifest, **run.preprocessing())
    print(f"wrote {path} and its manifest: start `maskmatch attend --init {path}` (stage 2) "
          f"or `maskmatch finetune --init {path}` from it")
    return path


def _show_views(args: argparse.Namespace) -> int:
    """Draws N training images with their two views (seeded by trainer.seed); no training."""
    if args.resume:
        raise UserError("--show-views draws from a config: give --preset or --config, not --resume")
    if Path(args.out).suffix.lower() != ".png":
        raise UserError(f"--show-views writes a PNG: --out {args.out} must end in .png")
    from maskmatch.pretrain.config import PretrainConfig

    config = load_config(args, PretrainConfig)

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
    parser = commands.add_parser("pretrain", help="stage 1: self-supervised encoder pretraining on training "
                                                  "images alone (global + local contrastive)")
    add_run_options(parser, PRESETS, sections="model, data, views, loss, optim, trainer",
                    example="--set data.root=out/crohme --set loss.local_weight=0.5",
                    outputs="checkpoints, log, curves, encoder.safetensors; with --show-views a PNG")
    parser.add_argument("--show-views", type=positive_int, metavar="N",
                        help="draw N training images with their two views and matched points to --out, no training")
    parser.set_defaults(run=pretrain)
