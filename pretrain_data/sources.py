"""Registry of token sources and the transforms applied to their documents.

    docs = generate(source_cfg, seed=0, name="zipf", shard=3, batch=0)     # Docs: token arrays, groups, ids
    docs = apply_transforms(docs, source_cfg.transforms, vocab, seed=0, key=("zipf", 3, 0), prefix="...")

Synthetic sources are unlimited: every (shard, batch) is a fresh, independent draw keyed by content. `text` is a
finite corpus, prepared once (pretrain_data/text.py) and repeated up to `max_epochs` times (pretrain_data/mixture.py).
Token ids here are the source's own (0..V-1); the mixture shifts them into its shared vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from metaicl.core.errors import ConfigError
from metaicl.core.seeding import derived_seed, rng_for
from pretrain_data import function_class, ginc, reweight, transforms
from pretrain_data.bursty import class_table, sample_train
from pretrain_data.config import BurstyDataConfig
from pretrain_data.zipf_lm import sample_docs as zipf_docs


@dataclass
class Docs:
    tokens: list[np.ndarray]
    """Each document's token ids (int32, the source's own vocabulary)."""
    groups: np.ndarray
    """(n,) int32 latent group of each document: GINC concept, few-shot query class; -1 where there is none."""
    ids: np.ndarray
    """(n,) int64 document id, unique within the source (repeats of a document keep its id)."""

    def take(self, index: np.ndarray) -> "Docs":
        return Docs([self.tokens[i] for i in index], self.groups[index], self.ids[index])


def bursty_vocab(cfg: BurstyDataConfig) -> int:
    """Classes, labels, and with `separators` the input and example separators (the last two ids)."""
    return cfg.num_classes + cfg.num_novel_classes + cfg.num_labels + 2 * cfg.separators


def bursty_separators(cfg: BurstyDataConfig) -> tuple[int, int] | None:
    """(input separator, example separator) in the source's own ids, or None."""
    return (bursty_vocab(cfg) - 2, bursty_vocab(cfg) - 1) if cfg.separators else None


def _bursty_tokens(cfg: BurstyDataConfig, rng: np.random.Generator, n: int):
    """The spine's few-shot sequences as tokens: class ids, then each label as num_classes_total + label
    (Chan et al. 2022's sequences with symbols for items): c_1 l_1 ... c_N l_N c_q l_q; with separators
    c_1 S l_1 E ... c_q S l_q E, an episode's layout."""
    classes, labels, _ = sample_train(cfg, class_table(cfg), rng, n)
    total = cfg.num_classes + cfg.num_novel_classes
    parts = [classes, labels + total]
    if cfg.separators:
        sep, end = bursty_separators(cfg)
        parts = [classes, np.full_like(classes, sep), labels + total, np.full_like(classes, end)]
    seq = np.stack(parts, axis=2).reshape(n, -1).astype(np.int32)
    return seq, classes[:, -1]


# kind -> (vocabulary size of its config, sampler(cfg, rng, n) -> (docs array or list, groups or None))
GENERATORS: dict[str, tuple[Callable, Callable]] = {
    "zipf_lm": (lambda c: c.vocab_size, lambda c, rng, n: (zipf_docs(c, rng, n), None)),
    "ginc": (ginc.vocab_size, ginc.sample_docs),
    "bursty_fewshot": (bursty_vocab, _bursty_tokens),
}


def prompt_table(source, seed: int, name: str, shard: int, rows: int) -> "pa.Table":
    """A shard of a function-class source: `rows` prompts, one function each, keyed by (seed, name, shard); the
    linear families also keep each prompt's w ("ws", for Garg et al.'s curriculum on the dimension)."""
    import pyarrow as pa

    cfg = source.function_class
    xs, ys, ws = function_class.sample_functions(cfg, rng_for(seed, "mixture", name, shard), rows)
    columns = {"xs": (xs, cfg.n_points * cfg.n_dims), "ys": (ys, cfg.n_points)}
    if ws is not None:
        columns["ws"] = (ws, cfg.n_dims)
    return pa.table({k: pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), width)
                     for k, (v, width) in columns.items()})


def source_vocab(source) -> int:
    """Token types of a source (0 for real-valued function-class prompts)."""
    return 0 if source.kind == "function_class" else GENERATORS[source.kind][0](source.generator())


def generate(source, seed: int, name: str, shard: int, batch: int) -> Docs:
    """`docs_per_batch` documents of a synthetic source, a pure function of (seed, name, shard, batch)."""
    n = source.docs_per_batch
    docs, groups = GENERATORS[source.kind][1](source.generator(), rng_for(seed, "mixture", name, shard, batch), n)
    first = (shard << 32) + batch * n
    return Docs([np.asarray(d, np.int32) for d in docs],
                np.full(n, -1, np.int32) if groups is None else np.asarray(groups, np.int32),
                np.arange(first, first + n, dtype=np.int64))


def apply_transforms(docs: Docs, steps, vocab: int, seed: int, key: tuple, prefix: str) -> Docs:
    """Apply `steps` (TransformConfig) in order; randomness keyed by (seed, key, step index)."""
    for i, step in enumerate(steps):
        if len(docs.tokens) < 2:
            break
        rng = rng_for(seed, "transform", *key, i)
        if step.name == "dedup":
            index = transforms.dedup_keep(docs.tokens, step.threshold, n=step.ngram,
                                          seed=derived_seed(seed, "minhash", *key, i))
        elif step.name == "random_order":
            index = rng.permutation(len(docs.tokens))
        elif step.name == "dependency_order":
            index = transforms.dependency_order(transforms.embed(docs.tokens, step.embed_dim), step.k)
        else:
            try:
                if step.name == "zipf_reweight":
                    index, _ = reweight.zipf_reweight(docs.tokens, step.target, rng, vocab)
                else:
                    index, _ = reweight.tail_enrich(docs.tokens, step.target, rng, vocab, step.cutoff)
            except ValueError as err:
                raise ConfigError(f"{prefix}.transforms.{i}.target", str(err)) from None
        docs = docs.take(np.asarray(index))
    return docs
