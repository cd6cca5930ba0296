"""README's commands, typed as a user types them.

The standing rule: **a command shown in README is a command that works as shown.** Tests that call the code with
absolute temporary paths once hid a sweep that failed for every user; so here every `metaicl` line of README's
code blocks runs in a fresh copy of the repository, from its root, through the installed `metaicl` entry point,
with the default relative paths (`runs/`, `runs/data/`). A line too big for the test budget gets toy-size
overrides (`TOY`, placed before README's own arguments, so README's settings win); paths are never overridden.
A line that cannot run here (it needs a cluster's address) is in `NOT_RUN`, with the test that covers it.
A new README command that is neither run nor excused fails `test_every_readme_command_is_run_or_excused`.
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cluster.results import RESULT_COLUMNS
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
    proc = subprocess.run(typed(command, repo, toy), capture_output=True, text=True, cwd=repo, timeout=600)
    if ok:
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
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
       "metaicl sweep configs/sweeps/metaicl_tiny.yaml",
       "metaicl aggregate runs/burstiness_zipf-sweep", "metaicl report runs/burstiness_zipf-sweep",
       "metaicl aggregate runs ", "metaicl report runs ")
"""README lines (by prefix) the tests below run; `$ ` lines (bad input and what it prints) run in
test_bad_input_prints_what_readme_shows."""


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A fresh copy of the repository (what a clone has: no .venv, no runs/)."""
    copy = tmp_path_factory.mktemp("clone") / "metaicl"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "__pycache__", "*.egg-info",
                                                              ".pytest_cache", ".whl", "build"))
    return copy


def test_every_readme_command_is_run_or_excused():
    for command, _ in readme_commands():
        subcommand = command.split()[1]
        assert subcommand in NOT_RUN or any(matches(command, p) for p in RUN), command
        for config in re.findall(r"\S+\.yaml", command):
            assert (ROOT / config).is_file() or config.startswith("/"), f"README names a missing file: {config}"


def test_help_and_bad_input_print_what_readme_shows(repo):
    assert "sweep" in metaicl(line("metaicl --help"), repo).stdout
    shown = [(c, out) for c, out in readme_commands() if out is not None]
    assert len(shown) >= 2
    for command, expected in shown:
        proc = metaicl(command, repo, ok=False, toy=False)
        assert proc.returncode == 2 and proc.stderr.strip() == expected, (command, proc.stderr)
    assert not (repo / "runs").exists()  # bad input creates nothing


def test_dry_run_prints_the_steps_and_starts_nothing(repo):
    proc = metaicl(line("metaicl run configs/quickstart.yaml"), repo)
    assert "5 of 5 steps to run" in proc.stdout and "train [bursty]" in proc.stdout
    assert f"{repo}/runs/zipf" in proc.stdout and not (repo / "runs").exists()


def test_tiny_run_writes_the_tidy_results_and_a_rerun_skips_every_stage(repo):
    first = metaicl(line("metaicl run configs/tiny.yaml"), repo)
    [out] = (repo / "runs").glob("tiny-" + "[0-9a-f]" * 8)
    results = pd.read_parquet(out / "results.parquet")
    assert list(results.columns) == RESULT_COLUMNS and set(results.run) == {out.name}
    assert set(results.arm) == {"bursty", "non_bursty"} and set(results.task) == {"icl_novel", "icl_swap", "iwl",
                                                                                    "train"}
    assert set(results.suite) == {"icl_sets", "train"} and set(results.stage) == {"train"}
    assert sorted(results.step.unique()) == [0, 6, 12] and results.value.notna().all()
    for arm in ("bursty", "non_bursty"):
        assert (out / "arms" / arm / "data_manifest.json").exists()
        assert any((out / "arms" / arm / "checkpoints").iterdir())
    report = (out / "report.md").read_text()
    assert "| bursty |" in first.stdout and "| chance |" in report and "## Training data, measured" in report
    assert (out / "icl_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"data_root: {repo}/runs/data" in (out / "config.yaml").read_text()  # resolved once, saved

    before = (out / "results.parquet").stat().st_mtime_ns
    assert "every stage is done" in metaicl(line("metaicl run configs/tiny.yaml"), repo).stdout
    assert (out / "results.parquet").stat().st_mtime_ns == before
    (out / "results.parquet").unlink()
    again = metaicl(line("metaicl run configs/tiny.yaml"), repo).stdout
    assert "data [bursty]: reusing" in again and "train [bursty]: done already, skipping" in again
    assert "train:" not in again.replace("train [", "")  # no trainer was started


def test_data_build_stats_and_show_of_the_few_shot_data(repo):
    built = metaicl(line("metaicl data build configs/quickstart.yaml"), repo)
    assert built.stdout.count("data [") == 2 and "burstiness_ratio" in built.stdout
    dirs = sorted((repo / "runs" / "data").glob("bursty_fewshot-*"))
    cards = {d: (d / "stats.json").read_text() for d in dirs}
    for d in dirs:
        (d / "stats.json").unlink()
    stats = metaicl(line("metaicl data stats runs/data/"), repo)  # README's placeholder: the first such directory
    assert "context_repeat_rate" in stats.stdout
    assert json.loads((dirs[0] / "stats.json").read_text()) == json.loads(cards[dirs[0]])  # recomputed, same card
    shown = metaicl(line("metaicl data show runs/data/"), repo).stdout.strip().splitlines()
    assert shown[0].startswith("icl_swap (") and len(shown) == 4
    assert all(" -> " in s for s in shown[1:])


def mixture_cards(repo: Path, where: str) -> dict[str, dict]:
    """arm -> statistics card of the data directories a `data build` of a multi-arm config wrote."""
    return {m.parent.name: json.loads((m.parent / "stats.json").read_text())
            for m in (repo / where).glob("*/manifest.json")}


def test_data_build_of_the_readme_mixtures_then_stats_and_show(repo):
    """README's table says what each card shows; at toy size the same directions hold."""
    metaicl(line("metaicl data build configs/data/zipf_alpha.yaml"), repo)
    report = (repo / "runs" / "zipf_alpha-data" / "report.md").read_text()
    assert report.count("| alpha_") == 4 and (repo / "runs" / "zipf_alpha-data" / "rank_frequency.png").exists()
    fitted = {float(line.split("|")[1].split("_")[1]): float(line.split("|")[4]) for line in report.splitlines()
              if line.startswith("| alpha_")}
    assert all(abs(alpha - mle) < 0.1 for alpha, mle in fitted.items()), fitted

    metaicl(line("metaicl data build configs/data/ordering.yaml"), repo)
    assert {p.name for p in (repo / "runs" / "ord").iterdir()} >= {"dependency", "random", "report.md"}
    cards = {arm: card["sources"]["wiki"] for arm, card in mixture_cards(repo, "runs/ord").items()}
    assert cards["dependency"]["adjacent_doc_similarity"] > 2 * cards["dependency"]["random_order_similarity"]
    assert abs(cards["random"]["adjacent_doc_similarity"] - cards["random"]["random_order_similarity"]) < 0.03
    assert "adjacent_doc_similarity" in metaicl(line("metaicl data stats runs/ord/"), repo).stdout
    wiki = [s for s in metaicl(line("metaicl data show runs/ord/"), repo).stdout.splitlines() if "] wiki: " in s]
    assert wiki and all(sum(ch.isalpha() for ch in s) > 50 for s in wiki)  # decoded words, not ids


def test_language_model_stages(repo):
    run = metaicl(line("metaicl run configs/metaicl_synthetic.yaml"), repo)
    [out] = [p for p in (repo / "runs").glob("metaicl_synthetic-*") if (p / "results.parquet").exists()]
    results = pd.read_parquet(out / "results.parquet")
    assert list(results.columns) == RESULT_COLUMNS
    assert set(results.stage) == {"pretrain", "metatrain/metaicl", "eval"}  # training curves and the table
    results = results[results.suite == "metaicl"]
    assert set(results.method) == {"zero_shot", "in_context", "pmi_in_context", "metaicl"}
    assert set(results.task) == {"last_token_000", "last_token_001"}  # the held-out family only
    assert set(results.seed) == {100, 13} and set(results.metric) == {"macro_f1", "accuracy"}
    assert set(results[results.method == "metaicl"].k) == {2} and set(results[results.method == "zero_shot"].k) == {0}
    assert results.value.between(0, 1).all()
    report = (out / "report.md").read_text()
    assert "| MetaICL | 2 |" in report and "| PMI In-context | 2 |" in report and "worst" in report
    assert "MetaICL" in run.stdout and (out / "metatrained" / "metaicl" / "model" / "model.safetensors").exists()
    assert not (out / "metatrained" / "channel_metaicl").exists()  # only the variants the methods need
    assert "every stage is done" in metaicl(line("metaicl run configs/metaicl_synthetic.yaml"), repo).stdout
    for stage in ("train", "metatrain"):  # one stage each: done already, and Ray is not even started
        proc = metaicl(line(f"metaicl {stage} configs/metaicl_synthetic.yaml"), repo)
        assert "done already" in proc.stdout and "ray" not in proc.stdout.lower()

    metaicl(line("metaicl eval configs/metaicl_synthetic.yaml"), repo)  # the meta-trained model as the base model
    [solo] = [p for p in (repo / "runs").glob("metaicl_synthetic-*") if p != out]
    assert set(pd.read_parquet(solo / "results.parquet").method.dropna()) == {"zero_shot", "in_context"}
    assert not (solo / "pretrained").exists()
    assert f"name_or_path: {out}/metatrained/metaicl/model" in (solo / "config.yaml").read_text()  # resolved once


def test_sweep_then_again_then_aggregate_and_report(repo):
    sweeps = [c for c, _ in readme_commands() if c.startswith("metaicl sweep configs/sweeps/burstiness_zipf.yaml")]
    assert len(sweeps) == 2
    first = metaicl(sweeps[0], repo)
    assert "2 trials, 0 done already, 2 to run" in first.stdout
    root = repo / "runs" / "burstiness_zipf-sweep"
    assert len(list(root.glob("burstiness_zipf-*/results.parquet"))) == 2
    assert "2 trials, 2 done already, 0 to run" in metaicl(sweeps[1], repo).stdout
    (root / "aggregate.parquet").unlink()
    metaicl(line("metaicl aggregate runs/burstiness_zipf-sweep"), repo)
    table = pd.read_parquet(root / "aggregate.parquet")
    assert sorted(table["cfg.data.burstiness"].unique()) == [0, 2]
    assert table.run.nunique() == 2
    (root / "report.html").unlink()
    metaicl(line("metaicl report runs/burstiness_zipf-sweep"), repo)
    assert "data:image/png;base64," in (root / "report.html").read_text()


def test_language_model_sweep_pretrains_once_and_reruns_nothing(repo):
    sweep = [c for c, _ in readme_commands() if c.startswith("metaicl sweep configs/sweeps/metaicl_tiny.yaml")]
    assert len(sweep) == 1
    first = metaicl(sweep[0], repo)
    assert "2 trials, 0 done already, 2 to run" in first.stdout
    root = repo / "runs" / "metaicl_tiny-sweep"
    assert len(list((root / "steps").glob("pretrain-*"))) == 1  # trials differ only in metatrain.lr
    assert "1 distinct pretrained models" in first.stdout
    runs = sorted(root.glob("metaicl_tiny-*/results.parquet"))
    assert len(runs) == 2 and not any((r.parent / "pretrained").exists() for r in runs)
    report = (root / "report.md").read_text()
    assert "## MetaICL methods" in report and "cfg.metatrain.lr" in report
    assert "2 trials, 2 done already, 0 to run" in metaicl(sweep[0], repo).stdout


def test_aggregate_and_report_over_every_run_of_both_kinds(repo):
    """runs/ now holds single runs and sweeps of the classifier and of language models: one table, one report."""
    metaicl(line("metaicl aggregate runs "), repo)
    table = pd.read_parquet(repo / "runs" / "aggregate.parquet")
    assert {"icl_sets", "metaicl", "heldout", "train"} <= set(table.suite)
    names = set(table.run)
    assert any(n.startswith("tiny-") for n in names) and any(n.startswith("burstiness_zipf-") for n in names)
    assert any(n.startswith("metaicl_synthetic-") for n in names) and any(n.startswith("metaicl_tiny-") for n in names)
    assert table["card.sources.zipf.zipf_alpha_mle"].notna().any() and table["card.burstiness_ratio"].notna().any()
    metaicl(line("metaicl report runs "), repo)
    report = (repo / "runs" / "report.md").read_text()
    assert "## Final accuracy" in report and "## MetaICL methods" in report
