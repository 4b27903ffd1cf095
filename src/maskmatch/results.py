"""`maskmatch results`: the test-set tables of `results/`, measured by this command, never typed.

For one model it evaluates CROHME 2014, 2016 and 2019 greedy and with beam search, reads the training
run's logs (minutes and images per second per stage, curves), and writes:

- results/scores.json: {split: {greedy: scores, beam: scores}} as `maskmatch evaluate --json` writes them;
- results/training.json: per stage, the device, minutes, steps and images/s over its training (`wall_rate`),
  from RUN_DIR's logs;
- results/curves-<stage>.png: each stage's training curves;
- results/README.md: the table beside the published figures, and the command that made it.

With --ship the model and its manifest, with the test scores added, are copied into the package as the
weights `Recognizer.load()` uses by default, and added to the training history (history.py).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
from importlib import resources
from pathlib import Path

from maskmatch import history
from maskmatch.cli_args import positive_int
from maskmatch.errors import UserError
from maskmatch.history import cpu_hours
from maskmatch.inference_commands import evaluate_split, format_table, model_data

SPLITS = ("2014", "2016", "2019")
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"  # where --readme writes
STAGES = ("pretrain", "attend", "finetune")  # the sub-folders `maskmatch train` writes, in order
# ExpRate (%) on CROHME 2014 / 2016 / 2019 as published (each paper's own table, beam search, no extra data).
PUBLISHED = {
    "CoMER (Zhao & Gao, ECCV 2022)": (59.33, 59.81, 62.97),
    "PosFormer (Guan et al., ECCV 2024)": (62.68, 61.03, 64.97),
    "Mask CoMER (2025)": (64.56, 63.03, 65.22),
}


def stage_folders(run_dir: Path) -> dict[str, Path]:
    """{stage: folder with log.jsonl}: a `maskmatch train` run has one sub-folder per stage; a single-stage
    run (finetune, pretrain, attend) is its own folder, named by its config's stage."""
    found = {s: run_dir / s for s in STAGES if (run_dir / s / "log.jsonl").is_file()}
    if not found and (run_dir / "log.jsonl").is_file():
        found = {"finetune": run_dir}
    return found


def training_summary(run_dir: Path, manifest: dict) -> dict:
    """Per stage: minutes, steps and images/s over its training (`wall_rate`) from its log.jsonl; the device
    from the manifest."""
    from maskmatch.engine.callbacks import read_log

    summary = {}
    for stage, folder in stage_folders(run_dir).items():
        records = read_log(folder / "log.jsonl")
        rate = wall_rate(records)
        steps = max((r["step"] for r in records if "step" in r), default=0)
        seconds = max((r["elapsed_s"] for r in records if "elapsed_s" in r), default=0.0)
        summary[stage] = {"minutes": round(seconds / 60, 1), "steps": steps,
                          "images_per_s": None if rate is None else round(rate, 1)}
    training = manifest.get("training") or {}
    return {"device": training.get("device", "unknown"), "stages": summary}


def wall_rate(records: list[dict]) -> float | None:
    """Training images per second of wall time, data loading and checkpoints included, validation not: each
    logged window's images/s (the images since the record before it, or since the validation before it) times
    its length, over the windows' total length: the rate the CPU recipe's issue asks for, rather than the median
    window's (on 25-step windows the two agree within 1%: 33.1 against 33.4 for the run of training history
    #18)."""
    images = seconds = last = 0.0
    for record in records:
        if "elapsed_s" not in record:
            continue
        if "images_per_s" in record:
            span = record["elapsed_s"] - last
            images, seconds = images + record["images_per_s"] * span, seconds + span
        last = record["elapsed_s"]
    return images / seconds if seconds > 0 else None


def markdown(scores: dict, training: dict, command: str, manifest: dict) -> str:
    """results/README.md: our test scores beside the published ones, and how they were made."""
    cells = lambda split, how: (f"{scores[split][how]['exprate']:.2f} / {scores[split][how]['le1']:.2f} / "  # noqa: E731
                                f"{scores[split][how]['le2']:.2f}" if split in scores else "-")
    params = manifest.get("weights", {}).get("parameters", 0) / 1e6
    lines = ["# Results", "", f"Made by `{command}`; do not edit by hand.", "",
             f"Model: {_kind(manifest)}{params:.2f} M parameters, trained on {training['device']}; "
             f"validation ExpRate {manifest.get('metrics', {}).get('validation', {}).get('exprate', '?')}% "
             "(held-out slice of train, greedy).", "",
             "ExpRate / at most 1 error / at most 2 errors (%), token level:", "",
             "| decoding | " + " | ".join(f"CROHME {s} (n)" for s in SPLITS) + " |",
             "|---|" + "---|" * len(SPLITS)]
    for how in ("greedy", "beam"):
        name = next((scores[s][how]["decoding"] for s in SPLITS if s in scores), how)
        lines.append(f"| {name} | " + " | ".join(f"{cells(s, how)} ({scores[s][how]['n']})" if s in scores
                                                  else "-" for s in SPLITS) + " |")
    timed = [s for s in SPLITS if all("seconds" in scores.get(s, {}).get(how, {}) for how in ("greedy", "beam"))]
    if timed:
        lines += ["", "Time to decode each whole split on the machine that ran this command, greedy / beam (s): " + ", ".join(
            f"{s} {scores[s]['greedy']['seconds']:.1f} / {scores[s]['beam']['seconds']:.1f}" for s in timed) + "."]
    lines += ["", "Published ExpRate (%), beam search, for comparison:", "",
              "| system | " + " | ".join(f"CROHME {s}" for s in SPLITS) + " |", "|---|" + "---|" * len(SPLITS)]
    lines += [f"| {name} | " + " | ".join(f"{v:.2f}" for v in values) + " |" for name, values in PUBLISHED.items()]
    counts = ", ".join(f"{s} {next(iter(scores[s].values()))['n']}" for s in SPLITS if s in scores)
    lines += ["", f"Protocol differences: our test sets count {counts} expressions (`maskmatch data build` skips "
              "InkML files whose ground truth cannot be read: three in 2014, where papers count 986); predictions "
              "and references are compared as canonical token sequences after the same LaTeX normalizer; the "
              "published systems train on the same CROHME training set, with their own preprocessing and "
              "augmentation, for many GPU hours."]
    lines += ["", "Training (from the run's log.jsonl):", "",
              "| stage | minutes | CPU-hours | steps | images/s (wall time) |", "|---|---|---|---|---|"]
    lines += [f"| {stage} | {s['minutes']} | {cpu_hours(training['device'], s['minutes'])} | {s['steps']} "
              f"| {s['images_per_s']} |" for stage, s in training["stages"].items()]
    return "\n".join(lines) + "\n"


def _kind(manifest: dict) -> str:
    members = manifest.get("ensemble")
    return f"an ensemble of {len(members)} models decoded as one (model/ensemble.py), " if members else ""


def readme_section(path: Path) -> tuple[str, int, int]:
    """(text, start, end) of README_START ... README_END in `path`; a UserError if there is none."""
    try:
        text = path.read_text("utf-8")
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({e.strerror})") from None
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise UserError(f"{path}: no {README_START} ... {README_END} section to write the table into")
    return text, start + len(README_START), end


def update_readme(path: Path, table: str) -> None:
    """Replaces the text between README_START and README_END in `path` with `table`."""
    text, start, end = readme_section(path)
    path.write_text(text[:start] + "\n" + table + text[end:], "utf-8")


def ship(model: Path, scores: dict, command: str, assets: Path | None = None) -> Path:
    """Copies the model into folder `assets` (default: the package's) as what `Recognizer.load()` loads by default,
    with the test scores and this command added to its manifest: weights as model.safetensors (+ .json), an
    ensemble file as ensemble.json with its members (model.safetensors, model-2.safetensors, ...). What an earlier
    ship left there and this one does not replace is removed. Returns the shipped weights or ensemble file."""
    from maskmatch.ensemble_file import RESERVED, is_ensemble_file, make_ensemble, read_ensemble, remove_members
    from maskmatch.recognizer import SHIPPED
    from maskmatch.weights import read_manifest, write_manifest

    assets = assets or Path(str(resources.files("maskmatch").joinpath("assets")))
    test = {split: {how: {k: s[k] for k in ("n", "exprate", "le1", "le2", "decoding")} for how, s in by.items()}
            for split, by in scores.items()}
    if is_ensemble_file(model):
        members, record = read_ensemble(model)
        extra = {k: v for k, v in record.items() if k not in RESERVED}
        extra.update(metrics={**(record.get("metrics") or {}), "test": test}, results_command=command)
        return make_ensemble(members, assets, extra)
    manifest = read_manifest(model)
    manifest.setdefault("metrics", {})["test"] = test
    manifest["results_command"] = command
    shipped = assets / SHIPPED
    assets.mkdir(parents=True, exist_ok=True)
    if not shipped.exists() or not shipped.samefile(model):
        shutil.copyfile(model, shipped)
    write_manifest(shipped, manifest)
    remove_members(assets, 1)
    return shipped


def _results(args: argparse.Namespace) -> int:
    from maskmatch.ensemble_file import is_ensemble_file, read_ensemble
    from maskmatch.recognizer import Recognizer
    from maskmatch.weights import read_manifest

    args.data = args.data or model_data(args.model)
    model, data, out = Path(args.model), Path(args.data), Path(args.out)
    folders = {s: data / s for s in args.splits}
    for folder in folders.values():
        if not (folder / "caption.txt").is_file():
            raise UserError(f"{folder}: not an offline split (no caption.txt); build it with `maskmatch data build`")
    if args.readme:
        readme_section(Path(args.readme))  # before the long evaluation
    try:
        rec = Recognizer.load(model, args.device)
    except ValueError as e:
        raise UserError(str(e)) from None
    run_dir = Path(args.run_dir) if args.run_dir else model.parent
    if not stage_folders(run_dir):
        raise UserError(f"{run_dir}: no training log (log.jsonl) there; give the run folder with --run")
    command = _command_line(args)
    scores = {}
    for split, folder in folders.items():
        scores[split] = {how: evaluate_split(rec, folder, beam, args.batch_size)[0]
                         for how, beam in (("greedy", 1), ("beam", args.beam))}
        print(format_table({f"{split} {how}": s for how, s in scores[split].items()}), flush=True)
    training = training_summary(run_dir, rec.manifest)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scores.json").write_text(json.dumps(scores, indent=1) + "\n", "utf-8")
    (out / "training.json").write_text(json.dumps(training, indent=1) + "\n", "utf-8")
    for stage, folder in stage_folders(run_dir).items():
        if (folder / "curves.png").is_file():
            shutil.copyfile(folder / "curves.png", out / f"curves-{stage}.png")
    table = markdown(scores, training, command, rec.manifest)
    (out / "README.md").write_text(table, "utf-8")
    print(f"wrote {out}/README.md, scores.json, training.json")
    if args.readme:
        update_readme(Path(args.readme), table.split("\n", 2)[2])  # less the "# Results" heading
        print(f"updated the results section of {args.readme}")
    if args.ship:
        shipped = ship(model, scores, command)
        print(f"shipped {shipped}")
        if is_ensemble_file(shipped):
            members, record = read_ensemble(shipped)
            entries = history.add_ensemble(out / "history.json", record, [read_manifest(m) for m in members])
        else:
            entries = history.add(out / "history.json", read_manifest(shipped))
        history.write(out, entries, f"maskmatch history --out {out}")
        print(f"added it to {out}/history.json, training-history.md and .png")
    return 0


def _command_line(args: argparse.Namespace) -> str:
    """The command as a user would type it again (from the parsed arguments, so in-process calls get it right)."""
    words = ["maskmatch", "results", "--model", args.model, "--data", args.data, "--out", args.out]
    words += ["--run", args.run_dir] if args.run_dir else []
    words += ["--splits", *args.splits] if list(args.splits) != list(SPLITS) else []
    words += ["--beam", str(args.beam)] if args.beam != 10 else []
    words += ["--readme", args.readme] if args.readme else []
    return shlex.join(words + (["--ship"] if args.ship else []))


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("results", help="test-set tables for results/: 2014, 2016, 2019, greedy and beam")
    p.add_argument("--model", required=True, metavar="PATH",
                   help="weights (.safetensors with its .json manifest), or an ensemble file (maskmatch ensemble)")
    p.add_argument("--data", metavar="DIR", help="built CROHME (default: the data the model trained on, as its "
                   "manifest names it)")
    p.add_argument("--run", dest="run_dir", metavar="RUN_DIR", help="the training run (default: the model's folder)")
    p.add_argument("--out", default="results", metavar="DIR", help="where to write (default results)")
    p.add_argument("--splits", nargs="+", default=list(SPLITS), metavar="SPLIT", help="default 2014 2016 2019")
    p.add_argument("--beam", type=positive_int, default=10, metavar="N", help="beam size (default 10)")
    p.add_argument("--batch-size", type=positive_int, default=16, metavar="N", help="default 16")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda (default: cuda if available)")
    p.add_argument("--readme", metavar="FILE", help=f"also write the table into FILE between {README_START} and "
                   f"{README_END}")
    p.add_argument("--ship", action="store_true", help="copy the model into the package as the shipped weights")
    p.set_defaults(run=_results)
