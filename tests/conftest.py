"""Shared fixtures: one local Ray session per test module (ray.init costs seconds), tiny configs."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"  # the pipeline at toy size, run by the end-to-end and CLI tests
sys.path.insert(0, str(ROOT))

from metaicl.core.ray_local import ClusterConfig, prepare_env  # noqa: E402

prepare_env()  # before any `import ray` in this process
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def ray_session():
    from metaicl.core.ray_local import init_ray

    ray = init_ray(ClusterConfig(num_cpus=2))
    yield ray
    ray.shutdown()


TINY_DATA = dict(num_classes=64, num_labels=8, context_pairs=4, item_dim=8, num_novel_classes=16,
                 burstiness=2, train_sequences=1000, eval_sequences=128, shard_size=256)


@pytest.fixture
def tiny_data():
    from pretrain_data.config import BurstyDataConfig

    return BurstyDataConfig(**TINY_DATA)
