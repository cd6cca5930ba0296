"""A tiny experiment through the real pipeline on local Ray: data -> Ray Train arms -> results + report."""
from __future__ import annotations

import pandas as pd
import pytest

from cluster.pipeline import run
from metaicl.core.config import load_config, to_yaml
from metaicl.experiment import ExperimentConfig
from tests.conftest import TINY


@pytest.fixture(scope="module")
def tiny_run(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    cfg, resolved = load_config(ExperimentConfig, TINY, [f"runs_root={root}/runs", f"data_root={root}/data"])
    lines = []
    out = run(cfg, to_yaml(resolved), echo=lines.append, progress=False)
    return cfg, resolved, out, lines


def test_results_parquet_has_the_tidy_schema(tiny_run):
    cfg, _, out, _ = tiny_run
    results = pd.read_parquet(out / "results.parquet")
    assert list(results.columns) == ["arm", "step", "eval", "metric", "value", "seed"]
    assert set(results.arm) == {"bursty", "non_bursty"}
    assert set(results["eval"]) == {"icl_novel", "icl_swap", "iwl", "train"}
    assert sorted(results.step.unique()) == [0, 6, 12]
    assert (results.seed == cfg.train.seed).all()
    assert results.value.notna().all()


def test_run_directory_holds_config_manifests_checkpoints_and_report(tiny_run):
    cfg, resolved, out, lines = tiny_run
    assert out.name.startswith("tiny-") and len(out.name) == len("tiny-") + 8
    assert (out / "config.yaml").read_text() == to_yaml(resolved)
    for arm in ("bursty", "non_bursty"):
        assert (out / "arms" / arm / "data_manifest.json").exists()
        assert any((out / "arms" / arm / "checkpoints").iterdir())
    report = (out / "report.md").read_text()
    assert "| bursty |" in report and "| chance |" in report and "icl_curves.png" in report
    assert "## Training data, measured" in report and report.count("| 1.0 |") >= 1  # bursty arm: bursty fraction 1
    assert (out / "icl_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any("| non_bursty |" in line for line in lines)


def test_second_run_skips_every_stage(tiny_run):
    cfg, resolved, out, _ = tiny_run
    before = (out / "results.parquet").stat().st_mtime_ns
    lines = []
    assert run(cfg, to_yaml(resolved), echo=lines.append, progress=False) == out
    assert "every stage is done" in lines[0]
    assert (out / "results.parquet").stat().st_mtime_ns == before


def test_finished_arms_are_skipped_when_results_are_missing(tiny_run):
    cfg, resolved, out, _ = tiny_run
    (out / "results.parquet").unlink()
    lines = []
    run(cfg, to_yaml(resolved), echo=lines.append, progress=False)
    assert any("data [bursty]: reusing" in line for line in lines)
    assert any("train [bursty]: done already, skipping" in line for line in lines)
    assert not any(line.startswith("train:") for line in lines)  # no trainer was started
    assert (out / "results.parquet").exists()


def test_two_ddp_workers_train_the_same_model_as_one(tiny_run, tmp_path):
    """Each rank takes a strided half of the same global batch and DDP averages the gradients, so two workers
    follow one worker's trajectory up to float rounding."""
    import dataclasses

    import torch
    from safetensors.torch import load_file

    from cluster.pipeline import arm_specs
    from metaicl.train.arm import run_arm
    from metaicl.train.ray_train import fit_arm

    cfg, _, out, _ = tiny_run
    base = arm_specs({"bursty": cfg.arm("bursty")}, out)["bursty"]
    one = dataclasses.replace(base, out_dir=str(tmp_path / "one"))
    two = dataclasses.replace(base, out_dir=str(tmp_path / "two"), train=dataclasses.replace(base.train, num_workers=2))
    run_arm(one)
    fit_arm(two, tmp_path / "ray")
    a, b = (load_file(tmp_path / d / "model" / "model.safetensors") for d in ("one", "two"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=2e-5, rtol=1e-4)
    assert pd.read_parquet(tmp_path / "two" / "metrics.parquet").step.max() == cfg.train.steps


def test_gpus_the_cluster_lacks_stop_the_run_before_anything_is_written(ray_session, tmp_path):
    from metaicl.core.errors import ConfigError

    cfg, resolved = load_config(ExperimentConfig, TINY, [f"runs_root={tmp_path}/runs", f"data_root={tmp_path}/data",
                                                         "train.use_gpu=true"])
    with pytest.raises(ConfigError, match="needs 1 GPU"):
        run(cfg, to_yaml(resolved), echo=lambda _: None, progress=False)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()
