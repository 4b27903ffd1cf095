"""Shipped-weights format: save then load gives identical outputs, without pickle; bad files are ValueErrors."""

import hashlib
import json
import pickle
import struct
from dataclasses import asdict

import pytest
import torch

from maskmatch.data.render import RenderConfig
from maskmatch.data.vocab import Vocabulary
from maskmatch.model import HMERModel, ModelConfig
from maskmatch.weights import init_from_weights, load_weights, save_weights


@pytest.fixture(scope="module")
def model() -> HMERModel:
    torch.manual_seed(0)
    model = HMERModel(ModelConfig.tiny(max_len=10))
    with torch.no_grad():  # BatchNorm statistics away from their defaults: buffers must travel too
        for name, buffer in model.named_buffers():
            if buffer.is_floating_point():
                buffer.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture
def saved(tmp_path, model):
    path = tmp_path / "model.safetensors"
    save_weights(path, model, {"metrics": {"2014": {"exprate": 12.5}}, "command": "maskmatch evaluate ..."})
    return path


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """images (2, 1, 40, 72), mask (2, 40, 72), tokens_in (2, 5)."""
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 1, 40, 72, generator=g)
    mask = torch.zeros(2, 40, 72, dtype=torch.bool)
    mask[1, :, 50:] = True
    images[mask[:, None]] = 0
    return images, mask, torch.randint(3, 113, (2, 5), generator=g)


def test_save_then_load_gives_identical_outputs(saved, model):
    loaded, _ = load_weights(saved)
    assert not loaded.training
    images, mask, tokens = inputs()
    with torch.no_grad():
        assert torch.equal(model(images, mask, tokens), loaded(images, mask, tokens))
    for a, b in zip(model.greedy(images, mask), loaded.greedy(images, mask)):
        assert a.ids == b.ids and a.score == b.score


def test_manifest_describes_the_weights(saved, model):
    _, manifest = load_weights(saved)
    on_disk = json.loads(saved.with_suffix(".json").read_text("utf-8"))
    assert manifest == on_disk
    assert manifest["format_version"] == 1
    assert ModelConfig(**manifest["model"]) == model.config  # JSON lists read back as the tuples
    assert manifest["vocabulary"] == list(Vocabulary.load().symbols)
    assert manifest["preprocessing"]["render"] == asdict(RenderConfig())
    assert "ink bright" in manifest["preprocessing"]["convention"]
    assert manifest["metrics"] == {"2014": {"exprate": 12.5}} and manifest["command"].startswith("maskmatch")
    assert sorted(p.name for p in saved.parent.iterdir()) == ["model.json", "model.safetensors"]  # no temp files


def test_file_is_plain_safetensors_and_loads_without_pickle(saved, model, monkeypatch):
    data = saved.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])  # safetensors: u64 header length, JSON header, raw tensor bytes
    header = json.loads(data[8 : 8 + n])
    assert set(header) - {"__metadata__"} == set(model.state_dict())

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    load_weights(saved)


def test_missing_files_are_value_errors(tmp_path, saved):
    with pytest.raises(ValueError, match="no such weights file"):
        load_weights(tmp_path / "absent.safetensors")
    saved.with_suffix(".json").unlink()
    with pytest.raises(ValueError, match="manifest"):
        load_weights(saved)


def test_corrupt_files_are_value_errors(saved):
    manifest_file = saved.with_suffix(".json")
    manifest = json.loads(manifest_file.read_text("utf-8"))
    saved.write_bytes(saved.read_bytes()[:1000])  # truncated
    with pytest.raises(ValueError, match="sha256"):
        load_weights(saved)
    garbage = b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!"
    saved.write_bytes(garbage)
    manifest["weights"]["sha256"] = hashlib.sha256(garbage).hexdigest()  # a consistent manifest: the parser must refuse
    manifest_file.write_text(json.dumps(manifest), "utf-8")
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_weights(saved)
    manifest_file.write_text("{not json", "utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_weights(saved)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["model"].update(d_model=32), "do not match"),  # shapes disagree
    (lambda m: m["model"].update(num_decoder_layers=2), "do not match"),  # keys missing
    (lambda m: m["model"].update(colour="red"), "unexpected keyword"),
    (lambda m: m["vocabulary"].pop(), "vocabulary"),
    (lambda m: m.update(format_version=99), "format version"),
])
def test_manifest_weights_mismatch_is_a_value_error(saved, edit, message):
    manifest_file = saved.with_suffix(".json")
    manifest = json.loads(manifest_file.read_text("utf-8"))
    edit(manifest)
    manifest_file.write_text(json.dumps(manifest), "utf-8")
    with pytest.raises(ValueError, match=message):
        load_weights(saved)


def test_save_refuses_reserved_keys_and_wrong_suffix(tmp_path, model):
    with pytest.raises(ValueError, match="written by save_weights"):
        save_weights(tmp_path / "m.safetensors", model, {"vocabulary": []})
    with pytest.raises(ValueError, match=".safetensors"):
        save_weights(tmp_path / "m.pt", model, {})
    assert list(tmp_path.iterdir()) == []


def test_a_residual_encoder_loads_into_one_with_fewer_blocks_per_stage(tmp_path):
    """--init MODEL --set model.stage_layers=[1,2,1]: a cheaper encoder continues from a deeper one's weights (each
    stage keeps its first blocks); a deeper stage than the file's is still refused."""
    config = dict(encoder="resnet", stem_channels=8, stage_widths=(8, 16, 24), d_model=16, nhead=2,
                  dim_feedforward=32, num_decoder_layers=1)
    torch.manual_seed(0)
    deep = HMERModel(ModelConfig(stage_layers=(1, 2, 2), **config))
    save_weights(tmp_path / "deep.safetensors", deep)
    shallow = HMERModel(ModelConfig(stage_layers=(1, 2, 1), **config))
    init_from_weights(shallow, tmp_path / "deep.safetensors")
    theirs, ours = deep.state_dict(), shallow.state_dict()
    assert not any(k.startswith("encoder.backbone.stages.2.1.") for k in ours)
    assert all(torch.equal(v, theirs[k]) for k, v in ours.items())
    with pytest.raises(ValueError, match="stage_layers"):
        init_from_weights(HMERModel(ModelConfig(stage_layers=(1, 2, 3), **config)), tmp_path / "deep.safetensors")
