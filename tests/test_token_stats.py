"""zipf_lm produces the statistics its knobs dial, and each token statistic recovers a known value."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from metaicl.core.errors import ConfigError
from metaicl.core.seeding import rng_for
from pretrain_data.stats import zipf_mle
from pretrain_data.token_stats import doc_burstiness, long_range_info_gain, rare_token_density, type_counts
from pretrain_data.zipf_lm import ZipfLMConfig, sample_docs, unigram

BASE = ZipfLMConfig(vocab_size=2048, doc_length=256, long_range_distance=32)


def docs(**kw) -> np.ndarray:
    return sample_docs(dataclasses.replace(BASE, **kw), rng_for(0, "zipf_lm", str(kw)), 800)


@pytest.mark.parametrize("alpha", [0.6, 1.0, 1.2, 1.5])
def test_unigram_exponent_fit_matches_zipf_alpha(alpha):
    assert zipf_mle(type_counts(docs(zipf_alpha=alpha), 2048)) == pytest.approx(alpha, abs=0.1)


def test_rare_token_density_is_what_the_config_asks_and_zipf_otherwise():
    natural = docs(zipf_alpha=1.0)
    tail_mass = unigram(dataclasses.replace(BASE, zipf_alpha=1.0))[256:].sum()
    assert rare_token_density(natural, 256, 2048) == pytest.approx(tail_mass, abs=0.01)
    enriched = docs(zipf_alpha=1.0, rare_token_density=0.3, rare_rank_cutoff=256)
    assert rare_token_density(enriched, 256, 2048) == pytest.approx(0.3, abs=0.01)


def test_copies_keep_the_unigram_law_and_respect_the_minimum_distance():
    cfg = dataclasses.replace(BASE, zipf_alpha=1.2, long_range=1.0, long_range_distance=40, span_length=8)
    d = sample_docs(cfg, rng_for(1, "copy"), 50)
    spans = d.reshape(50, 32, 8)
    lag = 5  # ceil(40 / 8) slots back at least
    for doc in spans:
        for slot in range(lag, 32):
            assert any((doc[slot] == doc[src]).all() for src in range(slot - lag + 1))


def test_unaligned_copies_come_from_any_earlier_position_far_enough_back():
    """copy_offset=any: each copied span occurs earlier at least long_range_distance back, and the offsets are
    not all multiples of span_length (aligned copies can be found by position alone)."""
    cfg = dataclasses.replace(BASE, zipf_alpha=1.2, long_range=1.0, long_range_distance=40, span_length=8,
                              copy_offset="any")
    d = sample_docs(cfg, rng_for(1, "copy"), 50)
    offsets = []
    for doc in d:
        for start in range(40, 256, 8):
            found = [start - s for s in range(start - 40 + 1) if (doc[s : s + 8] == doc[start : start + 8]).all()]
            assert found, start
            offsets.append(min(found))
    assert len({o % 8 for o in offsets}) == 8  # every residue, not only 0
    with pytest.raises(Exception, match="copy_offset"):
        dataclasses.replace(cfg, copy_offset="nearby").validate("zipf_lm")


def test_related_documents_copy_their_spans_from_the_document_before_them():
    """related_docs=1: every copied span of document i > 0 occurs in document i - 1, and (its tokens being Zipf
    draws) rarely anywhere earlier in document i itself (only where two spans copied the same source)."""
    cfg = dataclasses.replace(BASE, vocab_size=4096, zipf_alpha=0.5, long_range=1.0, long_range_distance=40,
                              span_length=8, copy_offset="any", related_docs=1.0)
    d = sample_docs(cfg, rng_for(1, "related"), 20)

    def occurs(span, doc):
        return any((doc[s : s + 8] == span).all() for s in range(len(doc) - 7))

    spans = [(i, d[i, start : start + 8]) for i in range(1, 20) for start in range(40, 256, 8)]
    assert all(occurs(span, d[i - 1]) for i, span in spans)
    assert np.mean([occurs(span, d[i, :start]) for (i, span), start in
                    zip(spans, [s for _ in range(1, 20) for s in range(40, 256, 8)])]) < 0.1
    with pytest.raises(ConfigError, match="related_docs"):
        dataclasses.replace(cfg, copy_offset="aligned").validate("zipf_lm")


def test_long_range_raises_burstiness_and_information_gain_iid_has_none():
    iid, some, more = docs(zipf_alpha=1.2), docs(zipf_alpha=1.2, long_range=0.1), docs(zipf_alpha=1.2, long_range=0.3)
    assert doc_burstiness(iid, 2048) == pytest.approx(1.0, abs=0.02)
    assert doc_burstiness(iid, 2048) < doc_burstiness(some, 2048) < doc_burstiness(more, 2048)
    assert long_range_info_gain(iid, 256, 2048) < 0.01
    assert 0.01 < long_range_info_gain(some, 256, 2048) < long_range_info_gain(more, 256, 2048)


def test_same_key_same_documents():
    a = sample_docs(BASE, rng_for(7, "zipf_lm", 3), 10)
    assert np.array_equal(a, sample_docs(BASE, rng_for(7, "zipf_lm", 3), 10))
    assert not np.array_equal(a, sample_docs(BASE, rng_for(7, "zipf_lm", 4), 10))


@pytest.mark.parametrize("change, key", [
    (dict(zipf_alpha=-1.0), "zipf_alpha"), (dict(rare_token_density=1.5), "rare_token_density"),
    (dict(rare_token_density=0.2, rare_rank_cutoff=4096), "rare_rank_cutoff"), (dict(long_range=2.0), "long_range"),
    (dict(span_length=7), "span_length"), (dict(long_range=0.1, long_range_distance=300), "long_range_distance"),
])
def test_bad_knobs_name_their_key(change, key):
    with pytest.raises(ConfigError, match=f"src.{key}:"):
        dataclasses.replace(BASE, **change).validate("src")


@pytest.mark.parametrize("window", [1, 5, 64, 300])
def test_cache_probabilities_equal_the_direct_count_over_each_window(window):
    from pretrain_data.token_stats import _cache_probs

    docs = sample_docs(dataclasses.replace(BASE, vocab_size=64, long_range=0.3), rng_for(3, "cache"), 20)
    direct = np.zeros((20, docs.shape[1] - 1))
    for t in range(1, docs.shape[1]):  # the definition: share of the window before t equal to the token at t
        direct[:, t - 1] = (docs[:, max(0, t - window):t] == docs[:, t:t + 1]).mean(axis=1)
    assert np.array_equal(_cache_probs(docs, window, 64), direct)
