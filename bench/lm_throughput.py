"""A language model's pretraining stage on CPU: Ray Train vs a bare loop, and the stage against the bare loop on
every core (issue 20). Measured side by side in one run.

    python bench/lm_throughput.py [--steps 400] [--repeats 1] [--config configs/regression_icl.yaml]

Model, batch and mixture: the config's pretraining, its mixture built here (default configs/metaicl_synthetic.yaml:
GPT-2 tiny preset, 2 layers, 2 heads, d 64; 32 windows of 64 tokens; configs/regression_icl.yaml: Garg et al.'s
regression model, 4 layers, 64 prompts of 16 (x, y) pairs). Each side runs `LMStage.run`, the stage's own code:
  bare      - a plain `python` subprocess, torch on every core, evaluation and checkpoint at the last step only
              (the plain loop);
  ray       - the same spec (same threads, same cadence) through `fit_arm`, one worker sized to every core (a
              one-worker stage: a Ray task, Ray Train's local mode);
  stage     - what `metaicl train` runs: one worker sized by default (`train.cpus_per_worker` unset: the cluster's
              CPUs), the config's evaluation and checkpoint cadence.
Throughput is steps/s inside the training loop (progress.json, evaluation and checkpoints included), so trainer
start-up is left out; wall is the whole call. Runs alternate so drift in machine load hits every side.
Goals: ray/bare >= 0.97 (what Ray Train costs per step) and stage/bare >= 0.9 (what the stage costs in all).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metaicl.core.ray_local import init_ray, prepare_env  # noqa: E402

prepare_env()
ROOT = Path(__file__).resolve().parents[1]


def bare(spec_path: str) -> None:
    """The bare side, in a fresh process: the stage's loop on every core, no Ray."""
    import torch

    spec = pickle.loads(Path(spec_path).read_bytes())  # written by run_bare below, in this run
    torch.set_num_threads(spec.train.cpus_per_worker)
    spec.run()


def run_bare(spec, root: Path, threads: int) -> None:
    """Run a stage's spec as a plain loop in a fresh `python` process (no Ray), torch on `threads` threads."""
    (root / "spec.pkl").write_bytes(pickle.dumps(spec))
    subprocess.run([sys.executable, __file__, "--bare-spec", str(root / "spec.pkl")], check=True,
                   env={**os.environ, "OMP_NUM_THREADS": str(threads)})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--config", default=str(ROOT / "configs" / "metaicl_synthetic.yaml"))
    p.add_argument("--bare-spec", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.bare_spec:
        return bare(args.bare_spec)

    from metaicl.core.config import load_config
    from metaicl.experiment import ExperimentConfig
    from metaicl.train.lm import LMStage
    from metaicl.train.ray_train import fit_arm
    from pretrain_data.build import build

    cores = os.cpu_count()
    root = Path(tempfile.mkdtemp(prefix="metaicl-bench-lm-"))
    cfg, _ = load_config(ExperimentConfig, Path(args.config),
                         [f"train.steps={args.steps}", f"data_root={root / 'data'}"])
    init_ray(cfg.cluster)
    manifest = build(cfg.pretrain, cfg.data_root, progress=False)
    plain = dataclasses.replace(cfg.train, eval_every=args.steps, ckpt_every=args.steps, cpus_per_worker=cores)
    sides = {"bare": plain, "ray": plain, "stage": cfg.train}

    rows = []
    for i in range(args.repeats):
        for kind, train in sides.items():
            spec = LMStage("pretrain", str(root / f"{kind}{i}"), cfg.lm, train, stream=str(manifest.path),
                           vocab_size=manifest.vocab_size, prompts=cfg.regression)
            t = time.perf_counter()
            if kind == "bare":
                run_bare(spec, root, cores)
            else:
                fit_arm(spec, root / "ray")
            wall = time.perf_counter() - t
            progress = json.loads((Path(spec.out_dir) / "progress.json").read_text())
            rows.append((kind, progress["steps_per_s"], wall))
            print(f"{kind:5s} run {i}: {progress['steps_per_s']:6.2f} steps/s in the loop on "
                  f"{progress['threads']} threads, {wall:6.1f} s wall", flush=True)
    mean = lambda kind: sum(r[1] for r in rows if r[0] == kind) / args.repeats  # noqa: E731
    print(f"\nray/bare   (same spec, {cores} threads):        {mean('ray') / mean('bare'):.3f}  (goal >= 0.97)")
    print(f"stage/bare (default sizing and cadence vs plain): {mean('stage') / mean('bare'):.3f}  (goal >= 0.9)")
    print(f"model {cfg.lm.arch} preset {cfg.lm.preset}, {args.steps} steps x {cfg.train.batch_size} windows of "
          f"{cfg.pretrain.context_length} tokens, {cores} cores; stage cadence: eval every {cfg.train.eval_every}, "
          f"checkpoint every {cfg.train.ckpt_every}")


if __name__ == "__main__":
    main()
