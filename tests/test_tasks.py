"""Task collections: the shipped tasks, both file layouts, line-exact errors, MetaICL's fixed demonstrations."""
from __future__ import annotations

import json
import re

import pytest

from metaicl.core.errors import ConfigError
from metaicl.data.tasks import (SEEDS, Example, Task, load_collection, read_jsonl, sample_demos,
                                write_collection, write_metaicl_layout)
from tests.conftest import ROOT

ICL = ROOT / "data" / "icl"


def readme_table() -> dict[str, tuple[list[str], int, int]]:
    """task -> (label words, #train, #test) from the licence table of data/icl/README.md."""
    rows = {}
    for line in (ICL / "README.md").read_text().splitlines():
        if m := re.match(r"^\| `(\w+)` \|", line):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[m.group(1)] = (cells[3].split(" / "), int(cells[4]), int(cells[5]))
    return rows


@pytest.fixture(scope="module")
def shipped() -> dict[str, Task]:
    return load_collection(ICL)


def ex(task: str, i: int, label: str = "a") -> Example:
    return Example(task, f"input {i} of {task}", label, ["a", "b"])


def test_shipped_collection_has_the_ten_tasks_with_the_readme_counts_and_labels(shipped):
    table = readme_table()
    assert len(table) == 10 and sorted(shipped) == sorted(table)
    assert (len(shipped["sst2"].train), len(shipped["sst2"].test)) == (1000, 500)
    for name, (labels, n_train, n_test) in table.items():
        task = shipped[name]
        assert (len(task.train), len(task.test), task.options) == (n_train, n_test, labels), name
        assert all(e.task == name and e.output in task.options for e in task.train + task.test)


def test_loading_keeps_every_line_in_file_order(shipped):
    for task, split, examples in (("cb", "train", shipped["cb"].train), ("mnli", "test", shipped["mnli"].test)):
        lines = (ICL / task / f"{task}_{split}.jsonl").read_text().splitlines()
        assert [e.input for e in examples] == [json.loads(line)["input"] for line in lines]
        assert [e.output for e in examples] == [json.loads(line)["output"] for line in lines]
    assert "\n" in shipped["cb"].train[0].input  # NLI inputs keep their Premise/Hypothesis line break


def test_named_tasks_load_alone_in_the_order_asked():
    tasks = load_collection(ICL, tasks=["trec", "cb"])
    assert list(tasks) == ["trec", "cb"]


def test_unknown_task_name_is_named_with_the_known_ones():
    with pytest.raises(ConfigError) as err:
        load_collection(ICL, tasks=["sst2", "sst3"])
    assert err.value.key == "tasks" and "sst3" in err.value.message and "sst5" in err.value.message


def test_metaicl_layout_loads_with_its_fixed_demonstrations(shipped, tmp_path):
    cb = shipped["cb"]
    folder = write_metaicl_layout(cb, tmp_path, k=4, seeds=SEEDS)
    assert (folder / "cb_4_100_train.jsonl").is_file() and (folder / "cb_4_87_test.jsonl").is_file()
    loaded = load_collection(tmp_path)["cb"]
    assert sorted(loaded.fixed_demos) == sorted((4, s) for s in SEEDS)
    for seed in SEEDS:
        assert loaded.fixed_demos[4, seed] == sample_demos(cb, 4, seed)
        assert sample_demos(loaded, 4, seed) == loaded.fixed_demos[4, seed]  # the file wins over sampling
    assert loaded.test == cb.test and loaded.options == cb.options
    union = {e.input for demos in loaded.fixed_demos.values() for e in demos}
    assert {e.input for e in loaded.train} == union and len(loaded.train) == len(union)


def test_metaicl_layout_with_differing_test_sets_is_refused(shipped, tmp_path):
    cb = shipped["cb"]
    folder = write_metaicl_layout(cb, tmp_path, k=2, seeds=(100, 13))
    (folder / "cb_2_13_test.jsonl").write_text(cb.test[1].to_json() + "\n")
    with pytest.raises(ConfigError, match="test set differs"):
        load_collection(tmp_path)


def test_demonstrations_are_fixed_per_seed_distinct_and_differ_across_seeds(shipped):
    sst2 = shipped["sst2"]
    first = sample_demos(sst2, 16, 100)
    assert first == sample_demos(sst2, 16, 100)
    assert len({e.input for e in first}) == 16  # without replacement
    assert first != sample_demos(sst2, 16, 13)
    with pytest.raises(ConfigError):
        sample_demos(shipped["cb"], 251, 100)


def test_paper_seeds():
    assert SEEDS == (100, 13, 21, 42, 87)


def test_single_file_of_many_tasks_splits_by_task_field(tmp_path):
    train = [ex("t1", 0), ex("t2", 1, "b"), ex("t1", 2, "b")]
    test = [ex("t2", 3), ex("t1", 4)]
    for name, rows in (("train.jsonl", train), ("test.jsonl", test)):
        (tmp_path / name).write_text("".join(e.to_json() + "\n" for e in rows))
    tasks = load_collection(tmp_path / "train.jsonl", test_path=tmp_path / "test.jsonl")
    assert list(tasks) == ["t1", "t2"]
    assert tasks["t1"].train == [train[0], train[2]] and tasks["t1"].test == [test[1]]
    assert tasks["t2"].train == [train[1]] and tasks["t2"].test == [test[0]] and tasks["t2"].options == ["a", "b"]


def test_write_collection_round_trips_and_replaces_the_folder(tmp_path):
    tasks = {"t1": Task("t1", [ex("t1", 0), ex("t1", 1, "b")], [ex("t1", 2)], ["a", "b"])}
    root = tmp_path / "tasks"
    (root / "stale").mkdir(parents=True)
    write_collection(tasks, root)
    assert sorted(p.name for p in root.iterdir()) == ["t1"]
    assert load_collection(root) == tasks


BAD_LINES = [
    ("bad json", '{"task": "t1", "input": "x"', 3, "malformed JSON"),
    ("missing key", json.dumps({"task": "t1", "input": "x", "output": "a"}), 2, "missing ['options']"),
    ("output not in options", json.dumps({"task": "t1", "input": "x", "output": "c", "options": ["a", "b"]}), 4,
     "not one of the options"),
    ("empty input", json.dumps({"task": "t1", "input": " ", "output": "a", "options": ["a"]}), 1, "input is empty"),
]


@pytest.mark.parametrize("case, line, line_no, why", BAD_LINES, ids=[c[0] for c in BAD_LINES])
def test_a_malformed_line_is_reported_with_file_and_line(tmp_path, case, line, line_no, why):
    good = [ex("t1", i).to_json() for i in range(5)]
    good[line_no - 1] = line
    file = tmp_path / "t1" / "t1_train.jsonl"
    file.parent.mkdir()
    file.write_text("\n".join(good) + "\n")
    for load in (read_jsonl, lambda f: load_collection(tmp_path)):
        with pytest.raises(ConfigError) as err:
            load(file)
        assert err.value.key == "t1_train.jsonl" and err.value.where == f"{file}:{line_no}"
        assert why in err.value.message


def test_an_example_filed_under_another_task_is_reported_with_its_line(tmp_path):
    file = tmp_path / "t1" / "t1_train.jsonl"
    file.parent.mkdir()
    file.write_text(ex("t1", 0).to_json() + "\n" + ex("t9", 1).to_json() + "\n")
    with pytest.raises(ConfigError) as err:
        load_collection(tmp_path)
    assert err.value.where == f"{file}:2" and "t9" in err.value.message
