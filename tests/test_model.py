"""The recognizer: shapes and stride, bidirectional targets, KV cache, save/load, and overfitting one batch."""

import io

import pytest
import torch

from conftest import glyph

from maskmatch.data.vocab import EOS, PAD, SOS
from maskmatch.model import HMERModel, ModelConfig, bidirectional_targets, search
from maskmatch.model.config import STRIDE
from maskmatch.model.encoder import Encoder, fold_batchnorms

SEQUENCES = [[5, 9, 14], [20, 5, 33, 9], [41, 14, 14, 52, 20], [60, 33, 5, 71, 9, 41]]  # token ids, lengths 3-6
SIZES = [(32, 40), (32, 52), (40, 60), (32, 64)]  # (H, W) of each image


def synthetic_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """images (4, 1, 40, 64), mask (4, 40, 64), tokens (4, 6), lengths (4,): glyphs written left to right."""
    H, W, L = max(h for h, _ in SIZES), max(w for _, w in SIZES), max(map(len, SEQUENCES))
    images, mask = torch.zeros(len(SIZES), 1, H, W), torch.ones(len(SIZES), H, W, dtype=torch.bool)
    tokens = torch.full((len(SIZES), L), PAD)
    for b, ((h, w), seq) in enumerate(zip(SIZES, SEQUENCES)):
        mask[b, :h, :w] = False
        top = (h - 12) // 2 + b % 2  # vertical jitter
        for i, t in enumerate(seq):
            images[b, 0, top : top + 12, 2 + 10 * i : 10 + 10 * i] = torch.from_numpy(glyph(t)).float() / 255
        tokens[b, : len(seq)] = torch.tensor(seq)
    return images, mask, tokens, torch.tensor([len(s) for s in SEQUENCES])


@pytest.fixture(scope="module")
def trained() -> HMERModel:
    """A tiny model trained on the synthetic batch until greedy and beam search read it exactly."""
    torch.manual_seed(0)
    model = HMERModel(ModelConfig.tiny())
    images, mask, tokens, lengths = synthetic_batch()
    inputs, targets = bidirectional_targets(tokens, lengths)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(1, 401):
        model.train()
        logits = model(images, mask, inputs)  # (8, 7, V)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=PAD)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 0:
            model.eval()
            decoded = [model.greedy(images, mask), model.beam_search(images, mask, beam_size=5),
                       model.beam_search(images, mask, beam_size=5, rescore=False)]
            if all([h.ids for h in hyps] == SEQUENCES for hyps in decoded):
                return model
    pytest.fail(f"tiny model did not overfit the batch in 400 steps (last loss {loss.item():.4f})")


RESNET = dict(encoder="resnet", stem_channels=8, stage_widths=(8, 16, 24), stage_layers=(1, 2, 1))


@pytest.mark.parametrize("family", [{}, RESNET, dict(stage_layers=(1, 2, 3))], ids=["densenet", "resnet", "layers"])
def test_encoder_stride_shapes_and_mask(family):
    encoder = Encoder(ModelConfig.tiny(**family)).eval()
    images, mask = torch.rand(2, 1, 33, 70), torch.ones(2, 33, 70, dtype=torch.bool)
    mask[0], mask[1, :20, :40] = False, False
    with torch.no_grad():
        features, feature_mask = encoder(images, mask)
    assert features.shape == (2, 3, 5, 64)  # ceil(33/16), ceil(70/16)
    expected = torch.ones(2, 3, 5, dtype=torch.bool)
    expected[0], expected[1, :2, :3] = False, False  # ceil(20/16), ceil(40/16) valid cells
    assert torch.equal(feature_mask, expected)
    assert torch.equal(feature_mask, mask[:, ::STRIDE, ::STRIDE])  # CoMER's top-left rule agrees
    assert (features[feature_mask] == 0).all()


def test_default_config_channels_and_size():
    config = ModelConfig()
    encoder = Encoder(config)
    assert config.encoder_channels == encoder.backbone.out_channels == encoder.proj.in_channels == 684
    assert encoder.backbone.post_norm.num_features == 684 and encoder.proj.out_channels == 256
    assert config.stride == 16


def test_config_rejects_bad_values():
    with pytest.raises(TypeError):
        ModelConfig(d_model="256")
    with pytest.raises(ValueError):
        ModelConfig(d_model=250, nhead=5)
    with pytest.raises(ValueError, match="encoder"):
        ModelConfig(encoder="vit")
    with pytest.raises(ValueError, match="3 values"):
        ModelConfig(stage_layers=(4, 4))
    with pytest.raises(TypeError, match="stage_widths"):
        ModelConfig(stage_widths=(32, 64.0, 128))
    with pytest.raises(ValueError, match="dropout"):
        ModelConfig(attention_dropout=1.0)


def test_attention_dropout_apart_from_the_decoders_other_dropout():
    """attention_dropout sets the attention weights' dropout alone (0: PyTorch's fused CPU kernel); None keeps
    `dropout` there, as models trained before the option did."""
    tiny = ModelConfig.tiny()
    layer = HMERModel(ModelConfig(**{**tiny.__dict__, "dropout": 0.1, "attention_dropout": 0.0})).decoder.layers[0]
    assert layer.self_attn.dropout == layer.cross_attn.dropout == 0.0 and layer.drop.p == 0.1
    layer = HMERModel(ModelConfig(**{**tiny.__dict__, "dropout": 0.1})).decoder.layers[0]
    assert layer.cross_attn.dropout == 0.1


def test_encoder_family_shapes_from_config():
    """Per-block layer counts set the DenseNet's channels; the ResNet ends at its last stage's width; lists (as
    YAML and JSON give them) become tuples, so configs compare equal whatever they were read from."""
    dense = ModelConfig(growth_rate=16, stage_layers=[6, 10, 12])
    assert dense.stage_layers == (6, 10, 12) and dense == ModelConfig(growth_rate=16, stage_layers=(6, 10, 12))
    assert dense.encoder_channels == Encoder(dense).backbone.out_channels == (((32 + 96) // 2 + 160) // 2 + 192)
    resnet = ModelConfig(**RESNET)
    encoder = Encoder(resnet)
    assert resnet.encoder_channels == encoder.backbone.out_channels == encoder.proj.in_channels == 24
    assert [len(stage) for stage in encoder.backbone.stages] == [1, 2, 1]


def test_resnet_features_do_not_depend_on_padding():
    """In eval mode an image's valid cells come out the same alone as padded inside a wider, taller batch."""
    torch.manual_seed(0)
    encoder = Encoder(ModelConfig.tiny(**RESNET)).eval()
    image = torch.rand(1, 1, 37, 83)
    padded, mask = torch.zeros(1, 1, 64, 130), torch.ones(1, 64, 130, dtype=torch.bool)
    padded[..., :37, :83], mask[:, :37, :83] = image, False
    with torch.no_grad():
        alone, _ = encoder(image, torch.zeros(1, 37, 83, dtype=torch.bool))
        inside, _ = encoder(padded, mask)
    assert torch.allclose(alone[0], inside[0, :3, :6], atol=1e-5)  # ceil(37/16), ceil(83/16) cells


def test_folded_batchnorms_compute_the_same_features():
    """Recognizer.load folds each ResNet BatchNorm into its convolution: the features stay those of the model
    trained, with its running statistics and affine (set away from their defaults here), and no BatchNorm is left."""
    torch.manual_seed(1)
    encoder = Encoder(ModelConfig.tiny(**RESNET))
    for bn in (m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        for t in (bn.weight, bn.bias, bn.running_mean):
            t.data.normal_()
        bn.running_var.data.uniform_(0.5, 2.0)
    encoder.eval()
    images, mask = torch.rand(2, 1, 37, 83), torch.zeros(2, 37, 83, dtype=torch.bool)
    mask[1, 20:, 50:] = True
    with torch.no_grad():
        before, _ = encoder(images, mask)
        after, _ = fold_batchnorms(encoder)(images, mask)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in encoder.modules())
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


def test_bidirectional_targets_hand_worked():
    inputs, targets = bidirectional_targets(torch.tensor([[5, 6, 7], [8, 9, PAD]]), torch.tensor([3, 2]))
    assert inputs.tolist() == [[SOS, 5, 6, 7], [SOS, 8, 9, PAD], [EOS, 7, 6, 5], [EOS, 9, 8, PAD]]
    assert targets.tolist() == [[5, 6, 7, EOS], [8, 9, EOS, PAD], [7, 6, 5, SOS], [9, 8, SOS, PAD]]


@pytest.mark.parametrize("norm_first", [False, True])
def test_incremental_decoding_matches_full_forward(norm_first):
    torch.manual_seed(1)
    decoder = HMERModel(ModelConfig.tiny(num_decoder_layers=2, norm_first=norm_first)).decoder.eval()
    features, feature_mask = torch.randn(3, 2, 4, 64), torch.zeros(3, 2, 4, dtype=torch.bool)
    feature_mask[1, :, 2:] = True
    tokens = torch.randint(3, 113, (3, 7))
    with torch.no_grad():
        full = decoder(features, feature_mask, tokens)  # (3, 7, V)
        cache = decoder.init_cache(features, feature_mask)
        for t in range(4):
            torch.testing.assert_close(decoder.step(tokens[:, t], cache), full[:, t], atol=1e-5, rtol=0)
        perm = torch.tensor([2, 0, 1])  # swapping rows whose memory differs is fine when memory is moved too
        cache.reorder(perm)
        cache.memory_kv = [(k[perm], v[perm]) for k, v in cache.memory_kv]
        cache.memory_mask = cache.memory_mask[perm]
        for t in range(4, 7):
            torch.testing.assert_close(decoder.step(tokens[perm, t], cache), full[perm, t], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", [{}, RESNET], ids=["densenet", "resnet"])
def test_save_then_load_gives_identical_outputs(family):
    torch.manual_seed(2)
    config = ModelConfig.tiny(**family)
    model = HMERModel(config).eval()
    images, mask, tokens, lengths = synthetic_batch()
    inputs, _ = bidirectional_targets(tokens, lengths)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = HMERModel(config)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(model(images, mask, inputs), fresh(images, mask, inputs))


def test_overfits_one_batch_greedy_and_beam(trained):
    images, mask, _, _ = synthetic_batch()
    assert [h.ids for h in trained.greedy(images, mask)] == SEQUENCES
    assert [h.ids for h in trained.beam_search(images, mask, beam_size=5)] == SEQUENCES
    assert [h.ids for h in trained.beam_search(images, mask, beam_size=5, rescore=False)] == SEQUENCES


def test_beam_size_one_equals_greedy(trained):
    images, mask, _, _ = synthetic_batch()
    torch.manual_seed(3)
    for model in (trained, HMERModel(ModelConfig.tiny(max_len=12)).eval()):  # trained, and random (no EOS)
        greedy = model.greedy(images, mask)
        beam = model.beam_search(images, mask, beam_size=1, rescore=False)
        assert [h.ids for h in beam] == [h.ids for h in greedy]
        assert [h.score for h in beam] == pytest.approx([h.score for h in greedy], abs=1e-5)


def test_decoding_does_not_depend_on_the_batch(trained):
    images, mask, _, _ = synthetic_batch()
    with torch.no_grad():
        batched_features, _ = trained.encoder(images, mask)
    batched = [h.ids for h in trained.beam_search(images, mask, beam_size=3)]
    for b, (h, w) in enumerate(SIZES):
        alone, alone_mask = images[b : b + 1, :, :h, :w], mask[b : b + 1, :h, :w]
        with torch.no_grad():
            features, _ = trained.encoder(alone, alone_mask)
        cells = features.shape[1:3]
        torch.testing.assert_close(features, batched_features[b : b + 1, : cells[0], : cells[1]], atol=1e-4, rtol=0)
        assert trained.greedy(alone, alone_mask)[0].ids == SEQUENCES[b]
        assert trained.beam_search(alone, alone_mask, beam_size=3)[0].ids == batched[b]


def test_beam_scores_equal_teacher_forced_log_probs():
    torch.manual_seed(4)
    model = HMERModel(ModelConfig.tiny(max_len=16)).eval()
    with torch.no_grad():
        model.decoder.head.bias[EOS] += 3.0  # random weights, but hypotheses end at varied lengths
    images, mask, _, _ = synthetic_batch()
    with torch.no_grad():
        features, feature_mask = model.encoder(images, mask)
    for rescore in (False, True):
        hyps = model.beam_search(images, mask, beam_size=4, rescore=rescore, length_penalty=0.5)
        assert all(len(h.ids) < 16 for h in hyps)  # all ended with EOS
        ids = [h.ids for h in hyps]
        total = search.sequence_logprob(model.decoder, features, feature_mask, ids, "l2r")
        if rescore:
            total = total + search.sequence_logprob(model.decoder, features, feature_mask, ids, "r2l")
        expected = total / torch.tensor([len(s) + 1.0 for s in ids]) ** 0.5
        assert [h.score for h in hyps] == pytest.approx(expected.tolist(), abs=1e-4)


def test_n_best_is_ranked_and_starts_with_the_winner():
    torch.manual_seed(4)
    model = HMERModel(ModelConfig.tiny(max_len=16)).eval()
    with torch.no_grad():
        model.decoder.head.bias[EOS] += 3.0
    images, mask, _, _ = synthetic_batch()
    for rescore in (False, True):
        best = model.beam_search(images, mask, beam_size=4, rescore=rescore)
        ranked = model.beam_search(images, mask, beam_size=4, rescore=rescore, n_best=True)
        assert [r[0].ids for r in ranked] == [h.ids for h in best]
        assert all(1 < len(r) <= 4 and [h.score for h in r] == sorted((h.score for h in r), reverse=True)
                   for r in ranked)
        assert all(len({tuple(h.ids) for h in r}) == len(r) for r in ranked)


@pytest.mark.parametrize("owners", [[0, 2, 2, 2, 3, 3], [2, 0, 2, 3, 0, 2]], ids=["in runs", "interleaved"])
def test_r2l_rescoring_in_groups_equals_one_row_each(owners):
    # the candidates of an image share its memory: images with 1, 3 and 2 candidates (or 2, 3 and 1, in any
    # order) score as when each candidate reads its own copy of its image's memory
    torch.manual_seed(5)
    model = HMERModel(ModelConfig.tiny()).eval()
    images, mask, _, _ = synthetic_batch()
    with torch.no_grad():
        features, feature_mask = model.encoder(images, mask)
    ids = [SEQUENCES[0], SEQUENCES[2], SEQUENCES[1], [5], SEQUENCES[3], [9, 9]]
    grouped = search.r2l_logprob(model.decoder, model.decoder.init_cache(features, feature_mask), owners, ids)
    alone = search.sequence_logprob(model.decoder, features[owners], feature_mask[owners], ids, "r2l")
    torch.testing.assert_close(grouped, alone, atol=1e-5, rtol=0)
