"""Symbol swaps across writers (data/swap.py): labels kept, replacements fitted to the box, other writers only."""

from __future__ import annotations

import numpy as np

from maskmatch.data.inkml import Ink, Symbol
from maskmatch.data.swap import SymbolBank, fit_to_box, swap_symbols


def box(points: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    p = np.concatenate(points)
    return p.min(axis=0), p.max(axis=0)


def expression(writer: str, offset: float = 0.0) -> Ink:
    """'x - 1': an x of two strokes, a wide minus, a one; each writer draws them a little differently."""
    t = np.linspace(0, 1, 20)[:, None]
    x = [np.hstack([t, t]) * 20 + offset, np.hstack([t, 1 - t]) * 20 + offset]
    minus = [np.hstack([30 + 20 * t, np.full_like(t, 10 + offset)])]
    one = [np.hstack([np.full_like(t, 60 + offset), 25 * t])]
    return Ink(x + minus + one, "x - 1", (Symbol("x", (0, 1)), Symbol("-", (2,)), Symbol("1", (3,))), (), writer)


def test_share_zero_keeps_the_ink_and_share_one_swaps_every_known_symbol():
    bank = SymbolBank.from_inks([expression("B", 3.0), expression("A", 9.0)])
    ink = expression("A")
    same, symbols = swap_symbols(ink, bank, 0.0, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(same, ink.strokes)) and list(symbols) == list(ink.symbols)
    swapped, symbols = swap_symbols(ink, bank, 1.0, seed=1)
    assert [s.label for s in symbols] == ["x", "-", "1"]
    for old, new in zip(ink.symbols, symbols):  # each replacement sits in the box of the symbol it replaces
        (lo, hi), (new_lo, new_hi) = box([ink.strokes[i] for i in old.strokes]), box([swapped[i] for i in new.strokes])
        assert np.allclose((lo + hi) / 2, (new_lo + new_hi) / 2)
        assert np.isclose((hi - lo).max(), (new_hi - new_lo).max())
    # writer A's own drawings (offset 9) are never picked for writer A: B's are, shifted into the box
    assert not all(np.array_equal(a, b) for a, b in zip(swapped, ink.strokes))


def test_same_seed_same_swap_and_no_other_writer_no_swap():
    bank = SymbolBank.from_inks([expression("B", 3.0), expression("C", 5.0)])
    a, _ = swap_symbols(expression("A"), bank, 0.5, seed=4)
    b, _ = swap_symbols(expression("A"), bank, 0.5, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    lonely = SymbolBank.from_inks([expression("A", 3.0)])
    kept, _ = swap_symbols(expression("A"), lonely, 1.0, seed=0)
    assert all(np.array_equal(x, y) for x, y in zip(kept, expression("A").strokes))


def test_radicals_stretch_to_their_box_others_keep_their_shape():
    square = [np.array([[0.0, 0.0], [10.0, 10.0]])]
    wide = fit_to_box(square, np.array([50.0, 5.0]), np.array([40.0, 10.0]), stretch=True)
    assert np.allclose(box(wide)[0], [30, 0]) and np.allclose(box(wide)[1], [70, 10])
    kept = fit_to_box(square, np.array([50.0, 5.0]), np.array([40.0, 10.0]), stretch=False)
    assert np.allclose(np.ptp(np.concatenate(kept), axis=0), [40, 40])  # uniform: the longer side fits
