"""k-shot curves on GINC prompts (metaicl/eval/kshot.py): known answers. A model whose next-token distribution IS
the Bayes-optimal reader's scores exactly the Bayes accuracy at every k and puts all its mass on the options; a
model that only repeats what the prompt shows has its whole mass in context; the slope is the one of a known line."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from metaicl.eval.kshot import EXAMPLE_LENGTH, fitting_ks, kshot_rows, slope
from pretrain_data.ginc import GINCConfig, vocab_size
from pretrain_data.ginc_bayes import bayes_answer

CFG = GINCConfig()
OFFSET = 7  # the source's ids start here in the model's vocabulary, after other sources
VOCAB = OFFSET + vocab_size(CFG) + 3


class Reader(torch.nn.Module):
    """A 'language model' whose last-position logits are log p(next token | prompt) of a given rule."""

    def __init__(self, rule):
        super().__init__()
        self.rule, self.dummy = rule, torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids):
        tokens = input_ids[:, 1:].numpy() - OFFSET  # drop the boundary, back to the source's ids
        k = (tokens.shape[1] + 2) // (EXAMPLE_LENGTH + 1) - 1
        p = np.full((len(tokens), VOCAB), 1e-30)
        p[:, OFFSET : OFFSET + vocab_size(CFG)] += self.rule(tokens, k)
        logits = torch.zeros(*input_ids.shape, VOCAB)
        logits[:, -1] = torch.from_numpy(np.log(p / p.sum(1, keepdims=True)))
        return types.SimpleNamespace(logits=logits)


def table(rows):
    return {(r["k"], r["metric"]): r["value"] for r in rows}


def test_the_bayes_reader_as_a_model_scores_the_bayes_accuracy_with_all_its_mass_on_the_options():
    rows = table(kshot_rows(Reader(lambda t, k: bayes_answer(CFG, t, k, EXAMPLE_LENGTH)[1]), CFG, OFFSET, 64,
                            prompts=128))
    ks = fitting_ks(64)
    assert ks == [0, 1, 2, 4, 8, 16, 32][: len(ks)] and 8 in ks and 16 not in ks  # 1 + 9 * 4 - 2 <= 64 < 1 + 17 * 4 - 2
    for k in ks:
        assert rows[k, "accuracy"] == rows[k, "bayes_accuracy"]
        assert rows[k, "label_mass"] == pytest.approx(1.0, abs=1e-6)
    assert rows[8, "bayes_accuracy"] > rows[0, "bayes_accuracy"] + 0.05  # examples reveal the concept
    assert rows[None, "accuracy_slope"] == pytest.approx(rows[None, "bayes_accuracy_slope"])
    assert rows[None, "bayes_accuracy_slope"] > 0


def test_a_model_that_only_repeats_the_prompt_has_its_mass_in_context():
    def copier(tokens, k):
        p = np.zeros((len(tokens), vocab_size(CFG)))
        np.put_along_axis(p, tokens, 1.0, axis=1)  # uniform over the symbols it has seen
        return p / p.sum(1, keepdims=True)

    rows = table(kshot_rows(Reader(copier), CFG, OFFSET, 64, prompts=64))
    assert all(rows[k, "context_label_share"] == pytest.approx(1.0) for k in fitting_ks(64))


def test_calibration_removes_a_constant_prior_and_the_slope_is_per_doubling():
    bias = np.zeros(vocab_size(CFG))
    bias[3] = 6.0  # a prior for one symbol (x 400) that swamps most of what the examples say

    def biased(tokens, k):
        p = bayes_answer(CFG, tokens, k, EXAMPLE_LENGTH)[1] * np.exp(bias)
        return p / p.sum(1, keepdims=True)

    rows = table(kshot_rows(Reader(biased), CFG, OFFSET, 64, prompts=128))
    raw, calibrated = (np.mean([rows[k, m] for k in fitting_ks(64)]) for m in ("accuracy", "accuracy_calibrated"))
    assert calibrated > raw + 0.03  # measured 0.281 vs 0.234 (Bayes 0.40): it recovers part of what the prior hid
    assert slope([0, 1, 3, 7], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(0.1)


def test_the_metaicl_table_has_a_k_shot_curve_per_method_with_its_0_shot_counterpart_as_k_0():
    import pandas as pd

    from cluster.lm_report import kshot_curves

    rows = []
    for seed in (1, 2):
        for method, k, acc in [("zero_shot", 0, 0.3), ("in_context", 1, 0.4), ("in_context", 3, 0.5),
                               ("in_context", 7, 0.6), ("pmi_in_context", 7, 0.9), ("metaicl", 7, 0.5)]:
            rows.append({"suite": "metaicl", "metric": "accuracy", "scoring": "sum", "method": method, "k": k,
                         "seed": seed, "task": "t", "value": acc})
    curves = kshot_curves(pd.DataFrame(rows)).set_index("method")
    assert list(curves.index) == ["In-context"]  # PMI and MetaICL have one point each: no curve
    assert curves.loc["In-context", "k=0"] == 0.3 and curves.loc["In-context", "slope"] == pytest.approx(0.1)


def test_label_space_mass_is_the_probability_on_the_options_and_its_share_on_what_the_demos_show():
    from metaicl.data.tasks import Example, Task
    from metaicl.eval.evaluate import label_space_rows

    options = ["a", "b", "c", "d"]
    task = Task("t", [], [], options)
    demos = [Example("t", "x", "a", options), Example("t", "y", "b", options)]
    probs = [[0.4, 0.2, 0.1, 0.1], [0.1, 0.1, 0.3, 0.3]]  # the rest of each row's mass is off the options
    raw = [np.stack([np.log(p), np.ones(4)], axis=1) for p in probs]
    rows = {r["metric"]: r["value"] for r in label_space_rows("in_context", task, 2, 13, raw, demos)}
    assert rows["label_mass"] == pytest.approx((0.8 + 0.8) / 2)
    assert rows["context_label_share"] == pytest.approx((0.6 / 0.8 + 0.2 / 0.8) / 2)
    assert [r["metric"] for r in label_space_rows("zero_shot", task, 0, 13, raw, [])] == ["label_mass"]


def test_the_label_coverage_oracle_knows_what_the_demonstrations_show_and_guesses_the_rest():
    from metaicl.data.tasks import Example, Task
    from metaicl.eval.config import EvalConfig
    from metaicl.eval.evaluate import oracle_rows

    options = ["a", "b", "c"]
    pool = [Example("t", f"x{i}", "a", options) for i in range(4)]  # every demonstration shows word "a" only
    test = [Example("t", "q1", "a", options), Example("t", "q2", "b", options), Example("t", "q3", "c", options)]
    rows = oracle_rows(Task("t", pool, test, options), EvalConfig(k=[1, 4], seeds=[100, 13]))
    assert {(r["k"], r["seed"]) for r in rows} == {(1, 100), (1, 13), (4, 100), (4, 13)}
    assert all(r["value"] == pytest.approx((1 + 0.5 + 0.5) / 3) for r in rows)  # "a" known; b, c: 1 of 2
    covered = pool + [Example("t", "y", "b", options), Example("t", "z", "c", options)]
    [full] = oracle_rows(Task("t", covered, test, options), EvalConfig(k=[6], seeds=[100]))
    assert full["value"] == 1.0 and full["method"] is None and full["metric"] == "oracle_accuracy"
