"""Stage 2's pieces: the masking schedule, block masking, the attention network, each loss, the teacher."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maskmatch.attend.diversity_loss import DiversityLoss
from maskmatch.attend.entropy_loss import EntropyLoss
from maskmatch.attend.masking import block_sums, hide, mask_ink_blocks
from maskmatch.attend.match_loss import MatchLoss, top1_matches
from maskmatch.attend.prediction_loss import PredictionLoss
from maskmatch.attend.schedule import MaskParams, MaskSchedule
from maskmatch.attend.teacher import Teacher, teacher_momentum
from maskmatch.model import AttentionNetwork, ModelConfig
from maskmatch.model.encoder import Encoder

# ---------------------------------------------------------------- schedule

LINEAR = [  # progress, ratio, block (px), guided for MaskSchedule(): ramps over progress 0..0.8
    (-0.1, 0.1, 16, 0.0), (0.0, 0.1, 16, 0.0), (0.2, 0.225, 32, 0.125), (0.4, 0.35, 32, 0.25),
    (0.6, 0.475, 48, 0.375), (0.8, 0.6, 48, 0.5), (1.0, 0.6, 48, 0.5), (1.3, 0.6, 48, 0.5),
]  # block cells 1 -> 3: 1.5 and 2.5 round half up


@pytest.mark.parametrize("progress,ratio,block,guided", LINEAR)
def test_linear_schedule_table(progress, ratio, block, guided):
    p = MaskSchedule().at(progress)
    assert (p.ratio, p.block, p.guided) == (pytest.approx(ratio), block, pytest.approx(guided))


def test_cosine_schedule_and_span():
    s = MaskSchedule(ramp="cosine", span=(0.2, 0.6), ratio=(0.1, 0.5), block_cells=(1, 5), guided=(0.0, 1.0))
    f = 0.5 * (1 - math.cos(math.pi * 0.25))  # progress 0.3 is a quarter of the span: 0.1464
    assert s.at(0.3) == MaskParams(pytest.approx(0.1 + 0.4 * f), 16 * 2, pytest.approx(f))  # 1 + 4 f = 1.59 -> 2
    assert s.at(0.4) == MaskParams(pytest.approx(0.3), 48, pytest.approx(0.5))
    assert s.at(0.1) == s.at(0.2) == MaskParams(0.1, 16, 0.0)
    assert s.at(0.6) == s.at(0.9) == MaskParams(0.5, 80, 1.0)


@pytest.mark.parametrize("bad", [dict(ratio=(0.1, 1.2)), dict(block_cells=(0, 2)), dict(ramp="step"),
                                 dict(span=(0.5, 0.5)), dict(guided=(-0.1, 0.5)), dict(ink_threshold=0.0)])
def test_schedule_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        MaskSchedule(**bad)


# ---------------------------------------------------------------- masking

def stroke_images(B=6, H=70, W=150, seed=0):
    """(B, 1, H, W) images of random horizontal and vertical strokes (ink 1.0, some anti-aliased 0.4 edges),
    each image padded at the bottom right by a different amount; mask (B, H, W)."""
    rng = np.random.default_rng(seed)
    images, mask = torch.zeros(B, 1, H, W), torch.ones(B, H, W, dtype=torch.bool)
    for b in range(B):
        h, w = H - 7 * b, W - 13 * b
        mask[b, :h, :w] = False
        for _ in range(12):
            y, x, n = int(rng.integers(0, h - 3)), int(rng.integers(0, w - 3)), int(rng.integers(6, 40))
            if rng.random() < 0.5:
                images[b, 0, y : y + 3, x : min(w, x + n)] = 1.0
                images[b, 0, y + 3 : y + 4, x : min(w, x + n)] = 0.4
            else:
                images[b, 0, y : min(h, y + n), x : x + 3] = 1.0
    return images, mask


def ink(images, mask):
    return (images[:, 0] >= 0.5) & ~mask


@pytest.mark.parametrize("block", [16, 32])
def test_mask_hits_the_ratio_statistically(block):
    images, mask = stroke_images()
    params = MaskParams(ratio=0.35, block=block, guided=0.0)
    ratios = torch.stack([mask_ink_blocks(images, mask, params, seed).ratio for seed in range(120)])  # (120, B)
    assert ratios.mean().item() == pytest.approx(0.35, abs=0.01)
    assert ratios.mean(0).sub(0.35).abs().max() < 0.04  # every image, not only on average
    counts = block_sums(ink(images, mask).float(), block)  # (B, nh, nw)
    slack = counts.flatten(1).max(1).values / ink(images, mask).flatten(1).sum(1)  # one block's share of the ink
    assert ((ratios - 0.35).abs() <= slack + 1e-6).all()  # never off by a whole block or more


def test_mask_covers_ink_blocks_only():
    images, mask = stroke_images(seed=1)
    for block, seed in [(16, 0), (32, 1), (48, 2)]:
        hidden = mask_ink_blocks(images, mask, MaskParams(0.5, block, 0.0), seed)
        assert not (hidden.pixels & mask).any()  # never padding
        counts = block_sums(ink(images, mask).float(), block)  # (B, nh, nw)
        hidden_blocks = block_sums(hidden.pixels.float(), block) > 0
        assert (counts[hidden_blocks] > 0).all()  # every hidden block holds ink
        # whole blocks: a hidden block hides all of its valid pixels
        valid = block_sums((~mask).float(), block)
        assert torch.equal(block_sums(hidden.pixels.float(), block)[hidden_blocks], valid[hidden_blocks])
        # cells: encoder cells inside hidden blocks that hold ink
        cell_ink = block_sums(ink(images, mask).float(), 16) > 0
        cell_hidden = block_sums(hidden.pixels.float(), 16) > 0
        assert torch.equal(hidden.cells, cell_hidden & cell_ink)
        assert torch.equal(hide(images, hidden.pixels)[:, 0][hidden.pixels], torch.zeros(int(hidden.pixels.sum())))


def test_mask_extremes_and_seeds():
    images, mask = stroke_images(seed=2)
    assert not mask_ink_blocks(images, mask, MaskParams(0.0, 16, 0.0), 0).pixels.any()
    full = mask_ink_blocks(images, mask, MaskParams(1.0, 32, 0.0), 0)
    assert torch.equal(full.ratio, torch.ones(len(images)))
    a, b = (mask_ink_blocks(images, mask, MaskParams(0.4, 16, 0.0), s).pixels for s in (7, 7))
    assert torch.equal(a, b)
    assert not torch.equal(a, mask_ink_blocks(images, mask, MaskParams(0.4, 16, 0.0), 8).pixels)
    with pytest.raises(ValueError):
        mask_ink_blocks(images, mask, MaskParams(0.4, 24, 0.0), 0)  # not whole encoder cells
    with pytest.raises(ValueError):
        mask_ink_blocks(images, mask, MaskParams(0.4, 16, 0.5), 0)  # guided without the teacher's maps


@pytest.mark.parametrize("block", [16, 32])
def test_guided_masking_hides_the_most_attended_blocks(block):
    images, mask = stroke_images(seed=3)
    B, _, H, W = images.shape
    generator = torch.Generator().manual_seed(0)
    attention = torch.rand(B, 3, -(-H // 16), -(-W // 16), generator=generator)  # (B, K, h, w)
    for seed in range(5):
        hidden = mask_ink_blocks(images, mask, MaskParams(0.3, block, 1.0), seed, attention)
        score = block_sums(attention.sum(1), block // 16)  # (B, nh, nw)
        holds_ink = block_sums(ink(images, mask).float(), block) > 0
        hidden_blocks = block_sums(hidden.pixels.float(), block) > 0
        for b in range(B):
            shown = holds_ink[b] & ~hidden_blocks[b]
            assert hidden_blocks[b].any() and shown.any()
            assert score[b][hidden_blocks[b]].min() > score[b][shown].max()  # the top of the ranking, nothing else
    # half guided: the top-ranked ink block is hidden (where it holds less than the guided share of the ink)
    counts = block_sums(ink(images, mask).float(), block).flatten(1)  # (B, N)
    score = block_sums(attention.sum(1), block // 16).flatten(1).masked_fill(counts == 0, -1)
    top = score.argmax(1, keepdim=True)  # (B, 1)
    sure = counts.gather(1, top)[:, 0] < 0.5 * 0.6 * counts.sum(1)
    assert sure.sum() >= 3
    for seed in range(5):
        hidden = mask_ink_blocks(images, mask, MaskParams(0.6, block, 0.5), seed, attention)
        assert (block_sums(hidden.pixels.float(), block).flatten(1).gather(1, top)[sure] > 0).all()


# ---------------------------------------------------------------- attention network

def test_maps_sum_to_one_and_ignore_padding():
    torch.manual_seed(0)
    config = ModelConfig.tiny(attention_maps=5)
    encoder, attention = Encoder(config).eval(), AttentionNetwork(config).eval()
    images, mask = stroke_images(B=3, H=50, W=90)
    with torch.no_grad():
        features, feature_mask = encoder(images, mask)
        maps, embeddings = attention(features, feature_mask)
    assert maps.shape == (3, 5, 4, 6) and embeddings.shape == (3, 5, 64)
    assert feature_mask.any()  # the test means something
    torch.testing.assert_close(maps.sum((2, 3)), torch.ones(3, 5))
    assert (maps.permute(1, 0, 2, 3)[:, feature_mask] == 0).all()  # exactly zero on padding
    values = attention.value(features)  # (B, h, w, d)
    reference = torch.stack([torch.stack([(maps[b, k, ..., None] * values[b]).sum((0, 1)) for k in range(5)])
                             for b in range(3)])
    torch.testing.assert_close(embeddings, reference, atol=1e-5, rtol=1e-5)
    # an image alone gives the maps it has inside the padded batch
    h, w = (~feature_mask[2]).sum(0).max().item(), (~feature_mask[2]).sum(1).max().item()
    with torch.no_grad():
        alone_features, alone_mask = encoder(images[2:, :, : 50 - 14, : 90 - 26], mask[2:, : 50 - 14, : 90 - 26])
        alone, _ = attention(alone_features, alone_mask)
    torch.testing.assert_close(alone[0], maps[2, :, :h, :w], atol=1e-5, rtol=0)


# ---------------------------------------------------------------- losses

def test_match_loss_equals_a_slow_reference_and_trains_the_student_only():
    torch.manual_seed(1)
    s, t = torch.randn(5, 3, 8, requires_grad=True), torch.randn(5, 3, 8, requires_grad=True)
    loss = MatchLoss(temperature=0.2)(s, t)
    total = 0.0
    for b in range(5):
        for k in range(3):
            sims = [F.cosine_similarity(s[b, k], t[c, k], dim=0) / 0.2 for c in range(5)]
            total -= sims[b] - torch.logsumexp(torch.stack(sims), 0)
    torch.testing.assert_close(loss, total / 15)
    loss.backward()
    assert s.grad.abs().sum() > 0 and t.grad is None
    orthogonal = torch.eye(8)[:5, None].repeat(1, 3, 1)  # (5, 3, 8): image b is unit vector b
    assert MatchLoss(0.01)(orthogonal, orthogonal).item() < 1e-6
    assert MatchLoss(0.1)(torch.ones(4, 2, 3), torch.ones(4, 2, 3)).item() == pytest.approx(math.log(4))
    assert top1_matches(orthogonal, orthogonal).all()
    with pytest.raises(ValueError):
        MatchLoss(temperature=0.0)


def test_prediction_loss_equals_a_slow_reference():
    torch.manual_seed(2)
    p, t = torch.randn(2, 3, 4, 6), torch.randn(2, 3, 4, 6)
    cells = torch.rand(2, 3, 4) < 0.4
    errors = [2 - 2 * F.cosine_similarity(p[b, i, j], t[b, i, j], dim=0) for b, i, j in cells.nonzero().tolist()]
    torch.testing.assert_close(PredictionLoss()(p, t, cells), torch.stack(errors).mean())
    assert PredictionLoss()(p, 3 * p, cells).item() == pytest.approx(0.0, abs=1e-6)  # scale does not matter
    assert PredictionLoss()(p, t, torch.zeros_like(cells)).item() == 0.0


def test_diversity_loss_reference_and_extremes():
    torch.manual_seed(3)
    maps = torch.rand(2, 4, 3, 5)
    flat = maps.flatten(2)
    pairs = [F.cosine_similarity(flat[b, k], flat[b, l], dim=0) for b in range(2) for k in range(4) for l in range(4)
             if k != l]
    torch.testing.assert_close(DiversityLoss()(maps), torch.stack(pairs).mean())
    disjoint = torch.eye(6).view(1, 6, 2, 3)  # map k on cell k alone
    assert DiversityLoss()(disjoint).item() == 0.0
    assert DiversityLoss()(maps[:, :1].repeat(1, 4, 1, 1)).item() == pytest.approx(1.0)
    assert DiversityLoss()(maps[:, :1]).item() == 0.0


def test_entropy_loss_extremes_and_padding():
    feature_mask = torch.zeros(2, 3, 4, dtype=torch.bool)
    feature_mask[1, :, 2:] = True  # image 1 has 6 valid cells
    uniform = (~feature_mask)[:, None].float().repeat(1, 2, 1, 1)
    uniform = uniform / uniform.sum((2, 3), keepdim=True)
    assert EntropyLoss()(uniform, feature_mask).item() == pytest.approx(1.0)
    peaked = torch.zeros(2, 2, 3, 4)
    peaked[:, :, 0, 1] = 1.0
    assert EntropyLoss()(peaked, feature_mask).item() == pytest.approx(0.0, abs=1e-9)
    half = torch.zeros(1, 1, 3, 4)
    half[0, 0, 0, :2] = 0.5
    expected = math.log(2) / math.log(12)
    assert EntropyLoss()(half, torch.zeros(1, 3, 4, dtype=torch.bool)).item() == pytest.approx(expected)


# ---------------------------------------------------------------- teacher

def test_teacher_momentum_schedule():
    assert teacher_momentum(0.0, 0.996, 1.0) == pytest.approx(0.996)
    assert teacher_momentum(0.5, 0.996, 1.0) == pytest.approx(0.998)
    assert teacher_momentum(1.0, 0.996, 1.0) == teacher_momentum(2.0, 0.996, 1.0) == 1.0


def test_teacher_is_an_exponential_moving_average():
    torch.manual_seed(4)
    config = ModelConfig.tiny(attention_maps=3)
    student = torch.nn.ModuleDict({"encoder": Encoder(config), "attention": AttentionNetwork(config)})
    teacher = Teacher(student)
    assert not any(p.requires_grad for p in teacher.parameters())
    before = {k: v.clone() for k, v in teacher.module.state_dict().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
        student.train()
        student["encoder"](torch.rand(2, 1, 32, 32), torch.zeros(2, 32, 32, dtype=torch.bool))  # moves BN statistics
    teacher.update(student, 0.9)
    after = {k: v.clone() for k, v in teacher.module.state_dict().items()}
    now = student.state_dict()
    for name, _ in student.named_parameters():
        torch.testing.assert_close(after[name], 0.9 * before[name] + 0.1 * now[name])
    for name, _ in student.named_buffers():
        assert torch.equal(after[name], now[name])  # running statistics are the student's
    teacher.update(student, 1.0)
    torch.testing.assert_close(teacher.module.state_dict(), after)
    teacher.update(student, 0.0)
    torch.testing.assert_close(teacher.module.state_dict(), student.state_dict())
    _, _, maps, embeddings = teacher(torch.rand(2, 1, 32, 48), torch.zeros(2, 32, 48, dtype=torch.bool))
    assert maps.shape == (2, 3, 2, 3) and embeddings.shape == (2, 3, 64) and not embeddings.requires_grad
