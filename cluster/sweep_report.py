"""`metaicl report RUNS_DIR`: a sweep's aggregate table as report.md + a standalone report.html with plots.

    write_sweep_report(root, aggregate([root]), "burstiness x zipf")

Sections: the final-accuracy table per trial (mean and worst over seeds); the ICL vs IWL phase diagram over the
first two swept keys (Chan et al. 2022 Fig. 3 style: icl_novel and iwl accuracy as heat maps); k-shot curves when
the context size varies; accuracy over training; and a first attribution view: for each data-card statistic that
varies across the sweep, the slope of final accuracy on that statistic (standardised, one SD), with its 95%
t interval. Correlational, across the sweep's own grid: a statistic that moves with a swept knob
shares its slope.
"""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import numpy as np
import pandas as pd

from cluster.report import last_accuracy, markdown_table, pyplot, save_figure, set_accuracy
from cluster.lm_report import LM_ICL_COLUMNS
from cluster.results import ICL_SETS, LM_ICL, METAICL, REGRESSION, eval_sets
from metaicl.eval.methods import METHODS
from metaicl.core.io import write_text

SEED_KEYS = ("cfg.data.seed", "cfg.train.seed", "cfg.pretrain.seed", "cfg.metatrain.seed")


def swept_keys(table: pd.DataFrame) -> list[str]:
    """Config columns that take more than one value across the runs (seeds aside)."""
    cols = [c for c in table.columns if c.startswith("cfg.") and c not in SEED_KEYS]
    return [c for c in cols if table[c].astype(str).nunique() > 1]


def final_accuracy(table: pd.DataFrame) -> pd.DataFrame:
    """Accuracy on each eval set at each (run, arm)'s last step: one row per (run, arm, eval)."""
    return last_accuracy(table, by=("run", "arm"))


def trial_table(final: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Swept keys x eval set: mean and worst accuracy over seeds, and how many seeds."""
    keys = keys or ["arm"]  # one trial (or nothing swept): a row per arm
    index = list(dict.fromkeys([*keys, "run", "arm"]))
    wide = final.pivot_table(index=index, columns="task", values="value").reset_index()
    sets = eval_sets(final)
    grouped = wide.groupby(keys, dropna=False)[sets]
    out = grouped.mean().add_suffix(" mean").join(grouped.min().add_suffix(" worst"))
    out["seeds"] = grouped.size()
    return out.reset_index()


def phase_diagram(final: pd.DataFrame, x: str, y: str, path: Path) -> None:
    plt = pyplot()
    sets = [s for s in ("icl_novel", "iwl") if s in set(final["task"])]
    fig, axes = plt.subplots(1, len(sets), figsize=(4.4 * len(sets), 3.6), squeeze=False)
    for ax, name in zip(axes[0], sets):
        grid = final[final["task"] == name].pivot_table(index=y, columns=x, values="value", aggfunc="mean")
        image = ax.imshow(grid.values, origin="lower", vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set(xticks=range(grid.shape[1]), xticklabels=grid.columns, yticks=range(grid.shape[0]),
               yticklabels=grid.index, xlabel=x.removeprefix("cfg."), ylabel=y.removeprefix("cfg."), title=name)
        for (i, j), v in np.ndenumerate(grid.values):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black", fontsize=8)
        fig.colorbar(image, ax=ax, fraction=0.046)
    save_figure(fig, path)


def curves(table: pd.DataFrame, keys: list[str], path: Path, against: str = "step") -> None:
    """Accuracy against `against` (training step, or context size for k-shot curves), one line per setting of
    the other swept keys, mean over seeds."""
    plt = pyplot()
    if against == "step":
        acc = set_accuracy(table)
    else:
        acc = final_accuracy(table)
    sets = eval_sets(acc)
    groups = [k for k in keys if k != against] or ["arm"]
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.4), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], sets):
        for label, rows in acc[acc["task"] == name].groupby(groups, dropna=False):
            mean = rows.groupby(against).value.mean()
            text = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(groups, np.atleast_1d(label)))
            ax.plot(mean.index, mean.values, marker=".", label=text)
        ax.set(title=name, xlabel=against.removeprefix("cfg."), ylim=(-0.02, 1.02))
    axes[0][0].set_ylabel("accuracy")
    axes[0][-1].legend(fontsize=6)
    save_figure(fig, path)


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t (bisection on its CDF, the density integrated by Simpson's rule); no scipy needed."""
    const = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(t: float) -> float:
        x = np.linspace(0.0, t, 2001)
        pdf = np.exp(const - (df + 1) / 2 * np.log1p(x * x / df))
        return 0.5 + (x[1] - x[0]) / 3 * (pdf[0] + pdf[-1] + 4 * pdf[1:-1:2].sum() + 2 * pdf[2:-1:2].sum())

    lo, hi = 0.0, 1000.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def r_squared(y: np.ndarray, resid: np.ndarray) -> float:
    """Share of y's variance the fit explains; nan when y does not vary (nothing to explain)."""
    total = float(((y - y.mean()) ** 2).sum())
    return round(1 - float((resid ** 2).sum()) / total, 3) if total > 0 else float("nan")


def attribution(final: pd.DataFrame, targets: tuple[str, ...] = ("icl_novel", "iwl")) -> pd.DataFrame:
    """Per (target: an eval set or a method, card statistic): OLS slope of the final score per one SD of the
    statistic across (run, arm) points, its 95% t interval (n - 2 degrees of freedom), R^2 and n."""
    cards = [c for c in final.columns if c.startswith("card.") and pd.api.types.is_numeric_dtype(final[c])]
    rows = []
    for name in targets:
        points = final[final["task"] == name]
        for stat in cards:
            x, y = points[stat].to_numpy(float), points["value"].to_numpy(float)
            ok = np.isfinite(x) & np.isfinite(y)
            x, y = x[ok], y[ok]
            if len(x) < 3 or np.ptp(x) <= 1e-9 * max(1.0, float(np.abs(x).max())):  # a constant: no slope
                continue
            z = (x - x.mean()) / x.std()
            slope, intercept = np.polyfit(z, y, 1)
            resid = y - (slope * z + intercept)
            se = math.sqrt((resid ** 2).sum() / (len(z) - 2) / (z ** 2).sum())
            half = t_quantile(0.975, len(z) - 2) * se
            rows.append({"task": name, "statistic": stat.removeprefix("card."), "slope_per_sd": round(slope, 4),
                         "ci_low": round(slope - half, 4), "ci_high": round(slope + half, 4),
                         "r2": r_squared(y, resid), "n": len(z)})
    return pd.DataFrame(rows)


def attribution_plot(attr: pd.DataFrame, path: Path) -> None:
    plt = pyplot()
    sets = list(dict.fromkeys(attr["task"]))
    fig, axes = plt.subplots(1, len(sets), figsize=(4.6 * len(sets), 0.4 * attr.statistic.nunique() + 1.4),
                             sharey=True, squeeze=False)
    for ax, name in zip(axes[0], sets):
        rows = attr[attr["task"] == name]
        pos = np.arange(len(rows))
        ax.errorbar(rows.slope_per_sd, pos, xerr=[rows.slope_per_sd - rows.ci_low, rows.ci_high - rows.slope_per_sd],
                    fmt="o", capsize=3)
        ax.axvline(0, color="grey", linewidth=1)
        ax.set(yticks=pos, yticklabels=rows.statistic, title=name, xlabel="change per SD of statistic")
    save_figure(fig, path)


def write_sweep_report(root: Path, table: pd.DataFrame, title: str) -> Path:
    """report.md + report.html over every run of `table` (cluster.aggregate), a section per evaluation suite
    present: the classifier's eval sets (Chan et al.) and MetaICL's table for language models."""
    md = [f"# {title}", "", f"{table.run.nunique()} runs; swept: "
          f"{', '.join(k.removeprefix('cfg.') for k in swept_keys(table)) or 'nothing'}."]
    figures = []
    if (table.suite == ICL_SETS).any():
        classifier = table.run.isin(table.run[table.suite == ICL_SETS].unique())  # not the LMs' training rows
        section, more = icl_sets_section(table[classifier & table.suite.isin([ICL_SETS, "train"])], root)
        md, figures = md + section, figures + more
    if (table.suite == METAICL).any():
        section, more = metaicl_section(table[table.suite == METAICL], root)
        md, figures = md + section, figures + more
    if ((table.suite == LM_ICL) & (table.stage == "eval")).any():
        section, more = lm_icl_section(table[table.suite == LM_ICL], root)
        md, figures = md + section, figures + more
    if (table.suite == REGRESSION).any():
        md += regression_section(table)
    for caption, file in figures:
        md += ["", f"## {caption}", "", f"![{caption}]({file})"]
    write_text(root / "report.md", "\n".join(md) + "\n")
    write_text(root / "report.html", to_html(title, md, root))
    return root / "report.html"


ATTRIBUTION_TEXT = ("Slope of the final score per one standard deviation of each data-card statistic across the "
                    "sweep's (run, arm) points (least squares), with its 95% t interval; correlational, so statistics "
                    "that move together with one swept knob share a slope.")


def attribution_lines(final: pd.DataFrame, targets: tuple[str, ...], root: Path, figures: list,
                      file: str) -> list[str]:
    attr = attribution(final, targets)
    if not len(attr):
        return ["(Needs at least 3 (run, arm) points and a card statistic that varies across them.)"]
    attribution_plot(attr, root / file)
    figures.append(("Attribution", file))
    return [markdown_table(attr)]


def icl_sets_section(table: pd.DataFrame, root: Path) -> tuple[list[str], list]:
    """The classifier's runs: final accuracy per trial, phase diagram, k-shot and training curves, attribution."""
    keys = swept_keys(table)
    final = final_accuracy(table)
    md, figures = ["", "## Final accuracy (mean and worst over seeds)", "",
                   f"{len(final.groupby(['run', 'arm']))} (run, arm) points.", "",
                   markdown_table(trial_table(final, keys))], []
    if len(keys) >= 2:
        phase_diagram(final, keys[0], keys[1], root / "phase_diagram.png")
        figures.append(("ICL vs IWL phase diagram", "phase_diagram.png"))
    if "cfg.data.context_pairs" in keys:
        curves(table, keys, root / "kshot_curves.png", against="cfg.data.context_pairs")
        figures.append(("k-shot curves", "kshot_curves.png"))
    else:
        md += ["", "No k-shot curves: the context size does not vary in these runs."]
    curves(table, keys, root / "training_curves.png")
    figures.append(("Accuracy over training", "training_curves.png"))
    md += ["", "## Attribution: which data statistic moves which ICL metric", "", ATTRIBUTION_TEXT, ""]
    md += attribution_lines(final, ("icl_novel", "iwl"), root, figures, "attribution.png")
    return md, figures


def method_final(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, arm, method) of the language models' runs: accuracy (summed option log-probs) at the
    method's largest k, averaged over target tasks per seed, then mean and worst over seeds (MetaICL's protocol);
    `task` = the method, `value` = the mean, with the run's cfg./card. columns."""
    rows = accuracy_rows(table)
    rows = rows[rows.k == rows.groupby(["run", "arm", "method"]).k.transform("max")]
    per_seed = seed_accuracy(rows, ["run", "arm", "method", "k"])
    final = per_seed.groupby(["run", "arm", "method", "k"]).value.agg(value="mean", worst="min").reset_index()
    context = [c for c in rows.columns if c.startswith(("cfg.", "card."))]
    final = final.merge(rows.drop_duplicates(["run", "arm"])[["run", "arm", *context]], on=["run", "arm"])
    return final.rename(columns={"method": "task"})


def accuracy_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The language models' accuracy rows, summed option log-probabilities (the MetaICL table's main score)."""
    return table[(table.suite == METAICL) & (table.metric == "accuracy") & (table.scoring == "sum")]


def seed_accuracy(rows: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Accuracy per (`by`, seed), averaged over the target tasks (MetaICL's protocol: seeds are the unit)."""
    return rows.groupby([*by, "seed"], dropna=False).value.mean().reset_index()


def t_half_width(values: pd.Series) -> float:
    """Half-width of the 95% t interval of the mean of `values` (0 for fewer than two)."""
    n = len(values)
    return t_quantile(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n) if n > 1 else 0.0


def seed_interval(values: pd.Series) -> str:
    """"mean ± half-width of the 95% t interval over seeds" (the mean alone for one seed)."""
    if len(values) < 2:
        return f"{values.mean():.3f}"
    return f"{values.mean():.3f} ± {t_half_width(values):.3f}"


def method_k_table(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Swept keys x k x method: accuracy (summed scoring, averaged over target tasks per seed) as mean ± the 95% t
    interval over seeds, so two settings' difference can be read against the seeds' spread (issue 16)."""
    index = [*keys, "k", "method"]
    per_seed = seed_accuracy(accuracy_rows(table), index)
    cells = per_seed.groupby(index, dropna=False).value.apply(seed_interval).unstack("method")
    return cells[[m for m in METHODS if m in cells.columns]].reset_index()


def sweep_kshot_plot(table: pd.DataFrame, keys: list[str], path: Path) -> bool:
    """kshot_curves.png of a sweep: per method with demonstrations, accuracy against k (log2(k + 1) axis) with its
    95% t interval over seeds, one line per trial setting that has three or more k (Agarwal et al. 2024's many-shot
    curve, per selection or label setting). Returns whether it drew."""
    rows = accuracy_rows(table)
    rows = rows[rows.method.map(lambda m: m in METHODS and METHODS[m].demos and not METHODS[m].finetune)]
    rows = rows[rows.groupby(["run", "method"]).k.transform("nunique") >= 3]
    if not len(rows):
        return False
    varying = [k for k in keys if rows[k].astype(str).nunique() > 1] or ["run"]
    per_seed = seed_accuracy(rows, [*varying, "method", "k"])
    methods = [m for m in METHODS if m in set(per_seed.method)]
    plt = pyplot()
    fig, axes = plt.subplots(1, len(methods), figsize=(5.2 * len(methods), 3.8), sharey=True, squeeze=False)
    for ax, method in zip(axes[0], methods):
        for setting, group in per_seed[per_seed.method == method].groupby(varying, dropna=False):
            setting = setting if isinstance(setting, tuple) else (setting,)
            stats = group.groupby("k").value.agg(["mean", t_half_width]).reset_index()
            half = stats["t_half_width"]
            label = ", ".join(f"{k.removeprefix('cfg.')}={v}" for k, v in zip(varying, setting))
            ax.errorbar(np.log2(stats.k + 1), stats["mean"], yerr=half, marker=".", capsize=2, label=label)
        ticks = sorted(per_seed[per_seed.method == method].k.unique())
        ax.set_xticks([np.log2(k + 1) for k in ticks], [str(k) for k in ticks])
        ax.set(xlabel="demonstrations k", ylabel="accuracy (mean, 95% interval over seeds)", title=METHODS[method].row)
        ax.legend(fontsize=6)
    save_figure(fig, path)
    return True


def metaicl_section(table: pd.DataFrame, root: Path) -> tuple[list[str], list]:
    """The language models' runs: the MetaICL methods per trial (at the largest k, then at every k with intervals),
    and attribution of their accuracy."""
    keys = swept_keys(table)
    final = method_final(table)
    index = keys or ["run"]
    wide = final.pivot_table(index=index, columns="task", values="value", aggfunc="mean")
    worst = final.pivot_table(index=index, columns="task", values="worst", aggfunc="min").add_suffix(" worst")
    methods = [m for m in METHODS if m in wide.columns]
    out = wide[methods].join(worst[[f"{m} worst" for m in methods]]).reset_index()
    md, figures = ["", "## MetaICL methods: accuracy at the largest k (mean and worst over seeds)", "",
                   "Summed option log-probabilities; per seed the accuracy is averaged over the target tasks.", "",
                   markdown_table(out), "", "## MetaICL methods at every k (mean ± 95% t interval over seeds)", "",
                   markdown_table(method_k_table(table, keys)), "",
                   "## Attribution: which data statistic moves which method", "",
                   ATTRIBUTION_TEXT, ""], []
    if sweep_kshot_plot(table, keys, root / "kshot_curves.png"):
        figures.append(("k-shot curves of the methods with demonstrations", "kshot_curves.png"))
    md += attribution_lines(final, tuple(methods), root, figures, "attribution_methods.png")
    return md, figures


def lm_icl_final(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, arm, measurement) of the pretrained models after training (suite lm_icl): `task` = the
    measurement (LM_ICL_COLUMNS' label), with the run's cfg./card. columns."""
    rows = table[(table.suite == LM_ICL) & (table.stage == "eval") & (table.method == "pretrained")]
    labels = [LM_ICL_COLUMNS.get((t, m)) for t, m in zip(rows.task, rows.metric)]
    return rows.assign(task=labels).dropna(subset=["task"])


def absent_marked(column: pd.Series) -> pd.Series:
    """A config column with an absent value (a source some trials lack) as "—", so that grouping and comparing
    keep those trials (groupby drops NaN keys; astype(str) keeps NaN, which mode() and == then skip)."""
    return column.astype(object).where(column.notna(), "—")


def as_text(column: pd.Series) -> pd.Series:
    """A config column as comparable text, an absent value as "—"."""
    return absent_marked(column).astype(str)


def knob_points(final: pd.DataFrame, keys: list[str], key: str) -> pd.DataFrame:
    """The rows in which every swept key but `key` is at its most common value (the baseline of a sweep that
    varies one property at a time) and `key` is set."""
    base = final[final[key].notna()]
    for other in (k for k in keys if k != key):
        base = base[as_text(base[other]) == as_text(final[other]).mode()[0]]
    return base


def knob_plot(final: pd.DataFrame, keys: list[str], labels: list[str], path: Path) -> bool:
    """Each measurement against each numeric swept key that takes two or more values with the others at their
    baseline, mean over seeds with each seed's point; False when no key does (nothing drawn)."""
    numeric = [k for k in keys if pd.api.types.is_numeric_dtype(final[k])
               and knob_points(final, keys, k)[k].nunique() >= 2]
    if not numeric:
        return False
    plt = pyplot()
    fig, axes = plt.subplots(len(labels), len(numeric), figsize=(3.2 * len(numeric), 2.4 * len(labels)),
                             squeeze=False)
    for col, key in enumerate(numeric):
        base = knob_points(final, keys, key)
        for row, label in enumerate(labels):
            points = base[base.task == label]
            ax = axes[row][col]
            ax.plot(points[key], points.value, ".", alpha=0.4, color="grey")
            mean = points.groupby(key).value.mean()
            ax.plot(mean.index, mean.values, "o-")
            ax.set(xlabel=key.removeprefix("cfg.") if row == len(labels) - 1 else "", ylabel=label if col == 0 else "")
    save_figure(fig, path)
    return True


def lm_icl_section(table: pd.DataFrame, root: Path) -> tuple[list[str], list]:
    """The language models' own in-context ability after pretraining, per trial (mean and SD over seeds), each
    measurement against each swept knob, and its attribution to the mixture-card statistics."""
    keys = swept_keys(table)
    final = lm_icl_final(table)
    labels = [c for c in LM_ICL_COLUMNS.values() if c in set(final.task)]
    index = keys or ["run"]
    absent = final.assign(**{k: absent_marked(final[k]) for k in keys})
    wide = absent.pivot_table(index=list(dict.fromkeys([*index, "run"])), columns="task", values="value").reset_index()
    grouped = wide.groupby(index, dropna=False)[labels]
    out = grouped.mean().join(grouped.std().add_suffix(" sd"))
    out["seeds"] = grouped.size()
    md, figures = ["", "## In-context ability of the pretrained models (lm_icl; mean and SD over seeds)", "",
                   "Measured after pretraining (metaicl/eval/lm_icl.py): ICL score (late minus early loss; negative "
                   "= context helps), its order control (tokens shuffled within each window), the repeated-sequence gap (first minus second copy's loss), "
                   "copy accuracy, the gap across a document boundary and at a lag, and the best induction and "
                   "previous-token head scores.", "", markdown_table(out.reset_index())], []
    if knob_plot(final, keys, labels, root / "lm_icl_knobs.png"):
        figures.append(("In-context ability against each swept knob", "lm_icl_knobs.png"))
    md += ["", "## Attribution: which mixture statistic moves which in-context measurement", "", ATTRIBUTION_TEXT, ""]
    md += attribution_lines(final, tuple(labels), root, figures, "attribution_lm_icl.png")
    return md, figures


def to_html(title: str, md_lines: list[str], root: Path) -> str:
    """A standalone page: markdown tables become HTML tables, images are embedded as base64."""
    body, table = [], []

    def flush():
        if table:
            cells = [[c.strip() for c in row.strip("|").split("|")] for row in table if not set(row) <= set("|-:")]
            head, *rows = cells
            body.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                        + "</table>")
            table.clear()

    for line in "\n".join(md_lines).splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("!["):
            caption, file = line[2:].split("](")
            data = base64.b64encode((root / file.rstrip(")")).read_bytes()).decode()
            body.append(f'<img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">')
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    flush()
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;"
             "font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def regression_section(table: pd.DataFrame) -> list[str]:
    """Models of function-class prompts (suite regression): per trial, the model's error at half the largest k and
    at the largest, on every prompt distribution (mean over seeds), with least squares' on the same prompts."""
    keys = swept_keys(table)
    rows = table[(table.suite == REGRESSION) & (table.metric == "squared_error")]
    top = int(rows.k.max())
    rows = rows[rows.k.isin([top // 2, top])].assign(column=lambda r: r.task + " k=" + r.k.astype(str))
    model = rows[rows.method == "model"]
    index = keys or ["run"]
    absent = model.assign(**{k: absent_marked(model[k]) for k in keys})
    wide = absent.pivot_table(index=list(dict.fromkeys([*index, "run"])), columns="column",
                              values="value").reset_index()
    columns = sorted(set(model.column))
    grouped = wide.groupby(index, dropna=False)[columns]
    out = grouped.mean()
    out["seeds"] = grouped.size()
    reference = rows[rows.method == "least_squares"].groupby("column").value.mean()
    return ["", "## Regression in context (suite regression; the model's squared error / d, mean over seeds)", "",
            "Least squares on the same prompts: " + ", ".join(f"{c} {v:.3f}" for c, v in reference.items()) + ".",
            "", markdown_table(out.reset_index())]
