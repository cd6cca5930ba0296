"""The manifest: the contract between the data layer and everything above it (STYLE principle 10).

A data directory is complete when its `manifest.json` exists: it is written last, atomically, after every shard.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from metaicl.core.io import read_json, write_json

FORMAT = 1


@dataclass
class ShardEntry:
    split: str
    index: int
    file: str
    """Path relative to the data directory."""
    rows: int
    sha256: str
    noise_seed: int = 0
    """Few-shot data: seed of the within-class noise drawn when this shard's items are materialised."""
    source: str = ""
    """Token mixtures: the source whose windows this shard holds."""
    tokens: int = 0
    """Token mixtures: tokens in the shard (rows x context_length)."""


@dataclass
class Manifest:
    kind: str
    config: dict
    config_hash: str
    shards: list[ShardEntry] = field(default_factory=list)
    class_table: dict = field(default_factory=dict)
    """{"file", "sha256"} of classes.parquet (class means and training labels)."""
    sources: dict = field(default_factory=dict)
    """Token mixtures: per source its kind, vocabulary offset and size, weight, windows and realised tokens."""
    blend: dict = field(default_factory=dict)
    """Token mixtures: {"file", "sha256"} of blend.parquet, the stream's (source, window) order."""
    vocab_size: int = 0
    """Token mixtures: size of the shared vocabulary (id 0 = document boundary)."""
    format: int = FORMAT
    path: Path | None = None
    """Where it was read from or written to (not serialised)."""

    @property
    def root(self) -> Path:
        assert self.path is not None, "manifest has no location yet"
        return self.path.parent

    def split(self, name: str) -> list[ShardEntry]:
        return sorted((s for s in self.shards if s.split == name), key=lambda s: s.index)

    def rows(self, name: str) -> int:
        return sum(s.rows for s in self.split(name))

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("path")
        return out

    def write(self, path: str | Path) -> "Manifest":
        write_json(path, self.to_dict())
        self.path = Path(path)
        return self

    @classmethod
    def read(cls, path: str | Path) -> "Manifest":
        path = Path(path)
        if path.is_dir():
            path = path / "manifest.json"
        data = read_json(path)
        if data.get("format") != FORMAT:
            raise ValueError(f"{path}: manifest format {data.get('format')!r}, expected {FORMAT}")
        shards = [ShardEntry(**s) for s in data.pop("shards")]
        return cls(shards=shards, path=path, **data)
