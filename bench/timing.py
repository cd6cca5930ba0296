"""What the CPU benches that time sides of one process share: their flags, and timing that alternates the sides."""
from __future__ import annotations

import argparse
import time
from typing import Callable


def cpu_args(steps: int) -> argparse.Namespace:
    """`--steps` (calls per side per round) and `--threads` (torch's, default 2: the laptop the budget is for);
    sets the threads and seeds torch."""
    import torch

    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    return args


def alternate(sides: dict[str, Callable[[int], object]], steps: int, rounds: int = 2) -> dict[str, float]:
    """Best seconds per call of each side, `sides[name](i)` called for i in range(steps) after one warm-up call,
    over `rounds` rounds in which the sides alternate, so drift in machine load hits every side."""
    times = {name: [] for name in sides}
    for _ in range(rounds):
        for name, fn in sides.items():
            fn(0)
            start = time.perf_counter()
            for i in range(steps):
                fn(i)
            times[name].append((time.perf_counter() - start) / steps)
    return {name: min(t) for name, t in times.items()}
