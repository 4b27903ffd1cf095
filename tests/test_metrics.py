"""Expression metrics against hand-worked cases and a slow, obviously correct edit distance."""

import functools
import random

import pytest

from maskmatch.metrics import canonical, edit_distance, expression_scores


def slow_edit_distance(a: tuple, b: tuple) -> int:
    """Levenshtein by its recursive definition."""

    @functools.lru_cache(maxsize=None)
    def d(i: int, j: int) -> int:
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))

    return d(len(a), len(b))


@pytest.mark.parametrize("a, b, expected", [
    ([], [], 0),
    ([], ["a", "b", "c"], 3),
    (list("kitten"), list("sitting"), 3),  # k->s, e->i, +g
    (["a", "b"], ["b", "a"], 2),  # no transposition: two substitutions
    (["x", "^", "{", "2", "}"], ["x", "^", "{", "3", "}"], 1),
    (["\\frac", "{", "1", "}", "{", "2", "}"], ["1", "/", "2"], 5),  # keep 1 and 2, drop 4, substitute 1
])
def test_edit_distance_hand_worked(a, b, expected):
    assert edit_distance(a, b) == expected
    assert edit_distance(b, a) == expected


def test_edit_distance_matches_slow_reference():
    rng = random.Random(0)
    for _ in range(200):
        a = [rng.choice("abc") for _ in range(rng.randint(0, 6))]
        b = [rng.choice("abc") for _ in range(rng.randint(0, 6))]
        assert edit_distance(a, b) == slow_edit_distance(tuple(a), tuple(b)), (a, b)


def test_canonical_spellings_agree_and_unparsable_keeps_raw_tokens():
    assert canonical("x^2") == canonical("x ^ { 2 }") == canonical(["x", "^", "{", "2", "}"]) == ["x", "^", "{", "2", "}"]
    assert canonical("\\frac12") == ["\\frac", "{", "1", "}", "{", "2", "}"]
    assert canonical("{a+b}=c") == ["a", "+", "b", "=", "c"]
    assert canonical("x ^ {") == ["x", "^", "{"]  # unbalanced: whitespace tokens


def test_expression_scores_hand_worked():
    references = ["x ^ { 2 }", "a + b", "\\frac { 1 } { 3 }", "a + b", "y ^ { 2 }", "x ^ { 2 }"]
    predictions = [
        "x^2",  # canonical-equal, raw different: exact, not raw-exact
        "a + b",  # exact both ways
        "\\frac12",  # distance 1 (2 for 3)
        "a - c",  # distance 2
        "",  # distance 5
        "x ^ {",  # unparsable, raw tokens: distance 2
    ]
    scores = expression_scores(predictions, references)
    assert scores == {"n": 6, "exprate": 33.33, "le1": 50.0, "le2": 83.33, "raw_exprate": 16.67}


def test_expression_scores_token_lists_empty_and_mismatch():
    assert expression_scores([["x", "^", "{", "2", "}"]], ["x^{2}"])["exprate"] == 100.0
    assert expression_scores([], []) == {"n": 0, "exprate": 0.0, "le1": 0.0, "le2": 0.0, "raw_exprate": 0.0}
    with pytest.raises(ValueError):
        expression_scores(["a"], ["a", "b"])
