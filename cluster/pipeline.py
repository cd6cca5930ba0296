"""One experiment config -> its steps -> the run's results.parquet + report.md, for every kind of experiment.

    run_dir = run(cfg, resolved_yaml)                      # every stage
    run(cfg, resolved_yaml, stages=("eval",))              # one stage of an LM experiment (its inputs must exist)

The steps (cluster.steps) are data -> tasks -> pretrain -> metatrain: the classifier's steps are each arm's data and
training (`train [arm]`, the classifier's pretraining), a language model's its mixture, task collection, pretraining
and meta-trained variants (cluster.lm_pipeline). Each lives in data_root under the hash of what it reads and is
shared by every run and sweep trial that needs it. The run itself evaluates (a language model: MetaICL's table; the
classifier was measured during training) and writes results.parquet and report.md into the run directory, named by
the hash of the whole config.

Everything that can be wrong is found before the run directory exists: the inputs (a data directory is checked
against its manifest), the training steps, the starting models, the resources (a request Ray can never meet would
wait forever). Ray starts only for work.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow as pa

from metaicl.core.config import to_dict
from metaicl.core.errors import ConfigError
from metaicl.core.hashing import config_hash
from metaicl.core.io import copy_file, read_json, write_json, write_parquet, write_text
from metaicl.core.ray_local import init_ray
from metaicl.experiment import RESOURCE_KEYS, ExperimentConfig, run_dir
from metaicl.train.arm import DONE_FILE, ArmSpec
from pretrain_data.build import build, target_dir
from pretrain_data.manifest import Manifest
from cluster.report import data_section, summary, write_report
from cluster.results import training_rows
from cluster.steps import Step, execute, format_plan

STAGES = ("pretrain", "metatrain", "eval")
INPUTS = ("data", "tasks", "embed")
"""Steps every stage reads: built by a run when missing (a sweep builds its trials' before they start)."""


def train_dir(arm: ExperimentConfig) -> Path:
    """A classifier arm's training step, named by what it reads: its data (the data directory's name, itself a
    hash), the model, the training knobs that change the result and the eval sets measured while it trains."""
    reads = {"data": target_dir(arm.data, arm.data_root).name, "model": to_dict(arm.model),
             "train": to_dict(arm.train), "eval_sets": list(arm.eval.sets)}
    hash8 = config_hash(reads, exclude=[f"train.{key}" for key in RESOURCE_KEYS])[:8]
    return Path(arm.data_root).absolute() / f"train-{hash8}"


def classifier_steps(cfg: ExperimentConfig) -> list[Step]:
    """Each arm's data, then its training (ArmSpec)."""
    steps = []
    for name in cfg.arm_names():
        arm = cfg.arm(name)
        where = target_dir(arm.data, arm.data_root).absolute()
        steps.append(Step(f"data [{name}]", "data", where, "manifest.json",
                          make=lambda progress, arm=arm: build(arm.data, arm.data_root, progress=progress)))
        spec = ArmSpec(name, str(where / "manifest.json"), str(train_dir(arm)), arm.model, arm.train, arm.eval)
        steps.append(Step(f"train [{name}]", "pretrain", Path(spec.out_dir), DONE_FILE, spec=spec))
    return steps


def plan(cfg: ExperimentConfig, stages=STAGES) -> list[Step]:
    """The steps of `cfg` (those of the LM `stages` that are named, and what they read), as far as the disk names
    them now."""
    if cfg.kind == "lm":
        from cluster.lm_pipeline import lm_steps

        return lm_steps(cfg, stages)
    return classifier_steps(cfg)


def finished(out: Path) -> bool:
    return (out / "results.parquet").exists() and (out / "report.md").exists()


def dry_run(cfg: ExperimentConfig, stages=STAGES) -> str:
    """`metaicl run --dry-run`: every step, its directory, done or to run; then the run's own results."""
    out = run_dir(cfg)
    steps = plan(cfg, stages)
    if cfg.kind == "lm" and "eval" not in stages:
        return format_plan(out, steps, None)
    return format_plan(out, steps, ("eval" if cfg.kind == "lm" else "results", finished(out)))


def run(cfg: ExperimentConfig, resolved_yaml: str, stages=STAGES, echo: Callable[[str], None] = print,
        progress: bool | None = None, build_data: bool = True, cpus: float | None = None) -> Path:
    """`build_data=False` (a sweep trial, whose inputs and shared steps the sweep made first): missing data is an
    error, never built inside the trial. `cpus`: what the steps that train together share (a sweep trial's share
    of the cluster; default: the cluster's CPUs)."""
    started = time.perf_counter()
    progress = sys.stderr.isatty() if progress is None else progress
    lm = cfg.kind == "lm"
    out = run_dir(cfg)
    evaluates = "eval" in stages or not lm
    if evaluates and finished(out):
        echo(f"run {out}: every stage is done; reusing it")
        echo(headline(cfg, out))
        return out
    ray_started = []

    def ray_once():
        if not ray_started:
            t = time.perf_counter()
            init_ray(cfg.cluster)
            ray_started.append(True)
            echo(f"ray: {cfg.cluster.address} ready in {time.perf_counter() - t:.1f}s")

    if lm:
        from cluster.lm_pipeline import check_lm

        check_lm(cfg, stages)  # what needs no data: the starting model, the tasks meta-training needs
    def trains(steps: list[Step]) -> list[Step]:  # the training steps this command makes
        return [s for s in steps if s.spec is not None and (not lm or s.stage in stages)]

    todo = [s for s in trains(plan(cfg, stages)) if not s.done]  # resources: checked before data is built
    if todo or (lm and "eval" in stages):
        ray_once()
        check_cluster(cfg, todo, evaluates=lm and "eval" in stages, echo=echo)
    steps = execute(lambda: plan(cfg, stages), lambda s: build_data and s.stage in INPUTS, echo, ray_once,
                    progress=progress)
    missing = [str(s.where) for s in steps if s.stage in INPUTS and not s.done]
    if missing:  # checked before anything of the run is written
        raise ConfigError("data_root", f"no data at {', '.join(missing)}: a sweep builds every trial's data "
                                       f"before its trials start")
    for s in steps:  # what the stages will read is what was built: a damaged shard is one error, here
        if s.stage == "data" and s.done:
            Manifest.read(s.where).verify()
    training = trains(steps)
    if lm:
        from cluster.lm_pipeline import check_lm_steps

        check_lm_steps(cfg, stages, steps, training)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", resolved_yaml)
    echo(f"run {out}")
    chosen = {s.where for s in training}
    execute(lambda: plan(cfg, stages), lambda s: s.where in chosen, echo, ray_once, out / "ray", progress, cpus)
    steps = plan(cfg, stages)  # every arm's steps, also two arms that share one
    write_json(out / "steps.json", {s.name: str(s.where) for s in steps})  # what this run read, by directory
    if evaluates:
        copy_cards(cfg, out)
        if lm:
            from cluster.lm_pipeline import evaluate_run

            ray_once()
            evaluate_run(cfg, out, steps, echo, cpus)
        else:
            collect_results(cfg, out, steps)
        echo(headline(cfg, out))
        echo(f"results: {out / 'results.parquet'}, report: {out / 'report.md'}")
    echo(f"run {out}: {', '.join(stages) if lm else 'every stage'} done in {time.perf_counter() - started:.0f}s")
    return out


def check_cluster(cfg: ExperimentConfig, todo: list[Step], evaluates: bool, echo: Callable[[str], None] = print,
                  poll_s: float = 5.0) -> None:
    """Training steps and evaluation tasks that ask for more than the Ray cluster has are one ConfigError, not a
    request that waits forever; with `cluster.resource_wait_s`, after asking the autoscaler for them and waiting
    that long (said). Ray must be started."""
    import ray

    wait = cfg.cluster.resource_wait_s
    deadline, asked = time.monotonic() + wait, False
    while True:
        try:
            return check_fits(cfg, todo, evaluates, ray.cluster_resources())
        except ConfigError as err:
            left = deadline - time.monotonic()
            if left <= 0:
                if wait:
                    raise ConfigError(err.key, f"{err.message}, after waiting {wait:g} s (cluster.resource_wait_s)")
                raise
            if not asked:
                import atexit

                from ray.autoscaler import sdk

                sdk.request_resources(bundles=demand(cfg, todo, evaluates))
                atexit.register(withdraw_request)  # Ray keeps a request until the next one
                echo(f"ray: waiting up to {wait:g} s (cluster.resource_wait_s) for the cluster to grow: {err.message}")
                asked = True
            time.sleep(min(poll_s, left))


def withdraw_request() -> None:
    """At exit: no more standing request to the autoscaler (the run's own tasks held what it needed)."""
    try:
        from ray.autoscaler import sdk

        sdk.request_resources(bundles=[])
    except Exception:  # Ray already disconnected: the request stays until the next one
        pass


def check_fits(cfg: ExperimentConfig, todo: list[Step], evaluates: bool, have: dict) -> None:
    from metaicl.train.ray_train import check_resources

    check_resources([s.spec for s in todo if s.stage == "pretrain"], have, "train")
    check_resources([s.spec for s in todo if s.stage == "metatrain"], have, "metatrain")
    e = cfg.eval
    if evaluates and e.use_gpu and e.gpus_per_worker > have.get("GPU", 0):
        raise ConfigError("eval.use_gpu", f"evaluation asks for {e.gpus_per_worker:g} GPU per model but the Ray "
                                          f"cluster has {have.get('GPU', 0):g}: set eval.use_gpu=false")


def demand(cfg: ExperimentConfig, todo: list[Step], evaluates: bool) -> list[dict]:
    """The resource bundles the steps' workers and evaluation ask for (what an autoscaler should make room for)."""
    bundles = [{"CPU": t.cpus_per_worker or 1, **({"GPU": t.gpus_per_worker} if t.use_gpu else {})}
               for t in (s.spec.train for s in todo) for _ in range(t.num_workers)]
    if evaluates and cfg.eval.use_gpu:
        bundles.append({"CPU": 1, "GPU": cfg.eval.gpus_per_worker})
    return bundles


def copy_cards(cfg: ExperimentConfig, out: Path) -> None:
    """The statistics card of each arm's data, copied into the run (cards/<arm>.json): a run carries what its data
    measured, wherever data_root is (aggregation reads it)."""
    from cluster.aggregate import data_card

    for name in cfg.arm_names():
        card = data_card(cfg.arm(name))
        if card is not None and card.exists():
            copy_file(card, out / "cards" / f"{name}.json")


def collect_results(cfg: ExperimentConfig, out: Path, steps: list[Step]) -> None:
    """Every arm's metrics (stage `train`, seed = the training seed) as the run's results.parquet, and its report."""
    arms = [s.spec for s in steps if s.spec is not None]
    results = pd.concat([training_rows(pd.read_parquet(Path(spec.out_dir) / DONE_FILE), out.name, spec.arm, "train",
                                       spec.train.seed) for spec in arms], ignore_index=True)
    write_parquet(out / "results.parquet", pa.Table.from_pandas(results, preserve_index=False))
    cards = {name: read_json(out / "cards" / f"{name}.json") for name in cfg.arm_names()
             if (out / "cards" / f"{name}.json").exists()}
    write_report(out, cfg.name, cfg.data.num_labels, notes=data_section(cards) if cards else "")


def headline(cfg: ExperimentConfig, out: Path) -> str:
    """The table a finished run prints: final accuracies (classifier), MetaICL's headline rows (language model)."""
    if cfg.kind == "lm":
        from cluster.lm_report import headline as lm_headline

        return lm_headline(pd.read_parquet(out / "results.parquet"))
    return summary(out, cfg.data.num_labels)
