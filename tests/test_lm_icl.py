"""The LM ICL suite on models whose answers are known: a perfect copier, a uniform model, attention built by hand
(issue 14), then a real tiny GPT-2 end to end."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from metaicl.eval.lm_icl import (REPEAT_VARIANTS, LMICLConfig, head_scores, icl_score, lm_icl_rows,  # noqa: E402
                                 repeat_rows, repeated, shuffled)

V, L = 5000, 64


class Copier(torch.nn.Module):
    """Predicts, after a token seen before, the token that followed its latest earlier occurrence (with certainty);
    elsewhere every token is equally likely. An induction head's behaviour, and nothing else."""

    def __init__(self, vocab: int = V):
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab, max_position_embeddings=L, _attn_implementation="eager")

    def set_attn_implementation(self, name: str) -> None:
        self.config._attn_implementation = name

    def forward(self, input_ids, output_attentions=False, **_):
        if output_attentions:  # attends to bos everywhere: no head scores to find
            length = input_ids.shape[1]
            pattern = torch.zeros(input_ids.shape[0], 1, length, length)
            pattern[..., 0] = 1.0
            return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.config.vocab_size),
                                   attentions=(pattern,))
        logits = torch.zeros(*input_ids.shape, self.config.vocab_size)
        for b, row in enumerate(input_ids.tolist()):
            last = {}
            for t, token in enumerate(row):
                if token in last and last[token] + 1 < len(row):
                    logits[b, t, row[last[token] + 1]] = 100.0
                last[token] = t
        return SimpleNamespace(logits=logits)


class Uniform(Copier):
    def forward(self, input_ids, output_attentions=False, **_):
        if output_attentions:
            return super().forward(input_ids, output_attentions=True)
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.config.vocab_size))


def rows_by(rows):
    return {(r["task"], r["metric"]): r["value"] for r in rows}


def test_a_perfect_copier_has_a_gap_equal_to_the_first_copy_loss_and_copies_every_token():
    for variant in REPEAT_VARIANTS:
        got = rows_by(repeat_rows(Copier(), V, L, variant, count=8, seed=0))
        assert got[(variant, "first_copy_loss")] == pytest.approx(math.log(V), rel=0.02)  # uniform: ln V
        assert got[(variant, "second_copy_loss")] < 1e-6
        assert got[(variant, "gap")] == pytest.approx(got[(variant, "first_copy_loss")], abs=1e-6)
        assert got[(variant, "copy_accuracy")] == 1.0


def test_a_uniform_model_has_no_gap_and_an_icl_score_of_zero():
    windows = torch.randint(1, V, (8, L))
    assert icl_score(Uniform(), windows) == pytest.approx(0.0, abs=1e-6)
    got = rows_by(repeat_rows(Uniform(), V, L, "repeat", count=8, seed=0))
    assert got[("repeat", "gap")] == pytest.approx(0.0, abs=1e-6) and got[("repeat", "first_copy_loss")] == \
        pytest.approx(math.log(V), abs=1e-4)


def test_the_icl_score_is_negative_when_context_helps_and_zero_on_the_order_control():
    """Windows that repeat their first half: the copier predicts the late positions (second half) perfectly and
    the early ones at ln V, so the score is -ln V. The order control keeps each window's tokens, loses the
    repeats."""
    torch.manual_seed(0)
    half = torch.stack([torch.randperm(V - 1)[: L // 2] + 1 for _ in range(8)])  # no token twice in a half
    windows = torch.cat([half, half], dim=1)
    assert icl_score(Copier(), windows) == pytest.approx(-math.log(V), rel=0.02)
    rows = rows_by(lm_icl_rows(Copier(), windows, LMICLConfig(sequences=8)))
    assert rows[("mixture", "icl_score")] == pytest.approx(-math.log(V), rel=0.02)
    control = shuffled(windows, seed=0)
    assert torch.equal(control.sort(dim=1).values, windows.sort(dim=1).values)  # each window keeps its tokens
    assert (control[:, : L // 2] == control[:, L // 2 :]).float().mean() < 0.05
    assert rows_by(lm_icl_rows(Uniform(), windows))[("shuffled", "icl_score")] == pytest.approx(0.0, abs=1e-6)


def test_the_sequences_are_bos_then_a_copy_then_the_same_copy():
    for variant, between in (("repeat", 0), ("repeat_boundary", 1), ("repeat_lag", 21)):
        ids, n, second = repeated(V, L, variant, 4, seed=1)
        assert n == 21 and second == 1 + n + between and ids.shape[1] <= L
        assert (ids[:, 0] == 0).all() and torch.equal(ids[:, 1 : 1 + n], ids[:, second : second + n])
        assert (ids[:, 1:] != 0).sum() == ids[:, 1:].numel() - 4 * (variant == "repeat_boundary")


def test_head_scores_of_attention_built_by_hand():
    """Layer 0 head 1 attends from each second-copy token to just after its previous occurrence (induction
    score 1); layer 1 head 0 attends to the previous token (previous-token score 1); the rest attend to bos."""
    ids, n, second = repeated(V, L, "repeat", 2, seed=0)
    length = ids.shape[1]
    layers = [torch.zeros(2, 2, length, length) for _ in range(2)]
    for a in layers:
        a[..., 0] = 1.0
    induction = torch.zeros(length, length)
    induction[:, 0] = 1.0
    for q in range(second, second + n - 1):
        induction[q] = 0.0
        induction[q, q - second + 2] = 1.0
    layers[0][:, 1] = induction
    previous = torch.zeros(length, length)
    previous[0, 0] = 1.0
    for t in range(1, length):
        previous[t, t - 1] = 1.0
    layers[1][:, 0] = previous
    ind, prev = head_scores(layers, n, second)
    assert ind.shape == prev.shape == (2, 2)
    assert ind[0, 1] == 1.0 and ind.argmax() == 1 and prev[1, 0] == 1.0 and prev.argmax() == 2
    assert ind[1, 0] < 0.1 and prev[0, 1] < 0.1


def test_every_row_of_a_tiny_gpt2_is_finite_and_its_attention_kernel_is_restored():
    from metaicl.models.lm import LMConfig, build_lm

    torch.manual_seed(0)
    model = build_lm(LMConfig(context_length=L), vocab_size=300).eval()
    before = model.config._attn_implementation
    rows = lm_icl_rows(model, torch.randint(1, 300, (4, L)), LMICLConfig(sequences=4))
    got = rows_by(rows)
    assert {task for task, _ in got} == {"mixture", "shuffled", *REPEAT_VARIANTS, "heads"}
    assert all(math.isfinite(v) for v in got.values())
    assert 0 <= got[("heads", "induction_score")] <= 1 and 0 <= got[("heads", "previous_token_score")] <= 1
    assert abs(got[("repeat", "gap")]) < 0.5  # an untrained model does not copy
    assert model.config._attn_implementation == before
