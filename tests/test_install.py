"""dispel installed into a user's environment at the oldest supported set (constraints/oldest.txt).

A wheel is built from a git clone of HEAD (`pip wheel --no-deps`): it holds the package `dispel`
only, the sample app (dispel.sample_app) and its scenario files and templates inside it. A venv
gets the oldest set from the registry, then `pip install` of that wheel (not editable), which
imports from any folder and reads nothing from a repository; its `dispel report` traces an example app with no git and no network (the committed
lock of the oldest set, traces/oldest/pins.lock.json, is reused) and `dispel check --root`
passes. The journeys are compared with the same app's report at the lock's versions (this venv).
Skipped with one line when pip cannot reach the registry. About 50-85 s on 2 cores (the venv and
both reports are built once per session; measured 51 s wall alone, 83 s beside another suite; 20 s CPU).
"""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from dispel.catalog import DIST_NAMES
from dispel.model import Lock, Pin
from dispel.pins.installed import distributions
from dispel.pins.pinning import lock_from_json, lock_to_json
from dispel.project import Project, dump_json
from dispel.report import committed_lock, report_dists
from dispel.review.oldest_venv import site_packages
from dispel.tracefiles.codec import chain_from_dict

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "tests" / "programs" / "apps"
CONSTRAINTS = ROOT / "constraints" / "oldest.txt"
OLDEST_LOCK = ROOT / "traces" / "oldest" / "pins.lock.json"
APP = "ticker"  # plain Flask-SocketIO (ns_chat uses what 5.3.4 does not have: the catch-all '*', on_disconnect(reason))
# pip's words when the registry cannot be reached (then the test is skipped, not failed)
UNREACHABLE = ("NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution",
               "Max retries exceeded", "ProxyError", "Network is unreachable", "No matching distribution found")


def oldest_set() -> dict[str, str]:
    """constraints/oldest.txt: normalized name -> version."""
    pairs = (ln.split("#")[0].strip().partition("==") for ln in CONSTRAINTS.read_text().splitlines())
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, _, version in pairs if name}


def run(argv: list, cwd: Path = ROOT, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def pip(venv: Path, *args) -> None:
    proc = run([venv / "bin" / "python", "-m", "pip", "--disable-pip-version-check", "--retries", "1", "--timeout", "30", *args])
    if proc.returncode != 0:
        said = proc.stderr + proc.stdout
        if any(w in said for w in UNREACHABLE):
            pytest.skip(f"oldest-set install tests skipped: pip cannot reach the registry ({said.strip().splitlines()[-1]})")
        raise AssertionError(f"pip {' '.join(map(str, args))} failed:\n{said}")


def freeze(venv: Path) -> list[str]:
    return run([venv / "bin" / "python", "-m", "pip", "freeze", "--disable-pip-version-check"]).stdout.splitlines()


def no_network_env() -> dict:
    """git may read local repositories only: a report that tried the network would fail."""
    return {**os.environ, "GIT_ALLOW_PROTOCOL": "file"}


@pytest.fixture(scope="session")
def dispel_wheel(tmp_path_factory) -> Path:
    """dispel's wheel, as a user would build it: `pip wheel --no-deps` of a git clone of HEAD
    (what is committed, nothing else of this checkout), by this environment's pip."""
    tmp = tmp_path_factory.mktemp("wheel")
    clone = tmp / "dispel"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    pip(Path(sys.prefix), "wheel", "--quiet", "--no-deps", "--wheel-dir", tmp / "dist", clone)
    (wheel,) = (tmp / "dist").glob("dispel-*.whl")
    return wheel


@pytest.fixture(scope="session")
def oldest_venv(tmp_path_factory, dispel_wheel) -> tuple[Path, list[str], list[str]]:
    """A venv at the oldest set with dispel installed (not editable) from its wheel;
    with ``pip freeze`` before and after dispel's install."""
    venv = tmp_path_factory.mktemp("oldest") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip(venv, "install", "--quiet", "-r", CONSTRAINTS)
    before = freeze(venv)
    pip(venv, "install", "--quiet", dispel_wheel)
    return venv, before, freeze(venv)


def build_report(python: Path, out: Path) -> Path:
    proc = run([python, "-m", "dispel", "report", "--scenario", f"{APP}.toml", "--out", out], cwd=APPS, env=no_network_env())
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="session")
def oldest_report(oldest_venv, tmp_path_factory) -> Path:
    return build_report(oldest_venv[0] / "bin" / "python", tmp_path_factory.mktemp("oldest-report") / "report")


@pytest.fixture(scope="session")
def newest_report(tmp_path_factory) -> Path:
    """The same app's report at the lock's versions (this environment, `make site`'s)."""
    return build_report(Path(sys.executable), tmp_path_factory.mktemp("lock-report") / "report")


def chains_of(report: Path) -> dict:
    return {p.stem: chain_from_dict(json.loads(p.read_text())) for p in sorted((report / "traces" / "chains").glob("*.json"))}


@pytest.mark.slow
def test_install_adds_packages_only(oldest_venv):
    venv, before, after = oldest_venv
    assert set(before) <= set(after), f"pip install of dispel changed: {sorted(set(before) - set(after))}"
    installed = {re.sub(r"[-_.]+", "-", ln.partition("==")[0]).lower(): ln.partition("==")[2] for ln in after}
    assert {d: installed.get(d) for d in oldest_set()} == oldest_set()
    # the package carries what a report reads: nothing comes from a repository
    shipped = run([venv / "bin" / "python", "-c", "from dispel.project import HERE, SHIPPED; print(HERE == SHIPPED)"], cwd=APPS)
    assert shipped.stdout.strip() == "True", shipped.stderr


@pytest.mark.slow
def test_the_wheel_holds_the_package_dispel_only_with_the_sample_app_inside(dispel_wheel):
    """No top-level package but dispel (the sample app is dispel.sample_app); every committed file
    of the sample that runs or is read (modules, scenario files, templates) is in it, and nothing
    built beside it (node_modules, bytecode)."""
    names = zipfile.ZipFile(dispel_wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"dispel"} and len(tops) == 2, sorted(tops)
    listed = run(["git", "ls-files", "scripts/dispel/sample_app"]).stdout.split()
    wanted = {f.removeprefix("scripts/") for f in listed if f.endswith((".py", ".toml", ".html"))}
    assert {"dispel/sample_app/app.py", "dispel/sample_app/queue.toml", "dispel/sample_app/templates/chat.html"} <= wanted
    assert wanted <= set(names), sorted(wanted - set(names))
    assert not [n for n in names if "node_modules" in n or "__pycache__" in n]
    tops_txt = next((n for n in names if n.endswith(".dist-info/top_level.txt")), None)
    if tops_txt:
        assert zipfile.ZipFile(dispel_wheel).read(tops_txt).decode().split() == ["dispel"]


@pytest.mark.slow
def test_the_installed_package_imports_from_any_folder_and_reads_no_repository(oldest_venv, tmp_path):
    """From a folder outside the repository: dispel.catalog imports (it reads the queue scenario's
    file at import), from site-packages; the sample app is dispel.sample_app there, and no top-level
    sample_app exists."""
    venv = oldest_venv[0]
    code = ("import importlib.util, dispel.catalog as c, dispel.sample_app as s, dispel.project as p\n"
            "print(c.PROCESS_SCENARIO_FILES['queue']); print(s.__file__); print(p.HERE == p.SHIPPED)\n"
            "print(importlib.util.find_spec('sample_app'))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = run([venv / "bin" / "python", "-c", code], cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    queue, sample, shipped, top = proc.stdout.splitlines()
    site = site_packages(venv)
    assert site is not None
    assert Path(queue) == site / "dispel" / "sample_app" / "queue.toml" and Path(queue).is_file()
    assert Path(sample) == site / "dispel" / "sample_app" / "__init__.py"
    assert (shipped, top) == ("True", "None")


@pytest.mark.slow
def test_the_installed_sample_app_is_traced_as_the_app(oldest_venv, tmp_path):
    """The sample's own scenario file, from the installed package, run from a folder outside the
    repository: its folder in site-packages is the app's root and its modules the app's (dispel's
    own package and site-packages are not, but for dispel.sample_app), the report's app hops are
    dispel.sample_app's (its files copied into the report), and no other dispel module is traced."""
    venv = oldest_venv[0]
    site = site_packages(venv)
    assert site is not None
    proc = run([venv / "bin" / "dispel", "report", "--scenario", site / "dispel" / "sample_app" / "chat.toml", "--out",
                tmp_path / "report", "--no-site"], cwd=tmp_path, env=no_network_env())
    assert proc.returncode == 0, proc.stderr
    # the scenario's root is the sample's folder in site-packages: its modules are the app's there
    said = re.search(r"^app: root (.*), (\d+) app modules \((.*)\)$", proc.stdout, re.MULTILINE)
    assert said and Path(said.group(1)).resolve() == (site / "dispel" / "sample_app").resolve(), proc.stdout
    assert said.group(3).split(", ") == ["dispel.sample_app", "dispel.sample_app.app"], said.group(0)
    report = tmp_path / "report"
    trace = json.loads((report / "traces" / "chat.json").read_text())
    funcs = [f for f in trace["funcs"] if f[0].split(".")[0] == "dispel"]
    assert {f[0] for f in funcs} == {"dispel.sample_app", "dispel.sample_app.app"}, sorted({f[0] for f in funcs})
    assert {f[2] for f in funcs} == {"sample_app"}
    assert {"on_connect", "on_chat", "on_join", "on_shout", "on_disconnect"} <= {f[1] for f in funcs}
    assert (report / "app" / "dispel" / "sample_app" / "app.py").read_bytes() == (site / "dispel" / "sample_app" / "app.py").read_bytes()
    assert {"on-chat", "emit-reply", "ack-shout", "disconnect"} <= {p.stem for p in (report / "traces" / "chains").glob("*.json")}


@pytest.mark.slow
def test_missing_extra_is_named_in_one_line(oldest_venv):
    venv = oldest_venv[0]
    proc = run([venv / "bin" / "python", "-c", "from dispel.run.browser import selenium_missing; print(selenium_missing())"], cwd=APPS)
    assert proc.stdout.strip().count("\n") == 0 and "pip install 'dispel[browser]'" in proc.stdout, proc.stderr


@pytest.mark.slow
def test_report_at_the_oldest_set_links_its_commits(oldest_report):
    """Flask-SocketIO's links are at the commit of the installed version's tag (the committed
    oldest lock's entry), reused without git or the network; the report names its versions."""
    oldest = lock_from_json(json.loads(OLDEST_LOCK.read_text()))
    used = lock_from_json(json.loads((oldest_report / "traces" / "pins.lock.json").read_text()))
    wanted = oldest_set()
    for dist in DIST_NAMES:
        pin = used.pin(dist)
        assert pin.version == wanted[dist] and pin == oldest.pin(dist), dist
    fsio = used.pin("flask-socketio")
    assert fsio.tag == f"v{wanted['flask-socketio']}"
    pages = "".join(p.read_text() for p in sorted((oldest_report / "docs" / "chains").glob("*.md")))
    links = set(re.findall(r"github\.com/miguelgrinberg/Flask-SocketIO/blob/([0-9a-f]+)/", pages))
    assert links == {fsio.commit}
    index = (oldest_report / "docs" / "index.md").read_text()
    assert f"| flask-socketio | {wanted['flask-socketio']} |" in index


@pytest.mark.slow
def test_same_journeys_at_both_ends(oldest_report, newest_report):
    """The same journey names come out at the oldest set as at the lock's versions, each ending
    where it ends there: at the socket (or, for a handler's journey, at the app's handler)."""
    old, new = chains_of(oldest_report), chains_of(newest_report)
    assert list(old) == list(new) and old
    for name, chain in old.items():
        end = chain.hops[-1].func
        assert end.key == new[name].hops[-1].func.key, name
        assert end.module in ("_socket", "socket") or end.source.dist == "sample_app", f"{name} ends at {end.key}"
    assert sum(c.hops[-1].func.module == "_socket" for c in old.values()) >= len(old) - 3


@pytest.mark.slow
def test_check_root_passes_at_the_oldest_set(oldest_venv, oldest_report):
    """Every link proven, and every wire value with its maker or reader on its chain: the disconnect's
    CLOSE decoded on the request thread, the close code the reader's answer echoes."""
    proc = run([oldest_venv[0] / "bin" / "dispel", "check", "--root", oldest_report], cwd=APPS, env=no_network_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"links checked: (\d+), verified: \1, failed: 0", proc.stdout + proc.stderr)
    m = re.search(r"completeness: (\d+) of (\d+) wire values", proc.stdout + proc.stderr)
    assert m and m.group(1) == m.group(2) and int(m.group(2)) > 0, proc.stdout


def def_of(tree: ast.AST, qualname: str) -> ast.AST:
    """The def (or class) node of ``qualname`` (``Class.method``, ``function``) in a parsed file."""
    node = tree
    for name in qualname.split("."):
        node = next(n for n in ast.iter_child_nodes(node)
                    if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == name)
    return node


@pytest.mark.slow
def test_audit_grades_a_draft_against_its_own_report(oldest_venv, oldest_report, tmp_path):
    """A hand-written report citing SocketIO.run, SocketIO.on, _handle_event and emit at v5.3.4's
    lines: the lines are read from the files installed in the oldest venv (their def lines, and the
    line of _handle_event that calls start_background_task), linked at the commits of the report's
    lock. Each link is on a hop of that report's chains (files read through the lock: no git, no
    network); a call-site label holds, and `handle_request()` on a line of _handle_event is flagged."""
    lock = lock_from_json(json.loads((oldest_report / "traces" / "pins.lock.json").read_text()))
    site = site_packages(oldest_venv[0])
    assert lock.pin("flask-socketio").tag == f"v{oldest_set()['flask-socketio']}"

    def url(dist: str, installed: str, line: int) -> str:
        pin = lock.pin(dist)
        path = next(f.path for f in pin.files if f.installed == installed)
        return f"https://github.com/{pin.repo}/blob/{pin.commit}/{path}#L{line}"

    fsio, server = "flask_socketio/__init__.py", "socketio/server.py"
    trees = {f: ast.parse((site / f).read_text(encoding="utf-8")) for f in (fsio, server)}
    cited = [("flask-socketio", fsio, "SocketIO.run"), ("flask-socketio", fsio, "SocketIO.on"),
             ("python-socketio", server, "Server._handle_event"), ("flask-socketio", fsio, "emit")]
    handle_event = def_of(trees[server], "Server._handle_event")
    call = next(n for n in ast.walk(handle_event)
                if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "start_background_task")
    draft = tmp_path / "draft.md"
    draft.write_text(
        "".join(f"- [`{q.rsplit('.', 1)[-1]}()`]({url(d, f, def_of(trees[f], q).lineno)})\n" for d, f, q in cited)
        + f"- [`start_background_task()` runs the handler]({url('python-socketio', server, call.lineno)})\n"
        + f"- [`handle_request()` is called]({url('python-socketio', server, call.lineno)})\n"
    )
    proc = run([oldest_venv[0] / "bin" / "dispel", "audit", draft, "--chains", oldest_report / "traces" / "chains", "--json"],
               cwd=tmp_path, env=no_network_env())
    assert proc.returncode == 0, proc.stderr
    links = json.loads(proc.stdout)["links"]
    functions = ["flask_socketio:SocketIO.run", "flask_socketio:SocketIO.on", "socketio.server:Server._handle_event", "flask_socketio:emit"]
    assert [v["function"] for v in links] == functions + [functions[2]] * 2
    assert all(v["resolves"] == "yes" and v["via"] == "lock" and v["on_chain"] not in ("", "no", "unknown") for v in links), links
    assert [v["mislabelled"] for v in links] == [False] * 5 + [True]


# ------------------------------------------------------------------ fast: the committed locks a report starts from


def test_report_reuses_the_committed_lock_at_the_installed_version(tmp_path):
    """Per distribution, the entry of a committed lock at the installed version; none where no lock has it."""
    project = Project(tmp_path)
    main = lock_from_json(json.loads(Project().lock.read_text()))
    installed = {n: d.version for n, d in distributions(DIST_NAMES).items()}
    other = Lock(main.python, tuple(
        Pin(p.dist, "0.0" if p.dist == "flask" else p.version, p.forge, p.repo, p.tag, p.commit, p.pinned, p.files)
        for p in main.dists))
    (tmp_path / "traces" / "older").mkdir(parents=True)
    (tmp_path / "traces" / "older" / "pins.lock.json").write_text(dump_json(lock_to_json(other)))
    seed = committed_lock(project, DIST_NAMES)
    at_installed = {p.dist for p in main.dists if installed.get(p.dist) == p.version}
    assert {p.dist for p in seed.dists} == at_installed - {"flask"}
    (tmp_path / "traces" / "pins.lock.json").write_text(dump_json(lock_to_json(main)))
    assert Project(tmp_path).locks[0] == project.lock
    assert {p.dist: p for p in committed_lock(project, DIST_NAMES).dists} == {p.dist: p for p in main.dists if p.dist in at_installed}


def test_report_pins_redis_only_when_the_app_ran_it():
    class Trace:
        def __init__(self, dists):
            self.funcs = {i: type("F", (), {"source": type("S", (), {"dist": d})()})() for i, d in enumerate(dists)}

    assert "redis" not in report_dists(Trace(["flask", "sample_app"]))
    assert "redis" in report_dists(Trace(["flask", "redis"]))
    assert set(DIST_NAMES) <= set(report_dists(Trace([])))
