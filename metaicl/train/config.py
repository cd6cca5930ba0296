"""Training knobs (optimiser, schedule, budget, resources)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from metaicl.core.errors import ConfigError, check_at_least

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class TaskCurriculumConfig:
    """Meta-training's first steps on simpler fresh tasks (a curriculum, Bengio et al. 2009; Garg et al. 2022 grow
    their prompts the same way). With one-token inputs and two classes the input *is* the key, every family's rule
    is the same copy — the demonstration whose input is the query's gives its label — and a tiny model learns it
    where it does not learn the collection's tasks from the start (issue 15: docs/probes/family_copy.py, README)."""
    steps: int = 0
    """Meta-training steps on the simpler tasks, from step 0; 0 = none."""
    input_length: int = 1
    """Tokens per input of those tasks (the meta-training families that can be written that short make them)."""
    num_classes: int = 2
    """Classes (options) of those tasks."""

    def validate(self, prefix: str = "metatrain.task_curriculum") -> None:
        check_at_least(self, prefix, ("steps",), 0)
        check_at_least(self, prefix, ("input_length",), 1)
        check_at_least(self, prefix, ("num_classes",), 2)


@dataclass
class CurriculumConfig:
    """Garg et al. 2022's curriculum (their Sec. 3): training starts on `points_start` (x, y) pairs of each prompt
    in `dims_start` dimensions and, every `every` steps, adds `points_inc` pairs and `dims_inc` dimensions, up to the
    whole prompt. A prompt in fewer dimensions has the trailing coordinates of x set to 0 and y = f of what is left
    (Garg et al.'s truncation; the linear families store each prompt's w for it). Measured here (d = 5): the
    dimension curriculum is what shortens the plateau; short prompts alone did not."""
    points_start: Optional[int] = None
    """(x, y) pairs per prompt at step 0; None = whole prompts from the start."""
    points_inc: int = 2
    """Pairs added at each increase."""
    dims_start: Optional[int] = None
    """Input dimensions at step 0 (Garg et al.: 5 of d = 20); None = all d from the start."""
    dims_inc: int = 1
    """Dimensions added at each increase."""
    every: int = 200
    """Steps between increases."""

    def points(self, step: int, n_points: int) -> int:
        return self._grown(self.points_start, self.points_inc, step, n_points)

    def dims(self, step: int, n_dims: int) -> int:
        return self._grown(self.dims_start, self.dims_inc, step, n_dims)

    def _grown(self, start: Optional[int], inc: int, step: int, whole: int) -> int:
        return whole if start is None else min(whole, start + inc * (step // self.every))

    def validate(self, prefix: str = "train.curriculum") -> None:
        check_at_least(self, prefix, ("points_inc", "dims_inc", "every"), 1)
        check_at_least(self, prefix, tuple(k for k in ("points_start", "dims_start") if getattr(self, k) is not None),
                       1)
        if self.points_start is None and self.dims_start is None:
            raise ConfigError(f"{prefix}.points_start", "a curriculum grows the prompt (points_start) or its "
                                                        "dimension (dims_start): set one")


@dataclass
class TrainConfig:
    steps: int = 1500
    """Optimiser steps (the training budget; identical across arms)."""
    batch_size: int = 128
    """Global batch size in sequences, split evenly over `num_workers`."""
    lr: float = 3e-3
    """Peak AdamW learning rate. 3e-3 reaches the ICL transition ~4x sooner than 1e-3 (Reddy-style model);
    warm-up, clipping and the cosine decay keep it from diverging late."""
    warmup_steps: int = 100
    """Linear warm-up steps."""
    min_lr_ratio: float = 0.1
    """Cosine decay ends at lr x min_lr_ratio."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Max global gradient norm; 0 turns clipping off."""
    eval_every: int = 100
    """Measure every eval set every this many steps (and at step 0 and the last step)."""
    ckpt_every: int = 500
    """Checkpoint every this many steps (and at the last step); a restarted run resumes from the latest."""
    log_every: int = 25
    """Progress update every this many steps."""
    seed: int = 0
    """train_seed: model initialisation (data order is fixed by the data, not by this seed)."""
    num_workers: int = 1
    """Ray Train data-parallel workers (DDP)."""
    grad_accum: int = 1
    """Gradient accumulation: each worker's share of a global batch runs as this many micro-batches (same maths,
    less memory; not part of the run hash)."""
    cpus_per_worker: Optional[float] = None
    """CPUs reserved by each worker; its torch threads are the whole CPUs among them (at least one). None (the
    default): the stages that train together (a run's arms, its meta-trained variants; a sweep trial's stages,
    within the trial's share of the cluster) share the CPUs the cluster has free when they start, evenly per
    worker: whole CPUs, at most the largest node's, or an equal fraction of the CPUs when the workers outnumber
    them. On 2 cores a language model that pretrains alone runs on both (issue 20)."""
    use_gpu: bool = False
    """Train on GPUs (`gpus_per_worker` each); NCCL between workers, bf16 autocast with precision `auto`."""
    gpus_per_worker: float = 1.0
    """GPUs reserved by each worker when use_gpu; a fraction (0.25) packs several small-model workers or arms
    onto one GPU."""
    precision: str = "auto"
    """`auto` = bf16 autocast on GPU, fp32 on CPU; or force `fp32` / `bf16`."""
    compile: Optional[bool] = None
    """torch.compile the model for training (TorchInductor kernels; its optimizer step stays eager). None (the
    default): on GPUs only. true without use_gpu is refused: on CPU, at these sizes, compiling costs more than it
    saves (measured 2026-12-01, issue 17's probes). Not part of the run hash."""
    max_failures: int = 2
    """Worker failures Ray Train retries; each retry resumes from the latest checkpoint."""
    curriculum: Optional[CurriculumConfig] = None
    """Pretraining on function-class prompts: Garg et al.'s curriculum on prompt length (None: whole prompts)."""
    underdetermined_weight: float = 1.0
    """Pretraining on function-class prompts: the loss's weight on predictions made from fewer examples than the
    prompt's dimension (k < d, where even least squares errs by (d - k) / d: an error no model can remove, whose
    noise dominates the gradient once the rest is learnt), the weights rescaled to mean 1. 1 = Garg et al.'s
    uniform loss over prefixes; the held-out loss stays uniform."""

    def validate(self, prefix: str = "train") -> None:
        check_at_least(self, prefix, ("steps", "batch_size", "eval_every", "ckpt_every", "log_every", "num_workers",
                                      "grad_accum"), 1)
        if self.cpus_per_worker is not None and self.cpus_per_worker <= 0:
            raise ConfigError(f"{prefix}.cpus_per_worker", f"must be > 0, got {self.cpus_per_worker}")
        check_at_least(self, prefix, ("warmup_steps", "weight_decay", "grad_clip", "max_failures", "seed"), 0)
        if self.lr <= 0:
            raise ConfigError(f"{prefix}.lr", f"must be > 0, got {self.lr}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"{prefix}.min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        if self.batch_size % (self.num_workers * self.grad_accum):
            raise ConfigError(f"{prefix}.num_workers", f"{self.num_workers} workers x {self.grad_accum} micro-batches "
                                                       f"(grad_accum) do not divide {prefix}.batch_size={self.batch_size}")
        if self.use_gpu and not 0 < self.gpus_per_worker <= 8:
            raise ConfigError(f"{prefix}.gpus_per_worker", f"must be in (0, 8], got {self.gpus_per_worker}")
        if self.curriculum is not None:
            self.curriculum.validate(f"{prefix}.curriculum")
        if self.underdetermined_weight < 0:
            raise ConfigError(f"{prefix}.underdetermined_weight", f"must be >= 0, got {self.underdetermined_weight}")
        if self.compile and not self.use_gpu:
            raise ConfigError(f"{prefix}.compile", "torch.compile is for GPU stages here (set use_gpu=true): on CPU "
                                                   "it compiles for longer than it saves at these model sizes")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"{prefix}.precision", f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
