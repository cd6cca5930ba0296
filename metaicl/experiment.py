"""ExperimentConfig: every knob of an experiment in one tree; the groups it has say which stages run.

    cfg, _ = load_config(ExperimentConfig, "configs/quickstart.yaml", ["train.steps=300"])
    run_dir(cfg)                      # runs/quickstart-<8 hex of the resolved-config hash>
    [cfg.arm(a) for a in cfg.arm_names()]

Two kinds of experiment, one schema: `model:` + `data:` train the in-context classifier on bursty few-shot
sequences (the spine: Chan et al. 2022, Reddy 2023); `lm:` trains a causal language model — pretrained on the
`pretrain:` mixture (or loaded from `lm.name_or_path`), MetaICL meta-trained on `tasks` (`metatrain:`), evaluated by
the methods of MetaICL's table (`eval:`). A config with neither (only `data:` or `pretrain:`) describes data
alone (`metaicl data build`). An absent group is a stage that does not run; a combination that cannot run is one
ConfigError saying what is missing.

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
from metaicl.data.episodes import LOSS_ON, EpisodeConfig
from metaicl.eval.config import EvalConfig
from metaicl.models.config import ModelConfig
from metaicl.models.adapters import ADAPTERS
from metaicl.models.lm import LMConfig
from metaicl.train.config import TaskCurriculumConfig, TrainConfig
from pretrain_data.config import BurstyDataConfig
from pretrain_data.mixture_config import CONTINUOUS, MixtureConfig
from pretrain_data.task_families import TaskFamiliesConfig

ARM_GROUPS = ("data", "pretrain", "model", "train", "eval")
GROUPS = ("data", "pretrain", "model", "lm", "tasks", "episodes", "train", "metatrain", "finetune", "eval", "cluster",
          "sweep")
RESOURCE_KEYS = ("num_workers", "grad_accum", "cpus_per_worker", "use_gpu", "gpus_per_worker", "log_every",
                 "ckpt_every", "max_failures", "compile")
NON_SEMANTIC = ("name", "out_dir", "runs_root", "data_root", "cluster", "sweep", "eval.batch_size", "eval.fast",
                "eval.use_gpu", "eval.gpus_per_worker", "eval.cpus_per_worker", "lm.attn_implementation",
                *(f"{group}.{key}" for group in ("train", "metatrain") for key in RESOURCE_KEYS))
"""Knobs left out of the run hash: where things go, how many resources they use and how fast evaluation runs (or
attention is computed), not what is computed. `lm.name_or_path` stays in: another starting model is another
experiment."""
TEXT_PATHS = {f"{where}pretrain.sources.*.text.{key}": "if_exists" for where in ("", "arms.*.")
              for key in ("path", "tokenizer")}
"""A text source's corpus and tokenizer directory (either may also be a hub name or `bpe`)."""
PATH_KEYS = {"runs_root": "always", "data_root": "always", "out_dir": "always", "tasks.path": "always",
             "lm.name_or_path": "if_exists", "lm.tokenizer": "if_exists", **TEXT_PATHS}
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
    """Each trial runs once per seed, every seed of the experiment set to it (classifier: data.seed and
    train.seed; language model: pretrain.seed, train.seed, metatrain.seed); empty = the config's seeds."""
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

    def trials(self, seed_keys: tuple[str, ...] = ("data.seed", "train.seed")) -> list[dict[str, Any]]:
        """Every trial's overrides (dotted key -> value), in a fixed order: grid points, points, then seeds."""
        keys = list(self.grid)
        base = [dict(zip(keys, combo)) for combo in itertools.product(*(self.grid[k] for k in keys))] if keys else []
        base += [dict(p) for p in self.points]
        if not self.seeds:
            return base
        return [{**b, **{key: s for key in seed_keys}} for b in base for s in self.seeds]


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
    separators: Optional[str] = None
    """Synthetic tasks: the `pretrain:` bursty_fewshot source (with `separators: true`) whose reserved ids the
    episodes' "\\t" (input separator) and "\\n" (example separator) become: ids pretraining saw in that role
    (issue 15). Set episodes.input_sep / example_sep to "\\t" / "\\n" to use them. None: "\\n" is the document
    boundary (id 0) and a space separates nothing."""

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
    loss_on: str = "query"
    """query: the loss on the query's answer alone (MetaICL, Min et al. 2022); all_outputs: on every
    demonstration's answer too (Garg et al. 2022; Kirsch et al. 2022): k + 1 supervised answers per episode."""
    shuffle_labels: bool = False
    """Every episode maps the task's label words to its classes by a fresh random permutation (one for its
    demonstrations and query), so the mapping can be read from the demonstrations only: meta-training cannot
    memorise a task's input -> word (Kirsch et al. 2022 make tasks by such permutations). For synthetic tasks, whose
    words are arbitrary per task anyway; on real tasks it removes what the label words mean."""
    fresh_tasks: bool = False
    """Synthetic tasks: every episode is a new task of a meta-training family (its own label words, keys and
    filler law, drawn from the same rules as the collection's), not one of its tasks_per_family: a model cannot
    memorise an unbounded task set, only learn to read demonstrations (the task-diversity lever of Kirsch et al.
    2022 and Raventos et al. 2023). Measured in issue 15: with 600-800 tasks the meta-trained model memorised them."""

    task_curriculum: TaskCurriculumConfig = field(default_factory=TaskCurriculumConfig)
    """With fresh_tasks: the first `task_curriculum.steps` steps on fresh tasks of `input_length`-token inputs and
    `num_classes` classes, then the collection's shape."""

    def validate(self, prefix: str = "metatrain") -> None:
        super().validate(prefix)
        self.task_curriculum.validate(f"{prefix}.task_curriculum")
        if self.task_curriculum.steps >= self.steps > 0:
            raise ConfigError(f"{prefix}.task_curriculum.steps", f"{self.task_curriculum.steps} >= metatrain.steps="
                                                                 f"{self.steps}: no step left for the tasks themselves")
        if self.loss_on not in LOSS_ON:
            raise ConfigError(f"{prefix}.loss_on", f"must be one of {list(LOSS_ON)}, got {self.loss_on!r}")


@dataclass
class FinetuneConfig:
    steps: int = 50
    """Optimiser steps on the target task's k examples (MetaICL's Fine-tune baseline)."""
    lr: float = 1e-3
    """AdamW learning rate."""
    method: str = "full"
    """full (every weight, MetaICL) | lora | ia3 (a `peft` adapter alone trains) | prompt_tuning (virtual tokens
    alone train, Lester et al. 2021); metaicl/models/adapters.py."""
    rank: int = 8
    """method=lora: the rank of the low-rank updates (alpha = 2 x rank)."""
    virtual_tokens: int = 8
    """method=prompt_tuning: trained input embeddings in front of every sequence (peft's num_virtual_tokens)."""
    save_adapters: bool = False
    """method lora / ia3 / prompt_tuning: keep every trained adapter in peft's format (adapter_config.json +
    adapter_model.safetensors; `PeftModel.from_pretrained(base, dir)` loads it) under the run's
    adapters/<method>/<task>/k<k>-seed<seed>/."""

    def validate(self, prefix: str = "finetune") -> None:
        check_at_least(self, prefix, ("steps", "rank", "virtual_tokens"), 1)
        if self.method not in ADAPTERS:
            raise ConfigError(f"{prefix}.method", f"must be one of {list(ADAPTERS)}, got {self.method!r}")
        if self.lr <= 0:
            raise ConfigError(f"{prefix}.lr", f"must be > 0, got {self.lr}")
        if self.save_adapters and self.method == "full":
            raise ConfigError(f"{prefix}.save_adapters", "method full trains every weight: there is no adapter to "
                                                         "save (lora, ia3 or prompt_tuning)")


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
    """Parent of data directories (<kind or name>-<data hash8>), shared by every run and arm with the same data."""
    data: Optional[BurstyDataConfig] = None
    """Few-shot sequences the in-context classifier trains on (the spine experiment)."""
    pretrain: Optional[MixtureConfig] = None
    """Token-level pretraining mixture of a language model (configs/data/*.yaml); `metaicl data build` builds it."""
    model: Optional[ModelConfig] = None
    """The in-context classifier (a transformer over item/label sequences); trains on `data:`."""
    lm: Optional[LMConfig] = None
    """A causal language model; pretrains on `pretrain:` (or starts from lm.name_or_path)."""
    tasks: Optional[TasksConfig] = None
    """Language model: the meta-training and target tasks (a collection on disk, or synthetic families)."""
    episodes: EpisodeConfig = field(default_factory=EpisodeConfig)
    """Language model: how demonstrations and the query are laid out (separators, length limits, truncation).
    `episodes.method` is set by each method (direct or channel), not here."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Training of the classifier, or pretraining of the language model (language modelling on the mixture)."""
    metatrain: MetaTrainConfig = field(default_factory=MetaTrainConfig)
    """Language model: MetaICL meta-training of each variant the evaluated methods need."""
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    """Language model: the Fine-tune baselines."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    sweep: Optional[SweepConfig] = None
    """Grid of trials for `metaicl sweep` (ignored by `metaicl run`; not part of the run hash)."""
    arms: Dict[str, Any] = field(default_factory=dict)
    """Arm name -> overrides of the groups data/pretrain/model/train/eval. No arms: one arm called `main`."""

    def validate(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError("name", f"must be letters, digits, '_', '-' or '.', got {self.name!r}")
        for key in ("out_dir", "runs_root", "data_root"):  # written into: a file there is a mistake, said up front
            where = getattr(self, key)
            if where is not None and Path(where).exists() and not Path(where).is_dir():
                raise ConfigError(key, f"{where} is a file, not a directory")
        for group in GROUPS:
            if getattr(self, group) is not None:
                getattr(self, group).validate(group)
        if self.lm is not None and self.model is not None:
            raise ConfigError("model", "a config trains the in-context classifier (`model:`) or a language model "
                                       "(`lm:`), not both")
        if self.metatrain.curriculum is not None or (self.lm is None and self.train.curriculum is not None):
            key = "metatrain.curriculum" if self.metatrain.curriculum is not None else "train.curriculum"
            raise ConfigError(key, "the curriculum on prompt length is for pretraining on function-class prompts")
        for key, weight in (("metatrain", self.metatrain.underdetermined_weight),
                            ("train", self.train.underdetermined_weight if not self.regression else 1.0)):
            if weight != 1.0:
                raise ConfigError(f"{key}.underdetermined_weight", "weights the squared error of function-class "
                                                                    "prompts: pretraining on a function_class mixture only")
        if self.data is not None and self.data.separators:
            raise ConfigError("data.separators", "the classifier reads item vectors, not tokens: separators are a "
                                                 "token-mixture knob (pretrain.sources.<s>.bursty_fewshot.separators)")
        if self.lm is not None:
            self._validate_lm()
        elif self.tasks is not None:
            raise ConfigError("tasks", "tasks are meta-trained on and evaluated by a language model: add an `lm:` group")
        for arm in self.arms:
            self.arm(arm)

    def _validate_lm(self) -> None:
        if self.arms:
            raise ConfigError("arms", "a language-model experiment has one arm: sweep over its keys instead "
                                      "(`sweep.grid`, e.g. pretrain.sources.<s>.weight)")
        if self.pretrain is None and self.lm.name_or_path is None:
            raise ConfigError("lm.name_or_path", "without `pretrain:` data the model must come from lm.name_or_path")
        if self.regression:
            self._validate_regression()
            return
        if self.train.curriculum is not None:
            raise ConfigError("train.curriculum", "the curriculum on prompt length is for function-class prompts "
                                                  "(a `pretrain:` mixture of function_class sources)")
        if not self.eval.methods and not self.eval.lm_icl:
            raise ConfigError("eval.methods", "nothing to evaluate: name methods, or keep eval.lm_icl")
        if self.tasks is None and self.eval.methods:
            raise ConfigError("tasks", "MetaICL's methods are evaluated on tasks: add tasks.path (a collection) or "
                                       "tasks.synthetic")
        synthetic = self.tasks is not None and self.tasks.synthetic is not None
        if self.metatrain.fresh_tasks and not synthetic:
            raise ConfigError("metatrain.fresh_tasks", "new tasks are made from a synthetic collection's rules "
                                                       "(tasks.synthetic); a collection of files has only its tasks")
        if self.metatrain.task_curriculum.steps:
            self._validate_task_curriculum()
        if synthetic and self.pretrain is None:
            raise ConfigError("tasks.synthetic", "synthetic tasks are written in a mixture's language: add `pretrain:`")
        if synthetic and self.tasks.source not in self.pretrain.sources:
            raise ConfigError("tasks.source", f"no source {self.tasks.source!r} in pretrain.sources "
                                              f"(known: {', '.join(self.pretrain.sources)})")
        if self.tasks is not None and self.tasks.separators is not None:
            source = self.pretrain.sources.get(self.tasks.separators) if synthetic else None
            if source is None or source.kind != "bursty_fewshot" or not source.bursty_fewshot.separators:
                raise ConfigError("tasks.separators", f"{self.tasks.separators!r} must name a pretrain source of kind "
                                                      f"bursty_fewshot with bursty_fewshot.separators: true "
                                                      f"(synthetic tasks only)")
        if synthetic:
            self._validate_synthetic_separators()
        if self.pretrain is not None and self.pretrain.context_length > self.lm.context_length:
            raise ConfigError("lm.context_length", f"{self.lm.context_length} positions < pretrain.context_length="
                                                   f"{self.pretrain.context_length}")
        if self.episodes.max_length > self.lm.context_length:
            raise ConfigError("episodes.max_length", f"{self.episodes.max_length} > lm.context_length="
                                                     f"{self.lm.context_length}")
        if self.eval.demos.labels == "none" and {"finetune", "finetune_metatrain"} & set(self.eval.methods):
            raise ConfigError("eval.demos.labels", "none leaves fine-tuning nothing to learn from: drop the finetune "
                                                   "methods or choose another label mode")
        if self.eval.icl_vs_finetune and self.finetune.method == "prompt_tuning":
            raise ConfigError("eval.icl_vs_finetune", "Dai et al.'s comparison reads the fine-tuned weights' attention "
                                                      "over the query; prompt tuning changes no weight and adds "
                                                      "virtual tokens to attend to (finetune.method full, lora or ia3)")
        if synthetic and self.eval.demos.labels == "abstract":
            raise ConfigError("eval.demos.labels", "abstract symbols are for real tasks: a synthetic task's label "
                                                   "words are arbitrary per task already (abstract by construction)")
        pretrained_here = self.pretrain is not None and self.lm.name_or_path is None
        if pretrained_here and self.eval.methods and self.episodes.max_length > self.pretrain.context_length:
            # Episodes would reach positions that pretraining never gave a gradient (issue 15): meta-training
            # and evaluation would read untrained position embeddings.
            raise ConfigError("episodes.max_length", f"{self.episodes.max_length} positions, but pretraining trains "
                                                     f"only the first pretrain.context_length="
                                                     f"{self.pretrain.context_length}: lower episodes.max_length or "
                                                     f"raise pretrain.context_length")

    @property
    def regression(self) -> bool:
        """A model of real-valued prompts: pretrained on a function-class mixture (Garg et al. 2022)."""
        return self.lm is not None and self.pretrain is not None and any(
            s.kind in CONTINUOUS for s in self.pretrain.sources.values())

    def _validate_synthetic_separators(self) -> None:
        """Synthetic tasks are read by the ids tokenizer (metaicl.data.tokenizer.IdTokenizer): whitespace splits
        ids, "\n" is the example separator's id and "\t" the input separator's (with tasks.separators); any other
        character in a separator would fail only when the first episode is built. The usual slip: a shell turns
        episodes.input_sep="\t" into the two characters backslash and t."""
        for key in ("input_sep", "example_sep"):
            value = getattr(self.episodes, key)
            if not all(ch.isspace() for ch in value):
                hint = (" (in a shell, quote the whole override: 'episodes.input_sep=\"\\t\"')" if "\\" in value
                        else "")
                raise ConfigError(f"episodes.{key}", f"{value!r}: a synthetic task's separators are whitespace "
                                                     f"(\"\\n\" the example separator's id, \"\\t\" the input "
                                                     f"separator's with tasks.separators, others no token){hint}")

    def _validate_task_curriculum(self) -> None:
        from pretrain_data.task_families import FAMILIES

        key, tc = "metatrain.task_curriculum", self.metatrain.task_curriculum
        if not self.metatrain.fresh_tasks:
            raise ConfigError(f"{key}.steps", "the simpler tasks are made fresh: set metatrain.fresh_tasks (synthetic "
                                              "task collections)")
        families = self.tasks.synthetic.meta_train_families
        if not any(FAMILIES[f].min_length <= tc.input_length for f in families):
            raise ConfigError(f"{key}.input_length", f"no meta-training family ({', '.join(families)}) can be written "
                                                     f"in {tc.input_length} token(s)")
        if tc.num_classes > self.tasks.synthetic.num_classes:
            raise ConfigError(f"{key}.num_classes", f"{tc.num_classes} > tasks.synthetic.num_classes="
                                                    f"{self.tasks.synthetic.num_classes}: a curriculum starts simpler")

    def _validate_regression(self) -> None:
        """Garg et al.'s model reads (x, y) pairs, not tokens: no tasks, no MetaICL methods; its prompts fit."""
        if self.lm.name_or_path is not None:
            raise ConfigError("lm.name_or_path", "a model of function-class prompts is pretrained here; it does not "
                                                 "start from a language model")
        if self.tasks is not None:
            raise ConfigError("tasks", "a model of function-class prompts is measured by the regression suite "
                                       "(eval.regression), not on tasks: remove `tasks:`")
        if self.eval.methods:
            raise ConfigError("eval.methods", "MetaICL's methods score text options; a model of function-class "
                                              "prompts is measured by eval.regression: set eval.methods: []")
        if 2 * self.pretrain.context_length > self.lm.context_length:
            raise ConfigError("lm.context_length", f"{self.lm.context_length} positions < 2 x pretrain.context_length="
                                                   f"{self.pretrain.context_length} (an x and a y per pair)")
        if self.train.curriculum is not None and self.train.curriculum.dims_start is not None:
            from pretrain_data.function_class import LINEAR

            others = sorted(n for n, s in self.pretrain.sources.items() if s.function_class.family not in LINEAR)
            if others:  # y in fewer dimensions is w . x[:d']: the prompt must carry its w
                raise ConfigError("train.curriculum.dims_start", f"the curriculum on the dimension needs linear "
                                                                 f"functions; source(s) {', '.join(others)} are not")

    @property
    def data_spec(self):
        """The data this config trains on: its token mixture (`pretrain:`), else its few-shot data (`data:`), else
        None."""
        return self.pretrain if self.pretrain is not None else self.data

    @property
    def kind(self) -> str:
        """`lm` (a language model), `classifier` (the spine) or `data` (nothing to train)."""
        return "lm" if self.lm is not None else "classifier" if self.model is not None else "data"

    def seed_keys(self) -> tuple[str, ...]:
        """Every seed the experiment has (a sweep's `seeds` set them all)."""
        if self.kind == "lm":
            return (*(("pretrain.seed",) if self.pretrain is not None else ()), "train.seed", "metatrain.seed")
        return ("data.seed", "train.seed")

    def check_trainable(self) -> None:
        """What `metaicl run` and `metaicl sweep` need beyond a valid config: something to train, on its data."""
        if self.kind == "lm":
            return
        if any(self.arm(name).pretrain is not None for name in self.arm_names()):
            raise ConfigError("pretrain", "a `pretrain:` mixture trains a language model: add an `lm:` group (see "
                                          "configs/metaicl_synthetic.yaml), or build the data with `metaicl data build`")
        if self.kind == "data":
            raise ConfigError("model", "nothing to train: add `model:` (the in-context classifier, with `data:`) or "
                                       "`lm:` (a language model)")
        if any(self.arm(name).data is None for name in self.arm_names()):
            raise ConfigError("data", "the in-context classifier trains on few-shot sequences: add a `data:` group")

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
    """Hash of what the run computes: every key but NON_SEMANTIC; absent groups and the groups of the other kind
    of experiment (e.g. `metatrain` in a classifier run) do not count."""
    tree = {k: v for k, v in to_dict(cfg).items() if v is not None}
    return config_hash(tree, exclude=NON_SEMANTIC + OTHER_KIND[cfg.kind])


_LM_ONLY = ("episodes", "metatrain", "finetune", "eval.methods", "eval.k", "eval.seeds", "eval.null_input",
            "eval.max_test_examples", "eval.lm_icl", "eval.regression", "eval.icl_vs_finetune", "eval.use_gpu",
            "eval.gpus_per_worker", "eval.cpus_per_worker", "eval.demos")
OTHER_KIND = {"lm": ("eval.sets",), "classifier": _LM_ONLY + ("data.separators",),
              "data": _LM_ONLY + ("eval.sets", "data.separators")}
"""Keys a kind of experiment never reads: their defaults stay out of its run hash."""


def run_dir(cfg: ExperimentConfig) -> Path:
    return Path(cfg.out_dir) if cfg.out_dir else Path(cfg.runs_root) / f"{cfg.name}-{run_hash(cfg)[:8]}"
