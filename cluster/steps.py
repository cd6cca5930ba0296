"""Steps and the one executor that makes them, for every kind of experiment (and for a sweep's shared steps).

    execute(lambda: plan(cfg), lambda step: step.stage in ("data", "tasks"), echo, ray_once)

A step is one output directory named by the hash of what it reads (`where`), complete when its marker file exists:
data (a mixture or few-shot data, `manifest.json`), tasks (a synthetic task collection, `families.json`), embed (the
target tasks' sentence embeddings for retrieved demonstrations, `embeddings.json`), pretrain (a
classifier arm, or a language model on its mixture) and metatrain (a meta-trained variant), both `metrics.parquet`.
Steps live in data_root, beside the data, so runs and sweep trials that need the same step share it (Marin's
executor works this way). Stages run in a fixed order (WAVES); the steps of one stage run together: data steps one
after another (each builds its shards with Ray tasks), training steps concurrently on Ray Train (`fit_arms`).

The plan is made again after each stage: a step's name may depend on what an earlier step wrote (a synthetic task
collection's token range comes from its mixture's manifest, a meta-training step's name from the collection's), so
a plan made before the data exists shows those steps as `<after data>`.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

WAVES = ("data", "tasks", "embed", "pretrain", "metatrain")
"""The stages that make steps, in the order they run (evaluation and results belong to the run, not to a step)."""


@dataclass
class Step:
    name: str
    """How the plan shows it: `data [bursty]`, `train [bursty]`, `tasks`, `pretrain`, `metatrain [metaicl]`."""
    stage: str
    """One of WAVES."""
    where: Path
    marker: str
    """The file whose presence marks the step complete."""
    make: Callable[[bool], Any] | None = None
    """data, tasks and embed: builds the step (argument: show progress bars)."""
    spec: Any = None
    """pretrain and metatrain: the TrainingUnit that Ray Train fits (metaicl.train.ray_train)."""
    known: bool = True
    """False while `where` waits on an earlier step (the plan of a dry run before the data exists)."""

    @property
    def done(self) -> bool:
        return self.known and (self.where / self.marker).exists()


def format_plan(out: Path, steps: list[Step], finish: tuple[str, bool] | None) -> str:
    """`metaicl run --dry-run`: every step with its directory and whether it is done, then the run's own step
    (`finish`: its name and whether it is done; None for a single training stage); nothing is started."""
    rows = [(s.name, s.done, s.where) for s in steps] + ([(finish[0], finish[1], out)] if finish else [])
    width = max(len(name) for name, _, _ in rows)
    lines = [f"run {out}: {sum(not done for _, done, _ in rows)} of {len(rows)} steps to run"]
    lines += [f"  {name:<{width}}  {'done  ' if done else 'to run'}  {where}" for name, done, where in rows]
    return "\n".join(lines)


def fit_specs(specs: list, storage: Path, echo: Callable[[str], None], progress: bool, what: str,
              cpus: float | None = None) -> None:
    """Train the specs (classifier arms, LM stages) concurrently with Ray Train, one progress bar each, and say how
    long it took. They share `cpus` (default: the cluster's CPUs; `metaicl.train.ray_train.size_workers`). Ray must
    be started."""
    from cluster.progress import ProgressMonitor
    from metaicl.train.ray_train import fit_arms

    for spec in specs:
        Path(spec.out_dir).mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    with ProgressMonitor({s.arm: Path(s.out_dir) for s in specs}, {s.arm: s.train.steps for s in specs},
                         enabled=progress):
        fit_arms(specs, storage, cpus)
    echo(f"{what}: {', '.join(s.arm for s in specs)} finished in {time.perf_counter() - t:.1f}s")


def execute(plan: Callable[[], list[Step]], select: Callable[[Step], bool], echo: Callable[[str], None],
            ray_once: Callable[[], None], storage: Path | None = None, progress: bool = False,
            cpus: float | None = None) -> list[Step]:
    """Make every selected step that is not done, stage by stage (WAVES), planning again after each; steps that
    several plans share (the same directory) are made once, and a step another process is making (its lease:
    cluster.lease) is waited for, not made twice. Says what it reuses. Returns the last plan."""
    from cluster.lease import Leases

    with Leases(echo) as leases:
        for stage in WAVES:
            chosen = [s for s in unique(plan()) if s.stage == stage and select(s)]
            for step in chosen:
                if step.done:
                    echo(f"{step.name}: " + (f"reusing {step.where}" if step.make else "done already, skipping"))
            todo = [s for s in chosen if not s.done]
            if any(not s.known for s in todo):  # an earlier stage was not selected: nothing can name this one yet
                raise RuntimeError(f"{todo[0].name} waits on a step that was not made")
            while mine := leases.claim(todo):  # [] once every step of the stage is done, here or elsewhere
                ray_once()
                make(mine, storage, echo, progress, cpus)
                for step in mine:
                    leases.release(step.where)
    return unique(plan())


def make(steps: list[Step], storage: Path | None, echo: Callable[[str], None], progress: bool,
         cpus: float | None) -> None:
    """Build data steps one after another, or fit training steps together."""
    if steps[0].spec is None:
        for step in steps:
            t = time.perf_counter()
            step.make(progress)
            echo(f"{step.name}: built {step.where} in {time.perf_counter() - t:.1f}s")
        return
    specs = [s.spec for s in steps]
    if len({s.arm for s in specs}) < len(specs):  # several plans' steps (a sweep's): named by their directories
        specs = [dataclasses.replace(s.spec, arm=s.where.name) for s in steps]
    fit_specs(specs, storage or steps[0].where.parent / "ray", echo, progress, steps[0].name.split(" ")[0], cpus)


def unique(steps: list[Step]) -> list[Step]:
    """Each directory once (the first step naming it), in plan order; a step not named yet, once per name."""
    seen: dict[Path, Step] = {}
    for step in steps:
        seen.setdefault(step.where if step.known else Path(step.name), step)
    return list(seen.values())
