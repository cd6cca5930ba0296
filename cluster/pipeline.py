"""One experiment config -> data -> training (every arm) -> results.parquet -> report.md.

    run_dir = run(cfg, resolved_yaml)

Stages are skipped when their output exists (data: manifest.json; an arm: its metrics.parquet; the results:
results.parquet and report.md), and the run says so. Ray is started only if some stage still has work.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow as pa

from metaicl.core.errors import ConfigError
from metaicl.core.io import copy_file, read_json, write_parquet, write_text
from metaicl.core.ray_local import init_ray
from metaicl.experiment import ExperimentConfig, run_dir as resolve_run_dir
from metaicl.train.arm import DONE_FILE, ArmSpec
from pretrain_data.build import build, data_dir
from cluster.report import data_section, summary, write_report
from cluster.results import training_rows


def arm_specs(arms: dict[str, ExperimentConfig], out: Path) -> dict[str, ArmSpec]:
    """What each arm's trainer needs: its data manifest, output directory and model/train/eval configs."""
    specs = {}
    for name, arm in arms.items():
        manifest = data_dir(arm.data, arm.data_root) / "manifest.json"
        specs[name] = ArmSpec(name, str(manifest.absolute()), str((out / "arms" / name).absolute()),
                              arm.model, arm.train, arm.eval)
    return specs


def collect_results(specs: dict[str, ArmSpec], out: Path) -> pd.DataFrame:
    """Every arm's metrics (stage `train`, seed = the training seed) as the run's tidy results.parquet."""
    results = pd.concat([training_rows(pd.read_parquet(Path(spec.out_dir) / DONE_FILE), out.name, name, "train",
                                       spec.train.seed) for name, spec in specs.items()], ignore_index=True)
    write_parquet(out / "results.parquet", pa.Table.from_pandas(results, preserve_index=False))
    return results


def fit_specs(specs: list, out: Path, echo: Callable[[str], None], progress: bool, what: str,
              cpus: float | None = None) -> None:
    """Train every spec not done yet (arms of the spine, LM stages) with Ray Train, one progress bar each; say
    which were done already and how long the rest took. They share `cpus` (default: the cluster's CPUs;
    `metaicl.train.ray_train.size_workers`). Ray must be started."""
    for spec in specs:
        if spec.done:
            echo(f"{what} [{spec.arm}]: done already, skipping")
    todo = [s for s in specs if not s.done]
    if not todo:
        return
    from cluster.progress import ProgressMonitor
    from metaicl.train.ray_train import fit_arms

    for spec in todo:
        Path(spec.out_dir).mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    with ProgressMonitor({s.arm: Path(s.out_dir) for s in todo}, {s.arm: s.train.steps for s in todo},
                         enabled=progress):
        fit_arms(todo, out / "ray", cpus)
    echo(f"{what}: {', '.join(s.arm for s in todo)} finished in {time.perf_counter() - t:.1f}s")


def format_plan(out: Path, steps: list[tuple[str, Path, bool]]) -> str:
    """`metaicl run --dry-run`: every step with its directory and whether it is done; nothing is started."""
    width = max(len(name) for name, _, _ in steps)
    lines = [f"run {out}: {sum(not done for _, _, done in steps)} of {len(steps)} steps to run"]
    lines += [f"  {name:<{width}}  {'done  ' if done else 'to run'}  {where}" for name, where, done in steps]
    return "\n".join(lines)


def plan(cfg: ExperimentConfig) -> tuple[Path, list[tuple[str, Path, bool]]]:
    """(run directory, steps): each arm's data, each arm's training, the run's results; (name, where, done)."""
    out = resolve_run_dir(cfg)
    specs = arm_specs({name: cfg.arm(name) for name in cfg.arm_names()}, out)
    steps = [(f"data [{n}]", Path(s.manifest_path).parent, Path(s.manifest_path).exists()) for n, s in specs.items()]
    steps += [(f"train [{n}]", Path(s.out_dir), s.done) for n, s in specs.items()]
    steps.append(("results", out, (out / "results.parquet").exists() and (out / "report.md").exists()))
    return out, steps


def run(cfg: ExperimentConfig, resolved_yaml: str, echo: Callable[[str], None] = print,
        progress: bool | None = None, build_data: bool = True, cpus: float | None = None) -> Path:
    """`build_data=False` (a sweep trial, whose data the sweep built first): missing data is an error, never built
    inside the trial's own placement group. `cpus`: what the run's arms share (a sweep trial's share of the
    cluster; default: the cluster's CPUs)."""
    started = time.perf_counter()
    progress = sys.stderr.isatty() if progress is None else progress
    out = resolve_run_dir(cfg)
    arms = {name: cfg.arm(name) for name in cfg.arm_names()}
    specs = arm_specs(arms, out)
    if (out / "results.parquet").exists() and (out / "report.md").exists():
        echo(f"run {out}: every stage is done (data, {len(specs)} arms, results); reusing it")
        echo(summary(out, cfg.data.num_labels))
        return out
    missing = [s.manifest_path for s in specs.values() if not Path(s.manifest_path).exists()]
    if missing and not build_data:  # checked before anything of the run is written
        raise ConfigError("data_root", f"no data at {', '.join(missing)}: a sweep builds every trial's data "
                                       f"before its trials start")
    ray_started = False

    def ray_once():
        nonlocal ray_started
        if not ray_started:
            t = time.perf_counter()
            init_ray(cfg.cluster)
            ray_started = True
            echo(f"ray: {cfg.cluster.address} ready in {time.perf_counter() - t:.1f}s")

    if any(not s.done for s in specs.values()):  # resources the cluster cannot give are an error up front
        from metaicl.train.ray_train import check_resources

        ray_once()
        import ray

        check_resources([s for s in specs.values() if not s.done], ray.cluster_resources())
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", resolved_yaml)
    echo(f"run {out}")

    for name, spec in specs.items():
        manifest_path = Path(spec.manifest_path)
        if manifest_path.exists():
            echo(f"data [{name}]: reusing {manifest_path.parent}")
        else:
            ray_once()
            t = time.perf_counter()
            build(arms[name].data, arms[name].data_root, progress=progress)
            echo(f"data [{name}]: built {manifest_path.parent} in {time.perf_counter() - t:.1f}s")
        Path(spec.out_dir).mkdir(parents=True, exist_ok=True)
        copy_file(manifest_path, Path(spec.out_dir) / "data_manifest.json")
        if (manifest_path.parent / "stats.json").exists():  # the run carries its data's card (aggregation)
            copy_file(manifest_path.parent / "stats.json", Path(spec.out_dir) / "data_stats.json")

    if any(not s.done for s in specs.values()):
        ray_once()
    fit_specs(list(specs.values()), out, echo, progress, "train", cpus)

    collect_results(specs, out)
    cards = {name: read_json(Path(spec.manifest_path).parent / "stats.json") for name, spec in specs.items()
             if (Path(spec.manifest_path).parent / "stats.json").exists()}
    table = write_report(out, cfg.name, cfg.data.num_labels, notes=data_section(cards) if cards else "")
    echo(table)
    echo(f"results: {out / 'results.parquet'}, report: {out / 'report.md'} ({time.perf_counter() - started:.0f}s)")
    return out
