"""Deterministic global batches over the training shards, sliced per data-parallel rank.

    batches = GlobalBatches(reader, batch_size=128, rank=0, world=1)
    items, labels = batches.get(step)          # the rows of global batch `step`, this rank's slice

Global batch s holds training rows [s*B, (s+1)*B) modulo the number of rows (training cycles over the data when
steps x B exceeds it). The row order is fixed by the shards, so the data a step sees depends on (data, step) only:
not on the number of workers (each rank takes a strided slice of the same global batch) and not on restarts.
"""
from __future__ import annotations

import numpy as np
import torch

from pretrain_data.reader import FewShotReader


def rank_rows(step: int, batch_size: int, total: int, rank: int = 0, world: int = 1) -> np.ndarray:
    """Rows of global batch `step` ([s*B, (s+1)*B) modulo `total`) that data-parallel rank `rank` takes."""
    return ((step * batch_size + np.arange(batch_size)) % total)[rank::world]


class GlobalBatches:
    def __init__(self, reader: FewShotReader, batch_size: int, rank: int = 0, world: int = 1):
        self.reader, self.batch_size, self.rank, self.world = reader, batch_size, rank, world
        self.shards = reader.manifest.split("train")
        self.starts = np.cumsum([0] + [s.rows for s in self.shards])
        self.total = int(self.starts[-1])
        self._cached: tuple[int, tuple[np.ndarray, np.ndarray]] | None = None

    def _shard(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cached is None or self._cached[0] != i:
            self._cached = (i, self.reader.shard(self.shards[i]))
        return self._cached[1]

    def rows(self, global_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Items and labels of the given global row indices, in the order given."""
        shard_of = np.searchsorted(self.starts, global_rows, side="right") - 1
        items = labels = None
        for i in np.unique(shard_of):
            mask = shard_of == i
            x, y = self._shard(int(i))
            if items is None:
                items = np.empty((len(global_rows), *x.shape[1:]), x.dtype)
                labels = np.empty((len(global_rows), *y.shape[1:]), y.dtype)
            items[mask], labels[mask] = x[global_rows[mask] - self.starts[i]], y[global_rows[mask] - self.starts[i]]
        return items, labels

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's slice of global batch `step` (0-based)."""
        x, y = self.rows(rank_rows(step, self.batch_size, self.total, self.rank, self.world))
        return torch.from_numpy(x), torch.from_numpy(y)
