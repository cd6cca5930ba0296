"""Data flows one way: metaicl.core -> pretrain_data -> metaicl.{models,data} -> metaicl.eval -> metaicl.train ->
metaicl.experiment -> cluster -> metaicl.cli. A module may import only from its own layer or those before it
(training evaluates as it goes; evaluation never trains through the training code)."""
from __future__ import annotations

import ast

from tests.conftest import ROOT


LAYERS = ("metaicl.core", "pretrain_data", ("metaicl.models", "metaicl.data"), "metaicl.eval", "metaicl.train",
          "metaicl.experiment", "cluster", "metaicl.cli")


def layer(module: str) -> int:
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in
               ((prefixes,) if isinstance(prefixes, str) else prefixes)):
            return i
    return LAYERS.index("metaicl.experiment")  # metaicl itself (metaicl/__init__.py)


def project_imports(path):
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
        for name in names:
            if name.split(".")[0] in ("metaicl", "pretrain_data", "cluster"):
                yield name


def violations(root) -> list[str]:
    """`<module> imports <module>` for every import of a later layer in the packages under `root`."""
    found = []
    for package in ("metaicl", "pretrain_data", "cluster"):
        for path in sorted((root / package).rglob("*.py")):
            module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
            for imported in project_imports(path):
                if layer(imported) > layer(module):
                    found.append(f"{module} imports {imported}")
    return found


def test_no_module_imports_a_later_layer():
    assert violations(ROOT) == []


def test_layer_check_catches_a_violation():
    assert layer("cluster.pipeline") > layer("metaicl.train.arm") > layer("pretrain_data.build") > layer("metaicl.core.io")
    assert layer("metaicl.experiment") > layer("metaicl.train.lm") > layer("metaicl.eval.evaluate") > layer(
        "metaicl.models.lm") == layer("metaicl.data.episodes")


def test_a_planted_violating_import_is_caught(tmp_path):
    """The check finds what it is for: a copy of the packages with one upward import planted in each layer below
    the CLI (the core importing pretrain_data, pretrain_data importing training code, training importing cluster)."""
    import shutil

    for package in ("metaicl", "pretrain_data", "cluster"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    assert violations(tmp_path) == []
    planted = {"metaicl/core/planted.py": "from pretrain_data.build import build\n",
               "pretrain_data/planted.py": "import metaicl.train.loop\n",
               "metaicl/eval/planted.py": "def f():\n    from cluster.sweep import run_sweep\n",
               "metaicl/eval/planted_train.py": "def f():\n    from metaicl.train.lm import lm_loss\n",
               "cluster/planted.py": "from metaicl.cli import main\n"}
    for where, code in planted.items():
        (tmp_path / where).write_text(code)
    assert sorted(violations(tmp_path)) == ["cluster.planted imports metaicl.cli",
                                            "metaicl.core.planted imports pretrain_data.build",
                                            "metaicl.eval.planted imports cluster.sweep",
                                            "metaicl.eval.planted_train imports metaicl.train.lm",
                                            "pretrain_data.planted imports metaicl.train.loop"]


def test_the_command_line_and_the_pipelines_import_without_torch():
    """Specs and the pipeline's skip checks need no torch; only running a stage imports it. A rerun that finds every
    stage done (README's tests type a dozen) answers without paying torch's import (~2 s of ~4 s)."""
    import subprocess
    import sys

    modules = ["metaicl.cli", "cluster.pipeline", "cluster.lm_pipeline", "cluster.sweep", "cluster.aggregate",
               "cluster.sweep_report", "metaicl.train.arm", "metaicl.train.lm", "metaicl.train.ray_train"]
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint(sorted(m for m in sys.modules if m == 'torch'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout
