"""The sub-expression rule (data/subexpr.py) on hand-worked expressions: one stroke per symbol, laid out left to
right as a writer would, unless a case says otherwise."""

import numpy as np

from maskmatch.data.inkml import Ink, Symbol
from maskmatch.data.subexpr import binary_operators, drawn, subexpressions


def ink(*symbols: tuple[str, float, float]) -> Ink:
    """Symbols as (label, x from, x to): each one horizontal stroke."""
    strokes = [np.array([[a, 0.0], [b, 1.0]]) for _, a, b in symbols]
    return Ink(strokes, None, tuple(Symbol(label, (i,)) for i, (label, _, _) in enumerate(symbols)))


def row(*labels: str, width: float = 8, gap: float = 4) -> Ink:
    return ink(*((label, i * (width + gap), i * (width + gap) + width) for i, label in enumerate(labels)))


def cut(tokens: str, written: Ink) -> list[str]:
    return [" ".join(s.tokens) for s in subexpressions(tokens.split(), written)]


def test_each_operator_gives_its_two_neighbouring_terms():
    assert cut("a + b = c", row("a", "+", "b", "=", "c")) == ["a + b", "b = c"]
    found = subexpressions("a + b = c".split(), row("a", "+", "b", "=", "c"))
    assert [s.strokes for s in found] == [(0, 1, 2), (2, 3, 4)]


def test_one_operator_gives_nothing_new():
    assert cut("a + b", row("a", "+", "b")) == []
    assert cut("x ^ { 2 }", row("x", "2")) == []


def test_scripts_and_fractions_stay_in_their_term():
    assert cut("x ^ { 2 } - 1 = 0", row("x", "2", "-", "1", "=", "0")) == ["x ^ { 2 } - 1", "1 = 0"]
    written = ink(("-", 0, 20), ("a", 6, 14), ("b", 6, 14), ("+", 24, 30), ("c", 34, 40), ("=", 44, 50), ("d", 54, 60))
    assert cut("\\frac { a } { b } + c = d", written) == ["\\frac { a } { b } + c", "c = d"]


def test_operators_inside_groups_do_not_split():
    assert binary_operators("\\sum _ { i = 1 } ^ { n } i = x + y".split()) == [12, 14]
    # `+` also inside the root: which `+` symbol is the top-level one cannot be told by label: nothing
    assert cut("\\sqrt { a + b } + c = d", row("\\sqrt", "a", "+", "b", "+", "c", "=", "d")) == []


def test_a_minus_that_could_be_a_fraction_bar_is_ambiguous():
    written = ink(("a", 0, 8), ("-", 12, 18), ("-", 22, 34), ("1", 25, 31), ("2", 25, 31), ("=", 38, 44), ("b", 48, 56))
    assert cut("a - \\frac { 1 } { 2 } = b", written) == []


def test_brackets_nest_like_braces():
    assert cut("( a + b ) - c = d", row("(", "a", "+", "b", ")", "-", "c", "=", "d")) == ["( a + b ) - c", "c = d"]
    assert binary_operators("[ 0 , 1 ) + x = y".split()) == []  # brackets that do not pair up
    assert binary_operators("| a | + b = c".split()) == []  # which | opens and which closes is not told


def test_unary_minus_belongs_to_its_term():
    assert binary_operators("- a + b = c".split()) == [2, 4]
    assert binary_operators("a = - b + c".split()) == [1, 4]
    assert cut("- a + b = c", row("-", "a", "+", "b", "=", "c")) == ["- a + b", "b = c"]


def test_a_stroke_across_a_cut_drops_only_that_window():
    # b's stroke reaches over the "=": the window ending before "=" cannot be cut; the one after it can
    written = ink(("a", 0, 8), ("+", 12, 18), ("b", 22, 40), ("=", 36, 42), ("c", 46, 54))
    assert cut("a + b = c", written) == ["b = c"]


def test_labels_that_do_not_match_the_tokens_give_nothing():
    assert cut("a < b = c", row("a", "\\lt", "b", "=", "c")) == ["a < b", "b = c"]  # CROHME's label for <
    assert cut("a + b = c", row("a", "+", "b", "c")) == []  # the "=" was never segmented
    assert cut("a + b = c", row("a", "=", "b", "+", "c")) == []  # written in another order than the tokens
    assert cut("a + b = c", Ink([np.zeros((1, 2))], None)) == []  # no segmentation at all


def test_a_symbol_count_that_disagrees_with_the_tokens_drops_the_window():
    # an extra unlabelled-in-tokens symbol "x" between a and "+": the first window has 4 symbols for 3 tokens
    assert cut("a + b = c", row("a", "x", "+", "b", "=", "c")) == ["b = c"]


def test_the_brackets_of_a_roots_index_are_not_drawn():
    assert drawn("\\sqrt [ 3 ] { 2 } + [ a ]".split()) == 7  # \sqrt 3 2 + [ a ]
    assert drawn("x ^ { 2 } _ { i }".split()) == 3
