"""README's sweeps and language-model commands, typed as a user types them (the rule and how: tests/readme.py); then
`metaicl aggregate runs` and `metaicl report runs` over the directory that now holds a classifier sweep, single
language-model runs and a language-model sweep."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cluster.results import RESULT_COLUMNS
from tests.readme import fresh_copy, line, metaicl, metaicl_here, readme_commands


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return fresh_copy(tmp_path_factory.mktemp("clone"))


def test_language_model_stages(repo, ray_session):
    run = metaicl_here(line("metaicl run configs/metaicl_synthetic.yaml"), repo)
    [out] = [p for p in (repo / "runs").glob("metaicl_synthetic-*") if (p / "results.parquet").exists()]
    results = pd.read_parquet(out / "results.parquet")
    assert list(results.columns) == RESULT_COLUMNS
    assert set(results.stage) == {"pretrain", "metatrain/metaicl", "eval"}  # training curves and the table
    own = results[results.suite == "lm_icl"]  # each model's own in-context ability, and over pretraining
    assert set(own[own.stage == "eval"].method) == {"pretrained", "metaicl"}
    assert set(own.task) == {"mixture", "shuffled", "repeat", "repeat_boundary", "repeat_lag", "heads"}
    assert sorted(own[own.stage == "pretrain"].step.unique()) == [0, 2, 4]  # every train.eval_every
    results = results[results.suite == "metaicl"]
    leaks = results[results.metric.str.startswith("leakage/")]  # no meta-training rule answers a last_token query
    assert leaks.groupby("metric").value.mean().to_dict() == {"leakage/first_token": 0.0, "leakage/middle_token": 0.0,
                                                                "leakage/majority": 0.0}
    assert leaks.method.isna().all() and set(leaks.task) == {"last_token_000", "last_token_001"}
    results = results[~results.metric.str.startswith("leakage/")]
    assert set(results.method.dropna()) == {"zero_shot", "in_context", "pmi_in_context", "metaicl"}
    assert set(results.task) == {"last_token_000", "last_token_001"}  # the held-out family only
    assert set(results.seed) == {100, 13}
    assert set(results.metric) == {"macro_f1", "accuracy", "label_mass", "context_label_share", "oracle_accuracy"}
    mass = results[results.metric == "label_mass"]  # direct scoring without calibration: 0-shot, in-context, MetaICL
    assert set(mass.method) == {"zero_shot", "in_context", "metaicl"} and mass.value.between(0, 1).all()
    assert set(results[results.metric == "context_label_share"].method) == {"in_context", "metaicl"}
    assert set(results[results.method == "metaicl"].k) == {2} and set(results[results.method == "zero_shot"].k) == {0}
    assert results.value.between(0, 1).all()
    report = (out / "report.md").read_text()
    assert "| MetaICL | 2 |" in report and "| PMI In-context | 2 |" in report and "worst" in report
    assert "## In-context ability of each model (lm_icl)" in report and "### Over pretraining" in report
    assert "## Label-space mass at the answer slot" in report and "| last_token | 0.000 | 0.000 | 0.000 |" in report
    [meta] = (repo / "runs" / "data").glob("metatrain-*")  # only the variants the methods need: metaicl
    assert "MetaICL" in run.stdout and meta.name.startswith("metatrain-metaicl-")
    assert (meta / "model" / "model.safetensors").exists() and not (out / "metatrained").exists()
    [pretrained] = (repo / "runs" / "data").glob("pretrain-*")  # it trained alone: on every core (issue 20)
    assert json.loads((pretrained / "progress.json").read_text())["threads"] == ray_session.cluster_resources()["CPU"]
    plan = metaicl(line("metaicl run configs/metaicl_synthetic.yaml") + " --dry-run", repo).stdout
    assert plan.startswith(f"run {out}: 0 of 5 steps to run")  # data, tasks, pretrain, metatrain [metaicl], eval
    assert f"{pretrained}\n" in plan and f"{meta}\n" in plan and "metatrain [metaicl]" in plan
    for stage in ("train", "metatrain"):  # one stage each: done already, and Ray is not even started
        proc = metaicl(line(f"metaicl {stage} configs/metaicl_synthetic.yaml"), repo)
        assert "done already" in proc.stdout and "ray" not in proc.stdout.lower()

    metaicl_here(line("metaicl eval configs/metaicl_synthetic.yaml"), repo)  # the meta-trained model as the base model
    [solo] = [p for p in (repo / "runs").glob("metaicl_synthetic-*") if p != out]
    solo_results = pd.read_parquet(solo / "results.parquet")
    assert set(solo_results[solo_results.suite == "metaicl"].method.dropna()) == {"zero_shot", "in_context"}
    assert not (solo / "pretrained").exists()
    assert f"name_or_path: {meta}/model" in (solo / "config.yaml").read_text()  # resolved once


def first_sweep(config: str, times: int, repo: Path):
    """README's `metaicl sweep configs/sweeps/<config>` lines (`times` of them), the first run: every trial runs."""
    sweeps = [c for c, _ in readme_commands() if c.startswith(f"metaicl sweep configs/sweeps/{config}")]
    assert len(sweeps) == times
    first = metaicl_here(sweeps[0], repo)
    assert "2 trials, 0 done already, 2 to run" in first.stdout
    return sweeps, first, repo / "runs" / f"{config.removesuffix('.yaml')}-sweep"


def test_sweep_then_again_then_aggregate_and_report(repo, ray_session):
    sweeps, _, root = first_sweep("burstiness_zipf.yaml", 2, repo)
    assert len(list(root.glob("burstiness_zipf-*/results.parquet"))) == 2
    assert "2 trials, 2 done already, 0 to run" in metaicl_here(sweeps[1], repo).stdout
    (root / "aggregate.parquet").unlink()
    metaicl(line("metaicl aggregate runs/burstiness_zipf-sweep"), repo)
    table = pd.read_parquet(root / "aggregate.parquet")
    assert sorted(table["cfg.data.burstiness"].unique()) == [0, 2]
    assert table.run.nunique() == 2
    (root / "report.html").unlink()
    metaicl(line("metaicl report runs/burstiness_zipf-sweep"), repo)
    assert "data:image/png;base64," in (root / "report.html").read_text()


def test_language_model_sweep_pretrains_once_and_reruns_nothing(repo, ray_session):
    sweep, first, root = first_sweep("metaicl_tiny.yaml", 1, repo)
    shared = first.stdout.split("shared steps:")[1]
    assert "1 training steps that several trials need" in shared and "pretrain: pretrain-" in shared
    # ... and from the toy-size metaicl_synthetic run above (the same mixture, model and pretraining knobs), whose
    # pretrained model the sweep reuses: one pretraining step in the shared data_root
    assert len(list((repo / "runs" / "data").glob("pretrain-*"))) == 1
    runs = sorted(root.glob("metaicl_tiny-*/results.parquet"))
    assert len(runs) == 2 and not any((r.parent / "pretrained").exists() for r in runs)
    used = [json.loads((r.parent / "steps.json").read_text()) for r in runs]  # one per metatrain.lr, in the trials
    assert used[0]["pretrain"] == used[1]["pretrain"] and used[0]["metatrain [metaicl]"] != used[1]["metatrain [metaicl]"]
    report = (root / "report.md").read_text()
    assert "## MetaICL methods" in report and "cfg.metatrain.lr" in report
    assert "2 trials, 2 done already, 0 to run" in metaicl_here(sweep[0], repo).stdout


def test_mixture_sweep_measures_each_model_by_its_own_in_context_ability(repo, ray_session):
    """README's mixture sweep (issue 14) at toy size, one of its points (its slowest data: related documents in
    dependency order): the model measured by lm_icl alone, the sweep's report."""
    sweeps = [c for c, _ in readme_commands() if c.startswith("metaicl sweep configs/sweeps/mixture_icl.yaml")]
    assert len(sweeps) == 1
    assert "1 trials, 0 done already, 1 to run" in metaicl_here(sweeps[0], repo).stdout
    root = repo / "runs" / "mixture_icl-sweep"
    [run] = root.glob("mixture_icl-*/results.parquet")
    assert set(pd.read_parquet(run).suite) == {"train", "heldout", "lm_icl"}
    assert "## In-context ability of the pretrained models (lm_icl" in (root / "report.md").read_text()


def test_aggregate_and_report_over_every_run_of_both_kinds(repo):
    """runs/ now holds a sweep of the classifier, single language-model runs and a language-model sweep: one
    table, one report with a section per suite."""
    metaicl(line("metaicl aggregate runs "), repo)
    table = pd.read_parquet(repo / "runs" / "aggregate.parquet")
    assert {"icl_sets", "metaicl", "heldout", "train"} <= set(table.suite)
    names = set(table.run)
    assert any(n.startswith("burstiness_zipf-") for n in names)  # the classifier's runs (a sweep's trials)
    assert any(n.startswith("metaicl_synthetic-") for n in names) and any(n.startswith("metaicl_tiny-") for n in names)
    assert table["card.sources.zipf.zipf_alpha_mle"].notna().any() and table["card.burstiness_ratio"].notna().any()
    metaicl(line("metaicl report runs "), repo)
    report = (repo / "runs" / "report.md").read_text()
    assert "## Final accuracy" in report and "## MetaICL methods" in report
    assert "## In-context ability of the pretrained models (lm_icl" in report
    # no knob plot: across every run here no knob varies with the others at their baseline
    final = report.split("## Final accuracy")[1].split("##")[0]  # the classifier's runs only, keyed by what varies
    assert "icl_novel mean" in final and "data.burstiness" in final and "metatrain" not in final


def test_demonstrations_sweep_compares_selection_labels_and_lora_on_shared_models(repo, ray_session):
    """README's demonstrations sweep (issue 16) at toy size, three of its points: the trials share one pretrained and
    one meta-trained model, each setting is a column of the sweep's table, and the report gives every k its interval."""
    [sweep] = [c for c, _ in readme_commands() if c.startswith("metaicl sweep configs/demonstrations.yaml")]
    first = metaicl_here(sweep, repo)
    assert "3 trials, 0 done already, 3 to run" in first.stdout
    shared = first.stdout.split("shared steps:")[1]
    assert "pretrain: pretrain-" in shared and "metatrain [metaicl]: metatrain-metaicl-" in shared
    root = repo / "runs" / "demonstrations-sweep"
    table = pd.read_parquet(root / "aggregate.parquet")
    rows = table[(table.suite == "metaicl") & (table.metric == "accuracy")]
    settings = set(zip(rows.method, rows["cfg.eval.demos.selection"], rows["cfg.eval.demos.labels"]))
    assert {("metaicl", "random", "gold"), ("metaicl", "bm25", "random"), ("finetune", "random", "gold")} <= settings
    assert sorted(set(rows[rows.method == "metaicl"].k)) == [1, 12]  # 1 and max: the toy pool of 12 examples
    trained = table[table.metric == "trained_params"]  # LoRA trains its adapter only: rank x (in + out) per matrix
    assert set(trained["cfg.finetune.method"]) == {"lora"} and (trained.value > 0).all()
    assert (trained.value < 0.05 * 530880).all()
    report = (root / "report.md").read_text()
    assert "## MetaICL methods at every k (mean ± 95% t interval over seeds)" in report
    assert "| bm25 | random |" in report and " ± " in report
