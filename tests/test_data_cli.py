"""`metaicl data stats | show` refuse what is not a data directory (README's build/stats/show lines run in
tests/test_readme_commands.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


EXE = str(Path(sys.executable).with_name("metaicl"))


def metaicl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_data_commands_reject_a_directory_without_manifest(tmp_path):
    for args in (["stats", str(tmp_path)], ["show", str(tmp_path)]):
        proc = metaicl("data", *args, cwd=tmp_path)
        assert proc.returncode == 2 and "no manifest.json" in proc.stderr
