"""Training and validation batches: a fixed held-out slice of train, bucketed under a pixel budget,
rescaled on the fly, and resumable in the middle of an epoch.

Scale augmentation: every training image is rescaled by a factor drawn per (seed, epoch, image) from
`scale_range`, capped so that no image grows past the render's maximum size. The sampler packs the
images at their largest possible size (`scaled_size` at the top of the range is monotone in the
factor), so the pixel budget holds whatever factor is drawn.

Resuming: Lightning saves `ResumableLoader.state_dict()` (epoch, batches handed out) in mid-epoch
checkpoints and gives it back on resume; the loader then skips the batches already trained on. The
epoch comes from Lightning (`set_epoch` on `batch_sampler.sampler`), and the loader fixes its epoch
and position when the first batch is asked for, after Lightning has set the epoch, never when the
iterator is created.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from maskmatch.data.batching import BucketBatchSampler, CacheDataset, ImageDataset, VariantDataset, WithParts, collate
from maskmatch.data.cache import Cache
from maskmatch.data.variants import FOLDER as VARIANTS
from maskmatch.data.variants import SUBEXPRESSIONS
from maskmatch.errors import UserError


@dataclass(frozen=True)
class DataConfig:
    root: str = "data/crohme"  # a `maskmatch data build --out` folder (the README's example path)
    train_split: str = "train"  # split trained on: the CROHME 2014 training set (DESIGN.md, Data)
    val_size: int = 500  # train images held out for validation and model selection (~6% of 8,834; assumed)
    val_seed: int = 0  # which images form the held-out slice; fixed, so that runs compare
    pixel_budget: int = 1_000_000  # padded pixels B x H x W per batch at the largest scale (assumed; CROHME: 9.3 images)
    max_batch_size: int = 16  # images per batch at most (CoMER uses 8 under a smaller budget; assumed)
    workers: int = 4  # data-loader processes per rank; 0 loads in the training process (assumed)
    scale_range: tuple[float, float] = (0.7, 1.3)  # rescale drawn per image and epoch (assumed; symbols ~28-52 px)
    label_fraction: float = 1.0  # share of the labelled training images (after the held-out slice) trained on; 1: all
    label_seed: int = 0  # which images form that share: fixed, so the subset never changes (resume included)
    variants: int = 0  # an epoch shows each training expression as one of its plain render and this many of the
    # cache's pre-rendered variants (`data build --variants K`; data/variants.py), drawn per epoch; 0: plain only
    subexpressions: bool = False  # also train on the sub-expressions of the training expressions (`data build
    # --subexpressions`; data/subexpr.py), never on those of a held-out or unlabelled one

    def __post_init__(self):
        if not 0 < self.label_fraction <= 1:
            raise ValueError(f"label_fraction {self.label_fraction} must lie in (0, 1]")
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range {self.scale_range} must satisfy 0 < low <= high")
        if self.val_size < 1 or self.pixel_budget < 1 or self.max_batch_size < 1 or self.workers < 0:
            raise ValueError("val_size, pixel_budget and max_batch_size must be positive, workers >= 0")
        if self.variants < 0:
            raise ValueError(f"variants {self.variants} must be >= 0")


def scaled_size(height: int, width: int, scale: float, max_height: int, max_width: int) -> tuple[int, int]:
    """The size of an image rescaled by `scale`, capped (never below its own size) by the render's limits."""
    factor = min(scale, max(1.0, min(max_height / height, max_width / width)))
    return max(1, round(height * factor)), max(1, round(width * factor))


def epoch_variants(n: int, count: int, seed: int, epoch: int) -> np.ndarray:
    """(n,) which render of each training image `epoch` shows: 0 the plain one, 1..count a variant."""
    if count == 0:
        return np.zeros(n, np.int64)
    return np.random.default_rng([seed, epoch, 13]).integers(0, count + 1, n)


def epoch_scales(n: int, scale_range: tuple[float, float], seed: int, epoch: int) -> np.ndarray:
    """(n,) rescale factors of the training images in `epoch`: a pure function of (seed, epoch)."""
    low, high = scale_range
    if low == high:
        return np.full(n, low)
    return np.random.default_rng([seed, epoch, 7]).uniform(low, high, n)


class ScaledDataset(Dataset):
    """Items (position, image uint8 (h, w), token ids (L,)) for keys (position, scale)."""

    def __init__(self, base: CacheDataset, max_height: int, max_width: int):
        self.base, self.max_height, self.max_width = base, max_height, max_width

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, float] | tuple[int, float, int]) -> tuple[int, np.ndarray, np.ndarray]:
        position, scale, *variant = key  # (position, scale, variant) for a VariantDataset
        i, image, ids = self.base[(position, *variant) if variant else position]
        size = scaled_size(*image.shape, scale, self.max_height, self.max_width)
        if size != image.shape:
            resized = Image.fromarray(np.ascontiguousarray(image)).resize(size[::-1], Image.Resampling.BILINEAR)
            image = np.asarray(resized)
        return i, image, ids


class TrainBatches(Sampler[list[tuple[int, float]]]):
    """This rank's batches of one epoch as lists of (position, scale), or (position, scale, variant) when
    the images have `variants` pre-rendered variants to draw from, from batch `start` on.

    `sampler` is the bucketing sampler over the images' largest sizes; Lightning calls its set_epoch.
    """

    def __init__(self, sampler: BucketBatchSampler, scale_range: tuple[float, float], seed: int, variants: int = 0):
        self.sampler, self.scale_range, self.seed, self.variants = sampler, scale_range, seed, variants
        self.start = 0  # batches of the epoch to skip (already trained on before a resume)

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def __iter__(self):
        n = len(self.sampler.sizes)
        scales = epoch_scales(n, self.scale_range, self.seed, self.epoch)
        if not self.variants:
            for batch in list(self.sampler)[self.start :]:
                yield [(i, float(scales[i])) for i in batch]
            return
        drawn = epoch_variants(n, self.variants, self.seed, self.epoch)
        for batch in list(self.sampler)[self.start :]:
            yield [(i, float(scales[i]), int(drawn[i])) for i in batch]

    def __len__(self) -> int:
        return len(self.sampler)  # the whole epoch's length, as Lightning counts batches


class ResumableLoader(DataLoader):
    """A DataLoader over `TrainBatches` whose position Lightning saves in checkpoints (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._epoch, self._done, self._resume = -1, 0, None

    def __iter__(self):
        return self._batches()  # a generator: nothing runs until the first batch is asked for

    def _batches(self):
        batches: TrainBatches = self.batch_sampler
        resume, self._resume = self._resume, None
        same_epoch = resume is not None and resume["epoch"] == batches.epoch
        batches.start = resume["batches_done"] if same_epoch else 0
        self._epoch, self._done = batches.epoch, batches.start
        for batch in super().__iter__():
            self._done += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self._epoch, "batches_done": self._done}

    def load_state_dict(self, state: dict) -> None:
        self._resume = dict(state)


def open_split(root: str | Path, split: str, labels: bool = True) -> Cache:
    folder = Path(root) / split
    try:
        return Cache.open(folder, labels=labels)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None


def label_subset(train: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The fixed share of training positions whose labels are used: round(fraction * n) (at least 1) of them, drawn
    without replacement as a pure function of (n, fraction, seed), sorted; all of them for fraction 1."""
    if fraction >= 1:
        return train
    keep = max(1, round(fraction * len(train)))
    chosen = np.random.default_rng([seed, 11]).choice(len(train), keep, replace=False)
    return np.sort(train[chosen])


def held_out_split(n: int, val_size: int, seed: int, expressions: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(train positions, validation positions), both sorted: a fixed random slice of at least `val_size` images.

    With `expressions` (N,) (the cache's ids of distinct captions), the slice takes whole expressions in a
    random order, so no held-out expression is also trained on: CROHME's training set repeats expressions
    across writers, and a slice of random images shares half its expressions with the rest. Without (caches
    built before expression ids), a random slice of exactly `val_size` images."""
    if val_size >= n:
        raise UserError(f"data.val_size {val_size} leaves no training image out of {n}")
    rng = np.random.default_rng(seed)
    if expressions is None:
        order = rng.permutation(n)
        return np.sort(order[val_size:]), np.sort(order[:val_size])
    rank = np.argsort(rng.permutation(int(expressions.max()) + 1))  # each expression's place in a random order
    order = np.lexsort((np.arange(n), rank[expressions]))  # images, grouped by expression in that order
    cut = val_size
    while cut < n and expressions[order[cut]] == expressions[order[cut - 1]]:
        cut += 1  # finish the expression the slice ends in
    if cut >= n:
        raise UserError(f"data.val_size {val_size} leaves no training expression out of {n} images")
    return np.sort(order[cut:]), np.sort(order[:cut])


class FinetuneData(L.LightningDataModule):
    """The train split of a built data folder, less a held-out validation slice; one rank's share of each.

    labels=False (stage 2): the images alone, token files never opened, every training image (no label_fraction).
    """

    def __init__(self, config: DataConfig, seed: int, labels: bool = True):
        super().__init__()
        self.config, self.seed = config, seed
        self.cache = open_split(config.root, config.train_split, labels)
        train, val = held_out_split(len(self.cache), config.val_size, config.val_seed, self.cache.expressions)
        if labels:
            train = label_subset(train, config.label_fraction, config.label_seed)
            self.train_set, self.val_set = self._train_set(train), CacheDataset(self.cache, val)
        else:
            self.train_set, self.val_set = ImageDataset(self.cache, train), ImageDataset(self.cache, val)
        render = self.cache.render_config
        self.max_height, self.max_width = int(render.get("max_height", 10**9)), int(render.get("max_width", 10**9))
        # Recognition is validated at the scale it is used at (1); stage 2 at its training scales' geometric mean,
        # so that its BatchNorm statistics, gathered at those scales, fit the images it is validated on.
        low, high = config.scale_range
        self.val_scale = 1.0 if labels else float(np.sqrt(low * high))

    def _train_set(self, train: np.ndarray) -> CacheDataset | WithParts:
        """The training images, with their pre-rendered variants when data.variants asks for them, then their
        sub-expressions when data.subexpressions does."""
        split = Path(self.config.root) / self.config.train_split
        base = CacheDataset(self.cache, train)
        if self.config.variants:
            try:
                base = VariantDataset(self.cache, train, Cache.open(split / VARIANTS), self.config.variants)
            except (FileNotFoundError, ValueError) as e:
                raise UserError(f"data.variants {self.config.variants}: {e} (`maskmatch data build --variants K`)") from None
        if not self.config.subexpressions:
            return base
        try:
            parts = Cache.open(split / SUBEXPRESSIONS)
        except (FileNotFoundError, ValueError) as e:
            raise UserError(f"data.subexpressions: {e} (`maskmatch data build --subexpressions`)") from None
        trained = {self.cache.names[int(i)] for i in train}
        return WithParts(base, parts, [k for k, name in enumerate(parts.names) if name.rsplit("~", 1)[0] in trained])

    @property
    def vocabulary(self) -> tuple[str, ...]:
        return self.cache.vocabulary

    def names(self, positions: list[int]) -> list[str]:
        """Names of training images, from their positions in the training set."""
        if isinstance(self.train_set, WithParts):
            return [self.train_set.name(int(p)) for p in positions]
        return [self.cache.names[int(self.train_set.indices[p])] for p in positions]

    def setup(self, stage: str | None = None) -> None:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        c = self.config
        high = max(c.scale_range)
        largest = np.array([scaled_size(h, w, high, self.max_height, self.max_width) for h, w in self.train_set.sizes])
        try:
            sampler = BucketBatchSampler(largest.reshape(-1, 2), c.pixel_budget, c.max_batch_size, shuffle=True,
                                         seed=self.seed, rank=rank, world_size=world)
            val_sizes = np.array([scaled_size(h, w, self.val_scale, self.max_height, self.max_width)
                                  for h, w in self.val_set.sizes])
            plan = BucketBatchSampler(val_sizes.reshape(-1, 2), c.pixel_budget, c.max_batch_size, seed=c.val_seed).plan(0)
        except ValueError as e:
            raise UserError(f"data.pixel_budget (sizes at the largest scale, {high}): {e}") from None
        self.train_batches = TrainBatches(sampler, c.scale_range, self.seed, c.variants)
        # every rank validates its share (counts are summed), as (position, scale) like the training batches
        self.val_batches = [[(i, self.val_scale) for i in batch] for batch in plan[rank::world]]
        if len(self.train_batches) == 0:
            raise UserError(f"no training batch for rank {rank} of {world}: too few images")

    def train_dataloader(self) -> ResumableLoader:
        dataset = ScaledDataset(self.train_set, self.max_height, self.max_width)
        return ResumableLoader(dataset, batch_sampler=self.train_batches, collate_fn=collate,
                               num_workers=self.config.workers, persistent_workers=self.config.workers > 0)

    def val_dataloader(self) -> DataLoader:
        workers = min(self.config.workers, 2)
        dataset = ScaledDataset(self.val_set, self.max_height, self.max_width)
        return DataLoader(dataset, batch_sampler=self.val_batches, collate_fn=collate, num_workers=workers,
                          persistent_workers=workers > 0)
