"""Experiments submitted as Ray jobs (cluster.jobs) to a head on loopback with the dashboard and token auth."""
from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import requests
import yaml

from cluster import jobs
from metaicl.core.errors import ConfigError
from metaicl.core.ray_local import LOOPBACK_ENV
from tests.conftest import ROOT, TINY

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _address(hex_addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_addr)  # /proc/net/*: 32-bit words in host (little-endian) order
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(raw)
    return ip.ipv4_mapped or ip if isinstance(ip, ipaddress.IPv6Address) else ip


def bound_sockets(pids: list[int]) -> list[tuple[int, str, object, int]]:
    """(pid, process, ip, port) of every listening TCP socket and every bound UDP socket of `pids`."""
    owner = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    owner[link[8:-1]] = pid
        except OSError:
            continue
    found = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if inode in owner and (state == "0A" or table.startswith("udp")):  # 0A: LISTEN
                hex_ip, hex_port = local.split(":")
                found.append((owner[inode], cmdline(owner[inode])[:40], _address(hex_ip), int(hex_port, 16)))
    return found


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A Ray head on 127.0.0.1 with the dashboard (Jobs API) and token auth, as a cluster node would run: the
    project's environment first on PATH (the job's `python`). Killed by its process group, never `ray stop`.

    Its own --temp-dir: Ray's job supervisor tells a job's driver which cluster to join (RAY_ADDRESS) from
    <temp-dir>/ray_current_cluster, i.e. the head started last with that temp dir. With the shared default
    temp dir, a job here would join whichever head another test or session started after this one."""
    ports = {name: free_port() for name in ("port", "dashboard-port", "dashboard-agent-listen-port",
                                             "ray-client-server-port")}
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's unix socket paths live under it
    token = secrets.token_hex(16)
    env = {**os.environ, **LOOPBACK_ENV, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = tmp_path_factory.mktemp("head") / "head.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=2",
             "--include-dashboard=true", "--dashboard-host=127.0.0.1", "--disable-usage-stats",
             f"--temp-dir={temp_dir}",
             *(f"--{name}={port}" for name, port in ports.items())],
            env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    address = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        deadline = time.time() + 120
        while True:  # the dashboard answers a few seconds after the GCS
            try:
                jobs.list_jobs(address, token=token)
                break
            except ConfigError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"no Ray dashboard at {address}:\n{log.read_text()[-3000:]}") from None
                time.sleep(1)
        yield SimpleNamespace(address=address, token=token, pid=proc.pid, gcs_port=ports["port"])
    finally:
        tree = process_tree(proc.pid)
        os.killpg(proc.pid, signal.SIGTERM)  # the head we started, never `ray stop`
        try:
            proc.wait(timeout=3)  # `ray start --block` takes ~45 s to tear down on SIGTERM; not worth waiting
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
        for pid in tree[1:]:  # workers in sessions of their own that outlived their raylet
            if Path(f"/proc/{pid}").exists() and cmdline(pid).startswith(("ray::", str(BIN))):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_package_ships_the_code_and_configs_not_runs_or_environments():
    files = dict(jobs.shipped_files(str(ROOT)))
    assert {"cluster/jobs.py", "metaicl/cli.py", "configs/tiny.yaml", "pyproject.toml"} <= set(files)
    assert not [p for p in files if re.match(r"(\.venv|runs|\.git|\.metaicl)/", p) or p.endswith((".pyc", ".parquet"))
                or "__pycache__" in p]
    assert sum(files.values()) < 5 * 2**20  # Ray refuses packages over 100 MiB; this one is well under 1 MiB
    assert "files" in jobs.describe_package(str(ROOT))


def test_submitted_sweep_runs_to_completion_through_the_cli(head, tmp_path):
    """`metaicl submit --command sweep --wait`, then `metaicl jobs status|logs`: the same sweep as a local
    `metaicl sweep`, run by a job's driver on the cluster (Tune trials and their trainers on the head)."""
    assert requests.utils.should_bypass_proxies(head.address, None)  # the dead loopback proxies are not used
    assert os.environ.get("http_proxy") == LOOPBACK_ENV["http_proxy"]
    env = {**os.environ, "RAY_AUTH_TOKEN": head.token}
    cli = [str(BIN / "metaicl")]
    root = tmp_path / "sweep"
    proc = subprocess.run([*cli, "submit", str(ROOT / "configs" / "sweeps" / "tiny.yaml"), f"out_dir={root}",
                           f"data_root={tmp_path}/data", "sweep.grid={data.burstiness: [2], data.zipf_alpha: [0.0]}",
                           "--command", "sweep", "--address", head.address, "--wait"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    job_id = re.search(r"submitted (metaicl-tiny_sweep-[0-9a-f]{8}-[0-9a-f]{6})", proc.stdout).group(1)
    out = subprocess.run([*cli, "jobs", "logs", job_id, "--address", head.address], env=env, capture_output=True,
                         text=True, timeout=60).stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr + out[-3000:]
    assert f"{job_id}: SUCCEEDED" in proc.stdout
    status = subprocess.run([*cli, "jobs", "status", job_id, "--address", head.address], env=env,
                            capture_output=True, text=True, timeout=60)
    assert status.stdout.strip() == "SUCCEEDED"
    assert "trial 1/1 done" in out and "aggregate:" in out
    assert f"metaicl.cli sweep .metaicl/submitted/{job_id.removeprefix('metaicl-')}.yaml" in out
    trials = pd.read_parquet(root / "trials.parquet")
    assert trials.done.all() and len(trials) == 1
    assert (root / "report.html").exists()
    assert list((root / "tune").rglob("events.out.tfevents.*"))  # sweep.tracking: [tensorboard]
    shipped = yaml.safe_load((root / "sweep.yaml").read_text())
    assert shipped["out_dir"] == str(root) and shipped["cluster"]["address"] == "auto"


def test_bad_config_is_refused_before_anything_is_submitted(head, tmp_path):
    before = jobs.list_jobs(head.address, token=head.token)
    with pytest.raises(ConfigError, match=r"data\.bogus"):
        jobs.submit(str(TINY), ["data.bogus=1"], head.address, token=head.token)
    with pytest.raises(ConfigError, match="command"):
        jobs.submit(str(TINY), [], head.address, command="nonsense", token=head.token)
    assert jobs.list_jobs(head.address, token=head.token) == before
    with pytest.raises(ConfigError, match="job_id"):
        jobs.status("metaicl-no-such-job", head.address, token=head.token)


def test_clients_without_the_token_are_refused(head, monkeypatch):
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    # Every Jobs API path needs the token, even the version check a client makes first.
    for path in ("/api/version", "/api/jobs/"):
        assert requests.get(head.address + path, timeout=10).status_code == 401
        wrong = requests.get(head.address + path, headers={"Authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 403
    # None: no header of ours. Ray then sends none (401) or, once this process is in token mode (a local
    # ray.init() of another test module switches it), ~/.ray/auth_token, which is not this cluster's (403).
    for token in (None, "nope"):
        with pytest.raises(ConfigError, match="RAY_AUTH_TOKEN"):
            jobs.list_jobs(head.address, token=token)
    monkeypatch.setenv("RAY_AUTH_TOKEN", head.token)  # the variable works as well as token=
    assert isinstance(jobs.list_jobs(head.address), list)


TRAINER = "ray::train:"
"""How a training process shows in `ps` while it trains: Ray names a task's process after it (train:<arm>)."""


def test_stop_ends_a_long_job_and_everything_binds_to_loopback(head, tmp_path):
    job_id = jobs.submit(str(TINY), [f"runs_root={tmp_path}/runs", f"data_root={tmp_path}/data", "train.steps=100000"],
                         head.address, working_dir=str(ROOT), token=head.token)
    with pytest.raises(TimeoutError):
        jobs.wait_for(job_id, head.address, 0.5, token=head.token)
    deadline = time.time() + 90
    while not any(cmdline(p).startswith(TRAINER) for p in process_tree(head.pid)):
        assert time.time() < deadline, jobs.logs(job_id, head.address, token=head.token)[-3000:]
        time.sleep(1)
    assert jobs.status(job_id, head.address, token=head.token) == "RUNNING"
    # Head, dashboard, agents, the job's driver and its trainers: every listening/bound socket on 127.0.0.1 (a
    # one-worker trainer forms no torch.distributed group, whose TCPStore torch would bind to all interfaces).
    tree = process_tree(head.pid)
    drivers = [p for p in tree if "metaicl.cli run" in cmdline(p)]
    sockets = bound_sockets(tree)
    assert drivers and any(pid in drivers for pid, *_ in sockets)  # the job's driver is in the tree checked
    trainers = [p for p in tree if cmdline(p).startswith(TRAINER)]
    for pid in drivers + trainers:  # they run the shipped copy of the code, not this checkout
        assert "runtime_resources/working_dir_files/" in os.readlink(f"/proc/{pid}/cwd")
    wide = [s for s in sockets if not s[2].is_loopback]
    assert not wide, wide
    assert jobs.stop(job_id, head.address, token=head.token)
    assert jobs.wait_for(job_id, head.address, 60, token=head.token) == "STOPPED"
    assert not jobs.stop(job_id, head.address, token=head.token)  # already finished
