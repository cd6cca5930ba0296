"""Statistics card of a data directory: the properties the config dials in, measured on what was built.

    card = stats(manifest)        # also written to <data dir>/stats.json by build()

Each statistic is a pure function tested against data whose true value is known (tests/test_stats.py):
- zipf_mle: maximum-likelihood exponent alpha of a rank-frequency law p(r) proportional to r^-alpha
  (Chan et al. 2022 Sec. 3.2 dial the class distribution this way).
- repeat rate: share of context items whose class already occurred earlier in the same context, against what
  independent draws from the same class distribution would give (burstiness, Chan et al. 2022 Sec. 3.1).
"""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from pretrain_data.manifest import Manifest, ShardEntry
from pretrain_data.reader import fixed_list


def zipf_mle(counts: np.ndarray, lo: float = 0.0, hi: float = 6.0, tol: float = 1e-6) -> float:
    """MLE of alpha for counts of types ranked by frequency (rank 1 = most frequent), support = observed types.
    The log-likelihood -alpha * sum n_r log r - N log sum_r r^-alpha is concave in alpha: golden-section search."""
    counts = np.sort(np.asarray(counts, np.float64)[np.asarray(counts) > 0])[::-1]
    log_r = np.log(np.arange(1, len(counts) + 1))
    total, weighted = counts.sum(), (counts * log_r).sum()

    def loglik(alpha: float) -> float:
        return -alpha * weighted - total * np.log(np.exp(-alpha * log_r).sum())

    golden = (np.sqrt(5) - 1) / 2
    a, b = lo, hi
    while b - a > tol:
        c, d = b - golden * (b - a), a + golden * (b - a)
        a, b = (a, d) if loglik(c) > loglik(d) else (c, b)
    return float((a + b) / 2)


def repeat_rate(contexts: np.ndarray) -> float:
    """Share of positions (n, N) whose value occurred earlier in the same row."""
    srt = np.sort(contexts, axis=1)
    return float((srt[:, 1:] == srt[:, :-1]).sum() / contexts.size)


def expected_repeat_rate(probs: np.ndarray, length: int) -> float:
    """repeat_rate of rows of `length` independent draws from `probs`: position i repeats with probability
    sum_k p_k (1 - (1 - p_k)^i)."""
    probs = probs[probs > 0]
    return float(np.mean([np.sum(probs * (1 - (1 - probs) ** i)) for i in range(length)]))


def shard_partials(root: str, entry: ShardEntry, num_types: int) -> dict:
    """Sums over one training shard (run as a Ray task; partials add up across shards)."""
    table = pq.read_table(f"{root}/{entry.file}")
    classes = fixed_list(table.column("classes"))
    context, query = classes[:, :-1], classes[:, -1]
    return {
        "rows": len(classes),
        "class_counts": np.bincount(classes.ravel(), minlength=num_types),
        "repeats": repeat_rate(context) * context.size,
        "context_items": context.size,
        "query_in_context": int((context == query[:, None]).any(axis=1).sum()),
        "bursty": int(np.asarray(table.column("bursty")).sum()),
    }


def card(partials: list[dict], context_pairs: int) -> dict:
    """Combine per-shard partials into the statistics card."""
    counts = sum(p["class_counts"] for p in partials)
    rows = sum(p["rows"] for p in partials)
    observed = sum(p["repeats"] for p in partials) / sum(p["context_items"] for p in partials)
    expected = expected_repeat_rate(counts / counts.sum(), context_pairs)
    return {
        "split": "train",
        "rows": rows,
        "class_zipf_alpha_mle": round(zipf_mle(counts), 4),
        "distinct_classes": int((counts > 0).sum()),
        "context_repeat_rate": round(observed, 4),
        "context_repeat_rate_iid": round(expected, 4),
        "burstiness_ratio": round(observed / expected, 2) if expected > 0 else None,
        "query_in_context": round(sum(p["query_in_context"] for p in partials) / rows, 4),
        "bursty_fraction": round(sum(p["bursty"] for p in partials) / rows, 4),
    }


def stats(manifest: Manifest, remote: bool = True) -> dict:
    """The card of a built data directory, computed shard by shard (as Ray tasks when `remote` and Ray runs)."""
    from pretrain_data.tasks import run_tasks

    cfg = manifest.config
    num_types = cfg["num_classes"] + cfg["num_novel_classes"]
    items = [(str(manifest.root), s, num_types) for s in manifest.split("train")]
    partials = (run_tasks(shard_partials, items, f"stats {manifest.root.name}", progress=False) if remote
                else [shard_partials(*item) for item in items])
    return card(partials, cfg["context_pairs"])
