"""Synthetic task families in the pretraining language: meta-training tasks and held-out evaluation tasks (MetaICL).

    cfg = TaskFamiliesConfig(meta_train_families=["first_token", "keyword"], eval_families=["last_token"])
    info = build_task_families(cfg, token_range_of(Manifest.read("runs/data/zipf12-1a2b3c4d"), "zipf"), "runs/tasks")
    info["splits"]["eval"]    # ["last_token_000", ...]; each is runs/tasks/<task>/<task>_{train,test}.jsonl

MetaICL (Min et al. 2022, Sec. 4.1) meta-trains on tasks of some types and evaluates in-context learning on tasks
of types never seen in meta-training (e.g. non-NLI -> NLI). Here a *family* is a type: a rule saying how an input
encodes its class. A task is a random instance of a family: `num_classes` classes, each with its own label word and
key tokens, all token ids of one mixture source (text = whitespace-separated ids). Label words are drawn afresh per
task, so nothing learned before the prompt says which word answers which input: 0-shot accuracy is at chance by
construction and only the demonstrations reveal the mapping, which is what makes these tasks measure ICL.

Layout of `out_dir` (written whole or not at all, byte-identical for the same config and token range):
  <task>/<task>_train.jsonl   the demonstration pool: {"task", "input", "output", "options"} per line
  <task>/<task>_test.jsonl    the queries, same format; classes balanced (counts differ by at most one)
  families.json               {"config", "token_range", "families": {family: [task]}, "splits": {...},
                               "leakage": {held-out task: {meta-training family: share its rule answers}},
                               "tokenizer": what reads the text (metaicl.data.tokenizer.TokenizerSpec)}
"""
from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from metaicl.core.errors import ConfigError, check_at_least
from metaicl.core.io import atomic_dir, write_json, write_text
from metaicl.core.seeding import rng_for
from pretrain_data.bursty import zipf_probs

FAMILIES: dict[str, Callable] = {}
"""Family name -> sampler(task, classes, rng, length) -> (n, length) token ids; its docstring's first line is
the rule."""
READERS: dict[str, Callable] = {}
"""Family name -> reader(task, inputs) -> (n,) the class its rule gives each input, -1 where the rule gives none
(no key where it looks, no majority): the rule applied to any task's inputs, for measuring leakage."""


def family(name: str, min_length: int = 1):
    """Register a family's sampler under `name`; `min_length` is the shortest input its rule can be written in."""
    def register(fn: Callable) -> Callable:
        fn.min_length = min_length
        FAMILIES[name] = fn
        return fn
    return register


def reader(name: str):
    """Register the reader of family `name`'s rule."""
    def register(fn: Callable) -> Callable:
        READERS[name] = fn
        return fn
    return register


def rule_of(name: str) -> str:
    """The family's rule in one line (its sampler's docstring)."""
    return FAMILIES[name].__doc__.strip().splitlines()[0]


@dataclass
class TaskFamiliesConfig:
    meta_train_families: list[str] = field(default_factory=lambda: ["first_token", "keyword", "majority"])
    """Meta-training task types (MetaICL's C_meta-train): their tasks train the model to learn in context."""
    eval_families: list[str] = field(default_factory=lambda: ["last_token"])
    """Held-out target task types (MetaICL's unseen target tasks): never seen in meta-training."""
    tasks_per_family: int = 16
    """Meta-training tasks per family (distinct label words and key tokens each)."""
    eval_tasks_per_family: int = 4
    """Target tasks per held-out family."""
    num_classes: int = 3
    """Options per task (MetaICL's candidate set C): one label word per class."""
    keys_per_class: int = 2
    """Key tokens per class (the majority family's pool size)."""
    input_length: int = 5
    """Tokens per input x."""
    train_examples: int = 64
    """Training pool per task, from which the k demonstrations are drawn (MetaICL uses k = 16)."""
    test_examples: int = 64
    """Test queries per task."""
    label_words: int = 0
    """Label words come from the first `label_words` ids of the range, shared by every task (a small answer
    vocabulary, like the spine's L labels or the real tasks' common label words); which word answers which class
    is still random per task. In a zipf_lm source the first ids are the most frequent words: the LM knows them
    well enough to copy them from the context (with the rarest ids instead, a tiny LM's in-context accuracy fell
    to chance), at the price of a prior that favours one of them (label bias, Zhao et al. 2021; PMI removes it).
    0 = label words anywhere in the range."""
    filler_alpha: float = 1.0
    """Zipf exponent of the filler tokens over a random permutation of the token range (1.0 = Zipf's law)."""
    seed: int = 0
    """data_seed of the tasks: task t of family f derives from (seed, f, t) alone."""

    def validate(self, prefix: str = "tasks.synthetic", token_range: tuple[int, int] | None = None) -> None:
        self._validate_families(prefix)
        check_at_least(self, prefix, ("tasks_per_family", "eval_tasks_per_family", "keys_per_class", "seed"), 0)
        check_at_least(self, prefix, ("eval_tasks_per_family", "keys_per_class"), 1)
        if self.meta_train_families:
            check_at_least(self, prefix, ("tasks_per_family",), 1)
        check_at_least(self, prefix, ("num_classes",), 2)
        check_at_least(self, prefix, ("train_examples", "test_examples"), self.num_classes)
        shortest = max(FAMILIES[f].min_length for f in self.meta_train_families + self.eval_families)
        check_at_least(self, prefix, ("input_length",), shortest)
        if self.filler_alpha < 0:
            raise ConfigError(f"{prefix}.filler_alpha", f"must be >= 0, got {self.filler_alpha}")
        if token_range is not None:
            self._validate_range(prefix, token_range)

    def _validate_families(self, prefix: str) -> None:
        for key in ("meta_train_families", "eval_families"):
            names = getattr(self, key)
            unknown = [f for f in names if f not in FAMILIES]
            if unknown:
                raise ConfigError(f"{prefix}.{key}", f"unknown famil{'y' if len(unknown) == 1 else 'ies'} "
                                                     f"{', '.join(unknown)} (known: {', '.join(FAMILIES)})")
            if len(set(names)) != len(names):
                raise ConfigError(f"{prefix}.{key}", f"lists a family twice: {names}")
        if not self.eval_families:
            raise ConfigError(f"{prefix}.eval_families", "needs at least one held-out family")
        shared = [f for f in self.eval_families if f in self.meta_train_families]
        if shared:  # MetaICL's target tasks are unseen: a family in both splits would leak its rule
            raise ConfigError(f"{prefix}.eval_families", f"{', '.join(shared)} also in meta_train_families; "
                                                         "held-out families must not be meta-trained on")

    def _validate_range(self, prefix: str, token_range: tuple[int, int]) -> None:
        lo, hi = token_range
        need = self.num_classes * (self.keys_per_class + 1) + 1  # label words + key tokens + at least one filler
        if self.label_words and not self.num_classes <= self.label_words < hi - lo - self.num_classes * self.keys_per_class:
            raise ConfigError(f"{prefix}.label_words", f"must be >= num_classes={self.num_classes} and leave room "
                                                       f"for keys and filler in [{lo}, {hi})")
        if lo < 1 or hi - lo < need:
            raise ConfigError(f"{prefix}.token_range", f"[{lo}, {hi}) must start at >= 1 (0 is the document "
                                                       f"boundary) and hold >= {need} ids for num_classes="
                                                       f"{self.num_classes}, keys_per_class={self.keys_per_class}")


@dataclass
class Task:
    """One instance of a family: what the rule refers to (class c answers with labels[c] and owns keys[c])."""
    name: str
    family: str
    labels: np.ndarray
    """(C,) label word per class, in option order."""
    keys: np.ndarray
    """(C, K) key tokens per class (the majority family's pools)."""
    filler: np.ndarray
    """Filler ids: the range less keys and labels, in a random order whose rank sets the Zipf weight."""
    filler_p: np.ndarray
    """Probability of each filler id."""

    def fill(self, rng: np.random.Generator, shape) -> np.ndarray:
        return rng.choice(self.filler, size=shape, p=self.filler_p)

    def key(self, rng: np.random.Generator, classes: np.ndarray) -> np.ndarray:
        """One key token of each example's class, drawn uniformly among the class's keys."""
        return self.keys[classes, rng.integers(self.keys.shape[1], size=len(classes))]


def task_name(family_name: str, index: int) -> str:
    return f"{family_name}_{index:03d}"


def make_task(cfg: TaskFamiliesConfig, token_range: tuple[int, int], family_name: str, index: int) -> Task:
    """Task `index` of a family: label words, keys and filler law, keyed by (seed, family, index) alone."""
    lo, hi = token_range
    rng = rng_for(cfg.seed, "task_families", family_name, index)
    c, k = cfg.num_classes, cfg.keys_per_class
    if cfg.label_words:  # labels from the shared answer vocabulary; keys and filler from the rest of the range
        labels = lo + rng.choice(cfg.label_words, size=c, replace=False)
        keys = lo + cfg.label_words + rng.choice(hi - lo - cfg.label_words, size=c * k, replace=False)
        drawn = np.concatenate([labels, keys])
    else:
        drawn = lo + rng.choice(hi - lo, size=c * (k + 1), replace=False)  # distinct: no label word is also a key
    order = lo + rng.permutation(hi - lo)
    usable = np.ones(hi - lo, dtype=bool)
    usable[drawn - lo] = usable[: cfg.label_words] = False  # answer words only answer; keys are the classes'
    filler = order[usable[order - lo]]
    return Task(task_name(family_name, index), family_name, drawn[:c], drawn[c:].reshape(c, k), filler,
                zipf_weights(len(filler), cfg.filler_alpha))


@functools.lru_cache(maxsize=16)
def zipf_weights(n: int, alpha: float) -> np.ndarray:
    """bursty.zipf_probs, made once per (n, alpha) and read-only: every task of a collection shares it."""
    p = zipf_probs(n, alpha)
    p.flags.writeable = False
    return p


def balanced_classes(n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """n class indices in random order, each class n // C or n // C + 1 times."""
    return rng.permutation(np.tile(np.arange(num_classes), -(-n // num_classes))[:n])


def sample_split(cfg: TaskFamiliesConfig, task: Task, index: int, split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs (n, input_length), classes (n,)) of one split; train and test have streams of their own, so
    resizing one leaves the other's examples unchanged."""
    rng = rng_for(cfg.seed, "task_families", task.family, index, split)
    classes = balanced_classes(n, cfg.num_classes, rng)
    return FAMILIES[task.family](task, classes, rng, cfg.input_length), classes


@family("last_token")
def last_token(task: Task, classes: np.ndarray, rng: np.random.Generator, length: int) -> np.ndarray:
    """The last input token is a key token of the class; the other tokens are filler."""
    x = task.fill(rng, (len(classes), length))
    x[:, -1] = task.key(rng, classes)
    return x


@family("middle_token", min_length=3)
def middle_token(task: Task, classes: np.ndarray, rng: np.random.Generator, length: int) -> np.ndarray:
    """The middle input token (position length // 2) is a key token of the class; the other tokens are filler."""
    x = task.fill(rng, (len(classes), length))
    x[:, length // 2] = task.key(rng, classes)
    return x


@family("first_token")
def first_token(task: Task, classes: np.ndarray, rng: np.random.Generator, length: int) -> np.ndarray:
    """The first input token is a key token of the class; the other tokens are filler."""
    x = task.fill(rng, (len(classes), length))
    x[:, 0] = task.key(rng, classes)
    return x


@family("keyword")
def keyword(task: Task, classes: np.ndarray, rng: np.random.Generator, length: int) -> np.ndarray:
    """One key token of the class sits at a random position among filler."""
    x = task.fill(rng, (len(classes), length))
    x[np.arange(len(classes)), rng.integers(length, size=len(classes))] = task.key(rng, classes)
    return x


@family("majority")
def majority(task: Task, classes: np.ndarray, rng: np.random.Generator, length: int) -> np.ndarray:
    """A strict majority of the input tokens come from the class's pool, the rest from other classes' pools."""
    n, c, k = len(classes), *task.keys.shape
    own = length // 2 + 1
    other = (classes[:, None] + rng.integers(1, c, size=(n, length - own))) % c  # any class but the true one
    owner = np.concatenate([np.repeat(classes[:, None], own, axis=1), other], axis=1)
    x = task.keys[owner, rng.integers(k, size=(n, length))]
    return np.take_along_axis(x, rng.permuted(np.tile(np.arange(length), (n, 1)), axis=1), axis=1)


@family("pair", min_length=2)
def pair(task: Task, classes: np.ndarray, rng: np.random.Generator, length: int) -> np.ndarray:
    """Key tokens of two different classes sit among filler; the class is the one whose key comes first."""
    n, c = len(classes), task.keys.shape[0]
    x = task.fill(rng, (n, length))
    rival = (classes + rng.integers(1, c, size=n)) % c
    where = np.sort(rng.random((n, length)).argsort(axis=1)[:, :2], axis=1)  # two distinct positions, in order
    rows = np.arange(n)
    x[rows, where[:, 0]] = task.key(rng, classes)
    x[rows, where[:, 1]] = task.key(rng, rival)
    return x


def key_classes(task: Task, inputs: np.ndarray) -> np.ndarray:
    """(n, length) the class whose key each input token is, -1 for filler (keys are distinct across classes)."""
    owner = {int(t): c for c, row in enumerate(task.keys) for t in row}
    return np.vectorize(lambda t: owner.get(int(t), -1), otypes=[np.int64])(inputs)


@reader("last_token")
def read_last(task: Task, inputs: np.ndarray) -> np.ndarray:
    return key_classes(task, inputs)[:, -1]


@reader("middle_token")
def read_middle(task: Task, inputs: np.ndarray) -> np.ndarray:
    return key_classes(task, inputs)[:, inputs.shape[1] // 2]


@reader("first_token")
def read_first(task: Task, inputs: np.ndarray) -> np.ndarray:
    return key_classes(task, inputs)[:, 0]


@reader("keyword")
def read_keyword(task: Task, inputs: np.ndarray) -> np.ndarray:
    """The class of the key tokens where they all belong to one class; -1 without a key or with keys of several."""
    out = []
    for row in key_classes(task, inputs):
        found = set(row[row >= 0].tolist())
        out.append(found.pop() if len(found) == 1 else -1)
    return np.array(out, dtype=np.int64)


@reader("majority")
def read_majority(task: Task, inputs: np.ndarray) -> np.ndarray:
    """The class whose pool holds a strict majority of the tokens; -1 where none does."""
    counts = np.stack([(key_classes(task, inputs) == c).sum(1) for c in range(task.keys.shape[0])], axis=1)
    return np.where(counts.max(1) > inputs.shape[1] // 2, counts.argmax(1), -1)


@reader("pair")
def read_pair(task: Task, inputs: np.ndarray) -> np.ndarray:
    """The class of the first key, where keys of two different classes are there; -1 otherwise."""
    out = []
    for row in key_classes(task, inputs):
        keys = row[row >= 0]
        out.append(int(keys[0]) if len(set(keys.tolist())) >= 2 else -1)
    return np.array(out, dtype=np.int64)


def leakage(cfg: TaskFamiliesConfig, token_range: tuple[int, int]) -> dict[str, dict[str, float]]:
    """{held-out task: {meta-training family: share of the task's test queries that family's rule answers right}}.
    MetaICL's target tasks are unseen (Min et al. 2022): a meta-training rule that answers a held-out family's
    queries (keyword answers every last_token query: its key is a keyword) trains that family in meta-training.
    Near 0 is held out (a rule that gives no answer scores 0; guessing would score 1 / num_classes)."""
    out = {}
    for held_out in cfg.eval_families:
        for index in range(cfg.eval_tasks_per_family):
            task = make_task(cfg, token_range, held_out, index)
            inputs, classes = sample_split(cfg, task, index, "test", cfg.test_examples)
            out[task.name] = {f: round(float((READERS[f](task, inputs) == classes).mean()), 4)
                              for f in cfg.meta_train_families}
    return out


class Records(Sequence):
    """One {"task", "input", "output", "options"} per example (text = whitespace-separated ids), keys in this
    order, the same options on every record; record i is written when read (an episode of a fresh task reads k + 1
    of its pool), as `wrap(**record)`."""

    def __init__(self, task: Task, inputs: np.ndarray, classes: np.ndarray, wrap: Callable = dict):
        self.task, self.inputs, self.classes, self.wrap = task, inputs, classes, wrap
        self.options = [str(int(t)) for t in task.labels]

    def __len__(self) -> int:
        return len(self.classes)

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self.wrap(task=self.task.name, input=" ".join(map(str, self.inputs[i].tolist())),
                         output=self.options[int(self.classes[i])], options=self.options)


def task_records(task: Task, inputs: np.ndarray, classes: np.ndarray) -> list[dict]:
    """Every record of a split (Records), written now."""
    return list(Records(task, inputs, classes))


def task_lines(task: Task, inputs: np.ndarray, classes: np.ndarray) -> str:
    """The split's jsonl text: one line per example."""
    return "".join(json.dumps(r) + "\n" for r in task_records(task, inputs, classes))


def fresh_examples(cfg: TaskFamiliesConfig, token_range: tuple[int, int], family_name: str, index: int,
                   n: int, wrap: Callable = dict) -> Records:
    """n training examples of task `index` of a family, made on the fly (metatrain.fresh_tasks), each written as
    `wrap(**record)` when read: the collection's task of that index has the same ones."""
    task = make_task(cfg, token_range, family_name, index)
    return Records(task, *sample_split(cfg, task, index, "train", n), wrap=wrap)


def write_task(cfg: TaskFamiliesConfig, token_range: tuple[int, int], family_name: str, index: int,
               root: Path) -> str:
    task = make_task(cfg, token_range, family_name, index)
    for split, n in (("train", cfg.train_examples), ("test", cfg.test_examples)):
        inputs, classes = sample_split(cfg, task, index, split, n)
        write_text(root / task.name / f"{task.name}_{split}.jsonl", task_lines(task, inputs, classes))
    return task.name


def build_task_families(cfg: TaskFamiliesConfig, token_range: tuple[int, int], out_dir: str | Path,
                        prefix: str = "tasks.synthetic", separators: dict | None = None) -> dict:
    """Write the collection to `out_dir` (replacing an earlier collection there) and return families.json's dict.
    `separators` ({"input": id, "example": id}, a mixture source's; tasks.separators): the ids "\\t" and "\\n" of
    the episodes are read as (families.json's tokenizer says so)."""
    token_range = (int(token_range[0]), int(token_range[1]))
    cfg.validate(prefix, token_range)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / "families.json").exists():
        raise ConfigError(str(out), "exists and is not a task collection (no families.json); refusing to replace it")
    counts = {**{f: cfg.tasks_per_family for f in cfg.meta_train_families},
              **{f: cfg.eval_tasks_per_family for f in cfg.eval_families}}
    with atomic_dir(out) as tmp:
        families = {f: [write_task(cfg, token_range, f, i, tmp) for i in range(n)] for f, n in counts.items()}
        info = {"config": asdict(cfg), "token_range": list(token_range), "families": families,
                "splits": {"meta_train": [t for f in cfg.meta_train_families for t in families[f]],
                           "eval": [t for f in cfg.eval_families for t in families[f]]},
                "leakage": leakage(cfg, token_range),
                "tokenizer": {"kind": "ids", "vocab_size": token_range[1]}}  # every id of the text is below it
        if separators:
            info["tokenizer"] = {"kind": "ids", "newline_id": separators["example"], "tab_id": separators["input"],
                                 "vocab_size": max(token_range[1], separators["input"] + 1,
                                                   separators["example"] + 1)}
        write_json(tmp / "families.json", info)
    return info


def token_range_of(manifest, source: str, key: str = "tasks.synthetic.source") -> tuple[int, int]:
    """[offset, offset + vocab_size) of a mixture source's token ids, from a Manifest (or its path)."""
    from pretrain_data.manifest import Manifest

    if not isinstance(manifest, Manifest):
        manifest = Manifest.read(manifest)
    where = str(manifest.path) if manifest.path else None
    entry = manifest.sources.get(source)
    if entry is None:
        raise ConfigError(key, f"no source {source!r} in the mixture (known: {', '.join(sorted(manifest.sources))})",
                          where)
    if entry.get("vocab_size", 0) < 1:
        raise ConfigError(key, f"source {source!r} ({entry.get('kind')}) has no token vocabulary", where)
    return int(entry["offset"]), int(entry["offset"]) + int(entry["vocab_size"])

