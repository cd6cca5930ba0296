"""Token-level statistics of documents: what a pretraining mixture really contains.

    rare_token_density(docs, cutoff=1024)     # share of tokens outside the 1,024 most frequent types
    doc_burstiness(docs)                      # within-document repetition / its value under independence
    long_range_info_gain(docs, window=512)    # bits/token a cache of the document saves a bigram model

`zipf_mle` (in stats.py) fits the unigram exponent. Each is checked on generated data with a known value.
"""
from __future__ import annotations

import numpy as np

from pretrain_data.stats import expected_repeat_rate, repeat_rate


def type_counts(docs: np.ndarray, vocab_size: int) -> np.ndarray:
    return np.bincount(docs.ravel(), minlength=vocab_size)


def rare_token_density(docs: np.ndarray, cutoff: int, vocab_size: int | None = None) -> float:
    """Share of tokens whose type is not among the `cutoff` most frequent types (empirical ranks)."""
    counts = np.sort(type_counts(docs, vocab_size or int(docs.max()) + 1))[::-1]
    return float(counts[cutoff:].sum() / counts.sum())


def doc_burstiness(docs: np.ndarray, vocab_size: int | None = None) -> float:
    """Within-document repeat rate divided by its expectation for independent draws from the corpus unigram:
    1 for iid text, above 1 when documents reuse their own tokens (Church & Gale 1995's burstiness)."""
    counts = type_counts(docs, vocab_size or int(docs.max()) + 1)
    return repeat_rate(docs) / expected_repeat_rate(counts / counts.sum(), docs.shape[1])


def _short_context_probs(train: np.ndarray, test: np.ndarray, vocab: int) -> np.ndarray:
    """p(next | previous token) on `test` from counts on `train`: unigram and bigram interpolated (Jelinek-Mercer),
    with the weight that fits `test` best, so that the short-context baseline is as strong as counts allow.
    Bigram counts are looked up among the distinct pairs seen in `train` (no vocab x vocab table)."""
    uni = (np.bincount(train.ravel(), minlength=vocab) + 0.5) / (train.size + 0.5 * vocab)
    seen, counts = np.unique(train[:, :-1].ravel().astype(np.int64) * vocab + train[:, 1:].ravel(), return_counts=True)
    prev, nxt = test[:, :-1], test[:, 1:]
    keys = prev.astype(np.int64) * vocab + nxt
    at = np.minimum(np.searchsorted(seen, keys), len(seen) - 1)
    pair = np.where(seen[at] == keys, counts[at], 0).astype(np.float64)
    totals = np.bincount(train[:, :-1].ravel(), minlength=vocab)[prev].astype(np.float64)
    bigram = np.divide(pair, totals, out=np.zeros(prev.shape), where=totals > 0)
    candidates = [(1 - w) * uni[nxt] + w * bigram for w in (0.0, 0.1, 0.3, 0.5, 0.7)]
    return min(candidates, key=lambda p: -np.log2(p).mean())


def _cache_probs(docs: np.ndarray, window: int, vocab: int) -> np.ndarray:
    """(n, L-1): share of the `window` tokens before position t (fewer at the start) of the same document that
    equal the token at t, for t = 1..L-1. Sorting (document, token, position) keys makes each count a rank
    difference, instead of comparing every position with its whole history."""
    n, length = docs.shape
    pos = np.tile(np.arange(length, dtype=np.int64), n)
    group = np.repeat(np.arange(n, dtype=np.int64), length) * vocab + docs.ravel()
    keys = group * length + pos
    order = np.argsort(keys, kind="stable")
    ranked = keys[order]
    earliest = group[order] * length + np.maximum(pos[order] - window, 0)  # oldest position still in the window
    same_before = np.empty(n * length, np.int64)
    same_before[order] = np.arange(n * length) - np.searchsorted(ranked, earliest)
    counts = same_before.reshape(n, length)[:, 1:]
    return counts / np.minimum(np.arange(1, length), window)


def long_range_info_gain(docs: np.ndarray, window: int = 512, vocab_size: int | None = None,
                         weights=(0.05, 0.1, 0.2, 0.4)) -> float:
    """Cross-entropy (bits/token) of a short-context predictor (unigram + bigram counts from half the documents) minus that of
    the same predictor mixed with a cache of the last `window` tokens of the document (Kuhn & De Mori 1990), on
    the other half; the best mixing weight is taken, so the gain is >= 0 and ~0 when history does not help."""
    vocab = vocab_size or int(docs.max()) + 1
    half = len(docs) // 2
    test = docs[half:]
    p_short = _short_context_probs(docs[:half], test, vocab)
    p_cache = _cache_probs(test, window, vocab)
    h_short = -np.log2(p_short).mean()
    h_long = min(-np.log2((1 - w) * p_short + w * p_cache).mean() for w in weights)
    return float(max(0.0, h_short - h_long))
