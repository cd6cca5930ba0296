"""Config of a token-level pretraining mixture: named sources, weights, a token budget, transforms per source.

    pretrain:
      name: zipf12
      token_budget: 2097152          # tokens in the whole stream
      context_length: 512            # tokens per training window (documents packed, boundary token between)
      sources:
        zipf: {kind: zipf_lm, weight: 0.7, zipf_lm: {zipf_alpha: 1.2}}
        fewshot: {kind: bursty_fewshot, weight: 0.3, transforms: [{name: random_order}]}

A source's quota is its share of the windows of the blended stream (weights, normalised); a finite source (`text`)
that cannot meet it within `max_epochs` repetitions is a config error before anything is built.
Every field here changes the data, so the whole resolved mixture (each source with only its own kind's group)
goes into the hash that names the data directory; `name` only labels it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

from metaicl.core.errors import ConfigError, check_at_least
from pretrain_data.config import BurstyDataConfig
from pretrain_data.function_class import FunctionClassConfig
from pretrain_data.ginc import GINCConfig
from pretrain_data.text import TextConfig
from pretrain_data.zipf_lm import ZipfLMConfig

SOURCE_KINDS = ("zipf_lm", "ginc", "bursty_fewshot", "text", "function_class")
CONTINUOUS = ("function_class",)
"""Sources of real-valued prompts, not tokens: they form mixtures of their own (Garg et al. 2022)."""
TRANSFORMS = ("dedup", "zipf_reweight", "tail_enrich", "dependency_order", "random_order")


@dataclass
class TransformConfig:
    """One step applied to a source's documents, in the order declared (per generation batch for synthetic
    sources, over the whole corpus for `text`)."""
    name: str = "random_order"
    """dedup | zipf_reweight | tail_enrich | dependency_order | random_order."""
    threshold: float = 0.85
    """dedup: n-gram Jaccard at or above which two documents are near duplicates (In-Context Pretraining: 0.85)."""
    ngram: int = 5
    """dedup: n of the hashed token n-grams (shingles)."""
    k: int = 10
    """dependency_order: neighbours per document in the kNN graph (Shi et al. 2024)."""
    embed_dim: int = 1024
    """dependency_order: dimension of the hashed TF-IDF document embedding."""
    target: Optional[float] = None
    """zipf_reweight: target unigram exponent alpha; tail_enrich: target rare-token density."""
    cutoff: int = 1024
    """tail_enrich: ranks beyond this are the long tail."""

    def validate(self, prefix: str) -> None:
        if self.name not in TRANSFORMS:
            raise ConfigError(f"{prefix}.name", f"unknown transform {self.name!r} (known: {', '.join(TRANSFORMS)})")
        if self.name == "dedup" and not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"{prefix}.threshold", f"must be in (0, 1], got {self.threshold}")
        if self.name in ("zipf_reweight", "tail_enrich") and self.target is None:
            raise ConfigError(f"{prefix}.target", f"{self.name} needs a target")
        check_at_least(self, prefix, ("ngram", "k", "embed_dim", "cutoff"), 1)


@dataclass
class SourceConfig:
    kind: str = "zipf_lm"
    """zipf_lm | ginc | bursty_fewshot | text | function_class; the group of the same name holds its knobs."""
    weight: float = 1.0
    """Share of the stream's windows (normalised over sources)."""
    max_epochs: float = 1.0
    """Finite sources (text): most times each document may be repeated to meet the quota."""
    docs_per_batch: int = 512
    """Synthetic sources: documents generated (and transformed) together; transforms see one batch at a time."""
    transforms: List[TransformConfig] = field(default_factory=list)
    zipf_lm: ZipfLMConfig = field(default_factory=ZipfLMConfig)
    ginc: GINCConfig = field(default_factory=GINCConfig)
    bursty_fewshot: BurstyDataConfig = field(default_factory=BurstyDataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    function_class: FunctionClassConfig = field(default_factory=FunctionClassConfig)

    def generator(self):
        return getattr(self, self.kind)

    def validate(self, prefix: str) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ConfigError(f"{prefix}.kind", f"unknown source {self.kind!r} (known: {', '.join(SOURCE_KINDS)})")
        if self.weight <= 0:
            raise ConfigError(f"{prefix}.weight", f"must be > 0, got {self.weight}")
        if self.max_epochs <= 0:
            raise ConfigError(f"{prefix}.max_epochs", f"must be > 0, got {self.max_epochs}")
        check_at_least(self, prefix, ("docs_per_batch",), 2)
        self.generator().validate(f"{prefix}.{self.kind}")
        for i, step in enumerate(self.transforms):
            step.validate(f"{prefix}.transforms.{i}")

    def resolved(self) -> dict:
        """The source as it is hashed and recorded: its own generator group only."""
        out = {k: v for k, v in asdict(self).items() if k not in SOURCE_KINDS}
        generator = self.generator()
        out[self.kind] = generator.hashed() if hasattr(generator, "hashed") else asdict(generator)
        return out


@dataclass
class MixtureStatsConfig:
    rare_rank_cutoff: int = 1024
    """Rare-token density is the share of tokens outside the `rare_rank_cutoff` most frequent types."""
    sample_docs: int = 256
    """Documents per shard kept for document-level statistics (burstiness, long-range information gain)."""
    doc_tokens: int = 256
    """Documents are cut to this many tokens for document-level statistics (shorter ones are left out)."""
    long_range_window: int = 256
    """History of the cache model in the long-range information gain."""


@dataclass
class MixtureConfig:
    name: str = "mixture"
    """Labels the data directory (<data_root>/<name>-<hash8>); not part of the hash."""
    sources: Dict[str, SourceConfig] = field(default_factory=dict)
    token_budget: int = 1 << 20
    """Tokens in the blended stream (rounded down to whole windows)."""
    context_length: int = 512
    """Tokens per window. Documents are packed back to back, each followed by the boundary token (id 0)."""
    windows_per_shard: int = 512
    """Windows per parquet shard; shards, not workers, are the unit of randomness and of work."""
    seed: int = 0
    """data_seed: every shard derives from (seed, source name, shard index)."""
    stats: MixtureStatsConfig = field(default_factory=MixtureStatsConfig)

    def validate(self, prefix: str = "pretrain") -> None:
        if not self.sources:
            raise ConfigError(f"{prefix}.sources", "a mixture needs at least one source")
        check_at_least(self, prefix, ("context_length", "windows_per_shard"), 2)
        if self.token_budget < self.context_length:
            raise ConfigError(f"{prefix}.token_budget",
                              f"{self.token_budget} is less than one window of context_length={self.context_length}")
        for name, source in self.sources.items():
            source.validate(f"{prefix}.sources.{name}")
        self._validate_continuous(prefix)

    def _validate_continuous(self, prefix: str) -> None:
        """Function-class prompts are real-valued: a mixture of them holds nothing else, every source has the same
        prompt shape, and a window is one prompt (context_length = n_points (x, y) pairs)."""
        kinds = {name: s.kind in CONTINUOUS for name, s in self.sources.items()}
        if not any(kinds.values()):
            return
        if not all(kinds.values()):
            name = next(n for n, c in kinds.items() if not c)
            raise ConfigError(f"{prefix}.sources.{name}.kind", "function_class prompts are real-valued and form a "
                                                               "mixture of their own: no token sources beside them")
        for name, source in self.sources.items():
            fc = source.function_class
            if fc.n_points != self.context_length:
                raise ConfigError(f"{prefix}.sources.{name}.function_class.n_points",
                                  f"{fc.n_points} must equal context_length={self.context_length} (a window is "
                                  "one prompt)")
            first = next(iter(self.sources.values())).function_class
            if fc.n_dims != first.n_dims:
                raise ConfigError(f"{prefix}.sources.{name}.function_class.n_dims",
                                  f"{fc.n_dims} differs from the other sources' {first.n_dims}")

    def windows(self) -> int:
        return self.token_budget // self.context_length

    def resolved(self) -> dict:
        """What the data directory is keyed by (and what the manifest records)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("name", "sources")}
        out["sources"] = {name: s.resolved() for name, s in self.sources.items()}
        return out
