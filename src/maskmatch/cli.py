"""The `maskmatch` command. Users' mistakes end as one line on stderr and exit code 2, never a traceback.

Each command lives in its own module with a `register(commands)` function. A command module imports at its
top all but torch, Lightning, numpy, PIL, tqdm, matplotlib, FastAPI, onnxruntime and the package's modules
that load them: those it imports inside the command, because `maskmatch --help` loads every command module.
Measured beside two training runs: --help takes 0.3 s so, 0.8 s with numpy and PIL at the top, 3.8 s with
torch there too.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from maskmatch.errors import UserError
from maskmatch.version import __version__

COMMAND_MODULES = [  # in the order `maskmatch --help` lists them
    "maskmatch.data.commands",  # data build, data sheet
    "maskmatch.pretrain.commands",  # pretrain: stage 1
    "maskmatch.attend.commands",  # attend: stage 2
    "maskmatch.finetune.commands",  # finetune: stage 3
    "maskmatch.pipeline",  # train: all three stages
    "maskmatch.ablation",  # ablation: does Mask & Match pay, at equal budget
    "maskmatch.inference_commands",  # recognize, evaluate
    "maskmatch.export",  # export --onnx
    "maskmatch.attention_command",  # attention: maps over an image
    "maskmatch.foreign_command",  # foreign: a test split drawn by someone else's pipeline
    "maskmatch.recipes",  # recipes: the equal-time table
    "maskmatch.results",  # results
    "maskmatch.history",  # history: every shipped model
    "maskmatch.validation",  # validate, average, ensemble, calibrate: on a model's held-out slice
    "maskmatch.serve.commands",  # serve, serve-load
    "maskmatch.benchmark",  # benchmark
    "maskmatch.train_benchmark",  # train-benchmark
]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskmatch", description="Handwritten mathematics to LaTeX.")
    parser.add_argument("--version", action="version", version=f"maskmatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.run(args)
    except UserError as e:
        print(f"maskmatch: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("maskmatch: interrupted", file=sys.stderr)
        return 130
