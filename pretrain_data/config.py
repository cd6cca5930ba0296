"""Config of the bursty, Zipfian few-shot sequence generator (Chan et al. 2022; Reddy 2023).

    from pretrain_data.config import BurstyDataConfig
    cfg = BurstyDataConfig(num_classes=2048, burstiness=4)
    cfg.validate()          # raises ConfigError naming the key

Each field keeps the paper's name for the knob. Everything here is semantic (it changes the data), so the whole
dataclass goes into the data hash that names the data directory.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from metaicl.core.errors import ConfigError, check_at_least


@dataclass
class BurstyDataConfig:
    kind: str = "bursty_fewshot"
    """Generator family. Only `bursty_fewshot` exists so far."""
    num_classes: int = 2048
    """K, number of training classes. Reddy 2023 Fig. 2: large K makes memorising every class costly, so the
    network learns to read labels off the context (ICL); small K (e.g. 256) lets it memorise (IWL) instead."""
    num_labels: int = 32
    """L, number of labels; each training class gets one label at random (several classes share a label)."""
    context_pairs: int = 8
    """N, item/label pairs in the context before the query item."""
    item_dim: int = 63
    """D, dimension of an item vector."""
    within_class_noise: float = 0.1
    """epsilon, within-class variation: item = (mu_class + epsilon * eta) / sqrt(1 + epsilon^2), eta ~ N(0, I/D)."""
    zipf_alpha: float = 0.0
    """alpha, rank-frequency exponent of the class distribution, p(class k) proportional to k^-alpha
    (Chan et al. 2022 Sec. 3.2; 0 = uniform classes)."""
    burstiness: int = 4
    """B, copies of each class in a bursty context: the N context items come from N/B classes, B each, and the
    query's class is one of them. 0 = iid context (no burstiness). Must divide N."""
    p_bursty: float = 1.0
    """Fraction of training sequences that are bursty; the rest are iid (Chan et al. 2022 Fig. 2, Reddy 2023)."""
    num_novel_classes: int = 512
    """Classes held out of training entirely; `icl_novel` draws its two context classes from them."""
    train_sequences: int = 196_608
    """Training sequences built (steps x batch size of the default run; training cycles if it needs more)."""
    eval_sequences: int = 2048
    """Sequences in each evaluation set (icl_novel, icl_swap, iwl)."""
    shard_size: int = 32_768
    """Rows per parquet shard. Shards, not workers, are the unit of randomness, so output is the same for any
    number of Ray workers."""
    seed: int = 0
    """data_seed: class means, label map and every shard derive from (seed, part, shard index)."""
    separators: bool = False
    """Token mixtures only (a `bursty_fewshot` source): each pair written as class, input separator, label, example
    separator, two reserved ids after the labels: a MetaICL episode's layout (x <input_sep> y <example_sep>), so
    episodes can be separated by ids pretraining saw in that role (`tasks.separators`; issue 15). False: c_1 l_1
    c_2 l_2 ... (Chan et al. 2022)."""

    def hashed(self) -> dict:
        """The fields that name the data: all, but `separators` only where set (data built before it existed keeps
        its name)."""
        out = asdict(self)
        if not self.separators:
            out.pop("separators")
        return out

    def validate(self, prefix: str = "data") -> None:
        def bad(key: str, msg: str) -> ConfigError:
            return ConfigError(f"{prefix}.{key}", msg)

        if self.kind != "bursty_fewshot":
            raise bad("kind", f"unknown generator {self.kind!r} (known: bursty_fewshot)")
        check_at_least(self, prefix, ("num_classes", "num_labels", "num_novel_classes"), 2)
        check_at_least(self, prefix, ("item_dim", "train_sequences", "eval_sequences", "shard_size"), 1)
        n, b = self.context_pairs, self.burstiness
        if n < 2 or n % 2:
            raise bad("context_pairs", f"must be even and >= 2 (icl_novel puts N/2 items of 2 classes), got {n}")
        if b < 0:
            raise bad("burstiness", f"must be >= 0 (0 = iid), got {b}")
        if b > 0 and n % b:
            raise bad("burstiness", f"B={b} does not divide context_pairs N={n}")
        if b > 0 and n // b > self.num_classes:
            raise bad("burstiness", f"N/B={n // b} classes per context exceeds num_classes={self.num_classes}")
        if not 0.0 <= self.p_bursty <= 1.0:
            raise bad("p_bursty", f"must be in [0, 1], got {self.p_bursty}")
        if self.zipf_alpha < 0:
            raise bad("zipf_alpha", f"must be >= 0, got {self.zipf_alpha}")
        if self.within_class_noise < 0:
            raise bad("within_class_noise", f"must be >= 0, got {self.within_class_noise}")
