"""The one module that touches Ray Train: runs a spec's `run` (an arm of the spine, an LM stage) on Ray Train.

    fit_arms([spec_a, spec_b], storage_root)     # arms train concurrently; Ray queues what does not fit

Every spec is a `TrainingUnit` (below): `metaicl.train.arm.ArmSpec`, `metaicl.train.lm.LMStage`.

A data-parallel spec (train.num_workers > 1) trains on a TorchTrainer worker group: each worker learns its rank
from the Ray Train context and wraps the model with `prepare_model` (DDP, gloo on CPU, NCCL on GPU); Ray Train
restarts a failed group up to train.max_failures times. A one-worker spec (the default) has no process group to
form: it trains in a Ray task that reserves that worker's CPUs/GPUs, through Ray Train's local mode (the same
`_worker`: context, `prepare_model`, `report`), and Ray retries the task up to train.max_failures times (a lost
node included). Either way `run` resumes from the latest checkpoint. On a multi-node cluster, the run and data
directories must be on storage every node sees.
"""
from __future__ import annotations

import dataclasses
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Protocol

from metaicl.core.errors import ConfigError
from metaicl.train.config import TrainConfig


class TrainingUnit(Protocol):
    """What Ray Train fits (a dataclass): the classifier's arms (metaicl.train.arm.ArmSpec) and a language model's
    stages (metaicl.train.lm.LMStage). Its output directory is complete when `done` (its metrics.parquet exists)."""
    arm: str
    """Name of the Ray Train run (an arm, or a stage such as `pretrain`, `metaicl`)."""
    out_dir: str
    train: TrainConfig
    """Steps, batch, optimiser, and the resources of its workers."""

    @property
    def done(self) -> bool: ...

    def run(self, rank: int = 0, world: int = 1, device="cpu", wrap: Callable = ..., report: Callable = ...) -> list[dict]:
        """Train on one rank (plain torch, no Ray), resuming from the latest checkpoint in out_dir."""


def _worker(config: dict) -> None:
    import ray.train
    import ray.train.torch
    import torch

    # One torch thread per reserved CPU, whatever OMP_NUM_THREADS the worker process inherited.
    torch.set_num_threads(threads(config["spec"].train.cpus_per_worker))
    ctx = ray.train.get_context()
    # Local mode picks CUDA whenever torch sees a GPU; a stage that asked for none stays on the CPU
    device = ray.train.torch.get_device() if config["spec"].train.use_gpu else torch.device("cpu")
    config["spec"].run(rank=ctx.get_world_rank(), world=ctx.get_world_size(), device=device,
                       wrap=lambda model: ray.train.torch.prepare_model(model, move_to_device=device),
                       report=ray.train.report)


def _local(spec: TrainingUnit) -> None:
    """A one-worker stage inside a Ray task: Ray Train's local mode (num_workers=0) runs `_worker` in this
    process, with the same context, `prepare_model` and `report` as a worker of a group."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    TorchTrainer(_worker, train_loop_config={"spec": spec}, scaling_config=ScalingConfig(num_workers=0),
                 run_config=RunConfig(name=spec.arm)).fit()


def fit_arm(spec: TrainingUnit, storage_root: str | Path) -> None:
    """Train one spec to completion. Data-parallel (num_workers > 1): a TorchTrainer worker group (DDP). One
    worker: a Ray task that reserves what that worker would and is retried up to max_failures times, like the
    group. Why not a group of one: a worker group starts five actor processes per stage (controller, placement-group
    cleaner, synchronization actor, worker, dataset manager; ~15 CPU-seconds), a task reuses a warm Ray worker
    process. Measured on 2 cores, README's toy LM run: 62 s -> 28 s wall, identical results (issue 12)."""
    [spec] = size_workers([spec])
    t = spec.train
    if t.num_workers == 1:
        import ray

        task = ray.remote(_local).options(
            num_cpus=t.cpus_per_worker, num_gpus=t.gpus_per_worker if t.use_gpu else 0, name=f"train:{spec.arm}",
            max_retries=t.max_failures, retry_exceptions=True,
            scheduling_strategy="DEFAULT")  # not inside a Ray Tune trial's placement group (it reserves no CPU)
        ray.get(task.remote(spec))
        return
    from ray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        _worker,
        train_loop_config={"spec": spec},
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu,
                                     resources_per_worker={"CPU": t.cpus_per_worker,
                                                           **({"GPU": t.gpus_per_worker} if t.use_gpu else {})}),
        run_config=RunConfig(name=spec.arm, storage_path=str(Path(storage_root).absolute()),
                             failure_config=FailureConfig(max_failures=t.max_failures),
                             logging_config=LoggingConfig(log_level="WARNING")),  # progress comes from us
    )
    trainer.fit()


def cpu_share(cpus: float, workers: int, largest_node: float) -> float:
    """CPUs for each of `workers` workers that share `cpus`: whole CPUs when there are enough (at most what the
    largest node has: one worker's CPUs come from one node); an equal fraction when the workers outnumber the CPUs
    (three meta-trained variants on 2 cores all start at once on one thread each, rather than two and then one
    while a core idles); 1 when there is nothing to share."""
    share = cpus / max(1, workers)
    if share >= 1:
        return float(min(int(share), max(1, int(largest_node))))
    return math.floor(share * 100) / 100 if share >= 0.01 else 1.0


def threads(cpus: float) -> int:
    """torch threads of a worker (or task) that reserves `cpus`: one per whole CPU, at least one."""
    return max(1, int(cpus))


def cluster_cpus() -> tuple[float, float]:
    """(CPUs of the cluster's live nodes, CPUs of its largest one). Not the CPUs free at this instant: a task that
    has just finished holds its CPUs a moment longer (Ray keeps an idle worker's lease briefly), so sizing by what
    is free gave a stage 1 thread or 2 depending on timing, and the same config different floating-point results."""
    import ray

    alive = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    return float(sum(alive)), max(alive, default=0)


def cpus_each(workers: int, cpus: float | None = None, reserved: float = 0) -> float:
    """`cpu_share` of `cpus` (default: the cluster's CPUs) less `reserved`, for `workers` workers."""
    total, largest = cluster_cpus()
    return cpu_share((total if cpus is None else cpus) - reserved, workers, largest)


def size_workers(specs: list[TrainingUnit], cpus: float | None = None) -> list[TrainingUnit]:
    """The specs with every unset `train.cpus_per_worker` sized: the stages that train together share `cpus`
    (default: the cluster's CPUs), less what explicitly sized specs reserve, evenly per worker."""
    auto = [s for s in specs if s.train.cpus_per_worker is None]
    if not auto:
        return list(specs)
    reserved = sum(s.train.cpus_per_worker * s.train.num_workers for s in specs if s.train.cpus_per_worker)
    share = cpus_each(sum(s.train.num_workers for s in auto), cpus, reserved)
    return [s if s.train.cpus_per_worker else dataclasses.replace(s, train=dataclasses.replace(s.train,
                                                                                              cpus_per_worker=share))
            for s in specs]


def check_resources(specs: list[TrainingUnit], available: dict, group: str = "train") -> None:
    """A ConfigError, instead of a placement group that waits forever, when one arm's workers ask for more GPUs
    or CPUs than the whole cluster has; `group` names the config group of their resources (train, metatrain).
    (An autoscaling cluster reports what it has now: start its GPU nodes, or set their min_workers, before
    submitting.)"""
    for spec in specs:
        t = spec.train
        need = {"CPU": (t.cpus_per_worker or 1) * t.num_workers,  # unset: sized later, at least 1
                "GPU": t.gpus_per_worker * t.num_workers if t.use_gpu else 0}
        for kind, amount in need.items():
            if amount > available.get(kind, 0):
                key = f"{group}.use_gpu" if kind == "GPU" else f"{group}.cpus_per_worker"
                raise ConfigError(key, f"arm {spec.arm!r} needs {amount:g} {kind} ({t.num_workers} workers) but the "
                                       f"Ray cluster has {available.get(kind, 0):g}")


def fit_arms(specs: list[TrainingUnit], storage_root: str | Path, cpus: float | None = None) -> None:
    """Fit every arm, concurrently, each worker sized by `size_workers` (sharing `cpus`, default: the cluster's CPUs);
    re-raises the first failure."""
    if not specs:
        return
    import ray

    specs = size_workers(specs, cpus)
    check_resources(specs, ray.cluster_resources())  # the pipeline checks first; other callers get it here
    with ThreadPoolExecutor(max_workers=len(specs)) as pool:
        for future in [pool.submit(fit_arm, spec, storage_root) for spec in specs]:
            future.result()
