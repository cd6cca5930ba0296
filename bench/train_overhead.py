"""Ray Train vs a bare PyTorch loop: same model, data and steps, measured side by side in one run.

    python bench/train_overhead.py [--steps 600] [--repeats 2]

Both sides run `metaicl.train.arm.run_arm` on one CPU thread: bare = a plain `python` subprocess; ray =
`fit_arm` with 1 CPU, i.e. what a one-worker arm gets: a Ray task running it through Ray Train's local mode (the
same context and report calls as a worker group's). Throughput is steps/s inside the training loop (what Ray and
Ray Train cost per step); wall is the whole call (what it costs to start training). Runs alternate bare/ray so drift in machine load hits both.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metaicl.core.ray_local import ClusterConfig, init_ray, prepare_env  # noqa: E402

prepare_env()


def bare(spec_json: str) -> None:
    """The bare side: rebuild the ArmSpec from JSON and run the loop in this (fresh) process."""
    from metaicl.eval.icl import EvalConfig
    from metaicl.models.config import ModelConfig
    from metaicl.train.arm import ArmSpec, run_arm
    from metaicl.train.config import TrainConfig

    d = json.loads(spec_json)
    run_arm(ArmSpec(d["arm"], d["manifest_path"], d["out_dir"], ModelConfig(**d["model"]), TrainConfig(**d["train"]),
                    EvalConfig(**d["eval"])))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--bare-spec", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.bare_spec:
        return bare(args.bare_spec)

    from metaicl.core.config import load_config
    from metaicl.experiment import ExperimentConfig
    from metaicl.train.arm import ArmSpec
    from metaicl.train.ray_train import fit_arm
    from pretrain_data.build import build

    root = Path(tempfile.mkdtemp(prefix="metaicl-bench-"))
    cfg, _ = load_config(ExperimentConfig, Path(__file__).parents[1] / "configs" / "quickstart.yaml",
                         [f"train.steps={args.steps}", f"train.eval_every={args.steps}", f"train.ckpt_every={args.steps}",
                          f"data.train_sequences={args.steps * 128}", "cluster.num_cpus=2"])
    arm = cfg.arm("bursty")
    init_ray(cfg.cluster)
    manifest = build(arm.data, root / "data", progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def spec(name: str) -> ArmSpec:
        return ArmSpec(name, str(manifest.path), str(root / name), arm.model, arm.train, arm.eval)

    rows = []
    for i in range(args.repeats):
        for kind in ("bare", "ray"):
            s = spec(f"{kind}{i}")
            t = time.perf_counter()
            if kind == "bare":
                subprocess.run([sys.executable, __file__, "--bare-spec", json.dumps(dataclasses.asdict(s))],
                               check=True, env=env)
            else:
                fit_arm(s, root / "ray")
            wall = time.perf_counter() - t
            steps_per_s = json.loads((Path(s.out_dir) / "progress.json").read_text())["steps_per_s"]
            rows.append((kind, steps_per_s, wall))
            print(f"{kind:5s} run {i}: {steps_per_s:6.2f} steps/s in the loop, {wall:6.1f} s wall", flush=True)
    mean = lambda kind, col: sum(r[col] for r in rows if r[0] == kind) / args.repeats  # noqa: E731
    print(f"\nthroughput ratio ray/bare (steps/s in the loop): {mean('ray', 1) / mean('bare', 1):.3f}  (goal >= 0.97)")
    print(f"wall ratio bare/ray (whole call, incl. trainer start): {mean('bare', 2) / mean('ray', 2):.3f}")
    print(f"model {arm.model}, {args.steps} steps x {arm.train.batch_size} sequences, "
          f"{os.cpu_count()} cores, torch threads 1")


if __name__ == "__main__":
    main()
