"""In-context learning against fine-tuning inside a causal LM (Dai et al. 2023): the similarities on planted cases
whose answer is known, and the rows a run's evaluation adds."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from metaicl.data.episodes import EpisodeConfig
from metaicl.data.tasks import Example, Task
from metaicl.data.tokenizer import IdTokenizer
from metaicl.eval.config import EvalConfig
from metaicl.eval.icl_vs_ft import answer_slot, attention_modules, icl_vs_ft_rows
from metaicl.models.lm import LMConfig, build_lm

TOK = IdTokenizer(64)
EPISODES = EpisodeConfig(input_sep=" ", example_sep="\n", max_length_per_example=16, max_length=64)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_lm(LMConfig(n_layer=2, n_head=2, d_model=32, context_length=64), vocab_size=64).eval()


def task() -> Task:
    rng = np.random.default_rng(0)

    def ex(i):
        x = " ".join(str(t) for t in rng.integers(3, 60, size=3))
        y = ["1", "2"][i % 2]
        return Example("t", x, y, ["1", "2"])

    return Task("t", [ex(i) for i in range(8)], [ex(i) for i in range(6)], ["1", "2"])


def sims(model, tuned, demos):
    rows = icl_vs_ft_rows(model, tuned, task(), demos, EvalConfig(), EPISODES, TOK, "cpu", len(demos), 0)
    return {r["metric"]: r["value"] for r in rows}


def test_one_attention_output_and_weights_over_the_query_per_layer(model):
    h, a = answer_slot(model, [0, 5, 6, 7, 8], 3, "cpu")
    assert len(attention_modules(model)) == 2 and h.shape == (2, 32) and a.shape == (2, 2, 3)
    assert np.allclose(a.sum(-1), 1.0)


def test_without_fine_tuning_there_is_no_update_and_attention_stays_zero_shot(model):
    s = sims(model, model, task().train[:4])  # "fine-tuned" = the model itself: FT is ZSL
    assert s["simaou"] == 0.0 and s["simam_ft"] == pytest.approx(s["simam_zsl"])


def test_without_demonstrations_in_context_learning_changes_nothing(model):
    s = sims(model, model, [])
    assert s["simaou"] == 0.0 and s["simam_zsl"] == pytest.approx(1.0)


def test_a_fine_tuned_copy_moves_its_attention_output_against_a_random_control(model):
    from metaicl.eval.evaluate import finetuned
    from metaicl.experiment import FinetuneConfig

    demos = task().train[:4]
    tuned, _ = finetuned(model, demos, EPISODES, TOK, FinetuneConfig(steps=20, lr=1e-2), device="cpu")
    before = copy.deepcopy(model.config._attn_implementation)
    s = sims(model, tuned, demos)
    assert all(-1.0 <= v <= 1.0 for v in s.values()) and s["simaou"] != 0.0
    assert abs(s["simaou_random"]) < 0.3  # a random update is near orthogonal in 32 dimensions
    assert model.config._attn_implementation == before  # the scoring model's attention kernel is restored


def test_the_finetune_method_adds_the_comparison_when_asked_and_the_report_shows_it(model, tmp_path):
    import pandas as pd

    from cluster.lm_report import write_lm_report
    from cluster.results import METAICL, tidy
    from metaicl.eval.evaluate import evaluate_method
    from metaicl.experiment import FinetuneConfig

    args = (model, "finetune", task())
    rest = (EPISODES, FinetuneConfig(steps=2), TOK, "cpu")
    plain = evaluate_method(*args, EvalConfig(k=[2], seeds=[100], max_test_examples=3), *rest)
    asked = evaluate_method(*args, EvalConfig(k=[2], seeds=[100], max_test_examples=3, icl_vs_finetune=True), *rest)
    compared = {r["metric"] for r in asked} - {r["metric"] for r in plain}
    assert compared == {"simaou", "simaou_random", "simam_ft", "simam_zsl"}
    write_lm_report(tmp_path, "t", tidy(pd.DataFrame(asked), suite=METAICL, stage="eval", run="r", arm="main"))
    assert "## In-context learning against fine-tuning (Dai et al. 2023" in (tmp_path / "report.md").read_text()
