"""A packed, memory-mapped training cache: one split's images and token ids in a few flat files.

Layout of `<split>/cache/`:
  images.u8      all images, row-major uint8, back to back
  index.npy      int64 (N, 3): byte offset, height, width of image i
  tokens.npy     int16 (T,): token ids of all expressions, back to back
  token_offsets.npy  int64 (N + 1,): expression i is tokens[token_offsets[i]:token_offsets[i+1]]
  expressions.npy  int32 (N,): which distinct token sequence image i shows (equal captions, equal ids), so
                 that a held-out slice can take whole expressions (data/loading.py); not a label to learn from
  meta.json      format version, names, vocabulary, render config
Opening it maps the files and reads only the small index, so a training run starts in well under a
second and data-loader workers (and DDP ranks) share the page cache instead of copying images.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1


class CacheWriter:
    """Appends (name, image, token ids) and writes the files on `close()`, atomically per file."""

    def __init__(self, folder: Path, vocabulary: tuple[str, ...], render_config: dict, extra_meta: dict | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._images = open(self.folder / "images.u8.tmp", "wb")
        self._index: list[tuple[int, int, int]] = []
        self._tokens: list[np.ndarray] = []
        self._names: list[str] = []
        self._offset = 0
        self._meta = {"format": FORMAT_VERSION, "vocabulary": list(vocabulary), "render": render_config,
                      **(extra_meta or {})}

    def add(self, name: str, image: np.ndarray, token_ids: list[int]) -> None:
        assert image.dtype == np.uint8 and image.ndim == 2, (image.dtype, image.shape)
        self._images.write(np.ascontiguousarray(image).tobytes())
        self._index.append((self._offset, *image.shape))
        self._offset += image.size
        self._tokens.append(np.asarray(token_ids, dtype=np.int16))
        self._names.append(name)

    def close(self) -> None:
        self._images.close()
        lengths = [len(t) for t in self._tokens]
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        tokens = np.concatenate(self._tokens) if self._tokens else np.zeros(0, np.int16)
        _save_npy(self.folder / "index.npy", np.array(self._index, dtype=np.int64).reshape(-1, 3))
        _save_npy(self.folder / "tokens.npy", tokens)
        _save_npy(self.folder / "token_offsets.npy", offsets)
        first: dict[bytes, int] = {}  # token sequence -> its id, in order of first appearance
        expressions = np.array([first.setdefault(t.tobytes(), len(first)) for t in self._tokens], dtype=np.int32)
        _save_npy(self.folder / "expressions.npy", expressions)
        os.replace(self.folder / "images.u8.tmp", self.folder / "images.u8")
        meta = dict(self._meta, names=self._names)
        tmp = self.folder / "meta.json.tmp"
        tmp.write_text(json.dumps(meta), "utf-8")
        os.replace(tmp, self.folder / "meta.json")  # written last: its presence means complete


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


@dataclass
class Cache:
    """Read side. `cache[i]` -> (image uint8 (H, W), token ids int64 (L,)), both without copying the file."""

    names: list[str]
    vocabulary: tuple[str, ...]
    render_config: dict
    index: np.ndarray  # (N, 3) int64
    images: np.ndarray  # memory-mapped uint8
    tokens: np.ndarray | None  # memory-mapped int16; None when opened with labels=False
    token_offsets: np.ndarray | None
    expressions: np.ndarray | None = None  # (N,) int32 expression ids; None for caches built before them
    variants: int = 0  # a variants cache (data/variants.py): renders per expression of the split's cache

    @classmethod
    def open(cls, folder: str | Path, labels: bool = True) -> "Cache":
        """labels=False opens the images alone: the token files are neither needed nor read (self-supervision)."""
        folder = Path(folder)
        if (folder / "cache").is_dir():
            folder = folder / "cache"
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{folder}: no complete cache (meta.json missing); run `maskmatch data build`")
        meta = json.loads(meta_path.read_text("utf-8"))
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{folder}: cache format {meta.get('format')}, expected {FORMAT_VERSION}; rebuild it")
        size = (folder / "images.u8").stat().st_size
        images = np.memmap(folder / "images.u8", dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
        return cls(
            names=meta["names"],
            vocabulary=tuple(meta["vocabulary"]),
            render_config=meta["render"],
            index=np.load(folder / "index.npy"),
            images=images,
            tokens=np.load(folder / "tokens.npy", mmap_mode="r") if labels else None,
            token_offsets=np.load(folder / "token_offsets.npy") if labels else None,
            expressions=np.load(folder / "expressions.npy") if (folder / "expressions.npy").is_file() else None,
            variants=int(meta.get("variants", 0)),
        )

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self.tokens is None:
            raise ValueError("this cache was opened without labels (Cache.open(..., labels=False)); use .image(i)")
        ids = self.tokens[self.token_offsets[i] : self.token_offsets[i + 1]].astype(np.int64)
        return self.image(i), ids

    def image(self, i: int) -> np.ndarray:
        """Image i, uint8 (H, W), a view of the mapped file."""
        offset, h, w = (int(v) for v in self.index[i])
        return self.images[offset : offset + h * w].reshape(h, w)

    @property
    def sizes(self) -> np.ndarray:
        """(N, 2) int64 heights and widths, for the bucketing sampler."""
        return self.index[:, 1:]
