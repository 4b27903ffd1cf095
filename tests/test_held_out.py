"""The held-out validation slice of the train split: whole expressions, so none is also trained on."""

from dataclasses import asdict

import numpy as np
import pytest

from maskmatch.data.cache import Cache, CacheWriter
from maskmatch.data.loading import held_out_split
from maskmatch.data.render import RenderConfig
from maskmatch.data.vocab import Vocabulary
from maskmatch.errors import UserError


def test_the_cache_numbers_expressions_by_their_tokens(tmp_path):
    writer = CacheWriter(tmp_path / "cache", Vocabulary.load().symbols, asdict(RenderConfig()))
    for name, ids in (("a", [5, 6]), ("b", [7]), ("c", [5, 6]), ("d", [5]), ("e", [7])):
        writer.add(name, np.zeros((4, 4), np.uint8), ids)
    writer.close()
    assert Cache.open(tmp_path, labels=False).expressions.tolist() == [0, 1, 0, 2, 1]


def test_whole_expressions_are_held_out():
    rng = np.random.default_rng(0)
    expressions = rng.integers(0, 300, 2000)  # 2000 images of ~300 expressions, each written ~7 times
    train, val = held_out_split(2000, 100, seed=0, expressions=expressions)
    assert not set(expressions[train]) & set(expressions[val])
    assert 100 <= len(val) < 100 + np.bincount(expressions).max() and len(train) + len(val) == 2000
    again = held_out_split(2000, 100, seed=0, expressions=expressions)
    assert all(np.array_equal(a, b) for a, b in zip((train, val), again))  # a pure function of the seed


def test_without_expression_ids_the_slice_is_random_images():
    train, val = held_out_split(50, 10, seed=3)
    order = np.random.default_rng(3).permutation(50)
    assert val.tolist() == sorted(order[:10]) and train.tolist() == sorted(order[10:])


def test_a_slice_that_would_take_every_expression_is_refused():
    with pytest.raises(UserError, match="leaves no training expression"):
        held_out_split(6, 4, seed=0, expressions=np.array([0, 0, 0, 1, 1, 1]))
