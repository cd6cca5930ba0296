"""Document transforms on token arrays: near-duplicate removal and dependency ordering.

    keep = dedup_keep(docs, threshold=0.85)                  # indices of documents to keep
    order = dependency_order(embed(docs), k=10)              # In-Context Pretraining's document order
    adjacent_similarity(embed(docs), order)                  # how related neighbouring documents are

Near duplicates: MinHash signatures of hashed token n-grams, LSH banding for candidates, exact n-gram Jaccard to
confirm (>= threshold; In-Context Pretraining, Shi et al. 2024, uses 0.85); of each group the first is kept.
Dependency ordering (Shi et al. 2024, Sec. 2.2): embed documents (hashed TF-IDF here), link each to its k nearest
neighbours, then walk greedily: from the current document go to its most similar unvisited neighbour; when none is
left, restart from the unvisited document with the fewest links. Each document is visited once, so related
documents land next to each other (and in the same context window after packing).
"""
from __future__ import annotations

import numpy as np

from metaicl.core.seeding import rng_for

_MERSENNE = np.uint64((1 << 61) - 1)


def shingles(doc: np.ndarray, n: int = 5) -> np.ndarray:
    """Distinct hashed token n-grams of one document (uint64)."""
    doc = np.asarray(doc, np.uint64)
    if len(doc) < n:
        n = max(1, len(doc))
    h = np.zeros(len(doc) - n + 1, np.uint64)
    for j in range(n):  # polynomial rolling hash, wraps mod 2^64
        h = h * np.uint64(1_000_003) + doc[j : len(doc) - n + 1 + j] + np.uint64(1)
    return np.unique(h)


def minhash(sets: list[np.ndarray], num_perm: int = 64, seed: int = 0) -> np.ndarray:
    """(n_docs, num_perm) MinHash signatures with universal hashes (a*x + b) mod (2^61 - 1)."""
    rng = rng_for(seed, "minhash")
    a = rng.integers(1, 1 << 61, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, 1 << 61, size=num_perm, dtype=np.uint64)
    out = np.empty((len(sets), num_perm), np.uint64)
    for i, s in enumerate(sets):
        x = (s % _MERSENNE)[:, None]
        out[i] = ((a * x + b) % _MERSENNE).min(axis=0)  # overflow in a*x is part of the hash family here
    return out


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter) if (a.size + b.size) else 1.0


def dedup_keep(docs: list[np.ndarray] | np.ndarray, threshold: float = 0.85, n: int = 5, bands: int = 16,
               rows: int = 4, seed: int = 0) -> np.ndarray:
    """Indices of the documents to keep: of every group of near duplicates (n-gram Jaccard >= threshold) the one
    with the lowest index. LSH with `bands` x `rows` MinHash values finds candidates; Jaccard confirms them."""
    sets = [shingles(d, n) for d in docs]
    sig = minhash(sets, bands * rows, seed)
    parent = list(range(len(sets)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for band in range(bands):
        buckets: dict[bytes, list[int]] = {}
        for i, key in enumerate(sig[:, band * rows : (band + 1) * rows]):
            buckets.setdefault(key.tobytes(), []).append(i)
        for members in buckets.values():
            for j in members[1:]:
                if find(j) != find(members[0]) and jaccard(sets[members[0]], sets[j]) >= threshold:
                    lo, hi = sorted((find(j), find(members[0])))
                    parent[hi] = lo
    return np.array([i for i in range(len(sets)) if find(i) == i], np.int64)


def embed(docs: list[np.ndarray] | np.ndarray, dim: int = 1024) -> np.ndarray:
    """Hashed TF-IDF bag of tokens, L2-normalised: (n_docs, dim) float32."""
    rows = np.repeat(np.arange(len(docs)), [len(d) for d in docs])
    tokens = np.concatenate([np.asarray(d, np.int64) for d in docs]) if len(docs) else np.zeros(0, np.int64)
    buckets = rows * dim + (tokens * 2654435761) % dim  # one bincount for all documents
    tf = np.bincount(buckets, minlength=len(docs) * dim).reshape(len(docs), dim).astype(np.float32)
    idf = np.log((1 + len(docs)) / (1 + (tf > 0).sum(axis=0))) + 1
    x = tf * idf
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn(emb: np.ndarray, k: int) -> np.ndarray:
    """(n, k) indices of each row's k most cosine-similar other rows, most similar first (brute force, blocked)."""
    n = len(emb)
    k = min(k, n - 1)
    out = np.empty((n, k), np.int64)
    for start in range(0, n, 1024):
        sims = emb[start : start + 1024] @ emb.T
        sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -np.inf
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
        out[start : start + 1024] = np.take_along_axis(part, order, axis=1)
    return out


def dependency_order(emb: np.ndarray, k: int = 10) -> np.ndarray:
    """A permutation of the documents that visits each once, neighbours next to each other (see module doc)."""
    n = len(emb)
    if n <= 1:
        return np.arange(n)
    neighbours = knn(emb, k)
    degree = np.bincount(neighbours.ravel(), minlength=n)  # in-degree in the kNN graph
    visited = np.zeros(n, bool)
    order = []
    by_degree, pointer = np.argsort(degree, kind="stable"), 0
    current = int(by_degree[0])
    while True:
        visited[current] = True
        order.append(current)
        if len(order) == n:
            return np.array(order, np.int64)
        nxt = next((int(j) for j in neighbours[current] if not visited[j]), None)
        if nxt is None:  # dead end: restart from the least-linked unvisited document
            while visited[by_degree[pointer]]:
                pointer += 1
            nxt = int(by_degree[pointer])
        current = nxt


def random_order(n: int, seed: int) -> np.ndarray:
    """The equal-token control: the same documents in a random order."""
    return rng_for(seed, "random_order").permutation(n)


def adjacent_similarity(emb: np.ndarray, order: np.ndarray) -> float:
    """Mean cosine similarity of consecutive documents in `order`."""
    e = emb[order]
    return float((e[1:] * e[:-1]).sum(axis=1).mean())
