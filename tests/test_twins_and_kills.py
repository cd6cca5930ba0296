"""cluster.address other than `local` joins that cluster instead of starting one (here: the session's Ray). On it,
issue 19's reliability of the language-model path: two runs of one config at once make each step once, and a run
killed with SIGKILL during pretraining, then during meta-training, and run again ends with the results of a run
that was never interrupted."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from metaicl.cli import main
from metaicl.core.io import read_json
from metaicl.core.ray_local import LOOPBACK_ENV
from tests.conftest import ROOT

BIN = Path(sys.executable).parent
LM_TOY = [str(BIN / "metaicl"), "run", str(ROOT / "configs" / "sweeps" / "metaicl_tiny.yaml"),
          # stages long enough to be killed in: a checkpoint every 10 pretraining and 4 meta-training steps (the
          # latter between evaluations: the train-loss average in progress resumes too)
          "train.steps=30", "train.eval_every=30", "train.ckpt_every=10", "eval.lm_icl=false",
          "metatrain.steps=150", "metatrain.eval_every=50", "metatrain.ckpt_every=4", "eval.methods=[metaicl]"]


@pytest.fixture
def head(ray_session):
    """The cluster the runs join: the session's own Ray (started in this process by `ray.init`), by its GCS
    address, as a second driver on a cluster's node joins it: (address, environment). Its 2 CPUs are what the
    reference run below had too."""
    return ray_session.get_runtime_context().gcs_address, {**os.environ, **LOOPBACK_ENV}


def lm_run(head, root: Path) -> subprocess.Popen:
    address, env = head
    return subprocess.Popen([*LM_TOY, f"cluster.address={address}", f"data_root={root}/data", f"runs_root={root}/runs"],
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_file(pattern: str, root: Path, procs: list[subprocess.Popen], timeout: float = 300) -> Path:
    deadline = time.time() + timeout
    while not (found := list(root.glob(pattern))):
        assert any(p.poll() is None for p in procs), f"the runs ended before {pattern} appeared"
        assert time.time() < deadline, f"no {pattern} in {timeout} s"
        time.sleep(0.02)
    return found[0]


def kill_holder(step: Path, runs: list[subprocess.Popen]) -> tuple[subprocess.Popen, str]:
    """SIGKILL the run that holds the step's lease (as `kill -9` or the OOM killer would) and reap it (a zombie
    still looks alive); the run and its output so far."""
    holder = json.loads((step.parent / f".{step.name}.lease").read_text())["pid"]
    [victim] = [p for p in runs if p.pid == holder]
    victim.kill()
    return victim, victim.communicate()[0]


def test_runs_at_once_and_runs_killed_mid_stage_make_each_step_once_and_end_as_an_uninterrupted_run(head, tmp_path):
    """Issue 19 on the language-model path, on a joined cluster. Two runs of one config start at once (A, B); each
    step is leased (cluster/lease.py), so one pretrains while the other waits. The one pretraining is killed with
    SIGKILL after its first checkpoint; the other takes the lease over and resumes pretraining from that checkpoint;
    a third run (C) starts and waits. The one meta-training (B or C: a race, either is right) is killed after its
    first meta-training checkpoint; the other takes over and resumes it. C's results equal, row for row and bit for bit, those of a run never interrupted
    (the reference: in this process, on the same cluster, its own data_root). The module is named to run after the
    LM modules, whose Ray tasks leave the session's workers with torch and transformers imported (~8 s less)."""
    reference, root = tmp_path / "reference", tmp_path / "killed"
    assert main([*LM_TOY[1:], f"data_root={reference}/data", f"runs_root={reference}/runs"]) == 0
    for built in (*reference.glob("data/metaicl-synthetic-*"), *reference.glob("data/tasks-*")):
        shutil.copytree(built, root / "data" / built.name)  # the same data: the runs below reuse it
    runs = [lm_run(head, root) for _ in range(2)]
    step = wait_for_file("data/pretrain-*/checkpoints/step_0000010/state.json", root, runs).parents[2]
    first, first_out = kill_holder(step, runs)
    assert not (step / "metrics.parquet").exists()  # killed in pretraining, not after it
    runs = [p for p in runs if p is not first] + [lm_run(head, root)]
    meta = wait_for_file("data/metatrain-*/checkpoints/step_0000004/state.json", root, runs).parents[2]
    second, second_out = kill_holder(meta, runs)  # B or C: whichever took the meta-training lease first
    assert not (meta / "metrics.parquet").exists()
    [last] = [p for p in runs if p is not second]
    out, err = last.communicate(timeout=300)
    assert last.returncode == 0, (out, err)
    # each killed run's lease was taken over (pretraining: by B or by C, whichever saw it first) and its stage
    # resumed from the checkpoint, not from step 0
    both = second_out + out
    assert f"another process is making {step}" in both and "pretrain: pretrain finished" in both
    assert sum(f"{step.name}: the process that was making it" in said for said in (second_out, out)) == 1
    assert f"{meta.name}: the process that was making it" in out and "is gone; taking it over" in out
    assert "metatrain: metaicl finished" in out
    assert read_json(step / "progress.json")["resumed_from"] == 10
    assert read_json(meta / "progress.json")["resumed_from"] == 4
    assert f"ray: {head[0]} ready" in out  # it joined the head
    assert not [line for o in (first_out, second_out, out) for line in o.splitlines() if ": built " in line]
    [a], [b] = ((where / "runs").iterdir() for where in (reference, root))
    pd.testing.assert_frame_equal(*(pd.read_parquet(d / "results.parquet") for d in (a, b)))  # every bit
    for stage in ("data/pretrain-*", "data/metatrain-*"):
        pd.testing.assert_frame_equal(*(pd.read_parquet(next(where.glob(stage)) / "metrics.parquet")
                                        for where in (reference, root)))
    assert not list(root.glob("data/.*.lease"))
