"""Live training progress on the driver: one bar per arm, fed by the chief worker's progress.json.

Workers may run anywhere Ray puts them; the run directory is the one place both sides see, so the chief writes
its state there (atomically) and the driver polls it. Nothing here affects training.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path


class ProgressMonitor:
    def __init__(self, arm_dirs: dict[str, Path], total_steps: dict[str, int], interval: float = 0.5,
                 enabled: bool = True):
        from tqdm import tqdm

        self.arm_dirs, self.interval = arm_dirs, interval
        self.bars = {arm: tqdm(total=total_steps[arm], desc=f"train {arm}", unit="step", position=i,
                               disable=not enabled, dynamic_ncols=True)
                     for i, arm in enumerate(arm_dirs)}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def poll(self) -> None:
        for arm, bar in self.bars.items():
            try:
                state = json.loads((self.arm_dirs[arm] / "progress.json").read_text())
            except (OSError, ValueError):
                continue
            bar.n = state["step"]
            acc = " ".join(f"{k} {v:.2f}" for k, v in state.get("accuracy", {}).items())
            bar.set_postfix_str(f"loss {state['loss']:.3f} {acc}".strip(), refresh=False)
            bar.refresh()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def __enter__(self) -> "ProgressMonitor":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()
        for bar in self.bars.values():
            bar.close()
