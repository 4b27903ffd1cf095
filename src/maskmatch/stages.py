"""The three stages as a `maskmatch train` run folder holds them: their names and hand-off files, the run's state
file, the budget split, and taking a finished stage over from another run (`--reuse`)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from maskmatch.config import to_dict
from maskmatch.engine.runner import weights_sha256

STAGES = ("pretrain", "attend", "finetune")
EXPORTS = {"pretrain": "encoder.safetensors", "attend": "attend.safetensors", "finetune": "model.safetensors"}
STATE = "train.json"  # the seconds each stage has spent, kept across sessions


@dataclass(frozen=True)
class BudgetSplit:
    pretrain: float = 0.25  # share of the time budget for stage 1 (assumed; the ablations decide)
    attend: float = 0.15  # share for stage 2 (assumed)
    finetune: float = 0.6  # share for stage 3: the supervised stage is what ExpRate needs most (assumed)

    def __post_init__(self):
        if min(self.pretrain, self.attend, self.finetune) < 0 or self.pretrain + self.attend + self.finetune <= 0:
            raise ValueError("budget_split shares must be non-negative, and not all zero")


def read_state(run_dir: Path) -> dict:
    """RUN_DIR/train.json: the run's stages, budget, command and seconds per stage ({} if none or unreadable)."""
    try:
        return json.loads((run_dir / STATE).read_text("utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def write_state(run_dir: Path, state: dict) -> None:
    """RUN_DIR/train.json, after every change: --resume and other runs' --reuse read it."""
    (run_dir / STATE).write_text(json.dumps(state, indent=1) + "\n", "utf-8")


def stage_seconds(budget: float | None, state: dict, split: BudgetSplit, stage: str) -> float | None:
    """The seconds a stage is planned: its share of what is left among itself and every stage after it (run or
    skipped, so a skipped stage's share goes to the stages after it); stage 3, the last, gets all that is left."""
    if budget is None:
        return None
    left = budget - sum(state["seconds"].values())
    shares = [getattr(split, s) for s in STAGES[STAGES.index(stage):]]
    return float(f"{left * shares[0] / sum(shares) if sum(shares) else left / len(shares):.0f}")


def take_over(other: Path, run_dir: Path, stage: str, config, seconds: float | None, previous: Path | None,
              state: dict) -> bool:
    """Copies OTHER's finished `stage` into RUN_DIR if this run would train it exactly so; False if not."""
    from maskmatch.weights import read_manifest  # imports torch: kept out of `maskmatch --help`

    export = other / stage / EXPORTS[stage]
    spent = read_state(other).get("seconds", {}).get(stage)
    try:
        theirs = read_manifest(export)["training"]
    except (ValueError, KeyError):
        return False
    mine = json.loads(json.dumps({**to_dict(config), "init": None}))  # as the manifest holds it: lists, not tuples
    mine["trainer"] = {**mine["trainer"], "time_budget": seconds}
    done = {**theirs.get("config", {}), "init": None}
    if stage != "finetune":  # stages 1 and 2 build no fusion module: a run differing only there repeats them
        mine["model"] = {**mine["model"], "fusion": None}
        done["model"] = {**done.get("model", {}), "fusion": None}
    mine_init = weights_sha256(str(previous)) if previous else None  # as the manifest records a run's start
    if spent is None or mine != done or mine_init != (theirs.get("init") or {}).get("sha256"):
        print(f"train: {stage} of {other} differs from this run's; training it here", flush=True)
        return False
    shutil.copytree(other / stage, run_dir / stage, dirs_exist_ok=True)
    if (other / f"{stage}.yaml").is_file():
        shutil.copyfile(other / f"{stage}.yaml", run_dir / f"{stage}.yaml")
    state["seconds"][stage] = spent
    state.setdefault("reused", {})[stage] = str(other)
    write_state(run_dir, state)
    print(f"train: {stage} taken over from {other} ({spent / 60:.1f} min, counted as this run's)", flush=True)
    return True


def stage_done(run_dir: Path, stage: str) -> bool:
    """Whether a train run has finished `stage` (its hand-off written and its minutes counted)."""
    return stage in read_state(run_dir).get("seconds", {}) and (run_dir / stage / EXPORTS[stage]).is_file()
