"""`maskmatch finetune`: stage 3, supervised training of the recognizer (alone, the supervised baseline)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from maskmatch.engine.options import add_run_options, run_command
from maskmatch.engine.runner import Run, Stage, load_init, manifest_training

PRESETS = ("finetune-tiny", "finetune-small", "finetune-cpu", "finetune-crohme")
RENAMED = {name.removeprefix("finetune-"): name for name in PRESETS}  # the names these presets had before
PANELS = ((("loss", "val_loss"), "loss (training: label-smoothed; validation: EMA, token cross-entropy)"),
          (("lr",), "learning rate"), (("val_exprate",), "validation ExpRate (%, EMA, greedy)"))


def stage() -> Stage:
    from maskmatch.data.loading import FinetuneData
    from maskmatch.finetune.config import FinetuneConfig
    from maskmatch.finetune.module import FinetuneModule, checkpoint_meta

    return Stage("finetune", FinetuneConfig, make_data=lambda c: FinetuneData(c.data, c.trainer.seed),
                 make_module=lambda c, data, gpu: FinetuneModule(c, data.vocabulary, channels_last=gpu),
                 checkpoint_meta=checkpoint_meta, monitor="val_exprate", mode="max", validation_record=exprate_record,
                 panels=PANELS, finish=finish, initialize=initialize)


def exprate_record(pl_module) -> dict:
    """finetune's validation record: ExpRate and the number of images."""
    return {"val_exprate": round(pl_module.val_exprate, 4), "val_loss": round(pl_module.val_loss, 4),
            "val_n": pl_module.val_n}


def finetune(args: argparse.Namespace) -> int:
    """The command; reads args.preset, config, overrides, out, time_budget, resume, init, label_fraction, devices,
    nodes, accelerator, quiet. Writes RUN_DIR/model.safetensors (+ model.json)."""
    return run_command(args, stage(), time.monotonic())


def finish(run: Run) -> Path:
    c = run.checkpoints
    print(f"best validation ExpRate {c.best:.2f}% (EMA, greedy, {c.val_n} held-out images) "
          f"at step {c.best_step}; {run.run_dir}/best.ckpt, last.ckpt, log.jsonl, curves.png")
    return export(run)


def initialize(module, path: str | None) -> None:
    """Loads a hand-off file (or a whole model) into the module's model and its EMA; UserError if it does not fit."""
    if path:
        load_init(module.model, path)
        module.ema.module.load_state_dict(module.model.state_dict())


def export(run: Run) -> Path:
    """Writes the best checkpoint's EMA weights as RUN_DIR/model.safetensors (+ .json) with a manifest."""
    from maskmatch.finetune.module import checkpoint_meta, ema_model
    from maskmatch.weights import save_weights

    checkpoint = run.best_checkpoint()
    manifest = {
        "metrics": {"validation": {"exprate": round(run.checkpoints.best, 4), "decoding": "greedy",
                                   "images": "held-out slice of the training split"}},
        **manifest_training(run, checkpoint_meta(checkpoint)["config"]),
    }
    path = run.run_dir / "model.safetensors"
    save_weights(path, ema_model(checkpoint), manifest, **run.preprocessing())
    print(f"wrote {path} and its manifest")
    return path


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("finetune", help="stage 3: train the recognizer on labelled images "
                                                  "(alone: the supervised baseline)")
    add_run_options(parser, PRESETS, renamed=RENAMED, sections="model, data, optim, trainer",
                    example="--set data.root=out/crohme --set optim.lr=3.0e-4",
                    outputs="checkpoints, log, curves, weights")
    parser.add_argument("--init", metavar="WEIGHTS", help="start from these weights, e.g. a pretrain run's "
                        "encoder.safetensors or an attend run's attend.safetensors (config key init)")
    parser.add_argument("--label-fraction", type=float, metavar="F",
                        help="train on a fixed random share F of the labelled images (data.label_fraction)")
    parser.set_defaults(run=finetune)
