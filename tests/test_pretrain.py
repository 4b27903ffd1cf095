"""`maskmatch pretrain` end to end on a tiny synthetic split whose labels are deleted: the loss falls, the probe
rises well above chance, the encoder hand-off loads into `finetune --init`, a killed run resumes step for step,
and --show-views draws. Also `--label-fraction`."""

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import build_train_split, kill_after_checkpoint, without_labels

from maskmatch.cli import main
from maskmatch.config import from_dict
from maskmatch.data.loading import FinetuneData
from maskmatch.data.loading import DataConfig
from maskmatch.data.render import RenderConfig
from maskmatch.engine.callbacks import read_log
from maskmatch.model import HMERModel, ModelConfig
from maskmatch.pretrain.config import PretrainConfig
from maskmatch.pretrain.views import largest_view
from maskmatch.weights import init_from_weights, load_weights, read_manifest

PRESETS = Path(__file__).resolve().parents[1] / "src" / "maskmatch" / "presets"

EPOCHS = 12


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


@pytest.fixture(scope="module")
def labelled_root(tmp_path_factory) -> Path:
    return build_train_split(tmp_path_factory.mktemp("labelled"), 64)


@pytest.fixture(scope="module")
def unlabelled_root(labelled_root, tmp_path_factory) -> Path:
    """The same split with its labels deleted: no token files, no caption.txt."""
    root = without_labels(labelled_root, tmp_path_factory.mktemp("unlabelled"))
    assert not list(root.rglob("caption.txt")) and not list(root.rglob("tokens.npy"))
    return root


def pretrain_args(root: Path, out: Path, *extra: str) -> list[str]:
    sets = [f"data.root={root}", "data.val_size=16", "data.pixel_budget=200000", "data.max_batch_size=16",
            "views.scale_range=[0.9,1.1]", "loss.exclude_radius=12", "optim.lr=3.0e-3", "optim.warmup_steps=5",
            f"trainer.max_epochs={EPOCHS}", "trainer.log_every_n_steps=1", "trainer.checkpoint_every_n_steps=5"]
    return ["pretrain", "--preset", "pretrain-tiny", *[w for s in sets for w in ("--set", s)], "--out", str(out),
            "--quiet", *extra]


@pytest.fixture(scope="module")
def run(unlabelled_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "pretrain"
    assert main(pretrain_args(unlabelled_root, out)) == 0
    return out


def validations(run: Path) -> list[dict]:
    return [r for r in read_log(run / "log.jsonl") if "val_loss" in r and "event" not in r]


def test_pretrain_runs_without_labels_and_learns(run):
    for name in ("config.yaml", "log.jsonl", "curves.png", "best.ckpt", "last.ckpt", "encoder.safetensors",
                 "encoder.json"):
        assert (run / name).is_file(), name
    records = read_log(run / "log.jsonl")
    steps = [r for r in records if "loss" in r]
    assert len(steps) >= 40 and all(r["loss"] == pytest.approx(r["loss_global"] + r["loss_local"], abs=1e-4) for r in steps)
    assert np.mean([r["loss"] for r in steps[-8:]]) < 0.7 * np.mean([r["loss"] for r in steps[:8]])
    checks = validations(run)
    first, last = checks[0], checks[-1]
    assert first["step"] == 0 and len(checks) == EPOCHS + 1 and all(r["val_n"] == 16 for r in checks)
    assert last["val_loss"] < first["val_loss"]
    # the probe: well above chance at the end, and better than before any update
    assert last["probe_global"] >= 3 * last["probe_global_chance"] and last["probe_global"] > first["probe_global"]
    assert last["probe_local"] >= 10 * last["probe_local_chance"] and last["probe_local"] > first["probe_local"]


def test_encoder_file_holds_exactly_the_encoder(run):
    from safetensors.torch import load_file

    config = ModelConfig.tiny()
    tensors = load_file(run / "encoder.safetensors")
    expected = {k for k in HMERModel(config).state_dict() if k.startswith("encoder.")}
    assert set(tensors) == expected
    manifest = read_manifest(run / "encoder.safetensors")
    assert manifest["modules"] == ["encoder"] and manifest["training"]["stage"] == "pretrain"
    assert ModelConfig(**manifest["model"]) == config and manifest["command"].startswith("maskmatch pretrain")
    assert {"probe_global", "probe_local", "val_loss"} <= set(manifest["metrics"]["validation"])
    assert manifest["metrics"]["step_0"]["probe_local"] == validations(run)[0]["probe_local"]
    best = torch.load(run / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(tensors[k], best[k]) for k in expected)  # best.ckpt's encoder
    with pytest.raises(ValueError, match="--init"):
        load_weights(run / "encoder.safetensors")  # not a whole model


def test_init_loads_the_encoder_and_asserts_the_missing_keys(run):
    torch.manual_seed(0)
    model = HMERModel(ModelConfig.tiny())
    decoder = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("decoder.")}
    init_from_weights(model, run / "encoder.safetensors")
    tensors = load_weights.__globals__["load_safetensors"]((run / "encoder.safetensors").read_bytes())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in tensors.items())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in decoder.items())  # untouched
    # a model with another top-level module (as stage 2's fusion adds): its keys are missing too, and allowed
    wider = HMERModel(ModelConfig.tiny())
    wider.attention = torch.nn.Linear(64, 4)
    init_from_weights(wider, run / "encoder.safetensors")
    with pytest.raises(ValueError, match="model.growth_rate"):
        init_from_weights(HMERModel(ModelConfig.tiny(growth_rate=12)), run / "encoder.safetensors")
    init_from_weights(HMERModel(ModelConfig.tiny(dropout=0.3, encoder_dropout=0.1)), run / "encoder.safetensors")


def test_a_checkpoint_written_before_a_model_field_was_added_still_loads():
    """The model configs are compared as ModelConfigs: a field the checkpoint lacks takes its default."""
    from maskmatch.pretrain.config import PretrainConfig
    from maskmatch.pretrain.module import PretrainModule

    config = PretrainConfig(model=ModelConfig.tiny())
    saved = PretrainModule(config)
    saved.total_steps, saved.planned = 40, True
    checkpoint = {}
    saved.on_save_checkpoint(checkpoint)
    default = ModelConfig()
    field = next(k for k, v in asdict(config.model).items() if v == getattr(default, k))
    del checkpoint["maskmatch"]["config"]["model"][field]  # as if `field` came after the checkpoint
    fresh = PretrainModule(config)
    fresh.on_load_checkpoint(checkpoint)
    assert (fresh.total_steps, fresh.planned) == (40, True)
    checkpoint["maskmatch"]["config"]["model"]["d_model"] = config.model.d_model * 2
    with pytest.raises(ValueError, match="model config differs"):
        fresh.on_load_checkpoint(checkpoint)


def test_a_file_with_modules_the_model_lacks_is_refused(tmp_path):
    from maskmatch.weights import save_module_weights

    wider = HMERModel(ModelConfig.tiny())
    wider.attention = torch.nn.Linear(64, 4)
    path = tmp_path / "stage2.safetensors"
    save_module_weights(path, wider, ("encoder", "attention"))
    assert read_manifest(path)["modules"] == ["attention", "encoder"]
    with pytest.raises(ValueError, match="holds attention weights"):
        init_from_weights(HMERModel(ModelConfig.tiny()), path)
    other = HMERModel(ModelConfig.tiny())
    other.attention = torch.nn.Linear(64, 4)
    init_from_weights(other, path)
    assert torch.equal(other.attention.weight, wider.attention.weight)


def test_finetune_starts_from_the_pretrained_encoder(run, labelled_root, tmp_path, capsys):
    out = tmp_path / "finetune"
    args = ["finetune", "--preset", "finetune-tiny", "--set", f"data.root={labelled_root}", "--set", "data.val_size=16",
            "--set", "trainer.max_epochs=1", "--init", str(run / "encoder.safetensors"), "--label-fraction", "0.5",
            "--out", str(out), "--quiet"]
    assert main(args) == 0
    assert "initialized encoder from" in capsys.readouterr().out
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["init"] == str(run / "encoder.safetensors") and saved["data"]["label_fraction"] == 0.5
    _, manifest = load_weights(out / "model.safetensors")
    assert manifest["training"]["config"]["init"] == saved["init"] and "--init" in manifest["command"]
    # the encoder must agree with the file's
    bad = tmp_path / "bad"
    assert main([*args[:-3], "--set", "model.growth_rate=12", "--out", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--init" in err and "growth_rate" in err and not bad.exists()
    # resume keeps the init and the label fraction; neither can change
    assert main(["finetune", "--out", str(out), "--resume", "--label-fraction", "0.3"]) == 2
    assert "data.label_fraction cannot change" in capsys.readouterr().err


def test_label_fraction_is_a_fixed_subset_of_the_training_images(labelled_root):
    def split(fraction: float, seed: int = 0) -> FinetuneData:
        return FinetuneData(DataConfig(root=str(labelled_root), val_size=16, label_fraction=fraction,
                                       label_seed=seed, workers=0), seed=0)

    full, half, again, other = split(1.0), split(0.5), split(0.5), split(0.5, seed=1)
    assert len(full.train_set) == 48 and len(half.train_set) == 24
    assert np.array_equal(half.train_set.indices, again.train_set.indices)  # fixed: a pure function of the seed
    assert not np.array_equal(half.train_set.indices, other.train_set.indices)
    assert set(half.train_set.indices) < set(full.train_set.indices)
    assert np.array_equal(half.val_set.indices, full.val_set.indices)  # validation unchanged
    assert len(split(0.001).train_set) == 1
    with pytest.raises(Exception, match="label_fraction"):
        split(0.0)


def test_a_killed_run_resumes_step_for_step(unlabelled_root, run, tmp_path):
    """SIGKILL after a mid-epoch checkpoint; the resumed run repeats the uninterrupted one's losses: the views
    are a pure function of (seed, rank, step)."""
    killed = tmp_path / "killed"
    kill_after_checkpoint(pretrain_args(unlabelled_root, killed), killed, lambda step: step >= 10)
    assert main(["pretrain", "--out", str(killed), "--resume", "--quiet"]) == 0
    expected = {r["step"]: r["loss"] for r in read_log(run / "log.jsonl") if "loss" in r}
    got = {r["step"]: r["loss"] for r in read_log(killed / "log.jsonl") if "loss" in r}
    assert sorted(got) == sorted(expected)
    assert all(got[s] == pytest.approx(expected[s], rel=1e-4) for s in expected)


def test_show_views_draws_a_png(unlabelled_root, tmp_path, capsys):
    out = tmp_path / "views.png"
    assert main(["pretrain", "--preset", "pretrain-tiny", "--set", f"data.root={unlabelled_root}",
                 "--set", "data.val_size=16", "--show-views", "3", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["pretrain", "--preset", "pretrain-tiny", "--show-views", "3", "--out", str(tmp_path / "v.jpg")]) == 2
    assert ".png" in capsys.readouterr().err


@pytest.mark.parametrize("assignment, message", [
    ("views.bogus=1", "config.views: unknown key 'bogus'"),
    ("loss.global_temperature=0", "temperatures must be positive"),
    ("views.elastic_amplitude=9", "elastic_amplitude <= 0.1 x spacing"),
])
def test_config_errors_are_one_line(assignment, message, tmp_path, capsys):
    assert main(["pretrain", "--preset", "pretrain-tiny", "--set", assignment, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


@pytest.mark.parametrize("preset", ["pretrain-tiny", "pretrain-small", "pretrain-cpu", "pretrain-crohme",
                                    "train-tiny", "train-small", "train-cpu", "train-crohme"])
def test_stage_1_presets_admit_the_largest_render(preset):
    """The pixel budget counts a view, larger than its image (rotation and shear widen it): each stage-1 preset
    must batch the largest image `data build` renders (RenderConfig's max_height x max_width) alone."""
    values = yaml.safe_load((PRESETS / f"{preset}.yaml").read_text("utf-8"))
    section = values["pretrain"] if preset.startswith("train-") else values
    config = from_dict(PretrainConfig, {k: v for k, v in section.items() if k != "model"})
    h, w = largest_view(RenderConfig().max_height, RenderConfig().max_width, config.views)
    assert h * w <= config.data.pixel_budget, (h, w)
