"""`maskmatch ablation`: does Mask & Match pay? Every arm trained by `maskmatch train` for the same minutes,
selected on the held-out slice only, then reported in OUT/ablation.md (issue 13).

Arms (each at every --labels fraction of the labelled images; stages 1 and 2 always see every image):
    A         stage 3 only (supervised)                       --skip-stage1 --skip-stage2, fusion none
    B         stage 1, then stage 3                           --skip-stage2, fusion none
    C-none    stages 1, 2, 3; stage 3 starts from stage 2's encoder alone (fusion none)
    C-gate    stages 1, 2, 3 with gate fusion
    C-tokens  stages 1, 2, 3 with token fusion
A skipped stage's minutes go to the stages after it (`maskmatch train`), so B's stage 1 is C's, and B gives
stage 3 the minutes C spends in stage 2. The arms of one seed train stages 1 and 2 once: the first arm to run
them is the donor, and the others take them over (`maskmatch train --reuse`) as they would have trained them,
counting their minutes and CPU-hours as their own. Each run goes to RUN_ROOT/ARM-labelsPP-seedS; a finished
run (its model.safetensors) is kept, a started one is resumed, so the ablation can span sessions.
`--parallel N` trains N arms at once, each on cores / N threads (side by side, as results/recipes.md's runs,
so they share the machine alike). The report decodes each arm's model greedily, as `maskmatch validate`
does, on its held-out slice and on the test splits found in --data.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from maskmatch.ablation_report import markdown, measure, plot, run_name
from maskmatch.cli_args import positive_float, positive_int
from maskmatch.errors import UserError
from maskmatch.pipeline import PRESETS, preset_data
from maskmatch.stages import STATE, stage_done

ARMS = {
    "A": (["--skip-stage1", "--skip-stage2"], "none"),
    "B": (["--skip-stage2"], "none"),
    "C-none": ([], "none"),
    "C-gate": ([], "gate"),
    "C-tokens": ([], "tokens"),
}
TESTS = ("2014", "2016", "2019")
POLL_S = 2.0  # how often the scheduler looks for finished arms and stages


@dataclass
class Job:
    arm: str
    labels: float
    seed: int
    folder: Path
    donor: Path | None = None  # the arm of this seed whose stages 1 (and 2) this one takes over
    waits_for: str | None = None  # the donor's last stage this arm takes over


def self_supervised(arm: str) -> list[str]:
    """The stages before stage 3 an arm runs."""
    flags = ARMS[arm][0]
    return [s for s, skip in (("pretrain", "--skip-stage1"), ("attend", "--skip-stage2")) if skip not in flags]


def plan_jobs(args: argparse.Namespace) -> list[Job]:
    """Every (labels, arm, seed) in order; per seed, the first arm running the most stages before stage 3 is the
    donor, listed first, and the other arms of that seed take over its stages 1 (and 2): the same config, time
    and seed would train them bit for bit alike (stages 1 and 2 see every image and use no fusion)."""
    root = Path(args.out)
    jobs = []
    for labels in args.labels:
        for arm in args.arms:
            seeds = args.a_seeds if arm == "A" and labels == args.labels[0] and args.a_seeds else args.seeds
            jobs += [Job(arm, labels, seed, root / run_name(arm, labels, seed)) for seed in range(seeds)]
    donors = {}
    for job in jobs:
        best = donors.get(job.seed)
        if len(self_supervised(job.arm)) > (len(self_supervised(best.arm)) if best else 0):
            donors[job.seed] = job
    for job in jobs:
        donor = donors.get(job.seed)
        if donor is not None and job is not donor and self_supervised(job.arm):
            job.donor, job.waits_for = donor.folder, self_supervised(job.arm)[-1]
    return [j for j in jobs if j in donors.values()] + [j for j in jobs if j not in donors.values()]


def train_argv(job: Job, args: argparse.Namespace) -> list[str]:
    """The `maskmatch train` arguments of one arm (a fresh run, or --resume of a started one)."""
    out = job.folder
    if (out / STATE).is_file():
        return ["train", "--out", str(out), "--resume", "--quiet"]
    flags, fusion = ARMS[job.arm]
    sets = [f"model.fusion={fusion}", f"finetune.data.label_fraction={job.labels}"]
    sets += [f"{stage}.trainer.seed={job.seed}" for stage in ("pretrain", "attend", "finetune")]
    reuse = ["--reuse", str(job.donor)] if job.donor else []
    return ["train", "--preset", args.preset, "--data", args.data, "--out", str(out), "--time-budget",
            f"{60 * args.budget:.0f}", "--quiet", *flags, *reuse,
            *[w for s in sets + args.overrides for w in ("--set", s)]]


def run_arms(args: argparse.Namespace) -> list[Path]:
    """Trains every job not yet finished, --parallel at a time, an arm starting once its donor has the stages it
    takes over (or has stopped) -> every job's run folder."""
    jobs = plan_jobs(args)
    pending = [j for j in jobs if not (j.folder / "model.safetensors").is_file()]
    threads = max(1, (os.cpu_count() or 1) // args.parallel)
    running: list[tuple[subprocess.Popen, Job]] = []
    failed = []

    def ready(job: Job) -> bool:
        active = {j.folder for j in pending} | {j.folder for _, j in running}
        return job.donor is None or job.donor not in active or stage_done(job.donor, job.waits_for)

    while pending or running:
        for process, job in list(running):
            if process.poll() is not None:
                running.remove((process, job))
                if process.returncode != 0:
                    failed.append(job.folder)
        while len(running) < args.parallel and (job := next((j for j in pending if ready(j)), None)):
            pending.remove(job)
            job.folder.parent.mkdir(parents=True, exist_ok=True)
            argv = train_argv(job, args)
            print(f"ablation: {job.folder.name}: maskmatch {shlex.join(argv)} ({threads} threads)", flush=True)
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
            with open(job.folder.parent / f"{job.folder.name}.log", "ab") as log:  # the child keeps its own copy
                running.append((subprocess.Popen([sys.executable, "-m", "maskmatch", *argv], stdout=log,
                                                 stderr=subprocess.STDOUT, env=env), job))
        if pending or running:
            time.sleep(POLL_S)
    if failed:
        raise UserError(f"{len(failed)} arm(s) failed, e.g. {failed[0]} (see {failed[0]}.log); rerun to resume them")
    return [j.folder for j in jobs]


def _ablation(args: argparse.Namespace) -> int:
    if args.preset not in PRESETS:
        raise UserError(f"--preset {args.preset!r}: one of {', '.join(PRESETS)}")
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        raise UserError(f"unknown arm {unknown[0]!r}; arms: {', '.join(ARMS)}")
    if not all(0 < x <= 1 for x in args.labels):
        raise UserError("--labels are shares of the labelled images, each in (0, 1]")
    args.data = args.data or preset_data(args.preset)
    data = Path(args.data)
    if not (data / "train" / "cache").is_dir():
        raise UserError(f"{data}: no built train split (maskmatch data build ... --out {data})")
    folders = run_arms(args)
    rows = [measure(f, data, args.tests) for f in folders]
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    command = "maskmatch " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["ablation"] else "maskmatch ablation"
    (out / "ablation.md").write_text(markdown(rows, command, args.tests), "utf-8")
    (out / "ablation.json").write_text(json.dumps(rows, indent=1) + "\n", "utf-8")
    plot(rows, out)
    print(f"wrote {out / 'ablation.md'}")
    return 0


def _shares(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected shares like 1,0.1, got {text!r}") from None


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("ablation", help="the equal-budget ablation of stages 1 and 2 (results/ablation.md)")
    p.add_argument("--budget", type=positive_float, required=True, metavar="MINUTES", help="minutes per arm")
    p.add_argument("--out", default="runs/ablation", metavar="RUN_ROOT", help="where the arms train (default runs/ablation)")
    p.add_argument("--arms", type=lambda t: [a for a in t.split(",") if a], default=list(ARMS),
                   help=f"comma-separated (default all: {','.join(ARMS)})")
    p.add_argument("--labels", type=_shares, default=[1.0], help="label shares, e.g. 1,0.1 (default 1)")
    p.add_argument("--seeds", type=positive_int, default=1, metavar="N", help="seeds 0..N-1 of every arm (default 1)")
    p.add_argument("--a-seeds", type=positive_int, metavar="N",
                   help="seeds of arm A at the first --labels share (default --seeds): two or more give the spread "
                        "that says whether the budget separates the arms")
    p.add_argument("--parallel", type=positive_int, default=1, metavar="N", help="arms trained at once (default 1)")
    p.add_argument("--preset", default="train-cpu", help="the train preset of every arm (default train-cpu)")
    p.add_argument("--data", metavar="DIR", help="built data (default: what --preset's fine-tuning reads)")
    p.add_argument("--tests", type=lambda t: [s for s in t.split(",") if s], default=list(TESTS),
                   help="test splits of --data reported, greedy (default 2014,2016,2019; '' for none)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="passed to every arm's maskmatch train (e.g. finetune.optim.lr=5e-4)")
    p.add_argument("--results", default="results", metavar="DIR", help="where ablation.md goes (default results)")
    p.set_defaults(run=_ablation)
