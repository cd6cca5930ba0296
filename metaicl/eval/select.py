"""Which demonstrations each query sees, and in what order (`eval.demos.selection`, `eval.demos.order`).

    sets = demos_per_query(task, queries, k=8, seed=100, cfg=DemosConfig(selection="bm25"), tok=tok)

  selection random  MetaICL's protocol: one set of k drawn per seed, the same for every query (sample_demos).
            balanced  one set per seed too, every label as evenly as the pool allows (each at least
                    floor(k / labels) times where it has the examples): with 3 classes a random set lacks one
                    about half the time at k = 4 and an eighth at k = 8, and no reader maps a word it never
                    sees. A MetaICL-layout file that fixes the set still wins.
            bm25    the k training examples whose inputs score highest for the query's input under Okapi BM25
                    (Robertson & Zaragoza 2009; terms are token ids, so it works on synthetic tasks too).
            knn     the k nearest by cosine of the scoring model's mean final hidden state over the input (the
                    `lm` embedder; Liu et al. 2022, "What Makes Good In-Context Examples for GPT-3?", retrieve by a
                    sentence encoder's embedding).
            mmr     maximal marginal relevance (Carbonell & Goldstein 1998) on those embeddings: greedily the
                    example with the best lambda * similarity to the query - (1 - lambda) * its largest similarity
                    to one already chosen (`eval.demos.mmr_lambda`; 1 = knn).
            dpp     the greedy MAP set of a determinantal point process whose kernel is quality x similarity,
                    L_ij = q_i K_ij q_j with K the embeddings' cosine and q_i = (1 + cos(query, i)) / 2 (Ye et al.
                    2023, "Compositional Exemplars for In-context Learning"; Chen et al. 2018's fast greedy MAP):
                    relevant and diverse.
  order     random  as drawn (a retrieved set shuffled, keyed by seed, task, k and query);
            similar_last / similar_first  by similarity to the query, the most similar next to the query / first
                    (Liu et al. 2022 put the nearest last). The similarity is the embeddings' under knn, mmr
                    and dpp, else BM25's.
            entropy  Lu et al. 2022 ("Fantastically Ordered Prompts"), GlobalE: of `eval.demos.orders` candidate
                    orders of the shared set, the one whose predicted labels on a probing set are the most
                    evenly spread (largest entropy of the predicted-label histogram: a prompt that sends every
                    probe to one label is a bad prompt). Lu et al. generate the probes with the LM; here they are
                    `eval.demos.probes` unlabeled inputs of the training pool that the set does not show (keyed
                    by seed, task, k), so no test input is read. The same order for every query.
Ties are broken by the pool's order. Similarities are computed once per (task, measure) for every query.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Callable

import numpy as np

from metaicl.core.seeding import rng_for
from metaicl.data.tasks import Example, Task, sample_demos

SELECTIONS = ("random", "balanced", "bm25", "knn", "mmr", "dpp")
SHARED = ("random", "balanced")
"""Selections that give every query the same set (per seed)."""
EMBEDDED = ("knn", "mmr", "dpp")
"""Selections that read the embeddings (the `lm` embedder); the others, and the order of a random set, BM25."""
ORDERS = ("random", "similar_last", "similar_first", "entropy")
SIMILAR = ("similar_last", "similar_first")
"""Orders by each query's similarity: they give every query its own sequence."""


def bm25(queries: list[list[int]], docs: list[list[int]], k1: float = 1.5, b: float = 0.75) -> np.ndarray:
    """(queries, docs) Okapi BM25 scores: sum over the query's distinct terms t of
    idf(t) * f(t, d) (k1 + 1) / (f(t, d) + k1 (1 - b + b |d| / avgdl)),
    idf(t) = ln(1 + (N - n_t + 0.5) / (n_t + 0.5))."""
    counts = [Counter(d) for d in docs]
    n, avgdl = len(docs), max(1e-9, sum(map(len, docs)) / max(1, len(docs)))
    df = Counter(t for c in counts for t in c)
    out = np.zeros((len(queries), n))
    for i, q in enumerate(queries):
        for t in set(q):
            if t not in df:
                continue
            idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
            for j, c in enumerate(counts):
                f = c.get(t, 0)
                if f:
                    out[i, j] += idf * f * (k1 + 1) / (f + k1 * (1 - b + b * len(docs[j]) / avgdl))
    return out


def lm_embedder(model, tok, device="cpu", batch: int = 32) -> Callable[[list[str]], np.ndarray]:
    """texts -> (n, width) unit vectors: the model's mean final hidden state over each text's tokens."""
    import torch

    from metaicl.data.episodes import pad
    from metaicl.models.lm import final_states

    def embed(texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), batch):
            ids = [tok.encode(t) or [tok.bos_id] for t in texts[start:start + batch]]
            x, mask = pad(ids, [[1] * len(i) for i in ids])
            with torch.no_grad():
                hidden = final_states(model, input_ids=x.to(device))[1].float().cpu()
            mean = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            out.append(torch.nn.functional.normalize(mean, dim=-1).numpy())
        return np.concatenate(out)
    return embed


def similarity(task: Task, queries: list[Example], measure: str, tok, embed=None,
               within_pool: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """(queries, training pool) similarity of each query's input to each training example's input, and with
    `within_pool` (knn only) the pool's own (pool, pool) similarities; the pool is embedded once."""
    if measure == "bm25":
        return bm25([tok.encode(q.input) for q in queries], [tok.encode(e.input) for e in task.train]), None
    pool = embed([e.input for e in task.train])
    return embed([q.input for q in queries]) @ pool.T, pool @ pool.T if within_pool else None


def mmr(relevance: np.ndarray, pairwise: np.ndarray, k: int, lam: float) -> list[int]:
    """Maximal marginal relevance: k indices, each maximising lam * relevance - (1 - lam) * max similarity to
    those already chosen (ties: the lowest index)."""
    chosen: list[int] = []
    redundancy = np.zeros(len(relevance))
    for _ in range(min(k, len(relevance))):
        gain = lam * relevance - (1 - lam) * redundancy
        gain[chosen] = -np.inf
        j = int(np.argmax(gain))
        chosen.append(j)
        redundancy = np.maximum(redundancy, pairwise[j]) if len(chosen) > 1 else pairwise[j].copy()
    return chosen


def dpp_greedy(kernel: np.ndarray, k: int) -> list[int]:
    """Greedy MAP of a DPP with PSD kernel L (Chen et al. 2018): each step adds the item of the largest marginal
    gain in log det L_S, kept as d_i^2 and updated by one incremental Cholesky row (O(k n) a step)."""
    n = len(kernel)
    d2, rows, chosen = np.diag(kernel).astype(np.float64).copy(), np.zeros((min(k, n), n)), []
    for t in range(min(k, n)):
        j = int(np.argmax(d2))
        if d2[j] <= 1e-12:  # nothing left adds volume: the rest by their own quality
            rest = [i for i in np.argsort(-np.diag(kernel), kind="stable") if i not in chosen]
            return chosen + [int(i) for i in rest[: k - len(chosen)]]
        chosen.append(j)
        rows[t] = (kernel[j] - rows[:t, j] @ rows[:t]) / np.sqrt(d2[j])
        d2 = d2 - rows[t] ** 2
        d2[chosen] = -np.inf
    return chosen


def balanced_demos(task: Task, k: int, seed: int) -> list[Example]:
    """k training examples, the labels taken in turn (in a random label order, each label's examples in a random
    order) until k are drawn, then shuffled; keyed by (seed, task, k). A label short of examples is skipped once
    it runs out."""
    if (k, seed) in task.fixed_demos:
        return sample_demos(task, k, seed)
    rng = rng_for(seed, "balanced-demos", task.name, k)
    by_label: dict[str, list[int]] = {}
    for i, e in enumerate(task.train):
        by_label.setdefault(e.output, []).append(i)
    queues = [[pool[int(j)] for j in rng.permutation(len(pool))] for pool in by_label.values()]
    queues = [queues[int(j)] for j in rng.permutation(len(queues))]
    picked: list[int] = []
    while len(picked) < min(k, len(task.train)):
        for queue in queues:
            if queue and len(picked) < k:
                picked.append(queue.pop(0))
    return [task.train[picked[int(j)]] for j in rng.permutation(len(picked))]


def global_entropy(predicted: np.ndarray, labels: int) -> float:
    """Lu et al. 2022's GlobalE: entropy (nats) of the histogram of predicted labels over the probes."""
    p = np.bincount(predicted, minlength=labels) / max(1, len(predicted))
    return float(-(p[p > 0] * np.log(p[p > 0])).sum())


def candidate_orders(n: int, count: int, rng: np.random.Generator) -> list[list[int]]:
    """Up to `count` distinct orders of n items, the given order first: all of them when n! <= count, else random
    distinct permutations."""
    if math.factorial(n) <= count:
        from itertools import permutations

        return [list(p) for p in permutations(range(n))]
    out, seen = [list(range(n))], {tuple(range(n))}
    while len(out) < count:
        order = rng.permutation(n).tolist()
        if tuple(order) not in seen:
            seen.add(tuple(order))
            out.append(order)
    return out


def probes_for(task: Task, demos: list[Example], count: int, seed: int) -> list[Example]:
    """Lu et al.'s probing set, from the pool: `count` training examples whose inputs the set does not show (their
    labels are never read; the set's may be relabelled copies, eval.demos.labels), keyed by (seed, task, k)."""
    shown = {d.input for d in demos}
    rest = [e for e in task.train if e.input not in shown]
    rng = rng_for(seed, "probes", task.name, len(demos))
    return [rest[int(i)] for i in rng.permutation(len(rest))[:count]]


def entropy_order(demos: list[Example], task: Task, seed: int, count: int, labels_of) -> list[Example]:
    """The demonstrations in the candidate order of largest GlobalE; labels_of(ordered demos) -> the predicted
    option index of each probe. Ties: the earlier candidate (the drawn order first)."""
    rng = rng_for(seed, "entropy-order", task.name, len(demos))
    best, best_e = demos, -1.0
    for order in candidate_orders(len(demos), count, rng):
        ordered = [demos[i] for i in order]
        e = global_entropy(np.asarray(labels_of(ordered)), len(task.options))
        if e > best_e + 1e-12:
            best, best_e = ordered, e
    return best


def shared_set(task: Task, k: int, seed: int, selection: str) -> list[Example]:
    """The one demonstration set of (task, k, seed) that a shared selection gives every query."""
    return balanced_demos(task, k, seed) if selection == "balanced" else sample_demos(task, k, seed)


def demos_per_query(task: Task, queries: list[Example], k: int, seed: int, cfg, tok, embed=None,
                    cache: dict | None = None) -> list[list[Example]]:
    """The k demonstrations of each query, selected and ordered as `cfg` (a DemosConfig) says."""
    measure = "knn" if cfg.selection in EMBEDDED else "bm25"
    diverse = cfg.selection in ("mmr", "dpp")
    key = (task.name, measure, len(queries), diverse)
    if cache is not None and key in cache:
        sim, pool = cache[key]
    else:  # mmr and dpp also need the pool's own similarities: their diversity term
        sim, pool = similarity(task, queries, measure, tok, embed, within_pool=diverse)
        if cache is not None:
            cache[key] = sim, pool
    fixed = None
    if cfg.selection in SHARED:
        fixed = [task.train.index(d) for d in shared_set(task, k, seed, cfg.selection)]
    out = []
    for q, row in enumerate(sim):
        if fixed is not None:
            chosen = fixed
        elif cfg.selection == "mmr":
            chosen = mmr(row, pool, k, cfg.mmr_lambda)
        elif cfg.selection == "dpp":
            quality = np.clip((1 + row) / 2, 1e-6, None)
            chosen = dpp_greedy(quality[:, None] * pool * quality[None, :], k)
        else:
            chosen = list(np.argsort(-row, kind="stable")[:k])
        if cfg.order == "random":
            if fixed is None:
                chosen = [chosen[i] for i in rng_for(seed, "demo-order", task.name, k, q).permutation(len(chosen))]
        else:  # ascending similarity puts the most similar last; a stable sort keeps ties in pool order
            chosen = sorted(chosen, key=lambda j: row[j], reverse=cfg.order == "similar_first")
        out.append([task.train[int(j)] for j in chosen])
    return out
