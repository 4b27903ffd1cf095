"""`maskmatch attend` end to end on a tiny synthetic split, from a stage-1 encoder file: the loss falls, the hand-off
holds exactly encoder.* and attention.* (the teacher's), `finetune --init` takes it into a fused model and refuses
it clearly for a plain one, and a killed run resumes step for step."""

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import build_train_split, kill_after_checkpoint, without_labels

from maskmatch.attend.commands import initialize
from maskmatch.attend.config import AttendConfig
from maskmatch.attend.module import AttendModule
from maskmatch.cli import main
from maskmatch.engine.callbacks import read_log
from maskmatch.model import HMERModel, ModelConfig
from maskmatch.weights import MODULE_FIELDS, read_manifest, save_module_weights

EPOCHS, STEPS_PER_EPOCH = 6, 4  # 32 training images (+ 8 held out), 8 a batch
TINY = ModelConfig.tiny(attention_maps=4)  # the attend-tiny preset's model


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return build_train_split(tmp_path_factory.mktemp("data"), 40)


@pytest.fixture(scope="module")
def images(root, tmp_path_factory) -> Path:
    """The same split without labels: stage 2 never opens them."""
    return without_labels(root, tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory) -> Path:
    """A stage-1 hand-off as `maskmatch pretrain` writes it (only encoder.*), of a seeded random encoder."""
    torch.manual_seed(5)
    path = tmp_path_factory.mktemp("stage1") / "encoder.safetensors"
    save_module_weights(path, HMERModel(ModelConfig.tiny()), ("encoder",), {"training": {"stage": "pretrain"}})
    return path


def attend_args(root: Path, out: Path, encoder: Path, *extra: str) -> list[str]:
    sets = [f"data.root={root}", "data.val_size=8", "data.max_batch_size=8", "data.pixel_budget=200000",
            "data.scale_range=[0.8,1.2]", f"trainer.max_epochs={EPOCHS}", "trainer.log_every_n_steps=1",
            "trainer.checkpoint_every_n_steps=3"]
    return ["attend", "--preset", "attend-tiny", *[w for s in sets for w in ("--set", s)], "--init", str(encoder),
            "--out", str(out), "--quiet", *extra]


@pytest.fixture(scope="module")
def run(images, encoder_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "attend"
    assert main(attend_args(images, out, encoder_file)) == 0
    return out


def losses(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in read_log(run / "log.jsonl") if "loss" in r}


def test_attend_runs_learns_and_logs_every_term(run):
    for name in ("config.yaml", "log.jsonl", "curves.png", "best.ckpt", "last.ckpt", "attend.safetensors",
                 "attend.json"):
        assert (run / name).is_file(), name
    steps = losses(run)
    assert sorted(steps) == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
    for r in steps.values():
        weighted = r["match"] + r["prediction"] + 0.1 * r["diversity"] + 0.05 * r["entropy"]  # the preset's weights
        assert r["loss"] == pytest.approx(weighted, rel=1e-4)
    first, last = [steps[s] for s in (1, 2, 3)], [steps[s] for s in sorted(steps)[-3:]]
    assert np.mean([r["loss"] for r in last]) < 0.8 * np.mean([r["loss"] for r in first])
    # progressive masking: more ink hidden, larger blocks, more guidance by the end
    assert last[-1]["mask_ratio"] > first[0]["mask_ratio"] and last[-1]["block"] == 32 and first[0]["guided"] == 0
    checks = [r for r in read_log(run / "log.jsonl") if "val_match" in r and "event" not in r]
    assert [r["step"] for r in checks] == [STEPS_PER_EPOCH * e for e in range(EPOCHS + 1)]  # step 0 first
    assert all(r["val_n"] == 8 and 0 <= r["val_match"] <= 100 for r in checks)
    meta = torch.load(run / "last.ckpt", map_location="cpu", weights_only=True)["maskmatch"]
    assert meta["stage"] == "attend" and meta["total_steps"] == EPOCHS * STEPS_PER_EPOCH


def test_handoff_holds_exactly_the_teachers_encoder_and_attention(run, encoder_file):
    tensors = load_file(run / "attend.safetensors")
    fused = HMERModel(ModelConfig.tiny(attention_maps=4, fusion="gate")).state_dict()
    assert set(tensors) == {k for k in fused if k.startswith(("encoder.", "attention."))}
    best = torch.load(run / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(v, best[f"teacher.module.{k}"]) for k, v in tensors.items())
    manifest = read_manifest(run / "attend.safetensors")
    assert manifest["modules"] == ["attention", "encoder"] and manifest["training"]["stage"] == "attend"
    assert manifest["metrics"]["validation"]["monitor"] == "val_match (max)"
    assert manifest["training"]["config"]["init"] == str(encoder_file) and "--init" in manifest["command"]
    assert set(MODULE_FIELDS["attention"]) >= {"d_model", "attention_maps"}


def test_init_loads_the_encoder_into_student_and_teacher(encoder_file, capsys):
    module = AttendModule(AttendConfig(model=TINY))
    attention = {k: v.clone() for k, v in module.attention.state_dict().items()}
    initialize(module, str(encoder_file))
    assert "initialized encoder from" in capsys.readouterr().out
    saved = load_file(encoder_file)
    for source in (module.student(), module.teacher.module):
        state = source.state_dict()
        assert all(torch.equal(state[k], v) for k, v in saved.items())
    assert all(torch.equal(module.attention.state_dict()[k], v) for k, v in attention.items())  # untouched


def test_an_encoder_of_another_shape_is_one_line(images, encoder_file, tmp_path, capsys):
    out = tmp_path / "bad"
    assert main(attend_args(images, out, encoder_file, "--set", "model.growth_rate=12")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--init" in err and "model.growth_rate" in err and not (out / "last.ckpt").exists()


@pytest.mark.parametrize("fusion", ["gate", "tokens"])
def test_finetune_starts_from_the_handoff(run, root, fusion, tmp_path, capsys):
    out = tmp_path / fusion
    assert main(["finetune", "--preset", "finetune-tiny", "--set", f"data.root={root}", "--set", "data.val_size=8",
                 "--set", "trainer.max_epochs=1", "--set", f"model.fusion={fusion}", "--set", "model.attention_maps=4",
                 "--init", str(run / "attend.safetensors"), "--out", str(out), "--quiet"]) == 0
    assert "initialized attention, encoder from" in capsys.readouterr().out
    manifest = read_manifest(out / "model.safetensors")
    assert manifest["model"]["fusion"] == fusion and manifest["training"]["config"]["init"].endswith("attend.safetensors")


@pytest.mark.parametrize("sets, message", [
    ([], "set model.fusion=gate"),  # a plain recognizer would silently drop the attention network
    (["--set", "model.fusion=gate"], "model.attention_maps=4, this model 8"),  # the tiny preset's default K
])
def test_finetune_refuses_a_handoff_it_cannot_hold(run, root, sets, message, tmp_path, capsys):
    out = tmp_path / "refused"
    assert main(["finetune", "--preset", "finetune-tiny", "--set", f"data.root={root}", *sets,
                 "--init", str(run / "attend.safetensors"), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--init" in err and message in err and "Traceback" not in err


def test_a_killed_run_resumes_step_for_step(images, encoder_file, run, tmp_path):
    """SIGKILL after a mid-epoch checkpoint; the resumed run repeats the uninterrupted one's losses: masks and
    dropout are pure functions of (seed, rank, step), the teacher is in the checkpoint."""
    killed = tmp_path / "killed"
    kill_after_checkpoint(attend_args(images, killed, encoder_file), killed,
                          lambda step: step > STEPS_PER_EPOCH and step % STEPS_PER_EPOCH)
    assert main(["attend", "--out", str(killed), "--resume", "--quiet"]) == 0
    starts = [r["step"] for r in read_log(killed / "log.jsonl") if r.get("event") == "start"]
    assert len(starts) == 2 and starts[1] % STEPS_PER_EPOCH  # continued from mid-epoch, not restarted
    expected, got = losses(run), losses(killed)
    assert sorted(got) == sorted(expected)
    for s in expected:
        for key in ("loss", "match", "prediction", "mask_ratio"):
            assert got[s][key] == pytest.approx(expected[s][key], rel=1e-4, abs=1e-6), (s, key)
    a, b = (load_file(r / "attend.safetensors") for r in (run, killed))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_resume_and_config_mistakes_are_one_line(run, tmp_path, capsys):
    assert main(["attend", "--out", str(run), "--resume", "--set", "masking.ratio=[0.2,0.5]"]) == 2
    assert "masking.ratio cannot change" in capsys.readouterr().err
    assert main(["attend", "--preset", "attend-tiny", "--out", str(run)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["attend", "--preset", "attend-tiny", "--set", "masking.bogus=1", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown key 'bogus'" in err


def test_stage_2_validates_at_its_training_scale(images):
    """Its BatchNorm statistics come from images at data.scale_range: validation reads them at its geometric mean
    (0.5 here), recognition (labels) at scale 1."""
    from maskmatch.data.loading import FinetuneData
    from maskmatch.data.loading import DataConfig

    config = DataConfig(root=str(images), val_size=8, pixel_budget=200_000, max_batch_size=8, workers=0,
                        scale_range=(0.25, 1.0))
    data = FinetuneData(config, seed=0, labels=False)
    data.setup()
    batch = next(iter(data.val_dataloader()))
    assert batch.images.shape[2] == 24  # the split's 48 px high images, halved
