"""The bucketing sampler keeps its pixel budget; batches pad with background and carry masks."""

import numpy as np
import pytest
import torch

from maskmatch.data.batching import BucketBatchSampler, CacheDataset, collate
from maskmatch.data.cache import Cache, CacheWriter
from maskmatch.data.vocab import PAD


def random_sizes(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(30, 256, n), rng.integers(30, 1024, n)], axis=1)


@pytest.mark.parametrize("budget, max_batch", [(300_000, None), (1_000_000, 8), (262_144, 3)])
def test_sampler_never_exceeds_budget_and_covers_everything(budget, max_batch):
    sizes = random_sizes(2000)
    sampler = BucketBatchSampler(sizes, budget, max_batch_size=max_batch, seed=1)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        for batch in batches:
            h, w = sizes[batch].max(axis=0)
            assert len(batch) * h * w <= budget
            assert max_batch is None or len(batch) <= max_batch
        assert sorted(i for b in batches for i in b) == list(range(len(sizes)))


def test_sampler_packs_densely_and_reshuffles_by_epoch():
    sizes = random_sizes(2000)
    sampler = BucketBatchSampler(sizes, 1_000_000, seed=3)
    plan = sampler.plan(0)
    padded = sum(len(b) * sizes[b][:, 0].max() * sizes[b][:, 1].max() for b in plan)
    assert sizes.prod(axis=1).sum() / padded > 0.6  # bucketing keeps padding small
    assert plan == sampler.plan(0)  # pure function of (seed, epoch)
    assert plan != sampler.plan(1)


def test_every_epoch_has_the_same_number_of_steps():
    """Lightning counts an epoch's batches once; an epoch with fewer would never reach its validation."""
    sampler = BucketBatchSampler(random_sizes(2000), 300_000, seed=0)
    counts = set()
    for epoch in range(5):
        sampler.set_epoch(epoch)
        counts.add(len(list(sampler)))
    assert counts == {len(sampler)}


def test_sampler_rejects_an_image_over_budget():
    with pytest.raises(ValueError, match="exceeds the pixel budget"):
        BucketBatchSampler(np.array([[100, 100], [300, 400]]), 100_000)


def test_ranks_take_disjoint_equal_shares():
    sizes = random_sizes(500)
    shares = [list(BucketBatchSampler(sizes, 400_000, seed=0, rank=r, world_size=3)) for r in range(3)]
    assert len({len(s) for s in shares}) == 1
    flat = [i for s in shares for b in s for i in b]
    assert len(flat) == len(set(flat))


def test_cache_round_trip_and_collate(tmp_path):
    images = [np.full((h, w), 200, np.uint8) for h, w in [(10, 20), (30, 15), (5, 5)]]
    tokens = [[5, 6, 7], [8], [9, 10]]
    writer = CacheWriter(tmp_path / "cache", ("<pad>", "<sos>", "<eos>", "x"), {"symbol_size": 40})
    for n, (image, ids) in enumerate(zip(images, tokens)):
        writer.add(f"e{n}", image, ids)
    writer.close()
    cache = Cache.open(tmp_path)
    assert cache.names == ["e0", "e1", "e2"] and len(cache) == 3
    for n in range(3):
        image, ids = cache[n]
        np.testing.assert_array_equal(image, images[n])
        assert ids.tolist() == tokens[n]
    np.testing.assert_array_equal(cache.sizes, [[10, 20], [30, 15], [5, 5]])

    dataset = CacheDataset(cache, indices=[2, 0])
    batch = collate([dataset[0], dataset[1]])
    assert batch.images.shape == (2, 1, 10, 20) and batch.tokens.shape == (2, 3)
    assert batch.mask[0, :5, :5].logical_not().all() and batch.mask[0, 5:].all() and batch.mask[0, :, 5:].all()
    assert (batch.images[batch.mask.unsqueeze(1)] == 0).all()  # padding is background
    assert torch.allclose(batch.images[1, 0], torch.full((10, 20), 200 / 255))
    assert batch.tokens[0].tolist() == [9, 10, PAD] and batch.lengths.tolist() == [2, 3]


def test_incomplete_cache_is_reported(tmp_path):
    (tmp_path / "cache").mkdir()
    with pytest.raises(FileNotFoundError, match="data build"):
        Cache.open(tmp_path)
