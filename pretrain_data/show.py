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


def flatten(card: dict, prefix: str = "") -> dict:
    """Nested card -> {"sources.zipf.zipf_alpha_mle": 1.2, ...}."""
    out = {}
    for key, value in card.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def format_card(card: dict) -> str:
    flat = flatten(card)
    width = max(map(len, flat))
    return "\n".join(f"{k:<{width}}  {v}" for k, v in flat.items())


def show_mixture(manifest: Manifest, n: int = 5, width: int = 160) -> str:
    """The first `n` windows of the blended stream: source, then its tokens (text decoded with the source's
    tokenizer; synthetic ids in the source's own vocabulary), `|` marking a document boundary."""
    from pretrain_data.pack import BOUNDARY

    blend = pq.read_table(manifest.root / manifest.blend["file"]).slice(0, n).to_pylist()
    by_ordinal = {info["ordinal"]: name for name, info in manifest.sources.items()}
    per_shard = manifest.config["windows_per_shard"]
    lines = [f"{manifest.root.name}: {len(manifest.shards)} shards, vocab {manifest.vocab_size}, "
             f"first {len(blend)} windows of the stream"]
    for position, row in enumerate(blend):
        name = by_ordinal[row["source"]]
        info = manifest.sources[name]
        entry = next(s for s in manifest.shards if s.source == name and s.index == row["window"] // per_shard)
        table = pq.read_table(manifest.root / entry.file)
        if info["kind"] == "function_class":
            ys = table.column("ys")[row["window"] % per_shard].as_py()
            lines.append(f"  [{position}] {name}: y = " + " ".join(f"{y:+.2f}" for y in ys[:12]) + " ...")
            continue
        ids = table.column("input_ids")[row["window"] % per_shard].as_py()
        pieces = _split_at(ids, BOUNDARY)
        if "tokenizer" in info:
            from pretrain_data.text import decode

            vocab_json = (manifest.root / info["tokenizer"]).read_text()
            words = [decode(vocab_json, [i - info["offset"] for i in p]) for p in pieces]
        else:
            words = [" ".join(str(i - info["offset"]) for i in p) for p in pieces]
        body = " | ".join(words).replace("\n", " ")
        lines.append(f"  [{position}] {name}: {body[:width]}{'...' if len(body) > width else ''}")
    return "\n".join(lines)


def _split_at(ids: list[int], boundary: int) -> list[list[int]]:
    pieces, current = [], []
    for i in ids:
        if i == boundary:
            pieces.append(current)
            current = []
        else:
            current.append(i)
    return pieces + [current]
