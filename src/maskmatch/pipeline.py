"""`maskmatch train`: stages 1, 2 and 3 from one config and one time budget.

The config holds one `model` section, shared by every stage, the `budget_split` and one section per
stage: that stage's own config less its model (`maskmatch pretrain`, `attend`, `finetune`). Each stage
runs as its own command would, in RUN_DIR/<stage>/, starting from the weights the one before exported:

    pretrain -> pretrain/encoder.safetensors -> attend -> attend/attend.safetensors -> finetune -> model.safetensors

With model.fusion none, stage 3 has no module for stage 2's attention network: it starts from the encoder
that stage 2 trained (attend/encoder.safetensors, cut from attend.safetensors).

A stage's time is its share of what is left when it starts, among itself and the stages after it, skipped
ones included: time a stage leaves unused, and a skipped stage's share, go to the stages after it (so a run
without stage 2 gives stage 1 the minutes a run with it does). `--resume` skips the stages that exported
their weights, resumes the one that has a last.ckpt, and starts the rest. `--reuse OTHER_RUN` takes over
the finished stages of another train run that this one would repeat exactly (same config but for the
fusion, which stages 1 and 2 do not use; same time budget; same starting weights): their folders are
copied and their minutes count as this run's, as if it had trained them (the ablation's arms share stage 1
and 2 so). RUN_DIR/model.safetensors is the final model in the shipped-weights
format, its manifest naming each stage's device, minutes and command.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import shutil
import time
from importlib import resources
from pathlib import Path

import yaml

from maskmatch.attend.commands import stage as attend_stage
from maskmatch.cli_args import positive_int
from maskmatch.config import from_dict, override, to_dict
from maskmatch.engine import options, runner
from maskmatch.errors import UserError
from maskmatch.finetune.commands import stage as finetune_stage
from maskmatch.pretrain.commands import stage as pretrain_stage
from maskmatch.stages import (EXPORTS, STAGES, STATE, BudgetSplit, read_state, stage_seconds, take_over,
                              write_state)

PRESETS = ("train-tiny", "train-small", "train-cpu", "train-crohme")
ENCODER_ONLY = "encoder.safetensors"  # beside attend.safetensors: its encoder alone (fusion none)
STAGE_OF = {"pretrain": pretrain_stage, "attend": attend_stage, "finetune": finetune_stage}  # name -> its Stage


def stage_classes() -> dict:
    from maskmatch.attend.config import AttendConfig
    from maskmatch.finetune.config import FinetuneConfig
    from maskmatch.pretrain.config import PretrainConfig

    return {"pretrain": PretrainConfig, "attend": AttendConfig, "finetune": FinetuneConfig}


def stage_configs(values: dict, overrides: list[str]) -> tuple[BudgetSplit, dict]:
    """(budget split, {stage: typed config}) from the train YAML's values and --set assignments.

    `--set model.KEY=V` changes every stage's model; `--set STAGE.KEY=V` one stage; `--set budget_split.S=V`."""
    values = options.with_shared_model(dict(values), "the train config")
    unknown = sorted(set(values) - {"model", "budget_split", *STAGES})
    if unknown:
        raise ValueError(f"unknown section {unknown[0]!r} (sections: model, budget_split, {', '.join(STAGES)})")
    model = values.get("model") or {}
    split = from_dict(BudgetSplit, values.get("budget_split") or {}, "budget_split")
    configs = {}
    for stage, cls in stage_classes().items():
        section = values.get(stage) or {}
        if "model" in section:
            raise ValueError(f"{stage}.model: the model is one section shared by all stages")
        configs[stage] = from_dict(cls, {"model": model, **section}, stage)
    for assignment in overrides:
        key = assignment.split("=", 1)[0]
        head, _, rest = key.partition(".")
        if head == "budget_split":
            split = override(split, [assignment[len("budget_split."):]])
        elif head == "model":
            configs = {s: override(c, [assignment]) for s, c in configs.items()}
        elif head in STAGES and rest:
            configs[head] = override(configs[head], [assignment[len(head) + 1:]])
        else:
            raise ValueError(f"--set {assignment}: keys start with model., budget_split. or one of {', '.join(STAGES)}")
    return split, configs


def preset_data(preset: str) -> str:
    """The built data a shipped train preset's fine-tuning stage reads (its data.root)."""
    values = yaml.safe_load(resources.files("maskmatch").joinpath("presets", f"{preset}.yaml").read_text("utf-8"))
    return stage_configs(values or {}, [])[1]["finetune"].data.root


def _load(args: argparse.Namespace, run_dir: Path) -> tuple[BudgetSplit, dict, dict]:
    """(split, configs, the train YAML's values as saved in RUN_DIR/train.yaml)."""
    if args.resume:
        if args.preset or args.config or args.overrides or args.data:
            raise UserError("--resume continues RUN_DIR with its own train.yaml; drop --preset/--config/--set/--data")
        source = run_dir / "train.yaml"
        if not source.is_file():
            raise UserError(f"{run_dir}: no train run to resume (train.yaml missing)")
    elif args.preset:
        source = resources.files("maskmatch").joinpath("presets", f"{args.preset}.yaml")
    elif args.config:
        source = Path(args.config)
    else:
        raise UserError("give --preset, --config FILE or --resume")
    try:
        values = yaml.safe_load(source.read_text("utf-8")) or {}
        data = [f"{stage}.data.root={args.data}" for stage in STAGES] if args.data else []
        split, configs = stage_configs(values, [] if args.resume else data + args.overrides)
    except OSError as e:
        raise UserError(f"{source}: cannot read config ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise UserError(f"{source}: not valid YAML ({str(e).splitlines()[0]})") from None
    except (TypeError, ValueError) as e:
        raise UserError(f"{source}: {e}") from None
    return split, configs, values


def _saved_values(split: BudgetSplit, configs: dict) -> dict:
    """The train YAML of this run, overrides applied: what --resume reads back."""
    sections = {stage: {k: v for k, v in to_dict(c).items() if k != "model"} for stage, c in configs.items()}
    return {"model": to_dict(configs["finetune"].model), "budget_split": dataclasses.asdict(split), **sections}


def _stages(args: argparse.Namespace, run_dir: Path) -> list[str]:
    """The stages this run has, fixed at its start (train.json keeps them for --resume)."""
    state = read_state(run_dir)
    if args.resume and "stages" in state:
        return state["stages"]
    return [s for s in STAGES if not (s == "pretrain" and args.skip_stage1 or s == "attend" and args.skip_stage2)]


def _train(args: argparse.Namespace) -> int:
    run_dir = Path(args.out)
    hardware = runner.Hardware.from_args(args)
    if not args.resume and run_dir.exists() and any(run_dir.iterdir()):
        raise UserError(f"{run_dir} is not empty: add --resume to continue its run, or choose another --out")
    split, configs, _ = _load(args, run_dir)
    if args.reuse and not (Path(args.reuse) / STATE).is_file():
        raise UserError(f"--reuse {args.reuse}: not a train run (no {STATE})")
    stages = _stages(args, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = read_state(run_dir) if args.resume else {}
    budget = args.time_budget if args.time_budget is not None else state.get("time_budget")
    state.update(stages=stages, time_budget=budget, command=state.get("command") or _command_line(args))
    if args.reuse:
        state["reuse"] = args.reuse  # --resume goes on taking over from it
    state.setdefault("seconds", {})
    write_state(run_dir, state)
    if not args.resume:
        (run_dir / "train.yaml").write_text(yaml.safe_dump(_saved_values(split, configs), sort_keys=False), "utf-8")
    previous = None  # the weights the next stage starts from
    for i, stage in enumerate(stages):
        folder, export = run_dir / stage, run_dir / stage / EXPORTS[stage]
        if export.is_file():
            print(f"train: {stage} already done ({export})", flush=True)
            previous = export
            continue
        if stage == "finetune" and previous is not None and previous.name == EXPORTS["attend"] \
                and configs["finetune"].model.fusion == "none":
            previous = encoder_only(previous)
        seconds = stage_seconds(budget, state, split, stage)
        resuming = (folder / "last.ckpt").is_file()
        other = state.get("reuse")
        if other and not resuming and take_over(Path(other), run_dir, stage, configs[stage], seconds, previous, state):
            previous = export
            continue
        if seconds is not None and seconds < 10:
            raise UserError(f"the time budget is spent before {stage} ({seconds:.0f} s for it); give a larger one")
        config, command = _stage_config(run_dir, stage, configs[stage], resuming, previous, seconds, hardware)
        print(f"train: stage {i + 1}/{len(stages)}: {command}", flush=True)
        start = time.monotonic()
        exported = runner.train(STAGE_OF[stage](), config, folder, command=command, resume=resuming,
                                hardware=hardware, quiet=args.quiet, start=start)
        state["seconds"][stage] = state["seconds"].get(stage, 0.0) + time.monotonic() - start
        write_state(run_dir, state)
        if exported is None or not export.is_file():
            raise UserError(f"{stage} ended without {export}; fix the cause and continue with --resume")
        previous = export
    final = _export(run_dir, stages, state)
    minutes = ", ".join(f"{s} {state['seconds'][s] / 60:.1f} min" for s in stages if s in state["seconds"])
    print(f"train: wrote {final} (+ .json): {minutes}")
    return 0


def _stage_config(run_dir: Path, stage: str, config, resuming: bool, previous: Path | None, seconds: float | None,
                  hardware: runner.Hardware) -> tuple[object, str]:
    """A stage's config (a resumed one: its own config.yaml) with its start weights and minutes, and the command
    that trains it alone, as its manifest records it (a fresh stage's config goes to RUN_DIR/STAGE.yaml for it)."""
    folder = run_dir / stage
    words = ["maskmatch", stage, "--out", str(folder)]
    if resuming:
        config, words = options.saved_config(folder, type(config)), words + ["--resume"]
    else:
        stage_yaml = run_dir / f"{stage}.yaml"
        stage_yaml.write_text(yaml.safe_dump(to_dict(config), sort_keys=False), "utf-8")
        words += ["--config", str(stage_yaml)] + (["--init", str(previous)] if previous else [])
        config = dataclasses.replace(config, init=str(previous)) if previous else config
    if seconds is not None:
        config = override(config, [f"trainer.time_budget={float(round(seconds))}"])
        words += ["--time-budget", f"{seconds:.0f}"]
    return config, shlex.join(words + hardware.words())


def encoder_only(attend_export: Path) -> Path:
    """Stage 2's hand-off less its attention network, for a stage 3 without fusion (model.fusion none): the
    encoder that stage 2 trained is what reaches it."""
    from maskmatch.weights import extract_modules

    target = attend_export.with_name(ENCODER_ONLY)
    if not target.is_file():
        try:
            extract_modules(attend_export, target, ["encoder"])
        except ValueError as e:
            raise UserError(str(e)) from None
    print(f"train: fusion none: stage 3 starts from stage 2's encoder alone ({target})", flush=True)
    return target


def _export(run_dir: Path, stages: list[str], state: dict) -> Path:
    """RUN_DIR/model.safetensors: stage 3's weights, their manifest telling every stage's part."""
    from maskmatch.weights import read_manifest, write_manifest

    manifests = {stage: read_manifest(run_dir / stage / EXPORTS[stage]) for stage in stages}
    parts = {}
    for stage, stage_manifest in manifests.items():
        training = stage_manifest.get("training", {})
        parts[stage] = {"device": training.get("device"), "minutes": training.get("minutes"),
                        "step": training.get("step"), "command": stage_manifest.get("command")}
    manifest = dict(manifests["finetune"])
    manifest["training"] = {**manifest.get("training", {}), "stage": "train", "stages": parts,
                            "minutes": round(sum(state["seconds"].values()) / 60, 2)}
    manifest["command"] = state["command"]
    target = run_dir / EXPORTS["finetune"]
    shutil.copyfile(run_dir / "finetune" / EXPORTS["finetune"], target)
    write_manifest(target, manifest)
    return target


def _command_line(args: argparse.Namespace) -> str:
    """The training commands' line (`runner.command_line`) and train's own options."""
    words = ["--data", args.data] if args.data else []
    words += ["--skip-stage1"] if args.skip_stage1 else []
    words += ["--skip-stage2"] if args.skip_stage2 else []
    words += ["--reuse", args.reuse] if args.reuse else []
    return shlex.join([*shlex.split(options.command_line(args, "train")), *words])


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("train", help="stages 1, 2 and 3 from one config and one time budget")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--preset", choices=PRESETS, help="a config shipped with maskmatch")
    source.add_argument("--config", metavar="FILE", help="a YAML config: model, budget_split, pretrain, attend, finetune")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="e.g. --set model.fusion=tokens --set finetune.optim.lr=3e-4 --set budget_split.attend=0.2")
    p.add_argument("--data", metavar="DIR", help="built data for every stage (sets STAGE.data.root)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder: one sub-folder per stage, model.safetensors")
    p.add_argument("--time-budget", type=float, metavar="SECONDS", help="for all stages, split by budget_split")
    p.add_argument("--resume", action="store_true", help="continue RUN_DIR: finished stages are skipped")
    p.add_argument("--reuse", metavar="OTHER_RUN",
                   help="take over OTHER_RUN's finished stages where this run would repeat them exactly (ablations)")
    p.add_argument("--skip-stage1", action="store_true", help="no self-supervised pretraining (ablation)")
    p.add_argument("--skip-stage2", action="store_true", help="no Mask & Match attention stage (ablation)")
    p.add_argument("--devices", type=positive_int, default=1, help="devices per node (default 1; >1 uses DDP)")
    p.add_argument("--nodes", type=positive_int, default=1, help="nodes (default 1; >1 uses DDP)")
    p.add_argument("--accelerator", choices=("auto", "cpu", "gpu"), default="auto", help="default auto")
    p.add_argument("--quiet", action="store_true", help="no progress bars or model summaries")
    p.set_defaults(run=_train)
