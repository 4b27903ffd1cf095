"""Stage 1's batches: the training images alone (labels are never opened), less finetune's held-out slice.

The cache is opened with `labels=False`, so its token files are neither needed nor read, and a split
without captions trains the same. Training batches are bucketed under the pixel budget at the views'
largest size (`views.largest_view`) and resume in mid-epoch through finetune's `ResumableLoader`; the
views themselves are made on the training device (`views.make_views`), not here.
"""

from __future__ import annotations


import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from maskmatch.data.batching import BucketBatchSampler, ImageDataset, collate
from maskmatch.data.loading import ResumableLoader, TrainBatches, held_out_split, open_split
from maskmatch.errors import UserError
from maskmatch.pretrain.config import PretrainDataConfig, ViewConfig
from maskmatch.pretrain.views import largest_view

class PretrainData(L.LightningDataModule):
    """All training images less the held-out slice (the same as finetune's for the same val_size and val_seed)."""

    def __init__(self, config: PretrainDataConfig, views: ViewConfig, seed: int):
        super().__init__()
        self.config, self.views, self.seed = config, views, seed
        self.cache = open_split(config.root, config.train_split, labels=False)
        train, val = held_out_split(len(self.cache), config.val_size, config.val_seed, self.cache.expressions)
        self.train_set, self.val_set = ImageDataset(self.cache, train), ImageDataset(self.cache, val)

    def names(self, positions: list[int]) -> list[str]:
        """Names of training images, from their positions in the training set."""
        return [self.cache.names[int(self.train_set.indices[p])] for p in positions]

    def view_sizes(self, dataset: ImageDataset) -> np.ndarray:
        """(N, 2) the largest view of each image: what the pixel budget counts."""
        return np.array([largest_view(int(h), int(w), self.views) for h, w in dataset.sizes]).reshape(-1, 2)

    def setup(self, stage: str | None = None) -> None:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        c = self.config
        try:
            sampler = BucketBatchSampler(self.view_sizes(self.train_set), c.pixel_budget, c.max_batch_size,
                                         shuffle=True, seed=self.seed, rank=rank, world_size=world)
            plan = BucketBatchSampler(self.view_sizes(self.val_set), c.pixel_budget, c.max_batch_size,
                                      seed=c.val_seed).plan(0)
        except ValueError as e:
            raise UserError(f"data.pixel_budget (sizes of the largest views): {e}") from None
        self.train_batches = TrainBatches(sampler, (1.0, 1.0), self.seed)  # scale 1: views rescale on the device
        self.val_batches = plan[rank::world]  # a fixed plan: the probe's batches never change
        if len(self.train_batches) == 0:
            raise UserError(f"no training batch for rank {rank} of {world}: too few images")

    def train_dataloader(self) -> ResumableLoader:
        return ResumableLoader(self.train_set, batch_sampler=self.train_batches, collate_fn=collate,
                               num_workers=self.config.workers, persistent_workers=self.config.workers > 0)

    def val_dataloader(self) -> DataLoader:
        workers = min(self.config.workers, 2)
        return DataLoader(self.val_set, batch_sampler=self.val_batches, collate_fn=collate, num_workers=workers,
                          persistent_workers=workers > 0)
