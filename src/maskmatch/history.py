"""`maskmatch history`: the cumulative record of the runs' models, run after run, from their manifests.

results/history.json holds one entry per run's model (its sha256, what it started from, its run's minutes
and CPU-hours, validation and test ExpRate, whether it was shipped), in the order they were made; `results
--ship` adds the model it ships, `maskmatch history MANIFEST...` adds others (`--not-shipped`: the models of
runs that did not beat the shipped model on validation, so that the record shows every run). From it the command writes
results/training-history.md and results/training-history.png (ExpRate against cumulative CPU-hours).
An entry's CPU-hours add up along its chain of starting models. A shipped ensemble (ensemble_file.py) is an entry
of its own, after its members' entries; its CPU-hours are those of all its members' chains, each run once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path

from maskmatch.errors import UserError

SHIPPED_WEIGHTS = "assets/model.safetensors"  # how a continuation's --init names the weights shipped at its start


def cpu_hours(device: str, minutes: float) -> str:
    """Core-hours of a CPU run from the manifest's device words ("CPU (2 threads)"); "-" for other devices."""
    found = re.fullmatch(r"(?:(\d+) x )?CPU \((\d+) threads?\)", device)
    if not found:
        return "-"
    return f"{int(found[1] or 1) * int(found[2]) * minutes / 60:.2f}"


def entry(manifest: dict, shipped: bool = True) -> dict:
    """One run's record, from its model's manifest (`results --ship` has added a shipped one's test scores)."""
    training, metrics = manifest.get("training") or {}, manifest.get("metrics") or {}
    init = training.get("init") or {}
    device, minutes = training.get("device", "unknown"), float(training.get("minutes", 0.0))
    hours = cpu_hours(device, minutes)
    return {
        "sha256": manifest["weights"]["sha256"],
        "init": init.get("file") or (training.get("config") or {}).get("init"),
        "init_sha256": init.get("sha256"),
        "command": _command(manifest),
        "device": device, "minutes": minutes, "cpu_hours": None if hours == "-" else float(hours),
        "validation": (metrics.get("validation") or {}).get("exprate"),
        "test": {split: {how: s["exprate"] for how, s in by.items()} for split, by in (metrics.get("test") or {}).items()},
        "shipped": shipped,
    }


def _command(manifest: dict) -> str:
    """The command that made the weights: a run's, or for an average of its checkpoints (`maskmatch average`),
    that average's, of the run's command."""
    command, averaged = manifest.get("command", ""), (manifest.get("training") or {}).get("averaged_command")
    return f"{averaged}, of the checkpoints of {command}" if averaged else command


def ensemble_entry(record: dict, members: list[dict]) -> dict:
    """A shipped ensemble's record, from its ensemble file (`results --ship` has added the test scores) and its
    members' manifests; its id is the sha256 of its members' sha256s."""
    shas = [m["weights"]["sha256"] for m in members]
    metrics = record.get("metrics") or {}
    return {
        "sha256": hashlib.sha256(" ".join(shas).encode()).hexdigest(), "members": shas,
        "init": None, "init_sha256": None, "command": record.get("command", ""),
        "device": "-", "minutes": 0.0, "cpu_hours": 0.0,
        "validation": (metrics.get("validation") or {}).get("exprate"),
        "test": {split: {how: s["exprate"] for how, s in by.items()} for split, by in (metrics.get("test") or {}).items()},
        "shipped": True,
    }


def _index(entries: list[dict], sha: str, before: int) -> int | None:
    return next((j for j in range(before) if entries[j]["sha256"] == sha), None)


def parent(entries: list[dict], i: int) -> int | None:
    """The index of the entry that entry i started from: by its init weights' sha256, or, for a run that
    recorded only the path of the shipped weights it continued, the model shipped before it (an ensemble's
    first member, which is what the package ships as its weights)."""
    e = entries[i]
    if e["init_sha256"]:
        return _index(entries, e["init_sha256"], i)
    if e["init"] and str(e["init"]).replace("\\", "/").endswith(SHIPPED_WEIGHTS):
        j = next((j for j in range(i - 1, -1, -1) if entries[j].get("shipped", True)), None)
        return _index(entries, entries[j]["members"][0], j) if j is not None and entries[j].get("members") else j
    return None


def sources(entries: list[dict], i: int) -> set[int]:
    """Entry i and every entry its model was made from: its chain of starting models, or its members' chains."""
    starts = ([_index(entries, sha, i) for sha in entries[i]["members"]] if entries[i].get("members")
              else [parent(entries, i)])
    return {i}.union(*(sources(entries, j) for j in starts if j is not None))


def cumulative_hours(entries: list[dict]) -> list[float | None]:
    out: list[float | None] = []
    for i in range(len(entries)):
        hours = [entries[j]["cpu_hours"] for j in sources(entries, i)]
        out.append(None if None in hours else round(sum(hours), 2))
    return out


def add(history: Path, manifest: dict, shipped: bool = True) -> list[dict]:
    """Adds (or replaces, by sha256) the manifest's entry in the history file; returns all entries."""
    return _add(history, _read(history), [entry(manifest, shipped)])


def add_ensemble(history: Path, record: dict, members: list[dict]) -> list[dict]:
    """Adds a shipped ensemble's entry, after those of its members that the history lacks (not shipped alone)."""
    entries = _read(history)
    known = {e["sha256"] for e in entries}
    new = [entry(m, shipped=False) for m in members if m["weights"]["sha256"] not in known]
    return _add(history, entries, new + [ensemble_entry(record, members)])


def _read(history: Path) -> list[dict]:
    return json.loads(history.read_text("utf-8")) if history.is_file() else []


def _add(history: Path, entries: list[dict], new: list[dict]) -> list[dict]:
    """Entries replace those of the same sha256 where they stand (an ensemble's row must stay after its members'),
    or are appended."""
    at = {e["sha256"]: i for i, e in enumerate(entries)}
    for e in new:
        if e["sha256"] in at:
            entries[at[e["sha256"]]] = e
        else:
            entries.append(e)
    history.parent.mkdir(parents=True, exist_ok=True)
    history.write_text(json.dumps(entries, indent=1) + "\n", "utf-8")
    return entries


def markdown(entries: list[dict], command: str) -> str:
    hours = cumulative_hours(entries)
    cell = lambda e, split, how: f"{e['test'][split][how]:.2f}" if how in e["test"].get(split, {}) else "-"  # noqa: E731
    lines = ["# Training history", "", f"Written by `{command}` from the models' manifests "
             "(results/history.json); do not edit by hand.", "",
             "Each row is a run's model, in order: shipped, or kept out (another run's model was shipped instead, "
             "or it did not beat the shipped one on validation; its CPU-hours then count for no later model unless it "
             "joins an ensemble), or an "
             "ensemble of earlier rows' models, decoded as one (its CPU-hours: its members' chains). "
             "Validation: the run's own, EMA greedy on the held-out slice (an ensemble's: `maskmatch ensemble`'s, "
             "greedy with the grammar, as `maskmatch validate`). Test ExpRate (%) greedy / beam 10.", "",
             "| # | model | shipped | started from | minutes | device | CPU-hours so far | validation | 2014 | 2016 "
             "| 2019 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, (e, h) in enumerate(zip(entries, hours)):
        tests = " | ".join(f"{cell(e, s, 'greedy')} / {cell(e, s, 'beam')}" for s in ("2014", "2016", "2019"))
        val = f"{e['validation']:.2f}" if e["validation"] is not None else "-"
        minutes = "-" if e.get("members") else f"{e['minutes']:.1f}"
        lines.append(f"| {i + 1} | {e['sha256'][:8]} | {'yes' if e.get('shipped', True) else 'no'} | "
                     f"{_started_from(entries, i)} | {minutes} | {e['device']} | {h if h is not None else '-'} "
                     f"| {val} | {tests} |")
    lines += ["", "Commands, in order:", ""] + [f"{i + 1}. `{e['command']}`" for i, e in enumerate(entries)]
    return "\n".join(lines) + "\n"


def _started_from(entries: list[dict], i: int) -> str:
    e = entries[i]
    if e.get("members"):
        found = [_index(entries, sha, i) for sha in e["members"]]
        return "ensemble of " + " + ".join(f"#{j + 1}" if j is not None else sha[:8] for j, sha in zip(found, e["members"]))
    p = parent(entries, i)
    return f"#{p + 1} ({entries[p]['sha256'][:8]})" if p is not None else (f"`{e['init']}`" if e["init"] else "random")


def plot(entries: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = cumulative_hours(entries)
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, value in (("validation (greedy)", lambda e: e["validation"]),
                         ("2014 beam", lambda e: e["test"].get("2014", {}).get("beam")),
                         ("2014 greedy", lambda e: e["test"].get("2014", {}).get("greedy"))):
        points = [(h, value(e)) for e, h in zip(entries, hours) if h is not None and value(e) is not None]
        if points:
            ax.plot(*zip(*points), marker="o", label=label)
    ax.set_xlabel("cumulative CPU-hours")
    ax.set_ylabel("ExpRate (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(out: Path, entries: list[dict], command: str) -> None:
    (out / "training-history.md").write_text(markdown(entries, command), "utf-8")
    plot(entries, out / "training-history.png")


def _history(args: argparse.Namespace) -> int:
    from maskmatch.weights import read_manifest

    out = Path(args.out)
    history = out / "history.json"
    entries = _read(history)
    for path in args.manifests:
        try:
            entries = add(history, read_manifest(Path(path)), shipped=not args.not_shipped)
        except ValueError as e:
            raise UserError(str(e)) from None
    if not entries:
        raise UserError(f"{history}: no history yet; name a shipped model's manifest")
    write(out, entries, f"maskmatch history --out {args.out}")  # the record, whatever was added to it
    print(f"wrote {out}/training-history.md, training-history.png ({len(entries)} models)")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("history", help="results/training-history.md: every run's model, from the manifests")
    p.add_argument("manifests", nargs="*", metavar="WEIGHTS",
                   help="weights (.safetensors, its .json manifest beside it) to add, in the order they were shipped")
    p.add_argument("--out", default="results", metavar="DIR", help="where history.json is kept (default results)")
    p.add_argument("--not-shipped", action="store_true",
                   help="the models given were not shipped (they did not beat the shipped one on validation)")
    p.set_defaults(run=_history)
