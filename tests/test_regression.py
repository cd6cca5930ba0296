"""Regression in context (Garg et al. 2022): the estimators against their closed forms, the prompt distributions
against their laws, Garg et al.'s model (causal, saved and loaded exactly), and the suite on a model whose answer is
known."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from metaicl.core.errors import ConfigError
from metaicl.eval.regression import (STEP_SIZES, RegressionEvalConfig, averaging, gradient_descent, greedy_tree, lasso,
                                     least_squares, nearest_neighbours, prompts, regression_rows, ridge,
                                     two_layer_network)
from metaicl.models.lm import LMConfig
from metaicl.models.regression import build_regressor, load_regressor, regression_loss, save_regressor
from pretrain_data.function_class import FunctionClassConfig

LINEAR = FunctionClassConfig(family="linear", n_dims=5, n_points=11)


def planted(n=64, k=8, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X, w, q = rng.standard_normal((n, k, d)), rng.standard_normal((n, d)), rng.standard_normal((n, d))
    return X, np.einsum("nkd,nd->nk", X, w), q, w


def test_least_squares_recovers_w_exactly_from_d_or_more_noiseless_examples():
    for k in (5, 8):
        X, Y, q, w = planted(k=k)
        assert np.allclose(least_squares(X, Y, q), np.einsum("nd,nd->n", w, q), atol=1e-8)


def test_least_squares_below_d_examples_is_the_minimum_norm_solution():
    X, Y, q, w = planted(k=3)
    for i in range(4):
        w_min = X[i].T @ np.linalg.solve(X[i] @ X[i].T, Y[i])  # the interpolant in the row space of X
        assert least_squares(X[i:i + 1], Y[i:i + 1], q[i:i + 1])[0] == pytest.approx(q[i] @ w_min, abs=1e-9)


def test_ridge_equals_its_formula_and_is_least_squares_without_a_penalty():
    X, Y, q, _ = planted(k=4)
    lam = 0.7
    for i in range(4):
        w = np.linalg.inv(X[i].T @ X[i] + lam * np.eye(5)) @ X[i].T @ Y[i]
        assert ridge(X[i:i + 1], Y[i:i + 1], q[i:i + 1], lam)[0] == pytest.approx(q[i] @ w, abs=1e-9)
    assert np.allclose(ridge(X, Y, q, 0.0), least_squares(X, Y, q))


def test_averaging_of_orthogonal_examples_is_w_over_k():
    d = 5
    X = np.eye(d)[None].repeat(3, 0)  # x_i = e_i: mean of y_i x_i is w / d
    _, _, q, w = planted(n=3)
    Y = np.einsum("nkd,nd->nk", X, w)
    assert np.allclose(averaging(X, Y, q), np.einsum("nd,nd->n", w, q) / d)


def test_nearest_neighbours_averages_the_three_planted_neighbours():
    X = np.array([[[0.0, 0], [10, 10], [0.1, 0], [-10, 5], [0, 0.2], [7, 7]]])
    Y = np.array([[1.0, 100, 2, 100, 3, 100]])
    assert nearest_neighbours(X, Y, np.zeros((1, 2)), 3)[0] == pytest.approx(2.0)
    assert nearest_neighbours(X[:, :2], Y[:, :2], np.zeros((1, 2)), 3)[0] == pytest.approx(50.5)  # fewer: all


def test_lasso_recovers_a_sparse_w_from_fewer_examples_than_dimensions():
    rng = np.random.default_rng(1)
    d, k = 20, 12
    w = np.zeros((8, d))
    w[:, :2] = rng.standard_normal((8, 2)) * 3
    X, q = rng.standard_normal((8, k, d)), rng.standard_normal((8, d))
    Y = np.einsum("nkd,nd->nk", X, w)
    truth = np.einsum("nd,nd->n", w, q)
    err_lasso = np.mean((lasso(X, Y, q, alpha=0.01, iters=3000) - truth) ** 2)
    err_ls = np.mean((least_squares(X, Y, q) - truth) ** 2)
    assert err_lasso < 0.05 * err_ls


def test_a_greedy_tree_finds_the_planted_split_and_predicts_the_query_s_leaf():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((4, 30, 3))
    Y = np.where(X[..., 1] > 0, 3.0, -1.0)  # one split, on coordinate 1
    q = np.array([[0.0, 0.5, 0.0], [0.0, -0.5, 9.0], [5.0, 0.2, -5.0], [-5.0, -0.2, 5.0]])
    assert np.allclose(greedy_tree(X, Y, q, depth=2), [3.0, -1.0, 3.0, -1.0])
    assert greedy_tree(X[:, :0], Y[:, :0], q, depth=2).tolist() == [0.0] * 4  # no examples: 0


def test_a_two_layer_network_fits_a_relu_function_least_squares_cannot():
    rng = np.random.default_rng(3)
    X, q = rng.standard_normal((16, 40, 2)), rng.standard_normal((16, 2))
    f = lambda x: np.maximum(x[..., 0], 0) * 2.0  # noqa: E731
    err_net = np.mean((two_layer_network(X, f(X), q, hidden=32, steps=400) - f(q)) ** 2)
    err_ls = np.mean((least_squares(X, f(X), q) - f(q)) ** 2)
    assert err_net < 0.3 * err_ls


def test_one_gradient_step_is_the_step_size_times_x_transpose_y_and_many_reach_least_squares():
    X, Y, q, _ = planted(k=8)
    one = gradient_descent(X, Y, q, 1, np.array([0.3]))[0]
    assert np.allclose(one, 0.3 * np.einsum("nkd,nk,nd->n", X, Y, q) / 8)
    many = gradient_descent(X, Y, q, 5000, np.array([0.3]))[0]
    assert np.allclose(many, least_squares(X, Y, q), atol=1e-4)


def test_prompt_distributions_follow_their_laws():
    cfg = RegressionEvalConfig(prompts=4000)
    xs, ys, target = prompts(LINEAR, cfg, "standard")
    assert np.array_equal(ys, target.astype(np.float32))
    xs, _, _ = prompts(LINEAR, cfg, "skewed")
    cov = np.cov(xs.reshape(-1, 5).T)
    eig = np.sort(np.linalg.eigvalsh(cov))[::-1]
    assert np.trace(cov) == pytest.approx(5, rel=0.03)
    assert eig[0] / eig[1] == pytest.approx(4, rel=0.1)  # 1/i^2: the first two in ratio 4
    xs, _, _ = prompts(LINEAR, cfg, "scaled")
    assert (xs ** 2).mean() == pytest.approx(4, rel=0.03)  # x scaled by 2
    xs, _, _ = prompts(LINEAR, cfg, "orthant")
    assert (np.sign(xs[:, :-1]) == np.sign(xs[:, :1])).all()  # the examples share one orthant ...
    assert (np.sign(xs[:, -1]) == -np.sign(xs[:, 0])).all()  # ... the query lies in the opposite one
    xs, ys, target = prompts(LINEAR, cfg, "noisy")
    assert (ys - target).std() == pytest.approx(1.0, rel=0.03)  # the examples' noise; targets stay f(x)
    assert np.allclose(np.einsum("npd,nd->np", xs, np.linalg.lstsq(xs[0], target[0], rcond=None)[0][None])[0],
                       target[0], atol=1e-4)


def test_the_same_prompts_for_every_model_whatever_else_changes():
    a = prompts(LINEAR, RegressionEvalConfig(prompts=8), "skewed")[0]
    assert np.array_equal(a, prompts(LINEAR, RegressionEvalConfig(prompts=8, noise=3.0), "skewed")[0])
    assert not np.array_equal(a, prompts(LINEAR, RegressionEvalConfig(prompts=8, seed=1), "skewed")[0])


def small_model(seed=0):
    torch.manual_seed(seed)
    return build_regressor(LMConfig(n_layer=1, n_head=2, d_model=16, context_length=22), n_dims=5, n_points=11)


def test_the_prediction_for_x_i_never_sees_y_i_or_anything_after_it():
    model = small_model().eval()
    xs, ys = torch.randn(2, 11, 5), torch.randn(2, 11)
    before = model(xs, ys)
    ys2, xs2 = ys.clone(), xs.clone()
    ys2[:, 6:] += 5.0
    xs2[:, 7:] -= 3.0
    after = model(xs2, ys2)
    assert torch.allclose(before[:, :7], after[:, :7], atol=1e-6)  # x_1..x_7 (ys from 6 on unseen there)
    assert not torch.allclose(before[:, 7:], after[:, 7:])


def test_a_saved_model_loads_back_exactly_from_safetensors(tmp_path):
    model = small_model().eval()
    save_regressor(model, tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").exists() and not list(tmp_path.glob("model/*.bin"))
    xs, ys = torch.randn(3, 11, 5), torch.randn(3, 11)
    assert torch.equal(model(xs, ys), load_regressor(tmp_path / "model").eval()(xs, ys))


def test_the_loss_is_garg_et_al_s_error_over_d():
    class Zero(torch.nn.Module):
        def forward(self, xs, ys):
            return torch.zeros_like(ys)

    xs, ys = torch.randn(4, 11, 5), torch.randn(4, 11)
    assert regression_loss(Zero(), (xs, ys)).item() == pytest.approx((ys ** 2).mean().item() / 5)



def test_the_underdetermined_weight_scales_the_predictions_from_fewer_than_d_examples():
    """train.underdetermined_weight: positions 0 .. d - 1 (k < d examples before them) weighted w, the others 1,
    rescaled to mean 1; d = the coordinates in use (the dimension curriculum zeroes the rest); 1 = the uniform loss."""
    class Zero(torch.nn.Module):
        def forward(self, xs, ys):
            return torch.zeros_like(ys)

    xs, ys = torch.randn(4, 11, 5), torch.randn(4, 11)
    xs[:, :, 3:] = 0  # two coordinates zeroed: d in use = 3
    err = ys ** 2
    weight = torch.tensor([0.25] * 3 + [1.0] * 8)
    expected = (err * weight / weight.mean()).mean().item() / 5
    assert regression_loss(Zero(), (xs, ys), underdetermined_weight=0.25).item() == pytest.approx(expected)
    assert regression_loss(Zero(), (xs, ys), underdetermined_weight=1.0).item() == pytest.approx(err.mean().item() / 5)


@pytest.mark.parametrize("config, override, key", [
    ("metaicl_synthetic.yaml", "train.underdetermined_weight=0.2", "train.underdetermined_weight"),
    ("regression_icl.yaml", "metatrain.underdetermined_weight=0.2", "metatrain.underdetermined_weight"),
    ("regression_icl.yaml", "train.underdetermined_weight=-1", "train.underdetermined_weight"),
])
def test_the_underdetermined_weight_is_refused_where_there_are_no_prompts(config, override, key):
    from metaicl.core.config import load_config
    from metaicl.experiment import ExperimentConfig
    from tests.conftest import ROOT

    with pytest.raises(ConfigError) as err:
        load_config(ExperimentConfig, ROOT / "configs" / config, [override])
    assert err.value.key == key


class LeastSquaresModel(torch.nn.Module):
    """A 'model' that answers each x_i by least squares on the examples before it: the suite's known answer."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, xs, ys):
        X, Y = xs.double().numpy(), ys.double().numpy()
        out = [least_squares(X[:, :k], Y[:, :k], X[:, k]) for k in range(xs.shape[1])]
        return torch.from_numpy(np.stack(out, 1)).float()


def test_a_model_that_is_least_squares_scores_as_least_squares_and_gradient_descent_fits_it_at_large_k():
    cfg = RegressionEvalConfig(prompts=64, distributions=["standard", "noisy"], gd_steps=[1, 50])
    rows = regression_rows(LeastSquaresModel(), LINEAR, cfg)
    get = {(r["task"], r["method"], r["k"], r["metric"]): r["value"] for r in rows}
    for k in range(11):
        assert get[("standard", "model", k, "squared_error")] == pytest.approx(
            get[("standard", "least_squares", k, "squared_error")], abs=1e-5)
    assert get[("standard", "least_squares", 10, "squared_error")] < 1e-6  # noiseless, k >= d
    assert get[("standard", "model", 0, "squared_error")] == pytest.approx(1.0, rel=0.25)  # y ~ N(0, d) / d
    assert get[("standard", "least_squares", 8, "update_cosine")] == pytest.approx(1.0, abs=1e-6)
    assert get[("standard", "least_squares", 8, "model_difference")] < 1e-10
    # many steps of gradient descent reach least squares; one step is only the start of it
    assert get[("standard", "gd_50", 10, "update_cosine")] > 0.99
    assert get[("standard", "gd_1", 10, "update_cosine")] < get[("standard", "gd_50", 10, "update_cosine")]
    assert STEP_SIZES[0] <= get[("standard", "gd_1", 10, "step_size")] <= STEP_SIZES[-1]
    # noisy examples: the noise-optimal ridge beats least squares where least squares interpolates the noise
    assert get[("noisy", "ridge", 5, "squared_error")] < get[("noisy", "least_squares", 5, "squared_error")]
    assert {"averaging", "knn"} <= {r["method"] for r in rows}


def test_nonlinear_families_are_measured_on_the_distributions_they_have():
    from metaicl.eval.regression import distributions_for

    tree = FunctionClassConfig(family="decision_tree", n_dims=5, n_points=11)
    assert distributions_for(tree, RegressionEvalConfig()) == ["standard", "noisy"]
    rows = regression_rows(small_model(), tree, RegressionEvalConfig(prompts=8))
    assert {r["task"] for r in rows} == {"standard", "noisy"}
    assert not any(r["method"].startswith("gd_") for r in rows)  # gradient descent on w: linear families only
    assert "greedy_tree" in {r["method"] for r in rows}
    relu = FunctionClassConfig(family="relu2nn", n_dims=5, n_points=5, hidden=8)
    rows = regression_rows(small_model(), relu, RegressionEvalConfig(prompts=4, distributions=["standard"]))
    assert "two_layer_nn" in {r["method"] for r in rows}


@pytest.mark.parametrize("override, key", [
    (["eval.methods=[in_context]"], "eval.methods"),
    (["lm.context_length=20"], "lm.context_length"),
    (["eval.regression.distributions=[sideways]"], "eval.regression.distributions"),
    (["eval.regression.gd_steps=[0]"], "eval.regression.gd_steps"),
    (["train.curriculum.every=0"], "train.curriculum.every"),
    (["lm.name_or_path=gpt2"], "lm.name_or_path"),
])
def test_a_regression_config_that_cannot_run_is_one_error_naming_the_key(override, key):
    from metaicl.core.config import load_config
    from metaicl.experiment import ExperimentConfig
    from tests.conftest import ROOT

    with pytest.raises(ConfigError) as err:
        load_config(ExperimentConfig, ROOT / "configs" / "regression_icl.yaml", override)
    assert err.value.key == key


def test_the_curriculum_is_refused_where_there_are_no_prompts():
    from metaicl.core.config import load_config
    from metaicl.experiment import ExperimentConfig
    from tests.conftest import ROOT

    with pytest.raises(ConfigError) as err:
        load_config(ExperimentConfig, ROOT / "configs" / "quickstart.yaml", ["train.curriculum.dims_start=2"])
    assert err.value.key == "train.curriculum"


def test_prompt_batches_grow_with_the_curriculum_and_depend_on_the_step_only(tmp_path):
    from metaicl.train.config import CurriculumConfig
    from metaicl.train.lm import PromptBatches
    from pretrain_data.build import build
    from pretrain_data.mixture_config import MixtureConfig, SourceConfig

    fc = replace(LINEAR, n_points=11)
    mix = MixtureConfig(name="fc", token_budget=11 * 200, context_length=11, windows_per_shard=64,
                        sources={"linear": SourceConfig(kind="function_class", function_class=fc)})
    manifest = build(mix, tmp_path)
    path = str(manifest.root / "manifest.json")
    cur = CurriculumConfig(points_start=3, points_inc=2, every=10)
    whole = PromptBatches(path, 8)
    assert whole.get(0)[0].shape == (8, 11, 5) and whole.heldout()[1].shape[1] == 11
    grown = PromptBatches(path, 8, curriculum=cur)
    assert [grown.get(s)[0].shape[1] for s in (0, 9, 10, 35, 1000)] == [3, 3, 5, 9, 11]
    halves = [PromptBatches(path, 8, rank, 2, cur).get(12) for rank in (0, 1)]
    assert torch.equal(torch.sort(torch.cat([h[1] for h in halves]).flatten())[0],
                       torch.sort(grown.get(12)[1].flatten())[0])  # two ranks read the one-worker batch
    assert torch.equal(grown.get(12)[0], grown.get(12)[0][:, :5]) and torch.equal(
        grown.get(12)[0], whole.get(12)[0][:, :5])


def test_the_dimension_curriculum_zeroes_the_last_coordinates_and_keeps_y_the_prompts_own_function(tmp_path):
    """Garg et al.'s truncation: in d' < d dimensions x's last coordinates are 0 and y = w[:d'] . x[:d'] for the
    prompt's own stored w (its noise kept); once grown, the batch is the stored prompt."""
    from metaicl.train.config import CurriculumConfig
    from metaicl.train.lm import PromptBatches
    from pretrain_data.build import build
    from pretrain_data.mixture_config import MixtureConfig, SourceConfig

    fc = replace(LINEAR, n_points=11, noise_std=0.1)
    mix = MixtureConfig(name="fc", token_budget=11 * 64, context_length=11, windows_per_shard=32,
                        sources={"linear": SourceConfig(kind="function_class", function_class=fc)})
    path = str(build(mix, tmp_path).root / "manifest.json")
    whole, cur = PromptBatches(path, 8), PromptBatches(path, 8, curriculum=CurriculumConfig(dims_start=2, every=10))
    assert cur.curriculum.points(0, 11) == 11  # no points_start: whole prompts
    xs, ys = cur.get(3)
    full_x, full_y = whole.get(3)
    w = torch.from_numpy(whole.stream.weights(np.arange(24, 32)))
    assert torch.all(xs[..., 2:] == 0) and torch.equal(xs[..., :2], full_x[..., :2])
    noise = full_y - torch.einsum("npd,nd->np", full_x, w)
    assert noise.std() > 0.05  # the stored y is noisy; the truncated y keeps that noise
    assert torch.allclose(ys, torch.einsum("npd,nd->np", xs, w) + noise, atol=1e-5)
    assert torch.all(cur.get(13)[0][..., 3:] == 0) and cur.get(13)[0][..., 2].abs().sum() > 0  # 3 dims at step 10
    assert all(torch.equal(a, b) for a, b in zip(cur.get(30), whole.get(30)))  # 2 + 3 = 5 = d: the stored prompt


def test_a_mixture_built_before_prompts_kept_their_w_is_one_error_naming_it(tmp_path):
    import pyarrow.parquet as pq

    from metaicl.train.config import CurriculumConfig
    from metaicl.train.lm import PromptBatches
    from pretrain_data.build import build
    from pretrain_data.mixture_config import MixtureConfig, SourceConfig

    mix = MixtureConfig(name="fc", token_budget=11 * 32, context_length=11, windows_per_shard=32,
                        sources={"linear": SourceConfig(kind="function_class", function_class=replace(LINEAR,
                                                                                                     n_points=11))})
    manifest = build(mix, tmp_path)
    [shard] = manifest.root.glob("linear-*.parquet")
    pq.write_table(pq.read_table(shard).drop(["ws"]), shard)  # as an earlier version wrote it
    PromptBatches(str(manifest.root / "manifest.json"), 8)  # whole prompts need no w
    with pytest.raises(ConfigError, match="was built before prompts kept their w") as err:
        PromptBatches(str(manifest.root / "manifest.json"), 8, curriculum=CurriculumConfig(dims_start=2))
    assert err.value.key == "train.curriculum.dims_start" and str(manifest.root) in err.value.message


@pytest.mark.parametrize("override, key", [
    (["train.curriculum.dims_start=2", "pretrain.sources.linear.function_class.family=relu2nn"],
     "train.curriculum.dims_start"),  # y in fewer dimensions needs the prompt's w: linear families only
    (["train.curriculum.dims_start=null"], "train.curriculum.points_start"),  # grows neither length nor dimension
])
def test_a_curriculum_that_cannot_run_is_one_error_naming_the_key(override, key):
    from metaicl.core.config import load_config
    from metaicl.experiment import ExperimentConfig
    from tests.conftest import ROOT

    with pytest.raises(ConfigError) as err:
        load_config(ExperimentConfig, ROOT / "configs" / "regression_icl.yaml", override)
    assert err.value.key == key


def test_the_sweep_report_has_a_regression_row_per_trial_with_least_squares_beside_it(tmp_path):
    """A sweep of regression runs (trials are runs: the same pipeline; tests/test_readme_sweeps.py aggregates a real
    one with every other kind): one row per swept value, the model's error at half and at the largest k, mean over
    seeds, and least squares' error on the same prompts."""
    from cluster.results import tidy
    from cluster.sweep_report import regression_section

    rows = []
    for run, (noise, seed) in enumerate([(0.5, 0), (0.5, 1), (2.0, 0)]):
        for method, base in (("model", 0.1 * noise + 0.01 * seed), ("least_squares", 0.0)):
            for k in range(11):
                rows.append({"run": f"r{run}", "arm": "main", "suite": "regression", "task": "linear/noisy",
                             "method": method, "k": k, "seed": seed, "metric": "squared_error",
                             "value": base + (10 - k) / 10, "cfg.eval.regression.noise": noise,
                             "cfg.train.seed": seed})
    table = pd.concat([tidy(pd.DataFrame(rows)), pd.DataFrame(rows)[["cfg.eval.regression.noise", "cfg.train.seed"]]],
                      axis=1)
    lines = regression_section(table)
    text = "\n".join(lines)
    assert "Least squares on the same prompts: linear/noisy k=10 0.000, linear/noisy k=5 0.500." in text
    body = [line for line in text.splitlines() if line.startswith("| ")]
    assert body[0].startswith("| cfg.eval.regression.noise | linear/noisy k=10 | linear/noisy k=5 | seeds |")
    assert body[1:] == ["| 0.500 | 0.055 | 0.555 | 2 |", "| 2.000 | 0.200 | 0.700 | 1 |"]


def test_readme_regression_command_as_typed_from_a_fresh_copy(ray_session, tmp_path):
    """README's regression experiment (issue 17) at toy size, typed from the root of a fresh copy with the default
    relative paths: Garg et al.'s model through the one pipeline (data -> pretrain -> regression suite -> results
    -> report). In this process, on the session's Ray (`metaicl.cli.main`, what the entry point calls): a command
    of its own would start a Ray and a cold worker, ~20 s of the suite's budget (tests/readme.py: which README
    commands run through the entry point, which in this process)."""
    from tests.readme import fresh_copy, line, metaicl_here

    repo = fresh_copy(tmp_path)
    said = metaicl_here(line("metaicl run configs/regression_icl.yaml"), repo).stdout
    [out] = (repo / "runs").glob("regression_icl-" + "[0-9a-f]" * 8)
    results = pd.read_parquet(out / "results.parquet")
    assert set(results.suite) == {"train", "heldout", "regression"} and set(results.stage) == {"pretrain", "eval"}
    suite = results[results.suite == "regression"]
    assert set(suite.task) == {f"linear/{d}" for d in ("standard", "skewed", "noisy", "scaled", "orthant")}
    assert {"model", "least_squares", "ridge", "averaging", "knn", "gd_1", "gd_8"} == set(suite.method)
    assert sorted(suite.k.unique()) == list(range(16))  # every number of in-context examples of a 16-pair prompt
    assert "linear/standard (squared error / d): k=3: model" in said
    report = (out / "report.md").read_text()
    assert "## Regression in context" in report and "### In-context learning against gradient descent" in report
    assert (out / "regression_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (repo / "runs" / "data").is_dir() and str(repo) in (out / "config.yaml").read_text()
