"""Losing a node of a multi-node Ray cluster (issue 7 item 7): the data build retries its shard tasks on the nodes
that are left and writes the same manifest; a Ray Train arm restarts on a new node, resumes from its latest
checkpoint and ends with the weights and metrics of an undisturbed run.

The cluster is `ray.cluster_utils.Cluster` in this process, every node a raylet on 127.0.0.1: a head with no CPUs
(the driver and Ray Train's controller live there, so losing a worker node never takes them) and 1-CPU worker
nodes that the tests add and remove. To remove a node while work is running on it, never after, the workers of
this cluster run `worker_hook`, which can hold a shard write or a training step until the test lets go; the test
polls marker files for what runs where and waits until the removed node's worker process is dead before it lets
go, so that the work it held can only finish by Ray's retry on another node.
"""
from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import TINY, TINY_DATA, other_ray

MARKS_ENV = "METAICL_TEST_FAULT_MARKS"
"""Directory of the marker and hold files shared by the test and the cluster's workers."""
HOLD_BUILD = "hold_build"
"""While this file exists, every shard write in a worker waits (after leaving its start marker)."""
HOLD_TRAIN = "hold_train"
"""While this file exists, a training worker waits at every step >= the step written in it."""


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def worker_hook() -> None:
    """worker_process_setup_hook of this module's cluster: Ray's usual quiet logs, and metaicl.core.io's writers
    wrapped to leave markers (which node and process wrote what) and to wait on the hold files. It runs before any
    task is loaded, so pretrain_data.build and metaicl.train.arm bind the wrappers when they import them. Holding
    changes when things happen, never what is computed."""
    from metaicl.core import io
    from metaicl.core.ray_local import quiet_ray_logs

    quiet_ray_logs()
    marks = Path(os.environ[MARKS_ENV])
    write_json, write_parquet = io.write_json, io.write_parquet

    def shard_write(path, table) -> None:
        path = Path(path)
        if not path.name.startswith(("train-", "icl_", "iwl-")):
            return write_parquet(path, table)
        # <data root>.<shard>.<node>.<pid>: the two builds of a test share the data directory's name, not its root
        tag = f"{path.parent.parent.name}.{path.stem}.{_node_id()}.{os.getpid()}"
        (marks / f"{tag}.start").touch()
        while (marks / HOLD_BUILD).exists():
            time.sleep(0.02)
        write_parquet(path, table)
        (marks / f"{tag}.end").touch()

    def step_write(path, obj) -> None:
        write_json(path, obj)
        if Path(path).name != "progress.json":
            return
        with open(marks / f"progress.{_node_id()}.{os.getpid()}", "a") as f:
            f.write(f"{obj['step']}\n")
        while True:
            try:
                if obj["step"] < int((marks / HOLD_TRAIN).read_text()):
                    break
            except FileNotFoundError:
                break
            time.sleep(0.02)

    io.write_parquet, io.write_json = shard_write, step_write


def wait_for(what: str, condition, timeout: float = 60.0, future=None):
    """Poll `condition()` until it returns something truthy; fail fast when `future` (the work under test) ends."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if future is not None and future.done():
            future.result()  # raises what the work raised
            pytest.fail(f"finished before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)
    return value


@contextlib.contextmanager
def in_background(fn, *args, **kwargs):
    """`fn(*args, **kwargs)` in a thread, as a future; a failing test does not wait for it on the way out."""
    pool = ThreadPoolExecutor(1)
    try:
        yield pool.submit(fn, *args, **kwargs)
    finally:
        pool.shutdown(wait=False)


def process_gone(pid: int) -> bool:
    """True once process `pid` has exited (a zombie runs nothing either). Linux: reads /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


class LoopbackCluster:
    """A 0-CPU head plus 1-CPU worker nodes, all on 127.0.0.1, with this process's driver connected."""

    NODE = {"node_ip_address": "127.0.0.1", "object_store_memory": 80 * 2**20}

    def __init__(self, marks: Path):
        import ray
        from ray.cluster_utils import Cluster

        from metaicl.core.ray_local import RUNTIME_ENV

        assert not ray.is_initialized(), "another Ray session of this process is still up"
        assert __name__.startswith("tests."), "workers import worker_hook by this module's name"
        self.marks = marks
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "include_dashboard": False, "dashboard_host": "127.0.0.1", **self.NODE})
        self.workers: list = []
        root = str(Path(__file__).resolve().parents[1])
        env_vars = {
            **RUNTIME_ENV["env_vars"],
            "RAY_API_SERVER_ADDRESS": "http://127.0.0.1:9",  # as init_ray: no dashboard, no State API
            MARKS_ENV: str(marks),
            "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
        }
        ray.init(address=self.cluster.address, logging_level="WARNING", _node_ip_address="127.0.0.1",
                 runtime_env={**RUNTIME_ENV, "worker_process_setup_hook": f"{__name__}.worker_hook",
                              "env_vars": env_vars})

    def worker_nodes(self, count: int) -> list:
        """Exactly `count` 1-CPU worker nodes (added or removed as needed), oldest first."""
        while len(self.workers) > count:
            self.remove(self.workers[-1])
        while len(self.workers) < count:
            self.add()
        return list(self.workers)

    def add(self):
        node = self.cluster.add_node(num_cpus=1, **self.NODE)
        self.workers.append(node)
        return node

    def remove(self, node) -> None:
        self.cluster.remove_node(node)
        self.workers.remove(node)

    def shutdown(self) -> None:
        import ray

        ray.shutdown()
        self.cluster.shutdown()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with other_ray():
        c = LoopbackCluster(tmp_path_factory.mktemp("marks"))
        yield c
        c.shutdown()


@pytest.fixture
def marks(cluster):
    """The workers' marker directory; whatever a test holds is let go when it ends, passed or failed."""
    yield cluster.marks
    for hold in (HOLD_BUILD, HOLD_TRAIN):
        (cluster.marks / hold).unlink(missing_ok=True)


def test_data_build_survives_losing_a_node_mid_task(cluster, marks, tmp_path):
    from pretrain_data.build import build, plan
    from pretrain_data.config import BurstyDataConfig

    cfg = BurstyDataConfig(**TINY_DATA)  # 4 train shards, one per eval set
    node_a, node_b = cluster.worker_nodes(2)
    reference = build(cfg, tmp_path / "reference", max_in_flight=2, progress=False)

    (marks / HOLD_BUILD).touch()
    with in_background(build, cfg, tmp_path / "disturbed", max_in_flight=2, progress=False) as future:
        held = wait_for("a shard task held on node A",
                        lambda: sorted(marks.glob(f"disturbed.*.{node_a.node_id}.*.start")), future=future)
        assert len(held) == 1  # 1 CPU: one task at a time
        _, shard, _, pid = held[0].name.split(".")[:4]
        cluster.remove(node_a)
        wait_for(f"node A's worker {pid} to die", lambda: process_gone(int(pid)), timeout=30)
        (marks / HOLD_BUILD).unlink()
        disturbed = future.result(timeout=120)

    assert not list(marks.glob(f"disturbed.*.{node_a.node_id}.*.end"))  # A wrote nothing
    assert list(marks.glob(f"disturbed.{shard}.{node_b.node_id}.*.end"))  # its shard was retried on B
    assert disturbed.to_dict() == reference.to_dict()  # config hash, every shard's sha256, the class table
    assert disturbed.config_hash == reference.config_hash and len(disturbed.shards) == len(plan(cfg))
    for name in ["stats.json", "manifest.json", *(s.file for s in reference.shards)]:
        assert (disturbed.root / name).read_bytes() == (reference.root / name).read_bytes(), name


def test_training_resumes_on_a_new_node_from_the_latest_checkpoint(cluster, marks, tmp_path):
    import pandas as pd
    import torch
    from safetensors.torch import load_file

    from metaicl.core.config import load_config
    from metaicl.experiment import ExperimentConfig
    from metaicl.train.arm import ArmSpec, run_arm
    from metaicl.train.ray_train import fit_arm
    from pretrain_data.build import build

    (node_b,) = cluster.worker_nodes(1)  # the trainer's one worker can only land here
    cfg, _ = load_config(ExperimentConfig, TINY, [
        f"data_root={tmp_path}/data", "train.steps=40", "train.eval_every=10", "train.ckpt_every=10",
        "train.log_every=1", "train.max_failures=2"])
    arm = cfg.arm("bursty")
    manifest = build(arm.data, arm.data_root, progress=False)

    def spec(name: str) -> ArmSpec:
        return ArmSpec(name, str(manifest.path), str(tmp_path / name), arm.model, arm.train, arm.eval)

    torch.set_num_threads(1)  # as a 1-CPU Ray worker
    run_arm(spec("straight"))  # the undisturbed run, in this process

    out = tmp_path / "disturbed"
    (marks / HOLD_TRAIN).write_text("25")  # held between the checkpoints of steps 20 and 30
    with in_background(fit_arm, spec("disturbed"), tmp_path / "ray_results") as future:
        log_b = wait_for("the trainer to reach step 25 on node B",
                         lambda: [p for p in marks.glob(f"progress.{node_b.node_id}.*")
                                  if p.read_text().split()[-1:] == ["25"]], timeout=120, future=future)[0]
        checkpoints = sorted(p.name for p in (out / "checkpoints").glob("step_*"))
        cluster.remove(node_b)
        pid = int(log_b.name.split(".")[-1])
        wait_for(f"node B's trainer worker {pid} to die", lambda: process_gone(pid), timeout=30)
        (marks / HOLD_TRAIN).unlink()
        node_c = cluster.add()  # somewhere for Ray Train to restart the worker group
        future.result(timeout=180)

    assert checkpoints == ["step_0000010", "step_0000020"]
    logs = {p.name.split(".")[1]: [int(s) for s in p.read_text().split()] for p in marks.glob("progress.*")}
    assert set(logs) == {node_b.node_id, node_c.node_id}, "one trainer process per node, on B then on C"
    assert logs[node_b.node_id] == list(range(1, 26))
    assert logs[node_c.node_id] == list(range(21, 41))  # resumed after step 20, the latest checkpoint
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000030", "step_0000040"]

    metrics = pd.read_parquet(out / "metrics.parquet")
    straight = pd.read_parquet(tmp_path / "straight" / "metrics.parquet")
    assert not metrics.duplicated(["step", "eval", "metric"]).any()
    assert sorted(metrics.step.unique()) == [0, 10, 20, 30, 40]
    pd.testing.assert_frame_equal(metrics, straight, check_exact=True)  # nothing lost, repeated or changed
    a = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = load_file(out / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
