"""Symbol swaps across writers: a symbol's strokes replaced by the same class's strokes from another writer.

The label of the expression is unchanged: only how one writer drew a symbol changes. A replacement is fitted
to the box of the symbol it replaces: scaled uniformly so that its longer side matches the box's longer side
and centred on the box (so a wide minus stays wide, a tall bracket tall); STRETCHED classes, whose shape
follows what they enclose (radicals), fill the box on each axis. The bank of replacements is built from the
training split's own InkML segmentation (`Ink.symbols`), never from a test set.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from maskmatch.data.inkml import Ink, Symbol

STRETCHED = frozenset({"\\sqrt"})  # fitted to the box on each axis


@dataclass
class SymbolBank:
    """Up to `per_label` drawings of each symbol class, each (writer or None, strokes)."""

    per_label: int = 200
    samples: dict[str, list[tuple[str | None, list[np.ndarray]]]] = field(default_factory=dict)

    def add(self, ink: Ink) -> None:
        """Takes ink's symbols (while their class has room)."""
        for symbol in ink.symbols:
            drawings = self.samples.setdefault(symbol.label, [])
            if len(drawings) < self.per_label:
                drawings.append((ink.writer, [ink.strokes[i] for i in symbol.strokes]))

    @classmethod
    def from_inks(cls, inks: Iterable[Ink], per_label: int = 200) -> "SymbolBank":
        bank = cls(per_label)
        for ink in inks:
            bank.add(ink)
        return bank

    def pick(self, label: str, writer: str | None, rng: np.random.Generator) -> list[np.ndarray] | None:
        """A drawing of `label` by another writer (any drawing when writer is None), or None if there is none."""
        options = [strokes for w, strokes in self.samples.get(label, ()) if writer is None or w != writer]
        return options[rng.integers(len(options))] if options else None


def _box(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    low, high = points.min(axis=0), points.max(axis=0)
    return (low + high) / 2, high - low


def fit_to_box(strokes: list[np.ndarray], centre: np.ndarray, size: np.ndarray, stretch: bool) -> list[np.ndarray]:
    """strokes moved and scaled into the box (centre, size (w, h)): see the module docstring."""
    own_centre, own_size = _box(np.concatenate(strokes))
    if stretch:
        k = np.where(own_size > 0, size / np.maximum(own_size, 1e-12), 1.0)
    else:
        k = np.full(2, size.max() / own_size.max() if own_size.max() > 0 else 1.0)
    return [(s - own_centre) * k + centre for s in strokes]


def swap_symbols(ink: Ink, bank: SymbolBank, share: float, seed: int) -> tuple[list[np.ndarray], list[Symbol]]:
    """Each symbol of ink replaced with probability `share` by a bank drawing of its class from another writer
    -> (strokes, symbols) of the result; symbols keep their labels and order, strokes are renumbered. Strokes
    outside every symbol are kept as they are."""
    rng = np.random.default_rng([seed, 3])
    strokes, symbols, in_symbol = [], [], set()
    for symbol in ink.symbols:
        own = [ink.strokes[i] for i in symbol.strokes]
        in_symbol.update(symbol.strokes)
        other = bank.pick(symbol.label, ink.writer, rng) if rng.random() < share else None
        if other is not None:
            centre, size = _box(np.concatenate(own))
            own = fit_to_box(other, centre, size, symbol.label in STRETCHED)
        symbols.append(Symbol(symbol.label, tuple(range(len(strokes), len(strokes) + len(own)))))
        strokes += own
    strokes += [s for i, s in enumerate(ink.strokes) if i not in in_symbol]
    return strokes, symbols
