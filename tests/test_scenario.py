"""The real app under the recorder, driven by the real Socket.IO client: what the trace must hold, and bad input."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from dispel import catalog
from dispel.check import drift
from dispel.model import DispelError
from dispel.record import stage as record_stage
from dispel.run import browser
from dispel.run import runner as scenarios
from dispel.tracefiles.codec import trace_from_json, trace_to_json

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def record_fresh(out: Path):
    """Record in a new process, as `make regen` does: an interpreter that has already
    run the app would skip imports and setup that a first run traces."""
    proc = run_cli("record", "chat", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return trace_from_json((out / "chat.json").read_text(), "chat.json")


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    return record_fresh(tmp_path_factory.mktemp("rec1"))


def events_of(trace, func):
    return [e for e in trace.events if e.func == func]


@pytest.mark.parametrize(
    "func, thread",
    [
        ("flask_socketio:SocketIO.run", "server"),
        ("socketio.server:Server.emit", "handler-"),
        ("engineio.socket:Socket.send", "handler-"),
        ("simple_websocket.ws:Base.send", "eio-writer-"),
    ],
)
def test_trace_holds_the_stack_on_the_thread_it_ran_on(trace, func, thread):
    found = events_of(trace, func)
    assert found, f"{func} is not in the trace"
    assert any(e.thread.startswith(thread) for e in found), {e.thread for e in found}


def test_the_sample_app_is_traced_as_the_app_and_dispel_itself_is_not(trace):
    """The sample app lives inside the dispel package (dispel.sample_app): its module body and
    handlers are in the trace as the app's (dist ``sample_app``, paths from scripts/), and no
    other module of dispel (the driver, the recorder, the runner) is."""
    ours = {k: f for k, f in trace.funcs.items() if f.module.split(".")[0] == "dispel"}
    assert {f.module for f in ours.values()} <= {"dispel.sample_app", "dispel.sample_app.app"}, sorted(ours)
    for name in ("<module>", "main", "on_connect", "on_chat", "on_join", "on_shout", "on_disconnect"):
        func = trace.funcs[f"dispel.sample_app.app:{name}"]
        assert (func.source.dist, func.source.path) == ("sample_app", "dispel/sample_app/app.py")
    assert {e.thread for e in events_of(trace, "dispel.sample_app.app:on_chat")} == {"handler-1"}
    assert not [f for f in trace.funcs.values() if f.source.dist == "sample_app" and not f.module.startswith("dispel.sample_app")]


def test_c_level_send_carries_the_reply_frame(trace):
    sends = [e for e in events_of(trace, "_socket:socket.send") if any('"reply"' in a.text for a in e.args)]
    assert len(sends) == 1 and sends[0].thread.startswith("eio-writer")
    data = next(a.text for a in sends[0].args if a.name == "data")
    assert data.startswith("b'\\x81") and "<b>hi</b> &" in data  # FIN + text opcode, payload unescaped on the wire


def test_trace_has_no_machine_specific_values(trace):
    text = trace_to_json(trace)
    assert str(ROOT) not in text and sys.prefix not in text
    assert "<sid-1>" in text and "<port>" in text


def same_but_for_the_tolerated_race(first: str, second: str) -> str:
    """``second``, with the one race docs/how.md names (a writer's poll batches) normalised to ``first``."""
    same, note = drift.writer_batches(first, second)
    if note:
        print(f"note: {note}")
    return same


def test_recording_twice_gives_byte_identical_traces(trace, tmp_path):
    first, again = trace_to_json(trace), trace_to_json(record_fresh(tmp_path))
    assert same_but_for_the_tolerated_race(first, again) == first, drift.trace_drift(first, again)


@pytest.mark.traced_python
def test_committed_trace_matches_a_fresh_recording(trace):
    committed = (ROOT / "traces" / "chat.json").read_text()
    fresh = same_but_for_the_tolerated_race(committed, trace_to_json(trace))
    assert fresh == committed, f"traces/chat.json is stale: run `make regen` ({drift.trace_drift(committed, fresh)})"


def test_no_threads_or_listening_sockets_left():
    # In-process, so that what the run leaves behind can be seen.
    port = scenarios.free_port()
    record_stage.record_scenario("chat", timeout=30, app="dispel.sample_app.app", port=port)
    left = [t.name for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive()]
    server_like = [n for n in left if any(w in n for w in catalog.PER_CONNECTION_THREADS + catalog.HANDLER_THREADS + ("dispel-server",))]
    assert not server_like, left
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the app's port still accepts connections"


# ------------------------------------------------------------------ bad input


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dispel", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("dispel: error:")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_unknown_scenario(tmp_path):
    proc = run_cli("record", "nope", "--out", str(tmp_path))
    assert_one_line_error(proc, "unknown scenario 'nope'")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def test_programs_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


def test_app_that_fails_to_import(test_programs_importable):
    with pytest.raises(DispelError, match="cannot import app module 'programs.broken_app'.*broken on purpose"):
        record_stage.record_scenario("chat", timeout=10, app="programs.broken_app")


def test_port_already_in_use(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_cli("record", "chat", "--port", str(port), "--out", str(tmp_path))
    assert_one_line_error(proc, f"port {port} is already in use")
    assert list(tmp_path.iterdir()) == []


def test_client_that_cannot_connect_names_the_step(test_programs_importable):
    with pytest.raises(DispelError, match="step 'connect'"):
        record_stage.record_scenario("chat", timeout=15, app="programs.plain_app")


# ------------------------------------------------------------------ without a browser


def test_missing_chromium_is_one_line_saying_how_to_install_it(monkeypatch):
    monkeypatch.setattr(browser, "CHROMIUM", Path("/nonexistent/chromium"))
    with pytest.raises(DispelError) as err:
        browser.BrowserClient(1)
    message = str(err.value)
    assert "\n" not in message and "/nonexistent/chromium" in message
    assert "apt-get install chromium chromium-driver" in message


def test_without_chromium_the_other_scenarios_are_still_recorded(tmp_path):
    env = {**os.environ, "DISPEL_CHROMIUM": "/nonexistent/chromium"}
    proc = subprocess.run(
        [sys.executable, "-m", "dispel", "record", "browser", "chat", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("dispel:")]
    assert len(errors) == 1 and "apt-get install chromium chromium-driver" in errors[0], proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.json"]


@pytest.mark.parametrize("spec, parsed", [
    ("connect", ("a", "connect", 1)),
    ("b:join", ("b", "join", 1)),
    ("c3:chat*50", ("c3", "chat", 50)),
    ("chat*200", ("a", "chat", 200)),
])
def test_a_step_names_its_client_step_and_count(spec, parsed):
    assert catalog.split_step(spec) == parsed


def test_clients_are_named_in_the_order_of_their_first_step():
    assert catalog.client_names(catalog.scenario("rooms")) == ["a", "b", "c"]
    assert catalog.client_names(catalog.scenario("chat")) == ["a"]


def test_clients_started_ahead_are_handed_out_in_order_and_the_others_stopped():
    from dispel.run.launchers import ClientStarter, free_ports

    port = free_ports(1)[0]
    starter = ClientStarter(catalog.scenario("rooms"), port)
    ahead = [c.proc for c in starter.ready]
    assert len(ahead) == 3 and all(p.poll() is None for p in ahead)
    first = starter(port)
    assert first.proc is ahead[0]
    elsewhere = starter(port + 1)  # another port: a client of its own, not one started ahead
    assert elsewhere.proc not in ahead
    starter.close()
    assert all(p.poll() is not None for p in ahead[1:]), "a client started ahead was left running"
    assert first.proc.poll() is None  # taken: its scenario closes it
    first.close()
    elsewhere.close()


def test_a_server_is_found_only_once_it_listens():
    # werkzeug sets the server's port before it binds and listens: a client let in on
    # the port alone would be refused
    from werkzeug.serving import BaseWSGIServer

    port = scenarios.free_port()
    server = BaseWSGIServer.__new__(BaseWSGIServer)
    server.port = port
    server.socket = socket.socket()
    try:
        assert scenarios.find_server(port) is None
        assert scenarios.find_server(port, listening=False) is server
        server.socket.bind(("127.0.0.1", port))
        assert scenarios.find_server(port) is None
        server.socket.listen()
        assert scenarios.find_server(port) is server
    finally:
        server.socket.close()


def test_the_client_closes_a_polling_connection_only_after_the_server(monkeypatch):
    # werkzeug waits 10 ms for more from the client before it closes: a client that
    # closed first, or not, as the machine's load decided, changed the server's trace
    import http.client
    import select

    from dispel.run.sample_client import patch_http_close

    monkeypatch.setattr(http.client.HTTPResponse, "_close_conn", http.client.HTTPResponse._close_conn)
    patch_http_close(timeout=5.0)
    listener = socket.create_server(("127.0.0.1", 0))
    seen: dict[str, bool] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            readable, _, _ = select.select([conn], [], [], 0.3)  # the client's end, if it came first
            seen["client closed first"] = bool(readable) and conn.recv(1) == b""
            conn.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=serve)
    thread.start()
    client = http.client.HTTPConnection("127.0.0.1", listener.getsockname()[1], timeout=5)
    client.request("GET", "/")
    assert client.getresponse().read() == b"ok"
    thread.join(5)
    listener.close()
    assert seen == {"client closed first": False}


def test_a_long_polling_file_client_talks_through_the_pacer_and_stops_it():
    # its read loop's GET and its POSTs are concurrent requests: the pacer orders them
    from dispel.run.launchers import FileClientProcess, free_ports

    port = free_ports(1)[0]
    spec = {"transport": "polling", "namespaces": ["/"], "headers": {}, "query": [], "auth": None}
    polling = FileClientProcess(port, spec)
    websocket = FileClientProcess(port, {**spec, "transport": "websocket"})
    try:
        assert polling.pacer is not None and str(polling.pacer.port) in polling.proc.args
        assert websocket.pacer is None and str(port) in websocket.proc.args
    finally:
        polling.close()
        websocket.close()
    assert polling.pacer.proc.poll() is not None, "the pacer was left running"


def test_what_an_earlier_step_raised_is_named_when_a_later_step_waits_in_vain():
    import logging

    from dispel.run.runner import AppErrors

    errors = AppErrors()
    errors.step = "steps[3] (emit 'stroke', client pen)"
    try:
        {}["room"]
    except KeyError as exc:
        errors.emit(logging.LogRecord("socketio.server", logging.ERROR, __file__, 1, "handler error", None, (KeyError, exc, exc.__traceback__)))
    earlier = errors.before("steps[5] (expect 'cleared', client viewer)")
    assert len(earlier) == 1 and earlier[0].startswith("steps[3] (emit 'stroke', client pen): KeyError: 'room' (raised at test_scenario.py:")
    assert errors.before("steps[3] (emit 'stroke', client pen)") == []
