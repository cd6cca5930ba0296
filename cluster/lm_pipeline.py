"""An LM experiment end to end: data -> pretrain -> metatrain -> eval -> results.parquet + report.md.

    run_lm(cfg, resolved_yaml)                         # every stage the config names
    run_lm(cfg, resolved_yaml, stages=("eval",))       # one stage (its inputs must exist or come from lm.name_or_path)

Each stage is skipped when its output exists (a mixture's manifest.json, a task collection's families.json, a
model's metrics.parquet, results.parquet). Training stages run on Ray Train workers (`fit_arms`: the meta-trained
variants concurrently); evaluation runs one Ray task per model, with the same resources as one training worker.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow as pa

from metaicl.core.errors import ConfigError
from metaicl.core.hashing import config_hash
from metaicl.core.io import read_json, write_parquet, write_text
from metaicl.core.config import to_dict
from metaicl.core.ray_local import init_ray
from metaicl.eval.methods import META_VARIANTS, METHODS, variants_needed
from metaicl.experiment import RESOURCE_KEYS, ExperimentConfig, run_dir
from metaicl.models.lm import check_source
from metaicl.train.lm import DONE_FILE, EpisodeData, LMStage
from pretrain_data.build import build, target_dir
from pretrain_data.manifest import Manifest
from pretrain_data.task_families import build_task_families, token_range_of
from cluster.lm_report import headline, write_lm_report
from cluster.results import METAICL, tidy, training_rows
from cluster.pipeline import fit_specs

STAGES = ("pretrain", "metatrain", "eval")
SCORE_COLUMNS = ["method", "task", "k", "seed", "scoring", "metric", "value"]
"""What evaluate_variant's rows hold (cluster.results.tidy makes them result rows)."""


@dataclasses.dataclass
class Inputs:
    """What the stages read: the mixture (if any), the tokenizer, the task collection and its split."""
    manifest: Manifest | None
    tokenizer: str
    tasks_path: str
    meta_train: list[str]
    eval: list[str]


def prepare_inputs(cfg: ExperimentConfig, echo, progress: bool, ray_once: Callable, build_data: bool = True) -> Inputs:
    """The mixture (built unless it exists) and the task collection (written unless it exists). `build_data=False`
    (a sweep trial, whose data the sweep built before its trials): missing data is an error."""
    manifest = None
    if cfg.pretrain is not None:
        where = target_dir(cfg.pretrain, cfg.data_root)
        if not (where / "manifest.json").exists():
            if not build_data:
                raise ConfigError("data_root", f"no data at {where}: a sweep builds every trial's data before its "
                                               f"trials start")
            ray_once()
            t = time.perf_counter()
            build(cfg.pretrain, cfg.data_root, progress=progress)
            echo(f"data: built {where} in {time.perf_counter() - t:.1f}s")
        else:
            echo(f"data: reusing {where}")
        manifest = Manifest.read(where)
    if cfg.tasks.synthetic is not None:
        span = token_range_of(manifest, cfg.tasks.source, key="tasks.source")
        root = tasks_dir(cfg, span)
        if not (root / "families.json").exists():
            if not build_data:
                raise ConfigError("data_root", f"no task collection at {root}: a sweep writes it before its trials")
            build_task_families(cfg.tasks.synthetic, span, root)
            echo(f"tasks: wrote {root}")
        splits = read_json(root / "families.json")["splits"]
        return Inputs(manifest, f"ids:{manifest.vocab_size}", str(root.absolute()), splits["meta_train"],
                      splits["eval"])
    tokenizer = cfg.lm.tokenizer or cfg.lm.name_or_path
    if tokenizer is None:
        raise ConfigError("lm.tokenizer", "text tasks need a tokenizer: set lm.tokenizer or lm.name_or_path")
    return Inputs(manifest, tokenizer, str(Path(cfg.tasks.path).absolute()), list(cfg.tasks.meta_train),
                  list(cfg.tasks.eval))


def tasks_dir(cfg: ExperimentConfig, span) -> Path:
    """Where the synthetic task collection written with the token ids `span` lives (shared across runs)."""
    return Path(cfg.data_root) / f"tasks-{config_hash({'tasks': to_dict(cfg.tasks.synthetic), 'token_range': list(span)})[:8]}"


def pretrain_dir(cfg: ExperimentConfig) -> Path:
    """The pretraining step's directory, named by the hash of what it reads (the mixture, the model, the training
    knobs that change the result). It lives beside the mixtures and task collections in data_root, which sweeps do
    not move: runs and sweep trials that differ only in meta-training or evaluation share it, a sweep's trials with
    a single run's."""
    reads = {"data": target_dir(cfg.pretrain, cfg.data_root).name, "lm": to_dict(cfg.lm),
             "train": to_dict(cfg.train)}
    hash8 = config_hash(reads, exclude=[f"train.{key}" for key in RESOURCE_KEYS])[:8]
    return Path(cfg.data_root).absolute() / f"pretrain-{hash8}"


def metatrain_dir(cfg: ExperimentConfig, variant: str, init: str, tasks: str) -> Path:
    """A meta-training step's directory, named by the hash of what it reads: the model it starts from (`init`: the
    pretraining step's name, or lm.name_or_path), the tasks (`tasks`: a synthetic collection's name, or the
    collection's path and tasks.meta_train) and episodes it trains on, the model and meta-training knobs. Shared
    steps are read by name: the name is itself a hash, the same wherever data_root lies. Like the pretraining step it lives in data_root: runs and sweep trials that differ only in evaluation
    keys (eval.k, eval.seeds, methods scored by the same variant) share one meta-trained model."""
    method, demos = META_VARIANTS[variant]
    reads = {"init": init, "tasks": tasks, "meta_train": list(cfg.tasks.meta_train), "variant": variant,
             "episodes": to_dict(dataclasses.replace(cfg.episodes, method=method)),
             "k": cfg.metatrain.k if demos else 0, "lm": to_dict(cfg.lm), "metatrain": to_dict(cfg.metatrain)}
    hash8 = config_hash(reads, exclude=["lm.name_or_path", *(f"metatrain.{key}" for key in RESOURCE_KEYS)])[:8]
    return Path(cfg.data_root).absolute() / f"metatrain-{variant}-{hash8}"


def plan_lm(cfg: ExperimentConfig, stages=STAGES) -> tuple[Path, list[tuple[str, Path, bool]]]:
    """(run directory, steps) of an LM experiment for `metaicl run --dry-run`: (name, where, done)."""
    out = run_dir(cfg)
    steps, manifest, root = [], None, None
    if cfg.pretrain is not None:
        where = target_dir(cfg.pretrain, cfg.data_root)
        steps.append(("data", where, (where / "manifest.json").exists()))
        manifest = Manifest.read(where) if steps[-1][2] else None
    if cfg.tasks.synthetic is not None:
        root = tasks_dir(cfg, token_range_of(manifest, cfg.tasks.source)) if manifest else None
        steps.append(("tasks", root or Path(cfg.data_root) / "tasks-<after data>",
                      bool(root and (root / "families.json").exists())))
    init = cfg.lm.name_or_path
    if cfg.pretrain is not None and ("pretrain" in stages or cfg.lm.name_or_path is None):
        where = pretrain_dir(cfg)
        steps.append(("pretrain", where, (where / DONE_FILE).exists()))
        init = where.name
    if "metatrain" in stages or "eval" in stages:
        tasks = ((root.name if root else None) if cfg.tasks.synthetic is not None else
                 str(Path(cfg.tasks.path).absolute()))  # as prepare_inputs gives it
        for variant in [v for v in variants_needed(cfg.eval.methods) if v != "pretrained"]:
            where = (metatrain_dir(cfg, variant, init, tasks) if tasks else
                     Path(cfg.data_root) / f"metatrain-{variant}-<after data>")
            steps.append((f"metatrain [{variant}]", where, (where / DONE_FILE).exists()))
    if "eval" in stages:
        steps.append(("eval", out, (out / "results.parquet").exists() and (out / "report.md").exists()))
    return out, steps


def training_stages(cfg: ExperimentConfig, inputs: Inputs, stages=STAGES) -> tuple[LMStage | None, list[LMStage]]:
    """The pretraining stage (None without `pretrain:`, or when a single later stage starts from lm.name_or_path)
    and one meta-training stage per variant the methods need."""
    pre = None
    if cfg.pretrain is not None and ("pretrain" in stages or cfg.lm.name_or_path is None):
        pre = LMStage("pretrain", str(pretrain_dir(cfg)), cfg.lm, cfg.train,
                      stream=str((inputs.manifest.root / "manifest.json").absolute()),
                      vocab_size=inputs.manifest.vocab_size)
    base = str(pre.model_dir) if pre else cfg.lm.name_or_path
    metas = []
    for variant in [v for v in variants_needed(cfg.eval.methods) if v != "pretrained"]:
        if not inputs.meta_train:
            raise ConfigError("tasks.meta_train", f"method(s) scored by the meta-trained {variant!r} model need "
                                                  f"meta-training tasks")
        method, demos = META_VARIANTS[variant]
        data = EpisodeData(inputs.tasks_path, inputs.meta_train,
                           dataclasses.replace(cfg.episodes, method=method), cfg.metatrain.k if demos else 0,
                           inputs.tokenizer, cfg.metatrain.seed)
        tasks = Path(inputs.tasks_path).name if cfg.tasks.synthetic is not None else inputs.tasks_path
        where = metatrain_dir(cfg, variant, Path(pre.out_dir).name if pre else base, tasks)
        metas.append(LMStage(variant, str(where), cfg.lm, cfg.metatrain, init=base, episodes=data))
    return pre, metas


def check_starts(stages: list[LMStage], what: str) -> None:
    """A stage that starts from a model this run should have made needs that model on disk."""
    for s in stages:
        if not s.done and s.init is not None and not Path(s.init).exists() and s.init != s.lm.name_or_path:
            raise ConfigError("lm.name_or_path", f"{what} [{s.arm}] starts from {s.init}, which does not exist: "
                                                 f"run the earlier stage or set lm.name_or_path")


def model_dirs(cfg: ExperimentConfig, pre: LMStage | None, metas: list[LMStage]) -> dict[str, str]:
    """The model each needed variant scores with; this run's own models must have been trained."""
    for stage in ([pre] if pre else []) + metas:
        if not (stage.model_dir / "config.json").exists():
            command = "train" if stage is pre else "metatrain"
            raise ConfigError("lm.name_or_path", f"no {stage.arm} model at {stage.model_dir}: run `metaicl {command}` "
                                                 f"with this config first")
    dirs = {"pretrained": str(pre.model_dir) if pre else cfg.lm.name_or_path,
            **{s.arm: str(s.model_dir) for s in metas}}
    return {v: dirs[v] for v in variants_needed(cfg.eval.methods)}


def evaluate(cfg: ExperimentConfig, inputs: Inputs, dirs: dict[str, str], echo,
             cpus: float | None = None) -> pd.DataFrame:
    """One Ray task per model (pretrained, each meta-trained variant), each scoring its methods on every task;
    unless train.cpus_per_worker says otherwise, the tasks share `cpus` (default: the cluster's CPUs)."""
    import ray

    from metaicl.eval.evaluate import evaluate_variant
    from metaicl.train.ray_train import cpus_each, threads

    t = cfg.train
    each = t.cpus_per_worker or cpus_each(len(dirs), cpus)
    # "DEFAULT": not inside the placement group of a Ray Tune trial that runs this (a trial reserves no CPU)
    remote = ray.remote(evaluate_variant).options(num_cpus=each,
                                                  num_gpus=t.gpus_per_worker if t.use_gpu else 0,
                                                  scheduling_strategy="DEFAULT")
    device = "cuda" if t.use_gpu else "cpu"
    futures = {}
    for variant, path in dirs.items():
        methods = [m for m in cfg.eval.methods if METHODS[m].model == variant]
        futures[variant] = remote.remote(variant, path, methods, inputs.tasks_path, inputs.eval, cfg.eval,
                                         cfg.episodes, cfg.finetune, inputs.tokenizer, device, threads=threads(each))
    started, rows = time.perf_counter(), []
    for variant, future in futures.items():
        rows += ray.get(future)
        echo(f"eval [{variant}]: done ({time.perf_counter() - started:.0f}s)")
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


def check_lm_resources(cfg: ExperimentConfig, pretraining: list[LMStage], metatraining: list[LMStage],
                       evaluating: bool) -> None:
    """Stages to train as the spine's arms are checked (`check_resources`), and evaluation's tasks, which take
    `train.*`'s resources (one per model): a GPU the cluster lacks is one ConfigError, not a task that never
    starts. Ray must be started."""
    import ray

    from metaicl.train.ray_train import check_resources

    have = ray.cluster_resources()
    check_resources(pretraining, have, "train")
    check_resources(metatraining, have, "metatrain")
    t = cfg.train
    if evaluating and t.use_gpu and t.gpus_per_worker > have.get("GPU", 0):
        raise ConfigError("train.use_gpu", f"evaluation asks for {t.gpus_per_worker:g} GPU per model (an LM run's "
                                           f"evaluation tasks take train.*'s resources) but the Ray cluster has "
                                           f"{have.get('GPU', 0):g}: set train.use_gpu=false")


def stage_rows(out: Path, pre: LMStage | None, metas: list[LMStage]) -> list[pd.DataFrame]:
    """The training curves of this run's own models (loss on the training batches and on held-out data) as rows
    of the run's results, stage `pretrain` or `metatrain/<variant>`."""
    frames = []
    for stage, name in ([(pre, "pretrain")] if pre else []) + [(m, f"metatrain/{m.arm}") for m in metas]:
        if stage.done:
            frames.append(training_rows(pd.read_parquet(Path(stage.out_dir) / DONE_FILE), out.name, "main", name,
                                        stage.train.seed))
    return frames


def run_lm(cfg: ExperimentConfig, resolved_yaml: str, stages=STAGES, echo: Callable[[str], None] = print,
           progress: bool | None = None, build_data: bool = True, cpus: float | None = None) -> Path:
    """`build_data=False`: a sweep trial, whose data, task collection and pretrained model the sweep made first.
    `cpus`: what the stages that run together share (a sweep trial's share; default: the cluster's CPUs)."""
    started = time.perf_counter()
    progress = sys.stderr.isatty() if progress is None else progress
    out = run_dir(cfg)
    if "eval" in stages and (out / "results.parquet").exists() and (out / "report.md").exists():
        echo(f"run {out}: every stage is done; reusing it")
        echo(headline(pd.read_parquet(out / "results.parquet")))
        return out
    ray_started = []

    def ray_once():
        if not ray_started:
            init_ray(cfg.cluster)
            ray_started.append(True)

    # Everything that can be wrong is found before the run directory exists: inputs, stages, starting models,
    # resources (a request Ray can never meet would wait forever)
    if cfg.lm.name_or_path is not None:
        check_source(cfg.lm.name_or_path)
    inputs = prepare_inputs(cfg, echo, progress, ray_once, build_data)
    pre, metas = training_stages(cfg, inputs, stages)
    pretraining = [pre] if pre is not None and "pretrain" in stages else []
    metatraining = metas if "metatrain" in stages else []
    if metatraining and not pretraining:  # with pretraining, it makes the model they start from
        check_starts(metatraining, "metatrain")
    if stages == ("eval",):
        model_dirs(cfg, pre, metas)
    if any(not s.done for s in pretraining + metatraining) or "eval" in stages:  # Ray starts only for work
        ray_once()
        check_lm_resources(cfg, [s for s in pretraining if not s.done], [s for s in metatraining if not s.done],
                           evaluating="eval" in stages)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", resolved_yaml)
    echo(f"run {out}")
    if pretraining:
        fit_specs(pretraining, out, echo, progress, "pretrain", cpus)
    if metatraining:
        fit_specs(metatraining, out, echo, progress, "metatrain", cpus)
    if "eval" in stages:
        ray_once()
        scored = tidy(evaluate(cfg, inputs, model_dirs(cfg, pre, metas), echo, cpus), run=out.name, arm="main",
                      stage="eval", suite=METAICL)
        results = pd.concat([*stage_rows(out, pre, metas), scored], ignore_index=True)
        write_parquet(out / "results.parquet", pa.Table.from_pandas(results, preserve_index=False))
        echo(write_lm_report(out, cfg.name, results))
        echo(headline(results))
    echo(f"run {out}: {', '.join(stages)} done in {time.perf_counter() - started:.0f}s")
    return out
