"""Shared pytest options, fixtures and helpers (test modules import helpers from here, never from each other).

- `--update-gold` rewrites the golden files under tests/gold/;
- `git`, `make_repo`, `hash_object`: real git repositories under tmp_path;
- `install`: a fake installed distribution (dist-info METADATA + RECORD) in a site folder;
- `RepoServer`, `commit_files`: a raw-content host on 127.0.0.1 serving such a repository;
- `trace_of`: a tiny program of tests/programs/ recorded and normalized;
- the `slow` marker goes on every test that records, builds the site or starts processes
  (`make test-fast` runs the others); the browser tests skip with one line without Chromium.
"""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sysconfig
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from dispel.pins import stage as pins_stage
from dispel.pins.installed import PYTHON_VERSION
from dispel.project import Project
from dispel.record.cores import recorder_for
from dispel.run import browser
from dispel.tracefiles import recording as tracefiles_recording
from dispel.tracefiles.codec import Root
from programs import threads as prog

GOLD = Path(__file__).parent / "gold"


# Modules whose every test records, builds the site or starts processes (git, servers, dispel).
SLOW_MODULES = {
    "test_audit", "test_bad_input", "test_browser", "test_check_online", "test_gitinfo",
    "test_pins", "test_report", "test_scale", "test_scenario", "test_site",
}


# The Python that recorded the project's traces, when it is not this one: the committed chains
# and pages quote its standard library, which only it has (None on that Python).
TRACED_PYTHON = pins_stage.foreign_python(Project())
ON_TRACED_PYTHON = (
    f"tests of the committed traces skipped: they were recorded on Python {TRACED_PYTHON}, this is {PYTHON_VERSION} "
    f"(`make test PY=python{(TRACED_PYTHON or '').rpartition('.')[0]}` with CPython {TRACED_PYTHON} runs them)"
)


# Tests whose recordings must come out exactly as another recording does (the same journeys, hop
# for hop, or the committed annotations' hops) while a background task or a broadcast races the
# writer's polls: `make test` runs them alone, after the others, so that no second worker loads the
# machine while they record (a writer that takes two packets in one poll changes a chain).
SERIAL_MODULES = {"test_install", "test_redaction", "test_cores", "test_live", "test_app_shapes"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the slow tests and those that record alone, skip the browser's where it cannot run,
    and those of the committed traces on another Python than theirs (one reason line each)."""
    why = browser.unavailable()
    for item in items:
        if item.module.__name__ in SERIAL_MODULES:
            item.add_marker(pytest.mark.serial)
        if item.module.__name__ in SLOW_MODULES or item.get_closest_marker("browser") or item.get_closest_marker("scale"):
            item.add_marker(pytest.mark.slow)
        if why and item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.skip(reason=f"browser tests skipped: {why}"))
        elif TRACED_PYTHON and item.get_closest_marker("traced_python"):
            item.add_marker(pytest.mark.skip(reason=ON_TRACED_PYTHON))


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """One line per skip reason, however many tests it skipped."""
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, n in sorted(reasons.items()):
        terminalreporter.write_line(f"skipped {n} test(s): {reason}")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-gold", action="store_true", help="rewrite tests/gold/* from the current output")


@pytest.fixture
def gold(request: pytest.FixtureRequest):
    """Compare text with tests/gold/<name>; with --update-gold, write it instead."""
    update = request.config.getoption("--update-gold")

    def check(name: str, text: str) -> None:
        path = GOLD / name
        if update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8", newline="\n")
            return
        assert path.is_file(), f"no golden file {path}; run pytest --update-gold and review it"
        assert text == path.read_text(encoding="utf-8"), f"{name} differs from its golden file; review, then pytest --update-gold"

    return check


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project's committed docs/ and traces/ to break.

    Taken from git HEAD when there is one, so work in progress in the checkout does not leak in.
    """
    copy = tmp_path / "project"
    copy.mkdir()
    if (Project().root / ".git").exists():
        archive = subprocess.run(["git", "-C", str(Project().root), "archive", "HEAD", "docs", "traces"], capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(copy, filter="data")
    else:
        shutil.copytree(Project().root / "docs", copy / "docs")
        shutil.copytree(Project().root / "traces", copy / "traces")
    return copy



# --------------------------------------------------------------------------- git repositories


GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str, stdin: bytes | None = None) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, input=stdin, capture_output=True, check=True, env=os.environ | GIT_ENV
    )
    return done.stdout.decode().strip()


def hash_object(path: Path) -> str:
    """The blob SHA-1 of a file, as git computes it."""
    return git(path.parent, "hash-object", "--", path.name)


def make_repo(
    root: Path, files: dict[str, str | bytes], tags: dict[str, bool] | None = None
) -> Path:
    """A repository at ``root`` with one commit of ``files``; ``tags``: name -> annotated?"""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "release")
    for tag, annotated in (tags or {}).items():
        git(root, "tag", *(["-a", "-m", f"release {tag}"] if annotated else []), tag)
    return root


def install(site: Path, name: str, version: str, files: dict[str, str], urls: list[str]) -> None:
    """A fake installed distribution: files plus a dist-info with METADATA and RECORD."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    meta += [f"Project-URL: {u}" for u in urls]
    (info / "METADATA").write_text("\n".join(meta) + "\n")
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
    record = [f"{rel},," for rel in files] + [f"{info.name}/METADATA,,", f"{info.name}/RECORD,,"]
    (info / "RECORD").write_text("\n".join(record) + "\n")


# --------------------------------------------------------------------------- a raw-content host on 127.0.0.1


MODULE = '''"""A module."""


class Server:
    def emit(self, event):
        packet = encode(event)
        return send(packet)


def encode(event):
    return str(event)
'''


class RepoServer:
    """Serves ``/OWNER/NAME/REF/PATH`` from ``files`` {(ref, path): bytes}; ``/flaky/…`` answers 429
    once per path before the file, ``/hang/…`` never answers until the test ends."""

    def __init__(self, files: dict[tuple[str, str], bytes]) -> None:
        self.files = files
        self.hits: dict[str, int] = {}
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                mode, _, rest = self.path.lstrip("/").partition("/")
                if mode == "hang":
                    outer.release.wait(10)
                    return
                if mode == "flaky" and outer.hits[self.path] == 1:
                    self.send_response(429)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                parts = (rest if mode in ("flaky", "repo") else "").split("/", 3)
                body = outer.files.get((parts[2], parts[3])) if len(parts) == 4 else None
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def base(self, mode: str = "repo") -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{mode}"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def commit_files(repo: Path) -> dict[tuple[str, str], bytes]:
    """Every file of every commit (and of branch main) of a test repository, as a server serves them."""
    files = {}
    for ref in git(repo, "rev-list", "--all").split() + ["main"]:
        for path in git(repo, "ls-tree", "-r", "--name-only", ref).split("\n"):
            files[(ref, path)] = git(repo, "show", f"{ref}:{path}").encode() + b"\n"
    return files


# --------------------------------------------------------------------------- tiny programs under the recorder


PROGRAMS = str(Path(prog.__file__).parent) + "/"
STDLIB = sysconfig.get_paths()["stdlib"]


def want(code) -> bool:
    return code.co_filename.startswith((PROGRAMS, f"{STDLIB}/threading.py", f"{STDLIB}/queue.py"))


ROOTS = [
    Root(PROGRAMS, str(Path(PROGRAMS).parent), "tests", "0"),
    Root(STDLIB + "/", STDLIB, "python", PYTHON_VERSION, "Lib/"),
]


def record(fn, recorder=None):
    recorder = recorder or recorder_for(want)  # the core DISPEL_CORE names, else the default
    with recorder:
        result = fn()
    return result, recorder


def trace_of(fn):
    _, rec = record(fn)
    return tracefiles_recording.trace_from_recording(rec, fn.__name__, 0, ROOTS, {})
