"""`maskmatch recipes`: the equal-time comparison of finetune runs, from their own files, never typed.

Each RUN_DIR is a `maskmatch finetune` run (config.yaml, log.jsonl). The table gives, per run, its recipe (the
encoder, the render scale of its data, plain renders or pre-rendered variants, the weights it started from),
parameters, minutes, steps, its median training images/s, its last validation on the held-out slice
(token-level cross-entropy of the EMA model and greedy ExpRate) and its best validation ExpRate (the model a
run exports); the figure draws each run's training loss against minutes. Writes OUT/recipes.md and
OUT/recipes.png (or OUT/NAME.md and .png: `--name augmentation` for issue 12's table).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
from pathlib import Path

from maskmatch.config import load_yaml
from maskmatch.errors import UserError

SMOOTHING = 8  # log lines averaged in the figure
NAME, TITLE = "recipes", "Recipes at equal time"


def run_row(run_dir: Path) -> dict:
    """One run's recipe and outcome from config.yaml, log.jsonl and its data's cache/meta.json."""
    from maskmatch.engine.callbacks import read_log
    from maskmatch.finetune.config import FinetuneConfig
    from maskmatch.model import HMERModel

    if not (run_dir / "config.yaml").is_file() or not (run_dir / "log.jsonl").is_file():
        raise UserError(f"{run_dir}: not a finetune run (config.yaml and log.jsonl needed)")
    config = load_yaml(FinetuneConfig, run_dir / "config.yaml")
    records = read_log(run_dir / "log.jsonl")
    training = [r for r in records if "loss" in r and "event" not in r]
    validations = [r for r in records if "val_exprate" in r and "event" not in r]
    meta = Path(config.data.root) / config.data.train_split / "cache" / "meta.json"
    render = json.loads(meta.read_text("utf-8"))["render"] if meta.is_file() else {}
    m = config.model
    encoder = (f"resnet {list(m.stage_widths)} x {list(m.layers)}" if m.encoder == "resnet"
               else f"densenet g{m.growth_rate} x {list(m.layers)}")
    last = validations[-1] if validations else {}
    best = max((r["val_exprate"] for r in validations), default=float("nan"))
    return {"run": run_dir.name, "encoder": encoder, "symbol_size": render.get("symbol_size"),
            "data": training_data(config), "start": Path(config.init).name if config.init else "scratch",
            "best_val_exprate": best,
            "parameters": sum(p.numel() for p in HMERModel(m).parameters()),
            "minutes": max((r.get("elapsed_s", 0) for r in records), default=0) / 60,
            "steps": max((r["step"] for r in records if "step" in r), default=0),
            "images_per_s": statistics.median(r["images_per_s"] for r in training if "images_per_s" in r)
            if any("images_per_s" in r for r in training) else float("nan"),
            "val_loss": last.get("val_loss", float("nan")), "val_exprate": last.get("val_exprate", float("nan")),
            "curve": [(r["elapsed_s"] / 60, r["loss"]) for r in training if "elapsed_s" in r]}


def training_data(config) -> str:
    """What an epoch shows: the plain renders, or one of K pre-rendered variants (data/variants.py) per expression;
    and whether the sub-expressions (data/subexpr.py) come with them."""
    from maskmatch.data.variants import FOLDER

    parts = ", sub-expressions" if config.data.subexpressions else ""
    if not config.data.variants:
        return "plain" + parts
    meta = Path(config.data.root) / config.data.train_split / FOLDER / "meta.json"
    values = json.loads(meta.read_text("utf-8")) if meta.is_file() else {}
    swaps, photos, thick = values.get("swap_share"), values.get("photo_share"), values.get("thick_share")
    return (f"{config.data.variants} variants" + ("" if swaps is None else f", swaps {swaps:.0%}")
            + (f", photographed {photos:.0%}" if photos else "") + (f", thick pen {thick:.0%}" if thick else "")
            + parts)


def markdown(rows: list[dict], command: str, note: str | None, title: str = TITLE,
             figure: str = "recipes.png") -> str:
    lines = [f"# {title}", "",
             f"Made by `{command}`; do not edit by hand. Every run trained for the same wall-clock budget on this "
             "machine (see each run's minutes), validated on the held-out slice of train (whole expressions; "
             "token cross-entropy of the EMA weights, teacher-forced in both directions, and greedy ExpRate); "
             "sorted by validation loss.", *(["", note] if note else []), "",
             "| run | start | encoder | symbol px | training data | parameters | minutes | steps "
             "| training images/s (median) | validation loss | validation ExpRate (%) | best validation ExpRate (%) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["val_loss"]):
        scale = "?" if r["symbol_size"] is None else f"{r['symbol_size']:g}"  # its data folder is gone
        lines.append(f"| {r['run']} | {r['start']} | {r['encoder']} | {scale} | {r['data']} "
                     f"| {r['parameters'] / 1e6:.2f} M | {r['minutes']:.1f} | {r['steps']} | {r['images_per_s']:.1f} "
                     f"| {r['val_loss']:.3f} | {r['val_exprate']:.1f} | {r['best_val_exprate']:.1f} |")
    lines += ["", f"![training loss against minutes]({figure})", ""]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        if r["curve"]:
            minutes, loss = np.array(r["curve"]).T
            window = min(SMOOTHING, len(loss))
            smooth = np.convolve(loss, np.ones(window) / window, mode="valid")  # one batch's loss is noisy
            ax.plot(minutes[window - 1 :], smooth, label=r["run"])
    ax.set_xlabel("minutes")
    ax.set_ylabel(f"training loss (label-smoothed; mean of {SMOOTHING} log lines)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _recipes(args: argparse.Namespace) -> int:
    rows = [run_row(Path(d)) for d in args.run_dirs]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["maskmatch", "recipes", *args.run_dirs, "--out", args.out,
                          *(["--name", args.name] if args.name != NAME else []),
                          *(["--title", args.title] if args.title != TITLE else []),
                          *(["--note", args.note] if args.note else [])])
    text, figure = out / f"{args.name}.md", out / f"{args.name}.png"
    text.write_text(markdown(rows, command, args.note, args.title, figure.name), "utf-8")
    plot(rows, figure)
    print(f"wrote {text} and {figure}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("recipes", help="the equal-time table of finetune runs (results/recipes.md)",
                            description=__doc__.split("\n\n")[1])
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finetune runs trained for the same minutes")
    p.add_argument("--out", default="results", metavar="DIR", help="where to write (default results)")
    p.add_argument("--name", default=NAME, metavar="NAME", help=f"OUT/NAME.md and OUT/NAME.png (default {NAME})")
    p.add_argument("--title", default=TITLE, help=f"the table's heading (default {TITLE!r})")
    p.add_argument("--note", help="a sentence on how the runs were made (threads, side by side), printed as given")
    p.set_defaults(run=_recipes)
