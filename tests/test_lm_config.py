"""LM experiment configs: each bad value is one ConfigError naming its key; knobs reach what they configure."""
from __future__ import annotations

import pytest

from metaicl.core.config import load_config
from metaicl.core.errors import ConfigError
from metaicl.experiment import ExperimentConfig, run_hash
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
        load_config(ExperimentConfig, config, [override])[0].validate()
    assert err.value.key == key


def test_episodes_longer_than_the_pretraining_windows_are_refused():
    """Issue 15: positions past pretrain.context_length never get a gradient in pretraining, so episodes that reach
    them are refused (the model's own positions, lm.context_length, are not enough), unless nothing reads episodes."""
    longer = ["lm.context_length=256", "episodes.max_length=128"]
    with pytest.raises(ConfigError, match="pretraining trains only the first pretrain.context_length=64") as err:
        load_config(ExperimentConfig, SYNTHETIC, longer)
    assert err.value.key == "episodes.max_length"
    assert load_config(ExperimentConfig, SYNTHETIC, [*longer, "pretrain.context_length=128"])
    assert load_config(ExperimentConfig, SYNTHETIC, [*longer, "tasks=null", "eval.methods=[]"])


def test_the_groups_a_config_has_say_what_kind_of_experiment_it_is():
    assert load_config(ExperimentConfig, SYNTHETIC)[0].kind == "lm"
    assert load_config(ExperimentConfig, ROOT / "configs" / "tiny.yaml")[0].kind == "classifier"
    assert load_config(ExperimentConfig, ROOT / "configs" / "data" / "ginc.yaml")[0].kind == "data"
    with pytest.raises(ConfigError, match="model: a config trains the in-context classifier"):
        load_config(ExperimentConfig, SYNTHETIC, ["model.d_model=32"])
    with pytest.raises(ConfigError, match="tasks: MetaICL's methods are evaluated on tasks"):
        load_config(ExperimentConfig, SYNTHETIC, ["tasks=null"])
    assert load_config(ExperimentConfig, SYNTHETIC, ["tasks=null", "eval.methods=[]"])[0].kind == "lm"  # lm_icl only
    with pytest.raises(ConfigError, match="eval.methods: nothing to evaluate"):
        load_config(ExperimentConfig, SYNTHETIC, ["tasks=null", "eval.methods=[]", "eval.lm_icl=false"])
    with pytest.raises(ConfigError, match="nothing to train"):
        load_config(ExperimentConfig, None, ["data.burstiness=2"])[0].check_trainable()


def test_the_dry_run_of_each_stage_lists_its_steps_before_any_data_exists(tmp_path):
    from cluster.pipeline import dry_run

    # runs_root too: a finished `metaicl run` of the shipped config in the checkout must not make a step look done
    cfg, _ = load_config(ExperimentConfig, SYNTHETIC, [f"data_root={tmp_path}/data", f"runs_root={tmp_path}/runs"])
    plans = {stage: dry_run(cfg, stages) for stage, stages in (("run", ("pretrain", "metatrain", "eval")),
                                                                ("train", ("pretrain",)), ("eval", ("eval",)))}
    # data, tasks, pretrain, three meta-trained variants (the config's methods need them), eval
    assert plans["run"].splitlines()[0].endswith("7 of 7 steps to run")
    assert "metatrain-metaicl-<after data>" in plans["run"] and f"{tmp_path}/data/tasks-<after data>" in plans["run"]
    assert plans["train"].splitlines()[0].endswith("3 of 3 steps to run")
    assert "metatrain" not in plans["train"] and "eval" not in plans["train"]
    assert plans["eval"] == plans["run"]  # what evaluation reads, then itself
    assert list(tmp_path.iterdir()) == []


def test_resources_and_paths_leave_the_run_hash_but_the_starting_model_does_not():
    base, _ = load_config(ExperimentConfig, REAL)
    same = ["metatrain.num_workers=2", "metatrain.grad_accum=4", "train.use_gpu=false", "eval.batch_size=4",
            "runs_root=elsewhere", "eval.fast=false"]
    assert run_hash(load_config(ExperimentConfig, REAL, same)[0]) == run_hash(base)
    for other in ("lm.name_or_path=gpt2-xl", "eval.k=[4]", "metatrain.k=4", "episodes.example_sep=x"):
        assert run_hash(load_config(ExperimentConfig, REAL, [other])[0]) != run_hash(base)


def test_eval_fast_false_scores_with_full_sequences_and_gives_the_same_rows(tmp_path, monkeypatch):
    import metaicl.eval.scoring as scoring
    from metaicl.data.episodes import EpisodeConfig
    from metaicl.data.tokenizer import TokenizerSpec
    from metaicl.eval.evaluate import evaluate_variant
    from metaicl.eval.config import EvalConfig
    from metaicl.experiment import FinetuneConfig
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
                                EvalConfig(k=[2], seeds=[100], fast=fast),
                                EpisodeConfig(input_sep=" ", example_sep="\n", max_length=64), FinetuneConfig(),
                                TokenizerSpec(**info["tokenizer"]))

    with_cache = rows(True)
    assert calls["fast"] > 0 and calls["slow"] == 0
    used = calls["fast"]
    full = rows(False)
    assert calls["slow"] > 0 and calls["fast"] == used
    # the same predictions, so the same table; the label-space mass, a sum of probabilities, within float error
    assert [r for r in full if "mass" not in r["metric"] and "share" not in r["metric"]] == \
        [r for r in with_cache if "mass" not in r["metric"] and "share" not in r["metric"]]
    assert [r["value"] for r in full] == pytest.approx([r["value"] for r in with_cache], abs=1e-6)


def test_pretraining_is_one_step_shared_by_configs_that_differ_only_after_it():
    """The pretraining step's directory is named by what it reads (mixture, model, training knobs): a sweep over
    meta-training or evaluation keys pretrains once; resources do not count; another mixture or lr does."""
    from cluster.lm_pipeline import pretrain_dir

    base = pretrain_dir(load_config(ExperimentConfig, SYNTHETIC)[0])
    assert base.parent.name == "data" and base.name.startswith("pretrain-")  # beside the data, in data_root
    for same in ("metatrain.lr=0.01", "eval.k=[2]", "tasks.synthetic.num_classes=4", "train.num_workers=2",
                 "train.log_every=7", "name=other", "runs_root=elsewhere", "out_dir=sweep-root"):
        assert pretrain_dir(load_config(ExperimentConfig, SYNTHETIC, [same])[0]) == base, same
    for other in ("train.lr=0.01", "lm.preset=small", "pretrain.token_budget=655360", "train.seed=1"):
        assert pretrain_dir(load_config(ExperimentConfig, SYNTHETIC, [other])[0]) != base, other


def test_meta_training_is_one_step_shared_by_configs_that_differ_only_in_evaluation():
    """A meta-trained model's directory is named by what it reads (the base model, the tasks and episodes, the
    model and meta-training knobs): runs and sweep trials that differ only in evaluation keys share it; another
    base model, task set, k, lr or episode format is another step."""
    from cluster.lm_pipeline import metatrain_dir

    def where(*overrides, variant="metaicl", init="pretrain-00000000", tasks="tasks-00000000"):
        cfg = load_config(ExperimentConfig, SYNTHETIC, list(overrides))[0]
        return metatrain_dir(cfg, variant, init, tasks)

    base = where()
    assert base.parent.name == "data" and base.name.startswith("metatrain-metaicl-")
    for same in ("eval.k=[2]", "eval.seeds=[1]", "eval.methods=[metaicl]", "eval.demos.labels=random",
                 "finetune.steps=3", "train.lr=0.01",
                 "metatrain.num_workers=2", "metatrain.cpus_per_worker=1", "name=other", "runs_root=elsewhere"):
        assert where(same) == base, same  # train.lr: read through the base model's name, not here
    for other in ("metatrain.lr=0.01", "metatrain.k=4", "metatrain.seed=1", "episodes.max_length=48",
                  "lm.dropout=0.1"):
        assert where(other) != base, other
    assert where(init="pretrain-11111111") != base and where(tasks="tasks-11111111") != base
    assert where(variant="channel_metaicl") != base and where(variant="channel_metaicl").name.startswith(
        "metatrain-channel_metaicl-")


def test_episodes_separated_by_the_ids_pretraining_saw_in_that_role(tmp_path):
    """tasks.separators (issue 15): families.json's tokenizer reads "\\t" and "\\n" as the bursty source's reserved
    separator ids, so an episode is [bos] x S y E ... x S y, as that source's pretraining sequences are c S l E;
    without it "\\n" is the document boundary (0) and nothing marks the answer slot. Decoded, the episode shows it."""
    from metaicl.data.episodes import EpisodeConfig, train_sequence
    from metaicl.data.tasks import load_collection
    from metaicl.data.tokenizer import TokenizerSpec, load_tokenizer
    from pretrain_data.task_families import TaskFamiliesConfig, build_task_families

    cfg = TaskFamiliesConfig(meta_train_families=["first_token"], eval_families=["last_token"], tasks_per_family=1,
                             eval_tasks_per_family=1, input_length=2, train_examples=6, test_examples=3)
    seps = {"input": 3098, "example": 3099}
    for name, separators in (("plain", None), ("separated", seps)):
        info = build_task_families(cfg, (1, 1000), tmp_path / name, separators=separators)
        tok = load_tokenizer(TokenizerSpec(**info["tokenizer"]))
        task = load_collection(tmp_path / name, ["first_token_000"])["first_token_000"]
        episodes = EpisodeConfig(input_sep="\t" if separators else " ", example_sep="\n", max_length=64)
        seq = train_sequence(task.train[:2], task.train[2], episodes, tok)
        words = [task.train[i].output for i in range(3)]
        if separators:
            assert seq.ids[0] == 0 and seq.ids[3::5] == [3098] * 3 and seq.ids[5::5] == [3099] * 2
            assert [str(seq.ids[i]) for i in (4, 9, 14)] == words  # the label after each input separator
            assert tok.decode(seq.ids) == "0 " + "\n".join(f"{e.input}\t{e.output}" for e in task.train[:3])
        else:
            assert seq.ids.count(0) == 3 and 3098 not in seq.ids  # bos and two boundaries, no separator ids


@pytest.mark.parametrize("overrides", [["tasks.separators=zipf"], ["tasks.separators=fewshot"],
                                       ["tasks.separators=nowhere"]])
def test_tasks_separators_must_name_a_bursty_source_that_writes_them(overrides):
    with pytest.raises(ConfigError) as err:
        load_config(ExperimentConfig, SYNTHETIC, overrides)
    assert err.value.key == "tasks.separators"
    cfg = load_config(ExperimentConfig, SYNTHETIC, ["tasks.separators=fewshot",
                                                    "pretrain.sources.fewshot.bursty_fewshot.separators=true"])[0]
    assert cfg.tasks.separators == "fewshot"


@pytest.mark.parametrize("sep", ["\\t", ":", "->"])
def test_a_synthetic_tasks_separator_the_ids_tokenizer_cannot_read_is_a_config_error(sep):
    """Synthetic tasks are read as whitespace-separated ids: a separator with any other character would fail only
    when the first episode is built, after pretraining. The usual slip, a shell turning episodes.input_sep="\t"
    into backslash + t, gets the quoting that works."""
    separators = ["tasks.separators=fewshot", "pretrain.sources.fewshot.bursty_fewshot.separators=true"]
    with pytest.raises(ConfigError) as err:
        load_config(ExperimentConfig, SYNTHETIC, [*separators, f"episodes.input_sep={sep}"])
    assert err.value.key == "episodes.input_sep" and ("quote the whole override" in str(err.value)) == ("\\" in sep)
    cfg = load_config(ExperimentConfig, SYNTHETIC, [*separators, 'episodes.input_sep="\\t"'])[0]
    assert cfg.episodes.input_sep == "\t"
    with pytest.raises(ConfigError, match="episodes.example_sep"):
        load_config(ExperimentConfig, SYNTHETIC, ["episodes.example_sep=###"])


def test_the_classifier_refuses_separators():
    with pytest.raises(ConfigError, match="data.separators: the classifier reads item vectors"):
        load_config(ExperimentConfig, ROOT / "configs" / "tiny.yaml", ["data.separators=true"])


def test_the_meta_training_step_reads_loss_on_and_shuffle_labels(monkeypatch, tmp_path):
    """metatrain.loss_on and metatrain.shuffle_labels reach the episodes each meta-training step trains on (with
    the mixture and task collection there: read_inputs planted)."""
    import cluster.lm_pipeline as lp
    from metaicl.data.tokenizer import TokenizerSpec

    planted = lp.Inputs(None, tmp_path / "tasks-00000000", ["first_token_000"], ["last_token_000"],
                        TokenizerSpec("ids", 100))
    monkeypatch.setattr(lp, "read_inputs", lambda cfg: planted)
    all3 = ["metatrain.loss_on=all_outputs", "metatrain.shuffle_labels=true", "metatrain.fresh_tasks=true"]
    curriculum = [*all3, "metatrain.task_curriculum.steps=100"]
    dirs = set()
    from metaicl.train.config import TaskCurriculumConfig

    none, first_100 = TaskCurriculumConfig(), TaskCurriculumConfig(steps=100, input_length=1, num_classes=2)
    for overrides, expect in (([], ("query", False, False, none)), (all3, ("all_outputs", True, True, none)),
                              (curriculum, ("all_outputs", True, True, first_100))):
        cfg = load_config(ExperimentConfig, SYNTHETIC, [*overrides, f"data_root={tmp_path}", "eval.methods=[metaicl]"])[0]
        [step] = [s for s in lp.lm_steps(cfg, ["metatrain"]) if s.stage == "metatrain"]
        episodes = step.spec.episodes
        assert (episodes.loss_on, episodes.shuffle_labels, episodes.fresh_tasks, episodes.curriculum) == expect
        dirs.add(step.where)
    assert len(dirs) == 3  # a step of its own: the keys name it


@pytest.mark.parametrize("overrides, key", [
    (["metatrain.task_curriculum.steps=100"], "metatrain.task_curriculum.steps"),  # without fresh_tasks
    (["metatrain.fresh_tasks=true", "metatrain.task_curriculum.steps=500"], "metatrain.task_curriculum.steps"),
    (["metatrain.fresh_tasks=true", "metatrain.task_curriculum.steps=100", "metatrain.task_curriculum.num_classes=4"],
     "metatrain.task_curriculum.num_classes"),
    (["metatrain.fresh_tasks=true", "metatrain.task_curriculum.steps=100", "tasks.synthetic.input_length=3",
      "tasks.synthetic.meta_train_families=[middle_token]"], "metatrain.task_curriculum.input_length"),
])
def test_a_task_curriculum_that_cannot_run_is_one_config_error(overrides, key):
    """metatrain.task_curriculum: fresh tasks only; a step left after it; simpler than the collection; a family that
    can be written in its input length (middle_token needs 3 tokens)."""
    with pytest.raises(ConfigError) as err:
        load_config(ExperimentConfig, SYNTHETIC, overrides)
    assert err.value.key == key


def test_fresh_tasks_need_a_synthetic_collection():
    with pytest.raises(ConfigError, match="metatrain.fresh_tasks: new tasks are made from a synthetic collection"):
        load_config(ExperimentConfig, ROOT / "configs" / "metaicl_real_tasks.yaml", ["metatrain.fresh_tasks=true"])
