"""Read a token mixture back as its blended stream of windows: what a language-model trainer consumes.

    stream = TokenStream(Manifest.read("runs/data/zipf-1a2b3c4d"))
    len(stream)                    # windows in the stream
    stream.windows([0, 1, 2])      # (3, context_length) int32, in stream order

Position i is window blend.window[i] of source blend.source[i] (Megatron/OLMo blended index). Shards are read
lazily and kept (a mixture of the default size is a few MB per source).
"""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from pretrain_data.manifest import Manifest
from pretrain_data.reader import fixed_list


class TokenStream:
    def __init__(self, manifest: Manifest):
        if manifest.kind != "mixture":
            raise ValueError(f"{manifest.root} holds {manifest.kind!r} data, not a token mixture")
        self.manifest = manifest
        blend = pq.read_table(manifest.root / manifest.blend["file"])
        self.source = blend.column("source").to_numpy()
        self.window = blend.column("window").to_numpy()
        self.per_shard = manifest.config["windows_per_shard"]
        names = {info["ordinal"]: name for name, info in manifest.sources.items()}
        self.files = {(names[o], s.index): s.file for s in manifest.shards for o in names
                      if names[o] == s.source}
        self.ordinal_name = names
        self._cache: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.source)

    def _shard(self, file: str) -> np.ndarray:
        if file not in self._cache:
            self._cache[file] = fixed_list(pq.read_table(self.manifest.root / file).column("input_ids"))
        return self._cache[file]

    def locate(self, positions) -> list[tuple[str, int]]:
        """(shard file, row) of each stream position."""
        out = []
        for p in np.asarray(positions):
            name, w = self.ordinal_name[int(self.source[p])], int(self.window[p])
            out.append((self.files[(name, w // self.per_shard)], w % self.per_shard))
        return out

    def windows(self, positions) -> np.ndarray:
        return np.stack([self._shard(file)[row] for file, row in self.locate(positions)])


class PromptStream(TokenStream):
    """A function-class mixture's stream: window i is one prompt, (xs (P, d), ys (P,)) float32.

        xs, ys = PromptStream(Manifest.read("runs/data/fc-1a2b3c4d")).windows([0, 1])   # (2, P, d), (2, P)
    """

    def __init__(self, manifest: Manifest):
        super().__init__(manifest)
        first = next(iter(manifest.config["sources"].values()))["function_class"]
        self.n_dims, self.n_points = int(first["n_dims"]), int(first["n_points"])

    def _shard(self, file: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if file not in self._cache:
            table = pq.read_table(self.manifest.root / file)
            xs = fixed_list(table.column("xs")).reshape(-1, self.n_points, self.n_dims)
            ws = fixed_list(table.column("ws")) if "ws" in table.column_names else None
            self._cache[file] = (xs, fixed_list(table.column("ys")), ws)
        return self._cache[file]

    def windows(self, positions) -> tuple[np.ndarray, np.ndarray]:
        shards = [(self._shard(file), row) for file, row in self.locate(positions)]
        return np.stack([xs[row] for (xs, _, _), row in shards]), np.stack([ys[row] for (_, ys, _), row in shards])

    def has_weights(self) -> bool:
        """Every shard keeps its prompts' w (linear families, built by this version)."""
        return all("ws" in pq.read_schema(self.manifest.root / f).names for f in self.files.values())

    def weights(self, positions) -> np.ndarray:
        """(n, d) each prompt's w (linear families); a ValueError naming the shard where it was not kept."""
        out = []
        for file, row in self.locate(positions):
            ws = self._shard(file)[2]
            if ws is None:
                raise ValueError(f"{self.manifest.root / file}: no weights (only linear families keep them)")
            out.append(ws[row])
        return np.stack(out)
