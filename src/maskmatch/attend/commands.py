"""`maskmatch attend`: stage 2, self-supervised attention with progressive masking (Mask & Match), started from
stage 1's encoder; hands the teacher's encoder and attention network to stage 3 as attend.safetensors."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from maskmatch.engine.options import add_run_options, run_command
from maskmatch.engine.runner import Run, Stage, load_init, manifest_training

PRESETS = ("attend-tiny", "attend-small", "attend-cpu", "attend-crohme")
# best.ckpt: the highest share of masked held-out images whose student embeddings find their own image's teacher
# embedding among the batch's. It rises only with embeddings that tell images apart despite the hiding, where
# val_loss also falls when the teacher's targets collapse or the regularizers are traded against the match.
MONITOR, MODE = "val_match", "max"
EXPORT = "attend.safetensors"
PANELS = ((("loss", "match", "prediction", "val_loss"), "loss (weighted total) and main terms"),
          (("diversity", "entropy"), "map regularizers (unweighted)"),
          (("mask_ratio", "guided"), "hidden ink share, guided share"), (("block",), "mask block (px)"),
          (("lr",), "learning rate"), (("val_match",), "held-out match top-1 (%)"))


def stage() -> Stage:
    from maskmatch.attend.config import AttendConfig
    from maskmatch.attend.module import AttendModule, checkpoint_meta
    from maskmatch.data.loading import FinetuneData

    return Stage("attend", AttendConfig, make_data=lambda c: FinetuneData(c.data, c.trainer.seed, labels=False),
                 make_module=lambda c, data, gpu: AttendModule(c, channels_last=gpu),
                 checkpoint_meta=checkpoint_meta, monitor=MONITOR, mode=MODE,
                 validation_record=lambda m: m.val_record(), panels=PANELS, finish=finish, initialize=initialize,
                 validate_first=True)


def attend(args: argparse.Namespace) -> int:
    """The command; reads args.preset, config, overrides, out, time_budget, resume, init, devices, nodes,
    accelerator, quiet. Writes RUN_DIR/attend.safetensors (+ attend.json)."""
    return run_command(args, stage(), time.monotonic())


def finish(run: Run) -> Path:
    records = run.validations("val_match")
    best, first = records.get(run.checkpoints.best_step, {}), records.get(0, {})
    nan = float("nan")
    print(f"best held-out match {run.checkpoints.best:.1f}% at step {run.checkpoints.best_step} (step 0: "
          f"{first.get('val_match', nan):.1f}%), held-out loss {best.get('val_loss', nan):.4f} (step 0: "
          f"{first.get('val_loss', nan):.4f}); {run.run_dir}/best.ckpt, last.ckpt, log.jsonl, curves.png")
    return export(run, best, first)


def initialize(module, path: str | None) -> None:
    """Loads stage 1's encoder (or a stage-2 hand-off) into the student and the teacher: non-strict, the missing
    keys asserted by weights.init_from_weights; UserError if the file does not fit."""
    if not path:
        print("note: no --init, so the encoder starts from random weights, not from stage 1's", flush=True)
        return
    student = module.student()
    student.config = module.config.model  # what init_from_weights checks the file's model config against
    load_init(student, path)
    module.teacher.module.load_state_dict(student.state_dict())  # the teacher starts as a copy


def export(run: Run, best: dict, first: dict) -> Path:
    """Writes best.ckpt's teacher as RUN_DIR/attend.safetensors (exactly `encoder.*` and `attention.*`) + attend.json."""
    from maskmatch.attend.module import checkpoint_meta, handoff_model
    from maskmatch.weights import save_module_weights

    checkpoint = run.best_checkpoint()
    values = lambda record: {k: v for k, v in record.items() if k.startswith("val_") and k != "val_s"}  # noqa: E731
    manifest = {
        "metrics": {"validation": {**values(best), "images": "held-out slice of the training split, masked at the "
                                   "schedule's end values", "monitor": f"{MONITOR} ({MODE})", "weights": "teacher"},
                    "step_0": values(first)},
        **manifest_training(run, checkpoint_meta(checkpoint)["config"]),
    }
    path = run.run_dir / EXPORT
    save_module_weights(path, handoff_model(checkpoint), ("encoder", "attention"), manifest, **run.preprocessing())
    print(f"wrote {path} and its manifest: start `maskmatch finetune --init {path} --set model.fusion=gate "
          f"--set model.attention_maps={run.config.model.attention_maps}` from it")
    return path


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("attend", help="stage 2: self-supervised attention maps with progressive masking "
                                                "(Mask & Match), from stage 1's encoder")
    add_run_options(parser, PRESETS, sections="model, masking, loss, data, optim, trainer",
                    example="--set data.root=out/crohme --set masking.ratio=[0.1,0.5]",
                    outputs=f"checkpoints, log, curves, {EXPORT}")
    parser.add_argument("--init", metavar="ENCODER", help="start the student and teacher from stage 1's encoder, "
                        "a pretrain run's encoder.safetensors (config key init)")
    parser.set_defaults(run=attend)
