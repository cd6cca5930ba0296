"""GINC documents follow their concept's HMM, and few-shot prompts reveal the concept to a Bayesian reader
(Xie et al. 2022). The reader (pretrain_data/ginc_bayes.py) is the forward algorithm with the true HMMs, written
independently of the sampler: it sees only `concepts(cfg)` (the matrices) and the tokens."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from metaicl.core.errors import ConfigError
from metaicl.core.seeding import rng_for
from pretrain_data.ginc import GINCConfig, concepts, few_shot_prompts, sample_docs, vocab_size
from pretrain_data.ginc_bayes import bayes_answer, classify_docs

CFG = GINCConfig()  # the defaults: 5 concepts, 10 entities x 10 properties, 50 tokens + delimiter


def test_same_rng_same_documents_and_concept_seed_sets_the_concepts():
    docs, concept = sample_docs(CFG, rng_for(3, "ginc", 0), 50)
    again, concept_again = sample_docs(CFG, rng_for(3, "ginc", 0), 50)
    assert np.array_equal(docs, again) and np.array_equal(concept, concept_again)
    assert not np.array_equal(docs, sample_docs(CFG, rng_for(3, "ginc", 1), 50)[0])
    assert docs.shape == (50, CFG.doc_length) and docs.dtype == np.int32 and concept.dtype == np.int32
    assert docs.min() >= 0 and docs.max() == vocab_size(CFG) - 1  # the delimiter occurs in documents

    a, b = concepts(CFG), concepts(dataclasses.replace(CFG, concept_seed=1))
    assert np.array_equal(a.transition, concepts(GINCConfig()).transition)
    assert not np.allclose(a.property_trans, b.property_trans)
    assert not np.array_equal(a.memory, b.memory)
    assert np.allclose(a.transition.sum(-1), 1) and np.allclose(a.emission.sum(-1), 1)


def test_hidden_transitions_follow_the_concepts_matrix_exactly():
    # with a huge vocabulary the memory matrix is one-to-one off the delimiter, so tokens reveal hidden states
    cfg = dataclasses.replace(CFG, vocab_size=10**9, doc_length=64, transition_floor=0.05)
    cc = concepts(cfg)
    E, P = cfg.num_entities, cfg.num_properties
    keys, states = cc.memory[:, 1:].ravel(), (np.arange(E)[:, None] * P + np.arange(1, P)).ravel()
    assert len(np.unique(keys)) == keys.size
    order = np.argsort(keys)
    docs, concept = sample_docs(cfg, rng_for(0, "ginc", "transitions"), 10_000)
    words = [s for s in range(E * P) if s % P]  # states that emit a word, not the delimiter
    chi2 = dof = 0.0
    for c in range(cfg.num_concepts):
        d = docs[concept == c]
        a, b = d[:, :-1].ravel(), d[:, 1:].ravel()
        both = (a != cfg.vocab_size) & (b != cfg.vocab_size)
        s, t = (states[order][np.searchsorted(keys[order], x[both])] for x in (a, b))
        counts = np.zeros((E * P, E * P))
        np.add.at(counts, (s, t), 1)
        counts = counts[np.ix_(words, words)]
        trans = cc.transition[c][np.ix_(words, words)]
        expected = counts.sum(1, keepdims=True) * trans / trans.sum(1, keepdims=True)
        assert counts[trans == 0].sum() == 0  # no impossible transition is ever taken
        cell = expected >= 5
        chi2 += ((counts - expected) ** 2 / np.where(cell, expected, 1))[cell].sum()
        dof += cell.sum() - cell.any(1).sum()
    z = (chi2 - dof) / np.sqrt(2 * dof)  # chi-square with dof degrees of freedom, as a standard score
    print(f"transition chi2 {chi2:.0f} on {dof:.0f} dof (z = {z:.2f})")
    assert abs(z) < 4


def test_a_documents_concept_is_identified_by_its_hmm():
    docs, concept = sample_docs(CFG, rng_for(0, "ginc", "held-out"), 200)
    acc = {n: (classify_docs(CFG, docs[:, :n]) == concept).mean() for n in (4, 64)}
    print(f"Bayes concept accuracy from the first 4 / 64 tokens: {acc[4]:.3f} / {acc[64]:.3f} (chance 0.2)")
    assert acc[64] > 0.95 and acc[4] > 0.5


def test_prompt_layout():
    for k, length in ((0, 3), (3, 1), (4, 5)):
        p = few_shot_prompts(CFG, rng_for(0, "ginc", "layout", k), 20, k, length)
        assert p["tokens"].shape == (20, k * (length + 1) + length - 1) and p["tokens"].dtype == np.int32
        delimiter = np.zeros(p["tokens"].shape[1], bool)
        delimiter[length::length + 1] = True  # after each example's y
        assert (p["tokens"][:, delimiter] == CFG.vocab_size).all()
        assert (p["answer"] >= 0).all() and (p["answer"] < vocab_size(CFG)).all()
        assert ((p["concept"] >= 0) & (p["concept"] < CFG.num_concepts)).all()


def test_few_shot_examples_reveal_the_concept_to_the_bayes_reader():
    k, length, n = 8, 3, 600
    p = few_shot_prompts(CFG, rng_for(0, "ginc", "prompts"), n, k, length)
    test_x = p["tokens"][:, k * (length + 1):]  # the same test examples without the k examples: k = 0
    (y0, _, post0), (y8, _, post8) = bayes_answer(CFG, test_x, 0, length), bayes_answer(CFG, p["tokens"], k, length)
    acc0, acc8 = (y0 == p["answer"]).mean(), (y8 == p["answer"]).mean()
    concept0, concept8 = ((post.argmax(1) == p["concept"]).mean() for post in (post0, post8))
    print(f"Bayes-optimal accuracy of y: k=0 {acc0:.3f}, k=8 {acc8:.3f} (chance {1 / vocab_size(CFG):.3f}); "
          f"concept identified: k=0 {concept0:.3f}, k=8 {concept8:.3f}")
    assert concept8 > 0.95 and concept0 < 0.8  # the test x alone leaves the concept uncertain; 8 examples settle it
    assert acc8 > acc0 + 0.06 and acc8 > 10 / vocab_size(CFG)  # y is sampled: even knowing the concept caps it


@pytest.mark.parametrize("key,value", [("num_concepts", 0), ("num_entities", 0), ("num_properties", 1),
                                       ("vocab_size", 0), ("doc_length", 0), ("transition_temp", 0.0),
                                       ("start_temp", -1.0), ("entity_stickiness", 1.5), ("transition_floor", -0.1),
                                       ("concept_seed", -1)])
def test_validate_names_the_bad_key(key, value):
    GINCConfig().validate("data.ginc")
    with pytest.raises(ConfigError) as err:
        dataclasses.replace(GINCConfig(), **{key: value}).validate("data.ginc")
    assert err.value.key == f"data.ginc.{key}"
