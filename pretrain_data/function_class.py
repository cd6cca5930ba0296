"""Function-class prompts of Garg et al. 2022 ("What can transformers learn in-context? A case study of simple
function classes"): each prompt draws a function f from a class and points x_i ~ N(0, I_d); y_i = f(x_i).

    xs, ys = sample_prompts(FunctionClassConfig(family="linear"), rng_for(seed, "fc", shard), n=64)

Families (Garg et al. Sec. 2, App. A.1): linear (w ~ N(0, I)), sparse_linear (w with `sparsity` non-zero
coordinates), decision_tree (depth `tree_depth`, each internal node splits on the sign of a random coordinate,
leaves ~ N(0, 1)), relu2nn (sum_i a_i ReLU(w_i . x), w_i ~ N(0, I), a_i ~ N(0, 2/hidden)).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metaicl.core.errors import ConfigError, check_at_least

FAMILIES = ("linear", "sparse_linear", "decision_tree", "relu2nn")


@dataclass
class FunctionClassConfig:
    family: str = "linear"
    """Function class: linear, sparse_linear, decision_tree or relu2nn."""
    n_dims: int = 20
    """d, input dimension (Garg et al. use 20)."""
    n_points: int = 41
    """(x, y) pairs per prompt (Garg et al. use 2d + 1)."""
    sparsity: int = 3
    """Non-zero coordinates of w for sparse_linear."""
    tree_depth: int = 4
    """Depth of the decision trees."""
    hidden: int = 100
    """Hidden units of relu2nn."""
    noise_std: float = 0.0
    """Gaussian noise added to y."""

    def validate(self, prefix: str) -> None:
        if self.family not in FAMILIES:
            raise ConfigError(f"{prefix}.family", f"unknown family {self.family!r} (known: {', '.join(FAMILIES)})")
        check_at_least(self, prefix, ("n_dims", "n_points", "tree_depth", "hidden"), 1)
        if not 1 <= self.sparsity <= self.n_dims:
            raise ConfigError(f"{prefix}.sparsity", f"must be in [1, n_dims={self.n_dims}], got {self.sparsity}")
        if self.noise_std < 0:
            raise ConfigError(f"{prefix}.noise_std", f"must be >= 0, got {self.noise_std}")


def _tree_values(xs: np.ndarray, rng: np.random.Generator, depth: int) -> np.ndarray:
    n, _, d = xs.shape
    split_dim = rng.integers(d, size=(n, 2**depth - 1))  # heap layout: node j has children 2j+1, 2j+2
    leaves = rng.standard_normal((n, 2**depth))
    node = np.zeros(xs.shape[:2], np.int64)
    rows = np.arange(n)[:, None]
    for _ in range(depth):
        go_right = xs[rows, np.arange(xs.shape[1])[None], split_dim[rows, node]] > 0
        node = 2 * node + 1 + go_right
    return leaves[rows, node - (2**depth - 1)]


def linear_weights(cfg: FunctionClassConfig, rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, d) weights of linear functions: w ~ N(0, I), sparse_linear keeping `sparsity` random coordinates."""
    d = cfg.n_dims
    w = rng.standard_normal((n, d))
    if cfg.family == "sparse_linear":
        keep = np.argsort(rng.random((n, d)), axis=1)[:, : cfg.sparsity]
        mask = np.zeros((n, d), bool)
        np.put_along_axis(mask, keep, True, axis=1)
        w = w * mask
    return w


LINEAR = ("linear", "sparse_linear")
"""Families whose function is a weight vector w (y = w . x): the ones a prompt can store its function for."""


def sample_prompts(cfg: FunctionClassConfig, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(xs (n, n_points, d) float32, ys (n, n_points) float32), one function per prompt."""
    return sample_functions(cfg, rng, n)[:2]


def sample_functions(cfg: FunctionClassConfig, rng: np.random.Generator,
                     n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """sample_prompts' prompts and, for the linear families, each prompt's w ((n, d) float32; None otherwise): what
    Garg et al.'s curriculum needs to evaluate the function on x with fewer dimensions."""
    d = cfg.n_dims
    xs = rng.standard_normal((n, cfg.n_points, d))
    ws = None
    if cfg.family in LINEAR:
        ws = linear_weights(cfg, rng, n)
        ys = np.einsum("npd,nd->np", xs, ws)
    elif cfg.family == "decision_tree":
        ys = _tree_values(xs, rng, cfg.tree_depth)
    else:
        w = rng.standard_normal((n, cfg.hidden, d))
        a = rng.standard_normal((n, cfg.hidden)) * np.sqrt(2 / cfg.hidden)
        ys = np.einsum("nh,nph->np", a, np.maximum(np.einsum("nhd,npd->nph", w, xs), 0))
    if cfg.noise_std > 0:
        ys = ys + cfg.noise_std * rng.standard_normal(ys.shape)
    return xs.astype(np.float32), ys.astype(np.float32), None if ws is None else ws.astype(np.float32)
