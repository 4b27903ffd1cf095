"""Stage 1's pieces against slow, obviously correct references: both losses, the probe, and the views' geometry."""

import math

import pytest
import torch
import torch.nn.functional as F

from maskmatch.pretrain.config import ViewConfig
from maskmatch.pretrain.global_loss import GlobalInfoNCE
from maskmatch.pretrain.local_loss import LocalInfoNCE
from maskmatch.pretrain.probe import global_retrieval, local_matching
from maskmatch.pretrain.views import largest_view, make_views, map_points, max_filter3, sample_at, upsample_rows


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


def nt_xent_reference(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """SimCLR's loss written out: each of the 2N embeddings against all the others."""
    z = list(z1) + list(z2)
    n, total = len(z1), 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        denominator = sum(math.exp(cos(z[i], z[k]) / t) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(cos(z[i], z[positive]) / t) / denominator)
    return total / (2 * n)


def local_reference(f1, f2, points, valid, t: float, radius: float) -> float:
    """One direction at a time, anchor by anchor, candidate by candidate."""
    B, P, _ = f1.shape
    directions = []
    for a, b in ((f1, f2), (f2, f1)):
        terms = []
        for i in range(B):
            for p in range(P):
                if not valid[i, p]:
                    continue
                denominator = 0.0
                for j in range(B):
                    for q in range(P):
                        far = j != i or (p == q) or float(torch.dist(points[i, p], points[j, q])) >= radius
                        if valid[j, q] and far:
                            denominator += math.exp(cos(a[i, p], b[j, q]) / t)
                terms.append(-math.log(math.exp(cos(a[i, p], b[i, p]) / t) / denominator))
        directions.append(sum(terms) / len(terms))
    return sum(directions) / 2


def test_global_loss_equals_the_reference():
    g = torch.Generator().manual_seed(0)
    for n, d, t in ((2, 3, 0.5), (5, 8, 0.1), (7, 4, 1.0)):
        z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
        assert float(GlobalInfoNCE(t)(z1, z2)) == pytest.approx(nt_xent_reference(z1, z2, t), rel=1e-5)


def test_global_loss_analytic_values_and_invariance():
    z = torch.eye(4)  # orthogonal images, identical views: s_pos = 1/t, the 2N - 2 negatives 0
    t = 0.5
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 6))
    loss = GlobalInfoNCE(t)
    assert float(loss(z, z)) == pytest.approx(expected, rel=1e-6)
    assert float(loss(3 * z, 0.2 * z)) == pytest.approx(expected, rel=1e-6)  # cosine: scale-free
    assert float(loss(z[:1], z[:1])) == 0.0  # one image: no negatives
    with pytest.raises(ValueError):
        GlobalInfoNCE(0.0)
    with pytest.raises(ValueError):
        loss(torch.randn(3, 4), torch.randn(2, 4))


def test_local_loss_equals_the_reference():
    g = torch.Generator().manual_seed(1)
    B, P, D, t, radius = 3, 6, 5, 0.3, 4.0
    f1, f2 = torch.randn(B, P, D, generator=g), torch.randn(B, P, D, generator=g)
    points = torch.randint(0, 8, (B, P, 2), generator=g).float()  # many same-image points nearer than the radius
    valid = torch.rand(B, P, generator=g) > 0.2
    loss = LocalInfoNCE(t, radius)(f1, f2, points, valid)
    assert float(loss) == pytest.approx(local_reference(f1, f2, points, valid, t, radius), rel=1e-5)
    # radius 0: every other point is a negative
    loss = LocalInfoNCE(t, 0.0)(f1, f2, points, valid)
    assert float(loss) == pytest.approx(local_reference(f1, f2, points, valid, t, 0.0), rel=1e-5)


def test_local_loss_edge_cases_and_checks():
    f = torch.randn(2, 3, 4, requires_grad=True)
    none = torch.zeros(2, 3, dtype=torch.bool)
    loss = LocalInfoNCE(0.2, 1.0)(f, f, torch.zeros(2, 3, 2), none)
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    with pytest.raises(ValueError):
        LocalInfoNCE(0.2, -1.0)
    with pytest.raises(ValueError):
        LocalInfoNCE(0.2, 1.0)(f, f, torch.zeros(2, 3), none)


def test_probe_counts_by_hand():
    e = torch.eye(3)
    hits, queries, chance = global_retrieval(e, e + 0.1).tolist()
    assert (hits, queries, chance) == (6, 6, 2)  # both directions right; chance 1/3 per query
    hits, *_ = global_retrieval(e, e[[1, 2, 0]]).tolist()
    assert hits == 0
    f = torch.eye(4).view(2, 2, 4)
    points = torch.tensor([[[0.0, 0.0], [1.0, 0.0]], [[0.0, 0.0], [50.0, 0.0]]])
    valid = torch.ones(2, 2, dtype=torch.bool)
    hits, queries, chance = local_matching(f, f, points, valid, radius=10.0).tolist()
    # image 0's two points are 1 px apart: each has 3 candidates (itself, image 1's two); image 1's have 4
    assert (hits, queries) == (4, 4) and chance == pytest.approx(2 / 3 + 2 / 4)


def one_dot_batch(B: int, generator: torch.Generator):
    """B images of different sizes, each black but for one 3x3 dot; the dots' centres (B, 1, 2)."""
    images, mask = torch.zeros(B, 1, 70, 160), torch.ones(B, 70, 160, dtype=torch.bool)
    centres = []
    for b in range(B):
        h, w = 40 + 6 * b, 100 + 12 * b
        mask[b, :h, :w] = False
        y, x = (int(torch.randint(4, n - 4, (1,), generator=generator)) for n in (h, w))
        images[b, 0, y - 1 : y + 2, x - 1 : x + 2] = 1.0
        centres.append([x + 0.5, y + 0.5])
    return images, mask, torch.tensor(centres)[:, None]


def test_a_point_mapped_through_both_views_lands_on_the_same_ink():
    """Strong geometry (elastic included), no photometric change: in every view, the mapped dot centre is the
    centroid of the view's ink, and the view is bright there."""
    config = ViewConfig(rotation=20, shear=20, translate=10, elastic_amplitude=3, elastic_spacing=30,
                        stroke_width=0, blur=0, noise=0, min_contrast=1.0)
    images, mask, centres = one_dot_batch(6, torch.Generator().manual_seed(2))
    for seed in range(3):
        views = make_views(images, mask, config, points=9, seed=seed)
        assert views.valid.all()
        for k, transform in enumerate(views.transforms):
            mapped, inside = map_points(centres, transform)
            assert inside.all()
            for b in range(len(images)):
                view = views.images[k * len(images) + b, 0]
                ys, xs = torch.nonzero(view > 0, as_tuple=True)
                weights = view[ys, xs]
                centroid = torch.stack(((xs + 0.5) * weights, (ys + 0.5) * weights)).sum(1) / weights.sum()
                assert float(torch.dist(centroid, mapped[b, 0])) < 0.3, (seed, k, b)
                x, y = mapped[b, 0].long().tolist()
                assert view[y, x] > 0.3
        # the sampled points are the dot's pixels, and the same ones in both views
        assert ((views.points - centres).abs() <= 1.0 + 1e-6).all()


def test_views_are_a_pure_function_of_the_seed_and_fit_their_bound():
    config = ViewConfig()
    images, mask, _ = one_dot_batch(4, torch.Generator().manual_seed(3))
    a, b, c = (make_views(images, mask, config, 5, seed) for seed in (7, 7, 8))
    assert torch.equal(a.images, b.images) and torch.equal(a.view_points, b.view_points)
    assert not torch.equal(a.images, c.images)
    assert a.images.shape[:2] == (8, 1) and a.mask.shape == (8, *a.images.shape[2:])
    assert (a.images[a.mask[:, None]] == 0).all()
    for transform in a.transforms:
        for (h, w), box in zip(((40 + 6 * i, 100 + 12 * i) for i in range(4)), transform.box.tolist()):
            bound = largest_view(h, w, config)
            assert box[0] <= bound[0] and box[1] <= bound[1]


def test_max_filter3_is_max_pool2d():
    """The views' stroke dilation and erosion: the separable 3 x 3 maximum equals PyTorch's max_pool2d, edges too."""
    x = torch.randn(3, 2, 7, 10)
    for image in (x, -x, x[:, :, :1], x[..., :1]):
        assert torch.equal(max_filter3(image), F.max_pool2d(image, 3, stride=1, padding=1))


def test_upsample_rows_is_bicubic_interpolate():
    """The elastic field's upsampling by two matmuls is F.interpolate's bicubic (align_corners), which it replaces."""
    control = torch.randn(2, 2, 4, 6)
    fast = upsample_rows(4, 37, control.device) @ control @ upsample_rows(6, 101, control.device).T
    assert torch.allclose(fast, F.interpolate(control, size=(37, 101), mode="bicubic", align_corners=True), atol=1e-5)


def test_sample_at_reads_cell_centres():
    features = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 2, 3, 4)  # (1, h=2, w=3, d=4)
    points = torch.tensor([[[8.0, 8.0], [40.0, 24.0], [16.0, 8.0]]])  # cell (0,0), cell (1,2), between (0,0) and (0,1)
    got = sample_at(features, points, stride=16)[0]
    assert torch.allclose(got[0], features[0, 0, 0], atol=1e-5) and torch.allclose(got[1], features[0, 1, 2], atol=1e-5)
    assert torch.allclose(got[2], (features[0, 0, 0] + features[0, 0, 1]) / 2, atol=1e-5)
