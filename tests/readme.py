"""Helpers of the README-command tests (tests/test_readme_commands.py, tests/test_readme_sweeps.py).

The standing rule: **a command shown in README is a command that works as shown.** Tests that call the code with
absolute temporary paths once hid a sweep that failed for every user; so every `metaicl` line of README's code
blocks runs in a fresh copy of the repository, from its root, with the default relative paths (`runs/`,
`runs/data/`). The installed `metaicl` entry point, in a process of its own, runs `--help`, the bad-input lines, the
dry run, the first run a new user makes (`metaicl run configs/tiny.yaml`: its own Ray started and stopped), and
the commands that start no Ray; the other commands that start a Ray run through `metaicl.cli.main` (what the entry
point calls, same argv) in the test process on the session's Ray (`metaicl_here`), which saves a Ray start, cold
workers and a Ray stop each (~10-20 s on 2 cores: the suite's budget). A line too big for the test budget gets toy-size overrides
(`TOY`, placed before README's own arguments, so README's settings win); paths are never overridden. A line that
cannot run here (it needs a cluster's address) is in `NOT_RUN`, with the test that covers it. A new README command
that is neither run nor excused fails `test_every_readme_command_is_run_or_excused`.
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

EXE = str(Path(sys.executable).with_name("metaicl"))
PLACEHOLDER = "1a2b3c4d"  # README writes a run's or data directory's hash as this; the test finds the real one

TINY_SPINE = ["data.num_classes=64", "data.num_labels=8", "data.item_dim=8", "data.num_novel_classes=16",
              "data.train_sequences=512", "data.eval_sequences=64", "data.shard_size=256", "model.d_model=16",
              "model.mlp_ratio=1", "model.readout_hidden=16", "train.steps=12", "train.batch_size=16",
              "train.eval_every=6", "train.warmup_steps=2"]
TINY_LM = ["pretrain.token_budget=16384", "pretrain.windows_per_shard=128", "train.steps=4", "train.batch_size=8",
           "train.warmup_steps=1", "train.eval_every=2", "tasks.synthetic.tasks_per_family=2",
           "tasks.synthetic.eval_tasks_per_family=2", "tasks.synthetic.train_examples=12",
           "tasks.synthetic.test_examples=6", "metatrain.steps=3", "metatrain.batch_size=4", "metatrain.k=2",
           "metatrain.warmup_steps=1", "metatrain.eval_every=3", "finetune.steps=2", "eval.k=[2]",
           "eval.seeds=[100,13]", "episodes.max_length=64", "lm.context_length=64",
           "eval.methods=[zero_shot,in_context,pmi_in_context,metaicl]"]
DATA_BUDGET = {"zipf_alpha": 131072, "long_tail": 131072, "ordering": 65536, "ginc": 65536, "two_source": 65536,
               "function_class": 41 * 3000}
TOY = {"configs/quickstart.yaml": TINY_SPINE,
       "configs/sweeps/burstiness_zipf.yaml": [*TINY_SPINE, "sweep.grid={data.burstiness: [0, 2], "
                                                            "data.zipf_alpha: [0.0]}"],
       "configs/metaicl_synthetic.yaml": TINY_LM,
       "configs/sweeps/mixture_icl.yaml": ["pretrain.token_budget=16384", "pretrain.windows_per_shard=128",
                                           "train.steps=4", "train.batch_size=8", "train.warmup_steps=1",
                                           "train.eval_every=2", "sweep.seeds=[0]",
                                           "sweep.points=[{pretrain.sources.zipf.zipf_lm.related_docs: 1.0, "
                                           "pretrain.sources.zipf.zipf_lm.doc_length: 24, "
                                           "pretrain.sources.zipf.transforms: [{name: dependency_order}]}]"],
       "configs/demonstrations.yaml": ["pretrain.token_budget=16384", "pretrain.windows_per_shard=128",
                                       "train.steps=4", "train.batch_size=8", "train.warmup_steps=1",
                                       "train.eval_every=2", "lm.context_length=64",
                                       "tasks.synthetic.eval_tasks_per_family=2", "tasks.synthetic.train_examples=12",
                                       "tasks.synthetic.test_examples=6", "metatrain.steps=3", "metatrain.batch_size=4",
                                       "metatrain.k=2", "metatrain.warmup_steps=1", "metatrain.eval_every=3",
                                       "metatrain.task_curriculum.steps=1", "finetune.steps=2", "eval.seeds=[100,13]",
                                       "sweep.points=[{eval.demos.selection: random, eval.k: [1, max]}, "
                                       "{eval.demos.selection: bm25, eval.demos.labels: random, eval.k: [1, max]}, "
                                       "{eval.methods: [finetune], eval.k: [2], finetune.method: lora}]"],
       "configs/regression_icl.yaml": ["pretrain.token_budget=2048", "train.steps=4", "train.eval_every=2",
                                       "eval.regression.prompts=16"],
       **{f"configs/data/{name}.yaml": [f"pretrain.token_budget={n}"] for name, n in DATA_BUDGET.items()}}
"""Toy-size overrides per config: the same pipeline, seconds instead of minutes. They change sizes, never paths."""
NOT_RUN = {"submit": "needs a cluster's address: tests/test_jobs.py submits to a head it starts on loopback",
           "jobs": "needs a submitted job: tests/test_jobs.py asks a loopback head for status, logs and stop"}


def readme_commands() -> list[tuple[str, str | None]]:
    """Every `metaicl ...` line of README's code blocks, comments and line continuations removed; for a `$ ` line,
    the output line README shows under it."""
    out = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", (ROOT / "README.md").read_text(), re.S):
        lines = [line.strip() for line in block.replace("\\\n", " ").splitlines()]
        for i, line in enumerate(lines):
            prompt = line.startswith("$ metaicl ")
            if line.startswith("metaicl ") or prompt:
                command = re.split(r"\s#\s", line.removeprefix("$ "))[0].strip()
                out.append((" ".join(command.split()), lines[i + 1] if prompt else None))
    return out


def typed(command: str, repo: Path, toy: bool = True) -> list[str]:
    """argv of a README command: placeholders replaced by the directory they stand for (relative, as a user
    would type it), toy sizes added."""
    args = shlex.split(command)[1:]
    for i, arg in enumerate(args):
        if PLACEHOLDER in arg:
            key, eq, path = arg.rpartition("=")
            stem, _, rest = path.partition(PLACEHOLDER)
            found = sorted(repo.glob(stem + "[0-9a-f]" * 8))
            assert found, f"nothing matches {path} in the repository copy"
            args[i] = f"{key}{eq}{found[0].relative_to(repo)}{rest}"
    config = next((i for i, a in enumerate(args) if a.endswith(".yaml")), None)
    if config is not None and toy:
        args[config + 1:config + 1] = TOY.get(args[config], [])
    return [EXE, *args]


def metaicl(command: str, repo: Path, ok: bool = True, toy: bool = True) -> subprocess.CompletedProcess:
    """The command through the installed entry point, in a process of its own (it starts and stops its own Ray)."""
    proc = subprocess.run(typed(command, repo, toy), capture_output=True, text=True, cwd=repo, timeout=600)
    if ok:
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def metaicl_here(command: str, repo: Path) -> subprocess.CompletedProcess:
    """The command through `metaicl.cli.main` (what the entry point calls), in this process, from the copy's root,
    on the session's Ray (the caller asks for the `ray_session` fixture): the same argv, relative paths and code,
    without a Ray start, a cold worker and a Ray stop (~10-20 s a command on 2 cores). Its output, as the entry
    point's would be."""
    import contextlib
    import io

    from metaicl.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = typed(command, repo)[1:]
    with contextlib.chdir(repo), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    proc = subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())
    assert code == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def matches(command: str, prefix: str) -> bool:
    """`prefix` starts the command (a trailing space: the command is exactly the prefix, or goes on after it)."""
    return command.startswith(prefix) or command == prefix.rstrip()


def line(prefix: str) -> str:
    """The one README command that starts with `prefix`."""
    found = [c for c, shown in readme_commands() if matches(c, prefix) and shown is None]
    assert len(found) == 1, f"README should show exactly one command starting {prefix!r}, found {found}"
    return found[0]


RUN = ("metaicl --help", "metaicl run configs/tiny.yaml", "metaicl run configs/quickstart.yaml",
       "metaicl data build configs/quickstart.yaml", "metaicl data stats runs/data/", "metaicl data show runs/data/",
       "metaicl data build configs/data/zipf_alpha.yaml", "metaicl data build configs/data/ordering.yaml",
       "metaicl data stats runs/ord/", "metaicl data show runs/ord/", "metaicl run configs/metaicl_synthetic.yaml",
       "metaicl train configs/metaicl_synthetic.yaml", "metaicl metatrain configs/metaicl_synthetic.yaml",
       "metaicl eval configs/metaicl_synthetic.yaml", "metaicl sweep configs/sweeps/burstiness_zipf.yaml",
       "metaicl sweep configs/sweeps/metaicl_tiny.yaml", "metaicl sweep configs/sweeps/mixture_icl.yaml",
       "metaicl sweep configs/demonstrations.yaml",
       "metaicl run configs/regression_icl.yaml", "metaicl aggregate runs/burstiness_zipf-sweep", "metaicl report runs/burstiness_zipf-sweep",
       "metaicl aggregate runs ", "metaicl report runs ")
"""README lines (by prefix) the tests below run; `$ ` lines (bad input and what it prints) run in
test_bad_input_prints_what_readme_shows; `metaicl run configs/regression_icl.yaml` runs in tests/test_regression.py,
typed the same way in a fresh copy, through `metaicl.cli.main` on the session's Ray."""




def fresh_copy(parent: Path) -> Path:
    """A fresh copy of the repository (what a clone has: no .venv, no runs/)."""
    copy = parent / "metaicl"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "__pycache__", "*.egg-info",
                                                              ".pytest_cache", ".whl", "build"))
    return copy
