"""Stage 2's LightningModule on CPU: the loss falls, the hand-off has stage 3's names; presets load; maps draw."""

import warnings
from importlib import resources

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from conftest import glyph

from maskmatch.attend.config import AttendConfig, AttendOptimConfig
from maskmatch.attend.drawing import draw_maps
from maskmatch.attend.module import AttendModule
from maskmatch.attend.schedule import MaskSchedule
from maskmatch.config import from_dict
from maskmatch.data.batching import collate
from maskmatch.engine.config import TrainerConfig
from maskmatch.engine.options import with_shared_model
from maskmatch.model import HMERModel, ModelConfig


def expressions(n: int, seed: int) -> list:
    """n synthetic 'expressions' of 3 to 6 glyphs at random heights, 48 x 96, as collate items."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        image = np.zeros((48, 96), np.uint8)
        for j in range(int(rng.integers(3, 7))):
            top = int(rng.integers(0, 36))
            image[top : top + 12, 4 + 14 * j : 12 + 14 * j] = glyph(int(rng.integers(0, 64)))
        items.append((i, image, np.array([5])))
    return items


def tiny_config(**masking) -> AttendConfig:
    # a fixed masking schedule, so that the task does not get harder while the test watches the loss
    masking = {"ratio": (0.3, 0.3), "block_cells": (1, 1), "guided": (0.0, 0.0), **masking}
    return AttendConfig(model=ModelConfig.tiny(attention_maps=4), masking=MaskSchedule(**masking),
                        optim=AttendOptimConfig(lr=3e-3, warmup_steps=3, teacher_momentum=(0.9, 0.9)),
                        trainer=TrainerConfig(precision="32"))


class Losses(L.Callback):
    def __init__(self):
        self.seen = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def fit(module: AttendModule, steps: int, val: bool = False) -> list[dict]:
    items = expressions(16, 0)
    train = [collate(items[i : i + 8]) for i in (0, 8)]
    losses = Losses()
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[losses],
                        limit_val_batches=1.0 if val else 0, num_sanity_val_steps=0, check_val_every_n_epoch=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaders = {"train_dataloaders": DataLoader(train, batch_size=None)}
        if val:
            loaders["val_dataloaders"] = DataLoader([collate(expressions(8, 1))], batch_size=None)
        trainer.fit(module, **loaders)
    return losses.seen


def test_loss_falls_on_a_tiny_cpu_run():
    torch.manual_seed(0)
    module = AttendModule(tiny_config())
    module.total_steps = 40
    seen = fit(module, 40)
    assert len(seen) == 40
    first, last = np.mean([s["loss"] for s in seen[:5]]), np.mean([s["loss"] for s in seen[-5:]])
    match_first, match_last = np.mean([s["match"] for s in seen[:5]]), np.mean([s["match"] for s in seen[-5:]])
    assert last < 0.6 * first and match_last < 0.5 * match_first, (first, last, match_first, match_last)
    assert all(0.15 < s["mask_ratio"] < 0.45 for s in seen)
    assert seen[0]["momentum"] == pytest.approx(0.9) and seen[0]["block"] == 16.0


def test_progressive_run_validates_and_hands_off_stage_three_names():
    torch.manual_seed(1)
    module = AttendModule(tiny_config(ratio=(0.1, 0.6), block_cells=(1, 2), guided=(0.0, 1.0), span=(0.0, 0.5)))
    module.total_steps = 20
    seen = fit(module, 20, val=True)
    assert seen[0]["guided"] == 0.0 and seen[-1]["guided"] == 1.0 and seen[-1]["block"] == 32.0
    assert 0.0 <= module.val_match <= 100.0 and module.val_n == 8
    handoff = module.handoff()
    fused = HMERModel(ModelConfig.tiny(attention_maps=4, fusion="gate"))
    expected = {k: v for k, v in fused.state_dict().items() if k.startswith(("encoder.", "attention."))}
    assert handoff.keys() == expected.keys()
    assert all(handoff[k].shape == v.shape for k, v in expected.items())
    missing, unexpected = fused.load_state_dict(handoff, strict=False)
    assert not unexpected and set(missing) == {k for k in fused.state_dict() if k.startswith(("decoder.", "fusion."))}
    assert torch.equal(fused.encoder.proj.weight, module.teacher.module.encoder.proj.weight)  # the teacher's
    # the teacher moved towards the student but is not the student
    t, s = module.teacher.module.encoder.proj.weight, module.encoder.proj.weight
    assert not torch.equal(t, s)


@pytest.mark.parametrize("name", ["attend-tiny", "attend-small", "attend-crohme"])
def test_presets_load(name):
    text = resources.files("maskmatch").joinpath("presets", f"{name}.yaml").read_text("utf-8")
    config = from_dict(AttendConfig, with_shared_model(yaml.safe_load(text), name))
    assert config.masking.at(0.0).ratio == pytest.approx(0.1) and config.masking.at(1.0).ratio == pytest.approx(0.6)
    if name == "attend-small":
        small = resources.files("maskmatch").joinpath("presets", "finetune-small.yaml").read_text("utf-8")
        small = yaml.safe_load(small)
        small = with_shared_model(small, "finetune-small")
        encoder_fields = ("growth_rate", "block_layers", "d_model")
        assert [getattr(config.model, f) for f in encoder_fields] == [small["model"][f] for f in encoder_fields]


def test_draw_maps_renders_the_maps_over_the_image():
    image = np.zeros((40, 70), np.uint8)
    image[10:30, 5:60] = 255
    maps = np.zeros((3, 3, 5), np.float32)  # ceil(40/16) x ceil(70/16) cells
    maps[0, 0, 0] = 1.0  # map 0 on the top-left cell
    maps[1] = 1.0 / 15  # map 1 uniform
    maps[2, 2, 4] = 1.0  # map 2 on the bottom-right cell
    sheet = draw_maps(image, maps, columns=2)
    assert sheet.size == (2 * 70 + 4, 2 * 40 + 4) and sheet.mode == "RGB"
    pixels = np.asarray(sheet).astype(int)
    panel = lambda i: pixels[(i // 2) * 44 : (i // 2) * 44 + 40, (i % 2) * 74 : (i % 2) * 74 + 70]  # noqa: E731
    assert (panel(0) == image[..., None]).all()  # the image as it is
    heat = lambda k, y, x: panel(k + 1)[y, x].sum() - int(image[y, x]) * 1.2  # map k's part  # noqa: E731
    assert heat(0, 4, 4) > heat(0, 36, 66) + 300  # peak at the top left
    assert heat(1, 20, 20) > 300 and heat(1, 35, 65) > 300  # uniform: hot everywhere
    assert heat(2, 38, 68) > heat(2, 4, 4) + 150  # peak at the bottom right (its cell half outside the image)
    with pytest.raises(ValueError):
        draw_maps(image, maps[:, :2], columns=2)  # maps of another image size


def test_checkpoint_metadata_round_trip_and_bf16_losses():
    torch.manual_seed(2)
    module = AttendModule(tiny_config())
    module.total_steps, module.planned = 123, True
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["maskmatch"]["stage"] == "attend"
    fresh = AttendModule(tiny_config())
    fresh.on_load_checkpoint(checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"], strict=True)
    assert (fresh.total_steps, fresh.planned) == (123, True)
    other = AttendModule(AttendConfig(model=ModelConfig.tiny(attention_maps=2)))
    with pytest.raises(ValueError, match="model config"):
        other.on_load_checkpoint(checkpoint)
    batch = collate(expressions(4, 2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module.losses(batch.images, batch.mask, 1.0, seed=0)
    assert all(torch.isfinite(out[k]) for k in ("loss", "match", "prediction", "diversity", "entropy"))
