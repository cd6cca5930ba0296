"""EvalConfig: what every evaluation suite of an experiment measures, in one group (`eval:`).

    EvalConfig(sets=["icl_novel", "iwl"])              # the in-context classifier's fixed eval sets (Chan et al.)
    EvalConfig(methods=["metaicl", "in_context"], k=[4, 8])   # rows of MetaICL's table for a language model

The classifier (`model:`) is measured on the few-shot data's eval sets during training; a language model (`lm:`) by
the methods of MetaICL's table after training. Each suite reads its own keys; `batch_size` is shared (its default
depends on the suite).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from metaicl.core.errors import ConfigError, check_at_least
from metaicl.data.tasks import SEEDS
from metaicl.eval.demos import DemosConfig
from metaicl.eval.methods import METHODS
from metaicl.eval.regression import RegressionEvalConfig
from pretrain_data.bursty import EVAL_SETS


def chance_level(eval_set: str, num_labels: int) -> float:
    """Accuracy of guessing: between the two in-context labels for the ICL sets, among all L labels for iwl."""
    return 0.5 if eval_set in ("icl_novel", "icl_swap") else 1.0 / num_labels


MAX_K = "max"
"""eval.k's many-shot entry: as many demonstrations as the context holds."""

SEQUENCES_PER_PASS = 1024
"""Default batch of the few-shot eval sets (sequences per forward pass)."""


@dataclass
class EvalConfig:
    sets: List[str] = field(default_factory=lambda: list(EVAL_SETS))
    """Classifier: which eval sets to measure (Chan et al. 2022 Sec. 3.3): icl_novel (novel classes, random labels),
    icl_swap (training classes, labels swapped), iwl (training class absent from the context)."""
    methods: List[str] = field(default_factory=lambda: list(METHODS))
    """Language model: rows of the table (Min et al. 2022, Table 3): zero_shot, pmi_zero_shot, channel_zero_shot,
    in_context, pmi_in_context, channel_in_context, multitask_zero_shot, metaicl, channel_metaicl, finetune,
    finetune_metatrain. Empty: no table, only the lm_icl suite (a language model needs no tasks then)."""
    k: List[Any] = field(default_factory=lambda: [16])
    """Language model: demonstrations (k-shot sweep); fine-tuning uses the same k examples. 0-shot rows have k = 0.
    `max` (many-shot, Agarwal et al. 2024): as many as the context holds, the same for every target task
    (metaicl.eval.evaluate.max_shots); rows carry the number it came to."""
    seeds: List[int] = field(default_factory=lambda: list(SEEDS))
    """Language model: demonstration seeds (MetaICL: 100, 13, 21, 42, 87), reported as mean and worst."""
    demos: DemosConfig = field(default_factory=DemosConfig)
    """Language model: what the demonstrations show (`labels`: gold, random, permuted, abstract, none)."""
    null_input: str = ""
    """Language model: the content-free input of PMI calibration (Zhao et al. 2021 use "N/A")."""
    max_test_examples: int = 0
    """Language model: test examples per task (0 = all)."""
    lm_icl: bool = True
    """Language model: also measure each model's in-context ability on its own (suite `lm_icl`,
    metaicl/eval/lm_icl.py: Olsson et al.'s ICL score on held-out windows of the mixture and on its order control, the
    repeated-sequence gap and copy accuracy, induction and previous-token head scores). Pretraining measures the
    same at every train.eval_every, whatever this says."""
    icl_vs_finetune: bool = False
    """Language model, with the `finetune` method: also compare in-context learning with fine-tuning on the same
    demonstrations inside the model (Dai et al. 2023's SimAOU and SimAM against their controls;
    metaicl/eval/icl_vs_ft.py), rows of method finetune."""
    fast: bool = True
    """Language model: score with the shared demonstrations' KV cache (same scores as full sequences, faster)."""
    batch_size: Optional[int] = None
    """Sequences (classifier; default 1024) or option rows (language model; default 64 with `fast`, 16 without:
    metaicl.eval.scoring) per forward pass."""
    use_gpu: bool = False
    """Language model: score on a GPU (`gpus_per_worker` per model). The classifier is measured while it trains,
    on its trainer's device."""
    gpus_per_worker: float = 1.0
    """Language model: GPUs each evaluation task (one per model scored) reserves when use_gpu."""
    regression: RegressionEvalConfig = field(default_factory=RegressionEvalConfig)
    """A model pretrained on function-class prompts (Garg et al. 2022): its regression suite
    (metaicl/eval/regression.py), measured instead of MetaICL's table and lm_icl."""
    cpus_per_worker: Optional[float] = None
    """Language model: CPUs each evaluation task reserves; its torch threads are the whole CPUs among them. None:
    the tasks share the cluster's CPUs (a sweep trial: its share), as training stages do."""

    def validate(self, prefix: str = "eval") -> None:
        unknown = [s for s in self.sets if s not in EVAL_SETS]
        if unknown or not self.sets:
            raise ConfigError(f"{prefix}.sets", f"must be a non-empty subset of {list(EVAL_SETS)}, got {self.sets}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"{prefix}.methods", f"unknown {unknown} (known: {', '.join(METHODS)})")
        if not self.k or any(k != MAX_K and (isinstance(k, bool) or not isinstance(k, int) or k < 1) for k in self.k):
            raise ConfigError(f"{prefix}.k", f"must be a non-empty list of k >= 1 or {MAX_K!r}, got {list(self.k)}")
        if not self.seeds:
            raise ConfigError(f"{prefix}.seeds", "give at least one seed")
        check_at_least(self, prefix, ("max_test_examples",), 0)
        if self.batch_size is not None:
            check_at_least(self, prefix, ("batch_size",), 1)
        self.regression.validate(f"{prefix}.regression")
        self.demos.validate(f"{prefix}.demos")
        for key in ("gpus_per_worker", "cpus_per_worker"):
            if getattr(self, key) is not None and getattr(self, key) <= 0:
                raise ConfigError(f"{prefix}.{key}", f"must be > 0, got {getattr(self, key)}")

    def sequences_per_pass(self) -> int:
        return self.batch_size or SEQUENCES_PER_PASS
