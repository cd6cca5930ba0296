"""Blending, near-duplicate removal and dependency ordering do what In-Context Pretraining and Megatron need."""
from __future__ import annotations

import numpy as np
import pytest

from metaicl.core.seeding import rng_for
from pretrain_data.blend import blended_index
from pretrain_data.transforms import adjacent_similarity, dedup_keep, dependency_order, embed, random_order


@pytest.mark.parametrize("weights", [[0.7, 0.3], [1, 1, 1], [0.5, 0.25, 0.125, 0.125], [0.9, 0.05, 0.05]])
def test_every_prefix_of_the_blend_has_the_declared_proportions(weights):
    index = blended_index(weights, 2000)
    share = np.asarray(weights) / np.sum(weights)
    counts = np.zeros(len(weights))
    for m, k in enumerate(index, start=1):
        counts[k] += 1
        assert np.abs(counts - share * m).max() < 1.0


def test_blend_rejects_bad_weights():
    for bad in ([], [0, 0], [1, -1]):
        with pytest.raises(ValueError, match="weights"):
            blended_index(bad, 10)


def clustered_docs(clusters: int = 20, per: int = 10, length: int = 200, seed: int = 0):
    """Documents of a cluster draw from the cluster's own 40-token vocabulary (plus shared noise)."""
    rng = rng_for(seed, "clusters")
    docs, labels = [], []
    for c in range(clusters):
        vocab = rng.choice(5000, size=40, replace=False)
        for _ in range(per):
            own = rng.choice(vocab, size=length)
            noise = rng.integers(0, 5000, size=length)
            docs.append(np.where(rng.random(length) < 0.8, own, noise))
            labels.append(c)
    order = rng.permutation(len(docs))  # shuffle so the input order carries no cluster information
    return [docs[i] for i in order], np.asarray(labels)[order]


def same_cluster_neighbours(labels: np.ndarray, order: np.ndarray) -> float:
    return float((labels[order][1:] == labels[order][:-1]).mean())


def test_dependency_order_puts_cluster_members_next_to_each_other_random_order_does_not():
    docs, labels = clustered_docs()
    emb = embed(docs)
    order = dependency_order(emb, k=5)
    assert sorted(order) == list(range(len(docs)))  # each document exactly once
    assert same_cluster_neighbours(labels, order) > 0.85
    shuffled = random_order(len(docs), seed=0)
    assert same_cluster_neighbours(labels, shuffled) < 0.2
    assert adjacent_similarity(emb, order) > 2 * adjacent_similarity(emb, shuffled)


def test_dedup_removes_planted_near_duplicates_and_keeps_the_rest():
    rng = rng_for(0, "dedup")
    originals = [rng.integers(0, 10_000, size=300) for _ in range(60)]
    near = []
    for i in range(0, 60, 3):  # a near duplicate of every third document: 2 of 300 tokens changed (Jaccard ~0.93)
        copy = originals[i].copy()
        copy[rng.choice(300, size=2, replace=False)] = rng.integers(0, 10_000, size=2)
        near.append(copy)
    docs = originals + near
    keep = dedup_keep(docs, threshold=0.85)
    assert list(keep) == list(range(60))  # every original kept (lowest index wins), every planted copy dropped


def test_dedup_keeps_documents_below_the_threshold():
    rng = rng_for(1, "dedup")
    base = rng.integers(0, 10_000, size=300)
    half = base.copy()
    half[150:] = rng.integers(0, 10_000, size=150)  # shares about a third of its 5-grams with base
    assert list(dedup_keep([base, half], threshold=0.85)) == [0, 1]
