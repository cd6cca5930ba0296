"""Atomic, safely loadable checkpoints: weights in safetensors, optimiser state via torch.load(weights_only=True).

    ckpt = Checkpointer("runs/x/arms/bursty/checkpoints")
    ckpt.save(step, model, optimizer, scheduler, {"history": [...]})
    path, state = ckpt.restore_latest(model, optimizer, scheduler)   # (None, None): nothing saved yet

Two are kept: if the latest cannot be read (a disk that filled up, a file damaged later), the one before it is
restored with a warning, and the steps since are trained again.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from metaicl.core.errors import RunFailed
from metaicl.core.io import atomic_dir


class Checkpointer:
    def __init__(self, directory: str | Path, keep: int = 2):
        self.dir, self.keep = Path(directory), keep

    def all(self) -> list[Path]:
        return sorted(p for p in self.dir.glob("step_*") if (p / "state.json").exists())

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1] if found else None

    def save(self, step: int, model, optimizer, scheduler, state: dict) -> Path:
        path = self.dir / f"step_{step:07d}"
        with atomic_dir(path) as tmp:
            save_model(model, str(tmp / "model.safetensors"))
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "torch_rng": torch.get_rng_state()}, tmp / "optim.pt")
            (tmp / "state.json").write_text(json.dumps({"step": step, **state}))
        for old in self.all()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return path

    def restore_latest(self, model, optimizer, scheduler) -> tuple[Path | None, dict | None]:
        """Restore the newest checkpoint that reads back, warning about each that does not; (None, None) when
        there is none; RunFailed naming the directory when every one is damaged."""
        found = self.all()
        for path in reversed(found):
            try:
                return path, self.restore(path, model, optimizer, scheduler)
            except Exception as err:  # safetensors, torch.load, json: each has its own error type
                print(f"warning: checkpoint {path} cannot be read ({type(err).__name__}: {str(err)[:120]}); "
                      f"trying the one before it", file=sys.stderr)
        if found:
            raise RunFailed(f"every checkpoint in {self.dir} is damaged; remove the directory to start that stage "
                            f"from scratch")
        return None, None

    @staticmethod
    def restore(path: Path, model, optimizer, scheduler) -> dict:
        load_model(model, str(path / "model.safetensors"), device=str(next(model.parameters()).device))
        extra = torch.load(path / "optim.pt", weights_only=True, map_location="cpu")
        optimizer.load_state_dict(extra["optimizer"])
        scheduler.load_state_dict(extra["scheduler"])
        torch.set_rng_state(extra["torch_rng"])
        return json.loads((path / "state.json").read_text())
