"""Bursty, Zipfian few-shot sequences: Chan et al. 2022 ("Data distributional properties drive emergent
in-context learning in transformers") in the minimal form of Reddy 2023 ("The mechanistic basis of data dependence
and abrupt learning in an in-context classification task").

    cfg = BurstyDataConfig()
    table = class_table(cfg)
    classes, labels, bursty = sample_train(cfg, table, rng_for(cfg.seed, "train", 0), n=1000)
    items = materialise(table.means, classes, cfg.within_class_noise, rng_for(cfg.seed, "noise", 0))

A sequence is N context (item, label) pairs and a query item: x_1 l_1 ... x_N l_N x_q, and the target is l_q.
Rows store the symbolic sequence (class and label ids, N+1 each, the last being the query); items are drawn from
the class means by `materialise`, a pure function of the class table and a seed. Storing ids, not vectors, keeps
the default training set at a few MB instead of ~450 MB (196,608 x 9 x 63 float32) with the same determinism.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metaicl.core.seeding import rng_for
from pretrain_data.config import BurstyDataConfig

EVAL_SETS = ("icl_novel", "icl_swap", "iwl")
SPLITS = ("train", *EVAL_SETS)


@dataclass(frozen=True)
class ClassTable:
    means: np.ndarray
    """(K + num_novel_classes, D) float32 class means mu_k ~ N(0, I/D); rows K.. are the novel classes."""
    labels: np.ndarray
    """(K,) int32 fixed label of each training class (Reddy 2023: each class assigned one of L labels at random)."""
    probs: np.ndarray
    """(K,) Zipfian class distribution p(k) proportional to (k+1)^-alpha; class id = frequency rank - 1."""


def zipf_probs(num_classes: int, alpha: float) -> np.ndarray:
    weights = np.arange(1, num_classes + 1, dtype=np.float64) ** -alpha
    return weights / weights.sum()


def class_table(cfg: BurstyDataConfig) -> ClassTable:
    rng = rng_for(cfg.seed, "classes")
    total = cfg.num_classes + cfg.num_novel_classes
    means = (rng.standard_normal((total, cfg.item_dim)) / np.sqrt(cfg.item_dim)).astype(np.float32)
    labels = rng.integers(cfg.num_labels, size=cfg.num_classes).astype(np.int32)
    return ClassTable(means, labels, zipf_probs(cfg.num_classes, cfg.zipf_alpha))


def _zipf(table: ClassTable, rng: np.random.Generator, shape) -> np.ndarray:
    return rng.choice(len(table.probs), size=shape, p=table.probs).astype(np.int32)


def _redraw(draw, rng: np.random.Generator, n: int, width: int, bad) -> np.ndarray:
    """(n, width) rows of `draw(rng, shape)` for which `bad(rows, row_index)` is false: rejection sampling that redraws
    only the failing rows, so accepted rows keep the sampler's law conditioned on the constraint."""
    out = draw(rng, (n, width))
    todo = np.arange(n)
    while todo.size:
        todo = todo[bad(out[todo], todo)]
        out[todo] = draw(rng, (todo.size, width))
    return out


def _repeats(rows: np.ndarray, _index=None) -> np.ndarray:
    srt = np.sort(rows, axis=1)
    return (srt[:, 1:] == srt[:, :-1]).any(axis=1)


def _distinct(draw, rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    """(n, width) rows with no value repeated inside a row."""
    return _redraw(draw, rng, n, width, _repeats)


def _burst_context(groups: np.ndarray, copies: int, rng: np.random.Generator) -> np.ndarray:
    """Each of the m classes in a row repeated `copies` times, in a random order per row."""
    ctx = np.repeat(groups, copies, axis=1)
    order = rng.random(ctx.shape).argsort(axis=1, kind="stable")
    return np.take_along_axis(ctx, order, axis=1)


def sample_train(cfg: BurstyDataConfig, table: ClassTable, rng: np.random.Generator, n: int):
    """Training rows -> (classes (n, N+1), labels (n, N+1), bursty (n,)). A bursty row draws N/B distinct
    classes from the Zipfian law, repeats each B times and queries one of them; an iid row draws all N context
    classes and the query independently from the same law (Chan et al. 2022 Sec. 3)."""
    n_ctx, b = cfg.context_pairs, cfg.burstiness
    bursty = (rng.random(n) < cfg.p_bursty) if b > 0 else np.zeros(n, bool)
    classes = np.empty((n, n_ctx + 1), np.int32)
    iid = ~bursty
    classes[iid] = _zipf(table, rng, (int(iid.sum()), n_ctx + 1))
    nb = int(bursty.sum())
    if nb:
        groups = _distinct(lambda r, s: _zipf(table, r, s), rng, nb, n_ctx // b)
        classes[bursty, :n_ctx] = _burst_context(groups, b, rng)
        classes[bursty, n_ctx] = groups[np.arange(nb), rng.integers(groups.shape[1], size=nb)]
    return classes, table.labels[classes], bursty


def sample_eval(cfg: BurstyDataConfig, table: ClassTable, split: str, rng: np.random.Generator, n: int):
    """Evaluation rows -> (classes, labels). Independent of burstiness and p_bursty, so every arm of an
    experiment is measured on the same sequences.

    - icl_novel: 2 held-out classes, N/2 items each, labels drawn at random per sequence: only ICL can answer.
    - icl_swap: 2 training classes whose (distinct) training labels are swapped within the sequence: ICL answers
      the in-context label, IWL answers the memorised one (Chan et al. 2022 Sec. 3.3).
    - iwl: a Zipfian training query whose class is absent from its iid Zipfian context: only IWL can answer.
    """
    n_ctx, k = cfg.context_pairs, cfg.num_classes
    if split == "iwl":
        ctx = _zipf(table, rng, (n, n_ctx))
        query = _redraw(lambda r, s: _zipf(table, r, s), rng, n, 1, lambda q, i: (ctx[i] == q).any(axis=1))
        classes = np.concatenate([ctx, query], axis=1)
        return classes, table.labels[classes]
    pick = rng.integers(2, size=n)
    if split == "icl_novel":
        pair = k + _distinct(lambda r, s: r.integers(cfg.num_novel_classes, size=s).astype(np.int32), rng, n, 2)
        pair_labels = _distinct(lambda r, s: r.integers(cfg.num_labels, size=s).astype(np.int32), rng, n, 2)
    elif split == "icl_swap":
        pair = _redraw(lambda r, s: _zipf(table, r, s), rng, n, 2,
                       lambda rows, _: table.labels[rows[:, 0]] == table.labels[rows[:, 1]])  # implies same class
        pair_labels = table.labels[pair[:, ::-1]]
    else:
        raise ValueError(f"unknown eval split {split!r}")
    ctx = _burst_context(np.arange(2)[None].repeat(n, 0), n_ctx // 2, rng)  # which of the pair, per position
    slots = np.concatenate([ctx, pick[:, None]], axis=1)
    rows = np.arange(n)[:, None]
    return pair[rows, slots].astype(np.int32), pair_labels[rows, slots].astype(np.int32)


def sample_split(cfg: BurstyDataConfig, table: ClassTable, split: str, rng: np.random.Generator, n: int):
    """(classes, labels, bursty) for any split; eval rows count as non-bursty."""
    if split == "train":
        return sample_train(cfg, table, rng, n)
    classes, labels = sample_eval(cfg, table, split, rng, n)
    return classes, labels, np.zeros(n, bool)


def materialise(means: np.ndarray, classes: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Items (n, N+1, D) float32: x = (mu_class + eps * eta) / sqrt(1 + eps^2), eta ~ N(0, I/D) (Reddy 2023 Eq. 1)."""
    d = means.shape[1]
    eta = rng.standard_normal((*classes.shape, d), dtype=np.float32) / np.float32(np.sqrt(d))
    return (means[classes] + np.float32(noise) * eta) / np.float32(np.sqrt(1 + noise**2))
