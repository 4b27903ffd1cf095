"""The training commands' side of the engine: their shared options, their config from the arguments (a preset, a
file, or RUN_DIR/config.yaml on --resume, then --set, --time-budget, --init, --label-fraction), and the command
line that repeats them; `run_command` then hands the typed config to `runner.train`."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import time
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from maskmatch.cli_args import positive_int
from maskmatch.config import from_dict, override, to_dict
from maskmatch.engine.runner import Hardware, Stage, train
from maskmatch.errors import UserError

RESUME_MAY_CHANGE = frozenset({"data.root", "data.workers", "trainer.time_budget", "trainer.log_every_n_steps",
                               "trainer.checkpoint_every_n_steps", "trainer.keep_checkpoints"})  # not what is learned


def run_command(args: argparse.Namespace, stage: Stage, start: float | None = None) -> int:
    """A training command: its config from the arguments (`load_config`), then `train`."""
    start = time.monotonic() if start is None else start
    config = load_config(args, stage.config_class)
    train(stage, config, Path(args.out), command=command_line(args, stage.name), resume=args.resume,
          hardware=Hardware.from_args(args), quiet=args.quiet, start=start)
    return 0


def add_run_options(parser: argparse.ArgumentParser, presets: tuple[str, ...], sections: str, example: str,
                    outputs: str, renamed: dict[str, str] | None = None) -> None:
    """The options every training command takes: where the config comes from, --set, --out, --time-budget,
    --resume and the devices. `sections` and `example` word the help of --config and --set, `outputs` of --out;
    `renamed` maps a preset's old name to its name now (the old one is refused with the new one as a hint)."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", choices=presets, type=preset_name(renamed or {}),
                        help="a config shipped with maskmatch")
    source.add_argument("--config", metavar="FILE", help=f"a YAML config (sections {sections})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override one value, e.g. {example}")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help=f"run folder: {outputs}")
    parser.add_argument("--time-budget", type=float, metavar="SECONDS",
                        help="plan the run to end within this many seconds (trainer.time_budget)")
    parser.add_argument("--resume", action="store_true", help="continue RUN_DIR from last.ckpt")
    parser.add_argument("--devices", type=positive_int, default=1, help="devices per node (default 1; >1 uses DDP)")
    parser.add_argument("--nodes", type=positive_int, default=1, help="nodes (default 1; >1 uses DDP)")
    parser.add_argument("--accelerator", choices=("auto", "cpu", "gpu"), default="auto", help="default auto")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or model summary")


def preset_name(renamed: dict[str, str]):
    """An argparse type for --preset: a renamed preset's old name is an error that names the new one."""
    def parse(name: str) -> str:
        if name in renamed:
            raise argparse.ArgumentTypeError(f"preset {name!r} is now called {renamed[name]!r}")
        return name
    return parse


def load_config(args: argparse.Namespace, config_class, resume_may_change=RESUME_MAY_CHANGE):
    """The run's config: a preset, a file or (--resume) RUN_DIR/config.yaml, then --set, --time-budget and, where
    the command has them, --label-fraction and --init."""
    if args.resume:
        if args.preset or args.config:
            raise UserError("--resume continues RUN_DIR with its own config.yaml; drop --preset/--config")
        saved = saved_config(Path(args.out), config_class)
    elif args.preset:
        text = resources.files("maskmatch").joinpath("presets", f"{args.preset}.yaml").read_text("utf-8")
        saved = parse_config(text, config_class, args.preset)
    elif args.config:
        try:
            text = Path(args.config).read_text("utf-8")
        except OSError as e:
            raise UserError(f"{args.config}: cannot read config ({e.strerror})") from None
        saved = parse_config(text, config_class, args.config)
    else:
        raise UserError("give --preset, --config FILE or --resume")
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


def saved_config(run_dir: Path, config_class):
    """The config of the run in RUN_DIR (its config.yaml), which --resume continues; UserError if there is none."""
    source = run_dir / "config.yaml"
    if not (run_dir / "last.ckpt").is_file() or not source.is_file():
        raise UserError(f"{run_dir}: no run to resume (config.yaml and last.ckpt needed)")
    return parse_config(source.read_text("utf-8"), config_class, source)


def parse_config(text: str, config_class, where) -> Any:
    """YAML text -> a typed config (a shared model section expanded); `where` names the text in errors."""
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{where}: not valid YAML ({str(e).splitlines()[0]})") from None
    return from_dict(config_class, with_shared_model(values, where))


def with_shared_model(values: dict, where) -> dict:
    """A config's values with `model: {preset: NAME, KEY: VALUE...}` expanded: the model of presets/models/NAME.yaml
    (one per family, shared by its stages' presets), then the keys given beside `preset`."""
    model = values.get("model") if isinstance(values, dict) else None
    if not isinstance(model, dict) or "preset" not in model:
        return values
    rest = {k: v for k, v in model.items() if k != "preset"}
    name = str(model["preset"])
    models = resources.files("maskmatch").joinpath("presets", "models")
    shared = models.joinpath(f"{name}.yaml")
    if not shared.is_file():
        names = sorted(f.name.removesuffix(".yaml") for f in models.iterdir() if f.name.endswith(".yaml"))
        raise UserError(f"{where}: model.preset {name!r} is not a shared model ({', '.join(names)})")
    return {**values, "model": {**yaml.safe_load(shared.read_text("utf-8")), **rest}}


def _changed(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts of the same shape."""
    keys = []
    for key, value in a.items():
        if isinstance(value, dict) and isinstance(b[key], dict):
            keys += _changed(value, b[key], f"{prefix}{key}.")
        elif b[key] != value:
            keys.append(prefix + key)
    return keys


def command_line(args: argparse.Namespace, command: str) -> str:
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
    return shlex.join(words + Hardware.from_args(args).words())
