"""The shape of the package: one catalogue that every page, chain file and finder agrees with,
no import cycle, and a CLI that only parses and dispatches."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from dispel import catalog, cli
from dispel.chains import build as chains
from dispel.chains import finders
from dispel.project import Project
from dispel.render import markup

PACKAGE = Path(cli.__file__).parent


def module_name(path: Path) -> str:
    """A module's dotted name under dispel: ``chains.build``, ``cli``; a package is its ``__init__``."""
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def modules() -> dict[str, Path]:
    """Every module of the package, in every subpackage, by dotted name."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "_project" not in p.parts}


def resolve(importer: str, node: ast.ImportFrom, known: set[str]) -> set[str]:
    """The dispel modules one ``from`` statement imports, its relative level resolved at any depth
    (``from ..chains import build`` in ``render.pages`` -> ``chains.build``); absolute ``dispel.``
    imports count too. A name that is not a module is its package's (``from ..model import Chain``)."""
    if node.level:
        base = importer.split(".")[: -node.level]
        parts = base + (node.module.split(".") if node.module else [])
    elif node.module and (node.module == "dispel" or node.module.startswith("dispel.")):
        parts = node.module.split(".")[1:]
    else:
        return set()
    found = set()
    for alias in node.names:
        dotted = ".".join(parts + [alias.name])
        if dotted in known:
            found.add(dotted)
        elif ".".join(parts) in known:
            found.add(".".join(parts))
        elif ".".join(parts + ["__init__"]) in known:
            found.add(".".join(parts + ["__init__"]))
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The dispel modules a module imports, anywhere in it (lazy imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            found |= resolve(name, node, known)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def test_the_walk_sees_every_module_and_resolves_every_import():
    """The layout tests see every file of every subpackage, and every relative import resolves to one of them."""
    mods = modules()
    on_disk = {p for p in PACKAGE.rglob("*.py") if "_project" not in p.parts}
    assert set(mods.values()) == on_disk
    assert any("." in name for name in mods), "no subpackage seen"
    known = set(mods)
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert resolve(name, node, known), f"{name}: from {'.' * node.level}{node.module or ''} resolves to no module"


def cycle(g: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``g`` (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt]
            if nxt not in state and (found := visit(nxt, path + [node])):
                return found
        state[node] = 2
        return None

    for node in sorted(g):
        if node not in state and (found := visit(node, [])):
            return found
    return None


def test_the_cycle_finder_finds_one():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_package_has_no_import_cycle():
    found = cycle(graph())
    assert found is None, "import cycle: " + " -> ".join(found)


def test_only_main_imports_the_cli():
    importers = sorted(m for m, deps in graph().items() if "cli" in deps)
    assert importers == ["__main__"]


def test_the_cli_only_parses_and_dispatches():
    source = (PACKAGE / "cli.py").read_text(encoding="utf-8")
    assert len(source.splitlines()) <= 300
    tree = ast.parse(source)
    nested = [n for f in tree.body if isinstance(f, ast.FunctionDef) for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not nested, "imports belong at the top of cli.py"


def test_help_lists_only_real_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "SUPPRESS" not in out
    listed = {line.split()[0] for line in out.splitlines() if re.match(r"    \w", line)}
    assert listed == {"record", "report", "chains", "pin", "versions", "render", "check", "diff", "audit", "bench", "handin"}


def test_every_journey_has_a_finder_a_page_a_chain_file_and_a_title():
    project = Project()
    names = set(catalog.JOURNEY_NAMES)
    assert len(names) == len(catalog.JOURNEYS), "a journey is catalogued twice"
    assert {j.finder for j in catalog.JOURNEYS} <= set(finders.FINDERS)
    assert {j.wire for j in catalog.JOURNEYS} <= set(chains.WIRES)
    assert {p.stem for p in (project.docs / "chains").glob("*.md")} == names
    assert {p.stem for p in project.chains.glob("*.json")} == names
    for j in catalog.JOURNEYS:
        assert j.title and (j.scenario in catalog.SCENARIOS or j.scenario in catalog.PROCESS_SCENARIOS)
        page = (project.docs / "chains" / f"{j.name}.md").read_text(encoding="utf-8")
        assert f"# {markup.md_text(j.title)}" in page.splitlines(), f"the page of {j.name} has not its catalogued title"
        for _, other in (j.compared or ("", ()))[1]:
            assert other in names, f"{j.name} is compared with {other}, which is no journey"


def test_nothing_else_lists_the_journeys_or_the_traced_packages():
    """The catalogue is the one list: no other module spells out the journey names or the traced packages."""
    for name, path in modules().items():
        if name == "catalog":
            continue
        text = path.read_text(encoding="utf-8")
        assert '"upgrade-python"' not in text, f"{path.name} lists journeys"
        assert '"simple_websocket", "wsproto"' not in text and '"simple-websocket",\n' not in text, f"{path.name} lists traced packages"


def test_every_journey_is_in_the_site_navigation():
    nav = (Project().root / "mkdocs.yml").read_text(encoding="utf-8")
    missing = [j.name for j in catalog.JOURNEYS if f"chains/{j.name}.md" not in nav]
    assert not missing, f"mkdocs.yml's nav lacks the pages of {missing}"


def test_every_module_has_its_kind_in_the_layout_table():
    """scripts/dispel/layout.py names every module once (docs/how.md's table is written from it)."""
    from dispel import layout

    mods = {m for m in modules() if not m.endswith("__init__")}
    assert mods - set(layout.MODULES) == set(), "modules missing from layout.MODULES"
    assert set(layout.MODULES) - mods == set(), "layout.MODULES names modules that do not exist"
    assert {kind for kind, _ in layout.MODULES.values()} <= set(layout.KINDS)
    assert {layout.package_of(m) for m in layout.MODULES} <= set(layout.PACKAGES)


def test_pure_modules_import_only_pure_ones():
    from dispel import layout

    bad = []
    for name, deps in graph().items():
        if layout.MODULES.get(name, ("",))[0] != layout.PURE:
            continue
        for dep in sorted(deps):
            kind = layout.MODULES.get(dep, (layout.PURE,))[0]  # a package's __init__ is empty
            if kind not in layout.PURE_MAY_IMPORT:
                bad.append(f"{name} ({layout.PURE}) imports {dep} ({kind})")
    assert not bad, bad


def test_the_kind_rule_can_fail():
    """The rule above, on a graph where a pure module imports an IO shell."""
    from dispel import layout

    g = {"chains.build": {"pins.installed"}}
    assert [d for m, deps in g.items() if layout.MODULES[m][0] == layout.PURE for d in deps
            if layout.MODULES[d][0] not in layout.PURE_MAY_IMPORT] == ["pins.installed"]


def test_the_package_has_few_top_level_modules_and_stage_subpackages():
    top = [p for p in PACKAGE.glob("*.py")]
    subpackages = [p for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()]
    assert len(top) <= 12, sorted(p.name for p in top)
    assert len(subpackages) >= 5
