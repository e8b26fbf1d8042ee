"""Every third-party package that dispel's code or its tests import is declared in pyproject.toml
(a runtime dependency, an optional extra, or the test extra), and the pinned tools are pinned alike."""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Imported by the tests' own programs and apps, not from an installed distribution.
LOCAL = {"dispel", "conftest", "programs", "samples", "tiny_traces", "shopapp", "taskboard", "__future__"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    specs = [*project["dependencies"], *(s for group in project["optional-dependencies"].values() for s in group)]
    return {_norm(re.match(r"[A-Za-z0-9_.-]+", s).group(0)) for s in specs}


def _imported(folder: Path) -> dict[str, str]:
    """Top-level module imported -> the first file importing it, for every file under ``folder``."""
    out: dict[str, str] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in LOCAL:
                    out.setdefault(top, str(path.relative_to(ROOT)))
    return out


def undeclared(imported: dict[str, str], declared: set[str]) -> list[str]:
    """The imports no declared distribution provides (an uninstalled one is known by its import name)."""
    provides = metadata.packages_distributions()
    return [f"{module} (imported by {where})" for module, where in sorted(imported.items())
            if not {_norm(d) for d in provides.get(module, [module])} & declared]


def test_every_imported_package_is_declared():
    declared = _declared()
    assert undeclared(_imported(ROOT / "scripts" / "dispel"), declared) == []
    assert undeclared(_imported(ROOT / "tests"), declared) == []


def test_an_undeclared_import_is_named():
    assert undeclared({"yaml": "x.py", "nosuchpackage": "y.py"}, {"pyyaml"}) == ["nosuchpackage (imported by y.py)"]


def test_the_lint_tools_are_pinned_alike_in_the_lock_and_the_test_extra():
    lock = dict(line.split("==") for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines()
                if "==" in line and not line.startswith("#"))
    test = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]["test"]
    for tool in ("ruff", "mypy"):
        assert f"{tool}=={lock[tool]}" in test, f"{tool}: the lock has {lock[tool]}, the test extra {test}"
