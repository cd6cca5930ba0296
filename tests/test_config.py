"""Bad config -> exit 2, one line naming the key and the problem, before any work and with no output directory."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from metaicl.cli import main
from metaicl.core.config import load_config
from metaicl.experiment import ExperimentConfig, run_dir, run_hash

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"


def run_cli(tmp_path, capsys, *args):
    code = main(["run", *args, f"runs_root={tmp_path}/runs", f"data_root={tmp_path}/data"])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("override, key, problem", [
    ("data.bogus=1", "data.bogus", "unknown key"),
    ("data.zipf_alpha=-0.5", "data.zipf_alpha", "must be >= 0"),
    ("data.burstiness=3", "data.burstiness", "does not divide context_pairs"),
    ("data.p_bursty=1.5", "data.p_bursty", "must be in [0, 1]"),
    ("data.p_bursty=-0.1", "data.p_bursty", "must be in [0, 1]"),
    ("train.steps=many", "train.steps", "wrong type"),
    ("model.n_head=3", "model.n_head", "must divide d_model"),
    ("train.num_workers=3", "train.num_workers", "do not divide"),
    ("eval.sets=[icl_novel,bogus]", "eval.sets", "subset"),
    ("arms.bursty.data.burstiness=5", "arms.bursty.data.burstiness", "does not divide"),
    ("arms.bursty.cluster.num_cpus=1", "arms.bursty.cluster", "arms may only override"),
    ("nokey", "nokey", "key=value"),
])
def test_bad_value_exits_2_with_one_line_and_creates_nothing(tmp_path, capsys, override, key, problem):
    code, err = run_cli(tmp_path, capsys, str(QUICKSTART), override)
    assert code == 2
    assert len(err) == 1 and f"{key}:" in err[0] and problem in err[0], err
    assert "command-line override" in err[0] or "command line" in err[0]
    assert list(tmp_path.iterdir()) == []


LM = ROOT / "configs" / "metaicl_synthetic.yaml"


@pytest.mark.parametrize("group", ["data", "model", "train", "eval", "cluster", "sweep", "pretrain", "lm", "tasks",
                                   "episodes", "metatrain", "finetune", "pretrain.sources.zipf",
                                   "pretrain.sources.zipf.zipf_lm", "tasks.synthetic"])
def test_an_unknown_key_in_any_group_is_one_line_naming_it(tmp_path, capsys, group):
    """Issue 19's bad-input corpus: a misspelt key anywhere in the tree, in either kind of config."""
    lm = group.split(".")[0] in ("pretrain", "lm", "tasks", "episodes", "metatrain", "finetune")
    config = LM if lm else QUICKSTART
    code, err = run_cli(tmp_path, capsys, str(config), f"{group}.bogus=1")
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"metaicl: config error: {group}.bogus: unknown key"), err
    assert list(tmp_path.iterdir()) == []


def test_error_in_file_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata:\n  num_classes: 64\n  bogus: 1\n")
    code, err = run_cli(tmp_path, capsys, str(bad))
    assert code == 2 and err == [f"metaicl: config error: data.bogus: unknown key ({bad}:4)"]
    bad.write_text("name: x\narms:\n  a:\n    data:\n      p_bursty: 2\n")
    code, err = run_cli(tmp_path, capsys, str(bad))
    assert code == 2 and err == [f"metaicl: config error: arms.a.data.p_bursty: must be in [0, 1], got 2.0 ({bad}:5)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_an_output_path_that_names_a_file_is_one_error(tmp_path, capsys):
    """Issue 19: out_dir naming an existing file was a FileExistsError traceback."""
    (tmp_path / "notes.txt").write_text("mine")
    for key in ("out_dir", "runs_root", "data_root"):  # the last override of a key wins: this one
        code = main(["run", str(QUICKSTART), f"runs_root={tmp_path}/runs", f"data_root={tmp_path}/data",
                     f"{key}={tmp_path / 'notes.txt'}"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and err == [f"metaicl: config error: {key}: {tmp_path / 'notes.txt'} is a file, not a "
                                     f"directory (command-line override '{key}={tmp_path / 'notes.txt'}')"], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_missing_file_and_invalid_yaml(tmp_path, capsys):
    code, err = run_cli(tmp_path, capsys, str(tmp_path / "nope.yaml"))
    assert code == 2 and "config file not found" in err[0]
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [1,\n")
    code, err = run_cli(tmp_path, capsys, str(broken))
    assert code == 2 and "invalid YAML" in err[0]


FILE_MISTAKES = [  # (what the user typed, files made first, what the one line must name)
    (["run", "configs"], {"configs/a.yaml": b"name: a\n"}, "configs is a directory, not a config file"),
    (["run", "latin1.yaml"], {"latin1.yaml": b"name: caf\xe9\n"}, "not UTF-8 text (byte 0xe9) (latin1.yaml:1)"),
    (["run", "list.yaml"], {"list.yaml": b"- a\n- b\n"}, "top level must be a mapping (list.yaml)"),
    (["run", "tabs.yaml"], {"tabs.yaml": b"name: x\ndata:\n\tnum_classes: 4\n"}, "invalid YAML (tabs.yaml:3)"),
    (["data", "stats", "notes.txt"], {"notes.txt": b"mine"}, "notes.txt is not a complete data directory"),
    (["data", "show", "empty"], {"empty/.keep": b""}, "empty is not a complete data directory"),
    (["aggregate", "nowhere"], {}, "RUNS_DIR: nowhere is not a directory"),
    (["report", "empty"], {"empty/.keep": b""}, "no finished runs"),
    (["jobs", "status", "metaicl-x"], {}, "--address: which cluster?"),
    (["submit", "q.yaml"], {"q.yaml": QUICKSTART.read_bytes()}, "--address: which cluster?"),
]


@pytest.mark.parametrize("argv, files, named", FILE_MISTAKES, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_a_file_or_directory_mistake_is_one_line_naming_it_and_changes_nothing(tmp_path, capsys, monkeypatch, argv,
                                                                                files, named):
    """Issue 19's bad-input corpus, the command line's file inputs: a directory where a config file is expected
    (and the reverse), text that is not UTF-8 or not YAML, a job command without a cluster (Ray would look for a
    local one for ~40 s): exit 2, one line `metaicl: config error: ...` naming the culprit, nothing written."""
    for key in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    before = sorted(tmp_path.rglob("*"))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("metaicl: config error: ") and named in err[0], err
    assert sorted(tmp_path.rglob("*")) == before


def test_console_script_reports_unknown_key_and_creates_nothing(tmp_path):
    exe = Path(sys.executable).with_name("metaicl")
    proc = subprocess.run([str(exe), "run", str(QUICKSTART), "data.bogus=1", f"runs_root={tmp_path}/r",
                           f"data_root={tmp_path}/d"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "metaicl: config error: data.bogus: unknown key (command-line override 'data.bogus=1')"]
    assert list(tmp_path.iterdir()) == []


def test_help_lists_the_run_command():
    exe = Path(sys.executable).with_name("metaicl")
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "run" in proc.stdout and "in-context" in proc.stdout


def test_run_hash_ignores_resources_but_not_semantics():
    base, _ = load_config(ExperimentConfig, QUICKSTART)
    same = [["cluster.num_cpus=1"], ["train.num_workers=2"], ["out_dir=elsewhere"], ["train.log_every=7"]]
    for overrides in same:
        assert run_hash(load_config(ExperimentConfig, QUICKSTART, overrides)[0]) == run_hash(base)
    for overrides in (["data.zipf_alpha=1.0"], ["train.lr=0.001"], ["model.d_model=32"], ["arms.bursty.data.burstiness=2"]):
        assert run_hash(load_config(ExperimentConfig, QUICKSTART, overrides)[0]) != run_hash(base)
    assert run_dir(base).name == f"quickstart-{run_hash(base)[:8]}"


def test_arms_share_everything_but_their_overrides():
    cfg, _ = load_config(ExperimentConfig, QUICKSTART)
    bursty, iid = cfg.arm("bursty"), cfg.arm("non_bursty")
    assert (bursty.data.burstiness, iid.data.burstiness) == (4, 0)
    assert bursty.model == iid.model and bursty.train == iid.train


@pytest.mark.parametrize("path", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    cfg, _ = load_config(ExperimentConfig, path)
    for arm in cfg.arm_names():
        cfg.arm(arm).validate()
