"""`metaicl sweep CONFIG`: every trial of the config's `sweep:` block is a full pipeline run, scheduled by Ray Tune.

    root = run_sweep("configs/sweeps/burstiness_zipf.yaml", ["sweep.max_concurrent_trials=2"])

- Each trial is the base config plus its overrides, run by `cluster.pipeline.run` (any kind of experiment) in its
  own content-hashed run directory `<sweep root>/<name>-<hash8>` (sweep root: `out_dir`, else
  `<runs_root>/<name>-sweep`).
- Every trial config is loaded and validated before anything runs: a bad grid value is one error.
- Finished trials (results.parquet + report.md present) are skipped, so resubmitting a sweep runs only what is
  missing and an interrupted sweep resumes (an interrupted arm resumes from its latest checkpoint).
- Shared steps run once (cluster.steps): the sweep builds every distinct data directory and task collection first,
  then trains every step that several trials need (a pretrained model shared by trials that differ only in
  meta-training keys); the trials then train what is theirs alone and evaluate.
- Ray Tune runs the trials (`max_concurrent_trials`); a trial reserves no CPU of its own, and its stages'
  training tasks or Ray Train workers hold the real resources (Ray Train inside a Tune function trainable, as Ray
  recommends), sized from the trial's share of the cluster.
- At the end the sweep is aggregated (aggregate.parquet) and reported (report.md, report.html).
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import pyarrow as pa

from metaicl.core.config import load_config, to_yaml
from metaicl.core.errors import ConfigError, RunFailed
from metaicl.core.io import write_parquet, write_text
from metaicl.core.ray_local import init_ray
from metaicl.experiment import ExperimentConfig, run_dir
from cluster.report import last_accuracy

TRIAL_RESOURCES = {"cpu": 0, "memory": 1 << 20}
"""What a trial itself reserves: 1 MiB of memory and no CPU. It only waits on its arms' Ray Train workers, which
reserve their own CPUs/GPUs; even 0.01 CPU per trial would leave a 2-CPU machine short of a whole CPU for the
second trial's worker (Tune needs a non-empty bundle, hence the memory)."""


def sweep_root(cfg: ExperimentConfig) -> Path:
    return Path(cfg.out_dir) if cfg.out_dir else Path(cfg.runs_root) / f"{cfg.name}-sweep"


def override_strings(overrides: dict) -> list[str]:
    return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]  # JSON is YAML


def plan(config_path: str | Path, overrides: Sequence[str],
         cwd: str | Path | None = None) -> tuple[ExperimentConfig, Path, list[dict]]:
    """(base config, sweep root, trials); each trial: overrides, resolved config, YAML and run directory. With
    `cwd`, relative paths are made absolute against it (a trial runs in its own Ray Tune working directory)."""
    base, _ = load_config(ExperimentConfig, config_path, overrides, cwd)
    if base.sweep is None:
        raise ConfigError("sweep", f"{config_path} has no sweep: block (grid/points/seeds)")
    root = sweep_root(base)
    trials = []
    for i, point in enumerate(base.sweep.trials(base.seed_keys())):
        extra = override_strings(point) + [f"runs_root={json.dumps(str(root))}", "out_dir=null", "sweep=null"]
        try:
            cfg, resolved = load_config(ExperimentConfig, config_path, [*overrides, *extra], cwd)
            cfg.check_trainable()
        except ConfigError as err:
            raise ConfigError(err.key, err.message, f"sweep trial {i}: {point}") from None
        trials.append({"trial": i, "overrides": point, "cfg": cfg, "yaml": to_yaml(resolved),
                       "run_dir": run_dir(cfg)})
    return base, root, trials


def is_done(path: Path) -> bool:
    return (path / "results.parquet").exists() and (path / "report.md").exists()


def make_shared(trials: list[dict], root: Path, echo: Callable[[str], None]) -> None:
    """Before any trial starts: every trial's inputs (data directories, task collections), then every training step
    (cluster.steps) that more than one trial needs, e.g. the one pretrained model of trials that differ only in
    meta-training keys. Each is made once; a trial then makes only the steps that are its alone, so no two trials
    ever write one step."""
    from cluster.pipeline import INPUTS, plan
    from cluster.steps import execute, unique

    needs = Counter()

    def plans():
        per_trial = [unique(plan(t["cfg"])) for t in trials]
        needs.clear()
        needs.update(s.where for steps in per_trial for s in steps if s.known)
        return [s for steps in per_trial for s in steps]

    steps = execute(plans, lambda s: s.stage in INPUTS or needs[s.where] > 1, lambda _: None, lambda: None,
                    root / "ray")
    inputs = [s for s in steps if s.stage in INPUTS]
    shared = [s for s in steps if s.stage not in INPUTS and needs[s.where] > 1]
    echo(f"shared steps: {len(inputs)} data and task directories; {len(shared)} training steps that several trials "
         f"need" + "".join(f"\n  {s.name}: {s.where.name} ({needs[s.where]} trials)" for s in shared))


def _trial(config: dict, trials: list[dict], cpus: float | None = None) -> None:
    """Ray Tune function trainable: one full pipeline run (the classifier's or a language model's)."""
    from ray import tune

    from cluster.pipeline import run

    trial = trials[config["trial"]]
    started = time.perf_counter()
    out = run(trial["cfg"], trial["yaml"], echo=lambda _: None, progress=False, build_data=False, cpus=cpus)
    final = last_accuracy(pd.read_parquet(out / "results.parquet"))
    metrics = {f"{r.arm}/{r.task}": float(r.value) for r in final.itertuples()}  # what trackers log
    tune.report({"run_dir": str(out), "seconds": round(time.perf_counter() - started, 1), **metrics})


def run_sweep(config_path: str | Path, overrides: Sequence[str] = (), echo: Callable[[str], None] = print,
              cwd: str | Path | None = None) -> Path:
    """Run every trial not done yet; relative paths resolve against `cwd` (default: the working directory)."""
    started = time.perf_counter()
    base, root, trials = plan(config_path, overrides, Path.cwd() if cwd is None else cwd)  # bad input: before Ray
    from ray import tune

    todo = [t for t in trials if not is_done(t["run_dir"])]
    echo(f"sweep {root}: {len(trials)} trials, {len(trials) - len(todo)} done already, {len(todo)} to run")
    root.mkdir(parents=True, exist_ok=True)
    write_text(root / "sweep.yaml", to_yaml(base))
    if todo:
        init_ray(base.cluster)
        make_shared(todo, root, echo)
        from metaicl.train.ray_train import cluster_cpus

        # Trials that run at once share the cluster's CPUs: each trial's stages size their workers from its share
        share = cluster_cpus()[0] / min(len(todo), base.sweep.max_concurrent_trials)
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(_trial, trials=todo, cpus=share), TRIAL_RESOURCES),
            param_space={"trial": tune.grid_search(list(range(len(todo))))},
            tune_config=tune.TuneConfig(max_concurrent_trials=base.sweep.max_concurrent_trials),
            run_config=tune.RunConfig(name=f"tune-{int(time.time())}", storage_path=str((root / "tune").absolute()),
                                      verbose=0, callbacks=[echo_callback(todo), *trackers(base.sweep.tracking)]))
        grid = tuner.fit()
        failed = [(todo[r.config["trial"]], r.error) for r in grid if r.error is not None]
        if failed:
            raise RunFailed(f"{len(failed)} of {len(todo)} trials failed: "
                            + "; ".join(f"trial {t['trial']} {t['overrides']}: {last_line(e)}" for t, e in failed)
                            + f" (Ray Tune logs under {root / 'tune'})")
    write_trials(root, trials)
    from cluster.aggregate import aggregate
    from cluster.sweep_report import write_sweep_report

    table = aggregate([root])
    write_parquet(root / "aggregate.parquet", pa.Table.from_pandas(table, preserve_index=False))
    report = write_sweep_report(root, table, title=f"{base.name}: sweep")
    echo(f"aggregate: {root / 'aggregate.parquet'} ({len(table)} rows); report: {report} "
         f"({time.perf_counter() - started:.0f}s)")
    return root


def last_line(error: BaseException) -> str:
    """What went wrong in a trial, in one line: the cause's message (a ConfigError is one line already)."""
    cause = getattr(error, "cause", None) or error
    lines = [line for line in str(cause).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(cause).__name__


def write_trials(root: Path, trials: list[dict]) -> None:
    rows = [{"trial": t["trial"], "overrides": json.dumps(t["overrides"], sort_keys=True),
             "run_dir": t["run_dir"].name, "done": is_done(t["run_dir"])} for t in trials]
    write_parquet(root / "trials.parquet", pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False))


def trackers(names: list[str]) -> list:
    """Ray Tune logger callbacks asked for by sweep.tracking; a missing package is a config error."""
    out = []
    for i, name in enumerate(names):
        try:
            if name == "tensorboard":
                import tensorboardX  # noqa: F401  (the callback needs it)
                from ray.tune.logger import TBXLoggerCallback

                out.append(TBXLoggerCallback())
            else:
                import mlflow  # noqa: F401
                from ray.air.integrations.mlflow import MLflowLoggerCallback

                out.append(MLflowLoggerCallback(experiment_name="metaicl"))
        except ImportError as err:
            raise ConfigError(f"sweep.tracking.{i}", f"{name} needs a package that is not installed: {err.name}")
    return out


def echo_callback(planned: list[dict]):
    """A Ray Tune callback that prints one line per finished trial (Tune's own status table is off). It prints
    itself: Tune pickles its callbacks, and a captured `print` may not pickle once a library has wrapped it."""
    from ray.tune import Callback

    def echo(line: str) -> None:
        print(line, flush=True)

    class Echo(Callback):
        finished = 0

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.finished += 1
            t = planned[trial.config["trial"]]
            seconds = (trial.last_result or {}).get("seconds", "?")
            echo(f"trial {self.finished}/{len(planned)} done: {t['overrides']} -> {t['run_dir'].name} ({seconds}s)")

        def on_trial_error(self, iteration, trials, trial, **info):
            echo(f"trial failed: {planned[trial.config['trial']]['overrides']}")

    return Echo()
