"""Results table, curves and report.md of a run, from its tidy results.parquet alone.

    write_report(run_dir)     # -> report.md, icl_curves.png; returns the printed table
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from metaicl.core.io import atomic_path, write_text
from metaicl.eval.config import chance_level
from cluster.results import ICL_SETS, eval_sets

def set_accuracy(results: pd.DataFrame) -> pd.DataFrame:
    """Accuracy rows on the classifier's eval sets (suite icl_sets)."""
    return results[(results.suite == ICL_SETS) & (results.metric == "accuracy")]


def last_accuracy(results: pd.DataFrame, by: tuple[str, ...] = ("arm",)) -> pd.DataFrame:
    """Accuracy rows of the eval sets at the last step of each `by` group (an arm; (run, arm) in a sweep)."""
    acc = set_accuracy(results)
    return acc[acc.step == acc.groupby(list(by)).step.transform("max")]


def final_table(results: pd.DataFrame, num_labels: int) -> pd.DataFrame:
    """arm x eval set accuracy at each arm's last step, with a `chance` row."""
    last = last_accuracy(results)
    table = last.pivot_table(index="arm", columns="task", values="value", aggfunc="mean", sort=False)
    table = table[eval_sets(last)]
    table.loc["chance"] = [chance_level(e, num_labels) for e in table.columns]
    return table


def markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    """A DataFrame (its index dropped) as a markdown table; floats rounded to `digits`."""
    def cell(v) -> str:
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(frame[c]) else "---" for c in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def format_table(table: pd.DataFrame) -> str:
    return markdown_table(table.rename_axis("arm").reset_index())


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    pyplot().close(fig)


def plot_curves(results: pd.DataFrame, num_labels: int, path: Path) -> None:
    plt = pyplot()
    acc = set_accuracy(results)
    sets = eval_sets(acc)
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.4), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], sets):
        for arm, rows in acc[acc["task"] == name].groupby("arm", sort=False):
            mean = rows.groupby("step").value.mean()
            ax.plot(mean.index, mean.values, marker=".", label=arm)
        ax.axhline(chance_level(name, num_labels), color="grey", linestyle="--", linewidth=1, label="chance")
        ax.set(title=name, xlabel="step", ylim=(-0.02, 1.02))
    axes[0][0].set_ylabel("accuracy")
    axes[0][-1].legend(loc="best", fontsize=8)
    save_figure(fig, path)


def summary(run_dir: Path, num_labels: int) -> str:
    """The final-accuracy table of a finished run, as markdown."""
    return format_table(final_table(pd.read_parquet(run_dir / "results.parquet"), num_labels))


DATA_COLUMNS = {"class_zipf_alpha_mle": "class α (MLE)", "context_repeat_rate": "context repeat rate",
                "context_repeat_rate_iid": "… if iid", "burstiness_ratio": "burstiness ratio",
                "query_in_context": "query class in context", "bursty_fraction": "bursty fraction"}


def data_section(cards: dict[str, dict]) -> str:
    """Markdown table of each arm's data statistics card (pretrain_data.stats): what the data really was."""
    header = "| arm | " + " | ".join(DATA_COLUMNS.values()) + " |"
    rule = "|---|" + "---:|" * len(DATA_COLUMNS)
    rows = [f"| {arm} | " + " | ".join(str(card.get(k, "")) for k in DATA_COLUMNS) + " |" for arm, card in cards.items()]
    return "\n".join(["## Training data, measured", "", "Statistics card of each arm's training split "
                      "(`metaicl data stats DIR`): the repeat rate is the share of context items whose class already "
                      "occurred in the same context; burstiness ratio = repeat rate / its value for iid draws.", "",
                      header, rule, *rows])


def write_report(run_dir: Path, title: str, num_labels: int, notes: str = "") -> str:
    results = pd.read_parquet(run_dir / "results.parquet")
    table = format_table(final_table(results, num_labels))
    plot_curves(results, num_labels, run_dir / "icl_curves.png")
    write_text(run_dir / "report.md", "\n".join([
        f"# {title}", "",
        "Accuracy (argmax over all labels) at the last step. Chance: 0.5 for icl_novel and icl_swap (guessing "
        "between the two labels in the context), 1/L for iwl.", "",
        table, "", "![accuracy vs step](icl_curves.png)", "", notes, ""]))
    return table


MIXTURE_COLUMNS = {"share": "share", "zipf_alpha_mle": "token α (MLE)", "rare_token_density": "rare-token density",
                   "doc_burstiness": "doc burstiness", "long_range_info_gain_bits": "long-range gain (bits)",
                   "adjacent_doc_similarity": "adjacent-doc sim.", "random_order_similarity": "… random order",
                   "distinct_groups": "groups", "group_entropy_bits": "group entropy (bits)"}
PROMPT_COLUMNS = {"prompts": "prompts", "y_mean": "y mean", "y_var": "y variance", "x_second_moment": "E[x²]"}
"""Function-class sources (real-valued prompts, Garg et al. 2022) have moments instead of token statistics."""


def mixture_section(cards: dict[str, dict]) -> str:
    """Markdown tables of token-mixture cards (pretrain_data.mixture_stats), one row per (arm, source): token
    statistics for token sources, moments for function-class prompts; the rank-frequency plot when there is one."""
    sources = [(arm, name, s) for arm, card in cards.items() for name, s in card["sources"].items()]
    parts = ["## Pretraining mixture, measured", ""]
    tokens = [(arm, name, s) for arm, name, s in sources if "rank_frequency" in s]
    if tokens:
        parts += ["Statistics card of each arm's mixture (`metaicl data stats DIR`): α fitted by maximum "
                  "likelihood; rare-token density = share of tokens outside the most frequent "
                  "`stats.rare_rank_cutoff` types; burstiness = within-document repetition / its iid value; "
                  "long-range gain = bits/token a cache of the document saves a bigram model; similarity = "
                  "cosine of consecutive documents' TF-IDF vectors, in stream order and shuffled.", "",
                  _source_table(tokens, MIXTURE_COLUMNS), "", "![rank-frequency](rank_frequency.png)", ""]
    prompts = [(arm, name, s) for arm, name, s in sources if "rank_frequency" not in s]
    if prompts:
        parts += ["Function-class prompts (x ~ N(0, I_d)): var(y) is d for linear functions and the sparsity for "
                  "sparse linear ones.", "", _source_table(prompts, PROMPT_COLUMNS), ""]
    return "\n".join(parts)


def _source_table(rows: list[tuple[str, str, dict]], columns: dict[str, str]) -> str:
    frame = pd.DataFrame([{"arm": arm, "source": name, **{label: s.get(key) for key, label in columns.items()}}
                          for arm, name, s in rows])
    return markdown_table(frame.astype(object).where(frame.notna(), ""))


def plot_rank_frequency(cards: dict[str, dict], path: Path) -> None:
    """Log-log rank-frequency curve of every (arm, source) of tokens: the Zipf law each mixture really has."""
    fig, ax = pyplot().subplots(figsize=(5.2, 3.8))
    for arm, card in cards.items():
        for name, s in card["sources"].items():
            if "rank_frequency" not in s:  # function-class prompts are real-valued: no tokens to rank
                continue
            ranks, counts = zip(*s["rank_frequency"])
            total = s["content_tokens"]
            ax.loglog(ranks, [c / total for c in counts], marker=".",
                      label=f"{arm}/{name} (α={s['zipf_alpha_mle']})")
    ax.set(xlabel="frequency rank", ylabel="token share")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def write_data_report(out: Path, title: str, cards: dict[str, dict]) -> Path:
    """report.md (+ rank_frequency.png for token sources) comparing the mixtures of a config's arms."""
    if any("rank_frequency" in s for card in cards.values() for s in card["sources"].values()):
        plot_rank_frequency(cards, out / "rank_frequency.png")
    write_text(out / "report.md", f"# {title}\n\n{mixture_section(cards)}")
    return out / "report.md"
