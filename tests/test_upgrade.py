"""Upgrading as a user would, on a fixture: a tiny traced library with three releases in a real git repository.

``tiny`` 1.0 → 1.1 changes only a file no chain runs through; 1.1 → 2.0 changes the line
``greet`` executes. A second library, ``other``, never changes and its mirror is never given
after the first pin. The chain of the journey ``greet`` is recorded for real, under
sys.settrace, from the installed files. No network: git may only use local repositories.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import shutil
import sys
from pathlib import Path

import pytest
from conftest import git, install
from dispel import cli
from dispel.check import drift
from dispel.check import links as check
from dispel.model import EDGE_CALL, EDGE_ENTRY, Chain, Func, Hop, Pin, Source
from dispel.pins import pinning as pins
from dispel.pins import stage as pins_stage
from dispel.project import Project, dump_json, load_chains, load_lock, write_atomic
from dispel.review import diff
from dispel.tracefiles import codec as tracefile

GREET = "def greet(name):\n    return shout({arg})\n\n\ndef shout(name):\n    return name.upper()\n"
RELEASES = {
    "1.0": {"tiny/__init__.py": GREET.format(arg="name"), "tiny/client.py": "RETRIES = 1\n"},
    "1.1": {"tiny/__init__.py": GREET.format(arg="name"), "tiny/client.py": "RETRIES = 2\n"},  # untraced file only
    "2.0": {"tiny/__init__.py": "\n" + GREET.format(arg="name.strip()"), "tiny/client.py": "RETRIES = 2\n"},
}
OTHER = {"other/__init__.py": "VALUE = 1\n"}
_modules = itertools.count()


def release_repo(root: Path, releases: dict[str, dict[str, str]]) -> Path:
    """One commit and one annotated tag vX per release, in order."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    for version, files in releases.items():
        for rel in list(root.glob("*")):
            if rel.name != ".git":
                shutil.rmtree(rel) if rel.is_dir() else rel.unlink()
        for rel, text in files.items():
            (root / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / "src" / rel).write_text(text)
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", f"release {version}")
        git(root, "tag", "-a", "-m", version, f"v{version}")
    return root


def install_release(site: Path, version: str) -> None:
    """pip install tiny==VERSION into the fake site: the old release's files and dist-info go first."""
    for old in site.glob("tiny-*.dist-info"):
        shutil.rmtree(old)
    shutil.rmtree(site / "tiny", ignore_errors=True)
    install(site, "tiny", version, RELEASES[version], ["Source, https://github.com/acme/tiny"])


def record_greet(site: Path, version: str) -> Chain:
    """Run tiny.greet under sys.settrace and make the journey's chain from what ran (greet → shout)."""
    path = site / "tiny" / "__init__.py"
    spec = importlib.util.spec_from_file_location(f"tiny_{next(_modules)}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls = []

    def tracer(frame, event, arg):
        if event == "call" and frame.f_code.co_filename == str(path):
            calls.append((frame.f_code, frame.f_back.f_lineno))

    sys.settrace(tracer)
    try:
        module.greet(" x ")
    finally:
        sys.settrace(None)
    lines = path.read_text().split("\n")
    (greet, _), (shout, call_line) = calls
    source = Source("tiny", version, "tiny/__init__.py")

    def func(code) -> Func:
        last = max(line for _, _, line in code.co_lines() if line)
        return Func("tiny", code.co_name, source, code.co_firstlineno, last)

    hops = (
        Hop(func(greet), call_line, "main", EDGE_ENTRY, 0, None, lines[call_line - 1].strip()),
        Hop(func(shout), shout.co_firstlineno, "main", EDGE_CALL, 1, None, lines[shout.co_firstlineno - 1].strip()),
    )
    return Chain("greet", "greet(name)", "fixture", hops)


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    """Upstreams, a site with tiny 1.0 and other 0.5, and a project (a git repository) pinned and recorded at 1.0."""
    w = {
        "tiny": release_repo(tmp_path / "up-tiny", RELEASES),
        "other": release_repo(tmp_path / "up-other", {"0.5": OTHER}),
        "site": tmp_path / "site",
        "project": tmp_path / "project",
    }
    install_release(w["site"], "1.0")
    install(w["site"], "other", "0.5", OTHER, ["Source, https://github.com/acme/other"])
    (w["project"] / "traces" / "chains").mkdir(parents=True)
    w["lock"] = w["project"] / "traces" / "pins.lock.json"
    assert cli.main(pin(w, "--git-dir", f"acme/tiny={w['tiny']}", "--git-dir", f"acme/other={w['other']}")) == 0
    regen(w, "1.0")
    git(w["project"], "init", "-q", "-b", "main")
    git(w["project"], "add", "-A")
    git(w["project"], "commit", "-q", "-m", "tiny 1.0")
    return w


def pin(w: dict[str, Path], *extra: str) -> list[str]:
    return ["pin", "tiny", "other", "--site", str(w["site"]), "--lock", str(w["lock"]), *extra]


def regen(w: dict[str, Path], version: str) -> None:
    path = w["project"] / "traces" / "chains" / "greet.json"
    write_atomic(path, dump_json(tracefile.chain_to_dict(record_greet(w["site"], version))))


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """git may use local repositories only: a fetch from a forge fails at once instead of going online."""
    monkeypatch.setenv("GIT_ALLOW_PROTOCOL", "file")


def diff_of(w: dict[str, Path], capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    capsys.readouterr()
    assert cli.main(["diff", "--root", str(w["project"]), *extra]) == 0
    return capsys.readouterr().out


# --------------------------------------------------------------------------- the flow


@pytest.mark.slow  # git repositories and dispel commands
def test_an_upgrade_that_changes_no_traced_line(world, capsys):
    w = world
    locked = load_lock(w["lock"])
    install_release(w["site"], "1.1")
    # the installed version differs from the lock: the check and `make site` say so, naming both
    assert "tiny: installed 1.1, lock 1.0: run make pin, then make regen" in pins_stage.verify_installed(locked, [w["site"]])
    capsys.readouterr()
    assert cli.main(["versions", "--warn", "--lock", str(w["lock"]), "--site", str(w["site"])]) == 0
    warned = [ln for ln in capsys.readouterr().err.splitlines() if not ln.startswith("warning: python:")]
    assert warned == ["warning: tiny: installed 1.1, lock 1.0: run make pin, then make regen"]
    # pinning offline needs tiny's mirror alone; without it the error names tiny and only tiny
    before = w["lock"].read_bytes()
    assert cli.main(pin(w)) == 2
    err = capsys.readouterr().err
    assert err.startswith("dispel: error: tiny must be pinned afresh (installed 1.1, lock 1.0): ") and "other" not in err
    assert "--git-dir acme/tiny=PATH" in err and w["lock"].read_bytes() == before
    assert cli.main(pin(w, "--git-dir", f"acme/tiny={w['tiny']}")) == 0
    assert "tiny: pinned afresh (installed 1.1, lock 1.0)" in capsys.readouterr().out
    lock = load_lock(w["lock"])
    assert lock.pin("other") == locked.pin("other")  # kept as it was, without its mirror
    assert lock.pin("tiny").commit == git(w["tiny"], "rev-parse", "v1.1^{commit}")
    assert [p for p in pins_stage.verify_installed(lock, [w["site"]]) if not p.startswith("python")] == []
    # pinned, not yet regenerated: one line says so, instead of one per link into tiny's repository
    chains = load_chains(Project(w["project"]))
    versions_drift = check.recording_drift(chains.values(), lock)
    assert versions_drift == {"tiny": ("1.0", "1.1")}
    into_tiny = check.LinkResult(check.PageLink("chains/greet.md", 9, f"https://github.com/acme/tiny/blob/{locked.pin('tiny').commit}/src/tiny/__init__.py#L2"), ["not pinned"])
    elsewhere = check.LinkResult(check.PageLink("index.md", 3, "https://github.com/acme/other/blob/x/src/other/__init__.py#L1"), ["broken"])
    assert check.fold_recording_drift([into_tiny, elsewhere], lock, versions_drift) == (
        ["tiny: chains recorded with 1.0, lock 1.1: run make pin, then make regen (1 link into its repository fails until then)"],
        [elsewhere],
    )
    # regenerate: no hop changed, the links moved to 1.1's commit
    old_chain = load_chains(Project(w["project"]))["greet"]
    regen(w, "1.1")
    new_chain = load_chains(Project(w["project"]))["greet"]
    assert drift.diff_chains("greet", old_chain, new_chain) == ["greet: versions: tiny 1.0 → 1.1 (hops 1, 2)"]
    out = diff_of(w, capsys)
    commit = git(w["tiny"], "rev-parse", "v1.1^{commit}")
    assert out.splitlines()[2] == f"tiny 1.0 → 1.1; 0 hops changed in 1 journeys; links moved to tiny `{commit[:12]}` (v1.1)."
    old_commit = locked.pin("tiny").commit
    assert f"| tiny | 1.0 → 1.1 | `{old_commit[:12]}` (v1.0) → `{commit[:12]}` (v1.1) | 1: `tiny/client.py` (none on a chain) |" in out
    assert "| greet | 2 | 0 |" in out and "### greet" not in out


@pytest.mark.slow  # git repositories and dispel commands
def test_an_upgrade_that_changes_the_executed_line(world, capsys, tmp_path):
    w = world
    (w["project"] / "docs" / "annotations").mkdir(parents=True)
    (w["project"] / "docs" / "annotations" / "tiny.yml").write_text("tiny:greet:\n  text: Greets by shouting.\n")
    install_release(w["site"], "2.0")
    assert cli.main(pin(w, "--git-dir", f"acme/tiny={w['tiny']}")) == 0
    regen(w, "2.0")
    out = diff_of(w, capsys, "--out", str(tmp_path / "review.md"))
    assert out.splitlines()[0].startswith("tiny 1.0 → 2.0; 2 hops changed in 1 journeys; links moved to tiny `")
    text = (tmp_path / "review.md").read_text()
    assert "| greet | 2 | 2 |" in text
    assert "| 2: `tiny/__init__.py`, `tiny/client.py` (1 on a chain) |" in text
    assert (
        "- hop 1 tiny:greet (main): line 2 → 3, line text 'return shout(name)' → 'return shout(name.strip())', "
        "definition lines 1-2 → 2-3, version tiny 1.0 → 2.0"
    ) in text
    assert "- hop 2 tiny:shout (main): line 5 → 6, line text 'def shout(name):' → 'def shout(name):'" not in text
    assert "- hop 2 tiny:shout (main): line 5 → 6, definition lines 5-6 → 6-7, version tiny 1.0 → 2.0" in text
    assert "- re-read: tiny:greet (" in text and "tiny.yml:1): hop 1 of greet changed" in text
    assert "- missing: journey 'greet' has no summary" in text


@pytest.mark.slow  # git repositories and dispel commands
def test_diff_of_an_unknown_ref_is_one_clear_error(world, capsys):
    assert cli.main(["diff", "nope", "--root", str(world["project"])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'nope' is not a commit of the repository" in err


@pytest.mark.slow  # git repositories and dispel commands
def test_pin_refresh_repins_everything_and_needs_every_mirror(world, capsys):
    assert cli.main(pin(world, "--refresh", "--git-dir", f"acme/tiny={world['tiny']}")) == 2
    assert "dispel: error: other must be pinned afresh (--refresh): " in capsys.readouterr().err
    assert cli.main(pin(world, "--git-dir", f"acme/tiny={world['tiny']}")) == 0  # nothing changed: no git at all


# --------------------------------------------------------------------------- pure: tables


def _pin(dist: str, version: str, files: dict[str, str], pinned: str = "commit") -> Pin:
    from dispel.model import FilePin

    return Pin(dist, version, "github", "o/r", f"v{version}", "c" * 40, pinned, tuple(FilePin(k, k, v) for k, v in files.items()))


@pytest.mark.parametrize(
    ("old", "version", "blobs", "repo", "reason"),
    [
        (_pin("d", "1.0", {"d/a.py": "1"}), "1.0", {"d/a.py": "1"}, "o/r", ""),
        (_pin("d", "1.0", {"d/a.py": "1"}), "1.0", {"d/a.py": "1"}, "O/R", ""),
        (None, "1.0", {"d/a.py": "1"}, "o/r", "not in the lock"),
        (_pin("d", "1.0", {"d/a.py": "1"}), "1.1", {"d/a.py": "1"}, "o/r", "installed 1.1, lock 1.0"),
        (_pin("d", "1.0", {"d/a.py": "1"}), "1.0", {"d/a.py": "1"}, "o/s", "repository o/s, lock o/r"),
        (_pin("d", "1.0", {"d/a.py": "1"}, "tag"), "1.0", {"d/a.py": "1"}, "o/r", "tag-pinned in the lock"),
        (_pin("d", "1.0", {"d/a.py": "1"}), "1.0", {"d/a.py": "2", "d/b.py": "3"}, "o/r", "2 installed file(s) differ from the lock: d/a.py, d/b.py"),
    ],
)
def test_repin_reason(old, version, blobs, repo, reason):
    assert pins.repin_reason(old, pins.Installed("d", version, blobs), repo) == reason


def test_version_mismatches_read_versions_only():
    lock = pins.Lock(pins.stdlib_pin("3.11.7", {}), (_pin("a", "1.0", {}), _pin("b", "2.0", {})))
    assert pins.version_mismatches(lock, {"python": "3.11.7", "a": "1.0", "b": "2.0"}) == []
    assert pins.version_mismatches(lock, {"python": "3.11.8", "a": "1.0"}) == [
        "python: installed 3.11.8, lock 3.11.7: run make pin, then make regen",
        "b: not installed, lock 2.0: run make site (pip install -r requirements.lock)",
    ]


TRACE = {
    "schema": 1,
    "scenario": "chat",
    "python": "3.11.7",
    "versions": {"python-engineio": "4.13.3", "flask": "3.1.3"},
    "steps": ["start", "chat"],
    "funcs": [["engineio.socket", "Socket.send", "python-engineio", "4.13.3", "engineio/socket.py", 10, 20, 0]],
    "threads": [["main", -1, 0]],
    "wakeups": [],
    "events": [[0, -1, 0, 0, 1, [["pkt", "'4x'", 0]], ["None", 0], 0, 20]],
}


def _edited(**changes) -> dict:
    import copy

    data = copy.deepcopy(TRACE)
    for path, value in changes.items():
        node = data
        *parents, last = path.split("__")
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value
    return data


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        (_edited(**{"versions__python-engineio": "4.13.2", "funcs__0__3": "4.13.2"}), ["versions: python-engineio 4.13.3 → 4.13.2"]),
        (_edited(python="3.11.8"), ["python: 3.11.7 → 3.11.8"]),
        (_edited(funcs__0__5=12, funcs__0__6=22), ["funcs: engineio.socket:Socket.send lines 10-20 → 12-22"]),
        (_edited(funcs__0__3="9"), ["funcs: engineio.socket:Socket.send version 4.13.3 → 9"]),
        (_edited(events__0__6=["'x'", 0]), ["events: 1 of 1 differ, first at event 0 (main, engineio.socket:Socket.send): ret \"['None', 0]\" → '[\"\\'x\\'\", 0]'"]),
        (_edited(events__0__2=7), ["events: 1 of 1 differ, first at event 0 (main, engineio.socket:Socket.send): call_line '0' → '7'"]),
        (_edited(threads__0__0="server"), ["threads: first at row 1: ['main', -1, 0] → ['server', -1, 0]", "events: 1 of 1 differ, first at event 0 (server, engineio.socket:Socket.send): thread 'main' → 'server'"]),
    ],
)
def test_trace_drift_names_the_field(new, expected):
    assert drift.diff_traces(TRACE, new) == expected


def test_trace_drift_falls_back_to_the_line_only_for_layout():
    import json

    text = json.dumps(TRACE)
    assert drift.trace_drift(text, json.dumps(TRACE, indent=1))[0].startswith("layout at line 1: ")
    [line] = drift.trace_drift(text, text[:-1])  # a truncated file is not JSON
    assert line == "layout at line 1: '20]]}' → '20]]'"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("| python-engineio 4.13.3 | [repo](x) |", "| python-engineio 4.13.2 | [repo](x) |", "'4.13.3' → '4.13.2'"),
        ("a b c", "a B c", "'b' → 'B'"),
        ("a b c d", "a B c D", "'b' → 'B' (and 1 more change on the line)"),
        ("keep", "keep added", "'' → 'added'"),
    ],
)
def test_changed_words(old, new, expected):
    assert drift.changed_words(old, new) == expected


def test_a_page_difference_names_its_section():
    old = "<!-- generated -->\n\n# Licensing\n\n| dist | x |\n|---|---|\n| python-engineio 4.13.3 | MIT |\n\n## Python { #py }\n\n3.11.7\n"
    new = old.replace("4.13.3", "4.13.2")
    assert drift.diff_page("licensing.md", old, new, None, {}) == [
        "licensing.md: section 'Licensing' differs from a regeneration: line 7: '4.13.3' → '4.13.2'"
    ]
    assert drift.diff_page("licensing.md", old, old.replace("3.11.7", "3.11.8"), None, {}) == [
        "licensing.md: section 'Python' differs from a regeneration: line 11: '3.11.7' → '3.11.8'"
    ]
    assert drift.diff_page("x.md", "a\n", "b\n", None, {}) == ["x.md: the page head differs from a regeneration: line 1: 'a' → 'b'"]


def _hop(key: str, line: int, text: str = "", thread: str = "main", version: str = "1.0", event: int = 0) -> Hop:
    module, qualname = key.split(":")
    return Hop(Func(module, qualname, Source("d", version, "d/x.py"), 1, 50), line, thread, EDGE_CALL, event, None, text)


CHAIN = Chain("j", "J", "s", (_hop("d:a", 3, "b()"), _hop("d:b", 7, "c()"), _hop("d:c", 9, "send()")))


def _with(*hops: Hop) -> Chain:
    return dataclasses.replace(CHAIN, hops=hops)


@pytest.mark.parametrize(
    ("new", "lines", "changed"),
    [
        (CHAIN, [], 0),
        (_with(*(dataclasses.replace(h, func=dataclasses.replace(h.func, source=Source("d", "1.1", "d/x.py"))) for h in CHAIN.hops)), ["versions: d 1.0 → 1.1 (hops 1, 2, 3)"], 0),
        (_with(CHAIN.hops[0], _hop("d:b", 8, "c(x)"), CHAIN.hops[2]), ["hop 2 d:b (main): line 7 → 8, line text 'c()' → 'c(x)'"], 1),
        (_with(CHAIN.hops[0], _hop("d:b", 7, "c()", thread="worker"), CHAIN.hops[2]), ["new hop 2 d:b (worker) line 7 via call", "no longer on the chain: hop 2 d:b (main) line 7"], 2),
        (_with(CHAIN.hops[0], CHAIN.hops[2]), ["no longer on the chain: hop 2 d:b (main) line 7"], 1),
        (_with(CHAIN.hops[1], CHAIN.hops[0], CHAIN.hops[2]), ["hop 1 d:b (main) moved from hop 2"], 1),
        (_with(CHAIN.hops[0], dataclasses.replace(CHAIN.hops[1], edge="wake-up"), CHAIN.hops[2]), ["hop 2 d:b (main): edge call → wake-up"], 1),
        (_with(*(dataclasses.replace(h, event=h.event + 5) for h in CHAIN.hops)), ["event indices changed (hops 1, 2, 3): the trace around them changed"], 0),
    ],
)
def test_chain_differences_are_named_by_hop_and_field(new, lines, changed):
    d = diff.compare_chains("j", CHAIN, new)
    assert diff.describe(d) == lines
    assert d.hops_changed == changed


def test_summary_of_a_version_only_upgrade():
    old = _pin("python-engineio", "4.13.3", {"engineio/client.py": "1", "engineio/socket.py": "2"})
    new = dataclasses.replace(old, version="4.13.2", tag="v4.13.2", commit="d" * 40, files=(old.files[0].__class__("engineio/client.py", "engineio/client.py", "3"), old.files[1]))
    bumped = _with(*(dataclasses.replace(h, func=dataclasses.replace(h.func, source=Source("d", "1.1", "d/x.py"))) for h in CHAIN.hops))
    text = diff.report("HEAD", {"j": CHAIN, "k": CHAIN}, {"j": bumped, "k": CHAIN}, [old], [new], order=("k", "j"))
    assert text.splitlines()[2] == "python-engineio 4.13.3 → 4.13.2; 0 hops changed in 2 journeys; links moved to python-engineio `dddddddddddd` (v4.13.2)."
    assert "| python-engineio | 4.13.3 → 4.13.2 | `cccccccccccc` (v4.13.3) → `dddddddddddd` (v4.13.2) | 1: `engineio/client.py` (none on a chain) |" in text
    assert text.index("| k |") < text.index("| j |")
    assert "No annotation is stale or missing." in text
