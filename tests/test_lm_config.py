"""LM experiment configs: each bad value is one ConfigError naming its key; knobs reach what they configure."""
from __future__ import annotations

import pytest

from metaicl.core.config import load_config
from metaicl.core.errors import ConfigError
from metaicl.lm_experiment import LMExperimentConfig, load_experiment, run_hash
from tests.conftest import ROOT

SYNTHETIC = ROOT / "configs" / "metaicl_synthetic.yaml"
REAL = ROOT / "configs" / "metaicl_real_tasks.yaml"


@pytest.mark.parametrize("config, override, key", [
    (SYNTHETIC, "eval.methods=[metaicl,best_method]", "eval.methods"),
    (SYNTHETIC, "eval.k=[0]", "eval.k"),
    (SYNTHETIC, "eval.seeds=[]", "eval.seeds"),
    (SYNTHETIC, "finetune.lr=0", "finetune.lr"),
    (SYNTHETIC, "tasks.source=nowhere", "tasks.source"),
    (SYNTHETIC, "tasks.path=data/icl", "tasks.path"),  # and tasks.synthetic: one of the two
    (SYNTHETIC, "lm.context_length=32", "lm.context_length"),  # shorter than the pretraining windows
    (SYNTHETIC, "episodes.max_length=512", "episodes.max_length"),  # longer than the model's positions
    (SYNTHETIC, "metatrain.grad_accum=3", "metatrain.num_workers"),  # does not divide the batch
    (SYNTHETIC, "episodes.truncation=middle", "episodes.truncation"),
    (REAL, "tasks.eval=[cb,sst2]", "tasks.meta_train"),  # sst2 is also meta-trained on
    (REAL, "tasks.eval=[]", "tasks.eval"),
    (REAL, "lm.name_or_path=null", "lm.name_or_path"),  # no pretraining data and no model to start from
])
def test_a_bad_value_is_one_error_naming_its_key(config, override, key):
    with pytest.raises(ConfigError) as err:
        load_experiment(config, [override])[0].validate()
    assert err.value.key == key


def test_the_lm_group_or_an_lm_override_makes_an_lm_experiment():
    assert isinstance(load_experiment(SYNTHETIC)[0], LMExperimentConfig)
    assert not isinstance(load_experiment(ROOT / "configs" / "tiny.yaml")[0], LMExperimentConfig)


def test_resources_and_paths_leave_the_run_hash_but_the_starting_model_does_not():
    base, _ = load_config(LMExperimentConfig, REAL)
    same = ["metatrain.num_workers=2", "metatrain.grad_accum=4", "train.use_gpu=false", "eval.batch_size=4",
            "runs_root=elsewhere", "eval.fast=false"]
    assert run_hash(load_config(LMExperimentConfig, REAL, same)[0]) == run_hash(base)
    for other in ("lm.name_or_path=gpt2-xl", "eval.k=[4]", "metatrain.k=4", "episodes.example_sep=x"):
        assert run_hash(load_config(LMExperimentConfig, REAL, [other])[0]) != run_hash(base)


def test_eval_fast_false_scores_with_full_sequences_and_gives_the_same_rows(tmp_path, monkeypatch):
    import metaicl.eval.scoring as scoring
    from metaicl.data.episodes import EpisodeConfig
    from metaicl.eval.evaluate import evaluate_variant
    from metaicl.lm_experiment import FinetuneConfig, ICLEvalConfig
    from metaicl.models.lm import LMConfig, build_lm, save_lm
    from pretrain_data.task_families import TaskFamiliesConfig, build_task_families

    info = build_task_families(TaskFamiliesConfig(meta_train_families=[], eval_families=["last_token"],
                                                  eval_tasks_per_family=1, train_examples=6, test_examples=6,
                                                  input_length=2), (1, 40), tmp_path / "tasks")
    save_lm(build_lm(LMConfig(context_length=64), vocab_size=40), tmp_path / "model")
    calls = {"slow": 0, "fast": 0}
    for name in calls:
        real = getattr(scoring, f"score_{name}")

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)
        monkeypatch.setattr(scoring, f"score_{name}", counted)
    def rows(fast: bool) -> list[dict]:
        return evaluate_variant("pretrained", str(tmp_path / "model"), ["in_context", "pmi_in_context"],
                                str(tmp_path / "tasks"), info["splits"]["eval"],
                                ICLEvalConfig(k=[2], seeds=[100], fast=fast),
                                EpisodeConfig(input_sep=" ", example_sep="\n", max_length=64), FinetuneConfig(),
                                "ids:40")

    with_cache = rows(True)
    assert calls["fast"] > 0 and calls["slow"] == 0
    used = calls["fast"]
    assert rows(False) == with_cache
    assert calls["slow"] > 0 and calls["fast"] == used
