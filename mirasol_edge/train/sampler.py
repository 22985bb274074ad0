"""What each rank reads, in which order: the global batch sampler and the training DataLoader."""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from mirasol_edge.batching import collate_clips
from mirasol_edge.config import ModelConfig
from mirasol_edge.data.dataset import ManifestDataset, SyntheticDataset
from mirasol_edge.train.config import TrainConfig

SYNTHETIC_ITEMS = 1 << 40  # the synthetic stream is endless: item i is clip clip_seed(data_seed, i)


class GlobalBatchSampler:
    """This rank's slice of every global batch, from `start_step` on (endless; the loop stops it).

    Position p of the stream is global batch p // batch_size. Unshuffled (synthetic data) item p is
    p; shuffled (files), item p is epoch * n + a permutation of the n files drawn per (seed, epoch),
    the epoch telling the dataset which questions to draw.
    """

    def __init__(self, n_items: int, batch_size: int, rank: int = 0, world: int = 1,
                 start_step: int = 0, shuffle: bool = False, seed: int = 0):
        if batch_size % world:
            raise ValueError(f"the batch of {batch_size} clips does not split evenly over {world} processes; use a multiple of {world}.")
        self.n, self.batch, self.rank, self.world = n_items, batch_size, rank, world
        self.start_step, self.shuffle, self.seed = start_step, shuffle, seed
        self._perm: tuple[int, np.ndarray] | None = None

    def item(self, p: int) -> int:
        if not self.shuffle:
            return p
        epoch, j = divmod(p, self.n)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n))
        return epoch * self.n + int(self._perm[1][j])

    def __iter__(self):
        share = self.batch // self.world
        step = self.start_step
        while True:
            first = step * self.batch + self.rank * share
            yield [self.item(p) for p in range(first, first + share)]
            step += 1


def training_loader(tcfg: TrainConfig, cfg: ModelConfig, rank: int, world: int, start_step: int,
                    pin_memory: bool) -> torch.utils.data.DataLoader:
    """Batches of collate_clips for this rank, from global batch `start_step` on: a resumed run reads what
    an uninterrupted one would have."""
    if tcfg.manifest:  # files: shuffled per epoch
        dataset = ManifestDataset(tcfg.manifest, cfg.chunk, tcfg.questions_per_clip, seed=tcfg.data_seed)
        n_items, shuffle = len(dataset), True
    else:
        dataset = SyntheticDataset(cfg.chunk, SYNTHETIC_ITEMS, tcfg.data_seed, tcfg.questions_per_clip,
                                   tcfg.durations, tcfg.duration_weights, group=tcfg.batch_size,
                                   off_grid=tcfg.off_grid_fraction, near_change=tcfg.near_change)
        n_items, shuffle = SYNTHETIC_ITEMS, False
    sampler = GlobalBatchSampler(n_items, tcfg.batch_size, rank, world, start_step, shuffle, tcfg.data_seed)
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=partial(collate_clips, cfg=cfg),
        num_workers=tcfg.num_workers, pin_memory=pin_memory,
        persistent_workers=tcfg.num_workers > 0, prefetch_factor=4 if tcfg.num_workers > 0 else None,
    )
