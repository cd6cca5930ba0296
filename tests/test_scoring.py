"""Multi-choice scoring: hand-checked log-likelihoods, the KV-cache scorer equal to the full-sequence one (GPT-2 and
Llama), length normalisation and PMI arithmetic, macro-F1 and the seed summary."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from metaicl.core.errors import ConfigError
from metaicl.data.episodes import ScoreRequest
from metaicl.eval.metrics import accuracy, macro_f1, summarize
from metaicl.eval.scoring import option_scores, pmi_scores, score, score_fast, score_slow

VOCAB = 50


def tiny_lm(arch: str):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if arch == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                          bos_token_id=0, eos_token_id=0))
    # 4 query heads over 2 key/value heads: the cache holds grouped heads, as in Llama-2/3
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                        bos_token_id=0, eos_token_id=0, pad_token_id=0))


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def lm(request):
    return tiny_lm(request.param)


def req(prefix, rows) -> ScoreRequest:
    return ScoreRequest(prefix=list(prefix), rows=[(list(c), list(t)) for c, t in rows], dropped_demos=0)


DEMOS = [1, 5, 6, 7, 2, 8, 9, 3, 2]
REQUESTS = [
    req(DEMOS, [([10, 11], [4]), ([10, 11], [12, 13, 14]), ([10, 11], [15, 16])]),  # shared prefix ...
    req(DEMOS, [([17], [4]), ([17], [12, 13, 14, 18, 19, 20]), ([17], [15, 16])]),  # ... across consecutive queries
    req(DEMOS, [([], [21]), ([], [22, 23])]),                                       # empty condition
    req([1, 30, 31, 32], [([33, 34, 35, 36, 37], [38]), ([40], [41, 42])]),        # another prefix
    req([1], [([], [44, 45]), ([46, 47, 48], [49])]),                               # single-token prefix ([bos])
    req(DEMOS, [([10, 11], [4]), ([10, 11], [12, 13, 14])]),                        # the first prefix again
]


def by_hand(model, r) -> np.ndarray:
    """Each option alone: one forward over prefix + condition + target, log-softmax, sum of the target tokens."""
    out = []
    with torch.no_grad():
        for cond, target in r.rows:
            seq = r.prefix + cond + target
            logp = model.eval()(torch.tensor([seq])).logits[0].float().log_softmax(-1)
            start = len(seq) - len(target)
            out.append([sum(logp[t - 1, seq[t]].item() for t in range(start, len(seq))), len(target)])
    return np.array(out)


def test_both_scorers_equal_a_hand_computed_log_likelihood(lm):
    expected = [by_hand(lm, r) for r in REQUESTS[:3]]
    for got in (score_slow(lm, REQUESTS[:3]), score_fast(lm, REQUESTS[:3])):
        for g, e in zip(got, expected):
            assert g.shape == e.shape and np.array_equal(g[:, 1], e[:, 1])
            np.testing.assert_allclose(g[:, 0], e[:, 0], atol=1e-4)


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_fast_equals_slow_on_every_row(lm, batch_size):
    """Rows of different lengths, empty conditions, a one-token prefix, prefixes shared by consecutive requests
    and rows of one prefix split over several batches (the prefix cache must survive being used)."""
    slow, fast = score_slow(lm, REQUESTS, batch_size=2), score_fast(lm, REQUESTS, batch_size=batch_size)
    assert [f.shape for f in fast] == [(len(r.rows), 2) for r in REQUESTS]
    for f, s in zip(fast, slow):
        np.testing.assert_array_equal(f[:, 1], s[:, 1])
        np.testing.assert_allclose(f[:, 0], s[:, 0], atol=1e-4, rtol=0)


def test_a_request_scores_the_same_alone_or_among_others(lm):
    together = score(lm, REQUESTS, batch_size=4)
    for r, t in zip(REQUESTS, together):
        np.testing.assert_allclose(score(lm, [r])[0], t, atol=1e-5, rtol=0)


def test_consecutive_requests_sharing_a_prefix_encode_it_once():
    model, prefix_passes = tiny_lm("gpt2"), []

    def record(module, args, kwargs):
        if kwargs.get("cache", kwargs.get("past_key_values")) is None:  # no cache passed in: a prefix pass
            prefix_passes.append(kwargs["input_ids"].shape[1])

    model.register_forward_pre_hook(record, with_kwargs=True)
    score_fast(model, REQUESTS, batch_size=2)
    # runs: requests 0-2 share DEMOS, then [1, 30, 31, 32], [1], and DEMOS again (not consecutive: encoded anew)
    assert prefix_passes == [len(DEMOS), 4, 1, len(DEMOS)]


def test_scoring_leaves_the_model_in_its_training_mode():
    model = tiny_lm("gpt2").train()
    a = score_fast(model, REQUESTS[:1])[0]
    assert model.training
    np.testing.assert_array_equal(score_fast(model, REQUESTS[:1])[0], a)  # dropout was off: deterministic


def test_summed_score_picks_the_option_the_model_finds_most_likely(lm):
    r = req(DEMOS, [([10], [t]) for t in range(20, 30)])
    with torch.no_grad():
        next_token = lm.eval()(torch.tensor([DEMOS + [10]])).logits[0, -1].softmax(-1)
    likelihood = [next_token[t].item() for t in range(20, 30)]
    for fast in (True, False):
        assert int(np.argmax(option_scores(score(lm, [r], fast=fast)[0], False))) == int(np.argmax(likelihood))


def test_empty_prefix_or_option_is_a_config_error():
    model = tiny_lm("gpt2")
    with pytest.raises(ConfigError, match=r"requests\[0\]\.prefix"):
        score_fast(model, [req([], [([2], [3])])])
    with pytest.raises(ConfigError, match=r"requests\[1\]\.rows\[0\]"):
        score_slow(model, [REQUESTS[0], req([1], [([2], [])])])


def test_length_normalisation_divides_by_the_option_length():
    raw = np.array([[-4.0, 2], [-3.0, 1], [-9.0, 6]])
    np.testing.assert_allclose(option_scores(raw, length_normalize=False), [-4.0, -3.0, -9.0])
    np.testing.assert_allclose(option_scores(raw, length_normalize=True), [-2.0, -3.0, -1.5])
    # the long option loses on the sum and wins on the per-token mean
    assert option_scores(raw, False).argmax() == 1 and option_scores(raw, True).argmax() == 2


def test_pmi_subtracts_the_null_input_score():
    cond, null = np.array([-2.0, -5.0, -3.0]), np.array([-1.0, -6.0, -2.5])
    np.testing.assert_allclose(pmi_scores(cond, null), [-1.0, 1.0, -0.5])
    assert pmi_scores(cond, null).argmax() == 1 and cond.argmax() == 0  # calibration removes the prior on option 0
    with pytest.raises(ConfigError):
        pmi_scores(cond, null[:2])


def test_accuracy_counts_exact_matches():
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    with pytest.raises(ConfigError):
        accuracy([0, 1], [0])


def test_macro_f1_matches_hand_computed_cases():
    # class 0: TP 2, FP 2, FN 0 -> 4/6; class 1: TP 1, FP 0, FN 1 -> 2/3; class 2: never predicted, gold once -> 0
    pred, gold = [0, 0, 1, 0, 0], [0, 0, 1, 1, 2]
    assert macro_f1(pred, gold, labels=[0, 1, 2]) == pytest.approx((4 / 6 + 2 / 3 + 0) / 3)
    # class 3 is neither predicted nor gold: left out, not counted as 0
    assert macro_f1(pred, gold, labels=[0, 1, 2, 3]) == pytest.approx((4 / 6 + 2 / 3 + 0) / 3)
    assert macro_f1([1, 1, 0], [1, 1, 0], labels=[0, 1]) == 1.0
    # always predicting the majority class: F1 2/3 for it (TP 2, FP 2, FN 0), 0 for the minority
    assert macro_f1([0, 0, 0, 0], [0, 0, 1, 1], labels=[0, 1]) == pytest.approx((2 / 3 + 0) / 2)
    with pytest.raises(ConfigError):
        macro_f1([5], [5], labels=[0, 1])


def test_summarize_gives_mean_and_worst_seed():
    assert summarize([0.6, 0.5, 0.7]) == (pytest.approx(0.6), 0.5)
    with pytest.raises(ConfigError):
        summarize([])
