"""Human-readable views of a data directory: a few decoded sequences and the statistics card."""
from __future__ import annotations

import pyarrow.parquet as pq

from pretrain_data.manifest import Manifest
from pretrain_data.reader import fixed_list


def show(manifest: Manifest, split: str = "train", n: int = 5) -> str:
    """First `n` sequences of `split` as `class:label` pairs, the query last (`?` hides nothing: the target is
    the query's label, shown after `->`)."""
    entries = manifest.split(split)
    if not entries:
        raise ValueError(f"no split {split!r} in {manifest.root} (splits: {sorted({s.split for s in manifest.shards})})")
    table = pq.read_table(manifest.root / entries[0].file).slice(0, n)
    classes, labels = fixed_list(table.column("classes")), fixed_list(table.column("labels"))
    bursty = table.column("bursty").to_pylist()
    novel_from = manifest.config["num_classes"]
    lines = [f"{split} ({manifest.rows(split)} sequences; class:label pairs, query -> target; n = novel class)"]
    for c, l, b in zip(classes, labels, bursty):
        name = lambda k: f"n{k - novel_from}" if k >= novel_from else str(k)  # noqa: E731
        pairs = " ".join(f"{name(k)}:{v}" for k, v in zip(c[:-1], l[:-1]))
        lines.append(f"  {pairs} | {name(c[-1])} -> {l[-1]}{'  (bursty)' if b else ''}")
    return "\n".join(lines)


def format_card(card: dict) -> str:
    width = max(map(len, card))
    return "\n".join(f"{k:<{width}}  {v}" for k, v in card.items())
