"""Door of the data layer: build(cfg, data_root) -> Manifest.

    manifest = build(BurstyDataConfig(), "runs/data")      # Ray must be initialised by the caller

One Ray task per (split, shard). Each shard is a pure function of (config, split, shard index), so the bytes do
not depend on how many workers run or in what order. Output lives in `<data_root>/<kind>-<hash8>/`, keyed by the
data-config hash, so arms and reruns with the same data config share it. A shard that already exists is kept
(it was written atomically, so it is whole). Then the statistics card (stats.json, also Ray tasks), and last the
manifest, which marks the directory complete.
"""
from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from metaicl.core.hashing import config_hash, file_sha256
from metaicl.core.io import write_json, write_parquet
from metaicl.core.seeding import derived_seed, rng_for
from pretrain_data.bursty import SPLITS, class_table, sample_split
from pretrain_data.config import BurstyDataConfig
from pretrain_data.manifest import Manifest, ShardEntry
from pretrain_data.stats import stats
from pretrain_data.tasks import run_tasks


def data_hash(cfg: BurstyDataConfig) -> str:
    return config_hash(cfg.hashed())


def data_dir(cfg: BurstyDataConfig, data_root: str | Path) -> Path:
    return Path(data_root) / f"{cfg.kind}-{data_hash(cfg)[:8]}"


def plan(cfg: BurstyDataConfig) -> list[tuple[str, int, int]]:
    """(split, shard index, rows) for every shard; depends on the config only, never on the worker count."""
    out = []
    for split in SPLITS:
        total = cfg.train_sequences if split == "train" else cfg.eval_sequences
        for index in range(math.ceil(total / cfg.shard_size)):
            out.append((split, index, min(cfg.shard_size, total - index * cfg.shard_size)))
    return out


def shard_table(cfg: BurstyDataConfig, split: str, index: int, rows: int) -> pa.Table:
    classes, labels, bursty = sample_split(cfg, class_table(cfg), split, rng_for(cfg.seed, split, index), rows)
    width = cfg.context_pairs + 1
    return pa.table({
        "classes": pa.FixedSizeListArray.from_arrays(pa.array(classes.ravel(), pa.int32()), width),
        "labels": pa.FixedSizeListArray.from_arrays(pa.array(labels.ravel(), pa.int32()), width),
        "bursty": pa.array(bursty),
    })


def write_shard(cfg: BurstyDataConfig, split: str, index: int, rows: int, out: Path) -> ShardEntry:
    """Build one shard (skipped if its file exists) and describe it."""
    rel = f"{split}-{index:05d}.parquet"
    if not (out / rel).exists():
        write_parquet(out / rel, shard_table(cfg, split, index, rows))
    return ShardEntry(split=split, index=index, file=rel, rows=rows, sha256=file_sha256(out / rel),
                      noise_seed=derived_seed(cfg.seed, "noise", split, index))


def write_class_table(cfg: BurstyDataConfig, out: Path) -> dict:
    table = class_table(cfg)
    labels = np.full(len(table.means), -1, np.int32)
    labels[: len(table.labels)] = table.labels
    path = out / "classes.parquet"
    if not path.exists():
        write_parquet(path, pa.table({
            "mean": pa.FixedSizeListArray.from_arrays(pa.array(table.means.ravel()), cfg.item_dim),
            "label": pa.array(labels),
            "novel": pa.array(np.arange(len(labels)) >= cfg.num_classes),
        }))
    return {"file": path.name, "sha256": file_sha256(path)}


def target_dir(cfg, data_root: str | Path) -> Path:
    """Where build() puts `cfg`'s data (without out_dir): few-shot data or a token mixture."""
    from pretrain_data.mixture_config import MixtureConfig

    if isinstance(cfg, MixtureConfig):
        from pretrain_data.mixture import mixture_dir

        return mixture_dir(cfg, data_root)
    return data_dir(cfg, data_root)


IN_PROCESS_SHARDS = 8
"""`metaicl data build` builds at most this many shards in its own process: starting Ray for them costs ~7 s
(measured, 2 cores), more than the shards take; a larger build runs as Ray tasks."""


def shard_count(cfg) -> int:
    """The work items (shard tasks) of a build, an upper bound for a mixture (one partial shard per source)."""
    from pretrain_data.mixture_config import MixtureConfig

    if isinstance(cfg, MixtureConfig):
        return -(-cfg.windows() // cfg.windows_per_shard) + len(cfg.sources)
    return len(plan(cfg))


def build(cfg, data_root: str | Path, max_in_flight: int | None = None, progress: bool = True,
          out_dir: str | Path | None = None) -> Manifest:
    """Build (or reuse) the data directory for `cfg` (a BurstyDataConfig or a MixtureConfig), as Ray tasks when Ray
    is running, else in this process (the same bytes). `max_in_flight` caps concurrent shard tasks (default: the
    cluster's CPUs); it never changes the output. `out_dir` replaces `<data_root>/<kind or name>-<hash8>`."""
    from pretrain_data.mixture_config import MixtureConfig

    if isinstance(cfg, MixtureConfig):
        from pretrain_data.mixture import build_mixture

        return build_mixture(cfg, data_root, max_in_flight, progress, out_dir)
    cfg.validate()
    out = Path(out_dir) if out_dir else data_dir(cfg, data_root)
    if (out / "manifest.json").exists():
        return Manifest.read(out / "manifest.json")
    out.mkdir(parents=True, exist_ok=True)
    class_info = write_class_table(cfg, out)
    entries = run_tasks(write_shard, [(cfg, *item, out) for item in plan(cfg)], f"data {out.name}",
                        max_in_flight, progress)
    entries.sort(key=lambda e: (SPLITS.index(e.split), e.index))
    manifest = Manifest(kind=cfg.kind, config=asdict(cfg), config_hash=data_hash(cfg), shards=entries,
                        class_table=class_info, path=out / "manifest.json")
    write_json(out / "stats.json", stats(manifest))
    return manifest.write(out / "manifest.json")  # last: its presence means the directory is complete
