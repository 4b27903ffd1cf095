"""The report of `maskmatch ablation`'s finished arms: each measured (its stages' minutes, CPU-hours, held-out and
test ExpRate, the validation curve), the table (OUT/ablation.md) and the curves (ablation.png,
label-efficiency.png); and the arms' run names, ARM-labelsPP-seedS."""

from __future__ import annotations

from pathlib import Path

from maskmatch.history import cpu_hours
from maskmatch.inference_commands import evaluate_split
from maskmatch.stages import read_state
from maskmatch.validation import held_out_exprate


def run_name(arm: str, labels: float, seed: int) -> str:
    return f"{arm}-labels{round(100 * labels):03d}-seed{seed}"


def parse_name(name: str) -> tuple[str, float, int]:
    arm, labels, seed = name.rsplit("-", 2)
    return arm, float(labels.removeprefix("labels")), int(seed.removeprefix("seed"))


def measure(folder: Path, data: Path, tests: list[str]) -> dict:
    """One finished arm: its stages' minutes and CPU-hours, held-out and test ExpRate (greedy, with the grammar)."""
    from maskmatch.engine.callbacks import read_log
    from maskmatch.recognizer import Recognizer

    rec = Recognizer.load(folder / "model.safetensors", "cpu")
    stages = rec.manifest["training"]["stages"]
    hours = [cpu_hours(s.get("device") or "", s.get("minutes") or 0.0) for s in stages.values()]
    validation, n = held_out_exprate(rec, data)
    scores = {}
    for split in tests:
        if (data / split / "caption.txt").is_file():
            scores[split] = evaluate_split(rec, data / split, 1, 16)[0]["exprate"]
    state = read_state(folder)
    log = folder / "finetune" / "log.jsonl"
    records = [r for r in read_log(log) if "event" not in r] if log.is_file() else []
    curve = validation_curve(records, state)
    return {"run": folder.name, "stages": {k: s.get("minutes") for k, s in stages.items()},
            "reused": state.get("reused", {}), "cpu_hours": None if "-" in hours else round(sum(map(float, hours)), 2),
            "val_exprate": validation, "val_n": n, "val_loss": min((c[2] for c in curve), default=None),
            "finetune_steps": max((r["step"] for r in records if "loss" in r), default=None),
            "tests": scores, "command": rec.manifest.get("command"), "curve": curve}


def validation_curve(records: list[dict], state: dict) -> list[tuple[float, float, float]]:
    """(minutes since the arm started, stage 3's validation ExpRate, its token loss) from stage 3's log records
    and the run's train.json (the minutes of the stages before it)."""
    before = sum(v for k, v in state.get("seconds", {}).items() if k != "finetune") / 60
    return [(before + r["elapsed_s"] / 60, r["val_exprate"], r["val_loss"]) for r in records
            if "val_exprate" in r and "val_loss" in r and "elapsed_s" in r]


def markdown(rows: list[dict], command: str, tests: list[str]) -> str:
    columns = ["arm", "labels", "seed", "stages (minutes)", "CPU-hours", "validation ExpRate (%)",
               "validation loss", "stage-3 steps", *(f"{t} greedy (%)" for t in tests)]
    head = "| " + " | ".join(columns) + " |"
    lines = ["# Does Mask & Match pay? The equal-budget ablation", "",
             f"Made by `{command}`; do not edit by hand. Each arm trained with `maskmatch train` for the same "
             "budget (its stages' minutes below), was selected on the held-out slice of train alone, and is "
             "decoded greedily with the grammar, as `maskmatch validate` does. Labels: the share of labelled "
             "training images stage 3 saw (stages 1 and 2 see every image). A stage marked * was trained once "
             "for every arm of its seed, by the first to run it, and taken over by the others (`maskmatch train "
             "--reuse`: the same config, minutes and seed); each arm counts its minutes and CPU-hours in full. "
             "Validation loss: stage 3's lowest token loss (label-smoothed cross-entropy, both directions) on "
             "the held-out slice, which separates arms while their ExpRate is still near zero.",
             "", head,
             "|" + "---|" * len(columns)]
    for r in rows:
        arm, labels, seed = parse_name(r["run"])
        stages = ", ".join(f"{k} {v:.1f}{'*' if k in r.get('reused', {}) else ''}"
                           for k, v in r["stages"].items() if v is not None)
        hours = "-" if r["cpu_hours"] is None else f"{r['cpu_hours']:.2f}"
        cells = [f"{r['tests'][t]:.2f}" if t in r["tests"] else "-" for t in tests]
        loss = "-" if r.get("val_loss") is None else f"{r['val_loss']:.3f}"
        lines.append("| " + " | ".join([arm, f"{labels:g}%", str(seed), stages, hours, f"{r['val_exprate']:.2f}",
                                        loss, str(r.get("finetune_steps") or "-"), *cells]) + " |")
    for key, what, digits in (("val_exprate", "validation ExpRate, points", 2), ("val_loss", "validation loss", 3)):
        spread = seed_spread(rows, key)
        if spread:
            lines += ["", f"Spread of arm A across seeds ({what}, max - min): " +
                      ", ".join(f"{labels:g}% labels: {s:.{digits}f}" for labels, s in spread.items()) +
                      "; arms closer than this are not separated by this budget."]
    lines += ["", "![validation ExpRate and loss against minutes](ablation.png)", ""]
    if len({parse_name(r["run"])[1] for r in rows}) > 1:
        lines += ["![ExpRate against the share of labels](label-efficiency.png)", ""]
    lines += ["Commands:", ""] + [f"- {r['run']}: `{r['command']}`" for r in rows] + [""]
    return "\n".join(lines)


def seed_spread(rows: list[dict], key: str = "val_exprate") -> dict[float, float]:
    """Arm A's spread of `key` across seeds, per label share (only where it has two seeds or more)."""
    by_labels: dict[float, list[float]] = {}
    for r in rows:
        arm, labels, _ = parse_name(r["run"])
        if arm == "A" and r.get(key) is not None:
            by_labels.setdefault(labels, []).append(r[key])
    return {k: max(v) - min(v) for k, v in by_labels.items() if len(v) > 1}


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for r in rows:
        if r["curve"]:
            minutes, exprate, loss = zip(*r["curve"])
            top.plot(minutes, exprate, marker=".", label=r["run"])
            bottom.plot(minutes, loss, marker=".", label=r["run"])
    bottom.set_xlabel("minutes since the arm started (stage 3's validations)")
    top.set_ylabel("validation ExpRate (%)")
    bottom.set_ylabel("validation loss")
    top.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "ablation.png", dpi=100)
    plt.close(fig)
    shares = sorted({parse_name(r["run"])[1] for r in rows})
    if len(shares) < 2:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in zip(axes, ("val_exprate", "val_loss"), ("validation ExpRate (%)", "validation loss")):
        for arm in dict.fromkeys(parse_name(r["run"])[0] for r in rows):  # in the order they were run
            points = sorted((parse_name(r["run"])[1], r[key]) for r in rows
                            if parse_name(r["run"])[0] == arm and parse_name(r["run"])[2] == 0 and r.get(key) is not None)
            if points:
                ax.plot(*zip(*points), marker="o", label=arm)
        ax.set_xscale("log")
        ax.set_xticks(shares, [f"{s:g}%" for s in shares])
        ax.set_xlabel("labelled training images used by stage 3")
        ax.set_ylabel(label)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "label-efficiency.png", dpi=100)
    plt.close(fig)
