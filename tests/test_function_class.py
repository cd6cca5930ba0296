"""Garg et al. 2022 function classes: each family produces functions with its defining structure."""
from __future__ import annotations

import numpy as np
import pytest

from metaicl.core.errors import ConfigError
from metaicl.core.seeding import rng_for
from pretrain_data.function_class import FunctionClassConfig, sample_prompts


def prompts(**kw):
    return sample_prompts(FunctionClassConfig(**kw), rng_for(0, "fc", str(kw)), 200)


def least_squares(xs, ys):
    return np.stack([np.linalg.lstsq(x.astype(np.float64), y.astype(np.float64), rcond=None)[0] for x, y in zip(xs, ys)])


def test_linear_prompts_are_exactly_linear():
    xs, ys = prompts(family="linear", n_dims=8, n_points=17)
    w = least_squares(xs, ys)
    assert np.abs(np.einsum("npd,nd->np", xs, w) - ys).max() < 1e-3


def test_sparse_linear_weights_have_exactly_s_nonzeros():
    xs, ys = prompts(family="sparse_linear", n_dims=10, n_points=21, sparsity=3)
    w = least_squares(xs, ys)
    assert ((np.abs(w) > 1e-3).sum(axis=1) == 3).all()


def test_decision_trees_take_at_most_two_to_the_depth_values_split_on_signs():
    xs, ys = prompts(family="decision_tree", n_dims=5, n_points=200, tree_depth=3)
    assert all(len(np.unique(y)) <= 8 for y in ys)
    signs_equal = (np.sign(xs[:, :1]) == np.sign(xs)).all(axis=2)  # points in the same orthant as point 0 ...
    assert np.allclose(ys[signs_equal], np.repeat(ys[:, :1], 200, axis=1)[signs_equal])  # ... share its leaf


def test_relu2nn_output_variance_is_about_d():
    _, ys = prompts(family="relu2nn", n_dims=20, n_points=41)
    assert ys.var() == pytest.approx(20, rel=0.2)  # sum of hidden a_i^2 E[ReLU(w.x)^2] = 2 * d / 2


def test_noise_std_adds_noise_and_same_key_gives_same_prompts():
    xs, ys = prompts(family="linear", n_dims=8, n_points=17, noise_std=0.5)
    w = least_squares(xs, ys)
    assert np.abs(np.einsum("npd,nd->np", xs, w) - ys).std() > 0.2
    a = sample_prompts(FunctionClassConfig(), rng_for(1, "fc", 0), 4)
    b = sample_prompts(FunctionClassConfig(), rng_for(1, "fc", 0), 4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_bad_family_and_sparsity_name_their_key():
    with pytest.raises(ConfigError, match="fc.family:"):
        FunctionClassConfig(family="quadratic").validate("fc")
    with pytest.raises(ConfigError, match="fc.sparsity:"):
        FunctionClassConfig(n_dims=4, sparsity=5).validate("fc")
