"""Resample documents so that a token statistic of the pool hits a target: the unigram Zipf exponent or tail density.

    from metaicl.core.seeding import rng_for
    from pretrain_data.reweight import tail_enrich, zipf_reweight
    from pretrain_data.zipf_lm import ZipfLMConfig, sample_docs
    docs = list(sample_docs(ZipfLMConfig(vocab_size=2048, zipf_alpha=0.8, doc_length=128), rng_for(0, "a"), 500))
    docs += list(sample_docs(ZipfLMConfig(vocab_size=2048, zipf_alpha=1.6, doc_length=128), rng_for(0, "b"), 500))
    idx, alpha = zipf_reweight(docs, 1.2, rng_for(0, "reweight"), vocab_size=2048)    # alpha within 0.02 of 1.2
    idx, rho = tail_enrich(docs, 0.2, rng_for(0, "tail"), vocab_size=2048, cutoff=256)  # rho within 0.005 of 0.2

Why: supportive pretraining data for in-context learning holds more rare, long-tail tokens (Han et al. 2023,
"Understanding In-Context Learning via Supportive Pretraining Data"), and whether in-context or in-weights learning
emerges depends on the Zipf exponent of the data (Chan et al. 2022, "Data distributional properties drive emergent
in-context learning in transformers": a skewed law with many rare classes; both co-exist near alpha = 1). These
transforms dial those two quantities on any token source, so their effect can be measured rather than assumed.

How: exponential tilting. Each document gets a score s_i (below); documents are drawn with replacement with
probability w_i proportional to exp(beta * z_i), z the standardised score, and beta is found by bisection so that
the statistic of the drawn pool hits the target. The uniforms are drawn once (common random numbers) and mapped
through the inverse CDF over documents sorted by score: raising beta moves CDF mass to higher scores, so every
draw lands on a document with the same or a higher score (a monotone coupling) and bisection on beta is well
defined. The statistic itself is re-measured on the drawn pool (its own frequency ranks), so it is monotone in
beta up to that re-ranking (on the tests' pool, steps the wrong way are < 3e-4 in alpha); the result is checked.
- zipf_reweight: s_i = mean log frequency-rank of the document's tokens (ranks from the pool's counts); a large
  score means rarer tokens, so beta > 0 flattens the law (lower alpha, measured by stats.zipf_mle).
- tail_enrich: s_i = share of the document's tokens outside the `cutoff` most frequent types of the pool; beta > 0
  raises the pool's token_stats.rare_token_density.

Limitation: tilting only selects among existing documents (with repeats). The reachable range is set by how much
documents differ; a tilt is allowed only while the draw keeps at least `min_ess` of the pool as effective
documents (ESS = (sum w)^2 / sum w^2, Kish), so a target is not met by repeating a handful of outliers. A target
outside the reachable range raises ValueError naming the range [lo, hi] for this pool.
Indices come back in the order drawn (a random order, fixed by `rng`); duplicates are repeats of a document.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from pretrain_data.stats import zipf_mle
from pretrain_data.token_stats import rare_token_density, type_counts

_MAX_BETA = 50.0  # on standardised scores exp(50 z) is already a hard argmax; the ESS floor binds long before


def _token_ranks(docs: list[np.ndarray], vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The document of each token and the token's frequency rank in the pool (1 = most frequent)."""
    lengths = np.array([len(d) for d in docs])
    if len(docs) == 0 or (lengths == 0).any():
        raise ValueError("reweighting needs at least one document and no empty documents")
    flat = np.concatenate([np.asarray(d) for d in docs])
    rank = np.empty(vocab_size, np.int64)
    rank[np.argsort(-type_counts(flat, vocab_size), kind="stable")] = np.arange(1, vocab_size + 1)
    return np.repeat(np.arange(len(docs)), lengths), rank[flat]


def _doc_mean(values: np.ndarray, doc_of_token: np.ndarray, n_docs: int) -> np.ndarray:
    return np.bincount(doc_of_token, weights=values, minlength=n_docs) / np.bincount(doc_of_token, minlength=n_docs)


def _tilt_and_bisect(docs: list[np.ndarray], scores: np.ndarray, measure: Callable[[np.ndarray], float],
                     target: float, rng: np.random.Generator, n_out: int | None, tol: float, min_ess: float,
                     name: str) -> tuple[np.ndarray, float]:
    """Draw n_out documents with w proportional to exp(beta * z(scores)); bisect beta to |measure - target| <= tol."""
    n = len(docs)
    order = np.argsort(scores, kind="stable")  # sorted by score: inverse-CDF draws are then monotone in beta
    spread = scores.std()
    z = (scores[order] - scores.mean()) / spread if spread > 0 else np.zeros(n)
    u = rng.random(n_out or n)  # common random numbers: the same uniforms for every beta

    def weights(beta: float) -> np.ndarray:
        w = np.exp(beta * z - (beta * z).max())
        return w / w.sum()

    def draw(beta: float) -> tuple[np.ndarray, float]:
        idx = order[np.minimum(np.searchsorted(np.cumsum(weights(beta)), u, side="right"), n - 1)]
        return idx, measure(np.concatenate([docs[i] for i in idx]))

    def max_beta(sign: int) -> float:  # largest |beta| keeping ESS >= min_ess * n (ESS falls as |beta| grows)
        lo, hi = 0.0, _MAX_BETA
        if 1.0 / (weights(sign * hi) ** 2).sum() >= min_ess * n:
            return hi
        for _ in range(50):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if 1.0 / (weights(sign * mid) ** 2).sum() >= min_ess * n else (lo, mid)
        return lo

    lo_beta, hi_beta = -max_beta(-1), max_beta(+1)
    (lo_idx, lo_val), (hi_idx, hi_val) = draw(lo_beta), draw(hi_beta)
    if abs(lo_val - target) <= tol:
        return lo_idx, lo_val
    if abs(hi_val - target) <= tol:
        return hi_idx, hi_val
    reach = f"[{min(lo_val, hi_val):.4f}, {max(lo_val, hi_val):.4f}]"
    if (lo_val - target) * (hi_val - target) > 0:
        raise ValueError(f"{name} target {target} is out of reach: tilting this pool (keeping >= {min_ess:.0%} "
                         f"effective documents) reaches {name} in {reach}")
    best = (lo_idx, lo_val)
    for _ in range(60):
        mid = (lo_beta + hi_beta) / 2
        idx, val = draw(mid)
        if abs(val - target) < abs(best[1] - target):
            best = (idx, val)
        if abs(val - target) <= tol:
            return idx, val
        if (val - target) * (lo_val - target) > 0:  # same side of the target as the low end: the root is above mid
            lo_beta, lo_val = mid, val
        else:
            hi_beta = mid
    raise ValueError(f"{name} target {target} not met within {tol}: closest {best[1]:.4f} in reachable {reach} "
                     f"(a single document's weight jumps the statistic; raise tol or n_out)")


def zipf_reweight(docs: list[np.ndarray], target_alpha: float, rng: np.random.Generator, vocab_size: int,
                  n_out: int | None = None, tol: float = 0.02, min_ess: float = 0.05) -> tuple[np.ndarray, float]:
    """Indices of n_out (default len(docs)) documents drawn with replacement whose pooled token counts have
    zipf_mle within `tol` of target_alpha, and the alpha achieved."""
    doc_of_token, rank = _token_ranks(docs, vocab_size)
    scores = _doc_mean(np.log(rank), doc_of_token, len(docs))  # rarer tokens -> larger score -> flatter law
    return _tilt_and_bisect(docs, scores, lambda tokens: zipf_mle(type_counts(tokens, vocab_size)), target_alpha,
                            rng, n_out, tol, min_ess, "zipf alpha")


def tail_enrich(docs: list[np.ndarray], target_density: float, rng: np.random.Generator, vocab_size: int,
                cutoff: int, n_out: int | None = None, tol: float = 0.005,
                min_ess: float = 0.05) -> tuple[np.ndarray, float]:
    """Indices of n_out documents drawn with replacement whose pooled rare_token_density (tokens outside the
    `cutoff` most frequent types of the drawn pool) is within `tol` of target_density, and the density achieved."""
    doc_of_token, rank = _token_ranks(docs, vocab_size)
    scores = _doc_mean((rank > cutoff).astype(np.float64), doc_of_token, len(docs))
    return _tilt_and_bisect(docs, scores, lambda tokens: rare_token_density(tokens, cutoff, vocab_size),
                            target_density, rng, n_out, tol, min_ess, "rare token density")
