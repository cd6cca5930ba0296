"""The one tidy results schema of every run, whatever its kind: a row per measured number.

    tidy(frame, run="tiny-1c090ed7", arm="bursty", stage="train")     # fills the other columns with nulls

| column | meaning |
|---|---|
| run | the run directory's name |
| arm | the arm (`main` when the config has none) |
| stage | what produced the row: `train` (the classifier), `pretrain`, `metatrain/<variant>`, `eval` |
| step | training step of the measurement (null for evaluation after training) |
| suite | `icl_sets` (Chan et al.'s eval sets), `train` (training loss), `heldout` (a language model's held-out loss), `metaicl` (MetaICL's table), `lm_icl` (a language model's own in-context ability: metaicl/eval/lm_icl.py), `regression` (a model of function-class prompts: metaicl/eval/regression.py) |
| task | the eval set (icl_novel, icl_swap, iwl), `train`/`heldout`, the target task, or lm_icl's measurement (mixture, shuffled, repeat, repeat_boundary, repeat_lag, heads); regression: `<source>/<prompt distribution>` (standard, skewed, noisy, scaled, orthant) |
| method | MetaICL's row (metaicl, in_context, ...); for lm_icl after training, the model measured (pretrained, metaicl, ...); regression: `model` or the estimator (least_squares, ridge, lasso, greedy_tree, two_layer_nn, averaging, knn, gd_<steps>); null elsewhere |
| k | demonstrations (0 for 0-shot rows; regression: in-context examples before the query); null where the context size is not a knob of the row |
| seed | the demonstration seed (MetaICL), else the training seed |
| scoring | `sum` or `mean` of the option's log-probs (MetaICL); null elsewhere |
| metric | accuracy, loss, macro_f1 (metaicl also label_mass, context_label_share, oracle_accuracy and leakage/<meta-training family> (synthetic held-out tasks: the share of queries that family's rule answers) with a null method, order_spread and order_sd per scoring with eval.demos.permutations > 1 (accuracy's best minus worst order of the same demonstrations, and SD), trained_params of the Fine-tune methods (parameters that trained: all, or an adapter's with finetune.method), and with eval.icl_vs_finetune simaou, simaou_random, simam_ft, simam_zsl of method finetune); lm_icl: icl_score, first_copy_loss, second_copy_loss, gap, copy_accuracy, induction_score, previous_token_score (and the head: *_head), and per k on GINC prompts (task kshot/<source>) accuracy, accuracy_calibrated, bayes_accuracy, label_mass, context_label_share (their *_slope at null k); regression: squared_error (/ d), and against the model model_difference, update_cosine, step_size |
| value | the number |

A later suite adds its rows (and, if it must, columns) here: there is never a second schema.
"""
from __future__ import annotations

import pandas as pd

RESULT_COLUMNS = ["run", "arm", "stage", "step", "suite", "task", "method", "k", "seed", "scoring", "metric", "value"]
INTS = ("step", "k", "seed")
TEXT = ("run", "arm", "stage", "suite", "task", "method", "scoring", "metric")
ICL_SETS = "icl_sets"
METAICL = "metaicl"
LM_ICL = "lm_icl"
REGRESSION = "regression"


def eval_sets(rows: pd.DataFrame) -> list[str]:
    """The classifier's eval sets that `rows` hold (suite icl_sets), in one stable order: read from the results,
    so reports need not know which sets the data generator makes (icl_novel, icl_swap, iwl sort as it lists them)."""
    return sorted(rows.loc[rows.suite == ICL_SETS, "task"].unique())


def tidy(frame: pd.DataFrame, **constants) -> pd.DataFrame:
    """`frame` in the schema: `constants` fill whole columns, missing columns are null, columns in order and
    with one dtype each (nullable integers, strings, float values), so runs concatenate."""
    out = frame.copy()
    for key, value in constants.items():
        out[key] = value
    for column in RESULT_COLUMNS:
        if column not in out.columns:
            out[column] = None
    out = out[RESULT_COLUMNS]
    for column in INTS:
        out[column] = pd.array(out[column], dtype="Int64")
    for column in TEXT:  # plain str / None: a filter such as `results.scoring == "sum"` is simply False on nulls
        out[column] = out[column].astype(object).where(out[column].notna(), None)
    out["value"] = out["value"].astype(float)
    return out.reset_index(drop=True)


def training_rows(metrics: pd.DataFrame, run: str, arm: str, stage: str, seed: int) -> pd.DataFrame:
    """A training stage's metrics.parquet (step, eval, metric, value) as result rows: the training loss is suite
    `train`, the classifier's eval sets `icl_sets`, a language model's held-out loss `heldout`."""
    suites = metrics["eval"].map(lambda e: "train" if e == "train" else "heldout" if e == "heldout" else
                                 LM_ICL if e.startswith(f"{LM_ICL}/") else ICL_SETS)
    tasks = metrics["eval"].str.removeprefix(f"{LM_ICL}/")
    frame = metrics.drop(columns="eval").assign(task=tasks, suite=suites)
    return tidy(frame, run=run, arm=arm, stage=stage, seed=seed)
