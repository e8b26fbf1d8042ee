"""`dispel report` on the example apps of tests/programs/apps: derived journeys hop by hop, the
site built, regeneration byte-identical, bad input one line and a non-zero exit."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dispel.model import EDGE_ENTRY, EDGE_THREAD_START, EDGE_WAKE
from dispel.tracefiles.codec import chain_from_dict

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "tests" / "programs" / "apps"


def dispel(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dispel", *argv], cwd=cwd, capture_output=True, text=True, timeout=300)


def build(tmp: Path, name: str, out: str = "report") -> Path:
    """Build the report of an example app as a new user would: from the app's folder."""
    proc = dispel("report", "--scenario", f"{name}.toml", "--out", str(tmp / out), cwd=APPS)
    assert proc.returncode == 0, proc.stderr
    return tmp / out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def chains_of(report: Path) -> dict:
    return {p.stem: chain_from_dict(json.loads(p.read_text())) for p in sorted((report / "traces" / "chains").glob("*.json"))}


def funcs(chain) -> list[str]:
    return [h.func.key for h in chain.hops]


def sent(chain) -> str:
    """The observed value of the chain's last hop (a socket send's bytes)."""
    return chain.hops[-1].value or ""


@pytest.fixture(scope="module")
def ns_chat(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("ns_chat"), "ns_chat")


@pytest.fixture(scope="module")
def ticker(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("ticker"), "ticker")


def test_namespace_app_journeys(ns_chat):
    found = chains_of(ns_chat)
    assert list(found) == sorted(
        ["run", "handshake", "connect", "on-message-chat", "on-any", "emit-hello-chat", "emit-message-chat", "emit-seen", "disconnect"]
    )
    # on:message on /chat: from the socket read to the class's method, through the Namespace's dispatch
    on = funcs(found["on-message-chat"])
    # a class-based Namespace registers no event by name: no registration part
    assert on[0] == "_socket:socket.recv" and on[-1] == "ns_chat:ChatNamespace.on_message"
    assert on.index("socketio.server:Server._trigger_event") < on.index("flask_socketio.namespace:Namespace.trigger_event") \
        < on.index("flask_socketio:SocketIO._handle_event") < len(on) - 1
    hops = found["on-message-chat"].hops
    assert hops[0].thread.startswith("ws-reader") and hops[-1].thread.startswith("handler")
    assert EDGE_WAKE in {h.edge for h in hops}
    # the catch-all on /: python-socketio found no handler of 'mood', so '*' got it
    anyh = funcs(found["on-any"])
    # its registration first: the module body's @socketio.on('*') down to where the handler is stored
    assert anyh[:2] == ["ns_chat:<module>", "flask_socketio:SocketIO.on"]
    assert anyh[-2:] == ["flask_socketio:SocketIO._handle_event", "ns_chat:anything_else"]
    assert "flask_socketio:SocketIO.on.<locals>.decorator.<locals>._handler" in anyh
    assert "flask_socketio.namespace:Namespace.trigger_event" not in anyh
    # send() on /chat is an emit of 'message' to the sender, written by the writer thread
    emit = funcs(found["emit-message-chat"])
    assert emit[:4] == ["ns_chat:ChatNamespace.on_message", "flask_socketio:send", "flask_socketio:SocketIO.send", "flask_socketio:SocketIO.emit"]
    assert emit[-1] == "_socket:socket.send" and '42/chat,["message","echo: hi there"]' in sent(found["emit-message-chat"])
    assert found["emit-message-chat"].hops[-1].thread.startswith("eio-writer")
    assert '42["seen",{"event":"mood","data":"sunny"}]' in sent(found["emit-seen"])
    # connect on /chat: the class's on_connect runs before the CONNECT answer is sent
    conn = funcs(found["connect"])
    assert "ns_chat:ChatNamespace.on_connect" in conn and conn[-1] == "_socket:socket.send"
    assert "40/chat," in sent(found["connect"])
    # every journey starts with an entry
    for name, chain in found.items():
        assert chain.hops[0].edge == EDGE_ENTRY, name


def test_background_task_journeys(ticker):
    found = chains_of(ticker)
    assert list(found) == sorted(
        ["run", "handshake", "connect", "on-join", "on-leave", "ack-join", "emit-left", "broadcast-tick", "disconnect"]
    )
    tick = found["broadcast-tick"]
    keys = funcs(tick)
    # start_background_task in the join handler's thread, then the task's own thread
    assert keys[0] == "flask_socketio:SocketIO.start_background_task"
    assert "ticker:ticker" in keys and keys.index("ticker:ticker") < keys.index("flask_socketio:SocketIO.emit")
    assert EDGE_THREAD_START in {h.edge for h in tick.hops}
    task = tick.hops[keys.index("ticker:ticker")]
    assert task.thread != tick.hops[0].thread
    # to a room: the manager's emit fans out over the room's members
    assert "socketio.base_manager:BaseManager.get_participants" in keys
    assert '"tick"' in sent(tick) and '{"n":1}' in sent(tick)
    # the join's return value goes back as the ACK packet (the client's first ack id, 1)
    ack = found["ack-join"]
    assert funcs(ack)[0] == "_socket:socket.recv" and "ticker:on_join" in funcs(ack)
    assert '431[{"joined":"ticks"}]' in sent(ack)


def test_report_site_and_pages(ns_chat):
    pages = {p.stem for p in (ns_chat / "docs" / "chains").glob("*.md")}
    assert pages == set(chains_of(ns_chat))
    for page in pages:
        assert (ns_chat / "site" / "chains" / page / "index.html").is_file()
    emit = (ns_chat / "docs" / "chains" / "emit-message-chat.md").read_text()
    # the app's own hop: a generated text naming the handler's event, namespace and the line that emits
    assert "*Generated from the trace, not written by hand.* The app's handler of 'message' on namespace `/chat`" in emit
    assert "It emits 'message' at line 17: `send(f\"echo: {text}\")`" in emit
    index = (ns_chat / "docs" / "index.md").read_text()
    assert "## Not annotated" in index and "## How to read a chain" in index


def test_regenerating_a_report_is_byte_identical(ticker, tmp_path):
    again = build(tmp_path, "ticker")
    assert snapshot(again) == snapshot(ticker)


def test_report_replaces_only_its_own_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("mine")
    proc = dispel("report", "--scenario", "ticker.toml", "--out", str(tmp_path / "mine"), cwd=APPS)
    assert proc.returncode == 2 and "is not a report dispel built" in proc.stderr
    assert (tmp_path / "mine" / "keep.txt").read_text() == "mine"


RAISING = '''from flask import Flask
from flask_socketio import SocketIO

app = Flask(__name__)
socketio = SocketIO(app, async_mode="threading")


@socketio.on("boom")
def on_boom(data):
    raise ValueError(f"cannot handle {data!r}")
'''
STEPS = '[clients.a]\n[[steps]]\ndo = "connect"\n[[steps]]\ndo = "emit"\nevent = "boom"\ndata = "x"\n'
BAD = [
    ("missing module", '[app]\nimport = "nope:socketio"\n' + STEPS, "cannot import app module 'nope'"),
    ("missing attribute", '[app]\nimport = "raising:sockets"\n' + STEPS, "app module 'raising' has no attribute 'sockets'"),
    ("unhandled event", '[app]\nimport = "raising:socketio"\n' + STEPS.replace('"boom"', '"hello"')
     + '[[steps]]\ndo = "expect"\nevent = "hello-back"\ntimeout = 1\n',
     "steps[3] (expect 'hello-back', client a) failed: TimeoutError: expected 1 'hello-back' event(s)"),
    ("malformed TOML", '[app]\nimport = "raising:socketio"\n[clients.a]\ntransport = websocket\n', "scenario.toml:4:13: not valid TOML"),
]


@pytest.mark.parametrize("text, needle", [(t, n) for _, t, n in BAD], ids=[c[0] for c in BAD])
def test_bad_input_one_line_nonzero_nothing_written(tmp_path, text, needle):
    (tmp_path / "raising.py").write_text(RAISING)
    (tmp_path / "scenario.toml").write_text(text)
    proc = dispel("report", "--scenario", "scenario.toml", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == ["raising.py", "scenario.toml"]


def test_a_handler_that_raises_still_builds_and_shows_where(tmp_path):
    (tmp_path / "raising.py").write_text(RAISING)
    (tmp_path / "scenario.toml").write_text('[app]\nimport = "raising:socketio"\n' + STEPS + '[[steps]]\ndo = "disconnect"\n')
    proc = dispel("report", "--scenario", "scenario.toml", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    chain = chains_of(tmp_path / "out")["on-boom"]
    at = next(n for n, h in enumerate(chain.hops) if h.func.key == "raising:on_boom" and h.edge != EDGE_ENTRY)
    boom = chain.hops[at]
    assert boom.line == 10 and "raised an exception" in (boom.value or "") and "raise ValueError" in boom.line_text
    # where it was caught: up through Flask-SocketIO's re-raise (no error handler) to the
    # thread's run(), then threading's excepthook, which the thread ran next
    up = chain.hops[at + 1:]
    assert up[0].func.key == "flask_socketio:SocketIO._handle_event" and up[0].line_text == "raise"
    assert [h.func.key for h in up][-2:] == ["threading:Thread.run", "threading:_make_invoke_excepthook.<locals>.invoke_excepthook"]
    assert up[-1].edge == EDGE_ENTRY and all(h.edge == "return" for h in up[:-1])
    # said once, by the recording's line, which names the step too
    assert re.search(r"^error in the app: steps\[\d+\] \(emit 'boom', client a\): ValueError: cannot handle 'x' "
                     r"\(raised at raising\.py:10 in on_boom\); shown by journey on-boom$", proc.stdout, re.MULTILINE), proc.stdout
    assert (tmp_path / "out" / "site" / "chains" / "on-boom" / "index.html").is_file()
    shutil.rmtree(tmp_path / "out")


def test_the_readme_example_builds_as_a_new_user_would(tmp_path):
    """The README's chat.py and chat.toml, written out as given, then its command, run from that folder."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Your own app: `dispel report`"):]
    app = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    scenario = re.search(r"```toml\n(.*?)```", section, re.DOTALL).group(1)
    command = next(b for b in re.findall(r"```sh\n(.*?)```", section, re.DOTALL) if "dispel report --scenario" in b).split()
    assert command[1:] == ["report", "--scenario", "chat.toml", "--out", "chat-report"]
    (tmp_path / "chat.py").write_text(app)
    (tmp_path / "chat.toml").write_text(scenario)
    proc = dispel(*command[1:], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    pages = sorted(p.stem for p in (tmp_path / "chat-report" / "docs" / "chains").glob("*.md"))
    assert {"on-message-chat", "on-any", "emit-message-chat", "emit-seen", "connect", "disconnect"} <= set(pages)
    for page in pages:
        assert (tmp_path / "chat-report" / "site" / "chains" / page / "index.html").is_file()


def test_dispel_check_verifies_every_link_of_a_report(ns_chat, tmp_path):
    proc = dispel("check", "--root", str(ns_chat), cwd=ROOT)
    assert proc.returncode == 0 and "0 problem(s)" in proc.stdout, proc.stdout + proc.stderr
    verified = re.search(r"links checked: (\d+), verified: (\d+), failed: 0", proc.stdout)
    assert verified and verified.group(1) == verified.group(2) and int(verified.group(1)) > 100
    # a permalink moved off its line is found
    copy = tmp_path / "copy"
    shutil.copytree(ns_chat, copy)
    page = copy / "docs" / "chains" / "emit-message-chat.md"
    text = page.read_text()
    m = re.search(r"(https://github\.com/[^>\s]+/flask_socketio/__init__\.py#L)(\d+)>", text)
    page.write_text(text.replace(m.group(0), f"{m.group(1)}{int(m.group(2)) + 1}>", 1))
    proc = dispel("check", "--root", str(copy), cwd=ROOT)
    assert proc.returncode == 1 and "emit-message-chat" in proc.stdout, proc.stdout


def test_render_report_again_from_its_trace(ticker, tmp_path):
    """`dispel render --report DIR`: the same files again, from the report's own trace, app files and lock."""
    copy = tmp_path / "ticker"
    shutil.copytree(ticker, copy)
    proc = dispel("render", "--report", str(copy), cwd=tmp_path)
    assert proc.returncode == 0 and "journey broadcast-tick" in proc.stdout, proc.stderr
    assert snapshot(copy) == snapshot(ticker)
    proc = dispel("render", "--report", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and "is not a folder `dispel report` built" in proc.stderr


def test_the_background_task_report_checks_clean(ticker):
    """A general text that names what a derived journey lacks (Packet.encode's `Manager.emit` on
    the ack and connect journeys) is left out there and listed, so the page says nothing false."""
    proc = dispel("check", "--root", str(ticker), cwd=ROOT)
    assert proc.returncode == 0 and "0 problem(s)" in proc.stdout, proc.stdout + proc.stderr
    index = (ticker / "docs" / "index.md").read_text()
    assert "left out: socketio.packet:Packet.encode on ack-join" in index
