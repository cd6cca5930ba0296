"""`metaicl aggregate RUNS_DIR...`: every run under the given directories as one tidy table.

    table = aggregate(["runs/burstiness_zipf-sweep"])       # pandas DataFrame; also written as parquet by the CLI

One row per result row of every run, of either kind (the schema of cluster/results.py: run, arm, stage, step,
suite, task, method, k, seed, scoring, metric, value), joined with that arm's resolved config flattened into
`cfg.<dotted key>` columns and its data statistics card (few-shot data or token mixture) into `card.<key>`
columns, so sweeps of any kind are one parquet file any dataframe tool (pandas, polars, duckdb) can query:

    SELECT "cfg.data.burstiness", avg(value) FROM 'aggregate.parquet'
    WHERE task = 'icl_novel' AND metric = 'accuracy' GROUP BY 1
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import pandas as pd

from metaicl.core.config import load_config, to_dict
from metaicl.core.errors import ConfigError
from metaicl.core.io import read_json
from metaicl.experiment import ExperimentConfig
from pretrain_data.build import target_dir

NOT_COMPARED = ("arms", "sweep", "cluster", "out_dir", "runs_root", "data_root")
"""Config keys left out of the table: where a run lived and how it was scheduled, not what it computed."""
CURVES = ("rank_frequency",)
"""Card entries that are curves, not statistics (for plots, not columns)."""


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories (config.yaml + results.parquet) at or below `paths`, sorted."""
    runs = set()
    for path in map(Path, paths):
        if not path.is_dir():
            raise ConfigError("RUNS_DIR", f"{path} is not a directory")
        for results in [path / "results.parquet", *path.rglob("*/results.parquet")]:
            if results.exists() and (results.parent / "config.yaml").exists():
                runs.add(results.parent)
    return sorted(runs)


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if key in CURVES:
            continue
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:  # lists become JSON text so that every column has one type across runs
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, (list, dict)) else value
    return out


def arm_card(run: Path, arm_name: str, arm: ExperimentConfig) -> dict:
    """The statistics card the arm trained on: the run's copy (cards/<arm>.json), else its data directory's (the
    token mixture a language model pretrained on, or the classifier's few-shot data)."""
    for path in [run / "cards" / f"{arm_name}.json", data_card(arm)]:
        if path is not None and path.exists():
            return read_json(path)
    return {}


def data_card(arm: ExperimentConfig) -> Path | None:
    """Where the statistics card of the data `arm` trains on is written: its data directory's stats.json."""
    return target_dir(arm.data_spec, arm.data_root) / "stats.json" if arm.data_spec is not None else None


def run_table(run: Path) -> pd.DataFrame:
    cfg, _ = load_config(ExperimentConfig, run / "config.yaml")
    results = pd.read_parquet(run / "results.parquet")
    arms = []
    for name in cfg.arm_names():
        arm = cfg.arm(name)
        tree = {k: v for k, v in to_dict(arm).items() if k not in NOT_COMPARED}
        arms.append({"arm": name, **{f"cfg.{k}": v for k, v in flatten(tree).items()},
                     **{f"card.{k}": v for k, v in flatten(arm_card(run, name, arm)).items()}})
    table = results.merge(pd.DataFrame(arms), on="arm", how="left")
    table["run"] = run.name  # the directory is the run's identity, wherever it was written
    return table


def aggregate(paths: Iterable[str | Path]) -> pd.DataFrame:
    runs = find_runs(paths)
    if not runs:
        raise ConfigError("RUNS_DIR", f"no finished runs (config.yaml + results.parquet) under {list(map(str, paths))}")
    return pd.concat([run_table(r) for r in runs], ignore_index=True)
