"""`metaicl sweep / aggregate / report`: bad trials are refused up front; the report's statistics. README's sweep,
its rerun (every trial skipped), aggregate and report run in tests/test_readme_commands.py; a submitted sweep with
TensorBoard tracking in tests/test_jobs.py."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cluster.sweep_report import (attribution, final_accuracy, knob_points, lm_icl_section, swept_keys,
                                  trial_table)
from metaicl.core.config import load_config
from metaicl.experiment import ExperimentConfig, SweepConfig
from tests.conftest import ROOT

EXE = str(Path(sys.executable).with_name("metaicl"))
TINY_SWEEP = ROOT / "configs" / "sweeps" / "tiny.yaml"


def metaicl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_grid_points_and_seeds_expand_in_a_fixed_order():
    sweep = SweepConfig(grid={"data.burstiness": [0, 4], "model.d_model": [16]}, points=[{"train.lr": 0.1}],
                        seeds=[0, 1])
    trials = sweep.trials()
    assert len(trials) == 6
    assert trials[0] == {"data.burstiness": 0, "model.d_model": 16, "data.seed": 0, "train.seed": 0}
    assert trials[-1] == {"train.lr": 0.1, "data.seed": 1, "train.seed": 1}


def test_a_bad_grid_value_is_one_error_naming_the_trial(tmp_path):
    proc = metaicl("sweep", str(TINY_SWEEP), "sweep.grid={data.burstiness: [3]}", f"out_dir={tmp_path}/s",
                   cwd=tmp_path)
    assert proc.returncode == 2
    assert "data.burstiness: B=3 does not divide" in proc.stderr and "sweep trial 0" in proc.stderr
    assert not (tmp_path / "s").exists()


def test_sweep_needs_a_sweep_block(tmp_path):
    proc = metaicl("sweep", str(ROOT / "configs" / "tiny.yaml"), cwd=tmp_path)
    assert proc.returncode == 2 and "config error: sweep: " in proc.stderr and "has no sweep: block" in proc.stderr


def synthetic_final(n: int = 40) -> pd.DataFrame:
    """(run, arm) points whose icl_novel accuracy rises 0.1 per SD of `card.driver` and ignores `card.noise`."""
    rng = np.random.default_rng(0)
    driver, noise = rng.normal(size=n), rng.normal(size=n)
    acc = 0.5 + 0.1 * (driver - driver.mean()) / driver.std() + rng.normal(scale=0.02, size=n)
    return pd.DataFrame({"run": [f"r{i}" for i in range(n)], "arm": "main", "step": 10, "suite": "icl_sets", "task": "icl_novel",
                         "metric": "accuracy", "value": acc, "card.driver": driver, "card.noise": noise})


def test_attribution_finds_the_statistic_that_drives_accuracy_and_not_the_other():
    attr = attribution(final_accuracy(synthetic_final())).set_index("statistic")
    assert attr.loc["driver", "ci_low"] < 0.1 < attr.loc["driver", "ci_high"]
    assert attr.loc["driver", "ci_low"] > 0.05 and attr.loc["driver", "r2"] > 0.9
    assert attr.loc["noise", "ci_low"] < 0 < attr.loc["noise", "ci_high"]


def test_attribution_skips_a_statistic_constant_up_to_rounding_and_a_constant_score_has_no_r2():
    final = final_accuracy(synthetic_final()).assign(**{"card.constant": 7.0 + 1e-15 * np.arange(40)})
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's poorly-conditioned fit / divide-by-zero warnings reached users
        assert "constant" not in set(attribution(final).statistic)
        flat = attribution(final.assign(value=0.5)).set_index("statistic")
    assert flat.loc["driver", "slope_per_sd"] == 0 and np.isnan(flat.loc["driver", "r2"])


def test_lm_icl_table_keeps_the_trials_whose_mixture_lacks_a_swept_source(tmp_path):
    """A one-at-a-time mixture sweep adds a source in some trials only: its keys are null in the others, which must
    still be rows of the table (they were dropped: the table showed only the trials with the source)."""
    rows = []
    for run, (long_range, weight) in enumerate([(0.0, None), (0.5, None), (0.5, 0.25), (0.5, 0.5)]):
        for seed in (0, 1):
            rows.append({"run": f"r{run}-{seed}", "arm": "main", "suite": "lm_icl", "stage": "eval",
                         "method": "pretrained", "task": "repeat", "metric": "gap", "value": long_range + seed / 10,
                         "cfg.pretrain.sources.zipf.zipf_lm.long_range": long_range,
                         "cfg.pretrain.sources.fewshot.weight": weight, "cfg.pretrain.seed": seed})
    md, _ = lm_icl_section(pd.DataFrame(rows), tmp_path)
    table = [line for line in "\n".join(md).splitlines() if line.startswith("| ")][1:]
    assert len(table) == 4 and sum("| — |" in line for line in table) == 2
    # the knob plot's baseline of long_range: the trials without the few-shot source (it was the ones with it)
    frame, keys = pd.DataFrame(rows), ["cfg.pretrain.sources.zipf.zipf_lm.long_range", "cfg.pretrain.sources.fewshot.weight"]
    points = knob_points(frame, keys, keys[0])
    assert sorted(points.run) == ["r0-0", "r0-1", "r1-0", "r1-1"]
    assert sorted(knob_points(frame, keys, keys[1]).run) == ["r2-0", "r2-1", "r3-0", "r3-1"]
    assert (tmp_path / "lm_icl_knobs.png").exists()


def test_swept_keys_leave_out_seeds_and_constants():
    frame = pd.DataFrame({"cfg.data.burstiness": [0, 4], "cfg.data.seed": [0, 1], "cfg.model.d_model": [64, 64]})
    assert swept_keys(frame) == ["cfg.data.burstiness"]


@pytest.mark.parametrize("path", [*sorted((ROOT / "configs" / "sweeps").glob("*.yaml")),
                                  ROOT / "configs" / "demonstrations.yaml"], ids=lambda p: p.stem)
def test_shipped_sweeps_load_and_every_trial_validates(path):
    cfg, _ = load_config(ExperimentConfig, path)
    for point in cfg.sweep.trials():
        overrides = [f"{k}={v}" for k, v in point.items()]
        trial, _ = load_config(ExperimentConfig, path, overrides)
        assert trial.arm_names()


def test_t_quantiles_match_the_table():
    from cluster.sweep_report import t_quantile

    for df, expected in ((1, 12.706), (2, 4.303), (7, 2.365), (30, 2.042), (1000, 1.962)):
        assert abs(t_quantile(0.975, df) - expected) < 2e-3


def test_a_sweep_of_one_trial_reports_a_row_per_arm():
    final = final_accuracy(synthetic_final(4).assign(arm=["a", "b", "a", "b"], run=["r0", "r0", "r1", "r1"]))
    table = trial_table(final, swept_keys(final))
    assert list(table.arm) == ["a", "b"] and list(table.seeds) == [2, 2]


def test_method_table_gives_each_setting_and_k_its_mean_and_95_interval_over_seeds():
    import pandas as pd

    from cluster.results import METAICL
    from cluster.sweep_report import method_k_table

    rows = []  # per seed, two target tasks whose mean is the seed's accuracy: 0.4, 0.5, 0.6 under bm25
    for selection, base in (("random", 0.3), ("bm25", 0.5)):
        for seed, shift in zip((13, 21, 42), (-0.1, 0.0, 0.1)):
            for task, offset in (("t0", -0.05), ("t1", 0.05)):
                rows.append({"suite": METAICL, "metric": "accuracy", "scoring": "sum", "method": "metaicl", "k": 4,
                             "seed": seed, "task": task, "value": base + shift + offset,
                             "cfg.eval.demos.selection": selection})
    table = method_k_table(pd.DataFrame(rows), ["cfg.eval.demos.selection"]).set_index("cfg.eval.demos.selection")
    half = 4.303 * 0.1 / 3 ** 0.5  # t(0.975, 2) x sd / sqrt(3)
    assert table.loc["bm25", "metaicl"] == f"0.500 ± {half:.3f}"
    assert table.loc["random", "metaicl"].startswith("0.300 ± ")
    assert list(table.k) == [4, 4]


def test_sweep_kshot_plot_draws_a_curve_per_setting_once_a_method_has_three_k(tmp_path):
    import pandas as pd

    from cluster.results import METAICL
    from cluster.sweep_report import sweep_kshot_plot

    def rows(ks):
        return pd.DataFrame([{"suite": METAICL, "metric": "accuracy", "scoring": "sum", "method": "metaicl",
                              "run": f"r-{sel}", "k": k, "seed": seed, "value": 0.5, "cfg.eval.demos.selection": sel}
                             for sel in ("random", "bm25") for k in ks for seed in (13, 21)])

    keys = ["cfg.eval.demos.selection"]
    assert not sweep_kshot_plot(rows([1, 4]), keys, tmp_path / "two.png") and not (tmp_path / "two.png").exists()
    finetune = rows([1, 4, 8]).assign(method="finetune")  # fine-tuning has no demonstrations: no curve
    assert not sweep_kshot_plot(finetune, keys, tmp_path / "ft.png")
    assert sweep_kshot_plot(rows([1, 4, 8]), keys, tmp_path / "three.png") and (tmp_path / "three.png").stat().st_size
