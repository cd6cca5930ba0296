"""Synthetic task families (MetaICL meta-train / held-out splits): each family's rule holds on every example, the
collection is deterministic, balanced, inside its token range and in the collection format."""
from __future__ import annotations

import json
from collections import Counter

import pytest

import pretrain_data.task_families as tf
from metaicl.core.errors import ConfigError
from pretrain_data.manifest import Manifest
from pretrain_data.task_families import (FAMILIES, READERS, TaskFamiliesConfig, build_task_families, family,
                                         leakage, make_task, rule_of, sample_split, token_range_of)

RANGE = (100, 400)
SMALL = dict(tasks_per_family=3, eval_tasks_per_family=2, train_examples=30, test_examples=24, input_length=6)


def small(**kw) -> TaskFamiliesConfig:
    return TaskFamiliesConfig(**{**SMALL, **kw})


def read_split(root, task, split):
    return [json.loads(line) for line in (root / task / f"{task}_{split}.jsonl").read_text().splitlines()]


def examples(root, task):
    return read_split(root, task, "train") + read_split(root, task, "test")


def files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def every_family(tmp_path_factory):
    """One collection holding tasks of every registered family (the last one held out)."""
    root = tmp_path_factory.mktemp("tasks") / "all"
    names = list(FAMILIES)
    cfg = small(meta_train_families=names[:-1], eval_families=names[-1:])
    return cfg, root, build_task_families(cfg, RANGE, root)


def key_classes(task):
    """token -> class index of the task's key tokens."""
    return {int(t): c for c, row in enumerate(task.keys) for t in row}


def check_rule(name, tokens, cls, keys):
    found = [(i, keys[t]) for i, t in enumerate(tokens) if t in keys]
    if name == "last_token":
        return found == [(len(tokens) - 1, cls)]
    if name == "first_token":
        return found == [(0, cls)]
    if name == "middle_token":
        return found == [(len(tokens) // 2, cls)]
    if name == "keyword":
        return len(found) == 1 and found[0][1] == cls
    if name == "majority":
        owners = [c for _, c in found]
        return len(owners) == len(tokens) and 2 * owners.count(cls) > len(tokens)
    if name == "pair":
        return len(found) == 2 and found[0][1] == cls and found[1][1] != cls
    raise AssertionError(f"no check written for family {name}")


@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_familys_rule_holds_on_every_example(every_family, name):
    cfg, root, info = every_family
    assert info["families"][name], rule_of(name)
    for index, task_name in enumerate(info["families"][name]):
        task = make_task(cfg, RANGE, name, index)
        assert task.name == task_name
        labels, keys = [str(t) for t in task.labels], key_classes(task)
        for ex in examples(root, task_name):
            tokens = [int(t) for t in ex["input"].split()]
            assert len(tokens) == cfg.input_length
            assert check_rule(name, tokens, labels.index(ex["output"]), keys), (rule_of(name), ex)


@pytest.mark.parametrize("name,position", [("last_token", -1), ("first_token", 0), ("middle_token", 3)])
def test_a_position_token_never_maps_to_two_labels_within_a_task(every_family, name, position):
    _, root, info = every_family
    for task_name in info["families"][name]:
        seen = {}
        for ex in examples(root, task_name):
            seen.setdefault(ex["input"].split()[position], set()).add(ex["output"])
        assert all(len(outs) == 1 for outs in seen.values())
        assert len({o for outs in seen.values() for o in outs}) == 3  # and every class occurs


@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_familys_reader_answers_every_example_of_its_family(every_family, name):
    """A family's reader (its rule applied to any input) is what measures leakage: on its own family it is right
    every time."""
    cfg, _, info = every_family
    for index in range(len(info["families"][name])):
        task = make_task(cfg, RANGE, name, index)
        for split, n in (("train", cfg.train_examples), ("test", cfg.test_examples)):
            inputs, classes = sample_split(cfg, task, index, split, n)
            assert (READERS[name](task, inputs) == classes).all()


def test_leakage_says_which_meta_training_rule_answers_a_held_out_family(tmp_path):
    """Issue 15: keyword's rule (a key anywhere) answers every last_token and middle_token query, so meta-training on
    keyword teaches them; first_token's and majority's rules answer none (their key position holds filler, and one
    key is no majority). families.json carries the table per held-out task."""
    cfg = small(meta_train_families=["first_token", "keyword", "majority"], eval_families=["last_token",
                                                                                           "middle_token"])
    shares = leakage(cfg, RANGE)
    assert sorted(shares) == ["last_token_000", "last_token_001", "middle_token_000", "middle_token_001"]
    assert all(s == {"first_token": 0.0, "keyword": 1.0, "majority": 0.0} for s in shares.values())
    assert build_task_families(cfg, RANGE, tmp_path / "t")["leakage"] == shares
    held_out = small(meta_train_families=["first_token", "majority"], eval_families=["middle_token"])
    assert max(v for s in leakage(held_out, RANGE).values() for v in s.values()) == 0.0


def test_same_config_writes_byte_identical_files(tmp_path):
    a = build_task_families(small(), RANGE, tmp_path / "a")
    b = build_task_families(small(), RANGE, tmp_path / "b")
    assert a == b and files(tmp_path / "a") == files(tmp_path / "b")
    assert len(files(tmp_path / "a")) == 1 + 2 * (3 * 3 + 2)


def test_another_seed_gives_other_tasks(tmp_path):
    build_task_families(small(), RANGE, tmp_path / "a")
    build_task_families(small(seed=1), RANGE, tmp_path / "b")
    fa, fb = files(tmp_path / "a"), files(tmp_path / "b")
    assert fa.keys() == fb.keys()
    assert all(fa[k] != fb[k] for k in fa if k.endswith(".jsonl"))


def test_resizing_the_training_pool_leaves_test_examples_unchanged(tmp_path):
    build_task_families(small(), RANGE, tmp_path / "a")
    build_task_families(small(train_examples=45), RANGE, tmp_path / "b")
    fa, fb = files(tmp_path / "a"), files(tmp_path / "b")
    assert {k for k in fa if fa[k] != fb[k]} == {k for k in fa if k.endswith("_train.jsonl") or k == "families.json"}


def test_classes_are_balanced_in_train_and_test(every_family):
    cfg, root, info = every_family
    for task_name in info["splits"]["meta_train"] + info["splits"]["eval"]:
        for split, n in (("train", cfg.train_examples), ("test", cfg.test_examples)):
            counts = Counter(ex["output"] for ex in read_split(root, task_name, split))
            assert len(counts) == cfg.num_classes and sum(counts.values()) == n
            assert set(counts.values()) == {n // cfg.num_classes}  # 30 and 24 split exactly in 3


def test_uneven_pools_are_balanced_to_within_one(tmp_path):
    info = build_task_families(small(train_examples=31), RANGE, tmp_path)
    for task_name in info["splits"]["meta_train"]:
        counts = Counter(ex["output"] for ex in read_split(tmp_path, task_name, "train"))
        assert sorted(counts.values()) == [10, 10, 11]


def test_splits_are_disjoint_and_as_configured(tmp_path):
    cfg = small(meta_train_families=["keyword", "majority"], eval_families=["first_token", "last_token"])
    info = build_task_families(cfg, RANGE, tmp_path)
    train, held_out = info["splits"]["meta_train"], info["splits"]["eval"]
    assert not set(train) & set(held_out)
    assert train == [f"{f}_{i:03d}" for f in ("keyword", "majority") for i in range(3)]
    assert held_out == [f"{f}_{i:03d}" for f in ("first_token", "last_token") for i in range(2)]
    assert list(info["families"]) == ["keyword", "majority", "first_token", "last_token"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted(train + held_out)
    on_disk = json.loads((tmp_path / "families.json").read_text())
    assert on_disk == info and on_disk["token_range"] == list(RANGE) and on_disk["config"]["seed"] == 0


def test_every_token_id_lies_in_the_token_range(every_family):
    _, root, info = every_family
    ids = [int(t) for task_name in info["splits"]["meta_train"] + info["splits"]["eval"]
           for ex in examples(root, task_name) for t in ex["input"].split() + ex["options"]]
    assert RANGE[0] <= min(ids) and max(ids) < RANGE[1]
    assert max(ids) - min(ids) > (RANGE[1] - RANGE[0]) // 2  # filler spreads over the range


def test_label_words_differ_across_tasks_so_no_word_is_always_the_answer(tmp_path):
    info = build_task_families(small(tasks_per_family=12), (1, 4097), tmp_path)
    tasks = info["splits"]["meta_train"] + info["splits"]["eval"]
    options = [read_split(tmp_path, t, "test")[0]["options"] for t in tasks]
    answers = Counter(ex["output"] for t in tasks for ex in read_split(tmp_path, t, "test"))
    assert len({w for opts in options for w in opts}) > 0.9 * 3 * len(tasks)
    assert max(answers.values()) <= 2 * 24 // 3  # no word answers more than its share in ~one task or two


def test_label_words_are_distinct_and_never_key_or_filler_tokens(every_family):
    cfg, root, info = every_family
    for name, task_names in info["families"].items():
        for index in range(len(task_names)):
            task = make_task(cfg, RANGE, name, index)
            labels, keys = set(task.labels.tolist()), set(task.keys.ravel().tolist())
            assert len(labels) == cfg.num_classes and len(keys) == cfg.num_classes * cfg.keys_per_class
            assert not labels & keys and not (labels | keys) & set(task.filler.tolist())
            assert len(task.filler) == RANGE[1] - RANGE[0] - len(labels) - len(keys)


def test_output_passes_the_collection_format(every_family):
    _, root, info = every_family
    for task_name in info["splits"]["meta_train"] + info["splits"]["eval"]:
        rows = examples(root, task_name)
        assert rows and all(list(ex) == ["task", "input", "output", "options"] for ex in rows)
        assert all(ex["task"] == task_name and ex["output"] in ex["options"] for ex in rows)
        assert len({tuple(ex["options"]) for ex in rows}) == 1
        assert all(all(w.isdigit() for w in ex["input"].split() + ex["options"]) for ex in rows)


def test_filler_follows_a_zipf_law_whose_exponent_is_the_config(tmp_path):
    def top_share(alpha):
        cfg = small(filler_alpha=alpha, test_examples=600, eval_families=["last_token"])
        info = build_task_families(cfg, (1, 1001), tmp_path / str(alpha))
        rows = read_split(tmp_path / str(alpha), info["splits"]["eval"][0], "test")
        counts = Counter(t for ex in rows for t in ex["input"].split()[:-1])
        return max(counts.values()) / sum(counts.values())

    assert top_share(0.0) < 0.02 < 0.1 < top_share(1.0)  # uniform: 1/1000 each; Zipf(1): 1/H_1000 ~ 0.13


def test_a_newly_registered_family_can_be_held_out(tmp_path, monkeypatch):
    monkeypatch.setattr(tf, "FAMILIES", dict(FAMILIES))

    @family("second_token", min_length=2)
    def second_token(task, classes, rng, length):
        """The second input token is a key token of the class."""
        x = task.fill(rng, (len(classes), length))
        x[:, 1] = task.key(rng, classes)
        return x

    info = build_task_families(small(eval_families=["second_token"]), RANGE, tmp_path)
    assert tf.rule_of("second_token").startswith("The second input token")
    assert info["splits"]["eval"] == ["second_token_000", "second_token_001"]


def test_unknown_family_is_a_config_error_naming_eval_families(tmp_path):
    with pytest.raises(ConfigError) as err:
        build_task_families(small(eval_families=["nli"]), RANGE, tmp_path / "out")
    assert err.value.key == "tasks.synthetic.eval_families"
    assert "nli" in err.value.message and "last_token" in err.value.message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kw,key", [
    (dict(eval_families=["keyword"]), "tasks.synthetic.eval_families"),
    (dict(eval_families=[]), "tasks.synthetic.eval_families"),
    (dict(meta_train_families=["keyword", "keyword"]), "tasks.synthetic.meta_train_families"),
    (dict(num_classes=1), "tasks.synthetic.num_classes"),
    (dict(test_examples=2), "tasks.synthetic.test_examples"),
    (dict(eval_families=["pair"], input_length=1), "tasks.synthetic.input_length"),
    (dict(filler_alpha=-1.0), "tasks.synthetic.filler_alpha"),
])
def test_bad_configs_are_config_errors_naming_the_key(kw, key):
    with pytest.raises(ConfigError) as err:
        small(**kw).validate()
    assert err.value.key == key


@pytest.mark.parametrize("token_range", [(1, 10), (0, 300)])
def test_a_token_range_too_small_or_holding_the_boundary_is_a_config_error(tmp_path, token_range):
    with pytest.raises(ConfigError) as err:
        build_task_families(small(), token_range, tmp_path)
    assert err.value.key == "tasks.synthetic.token_range"


def test_rebuilding_replaces_a_collection_but_never_another_directory(tmp_path):
    build_task_families(small(), RANGE, tmp_path / "tasks")
    build_task_families(small(eval_tasks_per_family=1), RANGE, tmp_path / "tasks")
    assert not (tmp_path / "tasks" / "last_token_001").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a task collection"):
        build_task_families(small(), RANGE, tmp_path / "other")
    assert (tmp_path / "other" / "keep.txt").read_text() == "mine"


def test_token_range_of_a_source_is_its_offset_and_vocabulary(tmp_path):
    manifest = Manifest(kind="mixture", config={}, config_hash="x", vocab_size=5121, sources={
        "zipf": {"kind": "zipf_lm", "offset": 1, "vocab_size": 4096},
        "ginc": {"kind": "ginc", "offset": 4097, "vocab_size": 1024}})
    assert token_range_of(manifest, "ginc") == (4097, 5121)
    manifest.write(tmp_path / "manifest.json")
    assert token_range_of(tmp_path, "zipf") == (1, 4097)
    with pytest.raises(ConfigError) as err:
        token_range_of(tmp_path, "text")
    assert "'text'" in err.value.message and "ginc, zipf" in err.value.message
    assert err.value.where == str(tmp_path / "manifest.json")


def test_a_shared_answer_vocabulary_holds_every_label_word_and_no_key(tmp_path):
    cfg = TaskFamiliesConfig(label_words=6, tasks_per_family=4)
    tasks = [make_task(cfg, (1, 500), f, i) for f in cfg.meta_train_families for i in range(4)]
    labels = {int(w) for t in tasks for w in t.labels}
    assert labels <= set(range(1, 7)) and len(labels) > cfg.num_classes  # shared words, random mapping per task
    assert all(t.keys.min() >= 7 and not set(t.filler.tolist()) & labels for t in tasks)
    with pytest.raises(ConfigError, match="label_words"):
        TaskFamiliesConfig(label_words=2).validate(token_range=(1, 500))


def test_a_fresh_task_of_an_index_has_the_collections_examples_made_when_read(every_family):
    """metatrain.fresh_tasks makes a task on the fly from (seed, family, index): its pool equals what the
    collection writes for that index, and a record is only written when an episode reads it (issue 15: writing
    every pool's 64 records was a third of a fresh-task batch)."""
    from pretrain_data.task_families import fresh_examples

    cfg, root, info = every_family
    for name in info["splits"]["meta_train"]:
        family_name, index = name.rsplit("_", 1)
        pool = fresh_examples(cfg, RANGE, family_name, int(index), cfg.train_examples)
        assert list(pool) == read_split(root, name, "train") and pool[-1] == pool[len(pool) - 1]
    made = []
    pool = fresh_examples(cfg, RANGE, "first_token", 9, cfg.train_examples, wrap=lambda **r: made.append(r) or r)
    assert made == [] and pool[3]["task"] == "first_token_009" and len(made) == 1
    with pytest.raises(IndexError):
        pool[len(pool)]
