"""Fusion of stage 2's attention into the recognizer: none is the plain recognizer; gate and tokens decode."""

import json

import pytest
import torch
from torch import nn

from test_model import synthetic_batch

from maskmatch.config import from_dict
from maskmatch.errors import UserError
from maskmatch.model import HMERModel, ModelConfig, bidirectional_targets
from maskmatch.model.decoder import Decoder
from maskmatch.model.encoder import Encoder
from maskmatch.weights import load_weights, save_weights


class PlainRecognizer(nn.Module):
    """The recognizer as it was before fusion existed: encoder, then decoder on its features."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.encoder, self.decoder = Encoder(config), Decoder(config)

    def forward(self, images, mask, tokens_in):
        features, feature_mask = self.encoder(images, mask)
        if tokens_in.shape[0] == 2 * features.shape[0]:
            features, feature_mask = torch.cat((features, features)), torch.cat((feature_mask, feature_mask))
        return self.decoder(features, feature_mask, tokens_in)


def batch_inputs():
    images, mask, tokens, lengths = synthetic_batch()
    return images, mask, bidirectional_targets(tokens, lengths)[0]


def test_fusion_none_is_the_plain_recognizer():
    config = ModelConfig.tiny()
    torch.manual_seed(0)
    model = HMERModel(config).eval()
    torch.manual_seed(0)
    plain = PlainRecognizer(config).eval()
    assert model.attention is None and model.fusion is None
    assert list(model.state_dict()) == list(plain.state_dict())  # same names, same order
    for (name, a), b in zip(model.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(a, b), name  # same seed, same initial weights
    images, mask, inputs = batch_inputs()
    with torch.no_grad():
        assert torch.equal(model(images, mask, inputs), plain(images, mask, inputs))


@pytest.mark.parametrize("fusion", ["gate", "tokens"])
def test_fused_models_add_only_attention_and_fusion_tensors(fusion):
    config = ModelConfig.tiny(fusion=fusion, attention_maps=3)
    torch.manual_seed(0)
    fused = HMERModel(config)
    torch.manual_seed(0)
    plain = HMERModel(ModelConfig.tiny())
    extra = fused.state_dict().keys() - plain.state_dict().keys()
    assert plain.state_dict().keys() <= fused.state_dict().keys()
    assert extra and all(k.startswith(("attention.", "fusion.")) for k in extra)
    for name, value in plain.state_dict().items():
        assert torch.equal(fused.state_dict()[name], value), name  # encoder and decoder draw the same weights


def test_fresh_gate_is_the_identity_and_then_learns():
    torch.manual_seed(1)
    gate = HMERModel(ModelConfig.tiny(fusion="gate", attention_maps=3)).eval()
    plain = HMERModel(ModelConfig.tiny()).eval()
    missing, unexpected = plain.load_state_dict(gate.state_dict(), strict=False)
    assert not missing and all(k.startswith(("attention.", "fusion.")) for k in unexpected)
    images, mask, inputs = batch_inputs()
    with torch.no_grad():
        assert torch.equal(gate(images, mask, inputs), plain(images, mask, inputs))
    gate.train()
    logits = gate(images, mask, inputs)
    logits.logsumexp(-1).mean().backward()
    assert gate.fusion.gate.weight.grad.abs().sum() > 0  # the maps reach the loss through the gate


def test_token_fusion_memory_layout():
    torch.manual_seed(2)
    model = HMERModel(ModelConfig.tiny(fusion="tokens", attention_maps=5)).eval()
    images, mask = torch.rand(2, 1, 40, 30), torch.zeros(2, 40, 30, dtype=torch.bool)
    mask[1, 20:] = True  # image 1: 2 of 3 rows of cells valid
    with torch.no_grad():
        features, feature_mask = model.encoder(images, mask)  # (2, 3, 2, 64)
        memory, memory_mask = model.encode(images, mask)
        maps, _ = model.attention(features, feature_mask)
    assert memory.shape == (2, 3 + 3, 2, 64)  # ceil(5 / 2) = 3 rows of tokens
    assert torch.equal(memory[:, :3], features) and torch.equal(memory_mask[:, :3], feature_mask)
    assert memory_mask[:, 3:].flatten(1).tolist() == [[False] * 5 + [True]] * 2  # 5 tokens, then padding
    assert (memory[:, 3:].flatten(1, 2)[:, 5] == 0).all()
    torch.testing.assert_close(model.attention_maps(images, mask)[0], maps)


@pytest.mark.parametrize("fusion", ["gate", "tokens"])
def test_fused_decoding_beam_one_is_greedy_and_independent_of_the_batch(fusion):
    torch.manual_seed(3)
    model = HMERModel(ModelConfig.tiny(fusion=fusion, attention_maps=6, max_len=10)).eval()
    with torch.no_grad():
        if fusion == "gate":
            nn.init.normal_(model.fusion.gate.weight)  # not the identity
    images, mask, inputs = batch_inputs()
    greedy = model.greedy(images, mask)
    beam = model.beam_search(images, mask, beam_size=1, rescore=False)
    assert [h.ids for h in beam] == [h.ids for h in greedy]
    assert [h.score for h in beam] == pytest.approx([h.score for h in greedy], abs=1e-5)
    with torch.no_grad():
        batched = model(images, mask, inputs[:4])  # (4, L, V) left to right
        alone = model(images[3:, :, :32, :64], mask[3:, :32, :64], inputs[3:4])  # image 3 is 32 x 64
    torch.testing.assert_close(alone[0], batched[3], atol=1e-4, rtol=0)
    assert len(model.beam_search(images, mask, beam_size=3)) == 4


def test_config_validates_fusion():
    with pytest.raises(ValueError, match="fusion"):
        ModelConfig(fusion="concat")
    with pytest.raises(TypeError):
        ModelConfig(fusion=1)
    with pytest.raises(ValueError):
        ModelConfig(attention_maps=0)
    with pytest.raises(UserError):
        from_dict(ModelConfig, {"fusion": "sum"})
    assert from_dict(ModelConfig, {"fusion": "tokens", "attention_maps": 4}).attention_maps == 4


def test_weights_without_fusion_fields_still_load(tmp_path):
    torch.manual_seed(4)
    model = HMERModel(ModelConfig.tiny(max_len=10)).eval()
    path = tmp_path / "old.safetensors"
    save_weights(path, model, {"command": "test"})
    manifest_file = path.with_suffix(".json")
    manifest = json.loads(manifest_file.read_text())
    del manifest["model"]["fusion"], manifest["model"]["attention_maps"]  # as written before fusion existed
    manifest_file.write_text(json.dumps(manifest))
    loaded, _ = load_weights(path)
    assert loaded.config.fusion == "none" and loaded.attention is None
    images, mask, inputs = batch_inputs()
    with torch.no_grad():
        assert torch.equal(loaded(images, mask, inputs), model(images, mask, inputs))
    fused = HMERModel(ModelConfig.tiny(max_len=10, fusion="gate"))
    save_weights(tmp_path / "gate.safetensors", fused)
    assert load_weights(tmp_path / "gate.safetensors")[0].config.fusion == "gate"
