"""The standard CROHME vocabulary (110 symbols) plus the pad, sos and eos specials."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

SPECIALS = ("<pad>", "<sos>", "<eos>")
PAD, SOS, EOS = 0, 1, 2


@dataclass(frozen=True)
class Vocabulary:
    symbols: tuple[str, ...]  # specials first, then the dictionary's symbols in file order

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Vocabulary":
        """Reads one symbol a line; None reads the standard dictionary shipped in the package."""
        if path is None:
            text = resources.files("maskmatch").joinpath("assets", "dictionary.txt").read_text("utf-8")
        else:
            text = Path(path).read_text("utf-8")
        words = [line.strip() for line in text.splitlines() if line.strip()]
        if len(set(words)) != len(words):
            raise ValueError(f"vocabulary {path or 'dictionary.txt'} repeats a symbol")
        return cls(SPECIALS + tuple(words))

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, token: str) -> bool:
        return token in self._index

    @cached_property
    def _index(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.symbols)}

    def oov(self, tokens: list[str]) -> list[str]:
        """The tokens that are not symbols of this vocabulary, in order, repeats kept."""
        return [t for t in tokens if t not in self._index or t in SPECIALS]

    def encode(self, tokens: list[str]) -> list[int]:
        """Token strings to ids; raises KeyError naming the first out-of-vocabulary token."""
        missing = self.oov(tokens)
        if missing:
            raise KeyError(f"out-of-vocabulary token {missing[0]!r}")
        return [self._index[t] for t in tokens]

    def decode(self, ids: list[int]) -> list[str]:
        """Ids to token strings, stopping at eos and skipping pad and sos."""
        out = []
        for i in ids:
            if i == EOS:
                break
            if i not in (PAD, SOS):
                out.append(self.symbols[i])
        return out
