"""LM experiments through the CLI: `metaicl run` chains data -> pretrain -> metatrain -> eval; `train`, `metatrain`
and `eval` run single stages; the real-task config runs offline on a tiny random model with a local tokenizer."""
from __future__ import annotations

import pandas as pd
import pytest

from metaicl.cli import main
from metaicl.core.io import read_json
from metaicl.eval.methods import METHODS
from tests.conftest import ROOT

SYNTHETIC = str(ROOT / "configs" / "metaicl_synthetic.yaml")
REAL = str(ROOT / "configs" / "metaicl_real_tasks.yaml")
TINY_SYNTHETIC = [  # the synthetic pipeline at toy size: it checks the plumbing, not that ICL emerges
    "pretrain.token_budget=16384", "pretrain.context_length=64", "pretrain.windows_per_shard=128",
    "train.steps=4", "train.batch_size=8", "train.warmup_steps=1", "train.eval_every=2",
    "tasks.synthetic.tasks_per_family=2", "tasks.synthetic.eval_tasks_per_family=2",
    "tasks.synthetic.train_examples=12", "tasks.synthetic.test_examples=6",
    "metatrain.steps=3", "metatrain.batch_size=4", "metatrain.k=2", "metatrain.warmup_steps=1",
    "metatrain.eval_every=3", "finetune.steps=2", "eval.k=[2]", "eval.seeds=[100,13]", "episodes.max_length=64",
    "lm.context_length=64", "eval.methods=[zero_shot,in_context,pmi_in_context,metaicl]"]
"""Four methods, one meta-trained variant: every Ray Train fit costs ~20 s of start-up here. All eleven methods are
scored in process by test_every_method_of_the_table_gives_rows."""


def test_a_stage_whose_input_is_missing_says_which_command_to_run_first(ray_session, tmp_path, capsys):
    args = [SYNTHETIC, f"out_dir={tmp_path / 'run'}", f"data_root={tmp_path / 'data'}", *TINY_SYNTHETIC]
    assert main(["eval", *args]) == 2
    assert "metaicl train" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # found before the run directory is made


def test_a_language_model_measured_by_its_own_in_context_ability_alone_needs_no_tasks(ray_session, tmp_path):
    """eval.methods=[] and no tasks: pretraining with the lm_icl suite over training and after it (issue 14); a GINC
    source in the mixture adds its k-shot curve against the Bayes reader."""
    out = tmp_path / "run"
    args = [SYNTHETIC, f"out_dir={out}", f"data_root={tmp_path / 'data'}", *TINY_SYNTHETIC, "tasks=null",
            "eval.methods=[]", "pretrain.sources.ginc={kind: ginc, weight: 0.25, ginc: {doc_length: 64}}"]
    assert main(["run", *args]) == 0
    results = pd.read_parquet(out / "results.parquet")
    assert set(results.suite) == {"train", "heldout", "lm_icl"} and set(results.stage) == {"pretrain", "eval"}
    after = results[results.stage == "eval"]
    assert set(after.method) == {"pretrained"} and set(after.task) == {"mixture", "shuffled", "repeat",
                                                                        "repeat_boundary", "repeat_lag", "heads",
                                                                        "kshot/ginc"}
    kshot = after[after.task == "kshot/ginc"]
    assert sorted(kshot.k.dropna().unique()) == [0, 1, 2, 4, 8]  # what fits in 64 tokens
    assert set(kshot[kshot.k.isna()].metric) == {"accuracy_slope", "accuracy_calibrated_slope", "bayes_accuracy_slope"}
    assert kshot[kshot.metric == "label_mass"].value.between(0, 1).all()
    after = after[after.task != "kshot/ginc"]
    curve = results[(results.suite == "lm_icl") & (results.stage == "pretrain")]
    assert sorted(curve.step.unique()) == [0, 2, 4]
    last = curve[curve.step == 4].set_index(["task", "metric"]).value  # the end of pretraining, measured twice:
    again = after.set_index(["task", "metric"]).value  # in training and from the saved model, the same numbers
    assert ((last - again.loc[last.index]).abs() < 1e-4).all()
    report = (out / "report.md").read_text()
    assert "## In-context ability of each model (lm_icl)" in report and "Macro-F1" not in report
    assert "### k-shot on GINC prompts" in report and "| pretrained | ginc | slope |" in report
    assert not list((tmp_path / "data").glob("tasks-*")) and not list((tmp_path / "data").glob("metatrain-*"))


@pytest.fixture(scope="module")
def tiny_hf_model(tmp_path_factory):
    """A tiny random GPT-2 with a byte-level BPE tokenizer trained here on the shipped tasks: a stand-in for
    GPT-2 Large in the same Hugging Face layout."""
    from transformers import PreTrainedTokenizerFast

    from metaicl.data.tasks import load_collection
    from metaicl.models.lm import LMConfig, build_lm, save_lm
    from pretrain_data.text import train_tokenizer

    tasks = load_collection(ROOT / "data" / "icl", ["sst2", "cb"])
    texts = [ex.input + " " + ex.output for t in tasks.values() for ex in t.train[:200]]
    tok = PreTrainedTokenizerFast(tokenizer_object=train_tokenizer(texts, 300), eos_token="<|endoftext|>",
                                  bos_token="<|endoftext|>")
    where = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    save_lm(build_lm(LMConfig(preset="tiny", context_length=512), vocab_size=len(tok)), where)
    tok.save_pretrained(where)
    return where


def test_the_real_task_config_runs_offline_on_a_tiny_model(ray_session, tmp_path, tiny_hf_model):
    """The pretrained-model rows through Ray (meta-training on text episodes: the next test, without Ray), with
    demonstrations retrieved by MiniLM sentence embeddings (an embed step computes them once, before evaluation)
    and LoRA Fine-tune rows whose adapters the run keeps."""
    out, data = tmp_path / "real", tmp_path / "data"
    assert main(["run", REAL, f"out_dir={out}", f"data_root={data}", f"lm.name_or_path={tiny_hf_model}",
                 "lm.context_length=512", "eval.use_gpu=false", "metatrain.use_gpu=false", "finetune.steps=1",
                 "episodes.max_length=512", "episodes.max_length_per_example=64", "eval.k=[2]", "eval.seeds=[100]",
                 "eval.max_test_examples=3", "eval.demos.selection=knn", "eval.demos.embedder=minilm",
                 "finetune.method=lora", "finetune.save_adapters=true",
                 "eval.methods=[zero_shot,pmi_in_context,channel_in_context,finetune]"]) == 0
    assert {p.name for p in (out / "adapters" / "finetune").iterdir()} == {"cb", "mnli"}  # LoRA, in peft's format
    assert (out / "adapters" / "finetune" / "cb" / "k2-seed100" / "adapter_config.json").exists()
    [embedded] = data.glob("embeddings-minilm-*")
    assert (embedded / "embeddings.json").exists() and sorted(p.stem for p in embedded.glob("*.parquet")) == ["cb",
                                                                                                            "mnli"]
    assert read_json(out / "steps.json")["embed [minilm]"] == str(embedded)
    results = pd.read_parquet(out / "results.parquet")
    table, own = results[results.suite == "metaicl"], results[results.suite == "lm_icl"]
    assert set(table.task) == {"cb", "mnli"}
    assert set(table.method) == {"zero_shot", "pmi_in_context", "channel_in_context", "finetune"}
    # the model's own in-context ability: no mixture here, so the random-sequence measurements only
    assert set(own.task) == {"repeat", "repeat_boundary", "repeat_lag", "heads"} and set(own.method) == {"pretrained"}


DEMOS_ON_REAL_TASKS = ["pretrain=null", "tasks.synthetic=null", "tasks.path=data/icl", "tasks.meta_train=[]",
                       "tasks.eval=[sst2]", "metatrain.fresh_tasks=false", "metatrain.task_curriculum.steps=0"]
"""configs/demonstrations.yaml on the shipped real tasks (its header comment): a collection of files instead of
synthetic families, a local model instead of pretraining; meta-training and its curriculum off."""


def test_the_demonstrations_sweep_runs_on_the_real_tasks_with_a_local_model(ray_session, tmp_path, tiny_hf_model):
    """Issue 16: the same sweep on sst2 with a tiny local model, offline: BM25 retrieval with random labels and a
    LoRA row, each a trial; the words of the demonstrations are sst2's options."""
    root = tmp_path / "runs"
    assert main(["sweep", str(ROOT / "configs" / "demonstrations.yaml"), *DEMOS_ON_REAL_TASKS,
                 f"lm.name_or_path={tiny_hf_model}", f"runs_root={root}", f"data_root={tmp_path / 'data'}",
                 "lm.context_length=512", "episodes.max_length=512", "episodes.max_length_per_example=64",
                 "eval.methods=[in_context]",
                 "eval.k=[2]", "eval.seeds=[100]", "eval.max_test_examples=3", "finetune.steps=1",
                 "sweep.points=[{eval.demos.selection: bm25, eval.demos.labels: random}, "
                 "{eval.methods: [finetune], eval.k: [2], finetune.method: lora}]"]) == 0
    table = pd.read_parquet(root / "demonstrations-sweep" / "aggregate.parquet")
    rows = table[(table.suite == "metaicl") & (table.metric == "accuracy")]
    assert set(rows.task) == {"sst2"} and set(rows.method) == {"in_context", "finetune"}
    assert set(zip(rows.method, rows["cfg.eval.demos.selection"], rows["cfg.eval.demos.labels"])) == {
        ("in_context", "bm25", "random"), ("finetune", "random", "gold")}
    assert not list((tmp_path / "data").glob("pretrain-*"))  # the local model, not a pretrained one


def test_what_cannot_run_is_one_error_before_the_run_directory_exists(ray_session, tmp_path, tiny_hf_model,
                                                                      capsys):
    """Issue 19: evaluation asking for a GPU this machine lacks (the real-task config says eval.use_gpu: true)
    was a Ray task that never started, a silent hang; a method that needs meta-training without meta-training
    tasks left an empty run directory behind its error."""
    args = [REAL, f"lm.name_or_path={tiny_hf_model}", "lm.context_length=512", "episodes.max_length=512",
            "eval.methods=[zero_shot]"]
    assert main(["eval", *args, f"out_dir={tmp_path / 'gpu'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("metaicl: config error: eval.use_gpu: evaluation asks for 1 GPU per model") and "has 0" in err
    assert main(["eval", *args, f"out_dir={tmp_path / 'meta'}", "eval.use_gpu=false", "tasks.meta_train=[]",
                 "eval.methods=[metaicl]"]) == 2
    assert capsys.readouterr().err.startswith("metaicl: config error: tasks.meta_train: ")
    assert main(["metatrain", *args, f"out_dir={tmp_path / 'metagpu'}", "eval.methods=[metaicl]"]) == 2
    assert capsys.readouterr().err.startswith("metaicl: config error: metatrain.use_gpu: arm 'metaicl' needs 1 GPU")
    for missing, says in ((tmp_path / "no" / "model", "no such directory"), ("no-such-model", "Hugging Face cache"),
                          (ROOT / "data", "no config.json")):  # was: transformers' OSError traceback
        assert main(["eval", *args, f"out_dir={tmp_path / 'x'}", f"lm.name_or_path={missing}"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("metaicl: config error: lm.name_or_path: ") and says in err and err.count("\n") == 1
    assert not any(tmp_path.iterdir())


BAD_LINES = [  # issue 19's bad-input corpus: each kind of bad line a task file can have, as line 6 of cb_test.jsonl
    ('{"task": "cb", "input": ', "malformed JSON: Expecting value"),
    ("[1, 2]", "expected a json object, got list"),
    ("", "empty line"),
    ('{"task": "cb", "input": "x", "options": ["a"]}', "keys must be exactly"),
    ('{"task": "cb", "input": "x", "output": "a", "options": ["a"], "label": 1}', "unexpected ['label']"),
    ('{"task": "cb", "input": "x", "output": "z", "options": ["a", "b"]}', "output 'z' is not one of the options"),
    ('{"task": "cb", "input": "x", "output": "a", "options": []}', "options must be a non-empty list"),
    ('{"task": "cb", "input": 7, "output": "a", "options": ["a"]}', "must be strings"),
    ('{"task": "cb", "input": "  ", "output": "a", "options": ["a"]}', "input is empty"),
    ('{"task": "mnli", "input": "x", "output": "a", "options": ["a"]}', "task 'mnli' in the folder of task 'cb'"),
]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("metaicl: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("bad, says", BAD_LINES, ids=[s.split(":")[0][:24] for _, s in BAD_LINES])
def test_a_bad_task_line_is_one_error_naming_file_and_line_before_anything_runs(ray_session, tmp_path,
                                                                               tiny_hf_model, capsys, bad, says):
    """Issue 19: task files were read inside the evaluation's Ray task, so a bad line came wrapped in Ray's
    traceback; the stage now reads what it will use before the run directory exists."""
    import shutil

    tasks = tmp_path / "tasks"
    shutil.copytree(ROOT / "data" / "icl" / "cb", tasks / "cb")
    test_file = tasks / "cb" / "cb_test.jsonl"
    lines = test_file.read_text().splitlines()
    test_file.write_text("\n".join([*lines[:5], bad, *lines[6:]]) + "\n")
    args = [REAL, f"lm.name_or_path={tiny_hf_model}", "lm.context_length=512", "episodes.max_length=512",
            f"tasks.path={tasks}", "tasks.meta_train=[]", "tasks.eval=[cb]", "eval.methods=[zero_shot]",
            "eval.use_gpu=false", f"out_dir={tmp_path / 'run'}"]
    assert main(["eval", *args]) == 2
    err = one_line_error(capsys)
    assert err.startswith("metaicl: config error: cb_test.jsonl: ") and says in err and f"({test_file}:6)" in err
    assert not (tmp_path / "run").exists()


def test_models_tasks_and_paths_that_are_not_what_the_config_says_are_one_error_each(ray_session, tmp_path,
                                                                                  tiny_hf_model, capsys):
    """Issue 19's corpus, the rest of the LM path's inputs: a model directory without weights or without its
    tokenizer, a task name with a path separator, a task folder that does not exist or is a file of something else."""
    import shutil

    no_weights, no_tokenizer = tmp_path / "no-weights", tmp_path / "no-tokenizer"
    shutil.copytree(tiny_hf_model, no_weights)
    (no_weights / "model.safetensors").unlink()
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_hf_model / name, no_tokenizer / name)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a task file\n")
    base = [REAL, "lm.context_length=512", "episodes.max_length=512", "tasks.meta_train=[]", "eval.use_gpu=false",
            "eval.methods=[zero_shot]", f"out_dir={tmp_path / 'run'}"]
    model = f"lm.name_or_path={tiny_hf_model}"
    cases = [([f"lm.name_or_path={no_weights}"], "lm.name_or_path: ", "has no weights"),
             ([f"lm.name_or_path={no_tokenizer}"], "lm.name_or_path: ", "no tokenizer in"),
             ([model, "tasks.eval=[../cb]"], "tasks: ", "unknown task(s) ['../cb']"),
             ([model, f"tasks.path={tmp_path / 'nowhere'}", "tasks.eval=[cb]"], "tasks: ", "not found"),
             ([model, f"tasks.path={notes}", "tasks.eval=[cb]"], "notes.txt: ", "malformed JSON")]
    for extra, key, says in cases:
        assert main(["eval", *base, *extra]) == 2, extra
        err = one_line_error(capsys)
        assert err.startswith(f"metaicl: config error: {key}") and says in err, (extra, err)
    assert not (tmp_path / "run").exists()


def test_a_data_directory_changed_since_it_was_built_is_one_error_before_training(ray_session, tmp_path, capsys):
    """Issue 19: integrity on read. A shard truncated (a copy cut short) or changed at the same size (bit rot)
    is found against the manifest's sha256 before a stage trains on it; nothing of the run is written."""
    data = tmp_path / "data"
    args = [SYNTHETIC, f"data_root={data}", *TINY_SYNTHETIC, "tasks=null", "eval.methods=[]"]
    assert main(["data", "build", *args]) == 0  # into data_root, where a run looks for it
    shard = sorted(data.glob("metaicl-synthetic-*/zipf-*.parquet"))[0]
    original = shard.read_bytes()
    for damaged in (original[: len(original) // 2], original[:100] + bytes([original[100] ^ 1]) + original[101:]):
        shard.write_bytes(damaged)
        assert main(["run", *args, f"out_dir={tmp_path / 'again'}"]) == 1
        err = one_line_error(capsys)
        assert f"data directory {shard.parent} is damaged: {shard.name} differs from its manifest" in err
        assert not (tmp_path / "again").exists()
    shard.write_bytes(original)
    (shard.parent / "blend.parquet").unlink()
    assert main(["run", *args, f"out_dir={tmp_path / 'again'}"]) == 1
    assert "blend.parquet is missing" in one_line_error(capsys)


def test_an_error_raised_inside_a_ray_task_is_its_own_one_line_message(ray_session):
    import ray

    from metaicl.cli import message
    from metaicl.core.errors import ConfigError

    def fails():
        raise ConfigError("eval.k", "cannot draw 99 demonstrations", where="cb_train.jsonl")

    with pytest.raises(ConfigError) as caught:  # Ray's RayTaskError subclasses the error's class
        ray.get(ray.remote(fails).remote())
    assert "ray::fails()" in str(caught.value) and len(str(caught.value).splitlines()) > 1  # its remote stack
    assert message(caught.value) == "config error: eval.k: cannot draw 99 demonstrations (cb_train.jsonl)"


def test_any_other_error_inside_a_ray_task_is_one_line_and_its_traceback_is_kept(ray_session, tmp_path):
    """Issue 19: an error that is not a config error (a full disk, a library's error), raised in a Ray task, was
    Ray's multi-screen traceback; now one line with the error and where the traceback was written. An error of
    the driver itself (a bug here) still raises."""
    from pathlib import Path

    import ray

    from metaicl.cli import remote_failure

    def fails():
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError) as caught:
        ray.get(ray.remote(fails).remote())
    line = remote_failure(caught.value)
    assert line.startswith("OSError: [Errno 28] No space left on device (inside a Ray task; its traceback: ")
    log = Path(line.rsplit(": ", 1)[1].rstrip(")"))
    assert "ray::fails()" in log.read_text() and "No space left" in log.read_text()
    log.unlink()
    assert remote_failure(OSError(28, "local")) is None


def test_metatraining_on_the_real_tasks_text_episodes_runs_and_saves_the_model(tmp_path, tiny_hf_model):
    from metaicl.core.config import load_config
    from metaicl.experiment import ExperimentConfig
    from metaicl.train.config import TrainConfig
    from metaicl.train.lm import EpisodeData, LMStage

    cfg, _ = load_config(ExperimentConfig, REAL, [f"lm.name_or_path={tiny_hf_model}", "lm.context_length=512",
                                                    "episodes.max_length=512", "episodes.max_length_per_example=64"])
    data = EpisodeData(str(ROOT / "data" / "icl"), ["sst2", "mr"], cfg.episodes, k=2, tokenizer=str(tiny_hf_model))
    stage = LMStage("metaicl", str(tmp_path / "meta"), cfg.lm, TrainConfig(steps=2, batch_size=2, eval_every=2,
                                                                              warmup_steps=1), episodes=data)
    history = stage.run()
    assert stage.done and {h["step"] for h in history} == {0, 2}
    assert (tmp_path / "meta" / "model" / "model.safetensors").exists()


def test_stage_commands_need_an_lm_experiment_and_mixtures_need_a_model(tmp_path, capsys):
    assert main(["train", str(ROOT / "configs" / "quickstart.yaml"), f"out_dir={tmp_path / 'x'}"]) == 2
    assert "needs an `lm:` group" in capsys.readouterr().err
    assert main(["run", str(ROOT / "configs" / "data" / "zipf_alpha.yaml"), f"out_dir={tmp_path / 'y'}"]) == 2
    assert "add an `lm:` group" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_every_method_of_the_table_gives_rows(tmp_path):
    """All eleven rows, each scored by its model (here one tiny random LM stands in for every variant)."""
    from metaicl.data.episodes import EpisodeConfig
    from metaicl.data.tokenizer import TokenizerSpec
    from metaicl.eval.evaluate import evaluate_variant
    from metaicl.eval.methods import variants_needed
    from metaicl.eval.config import EvalConfig
    from metaicl.experiment import FinetuneConfig
    from metaicl.models.lm import LMConfig, build_lm, save_lm
    from pretrain_data.task_families import TaskFamiliesConfig, build_task_families

    info = build_task_families(TaskFamiliesConfig(meta_train_families=[], eval_families=["last_token"],
                                                  eval_tasks_per_family=2, train_examples=6, test_examples=6,
                                                  input_length=2), (1, 40), tmp_path / "tasks")
    save_lm(build_lm(LMConfig(context_length=64), vocab_size=40), tmp_path / "model")
    cfg = EvalConfig(k=[2, 4], seeds=[100, 13])
    episodes = EpisodeConfig(input_sep=" ", example_sep="\n", max_length=64)
    rows = []
    for variant in variants_needed(list(METHODS)):
        methods = [m for m in METHODS if METHODS[m].model == variant]
        rows += evaluate_variant(variant, str(tmp_path / "model"), methods, str(tmp_path / "tasks"),
                                 info["splits"]["eval"], cfg, episodes, FinetuneConfig(steps=1),
                                 TokenizerSpec(**info["tokenizer"]))
    results = pd.DataFrame(rows)
    oracle = results[results.metric == "oracle_accuracy"]  # once per (k, task, seed), whichever methods ran
    assert len(oracle) == 2 * 2 * 2 and oracle.method.isna().all() and oracle.value.between(0, 1).all()
    results = results[results.metric != "oracle_accuracy"]
    trained = results[results.metric == "trained_params"]  # each fine-tune, per (k, task, seed): every weight here
    assert len(trained) == 2 * 2 * 2 * 2 and set(trained.method) == {"finetune", "finetune_metatrain"}
    assert (trained.value == sum(p.numel() for p in build_lm(LMConfig(context_length=64), 40).parameters())).all()
    results = results[results.metric != "trained_params"]
    assert set(results.method) == set(METHODS)
    per = results.groupby("method").k.agg(set)
    assert all(per[m] == ({0} if not (METHODS[m].demos or METHODS[m].finetune) else {2, 4}) for m in METHODS)
    table = results[results.metric.isin(["macro_f1", "accuracy"])]
    assert len(table) == sum(len(per[m]) for m in METHODS) * 2 * 2 * 2 * 2  # k x tasks x seeds x scoring x metric
    assert results.value.between(0, 1).all()
    # label-space mass: every direct, uncalibrated method (0-shot, in-context, MetaICL, multi-task 0-shot, the two
    # fine-tunes), per (k, task, seed); its in-context share where demonstrations are in the context
    mass = results[results.metric == "label_mass"]
    direct = [m for m, o in METHODS.items() if o.method == "direct" and not o.pmi]
    assert sorted(mass.method.unique()) == sorted(direct)
    assert len(mass) == sum(len(per[m]) for m in direct) * 2 * 2
    assert set(results[results.metric == "context_label_share"].method) == {"in_context", "metaicl"}
