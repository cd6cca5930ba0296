"""Tilted resampling hits the asked Zipf exponent and tail density, by picking documents of the right kind."""
from __future__ import annotations

import dataclasses
import re
from functools import lru_cache

import numpy as np
import pytest

from metaicl.core.seeding import rng_for
from pretrain_data.reweight import tail_enrich, zipf_reweight
from pretrain_data.stats import zipf_mle
from pretrain_data.token_stats import rare_token_density, type_counts
from pretrain_data.zipf_lm import ZipfLMConfig, sample_docs

V, HALF, CUTOFF = 2048, 1000, 256
BASE = ZipfLMConfig(vocab_size=V, doc_length=128, rare_rank_cutoff=CUTOFF)


@lru_cache(maxsize=None)
def pool(knob: str, first: float, second: float) -> tuple[np.ndarray, ...]:
    """HALF documents with `knob` = first (indices < HALF), then HALF with `knob` = second."""
    halves = [sample_docs(dataclasses.replace(BASE, **{knob: v}), rng_for(0, "reweight", knob, str(v)), HALF)
              for v in (first, second)]
    return tuple(np.concatenate(halves))


def selected(docs, idx) -> np.ndarray:
    return np.concatenate([docs[i] for i in idx])


def test_zipf_reweight_hits_the_target_by_shifting_the_mix_between_steep_and_flat_documents():
    docs = list(pool("zipf_alpha", 0.8, 1.6))
    untouched = zipf_mle(type_counts(selected(docs, range(len(docs))), V))
    assert 1.05 < untouched < 1.2  # the mix sits between the halves, so 1.0 asks for flatter and 1.4 for steeper
    steep_share = {}
    for target in (1.0, 1.4):
        idx, alpha = zipf_reweight(docs, target, rng_for(0, "test", target), vocab_size=V)
        assert len(idx) == len(docs)
        assert alpha == pytest.approx(target, abs=0.05)
        assert zipf_mle(type_counts(selected(docs, idx), V)) == pytest.approx(alpha, abs=1e-9)  # measured, not claimed
        steep_share[target] = float(np.mean(idx >= HALF))
    assert steep_share[1.0] < 0.4 and steep_share[1.4] > 0.6  # the pool is 0.5 of each


@pytest.mark.parametrize("target", [0.1, 0.25])
def test_tail_enrich_meets_the_rare_token_density_by_favouring_tail_heavy_documents(target):
    docs = list(pool("rare_token_density", 0.05, 0.4))
    untouched = rare_token_density(selected(docs, range(len(docs))), CUTOFF, V)
    idx, density = tail_enrich(docs, target, rng_for(0, "test", target), vocab_size=V, cutoff=CUTOFF)
    assert abs(untouched - target) > 0.02  # the untouched pool does not already pass
    assert rare_token_density(selected(docs, idx), CUTOFF, V) == pytest.approx(target, abs=0.01)
    assert density == rare_token_density(selected(docs, idx), CUTOFF, V)
    heavy_share = np.mean(idx >= HALF)
    assert heavy_share > 0.5 if target > untouched else heavy_share < 0.5


def test_unreachable_targets_raise_naming_the_reachable_range():
    docs = list(pool("zipf_alpha", 0.8, 1.6))
    with pytest.raises(ValueError, match=r"reaches zipf alpha in \[") as err:
        zipf_reweight(docs, 0.4, rng_for(0, "test"), vocab_size=V)
    lo, hi = map(float, re.search(r"\[([\d.]+), ([\d.]+)\]", str(err.value)).groups())
    assert 0.4 < lo < 0.85 and 1.55 < hi  # about the two halves: tilting selects, it cannot invent flatter text
    with pytest.raises(ValueError, match=r"reaches rare token density in \[[\d.]+, [\d.]+\]"):
        tail_enrich(list(pool("rare_token_density", 0.05, 0.4)), 0.8, rng_for(0, "test"), vocab_size=V, cutoff=CUTOFF)


def test_same_seed_same_indices_in_the_order_drawn_other_seed_other_indices():
    docs = list(pool("zipf_alpha", 0.8, 1.6))
    first, _ = zipf_reweight(docs, 1.3, rng_for(7, "draw"), vocab_size=V, n_out=700)
    again, _ = zipf_reweight(docs, 1.3, rng_for(7, "draw"), vocab_size=V, n_out=700)
    other, _ = zipf_reweight(docs, 1.3, rng_for(8, "draw"), vocab_size=V, n_out=700)
    assert len(first) == 700 and np.array_equal(first, again) and not np.array_equal(first, other)
    assert (np.diff(first) < 0).any()  # the order drawn, not sorted: consecutive picks are independent


def test_documents_of_different_lengths_and_a_smaller_n_out():
    docs = [d[: 16 + i % 113] for i, d in enumerate(pool("zipf_alpha", 0.8, 1.6))]
    idx, alpha = zipf_reweight(docs, 1.3, rng_for(0, "ragged"), vocab_size=V, n_out=300)
    assert len(idx) == 300 and alpha == pytest.approx(1.3, abs=0.02)
    assert zipf_mle(type_counts(selected(docs, idx), V)) == pytest.approx(alpha, abs=1e-9)
