"""Statistics card of a token mixture: per source, what the stream really contains.

    card = mixture_stats(manifest, MixtureStatsConfig())      # written to <data dir>/stats.json by the build

Per shard a Ray task returns sums (token counts per type, group counts, similarity sums, a sample of whole
documents); per source they are added and turned into:
- zipf_alpha_mle: unigram rank-frequency exponent by maximum likelihood (stats.zipf_mle);
- rare_token_density: share of tokens outside the `rare_rank_cutoff` most frequent types (Han et al. 2023);
- doc_burstiness: within-document repetition over its value under independence (Church & Gale 1995);
- long_range_info_gain_bits: how much a cache of the document's history lowers a bigram model's cross-entropy;
- adjacent_doc_similarity vs random_order_similarity: cosine of consecutive documents' hashed TF-IDF vectors, in
  stream order and in a random order of the same documents (In-Context Pretraining's point is the gap);
- distinct_groups, group_entropy_bits: diversity of latent concepts/classes (GINC concepts, few-shot query classes).
Each function is tested against data with a known value (tests/test_token_stats.py, tests/test_mixture.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from metaicl.core.seeding import rng_for
from pretrain_data.manifest import Manifest, ShardEntry
from pretrain_data.pack import BOUNDARY
from pretrain_data.reader import fixed_list
from pretrain_data.stats import zipf_mle
from pretrain_data.token_stats import doc_burstiness, long_range_info_gain
from pretrain_data.transforms import embed

MAX_SAMPLE = 1024  # documents per source for document-level statistics


def whole_documents(ids: np.ndarray, starts_mid_doc: bool) -> list[np.ndarray]:
    """Split a shard's token stream at boundary tokens; drop the partial documents at either end."""
    ends = np.flatnonzero(ids == BOUNDARY)
    docs = np.split(ids, ends + 1)[:-1]  # the piece after the last boundary was cut by the window end
    docs = [d[:-1] for d in docs]
    return docs[1:] if starts_mid_doc else docs


def shard_partial(root: str, entry: ShardEntry, offset: int, vocab: int, sample_docs: int) -> dict:
    table = pq.read_table(Path(root) / entry.file)
    ids = fixed_list(table.column("input_ids")).ravel()
    starts_mid = table.column("doc_starts")[0].as_py()[0] == -1
    docs = [d.astype(np.int64) - offset for d in whole_documents(ids, starts_mid)]
    tokens = ids[ids != BOUNDARY].astype(np.int64) - offset
    groups = np.concatenate([np.asarray(g, np.int64) for g in table.column("doc_groups").to_pylist()])
    doc_ids = np.concatenate([np.asarray(g, np.int64) for g in table.column("doc_ids").to_pylist()])
    _, first = np.unique(doc_ids, return_index=True)  # a document spanning windows counts once
    groups = groups[np.sort(first)]
    groups = groups[groups >= 0]
    out = {"tokens": int(tokens.size), "docs": len(docs), "counts": np.bincount(tokens, minlength=vocab),
           "groups": np.bincount(groups) if groups.size else np.zeros(0, np.int64),
           "sample": docs[:sample_docs], "adjacent": 0.0, "random": 0.0, "pairs": 0}
    if len(docs) >= 3:
        emb = embed(docs)
        shuffled = emb[rng_for(0, "stats", entry.file).permutation(len(docs))]
        out.update(adjacent=float((emb[1:] * emb[:-1]).sum()), random=float((shuffled[1:] * shuffled[:-1]).sum()),
                   pairs=len(docs) - 1)
    return out


def prompt_partial(root: str, entry: ShardEntry) -> dict:
    """Sums over one shard of function-class prompts (xs, ys)."""
    table = pq.read_table(Path(root) / entry.file)
    xs, ys = fixed_list(table.column("xs")).astype(np.float64), fixed_list(table.column("ys")).astype(np.float64)
    return {"prompts": len(ys), "y": ys.size, "y_sum": ys.sum(), "y_sq": (ys ** 2).sum(), "x": xs.size,
            "x_sq": (xs ** 2).sum()}


def prompt_card(partials: list[dict]) -> dict:
    """Prompts and moments: with x ~ N(0, I_d), var(y) is d for linear functions, the sparsity for sparse ones."""
    total = {k: sum(p[k] for p in partials) for k in partials[0]}
    mean = total["y_sum"] / total["y"]
    return {"prompts": int(total["prompts"]), "y_mean": round(float(mean), 4),
            "y_var": round(float(total["y_sq"] / total["y"] - mean ** 2), 4),
            "x_second_moment": round(float(total["x_sq"] / total["x"]), 4)}


def _partial(root: str, entry: ShardEntry, kind: str, offset: int, vocab: int, sample_docs: int) -> dict:
    if kind == "function_class":
        return prompt_partial(root, entry)
    return shard_partial(root, entry, offset, vocab, sample_docs)


def entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def document_level(sample: list[np.ndarray], cfg, vocab: int) -> dict:
    """Burstiness and long-range gain on equal-length documents: the sample cut to min(doc_tokens, median length)."""
    if len(sample) < 8:
        return {"doc_tokens_measured": None, "doc_burstiness": None, "long_range_info_gain_bits": None}
    length = int(min(cfg.doc_tokens, np.median([len(d) for d in sample])))
    docs = np.stack([d[:length] for d in sample if len(d) >= length][:MAX_SAMPLE])
    gain = round(long_range_info_gain(docs, cfg.long_range_window, vocab), 4) if length >= 2 else None
    return {"doc_tokens_measured": length, "doc_burstiness": round(doc_burstiness(docs, vocab), 4),
            "long_range_info_gain_bits": gain}


def source_card(partials: list[dict], vocab: int, cfg) -> dict:
    counts = sum(p["counts"] for p in partials)
    ranked = np.sort(counts)[::-1]
    width = max((len(p["groups"]) for p in partials), default=0)
    groups = sum((np.pad(p["groups"], (0, width - len(p["groups"]))) for p in partials), np.zeros(width, np.int64))
    pairs = sum(p["pairs"] for p in partials)
    docs = sum(p["docs"] for p in partials)
    card = {
        "content_tokens": int(counts.sum()),
        "documents_whole": docs,
        "mean_doc_tokens": round(float(counts.sum() / max(docs, 1)), 1),
        "distinct_types": int((counts > 0).sum()),
        "zipf_alpha_mle": round(zipf_mle(counts), 4),
        "rare_token_density": round(float(ranked[cfg.rare_rank_cutoff:].sum() / max(counts.sum(), 1)), 4),
        "token_entropy_bits": round(entropy_bits(counts), 4),
    }
    types = int((counts > 0).sum())
    ranks = np.unique(np.geomspace(1, max(types, 1), 24).round().astype(int))
    card["rank_frequency"] = [[int(r), int(ranked[r - 1])] for r in ranks]  # for the log-log plot in the report
    card.update(document_level([d for p in partials for d in p["sample"]], cfg, vocab))
    card.update({
        "adjacent_doc_similarity": round(sum(p["adjacent"] for p in partials) / pairs, 4) if pairs else None,
        "random_order_similarity": round(sum(p["random"] for p in partials) / pairs, 4) if pairs else None,
        "distinct_groups": int((groups > 0).sum()),
        "group_entropy_bits": round(entropy_bits(groups), 4) if groups.sum() else None,
    })
    return card


def mixture_stats(manifest: Manifest, cfg, max_in_flight: int | None = None, progress: bool = False,
                  remote: bool = True) -> dict:
    """The card of a built mixture, computed shard by shard (as Ray tasks when `remote`)."""
    items = [(str(manifest.root), s, manifest.sources[s.source]["kind"], manifest.sources[s.source]["offset"],
              manifest.sources[s.source]["vocab_size"], cfg.sample_docs) for s in manifest.shards]
    if remote:
        from pretrain_data.tasks import run_tasks

        partials = run_tasks(_partial, items, f"stats {manifest.root.name}", max_in_flight, progress)
    else:
        partials = [_partial(*item) for item in items]
    windows = sum(s["windows"] for s in manifest.sources.values())
    card = {"windows": windows, "tokens": sum(s.tokens for s in manifest.shards),
            "context_length": manifest.config["context_length"], "vocab_size": manifest.vocab_size, "sources": {}}
    for name, info in manifest.sources.items():
        mine = [p for p, s in zip(partials, manifest.shards) if s.source == name]
        measured = prompt_card(mine) if info["kind"] == "function_class" else source_card(mine, info["vocab_size"], cfg)
        card["sources"][name] = {"kind": info["kind"], "share": info["share"], **measured}
    return card
