"""The regression suite: in-context learning of a function class (Garg et al. 2022), the model against the estimators
they compare it with, in and out of distribution, and against gradient descent on the demonstrations (von Oswald
et al. 2023; Dai et al. 2023).

    rows = regression_rows(model, FunctionClassConfig(family="linear", n_dims=5, n_points=11), RegressionEvalConfig())

Error is Garg et al.'s: the squared error of the prediction for the query x_{k+1} given k in-context examples,
divided by d, averaged over prompts (predicting 0 scores 1 on a linear function with w ~ N(0, I_d)). Every estimator
sees exactly the k examples the model sees. Prompt distributions (Garg et al. Sec. 4):
- `standard`: the training distribution;
- `skewed`: x ~ N(0, S) with S's eigenvalues proportional to 1/i^2 in a random basis, trace d;
- `noisy`: the examples' y carry N(0, noise^2) noise; the query is scored against the noiseless f(x);
- `scaled`: x scaled by `scale`, examples and query;
- `orthant`: the examples' x in one random orthant, the query's in the opposite one.

Randomness is keyed by (seed, "regression", distribution): every model of a sweep is scored on the same prompts.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import List

import numpy as np

from metaicl.core.errors import ConfigError, check_at_least
from metaicl.core.seeding import rng_for
from pretrain_data.function_class import LINEAR, FunctionClassConfig, linear_weights, sample_prompts

DISTRIBUTIONS = ("standard", "skewed", "noisy", "scaled", "orthant")


@dataclass
class RegressionEvalConfig:
    prompts: int = 512
    """Prompts per distribution (Garg et al. use 1,280)."""
    distributions: List[str] = field(default_factory=lambda: list(DISTRIBUTIONS))
    """standard (the training distribution) and Garg et al.'s out-of-distribution prompts: skewed, noisy, scaled,
    orthant."""
    noise: float = 1.0
    """`noisy`: standard deviation of the noise on the examples' y."""
    scale: float = 2.0
    """`scaled`: the factor on every x."""
    neighbours: int = 3
    """k of the k-nearest-neighbours baseline (Garg et al.: 3)."""
    gd_steps: List[int] = field(default_factory=lambda: [1, 8])
    """Linear families: steps of gradient descent from w = 0 on the examples whose predictions are compared with
    the model's, each with its best-fitting step size (von Oswald et al. 2023: one step ~ one linear attention
    layer)."""
    seed: int = 0
    """The prompts' seed (not the training seed: models are compared on the same prompts)."""

    def validate(self, prefix: str = "eval.regression") -> None:
        check_at_least(self, prefix, ("prompts", "neighbours"), 1)
        unknown = [d for d in self.distributions if d not in DISTRIBUTIONS]
        if unknown or not self.distributions:
            raise ConfigError(f"{prefix}.distributions", f"must be a non-empty subset of {list(DISTRIBUTIONS)}, "
                                                         f"got {self.distributions}")
        if any(s < 1 for s in self.gd_steps):
            raise ConfigError(f"{prefix}.gd_steps", f"must be steps >= 1, got {self.gd_steps}")
        for key in ("noise", "scale"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{prefix}.{key}", f"must be > 0, got {getattr(self, key)}")


def prompts(family: FunctionClassConfig, cfg: RegressionEvalConfig, distribution: str):
    """(xs, ys the model and estimators read, targets: the noiseless f(x)) for one distribution."""
    rng = rng_for(cfg.seed, "regression", distribution)
    n, p, d = cfg.prompts, family.n_points, family.n_dims
    clean = replace(family, noise_std=0.0)
    if distribution == "skewed":  # the function is drawn on standard x, then evaluated on skewed ones
        basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
        eig = 1.0 / np.arange(1, d + 1) ** 2
        root = basis * np.sqrt(eig * d / eig.sum())  # S = root @ root.T, trace d
        xs, ys = _relabel(clean, rng, n, lambda x: x @ root.T)
    elif distribution == "scaled":
        xs, ys = _relabel(clean, rng, n, lambda x: x * cfg.scale)
    elif distribution == "orthant":
        signs = rng.choice([-1.0, 1.0], size=(n, 1, d))
        side = np.ones((1, p, 1))
        side[:, -1] = -1  # the query: the opposite orthant
        xs, ys = _relabel(clean, rng, n, lambda x: np.abs(x) * signs * side)
    else:
        xs, ys = sample_prompts(clean, rng, n)
    targets = ys.astype(np.float64)
    seen = ys + (cfg.noise * rng.standard_normal(ys.shape) if distribution == "noisy" else 0.0)
    if distribution != "noisy" and family.noise_std > 0:
        seen = ys + family.noise_std * rng.standard_normal(ys.shape)
    return xs.astype(np.float32), seen.astype(np.float32), targets


def _relabel(family: FunctionClassConfig, rng, n: int, transform):
    """Prompts whose x are transformed, with y = f(transformed x): the function is sampled with its x (Garg et
    al.'s sampler), then evaluated on new x. Linear families: f read back from the standard prompt by least
    squares would be exact only for k >= d, so w is drawn here directly with the family's own law."""
    xs, _ = sample_prompts(family, rng, n)
    new = transform(xs.astype(np.float64))
    if family.family in LINEAR:
        return new, np.einsum("npd,nd->np", new, linear_weights(family, rng, n))
    raise ConfigError("eval.regression.distributions", f"skewed, scaled and orthant prompts are built for linear "
                                                      f"families, not {family.family!r}")


def noise_variance(family: FunctionClassConfig, cfg: RegressionEvalConfig, distribution: str) -> float:
    return cfg.noise ** 2 if distribution == "noisy" else family.noise_std ** 2


# -- the estimators: each predicts the query x_k from the k examples before it, for all prompts at once --------

def least_squares(X: np.ndarray, Y: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Minimum-norm least squares (the Bayes estimator for noiseless w ~ N(0, I))."""
    if X.shape[1] == 0:
        return np.zeros(len(q))
    w = np.einsum("ndk,nk->nd", np.linalg.pinv(X), Y)
    return np.einsum("nd,nd->n", w, q)


def ridge(X: np.ndarray, Y: np.ndarray, q: np.ndarray, lam: float) -> np.ndarray:
    """(X'X + lam I)^-1 X'Y: the posterior mean for w ~ N(0, I) and noise variance lam; lam = 0 is least squares."""
    if lam == 0 or X.shape[1] == 0:
        return least_squares(X, Y, q)
    d = X.shape[2]
    gram = np.einsum("nkd,nke->nde", X, X) + lam * np.eye(d)
    w = np.linalg.solve(gram, np.einsum("nkd,nk->nd", X, Y)[..., None])[..., 0]
    return np.einsum("nd,nd->n", w, q)


def nearest_neighbours(X: np.ndarray, Y: np.ndarray, q: np.ndarray, n_neighbours: int) -> np.ndarray:
    """Mean y of the n_neighbours examples nearest to the query (all of them when there are fewer)."""
    if X.shape[1] == 0:
        return np.zeros(len(q))
    dist = ((X - q[:, None]) ** 2).sum(-1)
    nearest = np.argsort(dist, axis=1, kind="stable")[:, :n_neighbours]
    return np.take_along_axis(Y, nearest, axis=1).mean(1)


def averaging(X: np.ndarray, Y: np.ndarray, q: np.ndarray) -> np.ndarray:
    """w = mean of y_i x_i (unbiased for w when x ~ N(0, I))."""
    if X.shape[1] == 0:
        return np.zeros(len(q))
    return np.einsum("nd,nd->n", np.einsum("nk,nkd->nd", Y, X) / X.shape[1], q)


def lasso(X: np.ndarray, Y: np.ndarray, q: np.ndarray, alpha: float = 0.01, iters: int = 300) -> np.ndarray:
    """min (1/2k)|Xw - Y|^2 + alpha |w|_1 by ISTA (sparse linear functions' baseline)."""
    if X.shape[1] == 0:
        return np.zeros(len(q))
    k = X.shape[1]
    step = k / np.maximum(np.linalg.norm(X, ord=2, axis=(1, 2)) ** 2, 1e-12)  # 1 / Lipschitz constant
    w = np.zeros((len(q), X.shape[2]))
    for _ in range(iters):
        grad = np.einsum("nkd,nk->nd", X, np.einsum("nkd,nd->nk", X, w) - Y) / k
        z = w - step[:, None] * grad
        w = np.sign(z) * np.maximum(np.abs(z) - step[:, None] * alpha, 0)
    return np.einsum("nd,nd->n", w, q)


def greedy_tree(X: np.ndarray, Y: np.ndarray, q: np.ndarray, depth: int) -> np.ndarray:
    """A regression tree grown greedily (CART: at each node the split, on one coordinate between two of its
    examples' values, that most lowers the squared error) to `depth`, the mean y of the query's leaf (decision
    trees' baseline). Only the query's path is grown: a node's split depends on that node's examples alone."""
    out = np.zeros(len(q))
    for i in range(len(q)):
        x, y = X[i], Y[i]
        for _ in range(depth):
            if len(y) < 2:
                break
            split = _best_split(x, y)
            if split is None:
                break
            j, threshold = split
            keep = (x[:, j] > threshold) == (q[i, j] > threshold)
            x, y = x[keep], y[keep]
        out[i] = y.mean() if len(y) else 0.0
    return out


def _best_split(x: np.ndarray, y: np.ndarray):
    """(coordinate, threshold) of the split with the least summed squared error, or None if no coordinate splits."""
    n, best = len(y), (np.inf, None)
    left = np.arange(1, n)
    for j in range(x.shape[1]):
        order = np.argsort(x[:, j], kind="stable")
        xs, ys = x[order, j], y[order]
        s, s2 = np.cumsum(ys), np.cumsum(ys ** 2)
        sse = s2[:-1] - s[:-1] ** 2 / left + (s2[-1] - s2[:-1]) - (s[-1] - s[:-1]) ** 2 / (n - left)
        sse = np.where(xs[1:] > xs[:-1], sse, np.inf)
        m = int(np.argmin(sse))
        if sse[m] < best[0]:
            best = (sse[m], (j, (xs[m] + xs[m + 1]) / 2))
    return best[1]


def two_layer_network(X: np.ndarray, Y: np.ndarray, q: np.ndarray, hidden: int = 100, steps: int = 300,
                      lr: float = 0.01, seed: int = 0) -> np.ndarray:
    """A 2-layer ReLU network (`hidden` units) fitted to each prompt's k examples by Adam on the squared error, one
    network per prompt, all trained at once (ReLU networks' baseline)."""
    import torch

    if X.shape[1] == 0:
        return np.zeros(len(q))
    gen = torch.Generator().manual_seed(seed)
    n, _, d = X.shape
    w = (torch.randn(n, hidden, d, generator=gen, dtype=torch.float64) / np.sqrt(d)).requires_grad_()
    a = (torch.randn(n, hidden, generator=gen, dtype=torch.float64) / np.sqrt(hidden)).requires_grad_()
    x, y = torch.from_numpy(X), torch.from_numpy(Y)
    optimizer = torch.optim.Adam([w, a], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        pred = torch.einsum("nh,nkh->nk", a, torch.relu(torch.einsum("nhd,nkd->nkh", w, x)))
        ((pred - y) ** 2).mean(1).sum().backward()  # each prompt's network sees only its own loss
        optimizer.step()
    with torch.no_grad():
        return torch.einsum("nh,nh->n", a, torch.relu(torch.einsum("nhd,nd->nh", w, torch.from_numpy(q)))).numpy()


def gradient_descent(X: np.ndarray, Y: np.ndarray, q: np.ndarray, steps: int, lr: np.ndarray) -> np.ndarray:
    """Predictions after `steps` of gradient descent from w = 0 on (1/2k)|Xw - Y|^2, one row per step size in `lr`:
    (len(lr), n)."""
    k = X.shape[1]
    if k == 0:
        return np.zeros((len(lr), len(q)))
    w = np.zeros((len(lr), len(q), X.shape[2]))
    for _ in range(steps):
        residual = np.einsum("nkd,lnd->lnk", X, w) - Y
        w = w - lr[:, None, None] * np.einsum("nkd,lnk->lnd", X, residual) / k
    return np.einsum("lnd,nd->ln", w, q)


STEP_SIZES = np.geomspace(1e-3, 2.0, 60)
"""Gradient descent's step sizes tried for the best fit to the model (per number of steps and k)."""


def baselines(family: FunctionClassConfig, cfg: RegressionEvalConfig, distribution: str):
    """name -> function(X, Y, q) of the estimators Garg et al. compare with, for this family: least squares, ridge,
    k-nearest neighbours and averaging for every family, and the family's own (Lasso for sparse linear functions, a
    greedy tree for decision trees, a trained 2-layer network for ReLU networks)."""
    lam = noise_variance(family, cfg, distribution)
    out = {"least_squares": least_squares,
           "ridge": lambda X, Y, q: ridge(X, Y, q, lam),
           "knn": lambda X, Y, q: nearest_neighbours(X, Y, q, cfg.neighbours),
           "averaging": averaging}
    if family.family == "sparse_linear":
        out["lasso"] = lasso
    elif family.family == "decision_tree":
        out["greedy_tree"] = lambda X, Y, q: greedy_tree(X, Y, q, family.tree_depth)
    elif family.family == "relu2nn":
        out["two_layer_nn"] = lambda X, Y, q: two_layer_network(X, Y, q, family.hidden)
    return out


def model_predictions(model, xs: np.ndarray, ys: np.ndarray, batch: int = 256) -> np.ndarray:
    """(n, P): the model's prediction for each x_i from the examples before it."""
    import torch

    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(xs), batch):
            out.append(model(torch.from_numpy(xs[i:i + batch]).to(device),
                             torch.from_numpy(ys[i:i + batch]).to(device)).float().cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    denominator = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denominator) if denominator > 0 else float("nan")


def distributions_for(family: FunctionClassConfig, cfg: RegressionEvalConfig) -> list[str]:
    """The configured distributions this family has: skewed, scaled and orthant prompts redraw x, which needs the
    function itself (a linear family's w); other families get standard and noisy."""
    return [d for d in cfg.distributions if family.family in LINEAR or d in ("standard", "noisy")]


def measure_regression(model_dir: str, stream_root: str, cfg: RegressionEvalConfig, device: str = "cpu",
                       threads: int | None = None) -> list[dict]:
    """The suite's rows for a saved model (the Ray task of a run's evaluation): every source of the mixture it was
    trained on, task `<source>/<distribution>`."""
    import torch

    from metaicl.models.regression import load_regressor
    from pretrain_data.manifest import Manifest

    if threads:
        torch.set_num_threads(threads)
    model = load_regressor(model_dir).to(device)
    rows = []
    for name, source in Manifest.read(stream_root).config["sources"].items():
        family = FunctionClassConfig(**source["function_class"])
        rows += [{**row, "task": f"{name}/{row['task']}"} for row in regression_rows(model, family, cfg)]
    return rows


def regression_rows(model, family: FunctionClassConfig, cfg: RegressionEvalConfig) -> list[dict]:
    """Rows {task: distribution, method, k, metric, value}: `squared_error` (/ d) of the model and each estimator
    for k = 0 .. n_points - 1; for linear families, gradient descent's fit to the model (method gd_<steps>:
    `model_difference` = mean squared difference of the predictions / d, `update_cosine` = cosine between the
    prediction updates over the prompts, `step_size`, and its own `squared_error`), with least squares' difference
    and cosine beside it."""
    rows, d = [], family.n_dims
    model.eval()
    for distribution in distributions_for(family, cfg):
        xs, ys, targets = prompts(family, cfg, distribution)
        xs64, ys64 = xs.astype(np.float64), ys.astype(np.float64)
        pred = model_predictions(model, xs, ys)
        # the model with no examples, at each query: where its prediction "update" starts from
        alone = model_predictions(model, xs.reshape(-1, 1, d), ys.reshape(-1, 1)).reshape(ys.shape)

        def add(method, k, metric, value):
            rows.append({"task": distribution, "method": method, "k": k, "metric": metric, "value": float(value)})

        estimators = baselines(family, cfg, distribution)
        for k in range(family.n_points):
            X, Y, q, target = xs64[:, :k], ys64[:, :k], xs64[:, k], targets[:, k]
            update = pred[:, k] - alone[:, k]
            add("model", k, "squared_error", np.mean((pred[:, k] - target) ** 2) / d)
            for name, estimate in estimators.items():
                guess = estimate(X, Y, q)
                add(name, k, "squared_error", np.mean((guess - target) ** 2) / d)
                if name == "least_squares" and family.family in LINEAR and k > 0:
                    add(name, k, "model_difference", np.mean((guess - pred[:, k]) ** 2) / d)
                    add(name, k, "update_cosine", cosine(guess, update))
            if family.family not in LINEAR or k == 0:
                continue
            for steps in cfg.gd_steps:
                guesses = gradient_descent(X, Y, q, steps, STEP_SIZES)
                best = int(np.argmin(((guesses - pred[:, k]) ** 2).mean(1)))
                guess, method = guesses[best], f"gd_{steps}"
                add(method, k, "squared_error", np.mean((guess - target) ** 2) / d)
                add(method, k, "model_difference", np.mean((guess - pred[:, k]) ** 2) / d)
                add(method, k, "update_cosine", cosine(guess, update))
                add(method, k, "step_size", STEP_SIZES[best])
    return rows
