"""Relative paths are resolved once, against the directory `metaicl` runs from, before anything is scheduled: a
Ray worker or a Ray Tune trial (which runs in a working directory of its own) never reads a path relative to its
own working directory."""
from __future__ import annotations

import os

import pytest

from cluster.sweep import plan
from metaicl.core.config import load_config
from metaicl.core.errors import ConfigError
from metaicl.experiment import ExperimentConfig, run_hash
from tests.conftest import ROOT, TINY

REAL = ROOT / "configs" / "metaicl_real_tasks.yaml"
ORDERING = ROOT / "configs" / "data" / "ordering.yaml"


def test_output_roots_become_absolute_against_the_base_and_keep_the_run_hash(tmp_path):
    plain, _ = load_config(ExperimentConfig, TINY)
    cfg, resolved = load_config(ExperimentConfig, TINY, ["out_dir=runs/x"], base=tmp_path)
    assert (cfg.runs_root, cfg.data_root, cfg.out_dir) == (str(tmp_path / "runs"), str(tmp_path / "runs" / "data"),
                                                          str(tmp_path / "runs" / "x"))
    assert resolved.data_root == cfg.data_root  # the saved config.yaml shows where things went
    assert run_hash(cfg) == run_hash(plain)  # where things go is not what is computed


def test_absolute_paths_and_hub_names_stay_as_given(tmp_path):
    cfg, _ = load_config(ExperimentConfig, REAL, [f"data_root={tmp_path}/d", "lm.name_or_path=openai-community/gpt2"],
                         base=tmp_path)
    assert cfg.data_root == f"{tmp_path}/d" and cfg.lm.name_or_path == "openai-community/gpt2"


def test_inputs_resolve_only_where_they_exist_and_in_every_arm(tmp_path):
    (tmp_path / "model").mkdir()
    cfg, _ = load_config(ExperimentConfig, REAL, ["lm.name_or_path=model", "tasks.path=data/icl"], base=tmp_path)
    assert cfg.lm.name_or_path == str(tmp_path / "model") and cfg.tasks.path == str(tmp_path / "data" / "icl")
    cfg, _ = load_config(ExperimentConfig, ORDERING, base=ROOT)
    for arm in cfg.arm_names():
        text = cfg.arm(arm).pretrain.sources["wiki"].text
        assert os.path.isabs(text.path) and os.path.exists(text.path), (arm, text.path)


def test_sweep_trials_carry_absolute_roots(tmp_path):
    _, root, trials = plan(ROOT / "configs" / "sweeps" / "tiny.yaml", [], cwd=tmp_path)
    assert root == tmp_path / "runs" / "tiny_sweep-sweep"
    assert all(t["cfg"].data_root == str(tmp_path / "runs" / "data") for t in trials)
    assert all(str(t["run_dir"]).startswith(str(root)) for t in trials)


def test_a_trial_whose_data_is_missing_says_so_and_writes_nothing(tmp_path):
    from cluster.pipeline import run

    cfg, resolved = load_config(ExperimentConfig, TINY, base=tmp_path)
    with pytest.raises(ConfigError, match="data_root: no data at .*a sweep builds every trial's data"):
        run(cfg, "", echo=lambda _: None, progress=False, build_data=False)
    assert not (tmp_path / "runs").exists()
