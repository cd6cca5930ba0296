"""README's commands for the classifier and the data, typed as a user types them (the rule and how: tests/readme.py).
README's sweeps and language-model commands run in tests/test_readme_sweeps.py, beside this module."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from cluster.results import RESULT_COLUMNS
from tests.conftest import ROOT
from tests.readme import NOT_RUN, RUN, fresh_copy, line, matches, metaicl, metaicl_here, readme_commands


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return fresh_copy(tmp_path_factory.mktemp("clone"))


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
    trained = sorted((repo / "runs" / "data").glob("train-*"))  # one training step per arm, in data_root
    assert len(trained) == 2 and all(any((t / "checkpoints").iterdir()) for t in trained)
    assert sorted(p.name for p in (out / "cards").iterdir()) == ["bursty.json", "non_bursty.json"]
    report = (out / "report.md").read_text()
    assert "| bursty |" in first.stdout and "| chance |" in report and "## Training data, measured" in report
    assert (out / "icl_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"data_root: {repo}/runs/data" in (out / "config.yaml").read_text()  # resolved once, saved
    assert "WARNING" not in first.stderr, first.stderr  # Ray's start-up notices (token auth: ray_local.py) kept out

    before = (out / "results.parquet").stat().st_mtime_ns
    assert "every stage is done" in metaicl(line("metaicl run configs/tiny.yaml"), repo).stdout
    assert (out / "results.parquet").stat().st_mtime_ns == before
    (out / "results.parquet").unlink()
    again = metaicl(line("metaicl run configs/tiny.yaml"), repo).stdout
    assert "data [bursty]: reusing" in again and "train [bursty]: done already, skipping" in again
    assert "train:" not in again.replace("train [", "")  # no trainer was started


def test_data_build_stats_and_show_of_the_few_shot_data(repo, ray_session):
    built = metaicl_here(line("metaicl data build configs/quickstart.yaml"), repo)
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


def test_data_build_of_the_readme_mixtures_then_stats_and_show(repo, ray_session):
    """README's table says what each card shows; at toy size the same directions hold."""
    metaicl_here(line("metaicl data build configs/data/zipf_alpha.yaml"), repo)
    report = (repo / "runs" / "zipf_alpha-data" / "report.md").read_text()
    assert report.count("| alpha_") == 4 and (repo / "runs" / "zipf_alpha-data" / "rank_frequency.png").exists()
    fitted = {float(line.split("|")[1].split("_")[1]): float(line.split("|")[4]) for line in report.splitlines()
              if line.startswith("| alpha_")}
    assert all(abs(alpha - mle) < 0.1 for alpha, mle in fitted.items()), fitted

    metaicl_here(line("metaicl data build configs/data/ordering.yaml"), repo)
    assert {p.name for p in (repo / "runs" / "ord").iterdir()} >= {"dependency", "random", "report.md"}
    cards = {arm: card["sources"]["wiki"] for arm, card in mixture_cards(repo, "runs/ord").items()}
    assert cards["dependency"]["adjacent_doc_similarity"] > 2 * cards["dependency"]["random_order_similarity"]
    assert abs(cards["random"]["adjacent_doc_similarity"] - cards["random"]["random_order_similarity"]) < 0.03
    assert "adjacent_doc_similarity" in metaicl(line("metaicl data stats runs/ord/"), repo).stdout
    wiki = [s for s in metaicl(line("metaicl data show runs/ord/"), repo).stdout.splitlines() if "] wiki: " in s]
    assert wiki and all(sum(ch.isalpha() for ch in s) > 50 for s in wiki)  # decoded words, not ids


