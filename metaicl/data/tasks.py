"""Task collections for MetaICL (Min et al. 2022): jsonl examples, checked line by line as they load.

    tasks = load_collection("data/icl", tasks=["sst2", "cb"])   # {"sst2": Task(...), "cb": Task(...)}
    demos = sample_demos(tasks["sst2"], k=16, seed=100)         # the one demonstration set of seed 100
    len(tasks["sst2"].train), len(tasks["sst2"].test)           # (1000, 500)

An example is one json object per line, `{"task", "input", "output", "options"}`, with `output` in `options`.
Two layouts load (the layout is detected from the files):
  (a) ours: `<root>/<task>/<task>_train.jsonl` (the demonstration / training pool) and `<task>_test.jsonl`
      (may be absent: meta-training tasks have none); or one jsonl of many tasks, split by its `task` field,
      with the test examples in a second file (`test_path`).
  (b) MetaICL's: `<root>/<task>/<task>_<k>_<seed>_train.jsonl` holding the k demonstrations of that seed and
      `<task>_<k>_<seed>_test.jsonl` (the same test set for every seed). The demonstrations become
      `Task.fixed_demos[(k, seed)]`, and their union (first occurrence kept) the training pool.
Every line is checked as it is read, so a bad line is reported as file:line.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from metaicl.core.errors import ConfigError
from metaicl.core.io import atomic_dir, atomic_path
from metaicl.core.seeding import rng_for

SEEDS = (100, 13, 21, 42, 87)  # the five demonstration seeds of MetaICL's evaluation (Min et al. 2022, Sec. 5)
KEYS = ("task", "input", "output", "options")


@dataclass
class Example:
    task: str
    input: str
    output: str
    options: list[str]

    def to_json(self) -> str:
        return json.dumps({k: getattr(self, k) for k in KEYS}, ensure_ascii=False)


@dataclass
class Task:
    name: str
    train: list[Example]
    """Demonstration / training pool: the k-shot demonstrations are drawn from it (MetaICL's "train" split)."""
    test: list[Example]
    """Test queries (MetaICL's "test" split)."""
    options: list[str]
    """The label set shared by every example, in file order; [] if examples carry their own options
    (multiple-choice tasks), in which case each query is scored over its own `options`."""
    fixed_demos: dict[tuple[int, int], list[Example]] = field(default_factory=dict)
    """MetaICL layout: (k, seed) -> the k demonstrations that seed's file fixes."""


def _line_error(file: Path, no: int, message: str) -> ConfigError:
    return ConfigError(file.name, message, where=f"{file}:{no}")


def _check_record(record, file: Path, no: int) -> Example:
    if not isinstance(record, dict):
        raise _line_error(file, no, f"expected a json object, got {type(record).__name__}")
    missing, extra = [k for k in KEYS if k not in record], sorted(set(record) - set(KEYS))
    if missing or extra:
        raise _line_error(file, no, f"keys must be exactly {list(KEYS)}: missing {missing}, unexpected {extra}")
    ex = Example(**record)
    if not all(isinstance(getattr(ex, k), str) for k in ("task", "input", "output")):
        raise _line_error(file, no, "task, input and output must be strings")
    if not isinstance(ex.options, list) or not ex.options or not all(isinstance(o, str) for o in ex.options):
        raise _line_error(file, no, "options must be a non-empty list of strings")
    if not ex.input.strip():
        raise _line_error(file, no, "input is empty")
    if ex.output not in ex.options:
        raise _line_error(file, no, f"output {ex.output!r} is not one of the options {ex.options}")
    return ex


def read_jsonl(path: str | Path) -> list[Example]:
    """Every line of a jsonl file, validated: it parses, has exactly the keys task/input/output/options, a
    non-empty input and an output among the options. A bad line -> ConfigError(file name, why, "file:line")."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(file.name, "file not found", where=str(file))
    examples = []
    for no, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            raise _line_error(file, no, "empty line")
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise _line_error(file, no, f"malformed JSON: {e.msg}") from e
        examples.append(_check_record(record, file, no))
    return examples


def _label_set(examples: list[Example]) -> list[str]:
    first = examples[0].options if examples else []
    return list(first) if all(e.options == first for e in examples) else []


def _check_task_field(name: str, examples: list[Example], file: Path) -> None:
    for no, ex in enumerate(examples, 1):
        if ex.task != name:
            raise _line_error(file, no, f"task {ex.task!r} in the folder of task {name!r}")


def _metaicl_files(folder: Path) -> dict[tuple[int, int], Path]:
    pattern = re.compile(rf"^{re.escape(folder.name)}_(\d+)_(\d+)_train\.jsonl$")
    found = {}
    for file in folder.iterdir():
        if m := pattern.match(file.name):
            found[int(m.group(1)), int(m.group(2))] = file
    return dict(sorted(found.items()))


def _discover(root: Path) -> dict[str, tuple[str, Path]]:
    """task name -> (layout, folder) of every task folder under root; folders of neither layout are skipped."""
    found = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (folder / f"{folder.name}_train.jsonl").is_file():
            found[folder.name] = ("ours", folder)
        elif _metaicl_files(folder):
            found[folder.name] = ("metaicl", folder)
    return found


def _select(known: list[str], wanted: list[str] | None, where: str) -> list[str]:
    if wanted is None:
        return known
    unknown = [t for t in wanted if t not in known]
    if unknown:
        raise ConfigError("tasks", f"unknown task(s) {unknown}; {where} has {known}")
    return list(dict.fromkeys(wanted))


def _plan_ours(name: str, folder: Path):
    """(files to read, how to make the Task from their examples) of a task folder of our layout."""
    train_file, test_file = folder / f"{name}_train.jsonl", folder / f"{name}_test.jsonl"
    files = [train_file] + ([test_file] if test_file.is_file() else [])

    def assemble(loaded: list[list[Example]]) -> Task:
        train, test = loaded[0], loaded[1] if len(loaded) > 1 else []
        return Task(name, train, test, _label_set(train + test))
    return files, assemble


def _plan_metaicl(name: str, folder: Path):
    """(files to read, how to make the Task from their examples) of a task folder of MetaICL's layout."""
    demo_files = _metaicl_files(folder)
    test_files = [f for f in (folder / p.name.replace("_train.jsonl", "_test.jsonl") for p in demo_files.values())
                  if f.is_file()]

    def assemble(loaded: list[list[Example]]) -> Task:
        fixed, tests = dict(zip(demo_files, loaded[: len(demo_files)])), loaded[len(demo_files):]
        for file, other in zip(test_files[1:], tests[1:]):  # MetaICL samples one test set, written per seed
            if other != tests[0]:
                raise ConfigError(file.name, f"test set differs from {test_files[0].name}; one test set per task",
                                  where=str(file))
        pool = list({e.to_json(): e for demos in fixed.values() for e in demos}.values())
        test = tests[0] if tests else []
        return Task(name, pool, test, _label_set(pool + test), fixed)
    return [*demo_files.values(), *test_files], assemble


def _load_single_file(path: Path, test_path: Path | None, tasks: list[str] | None) -> dict[str, Task]:
    train, test = read_jsonl(path), read_jsonl(test_path) if test_path else []
    names = list(dict.fromkeys(e.task for e in train + test))
    out = {}
    for name in _select(names, tasks, path.name):
        t_train, t_test = [e for e in train if e.task == name], [e for e in test if e.task == name]
        out[name] = Task(name, t_train, t_test, _label_set(t_train + t_test))
    return out


def load_collection(path: str | Path, tasks: list[str] | None = None, test_path: str | Path | None = None,
                    ) -> dict[str, Task]:
    """The tasks (all, or the named ones in that order) of a task folder of either layout, or of one jsonl file
    of many tasks (then `test_path` is the file of their test examples). Unknown names -> ConfigError."""
    path = Path(path)
    if path.is_file():
        return _load_single_file(path, Path(test_path) if test_path else None, tasks)
    if not path.is_dir():
        raise ConfigError("tasks", f"task collection {str(path)!r} not found")
    if test_path is not None:
        raise ConfigError("tasks", "test_path goes with a single jsonl file, not a task folder", where=str(path))
    found = _discover(path)
    if not found:
        raise ConfigError("tasks", f"no task folders (<task>/<task>_train.jsonl or <task>_<k>_<seed>_train.jsonl) "
                                   f"in {str(path)!r}")
    planners = {"ours": _plan_ours, "metaicl": _plan_metaicl}
    plans = {name: planners[found[name][0]](name, found[name][1]) for name in _select(list(found), tasks, str(path))}
    files = [f for fs, _ in plans.values() for f in fs]
    loaded = iter([read_jsonl(f) for f in files])  # each line parsed and checked once (file:line errors)
    out = {}
    for name, (fs, assemble) in plans.items():
        mine = [next(loaded) for _ in fs]
        for file, examples in zip(fs, mine):
            _check_task_field(name, examples, file)
        out[name] = assemble(mine)
    return out


def sample_demos(task: Task, k: int, seed: int) -> list[Example]:
    """The k demonstrations of (task, seed): MetaICL fixes one set per seed and uses it for every test query
    (Min et al. 2022, Sec. 5). Taken from `task.fixed_demos` if that file exists, else drawn from the training
    pool without replacement, keyed by (seed, task, k) alone."""
    if (k, seed) in task.fixed_demos:
        return list(task.fixed_demos[k, seed])
    if not 0 <= k <= len(task.train):
        raise ConfigError("k", f"cannot draw {k} demonstrations from the {len(task.train)} training examples of "
                               f"task {task.name!r}")
    picks = rng_for(seed, "demos", task.name, k).choice(len(task.train), size=k, replace=False)
    return [task.train[int(i)] for i in picks]


def _write_jsonl(path: Path, examples: list[Example]) -> None:
    path.write_text("".join(e.to_json() + "\n" for e in examples), encoding="utf-8")


def write_collection(tasks: dict[str, Task], root: str | Path) -> Path:
    """Write layout (a) under root, replacing it whole: the collection appears complete or not at all."""
    with atomic_dir(root) as tmp:
        for name, task in tasks.items():
            (tmp / name).mkdir()
            _write_jsonl(tmp / name / f"{name}_train.jsonl", task.train)
            _write_jsonl(tmp / name / f"{name}_test.jsonl", task.test)
    return Path(root)


def write_metaicl_layout(task: Task, root: str | Path, k: int, seeds=SEEDS) -> Path:
    """Write MetaICL's layout of one task: `<task>_<k>_<seed>_train.jsonl` (that seed's demonstrations, from
    `sample_demos`) and `<task>_<k>_<seed>_test.jsonl` (the test set) per seed. Returns the task folder."""
    folder = Path(root) / task.name
    for seed in seeds:
        for split, examples in (("train", sample_demos(task, k, seed)), ("test", task.test)):
            with atomic_path(folder / f"{task.name}_{k}_{seed}_{split}.jsonl") as tmp:
                _write_jsonl(tmp, examples)
    return folder
