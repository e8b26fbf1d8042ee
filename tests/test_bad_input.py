"""Bad input to every command: one clear error line, a non-zero exit, nothing half-written."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def work(tmp_path):
    """A scratch copy of what commands read: traces (with chains), docs (with annotations), the lock."""
    shutil.copytree(ROOT / "traces", tmp_path / "traces")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    (tmp_path / "empty").mkdir()
    (tmp_path / "not-git").mkdir()
    (tmp_path / "report.md").write_text("see https://github.com/a/b/blob/main/x.py#L1\n")
    return tmp_path


def breaks(work: Path, what: str) -> None:
    if what == "corrupt-trace":
        (work / "traces" / "chat.json").write_text('{"schema": 1, "events": [')
    elif what == "old-schema":
        text = (work / "traces" / "chat.json").read_text().replace('"schema": 1', '"schema": 0', 1)
        (work / "traces" / "chat.json").write_text(text)
    elif what == "corrupt-chain":
        (work / "traces" / "chains" / "emit.json").write_text("[1, 2")
    elif what == "bad-step":
        (work / "bad.toml").write_text('[app]\nimport = "app:socketio"\n[clients.a]\n[[steps]]\ndo = "connect"\n'
                                       '[[steps]]\ndo = "http"\nmethod = "POST"\n')
    elif what == "bad-bytes":
        (work / "bad.toml").write_text('[app]\nimport = "app:socketio"\n[clients.a]\n[[steps]]\ndo = "connect"\n'
                                       '[[steps]]\ndo = "emit"\nevent = "up"\ndata = { bytes = "hex:zz" }\n')
    elif what == "bad-annotation":
        with (work / "docs" / "annotations" / "journeys.yml").open("a") as fh:
            fh.write("\nbroken: [unclosed\n")


CASES = [
    # (id, how to break the copy, argv (WORK is replaced), what the error line must say)
    ("unknown scenario", None, ["record", "nope", "--out", "WORK/out"], "unknown scenario 'nope'"),
    ("bad redact regex", None, ["record", "chat", "--redact", "(", "--out", "WORK/out"], "--redact '(' is not a valid regular expression"),
    ("no traces", None, ["chains", "--traces", "WORK/empty"], "no trace files"),
    ("truncated trace", "corrupt-trace", ["chains", "--traces", "WORK/traces"], "is not valid JSON"),
    ("other schema", "old-schema", ["chains", "--traces", "WORK/traces"], "schema 0"),
    ("unknown journey", None, ["chains", "nope", "--traces", "WORK/traces"], "unknown journey 'nope'"),
    ("git-dir not a repository", None, ["pin", "--git-dir", "pallets/flask=WORK/not-git", "--lock", "WORK/out/lock.json"], "not a git repository"),
    ("git-dir malformed", None, ["pin", "--git-dir", "no-equals-sign", "--lock", "WORK/out/lock.json"], "OWNER/REPO=PATH"),
    ("corrupt chain", "corrupt-chain", ["render", "--chains", "WORK/traces/chains", "--out", "WORK/docs"], "emit"),
    ("annotation syntax error", "bad-annotation", ["render", "--chains", "WORK/traces/chains", "--out", "WORK/docs"], "journeys.yml"),
    ("unreadable report", None, ["audit", "WORK/no-such-report.md"], "no-such-report.md"),
    ("audit unknown git-dir", None, ["audit", "WORK/report.md", "--git-dir", "x=WORK/not-git"], "--git-dir"),
    ("bench zero reps", None, ["bench", "--reps", "0"], "--reps"),
    ("report: http step without path", "bad-step", ["report", "--scenario", "WORK/bad.toml", "--out", "WORK/out"],
     "bad.toml: steps[2] (http, client a): missing 'path'"),
    ("report: bytes not hex", "bad-bytes", ["report", "--scenario", "WORK/bad.toml", "--out", "WORK/out"],
     "bad.toml: steps[2] (emit, client a): bytes = 'hex:zz': after 'hex:' come pairs of hex digits"),
]


@pytest.mark.parametrize("case, broken, argv, needle", CASES, ids=[c[0] for c in CASES])
def test_one_clear_line_and_nothing_written(work, case, broken, argv, needle):
    if broken:
        breaks(work, broken)
    before = snapshot(work)
    argv = [a.replace("WORK", str(work)) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "dispel", *argv], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode != 0, proc.stdout
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("dispel: error:")]
    assert len(errors) == 1, proc.stderr
    assert needle in errors[0], errors[0]
    assert "Traceback" not in proc.stderr
    assert snapshot(work) == before, "a failing command must leave every file as it was"


# --------------------------------------------------------------------------- your own app

APP = '''from flask import Flask
from flask_socketio import SocketIO

app = Flask(__name__)
socketio = SocketIO(app, async_mode="MODE")


@socketio.on("ping")
def on_ping(data):
    return data
'''
FACTORY = '''from flask import Flask


def create_app():
    return Flask(__name__)
'''
RAISES = APP.replace("MODE", "threading").replace("    return data", "    raise ValueError(f'cannot handle {data!r}')")
SCENARIO = '[app]\nimport = "IMPORT"\nFACTORY\n[clients.a]\n[[steps]]\ndo = "connect"\n[[steps]]\ndo = "disconnect"\n'
ACKED = '[[steps]]\ndo = "emit"\nevent = "ping"\ndata = "x"\nack = true\ntimeout = 1\n'

APP_CASES = [
    # (id, files of the project (name -> text), [app] import, factory, extra argv, what the one error line must say)
    ("async mode eventlet", {"chat.py": APP.replace("MODE", "eventlet")}, "chat:socketio", False, [],
     ("async_mode='eventlet': dispel does not trace eventlet, whose maintainers discourage new use and plan its retirement; "
     "run the app with async_mode=\"gevent\"")),
    ("async mode conflict", {"chat.py": APP.replace("MODE", "threading")}, "chat:socketio", 'async_mode = "gevent"', [],
     "async_mode: the app asks for 'threading', the scenario file for 'gevent'"),
    ("async mode eventlet from the file", {"chat.py": APP.replace('SocketIO(app, async_mode="MODE")', "SocketIO(app)")}, "chat:socketio",
     'async_mode = "eventlet"', [], "async_mode='eventlet': dispel does not trace eventlet"),
    ("app file queue.py", {"chat.py": APP.replace("MODE", "threading"), "queue.py": "JOBS = []\n"}, "chat:socketio", False, [],
     "queue.py shadows the standard library's module 'queue'"),
    ("app file select.py", {"chat.py": APP.replace("MODE", "threading"), "select.py": "CHOICES = []\n"}, "chat:socketio", False, [],
     "select.py shadows the standard library's module 'select'"),
    ("factory without SocketIO", {"factory.py": FACTORY}, "factory:create_app", True, [],
     "the factory factory:create_app returned a Flask app without Flask-SocketIO; call socketio.init_app(app)"),
    ("no app code under the root", {"chat.py": APP.replace("MODE", "threading")}, "chat:socketio", False, ["--root", "WORK/empty"],
     "no code of the app was traced: nothing under the project root"),
    ("root not a folder", {"chat.py": APP.replace("MODE", "threading")}, "chat:socketio", False, ["--root", "WORK/nope"],
     "is not a folder; name the folder that holds the app's code"),
    ("handler raises, ack awaited", {"chat.py": RAISES}, "chat:socketio", False, [],
     ("steps[2] (emit 'ping', client a) failed: TimeoutError: no answer within the step's deadline; "
     "in this step the app raised ValueError: cannot handle 'x' (raised at chat.py:10 in on_ping)")),
]


@pytest.mark.parametrize("files, target, factory, extra, needle", [c[1:] for c in APP_CASES], ids=[c[0] for c in APP_CASES])
def test_own_app_one_clear_line_and_nothing_written(tmp_path, files, target, factory, extra, needle):
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "empty").mkdir()
    for name, text in files.items():
        (project / name).write_text(text)
    text = SCENARIO.replace("IMPORT", target).replace("FACTORY", factory if isinstance(factory, str) else "factory = true" if factory else "")
    if "raise ValueError" in files.get("chat.py", ""):
        text = text.replace('[[steps]]\ndo = "disconnect"', ACKED + '[[steps]]\ndo = "disconnect"')
    (project / "scenario.toml").write_text(text)
    before = snapshot(tmp_path)
    argv = ["report", "--scenario", "scenario.toml", "--out", str(tmp_path / "out"), *[a.replace("WORK", str(tmp_path)) for a in extra]]
    proc = subprocess.run([sys.executable, "-m", "dispel", *argv], capture_output=True, text=True, cwd=project, timeout=300)
    assert proc.returncode != 0, proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("dispel: error:"), proc.stderr
    assert needle in lines[0], lines[0]
    after = {k: v for k, v in snapshot(tmp_path).items() if "__pycache__" not in k}
    assert after == before, "a failing report must leave every file as it was"
