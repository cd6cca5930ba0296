"""LMExperimentConfig: a language-model experiment — pretrain on a mixture, MetaICL meta-train, evaluate ICL.

    cfg, _ = load_config(LMExperimentConfig, "configs/metaicl_synthetic.yaml", ["metatrain.steps=100"])
    run_dir(cfg)                      # runs/metaicl_synthetic-<8 hex of the resolved-config hash>

Stages (each skipped when its output exists): data (the `pretrain:` mixture; synthetic task families) ->
pretrain (LM on the mixture; skipped without `pretrain:`, then the base model is `lm.name_or_path`) -> metatrain
(one model per meta-trained variant the methods need) -> eval (results.parquet: method, task, k, seed, scoring,
metric, value) -> report. A config is an LM experiment when it has an `lm:` group (`is_lm_config`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, List, Optional

from metaicl.core.config import to_dict
from metaicl.core.errors import ConfigError, check_at_least
from metaicl.core.hashing import config_hash
from metaicl.core.ray_local import ClusterConfig
from metaicl.data.episodes import EpisodeConfig
from metaicl.data.tasks import SEEDS
from metaicl.eval.methods import METHODS
from metaicl.experiment import _NAME, PATH_KEYS, ExperimentConfig
from metaicl.models.lm import LMConfig
from metaicl.train.config import TrainConfig
from pretrain_data.mixture_config import MixtureConfig
from pretrain_data.task_families import TaskFamiliesConfig

NON_SEMANTIC = ("name", "out_dir", "runs_root", "data_root", "cluster", "eval.batch_size", "eval.fast",
                *(f"{group}.{key}" for group in ("train", "metatrain") for key in
                  ("num_workers", "grad_accum", "cpus_per_worker", "use_gpu", "gpus_per_worker", "log_every",
                   "ckpt_every", "max_failures")))
"""Left out of the run hash: where things go, resources, logging. `lm.name_or_path` stays in: another starting model
is another experiment."""


@dataclass
class TasksConfig:
    path: Optional[str] = None
    """A task collection: our layout (<task>/<task>_{train,test}.jsonl, e.g. data/icl) or MetaICL's
    (<task>/<task>_<k>_<seed>_{train,test}.jsonl)."""
    meta_train: List[str] = field(default_factory=list)
    """Meta-training tasks of `path` (MetaICL's settings are such lists: HR -> LR, Class -> Class, non-NLI -> NLI)."""
    eval: List[str] = field(default_factory=list)
    """Target tasks of `path`, never meta-trained on."""
    synthetic: Optional[TaskFamiliesConfig] = None
    """Task families generated in the mixture's synthetic language (instead of `path`); split by family."""
    source: str = "zipf"
    """Synthetic tasks: the `pretrain:` source whose token ids make the tasks' words."""

    def validate(self, prefix: str = "tasks") -> None:
        if (self.path is None) == (self.synthetic is None):
            raise ConfigError(f"{prefix}.path", "give exactly one of tasks.path (a collection) and tasks.synthetic")
        if self.synthetic is not None:
            self.synthetic.validate(f"{prefix}.synthetic")
            return
        if not self.eval:
            raise ConfigError(f"{prefix}.eval", "name the target tasks to evaluate")
        shared = sorted(set(self.meta_train) & set(self.eval))
        if shared:
            raise ConfigError(f"{prefix}.meta_train", f"tasks both meta-trained on and evaluated: {shared}")


@dataclass
class MetaTrainConfig(TrainConfig):
    """Meta-training (MetaICL): the training knobs, plus k."""
    k: int = 16
    """Demonstrations per meta-training episode (MetaICL: k = 16, as at test time)."""


@dataclass
class FinetuneConfig:
    steps: int = 50
    """Optimiser steps on the target task's k examples (MetaICL's Fine-tune baseline)."""
    lr: float = 1e-3
    """AdamW learning rate."""

    def validate(self, prefix: str = "finetune") -> None:
        check_at_least(self, prefix, ("steps",), 1)
        if self.lr <= 0:
            raise ConfigError(f"{prefix}.lr", f"must be > 0, got {self.lr}")


@dataclass
class ICLEvalConfig:
    methods: List[str] = field(default_factory=lambda: list(METHODS))
    """Rows of the table (Min et al. 2022, Table 3): zero_shot, pmi_zero_shot, channel_zero_shot, in_context,
    pmi_in_context, channel_in_context, multitask_zero_shot, metaicl, channel_metaicl, finetune, finetune_metatrain."""
    k: List[int] = field(default_factory=lambda: [16])
    """Demonstrations (k-shot sweep); fine-tuning uses the same k examples. 0-shot rows have k = 0."""
    seeds: List[int] = field(default_factory=lambda: list(SEEDS))
    """Demonstration seeds (MetaICL: 100, 13, 21, 42, 87), reported as mean and worst."""
    null_input: str = ""
    """The content-free input of PMI calibration (Zhao et al. 2021 use "N/A")."""
    max_test_examples: int = 0
    """Test examples per task (0 = all)."""
    batch_size: int = 64
    """Option rows per forward pass."""
    fast: bool = True
    """Score with the shared demonstrations' KV cache (same scores as full sequences, faster)."""

    def validate(self, prefix: str = "eval") -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ConfigError(f"{prefix}.methods", f"unknown {unknown} (known: {', '.join(METHODS)})")
        if not self.k or any(k < 1 for k in self.k):
            raise ConfigError(f"{prefix}.k", f"must be a non-empty list of k >= 1, got {self.k}")
        if not self.seeds:
            raise ConfigError(f"{prefix}.seeds", "give at least one seed")
        check_at_least(self, prefix, ("max_test_examples",), 0)
        check_at_least(self, prefix, ("batch_size",), 1)


@dataclass
class LMExperimentConfig:
    PATH_KEYS: ClassVar[dict] = {**PATH_KEYS, "tasks.path": "always", "lm.name_or_path": "if_exists",
                                 "lm.tokenizer": "if_exists"}
    name: str = "lm_experiment"
    """Experiment name; the run directory is runs_root/<name>-<hash8>."""
    out_dir: Optional[str] = None
    """Run directory to use instead of runs_root/<name>-<hash8>."""
    runs_root: str = "runs"
    data_root: str = "runs/data"
    """Parent of data directories (mixtures, synthetic task collections), shared across runs."""
    pretrain: Optional[MixtureConfig] = None
    """Token mixture the LM is pretrained on (configs/data/*.yaml); none = start from lm.name_or_path."""
    lm: LMConfig = field(default_factory=LMConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    """Pretraining (language modelling on the mixture's stream)."""
    tasks: TasksConfig = field(default_factory=TasksConfig)
    episodes: EpisodeConfig = field(default_factory=EpisodeConfig)
    """How demonstrations and the query are laid out (separators, length limits, truncation). `episodes.method` is
    set by each method (direct or channel), not here."""
    metatrain: MetaTrainConfig = field(default_factory=MetaTrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    eval: ICLEvalConfig = field(default_factory=ICLEvalConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def validate(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError("name", f"must be letters, digits, '_', '-' or '.', got {self.name!r}")
        for group in ("pretrain", "lm", "train", "tasks", "episodes", "metatrain", "finetune", "eval", "cluster"):
            if getattr(self, group) is not None:
                getattr(self, group).validate(group)
        if self.pretrain is None and self.lm.name_or_path is None:
            raise ConfigError("lm.name_or_path", "without `pretrain:` data the model must come from lm.name_or_path")
        if self.tasks.synthetic is not None and self.pretrain is None:
            raise ConfigError("tasks.synthetic", "synthetic tasks are written in a mixture's language: add `pretrain:`")
        if self.tasks.synthetic is not None and self.tasks.source not in self.pretrain.sources:
            raise ConfigError("tasks.source", f"no source {self.tasks.source!r} in pretrain.sources "
                                              f"(known: {', '.join(self.pretrain.sources)})")
        if self.pretrain is not None and self.pretrain.context_length > self.lm.context_length:
            raise ConfigError("lm.context_length", f"{self.lm.context_length} positions < pretrain.context_length="
                                                   f"{self.pretrain.context_length}")
        if self.episodes.max_length > self.lm.context_length:
            raise ConfigError("episodes.max_length", f"{self.episodes.max_length} > lm.context_length="
                                                     f"{self.lm.context_length}")

    # the interface `metaicl data build` shares with ExperimentConfig: one arm
    def arm_names(self) -> list[str]:
        return ["main"]

    def arm(self, name: str) -> "LMExperimentConfig":
        return self


def load_experiment(path, overrides=(), base=None):
    """(config, resolved) of either kind: an LM experiment when the YAML has an `lm:` group (or an `lm.` override),
    else the spine's ExperimentConfig. `base`: resolve relative paths against it (see load_config)."""
    from omegaconf import OmegaConf

    from metaicl.core.config import load_config

    try:
        tree = OmegaConf.to_container(OmegaConf.load(path)) if path else {}
    except Exception:  # a missing or malformed file: load_config says what and where
        tree = {}
    is_lm = (isinstance(tree, dict) and "lm" in tree) or any(o.startswith("lm.") for o in overrides)
    return load_config(LMExperimentConfig if is_lm else ExperimentConfig, path, overrides, base)


def run_hash(cfg: LMExperimentConfig) -> str:
    return config_hash(to_dict(cfg), exclude=NON_SEMANTIC)


def run_dir(cfg: LMExperimentConfig) -> Path:
    return Path(cfg.out_dir) if cfg.out_dir else Path(cfg.runs_root) / f"{cfg.name}-{run_hash(cfg)[:8]}"
