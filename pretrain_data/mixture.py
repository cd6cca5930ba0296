"""Build a token mixture: Ray tasks per (source, shard), a blended index, the statistics card, then the manifest.

    manifest = build_mixture(MixtureConfig(...), "runs/data")      # Ray must be initialised by the caller

Layout of `<data_root>/<name>-<hash8>/` (or `out_dir`):
  <source>-00000.parquet ...  windows of one source (pretrain_data/pack.py), readable with
                              datasets.load_dataset("parquet", data_files=...)
  blend.parquet               the stream: position i is window `window` of source `source` (Megatron/OLMo style)
  <source>.tokenizer.json     text sources: the tokenizer that decodes them
  stats.json, manifest.json   the card, then the manifest (written last: its presence means complete)

Vocabulary: id 0 ends every document; each source's ids follow in sorted source-name order, so the layout, like
the hash, does not depend on the order sources are written in the YAML. Every shard is a pure function of
(config, source, shard index): byte-identical for any worker count, and a build that stopped part way redoes only
the shards that are missing.
"""
from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from metaicl.core.errors import ConfigError
from metaicl.core.hashing import config_hash, file_sha256
from metaicl.core.io import write_json, write_parquet, write_text
from pretrain_data.blend import blended_index
from pretrain_data.manifest import Manifest, ShardEntry
from pretrain_data.mixture_config import MixtureConfig, SourceConfig
from pretrain_data.pack import pack, stream_tokens
from pretrain_data.sources import Docs, apply_transforms, bursty_separators, generate, prompt_table, source_vocab
from pretrain_data.tasks import run_tasks


def mixture_hash(cfg: MixtureConfig) -> str:
    return config_hash(cfg.resolved())


def mixture_dir(cfg: MixtureConfig, data_root: str | Path) -> Path:
    return Path(data_root) / f"{cfg.name}-{mixture_hash(cfg)[:8]}"


@dataclass
class Corpus:
    """A finite source, tokenised and transformed once: its documents and the tokenizer that made them."""
    docs: Docs
    vocab: int
    tokenizer_json: str


def prepare_text(name: str, source: SourceConfig, seed: int, base_dir: Path, prefix: str) -> Corpus:
    from pretrain_data import text

    cfg = source.text
    texts = text.load_texts(cfg, base_dir, prefix=f"{prefix}.text")
    tokenizer, tokenizer_json = text.load_tokenizer(cfg, texts, base_dir)
    tokens = text.encode(tokenizer, texts)
    keep = [i for i, t in enumerate(tokens) if len(t) >= cfg.min_doc_tokens]
    docs = Docs([tokens[i] for i in keep], np.full(len(keep), -1, np.int32), np.array(keep, np.int64))
    vocab = text.text_vocab_size(tokenizer)
    return Corpus(apply_transforms(docs, source.transforms, vocab, seed, (name,), prefix), vocab, tokenizer_json)


def synthetic_docs(source: SourceConfig, seed: int, name: str, shard: int, need: int, vocab: int,
                   prefix: str) -> Docs:
    """Batches of fresh documents, each transformed on its own, until they fill `need` stream tokens."""
    parts, total = [], 0
    while total < need:
        batch = apply_transforms(generate(source, seed, name, shard, len(parts)), source.transforms, vocab, seed,
                                 (name, shard, len(parts)), prefix)
        parts.append(batch)
        total += stream_tokens(batch)
    return Docs([t for p in parts for t in p.tokens], np.concatenate([p.groups for p in parts]),
                np.concatenate([p.ids for p in parts]))


def write_synthetic_shard(source: SourceConfig, cfg: MixtureConfig, name: str, index: int, rows: int,
                          offset: int, vocab: int, path: Path) -> None:
    if not path.exists():
        docs = synthetic_docs(source, cfg.seed, name, index, rows * cfg.context_length, vocab,
                              f"pretrain.sources.{name}")
        write_parquet(path, pack(docs, offset, cfg.context_length, rows))


def write_prompt_shard(source: SourceConfig, cfg: MixtureConfig, name: str, index: int, rows: int,
                       path: Path) -> None:
    if not path.exists():
        write_parquet(path, prompt_table(source, cfg.seed, name, index, rows))


def write_slice(table: pa.Table, start: int, rows: int, path: Path) -> None:
    if not path.exists():
        write_parquet(path, table.slice(start, rows))


def corpus_windows(name: str, corpus: Corpus, source: SourceConfig, windows: int, cfg: MixtureConfig,
                   offset: int) -> tuple[pa.Table, float]:
    """All windows of a finite source: its documents repeated as many (whole) epochs as the quota needs."""
    need, unique = windows * cfg.context_length, stream_tokens(corpus.docs)
    epochs = need / max(unique, 1)
    if epochs > source.max_epochs:
        raise ConfigError(f"pretrain.sources.{name}",
                          f"quota of {need} tokens needs {epochs:.2f} epochs of its {unique} tokens, max_epochs="
                          f"{source.max_epochs}; lower its weight or token_budget, or raise max_epochs")
    d = corpus.docs
    repeats = math.ceil(epochs)
    docs = Docs(d.tokens * repeats, np.tile(d.groups, repeats), np.tile(d.ids, repeats))
    return pack(docs, offset, cfg.context_length, windows), epochs


def build_mixture(cfg: MixtureConfig, data_root: str | Path, max_in_flight: int | None = None,
                  progress: bool = True, out_dir: str | Path | None = None, base_dir: str | Path = ".") -> Manifest:
    """Build (or reuse) the mixture's data directory; relative text paths resolve against `base_dir`."""
    cfg.validate()
    out = Path(out_dir) if out_dir else mixture_dir(cfg, data_root)
    if (out / "manifest.json").exists():
        return Manifest.read(out / "manifest.json")
    names = sorted(cfg.sources)
    corpora = {n: prepare_text(n, cfg.sources[n], cfg.seed, Path(base_dir), f"pretrain.sources.{n}")
               for n in names if cfg.sources[n].kind == "text"}
    vocab = {n: corpora[n].vocab if n in corpora else source_vocab(cfg.sources[n]) for n in names}
    offsets = dict(zip(names, np.cumsum([1] + [vocab[n] for n in names[:-1]]).tolist()))
    blend = blended_index([cfg.sources[n].weight for n in names], cfg.windows())
    windows = {n: int((blend == i).sum()) for i, n in enumerate(names)}
    tables = {n: corpus_windows(n, corpora[n], cfg.sources[n], windows[n], cfg, offsets[n]) for n in corpora}
    created = not out.exists()  # checked after every quota: an impossible config leaves nothing behind
    try:
        return _write(cfg, out, names, vocab, offsets, blend, windows, tables, corpora, max_in_flight, progress)
    except ConfigError:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _write(cfg, out, names, vocab, offsets, blend, windows, tables, corpora, max_in_flight, progress) -> Manifest:
    import ray

    out.mkdir(parents=True, exist_ok=True)
    items, entries = [], []
    for name in names:
        source, per = cfg.sources[name], cfg.windows_per_shard
        table = tables[name][0] if name in tables else None  # shared through Ray's object store when it runs
        ref = ray.put(table) if table is not None and ray.is_initialized() else table
        for index in range(math.ceil(windows[name] / per)):
            rows, path = min(per, windows[name] - index * per), out / f"{name}-{index:05d}.parquet"
            if ref is not None:
                items.append((write_slice, (ref, index * per, rows, path)))
            elif source.kind == "function_class":
                items.append((write_prompt_shard, (source, cfg, name, index, rows, path)))
            else:
                items.append((write_synthetic_shard, (source, cfg, name, index, rows, offsets[name], vocab[name],
                                                      path)))
            entries.append(ShardEntry(split="train", index=index, file=path.name, rows=rows, sha256="",
                                      source=name, tokens=rows * cfg.context_length))
    run_tasks(_call, items, f"data {out.name}", max_in_flight, progress)
    for entry in entries:
        entry.sha256 = file_sha256(out / entry.file)
    for name, corpus in corpora.items():
        write_text(out / f"{name}.tokenizer.json", corpus.tokenizer_json)
    position = np.zeros(len(names), np.int64)
    window = np.empty(len(blend), np.int64)
    for i, s in enumerate(blend):  # i-th window of the stream = the next unused window of its source
        window[i], position[s] = position[s], position[s] + 1
    write_parquet(out / "blend.parquet", pa.table({"source": pa.array(blend.astype(np.int16)),
                                                   "window": pa.array(window)}))
    sources = {}
    for i, name in enumerate(names):
        s = cfg.sources[name]
        sources[name] = {"ordinal": i, "kind": s.kind, "offset": offsets[name], "vocab_size": vocab[name],
                         "weight": s.weight, "windows": windows[name],
                         "tokens": windows[name] * cfg.context_length,
                         "share": round(windows[name] / len(blend), 6)}
        separators = bursty_separators(s.bursty_fewshot) if s.kind == "bursty_fewshot" else None
        if separators:  # the mixture's ids of the episode separators (tasks.separators reads them)
            sources[name]["separators"] = {"input": offsets[name] + separators[0],
                                           "example": offsets[name] + separators[1]}
        if name in corpora:
            sources[name].update(tokenizer=f"{name}.tokenizer.json", epochs=round(tables[name][1], 4),
                                 unique_tokens=stream_tokens(corpora[name].docs))
    manifest = Manifest(kind="mixture", config=cfg.resolved(), config_hash=mixture_hash(cfg), shards=entries,
                        sources=sources, blend={"file": "blend.parquet", "sha256": file_sha256(out / "blend.parquet")},
                        vocab_size=int(offsets[names[-1]] + vocab[names[-1]]) if any(vocab.values()) else 0,
                        path=out / "manifest.json")
    from pretrain_data.mixture_stats import mixture_stats

    write_json(out / "stats.json", mixture_stats(manifest, cfg.stats, max_in_flight, progress))
    return manifest.write(out / "manifest.json")


def _call(fn, args):
    """One task body for both shard kinds; an object ref among the arguments (a text source's windows, put in
    the object store once) is fetched here, since Ray resolves only top-level arguments."""
    import ray

    return fn(*(ray.get(a) if isinstance(a, ray.ObjectRef) else a for a in args))
