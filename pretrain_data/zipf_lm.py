"""`zipf_lm`: a synthetic language whose token statistics are dialled directly (issue: pretrain_data mixtures).

    cfg = ZipfLMConfig(vocab_size=4096, zipf_alpha=1.2, long_range=0.3)
    docs = sample_docs(cfg, rng_for(seed, "zipf_lm", shard), n_docs=64)     # (64, doc_length) int32

- Unigram law: token id r-1 has rank r and probability proportional to r^-alpha (Zipf). Chan et al. 2022 find
  that the exponent trades in-context against in-weights learning (both co-exist near alpha = 1); Han et al. 2023
  find more rare, long-tail tokens in the pretraining data that supports ICL.
- Long tail: with `rare_token_density` set, that share of tokens comes from the ranks beyond `rare_rank_cutoff`
  (Zipf-weighted inside the tail), the rest from the head; None keeps whatever the Zipf law gives.
- Long-range dependency: each span of `span_length` tokens is, with probability `long_range`, a copy of an earlier
  span of the same document at least `long_range_distance` tokens back. Copying preserves the unigram law and is
  the structure a model can learn here (an induction-head task); GINC is the source with latent structure.
- Related documents: with `related_docs` set, that share of documents takes its copied spans from the document
  generated just before it (its "parent", any position) instead of from itself: documents that depend on an
  earlier one, the structure In-Context Pretraining (Shi et al. 2024) puts in one context window by ordering
  documents by similarity (`dependency_order`), where `random_order` scatters them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from metaicl.core.errors import ConfigError


@dataclass
class ZipfLMConfig:
    vocab_size: int = 4096
    """V, number of token types (ids 0..V-1, id = frequency rank - 1)."""
    zipf_alpha: float = 1.0
    """alpha, unigram rank-frequency exponent: p(rank r) proportional to r^-alpha."""
    rare_token_density: Optional[float] = None
    """Share of tokens drawn from ranks > rare_rank_cutoff (long-tail density); None = what the Zipf law gives."""
    rare_rank_cutoff: int = 1024
    """Ranks beyond this are the long tail (used with rare_token_density)."""
    long_range: float = 0.0
    """Probability that a span is a copy of an earlier span of the same document."""
    long_range_distance: int = 64
    """Minimum distance in tokens between a copied span and its source."""
    span_length: int = 8
    """Tokens per span (the unit of copying)."""
    copy_offset: str = "aligned"
    """Where a copied span comes from: `aligned`, an earlier span slot (so every copy sits a multiple of
    span_length back, and a model can copy by position alone: measured, a tiny GPT-2 then copies random
    sequences only at such offsets); `any`, any earlier position at least long_range_distance back, so finding
    the source takes matching content (what an induction head does, Olsson et al. 2022)."""
    doc_length: int = 512
    """Tokens per document (a multiple of span_length)."""
    related_docs: float = 0.0
    """Share of documents whose copied spans come from the previous document (copy_offset any); 0 = none."""

    def validate(self, prefix: str) -> None:
        def bad(key: str, msg: str) -> ConfigError:
            return ConfigError(f"{prefix}.{key}", msg)

        if self.vocab_size < 2:
            raise bad("vocab_size", f"must be >= 2, got {self.vocab_size}")
        if self.zipf_alpha < 0:
            raise bad("zipf_alpha", f"must be >= 0, got {self.zipf_alpha}")
        if self.rare_token_density is not None and not 1 <= self.rare_rank_cutoff < self.vocab_size:
            raise bad("rare_rank_cutoff", f"must be in [1, vocab_size), got {self.rare_rank_cutoff}")
        if self.rare_token_density is not None and not 0.0 <= self.rare_token_density <= 1.0:
            raise bad("rare_token_density", f"must be in [0, 1] or null, got {self.rare_token_density}")
        if not 0.0 <= self.long_range <= 1.0:
            raise bad("long_range", f"must be in [0, 1], got {self.long_range}")
        if self.span_length < 1 or self.doc_length % self.span_length:
            raise bad("span_length", f"must be >= 1 and divide doc_length={self.doc_length}, got {self.span_length}")
        if self.copy_offset not in ("aligned", "any"):
            raise bad("copy_offset", f"must be aligned or any, got {self.copy_offset!r}")
        if not 0.0 <= self.related_docs <= 1.0:
            raise bad("related_docs", f"must be in [0, 1], got {self.related_docs}")
        if self.related_docs > 0 and self.copy_offset != "any":
            raise bad("related_docs", "needs copy_offset: any (a parent's span may start anywhere)")
        if self.long_range > 0 and self.long_range_distance + self.span_length > self.doc_length:
            raise bad("long_range_distance", f"{self.long_range_distance} leaves no room to copy in a document of "
                                             f"{self.doc_length} tokens")


def unigram(cfg: ZipfLMConfig) -> np.ndarray:
    """The token distribution the config asks for (Zipf, with the tail re-weighted when asked)."""
    p = np.arange(1, cfg.vocab_size + 1, dtype=np.float64) ** -cfg.zipf_alpha
    p /= p.sum()
    if cfg.rare_token_density is not None:
        c, rho = cfg.rare_rank_cutoff, cfg.rare_token_density
        p[:c] *= (1 - rho) / p[:c].sum()
        p[c:] *= rho / p[c:].sum()
    return p


def sample_docs(cfg: ZipfLMConfig, rng: np.random.Generator, n_docs: int) -> np.ndarray:
    """(n_docs, doc_length) int32 token ids."""
    docs = rng.choice(cfg.vocab_size, size=(n_docs, cfg.doc_length), p=unigram(cfg)).astype(np.int32)
    if cfg.long_range > 0:
        span, slots = cfg.span_length, cfg.doc_length // cfg.span_length
        lag = -(-cfg.long_range_distance // span)  # source slot <= slot - lag, so distance >= long_range_distance
        spans = docs.reshape(n_docs, slots, span)
        rows = np.arange(n_docs)
        copies = []  # (slot, row, source row, first token) of every unaligned copy, applied below
        for slot in range(lag, slots):  # in order, so a copy may copy a copy, as text repeats itself
            copy = rng.random(n_docs) < cfg.long_range
            if cfg.copy_offset == "aligned":
                source = rng.integers(0, slot - lag + 1, size=n_docs)
                spans[rows[copy], slot] = spans[rows[copy], source[copy]]
                continue
            first = rng.integers(0, slot * span - cfg.long_range_distance + 1, size=n_docs)  # a token position
            source = rows
            if cfg.related_docs > 0:  # drawn only when asked: other configs' documents stay byte-identical
                parent = (rng.random(n_docs) < cfg.related_docs) & (rows > 0)
                first = np.where(parent, rng.integers(0, cfg.doc_length - span + 1, size=n_docs), first)
                source = np.where(parent, rows - 1, rows)
            copies += [(slot, row, source[row], first[row]) for row in rows[copy]]
        # document by document, each slot in order: a parent is complete before its child copies from it
        for slot, row, source, first in sorted(copies, key=lambda c: (c[1], c[0])):
            docs[row, slot * span : (slot + 1) * span] = docs[source, first : first + span]
    return docs
