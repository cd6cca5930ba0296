"""Every example mixture in configs/data builds, and its statistics card shows the property the config dials."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from metaicl.core.config import load_config
from metaicl.core.errors import ConfigError
from metaicl.experiment import ExperimentConfig
from pretrain_data.build import build
from tests.conftest import ROOT

CONFIGS = sorted((ROOT / "configs" / "data").glob("*.yaml"))
SMALL = {"zipf_alpha": 131072, "long_tail": 131072, "ordering": 65536, "ginc": 65536, "two_source": 65536,
         "function_class": 41 * 3000}


def cards(name: str, data_root: Path) -> dict[str, dict]:
    """Build every arm of configs/data/<name>.yaml at a small token budget, with 1 and with 2 shard tasks in
    flight (the same bytes: randomness is keyed by content, never by worker count), and write its report as
    `metaicl data build` does; arm -> statistics card."""
    from cluster.report import write_data_report

    cfg, _ = load_config(ExperimentConfig, ROOT / "configs" / "data" / f"{name}.yaml",
                         [f"pretrain.token_budget={SMALL[name]}"])
    out = {}
    for arm in cfg.arm_names():
        one = build(cfg.arm(arm).pretrain, data_root / "one", max_in_flight=1, progress=False)
        two = build(cfg.arm(arm).pretrain, data_root / "two", max_in_flight=2, progress=False)
        for file in [s.file for s in one.shards] + ["manifest.json", "stats.json"]:
            assert (one.root / file).read_bytes() == (two.root / file).read_bytes(), (name, arm, file)
        out[arm] = json.loads((one.root / "stats.json").read_text())
    report = write_data_report(data_root, name, out)
    assert "## Pretraining mixture, measured" in report.read_text()
    return out


def test_every_example_config_is_listed_here():
    assert sorted(p.stem for p in CONFIGS) == sorted(SMALL)


@pytest.fixture
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # text sources name data/text/... relative to the repository root


def test_zipf_series_moves_the_fitted_exponent(ray_session, tmp_path):
    fitted = {arm: c["sources"]["zipf"]["zipf_alpha_mle"] for arm, c in cards("zipf_alpha", tmp_path).items()}
    for arm, alpha in fitted.items():
        assert abs(alpha - float(arm.split("_")[1])) < 0.1, fitted
    assert list(fitted.values()) == sorted(fitted.values())


def test_long_tail_arm_has_more_rare_tokens(ray_session, tmp_path):
    c = cards("long_tail", tmp_path)
    assert c["long_tail"]["sources"]["zipf"]["rare_token_density"] > 5 * c["no_tail"]["sources"]["zipf"]["rare_token_density"]


def test_dependency_ordering_raises_adjacent_similarity_only_where_asked(ray_session, tmp_path, at_root):
    c = {arm: card["sources"]["wiki"] for arm, card in cards("ordering", tmp_path).items()}
    assert c["dependency"]["adjacent_doc_similarity"] > 2 * c["dependency"]["random_order_similarity"]
    assert abs(c["random"]["adjacent_doc_similarity"] - c["random"]["random_order_similarity"]) < 0.03


def test_ginc_arms_hold_the_number_of_concepts_they_ask_for(ray_session, tmp_path):
    c = cards("ginc", tmp_path)
    assert c["concepts_5"]["sources"]["ginc"]["distinct_groups"] == 5
    assert c["concepts_20"]["sources"]["ginc"]["distinct_groups"] == 20
    assert c["concepts_20"]["sources"]["ginc"]["group_entropy_bits"] > c["concepts_5"]["sources"]["ginc"]["group_entropy_bits"]


def test_two_source_mixture_has_its_shares(ray_session, tmp_path, at_root):
    card = cards("two_source", tmp_path)["main"]
    assert card["sources"]["wiki"]["share"] == 0.25 and card["sources"]["fewshot"]["share"] == 0.75
    assert card["sources"]["fewshot"]["distinct_groups"] > 100  # query classes of the few-shot sequences


def test_function_class_prompts_follow_their_laws(ray_session, tmp_path):
    c = cards("function_class", tmp_path)
    assert c["linear"]["sources"]["linear"]["prompts"] == 3000
    assert abs(c["linear"]["sources"]["linear"]["y_var"] - 20) < 1.5  # var(w.x) = d for w, x ~ N(0, I_d)
    mixed = c["mixed"]["sources"]
    assert abs(mixed["sparse"]["y_var"] - 3) < 0.3  # 3 non-zero weights
    assert sum(s["prompts"] for s in mixed.values()) == 3000 and {s["share"] for s in mixed.values()} == {0.333333}
    assert all(abs(s["x_second_moment"] - 1) < 0.02 for s in mixed.values())
    report = (tmp_path / "report.md").read_text()  # moments, not a rank-frequency curve: prompts are real-valued
    assert "| linear | linear | 3000 |" in report and "rank_frequency" not in report


def test_function_class_mixes_with_nothing_else_and_a_window_is_one_prompt():
    cfg, _ = load_config(ExperimentConfig, ROOT / "configs" / "data" / "function_class.yaml")
    with pytest.raises(ConfigError, match="n_points: 41 must equal context_length=40"):
        load_config(ExperimentConfig, ROOT / "configs" / "data" / "function_class.yaml", ["pretrain.context_length=40"])
    with pytest.raises(ConfigError, match="real-valued"):
        load_config(ExperimentConfig, ROOT / "configs" / "data" / "function_class.yaml",
                    ["pretrain.sources.words={kind: zipf_lm}"])


def test_a_text_source_short_of_its_quota_is_one_error_and_leaves_nothing(ray_session, tmp_path, at_root):
    cfg, _ = load_config(ExperimentConfig, ROOT / "configs" / "data" / "two_source.yaml",
                         ["pretrain.token_budget=2000000", "pretrain.sources.wiki.max_epochs=1"])
    with pytest.raises(ConfigError, match=r"pretrain\.sources\.wiki: quota of 499968 tokens needs 5\.\d\d epochs"):
        build(cfg.pretrain, tmp_path, progress=False)
    assert not any(tmp_path.iterdir())


EXE = str(Path(sys.executable).with_name("metaicl"))


def test_run_refuses_a_mixture_config_until_language_model_training_exists(tmp_path):
    proc = subprocess.run([EXE, "run", "configs/data/zipf_alpha.yaml", f"runs_root={tmp_path}"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and "pretrain" in proc.stderr and "metaicl data build" in proc.stderr
    assert not any(tmp_path.iterdir())
