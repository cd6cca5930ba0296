"""Read a built data directory back as arrays: the symbolic rows plus the items they stand for.

    reader = FewShotReader(Manifest.read("runs/data/bursty_fewshot-1a2b3c4d"))
    items, labels = reader.split("icl_novel")      # (n, N+1, D) float32, (n, N+1) int64
"""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from pretrain_data.bursty import materialise
from pretrain_data.manifest import Manifest, ShardEntry


def fixed_list(column) -> np.ndarray:
    """A parquet fixed-size-list column as a 2-D numpy array (rows, list size), without Python objects."""
    chunked = column.combine_chunks()
    return chunked.values.to_numpy().reshape(len(chunked), chunked.type.list_size)


class FewShotReader:
    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        self.noise = float(manifest.config["within_class_noise"])
        table = pq.read_table(manifest.root / manifest.class_table["file"])
        self.means = fixed_list(table.column("mean")).astype(np.float32)
        self.class_labels = table.column("label").to_numpy()

    def shard(self, entry: ShardEntry) -> tuple[np.ndarray, np.ndarray]:
        """(items, labels) of one shard; items drawn with the shard's own noise seed."""
        table = pq.read_table(self.manifest.root / entry.file)
        classes = fixed_list(table.column("classes"))
        labels = fixed_list(table.column("labels")).astype(np.int64)
        items = materialise(self.means, classes, self.noise, np.random.default_rng(entry.noise_seed))
        return items, labels

    def classes(self, split: str) -> np.ndarray:
        return np.concatenate([fixed_list(pq.read_table(self.manifest.root / e.file).column("classes"))
                               for e in self.manifest.split(split)])

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        parts = [self.shard(e) for e in self.manifest.split(name)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
