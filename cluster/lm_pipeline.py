"""The steps of a language-model experiment and its evaluation (cluster.pipeline runs them like every other kind).

    lm_steps(cfg)     # data (the mixture) -> tasks (a synthetic collection) -> embed (retrieval, if asked)
                      # -> pretrain -> metatrain [variant]

Steps live in data_root, each named by the hash of what it reads: runs and sweep trials that differ only in
meta-training or evaluation keys share a pretrained model, those that differ only in evaluation keys a meta-trained
one. A run then scores MetaICL's table with one Ray task per model (eval.*'s resources) and writes its results.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa

from metaicl.core.config import to_dict
from metaicl.core.errors import ConfigError
from metaicl.core.hashing import config_hash
from metaicl.core.io import read_json, write_parquet
from metaicl.data.tasks import load_collection
from metaicl.data.tokenizer import TokenizerSpec
from metaicl.eval.embed import MARKER, build_embeddings, embeddings_dir
from metaicl.eval.methods import META_VARIANTS, METHODS, variants_needed
from metaicl.experiment import RESOURCE_KEYS, ExperimentConfig
from metaicl.models.lm import check_source
from metaicl.train.lm import DONE_FILE, EpisodeData, LMStage
from pretrain_data.build import build, target_dir
from pretrain_data.manifest import Manifest
from pretrain_data.task_families import build_task_families, token_range_of
from cluster.lm_report import write_lm_report
from cluster.results import LM_ICL, METAICL, REGRESSION, tidy, training_rows
from cluster.steps import Step


@dataclasses.dataclass
class Inputs:
    """What the stages read, as far as it exists: the mixture, the task collection, its split and its tokenizer."""
    manifest: Manifest | None
    tasks: Path | None
    """The task collection (None: a synthetic collection whose mixture is not built yet)."""
    meta_train: list[str]
    eval: list[str]
    tokenizer: TokenizerSpec | None


def read_inputs(cfg: ExperimentConfig) -> Inputs:
    """The mixture's manifest and the task collection, read from disk (nothing is built here). A synthetic
    collection describes itself (families.json: its splits and the tokenizer that reads its text)."""
    manifest = None
    if cfg.pretrain is not None and (target_dir(cfg.pretrain, cfg.data_root) / "manifest.json").exists():
        manifest = Manifest.read(target_dir(cfg.pretrain, cfg.data_root))
    if cfg.tasks is None:  # only the lm_icl suite: no tasks to read
        return Inputs(manifest, None, [], [], None)
    if cfg.tasks.synthetic is None:
        tokenizer = cfg.lm.tokenizer or cfg.lm.name_or_path
        return Inputs(manifest, Path(cfg.tasks.path).absolute(), list(cfg.tasks.meta_train), list(cfg.tasks.eval),
                      TokenizerSpec("local", path=tokenizer) if tokenizer else None)
    root = tasks_dir(cfg, token_range_of(manifest, cfg.tasks.source, key="tasks.source"),
                     separator_ids(cfg, manifest)) if manifest else None
    if root is None or not (root / "families.json").exists():
        return Inputs(manifest, root, [], [], None)
    info = read_json(root / "families.json")
    return Inputs(manifest, root, info["splits"]["meta_train"], info["splits"]["eval"],
                  TokenizerSpec(**info["tokenizer"]))


def separator_ids(cfg: ExperimentConfig, manifest) -> dict | None:
    """{"input": id, "example": id} of the mixture source tasks.separators names (its manifest entry), or None."""
    if cfg.tasks.separators is None:
        return None
    return manifest.sources[cfg.tasks.separators]["separators"]


def tasks_dir(cfg: ExperimentConfig, span, separators: dict | None = None) -> Path:
    """Where the synthetic task collection written with the token ids `span` lives (shared across runs)."""
    reads = {"tasks": to_dict(cfg.tasks.synthetic), "token_range": list(span)}
    if separators:
        reads["separators"] = separators
    return Path(cfg.data_root).absolute() / f"tasks-{config_hash(reads)[:8]}"


def pretrain_dir(cfg: ExperimentConfig) -> Path:
    """The pretraining step's directory, named by the hash of what it reads (the mixture, the model, the training
    knobs that change the result)."""
    reads = {"data": target_dir(cfg.pretrain, cfg.data_root).name, "lm": to_dict(cfg.lm),
             "train": to_dict(cfg.train)}
    hash8 = config_hash(reads, exclude=[f"train.{key}" for key in RESOURCE_KEYS])[:8]
    return Path(cfg.data_root).absolute() / f"pretrain-{hash8}"


def metatrain_dir(cfg: ExperimentConfig, variant: str, init: str, tasks: str) -> Path:
    """A meta-training step's directory, named by the hash of what it reads: the model it starts from (`init`: the
    pretraining step's name, or lm.name_or_path), the tasks (`tasks`: a synthetic collection's name, or the
    collection's path and tasks.meta_train) and episodes it trains on, the model and meta-training knobs. Shared
    steps are read by name: the name is itself a hash, the same wherever data_root lies."""
    method, demos = META_VARIANTS[variant]
    reads = {"init": init, "tasks": tasks, "meta_train": list(cfg.tasks.meta_train), "variant": variant,
             "episodes": to_dict(dataclasses.replace(cfg.episodes, method=method)),
             "k": cfg.metatrain.k if demos else 0, "lm": to_dict(cfg.lm), "metatrain": to_dict(cfg.metatrain)}
    hash8 = config_hash(reads, exclude=["lm.name_or_path", *(f"metatrain.{key}" for key in RESOURCE_KEYS)])[:8]
    return Path(cfg.data_root).absolute() / f"metatrain-{variant}-{hash8}"


def embeddings_for(cfg: ExperimentConfig, inputs: Inputs) -> Path | None:
    """The sentence embeddings of the target tasks that eval.demos reads (embedder minilm): named by their texts,
    so None while a synthetic collection is not written yet."""
    if not cfg.eval.demos.cached_embeddings or inputs.tasks is None or not inputs.eval:
        return None
    return embeddings_dir(cfg.data_root, load_collection(inputs.tasks, inputs.eval), cfg.eval.demos.embedder)


def meta_variants(cfg: ExperimentConfig) -> list[str]:
    return [v for v in variants_needed(cfg.eval.methods) if v != "pretrained"]


def lm_steps(cfg: ExperimentConfig, stages) -> list[Step]:
    """The mixture, the synthetic task collection, the pretraining step (unless a single later stage starts from
    lm.name_or_path) and one meta-training step per variant the methods need."""
    inputs, steps = read_inputs(cfg), []
    if cfg.pretrain is not None:
        steps.append(Step("data", "data", target_dir(cfg.pretrain, cfg.data_root).absolute(), "manifest.json",
                          make=lambda progress: build(cfg.pretrain, cfg.data_root, progress=progress)))
    if cfg.tasks is not None and cfg.tasks.synthetic is not None:
        root = inputs.tasks or Path(cfg.data_root).absolute() / "tasks-<after data>"
        span = token_range_of(inputs.manifest, cfg.tasks.source) if inputs.manifest else None
        steps.append(Step("tasks", "tasks", root, "families.json", known=inputs.tasks is not None,
                          make=lambda _: build_task_families(
                              cfg.tasks.synthetic, span, root,
                              separators=separator_ids(cfg, inputs.manifest) if inputs.manifest else None)))
    if cfg.eval.demos.cached_embeddings and cfg.eval.methods and "eval" in stages:
        where = embeddings_for(cfg, inputs)
        steps.append(Step(f"embed [{cfg.eval.demos.embedder}]", "embed", where or Path(cfg.data_root).absolute() /
                          f"embeddings-{cfg.eval.demos.embedder}-<after tasks>", MARKER, known=where is not None,
                          make=lambda progress: build_embeddings(load_collection(inputs.tasks, inputs.eval), where,
                                                                 cfg.data_root, progress=progress)))
    pre, base = None, cfg.lm.name_or_path
    if cfg.pretrain is not None and ("pretrain" in stages or cfg.lm.name_or_path is None):
        manifest = target_dir(cfg.pretrain, cfg.data_root).absolute() / "manifest.json"
        pre = LMStage("pretrain", str(pretrain_dir(cfg)), cfg.lm, cfg.train, stream=str(manifest),
                      vocab_size=inputs.manifest.vocab_size if inputs.manifest else 0, prompts=cfg.regression)
        steps.append(Step("pretrain", "pretrain", Path(pre.out_dir), DONE_FILE, spec=pre,
                          known=inputs.manifest is not None))
        base = str(pre.model_dir)
    for variant in meta_variants(cfg) if {"metatrain", "eval"} & set(stages) else []:
        name = f"metatrain [{variant}]"
        if inputs.tokenizer is None:  # the collection (or the mixture it is written in) is not there yet
            where = Path(cfg.data_root).absolute() / f"metatrain-{variant}-<after data>"
            steps.append(Step(name, "metatrain", where, DONE_FILE, known=False,
                              spec=LMStage(variant, str(where), cfg.lm, cfg.metatrain, init=base)))
            continue
        method, demos = META_VARIANTS[variant]
        data = EpisodeData(str(inputs.tasks), inputs.meta_train, dataclasses.replace(cfg.episodes, method=method),
                           cfg.metatrain.k if demos else 0, inputs.tokenizer, cfg.metatrain.seed,
                           cfg.metatrain.loss_on, cfg.metatrain.shuffle_labels, cfg.metatrain.fresh_tasks,
                           cfg.metatrain.task_curriculum)
        tasks = inputs.tasks.name if cfg.tasks.synthetic is not None else str(inputs.tasks)
        where = metatrain_dir(cfg, variant, Path(pre.out_dir).name if pre else base, tasks)
        steps.append(Step(name, "metatrain", where, DONE_FILE,
                          spec=LMStage(variant, str(where), cfg.lm, cfg.metatrain, init=base, episodes=data)))
    return steps


def check_lm(cfg: ExperimentConfig, stages) -> None:
    """What can be wrong before any data exists: the starting model and its tokenizer, the task files a stage will
    read, and meta-training without tasks."""
    if cfg.lm.name_or_path is not None:
        check_source(cfg.lm.name_or_path)
    if cfg.tasks is None:
        return
    if cfg.tasks.synthetic is None and cfg.lm.tokenizer is None and cfg.lm.name_or_path is None:
        raise ConfigError("lm.tokenizer", "text tasks need a tokenizer: set lm.tokenizer or lm.name_or_path")
    if cfg.tasks.synthetic is None and Path(cfg.lm.tokenizer or cfg.lm.name_or_path).exists():
        from metaicl.data.tokenizer import load_tokenizer

        key = "lm.tokenizer" if cfg.lm.tokenizer else "lm.name_or_path"
        try:  # a model directory without its tokenizer: here, not inside the evaluation's Ray task
            load_tokenizer(cfg.lm.tokenizer or cfg.lm.name_or_path)
        except ConfigError as err:
            raise ConfigError(key, err.message) from None
    # The task files a stage will read must parse: a bad line is one error naming file and line, before Ray starts,
    # not a traceback from inside the evaluation's Ray task.
    if cfg.tasks.path is not None:
        names = [*(cfg.tasks.meta_train if "metatrain" in stages and meta_variants(cfg) else []),
                 *(cfg.tasks.eval if "eval" in stages and cfg.eval.methods else [])]
        if names:
            load_collection(cfg.tasks.path, names)
    meta_train = cfg.tasks.synthetic.meta_train_families if cfg.tasks.synthetic else cfg.tasks.meta_train
    variants = meta_variants(cfg)
    if variants and not meta_train and ("metatrain" in stages or "eval" in stages):
        raise ConfigError("tasks.meta_train", f"method(s) scored by the meta-trained {variants[0]!r} model need "
                                              f"meta-training tasks")


def check_lm_steps(cfg: ExperimentConfig, stages, steps: list[Step], training: list[Step]) -> None:
    """A stage that starts from a model an earlier stage makes needs that model on disk, unless the earlier stage
    runs too; `metaicl eval` alone needs every model it scores."""
    for s in training:
        init = s.spec.init
        if (s.stage == "metatrain" and "pretrain" not in stages and not s.done and init is not None
                and init != cfg.lm.name_or_path and not Path(init).exists()):
            raise ConfigError("lm.name_or_path", f"metatrain [{s.spec.arm}] starts from {init}, which does not "
                                                 f"exist: run the earlier stage or set lm.name_or_path")
    if stages == ("eval",):
        model_dirs(cfg, steps)


def model_dirs(cfg: ExperimentConfig, steps: list[Step]) -> dict[str, str]:
    """The model each needed variant scores with; this run's own models must have been trained."""
    dirs = {"pretrained": cfg.lm.name_or_path}
    for s in steps:
        if s.spec is None:
            continue
        if not (s.spec.model_dir / "config.json").exists():
            command = "train" if s.stage == "pretrain" else "metatrain"
            raise ConfigError("lm.name_or_path", f"no {s.spec.arm} model at {s.spec.model_dir}: run `metaicl "
                                                 f"{command}` with this config first")
        dirs["pretrained" if s.stage == "pretrain" else s.spec.arm] = str(s.spec.model_dir)
    return {v: dirs[v] for v in variants_needed(cfg.eval.methods) or ["pretrained"]}  # lm_icl alone: the model


def evaluate(cfg: ExperimentConfig, inputs: Inputs, dirs: dict[str, str], echo,
             cpus: float | None = None, out: Path | None = None) -> pd.DataFrame:
    """Every model (pretrained, each meta-trained variant) scores its methods on every task and, with eval.lm_icl,
    measures its own in-context ability. On GPUs, or with eval.cpus_per_worker set: one Ray task per model with
    eval.*'s resources (unless eval.cpus_per_worker says otherwise, the tasks share `cpus`, default the cluster's
    CPUs). On CPUs alone: one task, the models one after another on all of `cpus`, in the warm worker process
    training left (a toy LM run's evaluation: 3 s + 9 s concurrently -> 2 s, measured 2026-12-02). Result rows."""
    import ray

    from metaicl.train.ray_train import cpus_each, threads

    e = cfg.eval
    each = e.cpus_per_worker or cpus_each(len(dirs), cpus)
    if cfg.regression:  # Garg et al.'s model of function-class prompts: the regression suite only
        from metaicl.eval.regression import measure_regression

        task = ray.remote(measure_regression).options(num_cpus=each, num_gpus=e.gpus_per_worker if e.use_gpu else 0,
                                                     scheduling_strategy="DEFAULT")
        started = time.perf_counter()
        rows = ray.get(task.remote(dirs["pretrained"], str(inputs.manifest.root), e.regression,
                                   "cuda" if e.use_gpu else "cpu", threads(each)))
        echo(f"eval [regression]: done ({time.perf_counter() - started:.0f}s)")
        return tidy(pd.DataFrame(rows), suite=REGRESSION)
    stream = str(inputs.manifest.root) if inputs.manifest else None
    embeddings = embeddings_for(cfg, inputs)
    jobs = [(variant, path, [m for m in e.methods if METHODS[m].model == variant],
             str(inputs.tasks) if inputs.tasks else None, inputs.eval, e, cfg.episodes, cfg.finetune,
             inputs.tokenizer, "cuda" if e.use_gpu else "cpu", stream, str(embeddings) if embeddings else None,
             str(out / "adapters") if out is not None else None)  # used with finetune.save_adapters
            for variant, path in dirs.items()]
    groups = [[job] for job in jobs]
    if not e.use_gpu and e.cpus_per_worker is None and len(jobs) > 1:
        # On CPUs alone: one task, the models one after another on every thread of the share, in one warm worker
        # process (a second process would import torch and transformers again: ~8 CPU-seconds, the whole
        # evaluation of a toy run)
        each, groups = cpus_each(1, cpus), [jobs]
    # "DEFAULT": not inside the placement group of a Ray Tune trial that runs this (a trial reserves no CPU)
    remote = ray.remote(measure_variants).options(num_cpus=each, num_gpus=e.gpus_per_worker if e.use_gpu else 0,
                                                  scheduling_strategy="DEFAULT")
    futures = [remote.remote(group, threads=threads(each)) for group in groups]
    started, frames = time.perf_counter(), []
    for future in futures:
        for variant, (table, own) in ray.get(future).items():
            frames += [tidy(pd.DataFrame(table), suite=METAICL), tidy(pd.DataFrame(own), suite=LM_ICL)]
            echo(f"eval [{variant}]: done ({time.perf_counter() - started:.0f}s)")
    return pd.concat(frames, ignore_index=True)


def measure_variants(jobs: list[tuple], threads: int | None = None) -> dict[str, tuple]:
    """measure_variant of each job (its arguments), one after another in this process: variant -> its rows."""
    from metaicl.eval.evaluate import measure_variant

    return {args[0]: measure_variant(*args, threads=threads) for args in jobs}


def evaluate_run(cfg: ExperimentConfig, out: Path, steps: list[Step], echo, cpus: float | None = None) -> None:
    """MetaICL's table of the run's models, after the training curves of the steps it trained (stage `pretrain`
    or `metatrain/<variant>`), as results.parquet and report.md."""
    scored = tidy(evaluate(cfg, read_inputs(cfg), model_dirs(cfg, steps), echo, cpus, out), run=out.name, arm="main",
                  stage="eval")
    curves = [training_rows(pd.read_parquet(s.where / DONE_FILE), out.name, "main",
                            "pretrain" if s.stage == "pretrain" else f"metatrain/{s.spec.arm}", s.spec.train.seed)
              for s in steps if s.spec is not None]
    results = pd.concat([*curves, scored], ignore_index=True)
    write_parquet(out / "results.parquet", pa.Table.from_pandas(results, preserve_index=False))
    write_lm_report(out, cfg.name, results)
