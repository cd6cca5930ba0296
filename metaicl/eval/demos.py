"""What the demonstrations' labels say (`eval.demos.labels`): the knob behind "do the labels even matter?".

    demos = with_labels(sample_demos(task, 16, seed=100), task, "random", seed=100)   # labels drawn at random
    task = abstract_task(task, symbols)                                               # options become symbols

  gold      the task's labels (MetaICL's protocol).
  random    each demonstration's label drawn uniformly from its options (Min et al. 2022, "Rethinking the Role of
            Demonstrations": accuracy drops only a little for large models — they use the label space and format
            more than the input-label mapping).
  permuted  the k labels shuffled among the k demonstrations: the label multiset is kept, the mapping is broken.
  abstract  every option replaced by a semantically unrelated symbol (`eval.demos.symbols`, by its position in
            the options), in the demonstrations, the queries' options and the answers alike (Wei et al. 2023,
            "Larger language models do in-context learning differently": SUL-ICL, the mapping must be learnt
            from the demonstrations). Real tasks only: synthetic tasks' words are arbitrary per task already.
  none      inputs only, no labels and no input separator (Min et al. 2022's "no demos labels" control).
Every draw is keyed by (seed, task, k): the same demonstration set and labels for every method and query.
"""
from __future__ import annotations

import dataclasses
import string
from dataclasses import dataclass, field
from typing import List

from metaicl.core.errors import ConfigError, check_at_least
from metaicl.core.seeding import rng_for
from metaicl.data.tasks import Example, Task
from metaicl.eval.embed import EMBEDDERS
from metaicl.eval.select import EMBEDDED, ORDERS, SELECTIONS, SHARED, SIMILAR

LABEL_MODES = ("gold", "random", "permuted", "abstract", "none")


@dataclass
class DemosConfig:
    selection: str = "random"
    """Which k training examples each query sees: random (one set per seed, MetaICL) | balanced (one set per seed,
    every label as evenly as the pool allows) | bm25 | knn (the scoring model's mean hidden state) | mmr | dpp
    (relevant and diverse, on the same embeddings; metaicl/eval/select.py)."""
    embedder: str = "lm"
    """What the embeddings of knn, mmr and dpp are: lm (the scoring model's mean final hidden state; per model) |
    minilm (all-MiniLM-L6-v2 sentence embeddings, Liu et al. 2022's kind of retriever: shipped on PyPI, computed
    once per task collection by Ray tasks and cached; metaicl/eval/embed.py)."""
    mmr_lambda: float = 0.5
    """selection=mmr: relevance against diversity (1 = knn, 0 = diversity alone)."""
    order: str = "random"
    """Their order: random | similar_last (the most similar next to the query) | similar_first | entropy (Lu et al.
    2022's GlobalE order of a shared set, probed on unlabeled pool inputs)."""
    orders: int = 24
    """order=entropy: candidate orders tried (all k! when k! <= orders; Lu et al. use 24)."""
    probes: int = 16
    """order=entropy: probing inputs, unlabeled, from the training pool."""
    permutations: int = 1
    """Orders of each shared set scored (Lu et al. 2022: accuracy varies widely across orders of the same
    demonstrations): > 1 scores the drawn order and permutations - 1 random others (keyed by seed, task, k) and adds
    the rows `order_spread` (best minus worst order's accuracy) and `order_sd` per (method, task, k, seed); the
    accuracy rows stay the drawn order's. Shared selections (random, balanced) with order random only."""
    labels: str = "gold"
    """The demonstrations' labels: gold | random | permuted | abstract | none (metaicl/eval/demos.py; Min et al.
    2022 "Rethinking the Role of Demonstrations", Wei et al. 2023)."""
    symbols: List[str] = field(default_factory=lambda: list(string.ascii_uppercase))
    """labels=abstract: the symbols that replace a task's options, by position (the i-th option -> symbols[i])."""

    @property
    def cached_embeddings(self) -> bool:
        """The selection reads sentence embeddings that a pipeline step computes first (embedder minilm)."""
        return self.embedder == "minilm" and self.selection in EMBEDDED

    @property
    def per_query(self) -> bool:
        """Each query has demonstrations of its own (retrieved, or ordered by its similarity)."""
        return self.selection not in SHARED or self.order in SIMILAR

    def validate(self, prefix: str = "eval.demos") -> None:
        for key, known in (("selection", SELECTIONS), ("order", ORDERS)):
            if getattr(self, key) not in known:
                raise ConfigError(f"{prefix}.{key}", f"must be one of {list(known)}, got {getattr(self, key)!r}")
        if self.order == "entropy" and self.selection not in SHARED:
            raise ConfigError(f"{prefix}.order", f"entropy orders one shared set (selection {' or '.join(SHARED)}); "
                                                 f"{self.selection} gives each query its own")
        check_at_least(self, prefix, ("orders", "probes", "permutations"), 1)
        if self.permutations > 1 and (self.selection not in SHARED or self.order != "random"):
            raise ConfigError(f"{prefix}.permutations", f"permutes one shared set in random orders (selection "
                                                        f"{' or '.join(SHARED)}, order random); got selection "
                                                        f"{self.selection}, order {self.order}")
        if self.embedder not in EMBEDDERS:
            raise ConfigError(f"{prefix}.embedder", f"must be one of {list(EMBEDDERS)}, got {self.embedder!r}")
        if not 0.0 <= self.mmr_lambda <= 1.0:
            raise ConfigError(f"{prefix}.mmr_lambda", f"must be in [0, 1], got {self.mmr_lambda}")
        if self.labels not in LABEL_MODES:
            raise ConfigError(f"{prefix}.labels", f"must be one of {list(LABEL_MODES)}, got {self.labels!r}")
        if len(set(self.symbols)) != len(self.symbols) or not all(s.strip() for s in self.symbols):
            raise ConfigError(f"{prefix}.symbols", "must be distinct, non-blank strings")


def with_labels(demos: list[Example], task: Task, mode: str, seed: int) -> list[Example]:
    """The demonstrations with the labels `mode` says (abstract: see abstract_task; it relabels the whole task)."""
    if mode in ("gold", "abstract"):
        return list(demos)
    if mode == "none":
        return [dataclasses.replace(d, output="") for d in demos]
    rng = rng_for(seed, "demo-labels", task.name, len(demos))
    if mode == "permuted":
        outputs = [demos[int(i)].output for i in rng.permutation(len(demos))]
    elif mode == "random":
        outputs = [(d.options or task.options)[int(rng.integers(len(d.options or task.options)))] for d in demos]
    else:
        raise ValueError(f"unknown label mode {mode!r}")
    return [dataclasses.replace(d, output=o) for d, o in zip(demos, outputs)]


def abstract_task(task: Task, symbols: list[str]) -> Task:
    """The task with each option replaced by the symbol of its position, in every example and in the options."""
    def relabel(e: Example) -> Example:
        options = e.options or task.options
        if len(options) > len(symbols):
            raise ConfigError("eval.demos.symbols", f"{len(symbols)} symbols for the {len(options)} options of task "
                                                    f"{task.name!r}")
        word = dict(zip(options, symbols))
        return dataclasses.replace(e, output=word.get(e.output, e.output), options=[word[o] for o in e.options])

    fixed = {key: [relabel(e) for e in demos] for key, demos in task.fixed_demos.items()}
    return dataclasses.replace(task, train=[relabel(e) for e in task.train], test=[relabel(e) for e in task.test],
                               options=symbols[:len(task.options)], fixed_demos=fixed)
