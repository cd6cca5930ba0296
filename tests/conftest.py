"""Shared fixtures: one local Ray for the whole session (ray.init costs seconds), tiny configs."""
from __future__ import annotations

import contextlib
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


@pytest.fixture(scope="session")
def ray_session():
    """A local 2-CPU Ray, started once for every module that asks. A fixture that needs another Ray (more CPUs,
    a multi-node cluster) takes its place with `other_ray` and starts it again when it is done."""
    from metaicl.core.ray_local import init_ray

    ray = init_ray(ClusterConfig(num_cpus=2))
    yield ray
    ray.shutdown()


@contextlib.contextmanager
def other_ray():
    """Shut the session's Ray down (if it runs) for the duration; restart it afterwards."""
    import ray

    running = ray.is_initialized()
    ray.shutdown()
    try:
        yield
    finally:
        ray.shutdown()
        if running:
            from metaicl.core.ray_local import init_ray

            init_ray(ClusterConfig(num_cpus=2))


TINY_DATA = dict(num_classes=64, num_labels=8, context_pairs=4, item_dim=8, num_novel_classes=16,
                 burstiness=2, train_sequences=1000, eval_sequences=128, shard_size=256)


@pytest.fixture
def tiny_data():
    from pretrain_data.config import BurstyDataConfig

    return BurstyDataConfig(**TINY_DATA)


SLOW_FIXTURES = {"ray_session", "head", "cluster", "repo"}
"""Tests that start Ray (a local session, a loopback head, a multi-node cluster) or run README's commands."""
SLOW_MODULES = {"test_twins_and_kills.py", "test_ray_local.py", "test_sweep.py", "test_data_cli.py", "test_soak.py"}
"""Whole modules whose tests start Ray through the command line."""


FIRST = ("test_readme_sweeps.py", "test_readme_commands.py")
"""The longest modules (README's commands, one after another in a repository copy each) start first: with two test
processes (pytest-xdist `-n 2 --dist loadfile`) the rest of the suite runs beside them."""


def pytest_collection_modifyitems(config, items):
    """Mark the tests that go through Ray `slow`: `pytest -m "not slow"` is the inner loop (README: Contributing).
    README's commands go first."""
    items.sort(key=lambda item: item.path.name not in FIRST)  # stable: every other test keeps its order
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
