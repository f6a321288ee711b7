"""The allow-list of modules that may import kubernetes or kopf directly, checked over every
module of the package (import-linter's forbidden contracts only see the modules they
list, so a new module would slip past them)."""

from __future__ import annotations

import ast
from pathlib import Path

import mljob_operator

PACKAGE = Path(mljob_operator.__file__).parent
KUBE_ALLOWED = {
    "mljob_operator.handlers",
    "mljob_operator.kube",
    "mljob_operator.cli",
    "mljob_operator.watch_tolerance",
    "mljob_operator.watch_slim",
    "mljob_operator.kopf_session",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_only_the_allow_listed_modules_import_kubernetes_or_kopf() -> None:
    importing = {
        module_name(path)
        for path in PACKAGE.rglob("*.py")
        if imported_roots(path) & {"kubernetes", "kopf"}
    }
    assert importing == KUBE_ALLOWED


def test_the_check_sees_every_module() -> None:
    names = {module_name(p) for p in PACKAGE.rglob("*.py")}
    assert {"mljob_operator.engine.job", "mljob_operator.http.server"} <= names
    assert len(names) > 40
