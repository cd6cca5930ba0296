"""Each statistic of the data card recovers a known true value."""
from __future__ import annotations

import json

import numpy as np
import pytest

from metaicl.core.seeding import rng_for
from pretrain_data.build import build
from pretrain_data.bursty import zipf_probs
from pretrain_data.config import BurstyDataConfig
from pretrain_data.stats import expected_repeat_rate, repeat_rate, zipf_mle


@pytest.mark.parametrize("alpha", [0.8, 1.2, 1.6])
def test_zipf_mle_recovers_alpha(alpha):
    draws = rng_for(3, "mle").choice(1000, size=200_000, p=zipf_probs(1000, alpha))
    assert zipf_mle(np.bincount(draws)) == pytest.approx(alpha, abs=0.05)


def test_zipf_mle_is_invariant_to_type_order_and_zero_counts():
    counts = np.array([500, 250, 0, 125, 60, 31])
    assert zipf_mle(counts) == pytest.approx(zipf_mle(counts[::-1]), abs=1e-6)
    assert zipf_mle(counts) == pytest.approx(zipf_mle(counts[counts > 0]), abs=1e-6)


@pytest.mark.parametrize("b", [2, 4, 8])
def test_repeat_rate_of_b_copies_is_one_minus_one_over_b(b):
    rows = np.repeat(rng_for(0, "r").permutation(1000)[: 8 // b * 50].reshape(50, 8 // b), b, axis=1)
    assert repeat_rate(rows) == pytest.approx(1 - 1 / b)


def test_repeat_rate_of_iid_draws_matches_its_expectation():
    probs = zipf_probs(200, 1.0)
    rows = rng_for(0, "iid").choice(200, size=(20_000, 8), p=probs)
    assert repeat_rate(rows) == pytest.approx(expected_repeat_rate(probs, 8), rel=0.03)


def test_build_writes_a_card_that_measures_the_dialled_properties(ray_session, tmp_path):
    common = dict(num_classes=500, num_novel_classes=16, train_sequences=20_000, eval_sequences=64,
                  shard_size=5_000, zipf_alpha=1.2)
    iid = build(BurstyDataConfig(**common, burstiness=0), tmp_path, progress=False)
    half = build(BurstyDataConfig(**common, burstiness=4, p_bursty=0.5), tmp_path, progress=False)
    iid_card = json.loads((iid.root / "stats.json").read_text())
    half_card = json.loads((half.root / "stats.json").read_text())
    assert iid_card["class_zipf_alpha_mle"] == pytest.approx(1.2, abs=0.1)
    assert iid_card["burstiness_ratio"] == pytest.approx(1.0, abs=0.05)
    assert half_card["bursty_fraction"] == pytest.approx(0.5, abs=0.02)
    # half the contexts repeat 3 of 4 items, the other half repeat like iid draws
    expected = 0.5 * 0.75 + 0.5 * iid_card["context_repeat_rate"]
    assert half_card["context_repeat_rate"] == pytest.approx(expected, abs=0.02)
    assert half_card["rows"] == 20_000
