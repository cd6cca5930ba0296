"""`metaicl data build | stats | show` from the command line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import TINY

EXE = str(Path(sys.executable).with_name("metaicl"))


def metaicl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_build_then_stats_then_show(tmp_path):
    proc = metaicl("data", "build", str(TINY), "cluster.num_cpus=2",
                   f"data_root={tmp_path}/data", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dirs = sorted((tmp_path / "data").iterdir())
    assert len(dirs) == 2 and all((d / "manifest.json").exists() and (d / "stats.json").exists() for d in dirs)
    assert "data [bursty]: built" in proc.stdout and "burstiness_ratio" in proc.stdout
    assert not (tmp_path / "runs").exists()  # data only, no run directory

    again = metaicl("data", "build", str(TINY), "cluster.num_cpus=2",
                    f"data_root={tmp_path}/data", cwd=tmp_path)
    assert again.returncode == 0 and "data [bursty]: reused" in again.stdout

    bursty = next(d for d in dirs if json.loads((d / "manifest.json").read_text())["config"]["burstiness"] == 2)
    card = json.loads((bursty / "stats.json").read_text())
    (bursty / "stats.json").unlink()
    stats = metaicl("data", "stats", str(bursty), cwd=tmp_path)
    assert stats.returncode == 0 and f"context_repeat_rate      {card['context_repeat_rate']}" in stats.stdout
    assert json.loads((bursty / "stats.json").read_text()) == card  # recomputed in process, same numbers

    show = metaicl("data", "show", str(bursty), "--split", "icl_novel", "-n", "3", cwd=tmp_path)
    assert show.returncode == 0
    lines = show.stdout.strip().splitlines()
    assert lines[0].startswith("icl_novel (64 sequences") and len(lines) == 4
    assert all(" -> " in line and " n" in line for line in lines[1:])


def test_data_commands_reject_a_directory_without_manifest(tmp_path):
    for args in (["stats", str(tmp_path)], ["show", str(tmp_path)]):
        proc = metaicl("data", *args, cwd=tmp_path)
        assert proc.returncode == 2 and "no manifest.json" in proc.stderr
