"""`maskmatch finetune`: schedule, EMA and plan by hand; config errors; an end-to-end tiny run; resume after
SIGKILL continuing step for step; the time budget. The data is a tiny synthetic cache built here."""

import math
import re
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import glyph, kill_after_checkpoint

from maskmatch.cli import main
from maskmatch.data.cache import Cache, CacheWriter
from maskmatch.data.loading import FinetuneData, ScaledDataset
from maskmatch.data.loading import DataConfig
from maskmatch.data.render import RenderConfig
from maskmatch.data.vocab import Vocabulary
from maskmatch.engine.callbacks import read_log
from maskmatch.engine.checkpoints import AtomicCheckpointIO
from maskmatch.engine.ema import EMA
from maskmatch.engine.schedule import ema_decay, lr_factor, plan_total_steps
from maskmatch.errors import UserError
from maskmatch.finetune.config import OptimConfig
from maskmatch.finetune.module import ema_model
from maskmatch.inference_commands import DEFAULT_DATA, model_data
from maskmatch.recognizer import Recognizer
from maskmatch.weights import load_weights, manifest_vocabulary, read_manifest, render_config, save_weights

EPOCHS, STEPS_PER_EPOCH = 4, 10  # the tiny preset on 40 training images (+ 8 held out), 4 per batch


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A built-data folder whose train split holds 48 expressions of 2-5 glyphs, 24 px high."""
    root = tmp_path_factory.mktemp("data")
    vocab = Vocabulary.load()
    ids = vocab.encode(list("0123456789abcdefxyz"))
    rng = np.random.default_rng(0)
    writer = CacheWriter(root / "train" / "cache", vocab.symbols, asdict(RenderConfig()))
    for k in range(48):
        seq = rng.choice(ids, rng.integers(2, 6)).tolist()
        image = np.zeros((24, 10 * len(seq) + 6), np.uint8)
        top = rng.integers(2, 10)
        for i, t in enumerate(seq):
            image[top : top + 12, 3 + 10 * i : 11 + 10 * i] = glyph(t)
        writer.add(f"e{k:03d}", image, seq)
    writer.close()
    return root


def finetune_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["finetune", "--preset", "finetune-tiny", "--set", f"data.root={root}",
            "--set", f"trainer.max_epochs={EPOCHS}", "--out", str(out), "--quiet", *extra]


def losses(run: Path) -> dict[int, float]:
    """Training loss by step; a resumed run's repeated steps keep their last value."""
    return {r["step"]: r["loss"] for r in read_log(run / "log.jsonl") if "loss" in r}


@pytest.fixture(scope="module")
def reference_run(data_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "reference"
    assert main(finetune_args(data_root, out, "--set", "trainer.keep_checkpoints=2")) == 0
    return out


# ---------------------------------------------------------------- pure pieces, by hand


def test_lr_schedule_against_hand_values():
    # warm-up 4 steps, 12 in all, floor 0.1: (s + 1) / 4, then 0.1 + 0.9 * (1 + cos(pi * (s - 4) / 8)) / 2
    expected = {0: 0.25, 1: 0.5, 3: 1.0, 4: 1.0, 6: 0.1 + 0.45 * (1 + math.sqrt(0.5)), 8: 0.55, 12: 0.1, 50: 0.1}
    for step, value in expected.items():
        assert lr_factor(step, 4, 12, 0.1) == pytest.approx(value), step
    assert lr_factor(0, 0, 12, 0.0) == 1.0 and lr_factor(0, 4, 1, 0.1) == lr_factor(0, 4, 10**6, 0.1)
    # the warm-up is capped at a fifth of the planned steps: a 589-step stage is not all warm-up
    assert OptimConfig(warmup_steps=300).warmup(589) == 118 and OptimConfig(warmup_steps=300).warmup(28_000) == 300


def test_ema_decay_warms_up():
    assert ema_decay(1, 0.999) == pytest.approx(2 / 11)
    assert ema_decay(90, 0.999) == pytest.approx(91 / 100)
    assert ema_decay(100_000, 0.999) == 0.999


def test_ema_update_against_hand_computation():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.BatchNorm1d(1))
    ema = EMA(model)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0]]))
    model.train()(torch.randn(8, 2))  # moves BatchNorm's running statistics, counts one batch
    ema.update(model, decay=0.75)
    after, now = ema.module.state_dict(), model.state_dict()
    for key in ("0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"):
        assert torch.allclose(after[key], 0.75 * before[key] + 0.25 * now[key]), key
    assert after["1.num_batches_tracked"] == 1  # integers are copied
    assert not any(p.requires_grad for p in ema.parameters())


def test_plan_against_hand_values():
    # 100 steps/epoch at 0.25 s, 2 checkpoints of 12.5 s (0.25 s a step), 5 s per epoch end: an epoch is 55 s.
    # At step 30 with 200 s left, finishing epoch 0 costs 70 * 0.5 + 5 = 40 s; (200 - 40) // 55 = 2 more epochs;
    # the 50 s left then hold a partial epoch of (50 - 5) // 0.5 = 90 steps and its end.
    plan = dict(global_step=30, epoch=0, batch_in_epoch=30, steps_per_epoch=100, step_seconds=0.25,
                end_seconds=5.0, save_seconds=12.5, saves_per_epoch=2)
    assert plan_total_steps(time_left=200, max_epochs=50, **plan) == 390
    assert plan_total_steps(time_left=190, max_epochs=50, **plan) == 370
    assert plan_total_steps(time_left=155, max_epochs=50, **plan) == 300  # nothing left for a partial epoch
    assert plan_total_steps(time_left=200, max_epochs=2, **plan) == 200
    # 30 s left cannot finish the epoch: stop inside it, after (30 - 5) // 0.5 = 50 more steps
    assert plan_total_steps(time_left=30, max_epochs=50, **plan) == 80
    assert plan_total_steps(time_left=1, max_epochs=50, **plan) == 31  # at least one step


def test_batches_keep_the_pixel_budget_at_every_scale(data_root):
    config = DataConfig(root=str(data_root), val_size=8, pixel_budget=9000, max_batch_size=8, workers=0,
                        scale_range=(0.7, 1.3))
    data = FinetuneData(config, seed=0)
    data.setup()
    heights = set()
    for epoch in range(3):
        data.train_batches.sampler.set_epoch(epoch)
        for batch in data.train_dataloader():
            heights |= {int((~batch.mask[b]).any(1).sum()) for b in range(len(batch))}
            assert len(batch) * batch.images.shape[2] * batch.images.shape[3] <= config.pixel_budget
    assert min(heights) < 20 and max(heights) > 28  # 24 px images, rescaled from 0.7 to 1.3
    assert sum(len(b) for b in data.val_dataloader()) == 8


def test_checkpoint_writes_are_atomic(tmp_path):
    """A write that fails half-way leaves the previous checkpoint whole and no temporary file behind."""
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    with pytest.raises(Exception):
        io.save_checkpoint({"step": 2, "w": torch.zeros(3), "bad": lambda: None}, path)  # fails while pickling
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_loader_takes_lightnings_epoch_and_skips_what_was_trained_on(data_root):
    from lightning.fabric.utilities.data import _set_sampler_epoch  # what Lightning calls before each epoch

    data = FinetuneData(DataConfig(root=str(data_root), val_size=8, pixel_budget=9000, workers=0), seed=0)
    data.setup()
    order = {}
    for epoch in (1, 2):
        loader = data.train_dataloader()
        _set_sampler_epoch(loader, epoch)
        order[epoch] = [batch.indices for batch in loader]
        assert loader.state_dict() == {"epoch": epoch, "batches_done": len(order[epoch])}
    assert order[1] != order[2]  # a new order each epoch
    resumed = data.train_dataloader()
    resumed.load_state_dict({"epoch": 2, "batches_done": 3})
    _set_sampler_epoch(resumed, 2)
    assert [batch.indices for batch in resumed] == order[2][3:]
    _set_sampler_epoch(resumed, 3)  # the next epoch starts at its beginning
    assert len(list(resumed)) == len(resumed)


# ---------------------------------------------------------------- the command


@pytest.mark.parametrize("assignment, message", [
    ("data.bogus=1", "config.data: unknown key 'bogus'"),
    ("optim.lr=fast", "config.optim.lr: expected float, got 'fast'"),
    ("trainer.precision=16", "config.trainer.precision: expected str, got 16"),
    ("trainer.precision=fp8", "precision 'fp8' must be one of 32, bf16-mixed"),
])
def test_config_errors_are_one_line(assignment, message, tmp_path, capsys):
    assert main(["finetune", "--preset", "finetune-tiny", "--set", assignment, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


@pytest.mark.parametrize("old", ["tiny", "small", "cpu", "crohme"])
def test_old_preset_names_are_refused_with_the_new_one(old, tmp_path, capsys):
    """The fine-tuning presets took their stage's prefix, as pretrain-*, attend-* and train-* have theirs."""
    with pytest.raises(SystemExit) as exit:
        main(["finetune", "--preset", old, "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit.value.code == 2 and f"preset {old!r} is now called 'finetune-{old}'" in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_config_file_errors_are_one_line(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("model:\n  d_model: 64\nschedule:\n  steps: 3\n")
    assert main(["finetune", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown key 'schedule'" in err


def test_tiny_preset_trains_end_to_end(reference_run):
    for name in ("config.yaml", "log.jsonl", "curves.png", "best.ckpt", "last.ckpt"):
        assert (reference_run / name).is_file(), name
    assert (reference_run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = read_log(reference_run / "log.jsonl")
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
    # the logged learning rate is the schedule's (warm-up 5, cosine to 1% over 40 steps, peak 3e-3)
    assert all(r["lr"] == pytest.approx(3e-3 * lr_factor(r["step"] - 1, 5, 40, 0.01)) for r in steps)
    assert all(r["images_per_s"] > 0 and r["elapsed_s"] > 0 for r in steps)
    assert np.mean([r["loss"] for r in steps[-5:]]) < np.mean([r["loss"] for r in steps[:5]]) - 1.0
    validations = [r for r in records if "val_exprate" in r and "event" not in r]
    assert [r["step"] for r in validations] == [10, 20, 30, 40] and all(r["val_n"] == 8 for r in validations)
    # keep_checkpoints 2: the last two validations' checkpoints, for maskmatch average
    assert sorted(p.name for p in (reference_run / "kept").iterdir()) == ["step-0000030.ckpt", "step-0000040.ckpt"]

    checkpoint = torch.load(reference_run / "last.ckpt", map_location="cpu", weights_only=True)
    meta = checkpoint["maskmatch"]  # checkpoints describe themselves
    assert meta["stage"] == "finetune" and meta["format"] == 1 and meta["total_steps"] == 40
    assert meta["config"]["model"]["d_model"] == 64 and meta["vocabulary"] == list(Vocabulary.load().symbols)
    assert checkpoint["global_step"] == 40

    pytest.importorskip("maskmatch.weights")
    from maskmatch.weights import load_weights

    model, manifest = load_weights(reference_run / "model.safetensors")
    best = torch.load(reference_run / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, best[f"ema.module.{key}"]), key  # the exported model is best.ckpt's EMA
    assert manifest["metrics"]["validation"]["exprate"] == max(r["val_exprate"] for r in validations)
    assert manifest["command"].startswith("maskmatch finetune")


def test_a_run_killed_mid_epoch_resumes_step_for_step(data_root, reference_run, tmp_path):
    """SIGKILL after a mid-epoch checkpoint of epoch 1, with a data-loader worker; the resumed run repeats
    the uninterrupted one exactly: same steps, same batches (same losses), same final weights."""
    run = tmp_path / "killed"
    kill_after_checkpoint(finetune_args(data_root, run, "--set", "data.workers=1"), run,
                          lambda step: step > STEPS_PER_EPOCH and step % STEPS_PER_EPOCH)
    resumed_from = [r for r in read_log(run / "log.jsonl") if r.get("event") == "checkpoint"][-1]["step"]
    assert STEPS_PER_EPOCH < resumed_from < EPOCHS * STEPS_PER_EPOCH

    assert main(["finetune", "--out", str(run), "--resume", "--quiet", "--set", "data.workers=1"]) == 0
    starts = [r for r in read_log(run / "log.jsonl") if r.get("event") == "start"]
    assert [r["step"] for r in starts] == [0, resumed_from]  # continued, not restarted from 0
    assert starts[1]["planned_steps"] == EPOCHS * STEPS_PER_EPOCH
    expected, got = losses(reference_run), losses(run)
    assert sorted(got) == sorted(expected) == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
    assert all(got[s] == pytest.approx(expected[s], rel=1e-5) for s in expected), "data order or state diverged"
    a = torch.load(reference_run / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(run / "last.ckpt", map_location="cpu", weights_only=True)
    assert b["global_step"] == EPOCHS * STEPS_PER_EPOCH
    for key, value in a["state_dict"].items():  # model and EMA
        assert torch.allclose(value.float(), b["state_dict"][key].float(), atol=1e-6), key


def test_resume_refuses_to_change_what_is_learned(reference_run, capsys):
    assert main(["finetune", "--out", str(reference_run), "--resume", "--set", "optim.lr=0.1"]) == 2
    assert "optim.lr cannot change" in capsys.readouterr().err
    assert main(["finetune", "--preset", "finetune-tiny", "--out", str(reference_run)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_non_finite_loss_stops_naming_step_and_batch(data_root, tmp_path, capsys):
    assert main(finetune_args(data_root, tmp_path / "run", "--set", "optim.lr=1.0e+30")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "non-finite loss" in err
    assert "at step 2 (epoch 0, batch 1: images e0" in err  # the first step's huge update breaks the second


def test_time_budget_plans_the_run_and_ends_in_time(data_root, tmp_path):
    budget, run = 12.0, tmp_path / "budget"
    start = time.monotonic()
    assert main(finetune_args(data_root, run, "--set", "trainer.max_epochs=1000", "--time-budget", str(budget))) == 0
    wall = time.monotonic() - start
    assert wall < budget + 1.0  # the command's own clock starts a few milliseconds after ours
    records = read_log(run / "log.jsonl")
    [plan] = [r for r in records if r.get("event") == "plan"]
    last_step = max(r["step"] for r in records if "loss" in r)
    assert 0.5 * plan["planned_steps"] <= last_step <= plan["planned_steps"] < 1000 * STEPS_PER_EPOCH
    checkpoint = torch.load(run / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == last_step and checkpoint["maskmatch"]["total_steps"] == plan["planned_steps"]
    assert (run / "best.ckpt").is_file()


def test_init_continues_a_whole_model_from_its_loss(data_root, reference_run, tmp_path, capsys):
    """--init with a full exported model (every key, the EMA too) warm-restarts the schedule from the loaded weights:
    the continued run starts at the loss the reference run ended with, far below a fresh start."""
    run = tmp_path / "continued"
    assert main(finetune_args(data_root, run, "--init", str(reference_run / "model.safetensors"),
                              "--set", "trainer.max_epochs=1")) == 0
    assert "initialized the whole model" in capsys.readouterr().out
    fresh, continued = losses(reference_run), losses(run)
    first = np.mean([continued[s] for s in (1, 2, 3)])
    assert first < np.mean([fresh[s] for s in (1, 2, 3)]) - 1.0
    assert first < np.mean([fresh[s] for s in range(EPOCHS * STEPS_PER_EPOCH - 4, EPOCHS * STEPS_PER_EPOCH + 1)]) + 0.5
    lrs = [r["lr"] for r in read_log(run / "log.jsonl") if "lr" in r]
    assert lrs[0] < lrs[4]  # the warm-up starts again
    started = read_manifest(run / "model.safetensors")["training"]["init"]  # for the training history
    assert started["sha256"] == read_manifest(reference_run / "model.safetensors")["weights"]["sha256"]


def test_epochs_draw_the_cache_variants(data_root, tmp_path):
    """data.variants V: each epoch shows every training image as its plain render or one of V variants, drawn per
    epoch; the sampler packs each image at its largest variant; validation stays plain."""
    import shutil

    from maskmatch.data.batching import CacheDataset

    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    plain = Cache.open(root / "train")
    writer = CacheWriter(root / "train" / "variants", plain.vocabulary, plain.render_config, {"variants": 2})
    for i in range(len(plain)):
        image, ids = plain[i]
        for v in (1, 2):  # variant v: the image widened by 2 v columns of ink, so it can be told apart
            writer.add(f"{plain.names[i]}#{v}", np.pad(image, ((0, 0), (0, 2 * v)), constant_values=255), ids.tolist())
    writer.close()
    config = DataConfig(root=str(root), val_size=8, variants=2, workers=0, scale_range=(1.0, 1.0))
    data = FinetuneData(config, seed=0)
    data.setup()
    assert isinstance(data.val_set, CacheDataset) and not isinstance(data.val_set, type(data.train_set))
    assert (data.train_set.sizes[:, 1] == plain.sizes[data.train_set.indices, 1] + 4).all()
    drawn = {}
    for epoch in (0, 1):
        data.train_batches.sampler.set_epoch(epoch)
        keys = sorted(k for b in data.train_batches for k in b)
        assert {len(k) for k in keys} == {3} and {k[2] for k in keys} == {0, 1, 2}
        drawn[epoch] = [k[2] for k in keys]
    assert drawn[0] != drawn[1]  # drawn anew each epoch
    loaded = ScaledDataset(data.train_set, 10**4, 10**4)
    for position, scale, v in keys[:6]:
        width = plain.sizes[data.train_set.indices[position], 1]
        assert loaded[(position, scale, v)][1].shape[1] == width + 2 * v
    assert next(iter(data.train_dataloader())).images.shape[0] > 0
    with pytest.raises(UserError, match="data.variants 3"):
        FinetuneData(DataConfig(root=str(root), val_size=8, variants=3), seed=0)


def test_subexpressions_join_training_but_never_from_held_out_expressions(data_root, tmp_path):
    """data.subexpressions: the sub-expressions of the training images follow them in the training set; those of
    held-out (or unlabelled) expressions never train; validation stays the plain slice."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    plain = Cache.open(root / "train")
    writer = CacheWriter(root / "train" / "subexpressions", plain.vocabulary, plain.render_config)
    for i in range(len(plain)):
        image, ids = plain[i]
        writer.add(f"{plain.names[i]}~1", image[:, : image.shape[1] // 2], ids[:2].tolist())
    writer.close()
    config = DataConfig(root=str(root), val_size=8, subexpressions=True, workers=0, scale_range=(1.0, 1.0))
    data = FinetuneData(config, seed=0)
    data.setup()
    base = len(data.train_set.base)
    names = data.names(list(range(len(data.train_set))))
    held_out = {plain.names[i] for i in data.val_set.indices}
    assert len(data.train_set) == 2 * base and all(n.endswith("~1") for n in names[base:])
    assert [n.split("~")[0] for n in names[base:]] == names[:base] and not set(names) & held_out
    assert sorted(k[0] for b in data.train_batches for k in b) == list(range(2 * base))
    assert next(iter(data.train_dataloader())).images.shape[0] > 0
    half = FinetuneData(DataConfig(root=str(root), val_size=8, subexpressions=True, label_fraction=0.5), seed=0)
    assert len(half.train_set) == 2 * len(half.train_set.base) < 2 * base
    with pytest.raises(UserError, match="data.subexpressions"):
        FinetuneData(DataConfig(root=str(data_root), val_size=8, subexpressions=True), seed=0)


def test_validate_average_and_calibrate_on_a_run(data_root, reference_run, tmp_path, capsys):
    """validate: greedy ExpRate on the run's held-out slice; average: the mean of checkpoints' EMA weights (one
    checkpoint twice is that checkpoint), validated beside --like; calibrate: the fit lands in the manifest."""
    model = reference_run / "model.safetensors"
    assert main(["validate", str(model), "--data", str(data_root)]) == 0
    said = capsys.readouterr().out
    assert re.search(r"validation ExpRate \d+\.\d\d% \(greedy, \d+ held-out images\)", said)
    assert main(["validate", str(model)]) == 0 and capsys.readouterr().out == said  # --data: where it trained
    assert model_data(model) == str(data_root) and model_data(tmp_path / "none.safetensors") == DEFAULT_DATA
    last, out = reference_run / "last.ckpt", tmp_path / "avg.safetensors"
    assert main(["average", str(last), str(last), "--like", str(model), "--data", str(data_root),
                 "--out", str(out)]) == 0
    assert "average of 2 checkpoints" in capsys.readouterr().out
    expected = ema_model(torch.load(last, map_location="cpu", weights_only=False)).state_dict()
    averaged, manifest = load_weights(out)
    assert all(torch.allclose(averaged.state_dict()[k].float(), v.float()) for k, v in expected.items())
    assert manifest["training"]["averaged_steps"] == [EPOCHS * STEPS_PER_EPOCH] * 2
    soup = tmp_path / "soup.safetensors"  # whole models average too (runs from one start: a model soup)
    assert main(["average", str(model), str(model), "--like", str(model), "--data", str(data_root),
                 "--out", str(soup)]) == 0
    alone = load_weights(model)[0].state_dict()
    assert all(torch.equal(v, alone[k]) for k, v in load_weights(soup)[0].state_dict().items())
    assert main(["validate", str(model), str(soup), "--ensemble", "--data", str(data_root)]) == 0
    assert f"{model} + {soup}\tvalidation ExpRate" in capsys.readouterr().out
    other, manifest = load_weights(model)  # a second member: the model nudged (the soup above is the model itself)
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    second = tmp_path / "other.safetensors"
    save_weights(second, other, {k: manifest[k] for k in ("command", "training")}, manifest_vocabulary(manifest),
                 render_config(manifest))
    folder = tmp_path / "ensemble"  # an ensemble file: validated members, copied beside it, calibrated as one
    assert main(["ensemble", str(model), str(second), "--data", str(data_root), "--out", str(folder)]) == 0
    assert "the ensemble is" in capsys.readouterr().out
    assert main(["calibrate", "--model", str(folder / "ensemble.json"), "--data", str(data_root),
                 "--out", str(tmp_path), "--beam", "2"]) == 0
    rec = Recognizer.load(folder / "ensemble.json", "cpu")
    assert rec.members == 2 and rec.manifest["calibration"]["beam"]["beam_size"] == 2
    assert len(rec.manifest["metrics"]["validation"]["members"]) == 2
    assert main(["calibrate", "--model", str(out), "--data", str(data_root), "--out", str(tmp_path), "--beam", "2"]) == 0
    fit = read_manifest(out)["calibration"]
    assert {"greedy", "beam", "method", "images"} <= set(fit) and fit["beam"]["beam_size"] == 2
    assert "| confidence | answers |" in (tmp_path / "calibration.md").read_text("utf-8")


def test_recipes_table_from_the_runs_files(reference_run, tmp_path):
    """`maskmatch recipes` reads config.yaml and log.jsonl: the run's encoder, its steps and last validation."""
    assert main(["recipes", str(reference_run), "--out", str(tmp_path), "--note", "one thread"]) == 0
    text = (tmp_path / "recipes.md").read_text("utf-8")
    last = [r for r in read_log(reference_run / "log.jsonl") if "val_loss" in r][-1]
    [row] = [line for line in text.splitlines() if line.startswith(f"| {reference_run.name} |")]
    assert "densenet g8 x [2, 2, 2]" in row and f"| {EPOCHS * STEPS_PER_EPOCH} |" in row
    assert f"| {last['val_loss']:.3f} |" in row and "one thread" in text and "maskmatch recipes" in text
    assert (tmp_path / "recipes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| scratch |" in row and "| plain |" in row
    best = max(r["val_exprate"] for r in read_log(reference_run / "log.jsonl") if "val_exprate" in r)
    assert row.endswith(f"| {best:.1f} |")


def test_recipes_under_another_name(reference_run, tmp_path):
    """--name and --title write another table (results/augmentation.md) and keep the command that made it."""
    assert main(["recipes", str(reference_run), "--out", str(tmp_path), "--name", "augmentation",
                 "--title", "Augmentation at equal time"]) == 0
    text = (tmp_path / "augmentation.md").read_text("utf-8")
    assert text.startswith("# Augmentation at equal time") and "--name augmentation" in text
    assert "(augmentation.png)" in text and (tmp_path / "augmentation.png").is_file()
    assert not (tmp_path / "recipes.md").exists()


def test_recipes_name_the_training_data(tmp_path):
    """The table's training-data column tells the augmentation arms apart: plain, variants with their swap share
    (from the cache's meta.json), and whether sub-expressions trained too."""
    import json
    from types import SimpleNamespace

    from maskmatch.recipes import training_data

    (tmp_path / "train" / "variants").mkdir(parents=True)
    (tmp_path / "train" / "variants" / "meta.json").write_text(json.dumps({"swap_share": 0.3}), "utf-8")

    def data(**kw):
        return SimpleNamespace(data=DataConfig(root=str(tmp_path), **kw))

    assert training_data(data()) == "plain"
    assert training_data(data(subexpressions=True)) == "plain, sub-expressions"
    assert training_data(data(variants=4)) == "4 variants, swaps 30%"
    assert training_data(data(variants=4, subexpressions=True)) == "4 variants, swaps 30%, sub-expressions"


def test_train_benchmark_times_the_real_step(data_root, tmp_path, capsys):
    """`maskmatch train-benchmark` runs a preset's real data and step: a row with images/s and achieved GFLOP/s."""
    table = tmp_path / "throughput.md"
    assert main(["train-benchmark", f"finetune-tiny:data.root={data_root}", "--batches", "3", "--threads", "1",
                 "--markdown", str(table)]) == 0
    out = capsys.readouterr().out
    [row] = [line for line in out.splitlines() if line.startswith("| finetune-tiny:")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1].endswith(" M") and float(cells[4]) > 0 and float(cells[6]) > 0 and cells[7].endswith("%")
    assert main(["train-benchmark", "nosuch"]) == 2
    assert main(["train-benchmark", "cpu"]) == 2 and "'cpu' is now called 'finetune-cpu'" in capsys.readouterr().err
    assert row in table.read_text("utf-8") and "maskmatch train-benchmark finetune-tiny:" in table.read_text("utf-8")


def test_train_benchmark_recipes_take_list_values_and_name_bad_ones(capsys):
    """A comma inside a list value belongs to it ('model.stage_layers=[1,2,1],data.workers=0' is two overrides);
    a value that is not YAML is a one-line error, not a traceback."""
    from maskmatch.train_benchmark import recipe_config

    config = recipe_config("finetune-cpu:model.stage_layers=[1,2,1],data.workers=0")
    assert config.model.stage_layers == (1, 2, 1) and config.data.workers == 0
    assert main(["train-benchmark", "finetune-cpu:model.stage_layers=[1,2"]) == 2
    assert "'model.stage_layers=[1,2': not a YAML value" in capsys.readouterr().err


def test_train_benchmark_reads_an_epochs_rate_from_its_batches_mean_time():
    """An epoch of 100 images in 10 batches whose timed 2 took 1 s lasts 5 s: 20 images/s, whatever the timed
    batches held; a sum over those 2 batches (FLOPs, pixels) is scaled to the epoch's images the same way."""
    from types import SimpleNamespace

    from maskmatch.train_benchmark import epoch_rate, per_epoch_image

    class Batches:  # an epoch's batches as the benchmark reads them: its images' sizes and its batch count
        sampler = SimpleNamespace(sizes=np.zeros((100, 2)))

        def __len__(self):
            return 10

    data = SimpleNamespace(train_batches=Batches())
    assert epoch_rate(data, timed=2, seconds=1.0) == pytest.approx(20.0)
    assert per_epoch_image(data, timed=2, total=8.0) == pytest.approx(0.4)  # 4 a batch, 40 in all, over 100 images


def test_train_benchmark_profile_finds_every_stages_phases(data_root, capsys):
    """--profile: a row for each phase of each stage's step, found in the code that trains (a renamed or moved
    function would drop its row), nested rows within their parent, and top-level phases that do not overlap."""
    sets = f"data.root={data_root},data.val_size=8"
    assert main(["train-benchmark", f"finetune-tiny:data.root={data_root}", f"pretrain-tiny:{sets}",
                 f"attend-tiny:{sets}", "--batches", "2", "--threads", "1", "--profile"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.count("|") == 5 and " ms" not in line]
    rows: dict[str, list[tuple[str, float, float]]] = {}
    for line in lines:
        recipe, phase, ms, share = (c.strip() for c in line.strip("|").split("|"))
        if share.endswith("%"):
            rows.setdefault(recipe.partition(":")[0], []).append((phase, float(ms), float(share[:-1])))
    expected = {"finetune-tiny": ["encoder", "decoder", "loss", "backward", "optimizer (AdamW)", "weight EMA"],
                "pretrain-tiny": ["two views of each image", "warp", "encoder forward (both views)", "local loss"],
                "attend-tiny": ["teacher forward", "masking", "student forward", "teacher update (EMA)"]}
    for recipe, phases in expected.items():
        names = [p.replace("&nbsp;", "") for p, _, _ in rows[recipe]]
        assert all(any(n.startswith(e) for n in names) for e in phases), (recipe, names)
        top = [(p, ms, share) for p, ms, share in rows[recipe] if not p.startswith("&nbsp;")]
        assert top[-1][0].startswith("the rest") and top[-1][2] >= 0, top  # the phases overlap nowhere
        assert abs(sum(share for _, _, share in top) - 100) < 0.5
        for (p, ms, _), (q, inner, _) in zip(rows[recipe], rows[recipe][1:]):
            if q.count("&nbsp;") > p.count("&nbsp;"):
                assert inner <= ms + 1e-6, (p, q)


def test_train_benchmark_times_stages_1_and_2_in_their_own_loops(data_root, capsys):
    """A pretrain-* or attend-* preset runs that stage's Lightning loop (views, masking, teacher): a row each."""
    sets = f"data.root={data_root},data.val_size=8"
    assert main(["train-benchmark", f"pretrain-tiny:{sets}", f"attend-tiny:{sets}", "--batches", "2",
                 "--threads", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| pretrain-", "| attend-"))]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[4]) > 0 and float(cells[5]) > 0, row  # images/s, GFLOP per image
