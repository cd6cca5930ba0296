"""The regression suite's part of a run's report: error against k (the model and Garg et al.'s estimators, in and
out of distribution) and gradient descent's fit to the model (metaicl/eval/regression.py makes the rows).

    lines = regression_section(results, out)     # also writes out/regression_curves.png
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from metaicl.eval.regression import DISTRIBUTIONS
from cluster.report import markdown_table, pyplot, save_figure
from cluster.results import REGRESSION

METHOD_ORDER = ("model", "least_squares", "ridge", "lasso", "greedy_tree", "two_layer_nn", "averaging", "knn")


def sort_key(name: str):
    """Tasks in the suite's order (source, then standard before the shifted distributions), methods as listed."""
    if name in METHOD_ORDER:
        return METHOD_ORDER.index(name)
    source, _, distribution = name.rpartition("/")
    return (source, DISTRIBUTIONS.index(distribution) if distribution in DISTRIBUTIONS else len(DISTRIBUTIONS))


def errors(results: pd.DataFrame) -> pd.DataFrame:
    """(task, method, k) -> squared error / d, mean over seeds (one row per training seed in a sweep's table)."""
    rows = results[(results.suite == REGRESSION) & (results.metric == "squared_error")]
    return rows.groupby(["task", "method", "k"], as_index=False)["value"].mean()


def columns_k(n_points: int) -> list[int]:
    """The k's a table shows: 0, 1, then doublings, and the largest."""
    ks, k = [0, 1], 2
    while k < n_points - 1:
        ks.append(k)
        k *= 2
    return sorted(set(ks + [n_points - 1]))


def error_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (prompt distribution, estimator), one column per shown k."""
    err = errors(results)
    err = err[err.method.isin(METHOD_ORDER)]
    wide = err.pivot_table(index=["task", "method"], columns="k", values="value").reset_index()
    wide = wide.sort_values(["task", "method"], key=lambda c: c.map(sort_key))
    shown = columns_k(int(err.k.max()) + 1)
    return wide[["task", "method", *shown]].rename(columns={k: f"k={k}" for k in shown})


def gd_table(results: pd.DataFrame) -> pd.DataFrame:
    """Gradient descent (best-fitting step size) and least squares against the model, standard prompts."""
    rows = results[(results.suite == REGRESSION) & results.task.str.endswith("/standard")
                   & results.metric.isin(["model_difference", "update_cosine", "step_size", "squared_error"])
                   & (results.method.str.startswith("gd_") | (results.method == "least_squares"))]
    if rows.empty:
        return rows
    rows = rows[rows.k.isin(columns_k(int(rows.k.max()) + 1)) & (rows.k > 0)]
    wide = rows.pivot_table(index=["task", "method", "k"], columns="metric", values="value").reset_index()
    return wide[["task", "method", "k", *(m for m in ("model_difference", "update_cosine", "step_size",
                                                       "squared_error") if m in wide.columns)]]


def plot_errors(results: pd.DataFrame, path: Path) -> None:
    """Error against k, one panel per prompt distribution."""
    plt = pyplot()
    err = errors(results)
    tasks = sorted(dict.fromkeys(err.task), key=sort_key)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for method in [m for m in METHOD_ORDER if m in set(err.method)]:
            rows = err[(err.task == task) & (err.method == method)]
            ax.plot(rows.k, rows.value, marker="." if method == "model" else None,
                    linewidth=2.2 if method == "model" else 1.1, label=method)
        ax.set_title(task)
        ax.set_xlabel("in-context examples k")
        ax.set_yscale("symlog", linthresh=0.01)
    axes[0][0].set_ylabel("squared error / d")
    axes[0][-1].legend(fontsize=7)
    save_figure(fig, path)


def headline(results: pd.DataFrame) -> str:
    """The model against least squares on standard prompts, at the largest k and at half of it."""
    err = errors(results)
    lines = []
    for task in [t for t in dict.fromkeys(err.task) if t.endswith("/standard")]:
        mine = err[err.task == task]
        top = int(mine.k.max())
        parts = []
        for k in sorted({max(1, top // 4), top // 2, top}):
            pick = mine[mine.k == k].set_index("method").value
            parts.append(f"k={k}: model {pick.get('model', float('nan')):.3f} vs least squares "
                         f"{pick.get('least_squares', float('nan')):.3f}")
        lines.append(f"{task} (squared error / d): " + "; ".join(parts))
    return "\n".join(lines)


def regression_section(results: pd.DataFrame, out: Path) -> list[str]:
    plot_errors(results, out / "regression_curves.png")
    parts = ["", "## Regression in context (Garg et al. 2022)", "", headline(results), "",
             "Squared error of the prediction for the query after k in-context examples, divided by d, mean over "
             "prompts (and training seeds). Every estimator reads the same k examples. least_squares: minimum-norm; "
             "ridge: the noise-optimal penalty (= least squares without noise); averaging: w = mean y_i x_i; knn: "
             "the mean y of the nearest examples. Plot: regression_curves.png.", "",
             markdown_table(error_table(results))]
    gd = gd_table(results)
    if len(gd):
        parts += ["", "### In-context learning against gradient descent (standard prompts)", "",
                  "gd_n: n steps of gradient descent from w = 0 on the k examples, with the step size that fits the "
                  "model best (von Oswald et al. 2023). model_difference: mean squared difference from the model's "
                  "predictions / d; update_cosine: cosine, over prompts, between the estimator's prediction and the "
                  "model's update (its prediction minus its prediction for the same query with no examples).", "",
                  markdown_table(gd)]
    return parts
