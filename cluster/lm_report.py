"""The MetaICL table of an LM run: one row per method, mean and worst over seeds of the task-averaged score.

    print(method_table(pd.read_parquet("runs/x/results.parquet")))

As in Min et al. 2022 (Table 3): for each seed the metric is averaged over the target tasks; the table reports the
mean and the worst of that average over the seeds. `scoring: sum` (summed option log-probs) is the headline; the
per-token mean is a second table.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from metaicl.eval.methods import METHODS
from metaicl.core.io import write_text
from cluster.report import markdown_table
from cluster.results import METAICL

HEADLINE = ("metaicl", "in_context", "zero_shot")


def seed_scores(results: pd.DataFrame, metric: str = "macro_f1", scoring: str = "sum") -> pd.DataFrame:
    """(method, k, seed) -> the metric averaged over tasks."""
    rows = results[(results.suite == METAICL) & (results.metric == metric) & (results.scoring == scoring)]
    return rows.groupby(["method", "k", "seed"], as_index=False)["value"].mean()


def method_table(results: pd.DataFrame, metric: str = "macro_f1", scoring: str = "sum") -> pd.DataFrame:
    per_seed = seed_scores(results, metric, scoring)
    table = per_seed.groupby(["method", "k"])["value"].agg(mean="mean", worst="min", seeds="count").reset_index()
    order = {m: i for i, m in enumerate(METHODS)}
    table["row"] = table.method.map(lambda m: METHODS[m].row)
    return table.sort_values(["method", "k"], key=lambda c: c.map(order) if c.name == "method" else c)[
        ["row", "method", "k", "mean", "worst", "seeds"]].reset_index(drop=True)


def headline(results: pd.DataFrame) -> str:
    """MetaICL vs in-context vs 0-shot (macro-F1, summed scores, largest k), as one sentence."""
    table = method_table(results)
    parts = []
    for method in HEADLINE:
        rows = table[table.method == method]
        if len(rows):
            best = rows.iloc[-1]
            parts.append(f"{best.row} {best['mean']:.3f} (worst {best.worst:.3f}, k={best.k})")
    return "macro-F1 on the target tasks, mean over seeds: " + " vs ".join(parts) if parts else ""


def _markdown(table: pd.DataFrame) -> str:
    return markdown_table(table[["row", "k", "mean", "worst", "seeds"]].rename(columns={"row": "method"}))


def write_lm_report(out: Path, title: str, results: pd.DataFrame, notes: str = "") -> str:
    """report.md: the method table (macro-F1 and accuracy; summed and mean scores) and the per-task scores."""
    main = _markdown(method_table(results))
    parts = [f"# {title}", "", headline(results), "", "## Macro-F1 (summed option log-probs; mean and worst over "
             "seeds of the task average)", "", main]
    for metric, scoring in (("accuracy", "sum"), ("macro_f1", "mean")):
        parts += ["", f"## {metric} ({scoring} scoring)", "", _markdown(method_table(results, metric, scoring))]
    per_task = (results[(results.metric == "macro_f1") & (results.scoring == "sum")]
                .groupby(["task", "method"])["value"].mean().unstack("method"))
    per_task = per_task[[m for m in METHODS if m in per_task.columns]]
    parts += ["", "## Per task (macro-F1, mean over k and seeds)", "", markdown_table(per_task.reset_index())]
    if notes:
        parts += ["", notes]
    write_text(out / "report.md", "\n".join(parts) + "\n")
    return main
