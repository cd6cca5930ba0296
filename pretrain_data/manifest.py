"""The manifest: the contract between the data layer and everything above it (STYLE principle 10).

A data directory is complete when its `manifest.json` exists: it is written last, atomically, after every shard.
`verify()` checks the files against it before a stage reads them (a file removed, truncated or changed since).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from metaicl.core.errors import RunFailed
from metaicl.core.hashing import file_sha256
from metaicl.core.io import read_json, write_json

FORMAT = 1
HASH_LIMIT = 256 << 20
"""verify() hashes every file when the directory holds at most this many bytes (milliseconds per MB); beyond it,
each parquet file's footer must read back with the row count the manifest says (catches truncation)."""


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

    def files(self) -> list[tuple[str, str, int | None]]:
        """(path relative to the directory, sha256, rows or None) of every file the manifest vouches for."""
        out = [(s.file, s.sha256, s.rows) for s in self.shards]
        out += [(extra["file"], extra["sha256"], None) for extra in (self.class_table, self.blend) if extra]
        return out

    def verify(self, hash_limit: int = HASH_LIMIT) -> None:
        """RunFailed naming the first file that is missing, truncated or changed since the manifest was written."""
        import pyarrow.parquet as pq

        files = self.files()
        paths = [self.root / f for f, _, _ in files]
        missing = next((p for p in paths if not p.is_file()), None)
        if missing is not None:
            raise RunFailed(f"data directory {self.root} is damaged: {missing.name} is missing; remove the "
                            f"directory to rebuild it")
        hash_all = sum(p.stat().st_size for p in paths) <= hash_limit
        for path, (_, sha256, rows) in zip(paths, files):
            if hash_all:
                ok = file_sha256(path) == sha256
            else:
                try:
                    ok = rows is None or pq.ParquetFile(path).metadata.num_rows == rows
                except Exception:  # a truncated footer: pyarrow's ArrowInvalid, or an OSError
                    ok = False
            if not ok:
                raise RunFailed(f"data directory {self.root} is damaged: {path.name} differs from its manifest "
                                f"(truncated or changed since it was built); remove the directory to rebuild it")

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
