"""ExperimentConfig: every knob of an experiment in one tree (data, model, train, eval, cluster, arms).

    cfg, _ = load_config(ExperimentConfig, "configs/quickstart.yaml", ["train.steps=300"])
    run_dir(cfg)                      # runs/quickstart-<8 hex of the resolved-config hash>
    [cfg.arm(a) for a in cfg.arm_names()]

Arms are named variants of the base config: `arms: {bursty: {data: {burstiness: 4}}}` overrides only what differs,
so the model and the budget are identical across arms by construction.
"""
from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from metaicl.core.config import as_config_error, merge_checked, to_dict
from metaicl.core.errors import ConfigError, check_at_least
from metaicl.core.hashing import config_hash
from metaicl.core.ray_local import ClusterConfig
from metaicl.eval.icl import EvalConfig
from metaicl.models.config import ModelConfig
from metaicl.train.config import TrainConfig
from pretrain_data.config import BurstyDataConfig
from pretrain_data.mixture_config import MixtureConfig

ARM_GROUPS = ("data", "pretrain", "model", "train", "eval")
NON_SEMANTIC = ("name", "out_dir", "runs_root", "data_root", "cluster", "sweep", "train.num_workers", "train.grad_accum",
                "train.cpus_per_worker", "train.use_gpu", "train.gpus_per_worker", "train.log_every",
                "train.ckpt_every", "train.max_failures", "eval.batch_size")
"""Knobs left out of the run hash: where things go and how many resources they use, not what is computed."""
TEXT_PATHS = {f"{where}pretrain.sources.*.text.{key}": "if_exists" for where in ("", "arms.*.")
              for key in ("path", "tokenizer")}
"""A text source's corpus and tokenizer directory (either may also be a hub name or `bpe`)."""
PATH_KEYS = {"runs_root": "always", "data_root": "always", "out_dir": "always", **TEXT_PATHS}
"""Paths made absolute against the directory `metaicl` runs from (metaicl.core.config.resolve_paths)."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class SweepConfig:
    """`metaicl sweep`: trials = every grid point (and every listed point), each run once per seed."""
    grid: Dict[str, Any] = field(default_factory=dict)
    """Dotted key -> list of values; the trials are their cartesian product (e.g. data.burstiness: [0, 2, 4])."""
    points: List[Any] = field(default_factory=list)
    """Explicit trials, each a mapping of dotted key -> value, added after the grid's."""
    seeds: List[int] = field(default_factory=list)
    """Each trial runs once per seed, with data.seed = train.seed = seed; empty = the config's seeds."""
    max_concurrent_trials: int = 2
    """Trials Ray Tune runs at once (each trial's arms hold their own Ray Train workers)."""
    tracking: List[str] = field(default_factory=list)
    """Ray Tune logger callbacks for every trial's final accuracies: `tensorboard` (needs tensorboardX) and/or
    `mlflow` (needs mlflow; MLFLOW_TRACKING_URI says where). Off by default: aggregate.parquet has it all."""

    def validate(self, prefix: str = "sweep") -> None:
        if not self.grid and not self.points:
            raise ConfigError(f"{prefix}.grid", "a sweep needs a grid or points")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{prefix}.grid.{key}", f"must be a non-empty list of values, got {values!r}")
        for i, point in enumerate(self.points):
            if not isinstance(point, dict) or not point:
                raise ConfigError(f"{prefix}.points.{i}", f"must be a mapping of key: value, got {point!r}")
        check_at_least(self, prefix, ("max_concurrent_trials",), 1)
        for i, name in enumerate(self.tracking):
            if name not in ("tensorboard", "mlflow"):
                raise ConfigError(f"{prefix}.tracking.{i}", f"unknown tracker {name!r} (known: tensorboard, mlflow)")

    def trials(self) -> list[dict[str, Any]]:
        """Every trial's overrides (dotted key -> value), in a fixed order: grid points, points, then seeds."""
        keys = list(self.grid)
        base = [dict(zip(keys, combo)) for combo in itertools.product(*(self.grid[k] for k in keys))] if keys else []
        base += [dict(p) for p in self.points]
        if not self.seeds:
            return base
        return [{**b, "data.seed": s, "train.seed": s} for b in base for s in self.seeds]


@dataclass
class ExperimentConfig:
    PATH_KEYS: ClassVar[dict] = PATH_KEYS
    name: str = "experiment"
    """Experiment name; the run directory is runs_root/<name>-<hash8>."""
    out_dir: Optional[str] = None
    """Run directory to use instead of runs_root/<name>-<hash8>."""
    runs_root: str = "runs"
    """Parent of run directories."""
    data_root: str = "runs/data"
    """Parent of data directories (<kind>-<data hash8>), shared by every run and arm with the same data config."""
    data: BurstyDataConfig = field(default_factory=BurstyDataConfig)
    """Few-shot sequences the in-context classifier trains on (the spine experiment)."""
    pretrain: Optional[MixtureConfig] = None
    """Token-level pretraining mixture (configs/data/*.yaml); built by `metaicl data build`."""
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    sweep: Optional[SweepConfig] = None
    """Grid of trials for `metaicl sweep` (ignored by `metaicl run`; not part of the run hash)."""
    arms: Dict[str, Any] = field(default_factory=dict)
    """Arm name -> overrides of the groups data/pretrain/model/train/eval. No arms: one arm called `main`."""

    def validate(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError("name", f"must be letters, digits, '_', '-' or '.', got {self.name!r}")
        for group in ("data", "pretrain", "model", "train", "eval", "cluster", "sweep"):
            if getattr(self, group) is not None:
                getattr(self, group).validate(group)
        for arm in self.arms:
            self.arm(arm)

    def arm_names(self) -> list[str]:
        return list(self.arms) or ["main"]

    def arm(self, name: str) -> "ExperimentConfig":
        """The base config with arm `name`'s overrides applied (validated; errors name arms.<name>.<key>)."""
        if name == "main" and not self.arms:
            return self
        prefix = f"arms.{name}."
        if not _NAME.match(name):
            raise ConfigError(f"arms.{name}", "arm names must be letters, digits, '_', '-' or '.'")
        overrides = self.arms[name]
        if not isinstance(overrides, dict):
            raise ConfigError(f"arms.{name}", f"must be a mapping of overrides, got {overrides!r}")
        for key in overrides:
            if key not in ARM_GROUPS:
                raise ConfigError(f"{prefix}{key}", f"arms may only override {', '.join(ARM_GROUPS)}")
        base = OmegaConf.structured(dataclasses.replace(self, arms={}))
        merged = merge_checked(base, overrides, None, prefix=prefix)  # located by load_config
        try:
            arm_cfg = OmegaConf.to_object(merged)
        except OmegaConfBaseException as err:
            raise as_config_error(err, prefix) from None
        for group in ARM_GROUPS:
            try:
                if getattr(arm_cfg, group) is not None:
                    getattr(arm_cfg, group).validate(group)
            except ConfigError as err:
                raise ConfigError(prefix + err.key, err.message) from None
        return arm_cfg


def run_hash(cfg: ExperimentConfig) -> str:
    tree = to_dict(cfg)
    if tree["pretrain"] is None:  # runs made before the group existed keep their directory
        del tree["pretrain"]
    tree.pop("sweep")
    return config_hash(tree, exclude=NON_SEMANTIC)


def run_dir(cfg: ExperimentConfig) -> Path:
    return Path(cfg.out_dir) if cfg.out_dir else Path(cfg.runs_root) / f"{cfg.name}-{run_hash(cfg)[:8]}"
