"""The pipeline on local Ray beyond README's `metaicl run configs/tiny.yaml` (tests/test_readme_commands.py runs
that and checks its results, run directory and reruns): DDP layouts, and GPUs the cluster lacks."""
from __future__ import annotations

import pandas as pd
import pytest

from cluster.pipeline import run
from metaicl.core.config import load_config, to_yaml
from metaicl.experiment import ExperimentConfig
from tests.conftest import TINY


@pytest.fixture(scope="module")
def tiny_data_manifest(ray_session, tmp_path_factory):
    """The tiny config's bursty arm and its data, built (the pipeline's run itself is README's `metaicl run
    configs/tiny.yaml`, in tests/test_readme_commands.py)."""
    from pretrain_data.build import build

    root = tmp_path_factory.mktemp("e2e")
    cfg, _ = load_config(ExperimentConfig, TINY, [f"runs_root={root}/runs", f"data_root={root}/data"])
    return cfg, root, build(cfg.arm("bursty").data, cfg.data_root, progress=False)


def test_two_ddp_workers_train_the_same_model_as_one(tiny_data_manifest, tmp_path):
    """Each rank takes a strided half of the same global batch and DDP averages the gradients, so two workers
    follow one worker's trajectory up to float rounding."""
    import dataclasses

    import torch
    from safetensors.torch import load_file

    from cluster.pipeline import classifier_steps
    from metaicl.train.arm import run_arm
    from metaicl.train.ray_train import fit_arm

    cfg, root, _ = tiny_data_manifest
    [base] = [s.spec for s in classifier_steps(cfg) if s.name == "train [bursty]"]
    one = dataclasses.replace(base, out_dir=str(tmp_path / "one"))
    two = dataclasses.replace(base, out_dir=str(tmp_path / "two"), train=dataclasses.replace(base.train, num_workers=2))
    run_arm(one)
    fit_arm(two, tmp_path / "ray")
    a, b = (load_file(tmp_path / d / "model" / "model.safetensors") for d in ("one", "two"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=2e-5, rtol=1e-4)
    assert pd.read_parquet(tmp_path / "two" / "metrics.parquet").step.max() == cfg.train.steps


def test_one_worker_trains_in_a_ray_task_the_same_model_as_in_process(tiny_data_manifest, tmp_path):
    """A one-worker arm forms no worker group: it trains in a Ray task (Ray Train's local mode), bit for bit
    the model `run_arm` trains in this process on as many threads."""
    import dataclasses

    import torch
    from safetensors.torch import load_file

    from cluster.pipeline import classifier_steps
    from metaicl.train.arm import run_arm
    from metaicl.train.ray_train import fit_arm

    cfg, root, _ = tiny_data_manifest
    [base] = [s.spec for s in classifier_steps(cfg) if s.name == "train [bursty]"]
    base = dataclasses.replace(base, train=dataclasses.replace(base.train, cpus_per_worker=1))
    torch.set_num_threads(1)
    run_arm(dataclasses.replace(base, out_dir=str(tmp_path / "here")))
    fit_arm(dataclasses.replace(base, out_dir=str(tmp_path / "task")), tmp_path / "ray")
    a, b = (load_file(tmp_path / d / "model" / "model.safetensors") for d in ("here", "task"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "here" / "metrics.parquet"),
                                  pd.read_parquet(tmp_path / "task" / "metrics.parquet"), check_exact=True)
    assert not (tmp_path / "ray").exists()  # no Ray Train run state: no worker group was started


def test_gpus_the_cluster_lacks_stop_the_run_before_anything_is_written(ray_session, tmp_path):
    from metaicl.core.errors import ConfigError

    cfg, resolved = load_config(ExperimentConfig, TINY, [f"runs_root={tmp_path}/runs", f"data_root={tmp_path}/data",
                                                         "train.use_gpu=true"])
    with pytest.raises(ConfigError, match="needs 1 GPU"):
        run(cfg, to_yaml(resolved), echo=lambda _: None, progress=False)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_a_lease_whose_holder_is_gone_is_taken_over_and_a_live_one_is_not(tmp_path):
    import json
    import socket
    import subprocess
    import sys

    from cluster.lease import Leases, lease_path

    step = tmp_path / "train-1a2b3c4d"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lease_path(step).write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout)}))
    with Leases(echo=lambda _: None) as leases:
        assert leases.try_claim(step)  # its holder exited: taken over
        assert json.loads(lease_path(step).read_text())["pid"] != int(dead.stdout)
    assert not lease_path(step).exists()  # released on exit
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lease_path(step).write_text(json.dumps({"host": socket.gethostname(), "pid": alive.pid}))
        with Leases(echo=lambda _: None) as leases:
            assert not leases.try_claim(step)  # a live holder keeps it
    finally:
        alive.kill()


def test_with_resource_wait_a_run_asks_the_autoscaler_says_it_waits_and_goes_on_when_the_gpus_come(
        ray_session, tmp_path, monkeypatch):
    """cluster.resource_wait_s (issue 19): on an autoscaling cluster the wait for GPUs is explicit, logged and
    bounded. Here the cluster 'grows' a GPU on its third look (ray.cluster_resources planted); without it the same
    run is refused after the wait, nothing written."""
    import ray
    import ray.autoscaler.sdk

    from cluster.pipeline import check_cluster, plan
    from metaicl.core.errors import ConfigError

    cfg, _ = load_config(ExperimentConfig, TINY, [f"runs_root={tmp_path}/runs", f"data_root={tmp_path}/data",
                                                  "train.use_gpu=true", "cluster.resource_wait_s=2"])
    todo = [s for s in plan(cfg) if s.spec is not None]
    looks, asked, said = [], [], []
    real = ray.cluster_resources

    def growing() -> dict:
        looks.append(1)
        return {**real(), **({"GPU": 1.0} if len(looks) >= 3 else {})}

    monkeypatch.setattr(ray, "cluster_resources", growing)
    monkeypatch.setattr(ray.autoscaler.sdk, "request_resources", lambda bundles: asked.append(bundles))
    check_cluster(cfg, todo, evaluates=False, echo=said.append, poll_s=0.01)
    assert len(looks) == 3 and asked == [[{"CPU": 1, "GPU": 1.0}] * 2]  # both arms' one worker each
    assert len(said) == 1 and "waiting up to 2 s (cluster.resource_wait_s)" in said[0] and "needs 1 GPU" in said[0]

    monkeypatch.setattr(ray, "cluster_resources", real)
    cfg, resolved = load_config(ExperimentConfig, TINY, [f"runs_root={tmp_path}/runs", f"data_root={tmp_path}/data",
                                                         "train.use_gpu=true", "cluster.resource_wait_s=0.5"])
    with pytest.raises(ConfigError, match=r"needs 1 GPU .* after waiting 0.5 s \(cluster.resource_wait_s\)"):
        run(cfg, to_yaml(resolved), echo=lambda _: None, progress=False)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()
