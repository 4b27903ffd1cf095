"""`maskmatch train`: stages 1, 2 and 3 end to end on CPU with the tiny preset, their hand-offs, the budget
split and resume."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import build_train_split

from maskmatch.cli import main
from maskmatch.errors import UserError
from maskmatch.pipeline import stage_configs
from maskmatch.recognizer import Recognizer
from maskmatch.stages import BudgetSplit, stage_seconds
from maskmatch.weights import read_manifest

PRESET = Path(__file__).resolve().parents[1] / "src" / "maskmatch" / "presets" / "train-tiny.yaml"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return build_train_split(tmp_path_factory.mktemp("data"), 40)


def train_args(root: Path, out: Path, *extra: str) -> list[str]:
    sets = ["pretrain.trainer.max_epochs=1", "attend.trainer.max_epochs=1", "finetune.trainer.max_epochs=2"]
    sets += [f"{stage}.data.val_size=8" for stage in ("pretrain", "attend", "finetune")]
    return ["train", "--preset", "train-tiny", "--data", str(root), *[w for s in sets for w in ("--set", s)],
            "--out", str(out), "--quiet", *extra]


@pytest.fixture(scope="module")
def run(data_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "train"
    assert main(train_args(data_root, out)) == 0
    return out


def test_all_three_stages_run_and_hand_off(run):
    for stage, export in (("pretrain", "encoder"), ("attend", "attend"), ("finetune", "model")):
        assert (run / stage / f"{export}.safetensors").is_file(), stage
    assert read_manifest(run / "attend" / "attend.safetensors")["command"].count("--init") == 1
    assert yaml.safe_load((run / "finetune" / "config.yaml").read_text("utf-8"))["init"].endswith("attend.safetensors")
    rec = Recognizer.load(run / "model.safetensors")
    assert rec.model.config.fusion == "gate"
    stages = rec.manifest["training"]["stages"]
    assert list(stages) == ["pretrain", "attend", "finetune"] and all(s["minutes"] >= 0 for s in stages.values())
    assert rec.manifest["command"].startswith("maskmatch train --preset train-tiny")


def test_resume_of_a_finished_run_skips_every_stage(run, capsys):
    before = (run / "model.safetensors").read_bytes()
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.count("already done") == 3 and (run / "model.safetensors").read_bytes() == before


def test_skipping_stages_starts_stage_3_from_what_ran(data_root, tmp_path):
    out = tmp_path / "s1-only"
    assert main(train_args(data_root, out, "--skip-stage2", "--set", "model.fusion=none")) == 0
    assert not (out / "attend").exists()
    assert yaml.safe_load((out / "finetune" / "config.yaml").read_text("utf-8"))["init"].endswith("encoder.safetensors")
    assert json.loads((out / "train.json").read_text("utf-8"))["stages"] == ["pretrain", "finetune"]


def test_without_fusion_stage_3_starts_from_stage_2s_encoder(data_root, tmp_path):
    """Arm C with fusion none (issue 13): stage 2's hand-off less its attention network reaches stage 3."""
    out = tmp_path / "s2-none"
    assert main(train_args(data_root, out, "--skip-stage1", "--set", "model.fusion=none")) == 0
    encoder = out / "attend" / "encoder.safetensors"
    assert read_manifest(encoder)["modules"] == ["encoder"]
    assert read_manifest(out / "attend" / "attend.safetensors")["modules"] == ["attention", "encoder"]
    assert yaml.safe_load((out / "finetune" / "config.yaml").read_text("utf-8"))["init"] == str(encoder)
    assert Recognizer.load(out / "model.safetensors").model.attention is None


def test_a_run_takes_over_the_stages_it_would_repeat(run, data_root, tmp_path, capsys):
    """--reuse: another fusion repeats stages 1 and 2 exactly (they build no fusion), so it copies them and
    counts their minutes; another stage-1 seed changes stage 1 and, through its weights, stage 2."""
    same = tmp_path / "tokens"
    assert main(train_args(data_root, same, "--reuse", str(run), "--set", "model.fusion=tokens")) == 0
    assert capsys.readouterr().out.count("taken over") == 2
    state = json.loads((same / "train.json").read_text("utf-8"))
    theirs = json.loads((run / "train.json").read_text("utf-8"))
    assert set(state["reused"]) == {"pretrain", "attend"}
    assert state["seconds"]["attend"] == theirs["seconds"]["attend"]
    assert (same / "attend" / "attend.safetensors").read_bytes() == (run / "attend" / "attend.safetensors").read_bytes()
    assert Recognizer.load(same / "model.safetensors").model.config.fusion == "tokens"
    other = tmp_path / "seed1"
    assert main(train_args(data_root, other, "--reuse", str(run), "--set", "pretrain.trainer.seed=1")) == 0
    out = capsys.readouterr().out
    assert "taken over" not in out and out.count("differs") == 3  # stage 3 too: its start differs


def test_a_skipped_stage_gives_its_minutes_to_the_stages_after_it():
    split = BudgetSplit(pretrain=0.25, attend=0.15, finetune=0.6)
    assert stage_seconds(1000, {"seconds": {}}, split, "pretrain") == 250  # with or without stage 2
    assert stage_seconds(1000, {"seconds": {"pretrain": 260}}, split, "finetune") == 740
    assert stage_seconds(1000, {"seconds": {}}, split, "attend") == 200  # no stage 1: 0.15 of 0.75
    assert stage_seconds(None, {"seconds": {}}, split, "attend") is None


def test_budget_split_and_overrides_route_to_stages():
    values = yaml.safe_load(PRESET.read_text("utf-8"))
    split, configs = stage_configs(values, ["model.fusion=tokens", "finetune.optim.lr=1e-3", "budget_split.attend=0.4"])
    assert split == BudgetSplit(pretrain=0.3, attend=0.4, finetune=0.5)
    assert {c.model.fusion for c in configs.values()} == {"tokens"}
    assert configs["finetune"].optim.lr == 1e-3 and configs["attend"].optim.lr != 1e-3


@pytest.mark.parametrize("extra, message", [
    (["--set", "decoder.x=1"], "keys start with model."),
    (["--set", "budget_split.pretrain=-1"], "non-negative"),
    (["--reuse", "no/such/run"], "not a train run"),
])
def test_config_mistakes_are_one_line(data_root, tmp_path, capsys, extra, message):
    assert main(train_args(data_root, tmp_path / "run", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_train_cpu_is_the_cpu_stage_presets_together():
    """train-cpu's sections are pretrain-cpu, attend-cpu and finetune-cpu less their model, and its model is theirs
    with a fusion: the ablation's arms and the standalone stages train the same thing."""
    presets = PRESET.parent
    load = lambda name: yaml.safe_load((presets / f"{name}.yaml").read_text("utf-8"))  # noqa: E731
    together = load("train-cpu")
    for section, preset in (("pretrain", "pretrain-cpu"), ("attend", "attend-cpu"), ("finetune", "finetune-cpu")):
        alone = load(preset)
        assert together[section] == {k: v for k, v in alone.items() if k != "model"}, section
        assert {k: v for k, v in alone["model"].items() if k != "attention_maps"} == \
            {k: v for k, v in together["model"].items() if k not in ("fusion", "attention_maps")}, preset
    _, configs = stage_configs(together, [])
    assert configs["finetune"].model.fusion == "gate" and configs["finetune"].model.encoder == "resnet"


def test_stage_presets_share_their_familys_model():
    """Each preset names its family's model (presets/models/) and changes only what its stage needs; a name that
    is not a shared model is a one-line error."""
    from maskmatch.engine.options import with_shared_model

    presets = PRESET.parent
    for family in ("tiny", "small", "cpu", "crohme"):
        shared = yaml.safe_load((presets / "models" / f"{family}.yaml").read_text("utf-8"))
        for name in (f"finetune-{family}", f"pretrain-{family}", f"attend-{family}", f"train-{family}"):
            model = with_shared_model(yaml.safe_load((presets / f"{name}.yaml").read_text("utf-8")), name)["model"]
            assert {k: v for k, v in model.items() if k not in ("fusion", "attention_maps")} == shared, name
    with pytest.raises(UserError, match="'nosuch' is not a shared model"):
        with_shared_model({"model": {"preset": "nosuch"}}, "x.yaml")
