"""The journeys dispel.chains.derive_packets derives, on the example apps that need the new scenario steps
(tests/programs/apps/noticeboard.toml: http, a refused connect, bytes; quiz.toml: replies to a
server's call, disconnects by the server): each report built with `dispel report`, twice
byte-identical, checked clean, and each journey reaching the socket (or, for received data, the parse)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dispel.model import EDGE_ENTRY, EDGE_WAKE
from dispel.tracefiles.codec import chain_from_dict

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "tests" / "programs" / "apps"


def dispel(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dispel", *argv], cwd=cwd, capture_output=True, text=True, timeout=300)


def build(tmp: Path, name: str) -> Path:
    proc = dispel("report", "--scenario", f"{name}.toml", "--out", str(tmp / "report"), cwd=APPS)
    assert proc.returncode == 0, proc.stderr
    return tmp / "report"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def chains_of(report: Path) -> dict:
    return {p.stem: chain_from_dict(json.loads(p.read_text())) for p in sorted((report / "traces" / "chains").glob("*.json"))}


def parts(chain) -> list[list]:
    """The chain's hops cut into its parts (each starts at an entry)."""
    out: list[list] = []
    for h in chain.hops:
        if h.edge == EDGE_ENTRY:
            out.append([])
        out[-1].append(h)
    return out


def funcs(hops) -> list[str]:
    return [h.func.key for h in hops]


@pytest.fixture(scope="module")
def noticeboard(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("noticeboard"), "noticeboard")


@pytest.fixture(scope="module")
def quiz(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("quiz"), "quiz")


def test_refused_connect_reaches_the_connect_error_frame(noticeboard):
    chain = chains_of(noticeboard)["connect-refused"]
    keys = funcs(chain.hops)
    assert keys[0] == "_socket:socket.recv"
    raised = keys.index("noticeboard:handle_connect")
    # python-socketio caught it in _handle_connect, then made the CONNECT_ERROR packet
    assert "socketio.server:Server._handle_connect" in keys[raised:]
    assert keys[-1] == "_socket:socket.send" and '44{"message":"unauthorized"}' in (chain.hops[-1].value or "")


def test_binary_event_sends_both_frames(noticeboard):
    chain = chains_of(noticeboard)["binary-uploaded"]
    text, attachment = parts(chain)
    assert text[0].func.key == "noticeboard:handle_upload"
    assert text[-1].func.key == "_socket:socket.send" and '451-["uploaded"' in text[-1].value
    assert attachment[-1].func.key == "_socket:socket.send" and attachment[-1].value.startswith("data = b'\\x82")
    assert attachment[0].thread == attachment[-1].thread == text[-1].thread  # the writer
    frames = [w for w in chain.wire if w.layer.startswith("WebSocket frame")]
    assert [f.fields[2].value for f in frames] == ["0x1", "0x2"]  # a text frame, then a binary frame
    payload = next(w for w in chain.wire if w.layer.startswith("binary payload"))
    assert payload.fields[0].value == "89 50 4e 47" and payload.layer.endswith("frame 2, sent")  # the bytes the app sent back


def test_binary_event_received_reaches_the_parse(noticeboard):
    chain = chains_of(noticeboard)["binary-in-upload"]
    text, attachment = parts(chain)
    assert text[0].func.key == attachment[0].func.key == "_socket:socket.recv"
    # the text's parse: the packet built from it (and, since the chain takes in its reader, the JSON decoded after)
    built = [h for h in text if h.func.key == "socketio.packet:Packet.__init__"]
    assert built and '-["upload"' in (built[-1].value or "")
    assert text[-1].func.key in ("socketio.packet:Packet.__init__", "engineio.json:loads")  # it ends at the parse
    keys = funcs(attachment)
    assert keys.index("socketio.packet:Packet.add_attachment") < keys.index("socketio.packet:Packet.reconstruct_binary")
    frames = [w for w in chain.wire if w.layer.startswith("WebSocket frame")]
    assert [(f.fields[2].value, f.fields[3].value) for f in frames] == [("0x1", "1"), ("0x2", "1")]  # both masked: the client's


def test_http_route_emit_from_the_request_to_the_frame(noticeboard):
    chain = chains_of(noticeboard)["http-post_notice"]
    keys = funcs(chain.hops)
    assert keys[0].startswith("_socket:socket.recv") and "POST /notices" in chain.hops[0].value
    assert keys.index("flask.app:Flask.dispatch_request") < keys.index("noticeboard:post_notice") < keys.index("flask_socketio:SocketIO.emit")
    assert keys[-1] == "_socket:socket.send" and '"notice"' in chain.hops[-1].value
    assert chain.hops[-1].thread != chain.hops[0].thread  # the writer thread of the client's connection


def test_server_call_asks_then_wakes_the_waiting_handler(quiz):
    chain = chains_of(quiz)["call-question"]
    asking, answered = parts(chain)
    assert asking[0].func.key == "quiz:start_quiz" and "flask_socketio:SocketIO.call" in funcs(asking)
    assert asking[-1].func.key == "_socket:socket.send" and '421["question"' in asking[-1].value
    keys = funcs(answered)
    assert keys[0] == "_socket:socket.recv" and "socketio.server:Server._handle_ack" in keys
    woken = [h for h in answered if h.edge == EDGE_WAKE and h.thread == asking[0].thread]
    assert woken and woken[-1].func.key == "threading:Condition.wait"
    assert answered[-1].func.key == "quiz:start_quiz" and answered[-1].thread == asking[0].thread
    # the wire: the ask as written, then the client's ACK as read (same ack id, the reply of [clients.ann.replies])
    packets = [w.raw for w in chain.wire if w.layer.startswith("Engine.IO")]
    assert packets[0].startswith('421["question"') and packets[1] == '431["42"]'


def test_server_side_disconnect_reaches_the_close_frames(quiz):
    found = chains_of(quiz)
    chain = found["server-disconnect-quit_quiz"]
    sent, closed = parts(chain)
    assert sent[0].func.key == "quiz:quit_quiz" and "socketio.server:Server.disconnect" in funcs(sent)
    assert sent[-1].func.key == "_socket:socket.send" and sent[-1].value == "data = b'\\x81\\x0241'"
    assert closed[0].func.key == "_socket:socket.recv" and closed[0].value.startswith("return = b'\\x88")
    assert closed[-1].func.key == "_socket:socket.send" and closed[-1].value.startswith("data = b'\\x88")
    # disconnect() in the callback of an ack: from the ACK read
    callback = found["server-disconnect-score_seen"]
    keys = funcs(parts(callback)[0])
    assert keys[0] == "_socket:socket.recv"
    assert keys.index("socketio.server:Server._handle_ack") < keys.index("quiz:finish_quiz.<locals>.score_seen") < keys.index("flask_socketio:disconnect")
    assert keys[-1] == "_socket:socket.send"


@pytest.mark.parametrize("app", ["noticeboard", "quiz"])
def test_reports_check_clean_and_repeat(app, noticeboard, quiz, tmp_path):
    report = {"noticeboard": noticeboard, "quiz": quiz}[app]
    proc = dispel("check", "--root", str(report), cwd=ROOT)
    assert proc.returncode == 0 and "0 problem(s)" in proc.stdout, proc.stdout + proc.stderr
    again = build(tmp_path, app)
    assert snapshot(again) == snapshot(report)


FAILING = [
    ("refusal with another message", "noticeboard.toml", ('refused = "unauthorized"', 'refused = "forbidden"'),
     "steps[3] (connect, refused, client intruder) failed: ValueError: refused with the message 'unauthorized', not 'forbidden'"),
    ("accepted although refused expected", "noticeboard.toml", ('auth = { token = "guess" }', 'auth = { token = "s3cret" }'),
     "steps[3] (connect, refused, client intruder) failed: ValueError: the server accepted the connection"),
    ("http status", "noticeboard.toml", ("status = 201", "status = 200"),
     "steps[4] (http POST /notices, client student) failed: ValueError: POST /notices answered 201 CREATED, not 200"),
    ("bytes that did not come back", "noticeboard.toml", ('head = { bytes = "hex:89504e47" }', 'head = { bytes = "hex:00" }'),
     "steps[7] (expect 'uploaded', client student) failed: ValueError: 'uploaded' arrived with"),
    ("no disconnect by the server", "quiz.toml", ('event = "quit"', 'event = "start"\ndata = "ann"'),
     "steps[5] (disconnect by the server, client ann) failed: TimeoutError: the server did not disconnect the client"),
]


@pytest.mark.parametrize("name, toml, change, needle", FAILING, ids=[c[0] for c in FAILING])
def test_a_failing_step_is_named(tmp_path, name, toml, change, needle):
    text = (APPS / toml).read_text()
    assert change[0] in text
    text = text.replace(change[0], change[1], 1)
    if toml == "quiz.toml":  # fail fast: the server never disconnects
        text = text.replace('by = "server"', 'by = "server"\ntimeout = 2', 1)
    app = toml.replace(".toml", ".py")
    shutil.copyfile(APPS / app, tmp_path / app)
    (tmp_path / toml).write_text(text)
    proc = dispel("report", "--scenario", toml, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


POLLING = {  # the app's main client on long-polling: its packets go in HTTP bodies, joined by \x1e
    "noticeboard": ("[clients.student]", ["connect-refused", "http-post_notice", "binary-uploaded", "binary-in-upload"]),
    "quiz": ("[clients.ann]", ["call-question", "server-disconnect-quit_quiz", "server-disconnect-score_seen"]),
}


@pytest.mark.parametrize("app", sorted(POLLING))
def test_the_journeys_derive_over_long_polling(app, tmp_path):
    client, names = POLLING[app]
    text = (APPS / f"{app}.toml").read_text().replace(client, f'{client}\ntransport = "polling"', 1)
    shutil.copyfile(APPS / f"{app}.py", tmp_path / f"{app}.py")
    (tmp_path / f"{app}.toml").write_text(text)
    proc = dispel("report", "--scenario", f"{app}.toml", "--out", str(tmp_path / "out"), "--no-site", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    found = chains_of(tmp_path / "out")
    for name in names:
        assert name in found, proc.stdout
        ends = [p[-1] for p in parts(found[name])]
        assert any(h.func.key.startswith("_socket:socket.send") for h in ends) or name.startswith("binary-in"), name
    polled = found["binary-uploaded"] if app == "noticeboard" else found["call-question"]
    sink = next(p[-1] for p in parts(polled))
    assert sink.func.key == "_socket:socket.sendall"  # an HTTP body, not a frame


SHAPES_APP = '''from flask import Flask, request
from flask_socketio import SocketIO

app = Flask(__name__)
socketio = SocketIO(app, async_mode="threading")


@socketio.on("connect")
def check(auth):
    return bool(auth)  # False refuses, as ConnectionRefusedError does


@app.route("/form", methods=["POST"])
def by_form():
    socketio.emit("said", request.form["text"])
    return "ok"


@app.route("/raw", methods=["PUT"])
def by_bytes():
    socketio.emit("blob", request.get_data())
    return "", 204
'''
SHAPES_STEPS = '''
[app]
import = "shapes:socketio"

[clients.a]
auth = { user = "a" }

[clients.b]

[[steps]]
client = "a"
do = "connect"

[[steps]]
client = "b"
do = "connect"
refused = "Connection rejected by server"

[[steps]]
client = "a"
do = "http"
method = "POST"
path = "/form"
form = { text = "hello & bye" }

[[steps]]
client = "a"
do = "expect"
event = "said"
data = "hello & bye"

[[steps]]
client = "a"
do = "http"
method = "PUT"
path = "/raw"
body = { bytes = "hex:00ff10" }
status = 204

[[steps]]
client = "a"
do = "expect"
event = "blob"
data = { bytes = "hex:00ff10" }

[[steps]]
client = "a"
do = "disconnect"
'''


def test_form_and_raw_bodies_and_a_connect_handler_returning_false(tmp_path):
    (tmp_path / "shapes.py").write_text(SHAPES_APP)
    (tmp_path / "shapes.toml").write_text(SHAPES_STEPS)
    proc = dispel("report", "--scenario", "shapes.toml", "--out", str(tmp_path / "out"), "--no-site", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    found = chains_of(tmp_path / "out")
    refused = found["connect-refused"]
    assert "shapes:check" in funcs(refused.hops) and not any(h.value and "raised" in h.value for h in refused.hops)
    assert '44{"message":"Connection rejected by server"}' in refused.hops[-1].value
    form = found["http-by_form"]
    assert "POST /form" in form.hops[0].value and '"said"' in form.hops[-1].value
    raw = found["http-by_bytes"]
    assert "PUT /raw" in raw.hops[0].value and "shapes:by_bytes" in funcs(raw.hops)
    blob = found["binary-blob"]  # bytes from an HTTP body, emitted as a BINARY_EVENT
    assert blob.hops[0].func.key == "shapes:by_bytes" and parts(blob)[-1][-1].value.startswith("data = b'\\x82\\x03\\x00")
