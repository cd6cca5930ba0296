"""The MetaICL table of an LM run: one row per method, mean and worst over seeds of the task-averaged score.

    print(method_table(pd.read_parquet("runs/x/results.parquet")))

As in Min et al. 2022 (Table 3): for each seed the metric is averaged over the target tasks; the table reports the
mean and the worst of that average over the seeds. `scoring: sum` (summed option log-probs) is the headline; the
per-token mean is a second table.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from metaicl.eval.methods import METHODS
from metaicl.core.io import write_text
from cluster.report import markdown_table, pyplot, save_figure
from cluster.results import LM_ICL, METAICL, REGRESSION

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
    """MetaICL vs in-context vs 0-shot (macro-F1, summed scores, largest k), as one sentence; then the pretrained
    model's ICL score, repeat gap and induction head (lm_icl)."""
    table = method_table(results)
    parts, lines = [], []
    for method in HEADLINE:
        rows = table[table.method == method]
        if len(rows):
            best = rows.iloc[-1]
            parts.append(f"{best.row} {best['mean']:.3f} (worst {best.worst:.3f}, k={best.k})")
    if parts:
        lines.append("macro-F1 on the target tasks, mean over seeds: " + " vs ".join(parts))
    if (results.suite == REGRESSION).any():
        from cluster.regression_report import headline as regression_headline

        lines.append(regression_headline(results))
    own = results[(results.suite == LM_ICL) & (results.stage == "eval") & (results.method == "pretrained")]
    if len(own):
        wide = lm_icl_table(own, "method").iloc[0]
        lines.append("pretrained model: " + ", ".join(f"{c} {wide[c]:.3f}" for c in
                                                      ("ICL score", "repeat gap", "induction head") if c in wide))
    return "\n".join(lines)


def per_method_table(results: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """(method, k) -> the mean over tasks and seeds of each metric in `columns` (metric -> column title), methods
    in the table's order; summed scoring where a metric has one per scoring."""
    rows = results[(results.suite == METAICL) & results.metric.isin(list(columns))]
    rows = rows[rows.scoring.isna() | (rows.scoring == "sum")]
    if not len(rows):
        return rows
    table = rows.pivot_table(index=["method", "k"], columns="metric", values="value").reset_index()
    order = {m: i for i, m in enumerate(METHODS)}
    table = table.sort_values(["method", "k"], key=lambda c: c.map(order) if c.name == "method" else c)
    table["method"] = table.method.map(lambda m: METHODS[m].row)
    return table.rename(columns=columns)[["method", "k", *[v for c, v in columns.items() if c in table]]]


def label_space_table(results: pd.DataFrame) -> pd.DataFrame:
    """(method, k) -> mean label mass and in-context share over tasks and seeds (metaicl.eval.evaluate)."""
    return per_method_table(results, {"label_mass": "label mass", "context_label_share": "in-context share"})


def order_spread_table(results: pd.DataFrame) -> pd.DataFrame:
    """(method, k) -> mean spread of accuracy over orders of the same demonstrations (eval.demos.permutations)."""
    return per_method_table(results, {"order_spread": "best - worst order", "order_sd": "SD over orders"})


ICL_VS_FT = ("simaou", "simaou_random", "simam_ft", "simam_zsl")


def leakage_table(results: pd.DataFrame) -> pd.DataFrame:
    """held-out family x meta-training family: mean share of the queries the latter's rule answers right."""
    rows = results[(results.suite == METAICL) & results.metric.str.startswith("leakage/")]
    if not len(rows):
        return pd.DataFrame()
    family = rows.task.str.rsplit("_", n=1).str[0]  # last_token_003 -> last_token
    table = rows.assign(family=family, rule=rows.metric.str.removeprefix("leakage/")).pivot_table(
        index="family", columns="rule", values="value", aggfunc="mean")
    return table.reset_index().rename(columns={"family": "held-out family"})


def icl_vs_ft_table(results: pd.DataFrame) -> pd.DataFrame:
    """k -> Dai et al.'s similarities and their controls (metaicl.eval.icl_vs_ft), mean over tasks and seeds."""
    rows = results[(results.suite == METAICL) & results.metric.isin(ICL_VS_FT)]
    if rows.empty:
        return rows
    wide = rows.pivot_table(index="k", columns="metric", values="value").reset_index()
    return wide[["k", *(m for m in ICL_VS_FT if m in wide.columns)]]


def kshot_curves(results: pd.DataFrame) -> pd.DataFrame:
    """Per method with demonstrations: mean accuracy at each k (its 0-shot counterpart as k = 0) and the slope
    against log2(k + 1); only methods with two or more points."""
    from metaicl.eval.kshot import slope

    table = method_table(results, "accuracy")
    rows = []
    for name, method in METHODS.items():
        if not method.demos or method.finetune:
            continue
        zero = [m for m, o in METHODS.items() if not o.demos and not o.finetune and (o.model, o.method, o.pmi) ==
                (method.model, method.method, method.pmi)]
        points = table[table.method.isin([name, *zero])].sort_values("k")
        if len(points) >= 2:
            rows.append({"method": method.row, **{f"k={k}": v for k, v in zip(points.k, points["mean"])},
                         "slope": slope(points.k.to_numpy(), points["mean"].to_numpy())})
    oracle = results[(results.suite == METAICL) & (results.metric == "oracle_accuracy")]
    if rows and len(oracle):  # the ceiling beside the curves: label words learnt from the demonstrations only
        points = oracle.groupby("k").value.mean()
        rows.append({"method": "Oracle (label coverage)", **{f"k={k}": v for k, v in points.items()},
                     "slope": slope(points.index.to_numpy(), points.to_numpy()) if len(points) >= 2 else float("nan")})
    curves = pd.DataFrame(rows)
    if not len(curves):
        return curves
    ks = sorted((c for c in curves.columns if c.startswith("k=")), key=lambda c: int(c[2:]))
    return curves[["method", *ks, "slope"]]


def plot_kshot(curves: pd.DataFrame, path: Path) -> bool:
    """kshot_curves.png: accuracy against k (log2(k + 1) axis, as the slope), one line per method, the oracle
    dashed; only where some method has three or more points (a many-shot curve). Returns whether it drew."""
    ks = [c for c in curves.columns if c.startswith("k=")]
    if len(curves) == 0 or max(curves[ks].notna().sum(axis=1)) < 3:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for _, row in curves.iterrows():
        points = [(int(c[2:]), row[c]) for c in ks if pd.notna(row[c])]
        ax.plot([np.log2(k + 1) for k, _ in points], [v for _, v in points], marker=".",
                linestyle="--" if row.method.startswith("Oracle") else "-", label=row.method)
    ticks = sorted({int(c[2:]) for c in ks})
    ax.set_xticks([np.log2(k + 1) for k in ticks], [str(k) for k in ticks])
    ax.set_xlabel("demonstrations k")
    ax.set_ylabel("accuracy (mean over seeds)")
    ax.legend(fontsize=7)
    save_figure(fig, path)
    return True


def _markdown(table: pd.DataFrame) -> str:
    return markdown_table(table[["row", "k", "mean", "worst", "seeds"]].rename(columns={"row": "method"}))


def write_lm_report(out: Path, title: str, results: pd.DataFrame, notes: str = "") -> str:
    """report.md: the method table (macro-F1 and accuracy; summed and mean scores) and the per-task scores, then
    each model's own in-context ability (lm_icl); returns what the run prints."""
    parts, main = [f"# {title}"], ""
    if (results.suite == METAICL).any():
        main = _markdown(method_table(results))
        parts += ["", headline(results), "", "## Macro-F1 (summed option log-probs; mean and worst over seeds of the "
                  "task average)", "", main]
        for metric, scoring in (("accuracy", "sum"), ("macro_f1", "mean")):
            parts += ["", f"## {metric} ({scoring} scoring)", "", _markdown(method_table(results, metric, scoring))]
        per_task = (results[(results.suite == METAICL) & (results.metric == "macro_f1") & (results.scoring == "sum")]
                    .groupby(["task", "method"])["value"].mean().unstack("method"))
        per_task = per_task[[m for m in METHODS if m in per_task.columns]]
        parts += ["", "## Per task (macro-F1, mean over k and seeds)", "", markdown_table(per_task.reset_index())]
        sections = [
            ("Label-space mass at the answer slot (direct scoring; mean over tasks and seeds)",
             "The model's total probability on the option strings after the query, and the share of it on options "
             "the demonstrations show: high mass and a share near the demonstrations' coverage whatever the right "
             "answer is = the answer-vocabulary plateau.", label_space_table(results)),
            ("k-shot curves (accuracy, mean over seeds)",
             "Each method with demonstrations at every k measured, its 0-shot counterpart (the same model and "
             "scoring, no demonstrations) as k = 0; slope: accuracy per doubling of k + 1 (least squares against "
             "log2(k + 1)). Oracle: a reader that knows each input's class and learns the label words from the "
             "demonstrations only (the ceiling where words are arbitrary per task, as in the synthetic families).",
             kshot_curves(results))]
        sections.append((
            "Held out? Meta-training rules on the held-out tasks (leakage)",
            "Per held-out family, the share of its test queries that each meta-training family's rule answers right "
            "(pretrain_data/task_families.py: leakage). MetaICL's target tasks are unseen: a share near 0 means "
            "meta-training cannot teach the held-out rule itself; a high one means a lift there is partly "
            "in-family.", leakage_table(results)))
        sections.append((
            "Spread over orders (Lu et al. 2022; accuracy, summed scoring, mean over tasks and seeds)",
            "Each seed's shared set scored in eval.demos.permutations orders (the drawn one and random others): the "
            "best minus the worst order's accuracy and their SD; the table above is the drawn order's.",
            order_spread_table(results)))
        sections.append((
            "In-context learning against fine-tuning (Dai et al. 2023; mean over tasks and seeds)",
            "At the answer slot, per layer then averaged: simaou = cosine between the attention output's update by "
            "the demonstrations in context and by fine-tuning on them (each against the query alone), "
            "simaou_random = the same against a random update (the control); simam_ft / simam_zsl = cosine of "
            "the in-context attention over the query's tokens with the fine-tuned model's / the query-alone "
            "model's (metaicl/eval/icl_vs_ft.py).", icl_vs_ft_table(results)))
        drew = plot_kshot(sections[1][2], out / "kshot_curves.png")
        for title, text, table in sections:
            if len(table):
                parts += ["", f"## {title}", "", text, "", markdown_table(table)]
            if title.startswith("k-shot") and drew:
                parts += ["", "![accuracy against k, log scale (kshot_curves.png)](kshot_curves.png)"]
    if (results.suite == LM_ICL).any():
        parts += lm_icl_section(results)
    if (results.suite == REGRESSION).any():
        from cluster.regression_report import regression_section

        parts += regression_section(results, out)
    if notes:
        parts += ["", notes]
    write_text(out / "report.md", "\n".join(parts) + "\n")
    return main


LM_ICL_COLUMNS = {("mixture", "icl_score"): "ICL score", ("shuffled", "icl_score"): "… shuffled",
                  ("repeat", "gap"): "repeat gap", ("repeat", "copy_accuracy"): "copy acc.",
                  ("repeat_boundary", "gap"): "gap across boundary", ("repeat_lag", "gap"): "gap at lag n",
                  ("heads", "induction_score"): "induction head", ("heads", "previous_token_score"): "prev-token head"}
"""The lm_icl measurements a report shows, in this order (metaicl/eval/lm_icl.py defines them)."""


def lm_icl_table(rows: pd.DataFrame, by: str) -> pd.DataFrame:
    """One row per value of `by` (a model, a step), one column per LM_ICL_COLUMNS entry (mean over repeats)."""
    rows = rows.assign(column=[LM_ICL_COLUMNS.get((t, m)) for t, m in zip(rows.task, rows.metric)]).dropna(
        subset=["column"])
    wide = rows.pivot_table(index=by, columns="column", values="value", aggfunc="mean")
    return wide[[c for c in LM_ICL_COLUMNS.values() if c in wide.columns]].reset_index()


def over_training(curves: pd.DataFrame) -> pd.DataFrame:
    """Per measurement of a training curve: onset (the first step at which it reaches half its final value, its
    sign taken into account: the ICL score falls, the gap rises; Singh et al. 2023 use this to time emergence),
    peak (the step and value furthest in the final value's direction) and final value."""
    out = []
    for (task, metric), curve in curves.sort_values("step").groupby(["task", "metric"], sort=False):
        if (task, metric) not in LM_ICL_COLUMNS:
            continue
        steps, values = curve.step.to_numpy(), curve.value.to_numpy(float)
        final = values[-1]
        sign = 1.0 if final >= 0 else -1.0
        reached = [int(s) for s, v in zip(steps, values) if final != 0 and sign * v >= sign * final / 2]
        peak = int(np.argmax(sign * values))
        out.append({"measurement": LM_ICL_COLUMNS[(task, metric)], "onset step": reached[0] if reached else None,
                    "peak step": int(steps[peak]), "peak": values[peak], "final": final})
    table = pd.DataFrame(out)
    table["onset step"] = pd.array(table["onset step"], dtype="Int64")  # None: the final value is 0
    return table


def lm_icl_section(results: pd.DataFrame) -> list[str]:
    """Each model's own in-context ability after training, and the pretraining curve's onset, peak and final."""
    rows = results[results.suite == LM_ICL]
    parts = ["", "## In-context ability of each model (lm_icl)", "",
             "ICL score: loss at late minus early positions of held-out windows of the mixture (negative = the "
             "context helps; Olsson et al. 2022), and on each window's tokens shuffled (order control: a model that relies on order does worse late there). Repeat gap: "
             "loss on the first minus the second copy of a random token sequence (≈ ln V for a perfect copier, 0 "
             "for none), with the second copy's top-1 copy accuracy; across a document boundary and at a lag of n "
             "random tokens. Head scores: the best head's induction and previous-token attention (TransformerLens' "
             "head detector)."]
    after = rows[rows.stage == "eval"]
    if len(after):
        parts += ["", markdown_table(lm_icl_table(after, "method").rename(columns={"method": "model"}))]
    during = rows[rows.stage == "pretrain"]
    if len(during):
        parts += ["", "### Over pretraining", "", markdown_table(over_training(during))]
    curves = after[after.task.str.startswith("kshot/")]
    if len(curves):
        parts += ["", "### k-shot on GINC prompts", "",
                  "Accuracy of the most probable option (raw; batch-calibrated) against the Bayes-optimal reader on "
                  "the same prompts, the model's probability mass on the options (label mass) and the share of it on "
                  "options the prompt shows; slope: per doubling of k + 1 (metaicl/eval/kshot.py).", "",
                  markdown_table(kshot_table(curves))]
    return parts


KSHOT_COLUMNS = {"accuracy": "accuracy", "accuracy_calibrated": "calibrated", "bayes_accuracy": "Bayes",
                 "label_mass": "label mass", "context_label_share": "in-context share"}


def kshot_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, source, k) and one per curve's slopes (k = "slope")."""
    rows = rows.assign(model=rows.method, source=rows.task.str.removeprefix("kshot/"))
    points = rows[rows.k.notna()].pivot_table(index=["model", "source", "k"], columns="metric", values="value")
    points = points[[c for c in KSHOT_COLUMNS if c in points.columns]].rename(columns=KSHOT_COLUMNS).reset_index()
    slopes = rows[rows.k.isna()].assign(metric=lambda f: f.metric.str.removesuffix("_slope"))
    slopes = slopes.pivot_table(index=["model", "source"], columns="metric", values="value")
    slopes = slopes.rename(columns=KSHOT_COLUMNS).reset_index().assign(k="slope")
    table = pd.concat([points.assign(k=points.k.astype(int).astype(str)), slopes], ignore_index=True)
    table = table.sort_values(["model", "source"], kind="stable")[
        ["model", "source", "k", *[c for c in KSHOT_COLUMNS.values() if c in table]]]
    return table.astype(object).where(table.notna(), "")  # a slope row has no label mass
