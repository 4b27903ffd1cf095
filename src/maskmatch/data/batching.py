"""Batches of similar-sized images under a pixel budget, with padding masks.

The budget counts padded pixels, batch size x max height x max width, which is what the encoder
pays for; packing images of like size keeps the padding small. A batch's composition changes each
epoch (images of one size bucket are shuffled before packing) and the batch order is shuffled,
both as pure functions of (seed, epoch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from maskmatch.data.cache import Cache
from maskmatch.data.vocab import PAD

BUCKET_PIXELS = 16  # images whose height and width agree to within this are interchangeable


@dataclass
class Batch:
    images: torch.Tensor  # (B, 1, H, W) float32 in [0, 1], ink bright, 0 on padding
    mask: torch.Tensor  # (B, H, W) bool, True on padding
    tokens: torch.Tensor  # (B, L) int64 token ids, PAD after each expression's end; no sos/eos
    lengths: torch.Tensor  # (B,) int64 number of real tokens
    indices: list[int]  # positions in the dataset

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Batch(move(self.images), move(self.mask), move(self.tokens), move(self.lengths), self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class CacheDataset(Dataset):
    """Items of a cache (or a subset of them): (index, image uint8 (H, W), token ids int64 (L,))."""

    def __init__(self, cache: Cache, indices: list[int] | np.ndarray | None = None):
        self.cache = cache
        self.indices = np.arange(len(cache)) if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray, np.ndarray]:
        image, ids = self.cache[int(self.indices[i])]
        return i, image, ids

    @property
    def sizes(self) -> np.ndarray:
        return self.cache.sizes[self.indices]  # (N, 2)


class VariantDataset(CacheDataset):
    """A CacheDataset whose item (i, v) is variant v of item i: 0 the plain render, 1..count from `variants`, a
    variants cache (data/variants.py) of this cache. Sizes are each item's largest over its variants."""

    def __init__(self, cache: Cache, indices, variants: Cache, count: int):
        super().__init__(cache, indices)
        if not 0 <= count <= variants.variants or len(variants) != len(cache) * variants.variants:
            raise ValueError(f"the variants cache holds {variants.variants} variants of {len(variants)} // "
                             f"{max(variants.variants, 1)} images; {count} of {len(cache)} asked for")
        self.variants, self.count = variants, count

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[int, np.ndarray, np.ndarray]:
        i, v = key if isinstance(key, tuple) else (key, 0)
        if v == 0:
            return super().__getitem__(i)
        image, ids = self.variants[int(self.indices[i]) * self.variants.variants + v - 1]
        return i, image, ids

    @property
    def sizes(self) -> np.ndarray:
        K = self.variants.variants
        extra = self.variants.sizes.reshape(-1, K, 2)[self.indices, : self.count]  # (N, count, 2)
        return np.maximum(super().sizes, extra.max(axis=1)) if self.count else super().sizes


class WithParts(Dataset):
    """A training set followed by items of another cache (an expression's sub-expressions, data/subexpr.py):
    position p < len(base) is the base's, a later one parts[part_indices[p - len(base)]], always plain (the
    variant of a (position, variant) key is ignored for them)."""

    def __init__(self, base: CacheDataset, parts: Cache, part_indices):
        self.base, self.parts, self.part_indices = base, parts, np.asarray(part_indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.base) + len(self.part_indices)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[int, np.ndarray, np.ndarray]:
        position = key[0] if isinstance(key, tuple) else key
        if position < len(self.base):
            return self.base[key]
        image, ids = self.parts[int(self.part_indices[position - len(self.base)])]
        return position, image, ids

    def name(self, position: int) -> str:
        if position < len(self.base):
            return self.base.cache.names[int(self.base.indices[position])]
        return self.parts.names[int(self.part_indices[position - len(self.base)])]

    @property
    def sizes(self) -> np.ndarray:
        return np.concatenate((self.base.sizes, self.parts.sizes[self.part_indices]))


NO_LABEL = np.zeros(0, dtype=np.int64)


class ImageDataset(Dataset):
    """Items (position, image uint8 (H, W), no token ids) of some images of a label-free cache (stages 1 and 2).

    Keys may be positions or finetune's (position, scale) pairs, whose scale is always 1 here."""

    def __init__(self, cache: Cache, indices: np.ndarray):
        self.cache, self.indices = cache, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key) -> tuple[int, np.ndarray, np.ndarray]:
        position = key[0] if isinstance(key, tuple) else key
        return position, self.cache.image(int(self.indices[position])), NO_LABEL

    @property
    def sizes(self) -> np.ndarray:
        return self.cache.sizes[self.indices]  # (N, 2)


def collate(items: list[tuple[int, np.ndarray, np.ndarray]]) -> Batch:
    """Pads images at the bottom and right with background, token lists with PAD."""
    height = max(image.shape[0] for _, image, _ in items)
    width = max(image.shape[1] for _, image, _ in items)
    length = max(len(ids) for _, _, ids in items)
    images = torch.zeros(len(items), 1, height, width)
    mask = torch.ones(len(items), height, width, dtype=torch.bool)
    tokens = torch.full((len(items), length), PAD, dtype=torch.int64)
    for b, (_, image, ids) in enumerate(items):
        h, w = image.shape
        images[b, 0, :h, :w] = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
        mask[b, :h, :w] = False
        tokens[b, : len(ids)] = torch.as_tensor(ids, dtype=torch.int64)
    lengths = torch.tensor([len(ids) for _, _, ids in items], dtype=torch.int64)
    return Batch(images, mask, tokens, lengths, [i for i, _, _ in items])


class BucketBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset positions whose padded size B x maxH x maxW stays within pixel_budget.

    sizes: (N, 2) heights and widths. With world_size > 1, rank r takes every world_size-th batch
    of the epoch's plan, truncated so all ranks take the same number of steps.
    """

    def __init__(self, sizes: np.ndarray, pixel_budget: int, max_batch_size: int | None = None,
                 shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
        areas = self.sizes[:, 0] * self.sizes[:, 1]
        if len(areas) and areas.max() > pixel_budget:
            i = int(areas.argmax())
            raise ValueError(f"image {i} ({self.sizes[i, 0]}x{self.sizes[i, 1]}) alone exceeds the "
                             f"pixel budget {pixel_budget}; raise the budget or lower max image size")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.pixel_budget = pixel_budget
        self.max_batch_size = max_batch_size or len(self.sizes) or 1
        self.shuffle, self.seed, self.rank, self.world_size = shuffle, seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def plan(self, epoch: int) -> list[list[int]]:
        """All batches of an epoch, for every rank: a pure function of (seed, epoch).

        The batches themselves depend on the seed alone, only their order on the epoch (as CoMER builds its
        batches once): every epoch then has the same number of steps, which Lightning counts once, at the
        start, to place each epoch's validation."""
        tiebreak = np.random.default_rng(self.seed).random(len(self.sizes)) if self.shuffle else np.arange(len(self.sizes))
        buckets = self.sizes // BUCKET_PIXELS
        order = np.lexsort((tiebreak, buckets[:, 1], buckets[:, 0]))  # by height, then width buckets
        batches, current, max_h, max_w = [], [], 0, 0
        for i in order.tolist():
            h, w = self.sizes[i]
            new_h, new_w = max(max_h, h), max(max_w, w)
            fits = (len(current) + 1) * new_h * new_w <= self.pixel_budget
            if current and (not fits or len(current) == self.max_batch_size):
                batches.append(current)
                current, new_h, new_w = [], h, w
            current.append(i)
            max_h, max_w = new_h, new_w
        if current:
            batches.append(current)
        if self.shuffle:
            batches = [batches[j] for j in np.random.default_rng([self.seed, epoch]).permutation(len(batches))]
        return batches

    def _mine(self) -> list[list[int]]:
        batches = self.plan(self.epoch)
        steps = len(batches) // self.world_size if self.world_size > 1 else len(batches)
        return batches[self.rank :: self.world_size][:steps]

    def __iter__(self):
        return iter(self._mine())

    def __len__(self) -> int:
        return len(self._mine())
