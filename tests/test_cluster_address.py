"""cluster.address other than `local` joins that cluster instead of starting one (here: a head on loopback); two
runs of one config on it at once make each step once."""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from metaicl.core.ray_local import LOOPBACK_ENV
from tests.conftest import TINY

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"no Ray head on 127.0.0.1:{port}")


def test_run_joins_a_running_cluster_at_its_address(tmp_path):
    port = free_port()
    # A head that others join uses token auth; the client gets the same token.
    env = {**os.environ, **LOOPBACK_ENV, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        # Issue 19's twin: two `metaicl run`s of one config at once, on this cluster, sharing data_root. Each step
        # is leased (cluster/lease.py): one process builds or trains it, the other waits and reuses it.
        twins = [subprocess.Popen([str(BIN / "metaicl"), "run", str(TINY), f"cluster.address=127.0.0.1:{port}",
                                   f"data_root={tmp_path}/data", f"runs_root={tmp_path}/runs"],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        outs = [p.communicate(timeout=400)[0] for p in twins]
        assert [p.returncode for p in twins] == [0, 0], outs
        trained = [arm for out in outs for line in out.splitlines() if line.startswith("train: ")
                   for arm in line.removeprefix("train: ").split(" finished")[0].split(", ")]
        assert sorted(trained) == ["bursty", "non_bursty"], outs  # each arm trained once, by one of the two
        for arm in ("bursty", "non_bursty"):  # and its data built once, on the joined cluster
            assert sum(out.count(f"data [{arm}]: built") for out in outs) == 1, outs
        assert len(list((tmp_path / "data").glob("*/manifest.json"))) == 2
        [run_dir] = (tmp_path / "runs").iterdir()
        assert (run_dir / "results.parquet").exists() and not list((tmp_path / "data").glob(".*.lease"))
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # the head we started, never `ray stop`
        try:
            head.wait(timeout=3)  # `ray start --block` takes ~45 s to tear down on SIGTERM
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=20)
