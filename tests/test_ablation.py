"""`maskmatch ablation` on the tiny preset: arms trained side by side, each selected on its held-out slice,
the table, the curves and the commands written; a second call keeps the finished arms."""

import json
from pathlib import Path

import pytest
from conftest import build_train_split

from maskmatch.ablation import Job, plan_jobs, train_argv
from maskmatch.ablation_report import parse_name, run_name
from maskmatch.cli import main
from maskmatch.pipeline import preset_data

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return build_train_split(tmp_path_factory.mktemp("data"), 40)


def quick(root: Path, runs: Path, results: Path, *extra: str) -> list[str]:
    sets = [f"{s}.trainer.max_epochs=1" for s in ("pretrain", "attend", "finetune")]
    sets += [f"{s}.data.val_size=8" for s in ("pretrain", "attend", "finetune")]
    return ["ablation", "--budget", "3", "--preset", "train-tiny", "--data", str(root), "--out", str(runs),
            "--results", str(results), "--tests", "", *[w for s in sets for w in ("--set", s)], *extra]


def only_row(text: str, start: str) -> str:
    [row] = [line for line in text.splitlines() if line.startswith(start)]
    return row


def test_arms_train_side_by_side_and_are_reported(data_root, tmp_path, capsys):
    runs, results = tmp_path / "runs", tmp_path / "results"
    assert main(quick(data_root, runs, results, "--arms", "A,C-none", "--labels", "1,0.5", "--parallel", "2")) == 0
    text = (results / "ablation.md").read_text("utf-8")
    rows = json.loads((results / "ablation.json").read_text("utf-8"))
    assert {r["run"] for r in rows} == {"A-labels100-seed0", "C-none-labels100-seed0", "A-labels050-seed0",
                                        "C-none-labels050-seed0"}
    assert [line for line in text.splitlines() if line.startswith("| A | 50% | 0 | finetune ")]
    assert [line for line in text.splitlines() if line.startswith("| C-none | 100% | 0 | pretrain ")]
    cells = [c.strip() for c in only_row(text, "| C-none | 100% | 0 | pretrain ").strip("|").split("|")]
    assert float(cells[6]) > 0  # stage 3's best validation loss: what separates arms before their ExpRate does
    shared = [line for line in text.splitlines() if line.startswith("| C-none | 50% | 0 | pretrain ")]
    assert shared and "pretrain" in shared[0] and shared[0].count("*") == 2  # stages 1 and 2 taken over
    assert (results / "ablation.png").is_file() and (results / "label-efficiency.png").is_file()
    assert "--skip-stage1 --skip-stage2" in text and "finetune.data.label_fraction=0.5" in text
    before = {r: (runs / r / "model.safetensors").stat().st_mtime_ns for r in (x["run"] for x in rows)}
    assert main(quick(data_root, runs, results, "--arms", "A,C-none", "--labels", "1,0.5")) == 0
    assert {r: (runs / r / "model.safetensors").stat().st_mtime_ns for r in before} == before  # kept, not retrained


def test_arm_arguments_and_names(tmp_path):
    class Args:
        preset, data, budget, overrides = "train-cpu", "data/crohme26", 30.0, []
    job = Job("B", 0.1, 1, tmp_path / "B", donor=tmp_path / "C")
    argv = train_argv(job, Args)
    assert argv[:2] == ["train", "--preset"] and "--skip-stage2" in argv and "--skip-stage1" not in argv
    assert "model.fusion=none" in argv and "finetune.data.label_fraction=0.1" in argv and "1800" in argv
    assert argv[argv.index("--reuse") + 1] == str(tmp_path / "C")
    (tmp_path / "B" ).mkdir()
    (tmp_path / "B" / "train.json").write_text("{}")
    assert train_argv(job, Args) == ["train", "--out", str(tmp_path / "B"), "--resume", "--quiet"]
    assert parse_name(run_name("C-tokens", 0.25, 2)) == ("C-tokens", 25.0, 2)
    assert preset_data("train-cpu") == "data/crohme26"  # --data's default: what `make data` builds for the recipe


def test_each_seed_trains_stages_1_and_2_once():
    """The first arm of a seed running both stages goes first; B waits for its stage 1, the other C arms for its
    stage 2, A for nothing; --a-seeds adds seeds of A at the first label share alone."""
    class Args:
        out, arms, labels, seeds, a_seeds = "runs", ["A", "B", "C-none", "C-gate"], [1.0, 0.1], 1, 2
    jobs = plan_jobs(Args)
    names = [j.folder.name for j in jobs]
    assert names[0] == "C-none-labels100-seed0" and len(names) == len(set(names)) == 9
    assert "A-labels100-seed1" in names and "A-labels010-seed1" not in names
    waits = {j.folder.name: (j.donor and j.donor.name, j.waits_for) for j in jobs}
    assert waits["B-labels010-seed0"] == ("C-none-labels100-seed0", "pretrain")
    assert waits["C-gate-labels100-seed0"] == ("C-none-labels100-seed0", "attend")
    assert waits["A-labels100-seed1"] == (None, None) and waits["C-none-labels100-seed0"] == (None, None)


def test_ablation_mistakes_are_one_line(data_root, tmp_path, capsys):
    assert main(["ablation", "--budget", "1", "--arms", "D", "--data", str(data_root)]) == 2
    assert "unknown arm 'D'" in capsys.readouterr().err
    assert main(["ablation", "--budget", "1", "--data", str(tmp_path)]) == 2
    assert "no built train split" in capsys.readouterr().err
