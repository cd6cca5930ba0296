"""Stable content hashes: of configs (sorted JSON) and of files (sha256)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable


def config_hash(cfg: dict[str, Any], exclude: Iterable[str] = ()) -> str:
    """sha256 of the config as sorted JSON, without the dotted keys in `exclude` (non-semantic knobs such as
    worker counts or paths), so two configs that produce the same result share one hash."""
    pruned = json.loads(json.dumps(cfg))
    for dotted in exclude:
        parts = dotted.split(".")
        node = pruned
        for part in parts[:-1]:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    blob = json.dumps(pruned, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
