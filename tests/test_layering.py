"""Data flows one way: metaicl.core -> pretrain_data -> metaicl.{models,data,train,eval,experiment} -> cluster
-> metaicl.cli. A module may import only from its own layer or those before it."""
from __future__ import annotations

import ast

from tests.conftest import ROOT


def layer(module: str) -> int:
    if module.startswith("metaicl.core"):
        return 0
    if module.startswith("pretrain_data"):
        return 1
    if module == "metaicl.cli":
        return 4
    if module.startswith("cluster"):
        return 3
    return 2


def project_imports(path):
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
        for name in names:
            if name.split(".")[0] in ("metaicl", "pretrain_data", "cluster"):
                yield name


def test_no_module_imports_a_later_layer():
    violations = []
    for package in ("metaicl", "pretrain_data", "cluster"):
        for path in (ROOT / package).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            for imported in project_imports(path):
                if layer(imported) > layer(module):
                    violations.append(f"{module} imports {imported}")
    assert violations == []


def test_layer_check_catches_a_violation():
    assert layer("cluster.pipeline") > layer("metaicl.train.arm") > layer("pretrain_data.build") > layer("metaicl.core.io")
