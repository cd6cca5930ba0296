"""Soak (issue 19): a sweep of 30 tiny trials, two at a time, leaves no Ray process and no temporary file behind,
and its driver's memory does not grow with the number of trials it has run.

Not part of `make test` (about two minutes): run it with `.venv/bin/python -m pytest -m soak -s`. It prints the
driver's resident memory after the 10th and the last trial and the growth per trial in between."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.soak
TRIALS = 30
BIN = Path(sys.executable).parent


def ray_processes() -> set[int]:
    """Pids of every Ray process on this machine (head services, raylet, workers)."""
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes() if proc.name.isdigit() else b""
        except OSError:
            continue
        if cmd.startswith(b"ray::") or b"/ray/" in cmd or b"raylet" in cmd or b"gcs_server" in cmd:
            found.add(int(proc.name))
    return found


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def test_a_sweep_of_thirty_tiny_trials_leaks_nothing_and_its_driver_does_not_grow(tmp_path):
    before_procs, before_tmp = ray_processes(), set(os.listdir("/tmp"))
    root = tmp_path / "sweep"
    proc = subprocess.Popen(
        [str(BIN / "metaicl"), "sweep", str(ROOT / "configs" / "sweeps" / "tiny.yaml"), "sweep.tracking=[]",
         "sweep.grid={data.burstiness: [2], data.zipf_alpha: [0.0], train.seed: %s}" % list(range(TRIALS)),
         f"out_dir={root}", f"data_root={tmp_path / 'data'}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    samples = []  # (finished trials, driver's resident MiB)
    while proc.poll() is None:
        rss = rss_mib(proc.pid)
        if rss is not None:
            samples.append((len(list(root.glob("*/results.parquet"))), rss))
        time.sleep(0.25)
    out = proc.stdout.read()
    assert proc.returncode == 0, out
    assert len(list(root.glob("*/report.md"))) == TRIALS
    # memory: the driver's resident set as each trial finishes (its first sample at that count: before the last
    # trial's aggregate and report, which load pandas' and matplotlib's own memory once), fitted from the 10th on
    at = {n: next(r for m, r in samples if m == n) for n in sorted({m for m, _ in samples})}
    later = np.array([(n, r) for n, r in at.items() if 10 <= n < TRIALS])
    slope = np.polyfit(later[:, 0], later[:, 1], 1)[0]
    print(f"\nsoak: driver RSS by finished trials {' '.join(f'{n}:{r:.0f}' for n, r in at.items())} MiB; "
          f"{slope:+.2f} MiB per trial (fit over trials 10..{TRIALS - 1})")
    assert slope < 0.5, at
    # nothing left behind: every Ray process the sweep started ends with it, and no temporary file or directory
    # remains (Ray keeps its session's logs under /tmp/ray by design: that directory is Ray's, not ours)
    deadline = time.time() + 30
    while ray_processes() - before_procs and time.time() < deadline:
        time.sleep(0.5)
    assert not ray_processes() - before_procs
    assert not [p for p in (root, tmp_path / "data") for p in p.rglob("*.tmp")]
    assert set(os.listdir("/tmp")) - before_tmp <= {"ray"}
