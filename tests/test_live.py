"""`dispel report --live`: what the clients did (observations -> session -> a scenario file that
replays it), the scenario file's ``{ env = "NAME" }`` secrets and ``upgrade`` transport, bad
input, and a live session driven by a real client in a subprocess and stopped by SIGINT, which
builds the journeys of the equivalent scenario file; its saved scenario replays them."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dispel.model import DispelError
from dispel.run import live_session, scenario_file, scenario_values
from dispel.run.scenario_values import EnvRef

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "tests" / "programs" / "apps"


# --------------------------------------------------------------------------- packets and sessions


@pytest.mark.parametrize("text, want", [
    ('0', live_session.Packet(0, "/", None, None)),
    ('0/chat,{"token":"x"}', live_session.Packet(0, "/chat", {"token": "x"}, None)),
    ('2["chat","hi"]', live_session.Packet(2, "/", ["chat", "hi"], None)),
    ('2/chat,7["ev",1]', live_session.Packet(2, "/chat", ["ev", 1], 7)),
    ('21["shout","hello"]', live_session.Packet(2, "/", ["shout", "hello"], 1)),
    ('51-["bin",{"_placeholder":true,"num":0}]', live_session.Packet(5, "/", ["bin", {"_placeholder": True, "num": 0}], None, 1)),
    ('1/chat,', live_session.Packet(1, "/chat", None, None)),
])
def test_socketio_packets_are_parsed_as_sent(text, want):
    assert live_session.parse_packet(text) == want


def test_binary_placeholders_become_the_attachments():
    data = ["bin", {"a": {"_placeholder": True, "num": 1}, "b": [{"_placeholder": True, "num": 0}]}]
    assert live_session.with_attachments(data, [b"\x00", b"\x01\x02"]) == ["bin", {"a": b"\x01\x02", "b": [b"\x00"]}]


OBSERVED = [
    {"client": 1, "do": "open", "transport": "polling"},
    {"client": 2, "do": "open", "transport": "websocket"},
    {"client": 1, "do": "upgrade"},
    {"client": 1, "do": "connect", "namespace": "/", "auth": {"user": "ann", "api_token": "s3cr3t-value"}},
    {"client": 2, "do": "connect", "namespace": "/chat"},
    {"client": 1, "do": "emit", "namespace": "/", "event": "chat", "args": [{"text": "hi", "password": "hunter22"}], "ack": False},
    {"client": 2, "do": "emit", "namespace": "/chat", "event": "pic", "args": [{"bytes": "base64:AAE="}, 3], "ack": True},
    {"client": 1, "do": "disconnect", "namespace": "/"},
    {"client": 1, "do": "close"},
]


def test_the_session_lists_each_client_its_transport_and_events_in_order():
    s = live_session.session(OBSERVED)
    assert [(c.number, c.transport, c.closed) for c in s.clients] == [(1, "upgrade", True), (2, "websocket", False)]
    assert s.order[:3] == ((1, 0), (2, 0), (1, 1))
    lines = live_session.home_lines(s)
    assert lines[0] == ("client 1 (long-polling, then the upgrade to WebSocket): connect /, emit 'chat', disconnect /; it disconnected")
    assert lines[1] == "client 2 (WebSocket): connect /chat, emit 'pic' with an ack on /chat; it was still connected when the recording stopped"
    assert "s3cr3t" not in "".join(lines) and "hunter22" not in "".join(lines)


def test_the_saved_scenario_replays_the_session_and_holds_no_secret():
    text, left = live_session.scenario_text(live_session.session(OBSERVED), "chat:socketio")
    assert left == []
    assert "s3cr3t" not in text and "hunter22" not in text
    sf = scenario_file.parse(text, "saved.toml")
    assert sf.app.target == "chat:socketio"
    assert [(c.name, c.transport, c.namespaces) for c in sf.clients] == [("c1", "upgrade", ("/",)), ("c2", "websocket", ("/chat",))]
    assert scenario_values.decode_bytes(sf.clients[0].auth) == {"user": "ann", "api_token": EnvRef("DISPEL_SECRET_API_TOKEN")}
    assert [(s.client, s.do, s.event) for s in sf.steps] == [
        ("c1", "connect", ""), ("c2", "connect", ""), ("c1", "emit", "chat"), ("c2", "emit", "pic"), ("c1", "disconnect", "")]
    assert sf.steps[2].data == {"text": "hi", "password": EnvRef("DISPEL_SECRET_PASSWORD")}
    assert sf.steps[3].args == (b"\x00\x01", 3) and sf.steps[3].ack
    assert scenario_values.env_names(sf) == ["DISPEL_SECRET_API_TOKEN", "DISPEL_SECRET_PASSWORD"]


def test_the_clients_answers_to_the_servers_calls_are_replayed():
    obs = [{"client": 1, "do": "open", "transport": "websocket"}, {"client": 1, "do": "connect", "namespace": "/"},
           {"client": 1, "do": "reply", "namespace": "/", "event": "quiz", "args": [4]},
           {"client": 1, "do": "reply", "namespace": "/", "event": "quiz", "args": [5]},
           {"client": 1, "do": "reply", "namespace": "/", "event": "pin", "args": [{"token": "abcdefgh"}]}]
    text, left = live_session.scenario_text(live_session.session(obs), "chat:socketio")
    assert left == [] and "abcdefgh" not in text
    sf = scenario_file.parse(text, "saved.toml")
    assert sf.clients[0].replies == (("pin", {"token": EnvRef("DISPEL_SECRET_TOKEN")}), ("quiz", 4))  # the first answer


def test_a_null_is_left_out_of_the_saved_scenario_with_why():
    obs = [{"client": 1, "do": "open", "transport": "websocket"}, {"client": 1, "do": "connect", "namespace": "/"},
           {"client": 1, "do": "emit", "namespace": "/", "event": "x", "args": [None], "ack": False}]
    text, left = live_session.scenario_text(live_session.session(obs), "chat:socketio")
    assert left == ["client 1's emit 'x' holds a null, which TOML cannot write: left out"]
    assert 'event = "x"' not in text


# --------------------------------------------------------------------------- the scenario file's env references


def test_env_references_are_read_from_the_environment_at_replay():
    sf = scenario_file.parse('[app]\nimport = "a:b"\n[clients.a]\nauth = { token = { env = "MY_TOKEN" } }\n'
                             '[[steps]]\ndo = "connect"\n[[steps]]\ndo = "emit"\nevent = "e"\ndata = { env = "MY_DATA" }\n', "s.toml")
    assert scenario_values.env_names(sf) == ["MY_DATA", "MY_TOKEN"]
    step = scenario_values.Step.from_json(json.loads(json.dumps(sf.steps[1].to_json())))
    assert step.data == EnvRef("MY_DATA")
    assert scenario_values.resolve_env([step.data], {"MY_DATA": "v"}) == ["v"]
    with pytest.raises(DispelError, match="MY_DATA is not set"):
        scenario_values.resolve_env(step.data, {})


def test_a_bad_env_reference_is_one_line():
    with pytest.raises(scenario_values.ScenarioError, match="must name an environment variable"):
        scenario_file.parse('[app]\nimport = "a:b"\n[clients.a]\n[[steps]]\ndo = "emit"\nevent = "e"\ndata = { env = "1 x" }\n', "s.toml")


def test_the_upgrade_transport_is_a_transport():
    sf = scenario_file.parse('[app]\nimport = "a:b"\n[clients.a]\ntransport = "upgrade"\n[[steps]]\ndo = "connect"\n', "s.toml")
    assert sf.clients[0].transport == "upgrade"


# --------------------------------------------------------------------------- bad input


def dispel(*argv: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dispel", *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def one_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_live_bad_app_target_is_one_line(tmp_path):
    line = one_error(dispel("report", "--live", "--app", "nocolon", "--out", str(tmp_path / "out"), cwd=tmp_path))
    assert "--app 'nocolon' is not module:attribute" in line
    assert not (tmp_path / "out").exists()


def test_live_app_not_found_is_one_line_nothing_written(tmp_path):
    line = one_error(dispel("report", "--live", "--app", "missing_app:socketio", "--out", str(tmp_path / "out"),
                            "--duration", "1", cwd=tmp_path))
    assert "cannot import app module 'missing_app'" in line
    assert list(tmp_path.iterdir()) == []


def test_live_port_in_use_is_one_line(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        line = one_error(dispel("report", "--live", "--app", "ns_chat:socketio", "--out", str(tmp_path / "out"),
                                "--port", str(port), "--duration", "1", cwd=APPS))
    assert f"port {port} is already in use" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_live_without_socketio_traffic_builds_nothing(tmp_path):
    proc = dispel("report", "--live", "--app", "ns_chat:socketio", "--out", str(tmp_path / "out"), "--duration", "1",
                  "--host", "0.0.0.0", cwd=APPS)
    assert one_error(proc).startswith("dispel: error: no Socket.IO traffic")
    said = proc.stdout.splitlines()
    assert said[0].startswith("recording http://0.0.0.0:")  # the URL first, then the one-line warning
    assert said[1] == "warning: --host 0.0.0.0 serves the app, under the tracer, to other machines on the network too"
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- a live session, stopped by SIGINT


def start_live(out: Path, *extra: str, cwd: Path = APPS) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "dispel", "report", "--live", *extra, "--out", str(out), "--no-site"],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    m = re.match(r"recording http://127\.0\.0\.1:(\d+)/", first)
    assert m, first + proc.stderr.read()
    return proc, int(m.group(1))


def live_recording(out: Path, scenario: Path, *extra: str, cwd: Path = APPS) -> tuple[int, str, str]:
    """A live recording (``extra``: its options) driven by ``scenario``'s steps, stopped by SIGINT:
    its exit status, stdout and stderr."""
    proc, port = start_live(out, *extra, cwd=cwd)
    try:
        drive(port, scenario)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, stdout, stderr


def drive(port: int, scenario: Path) -> None:
    """The scenario file's steps, done by its real client (dispel.scenario_client) in a subprocess."""
    from dispel.run.launchers import FileClientProcess

    sf = scenario_file.parse(scenario.read_text(), scenario.name)
    clients = {}
    time.sleep(0.5)  # the URL is printed as the server starts
    try:
        for s in sf.steps:
            if s.client not in clients:
                clients[s.client] = FileClientProcess(port, sf.client(s.client).spec())
            clients[s.client].run_step(s, s.label, 20)
            time.sleep(0.2)
    finally:
        for c in clients.values():
            c.close()


def journeys(report: Path) -> dict[str, list[str]]:
    from dispel.tracefiles.codec import chain_from_dict

    return {p.stem: [h.func.key for h in chain_from_dict(json.loads(p.read_text())).hops]
            for p in sorted((report / "traces" / "chains").glob("*.json"))}


@pytest.mark.slow
@pytest.mark.parametrize("app", ["ns_chat", "one_reply"])  # namespaces; two clients, acks and a call to the client
def test_a_live_session_stopped_by_sigint_builds_the_scenarios_journeys_and_its_saved_scenario_replays_them(tmp_path, app):
    code, stdout, stderr = live_recording(tmp_path / "live", APPS / f"{app}.toml", "--app", f"{app}:socketio",
                                       "--save-scenario", str(tmp_path / "saved.toml"))
    assert code == 0, stderr
    said = stdout.splitlines()
    assert "client 1 connected (WebSocket)" in said and "client 1 disconnected" in said
    assert any(re.match(r"redacted \d+ values? ", line) for line in said)
    live_journeys = journeys(tmp_path / "live")
    index = (tmp_path / "live" / "docs" / "index.md").read_text()
    if app == "ns_chat":
        assert "client 1 sent 'message' [/chat]" in said
        assert any(line.startswith("stopped (Ctrl-C): 1 client seen") for line in said)
        assert "- client 1 (WebSocket): connect /chat, connect /, emit 'message' on /chat, emit 'mood', disconnect /chat" in index
    else:
        assert "client 2 sent 'echo' (asks for an ack) [/]" in said and "client 1 answered 'quiz' [/]" in said
        assert any(line.startswith("stopped (Ctrl-C): 2 clients seen") for line in said)
        assert "- client 2 (WebSocket): connect /, emit 'join', emit 'echo' with an ack, emit 'oops', disconnect /; it disconnected" in index
        assert any(line.startswith("the app raised TypeError: ") and "in on_oops)" in line for line in said)  # as it happened
        assert any(line.startswith("the app raised: TypeError") for line in said)  # and after the build, with its journey

    scripted = dispel("report", "--scenario", f"{app}.toml", "--out", str(tmp_path / "scripted"), "--no-site", cwd=APPS, timeout=300)
    assert scripted.returncode == 0, scripted.stderr
    assert sorted(live_journeys) == sorted(journeys(tmp_path / "scripted"))
    assert live_journeys == journeys(tmp_path / "scripted")
    if app != "ns_chat":
        return  # one replay is enough

    saved = tmp_path / "saved.toml"
    (APPS / "saved_live.toml").write_text(saved.read_text())  # the app is found next to the scenario file
    try:
        replayed = dispel("report", "--scenario", "saved_live.toml", "--out", str(tmp_path / "replayed"), "--no-site", cwd=APPS, timeout=300)
    finally:
        (APPS / "saved_live.toml").unlink()
    assert replayed.returncode == 0, replayed.stderr
    assert sorted(journeys(tmp_path / "replayed")) == sorted(live_journeys)


@pytest.mark.slow
def test_a_second_ctrl_c_during_the_build_leaves_nothing(tmp_path):
    proc, port = start_live(tmp_path / "out", "--app", "ns_chat:socketio", "--duration", "6")
    try:
        drive(port, APPS / "ns_chat.toml")
        for line in proc.stdout:
            if line.startswith("redacted "):  # the child wrote its trace: the build is next
                break
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert stderr.strip() == "dispel: interrupted"
    assert list(tmp_path.iterdir()) == []  # neither the report nor its temporary folder


def test_plain_http_requests_are_listed_and_replayed_when_they_carry_no_body():
    obs = [{"client": 0, "do": "http", "method": "GET", "path": "/", "status": 200},
           {"client": 1, "do": "open", "transport": "websocket"}, {"client": 1, "do": "connect", "namespace": "/"},
           {"client": 0, "do": "http", "method": "POST", "path": "/api/cards", "status": 201},
           {"client": 0, "do": "http", "method": "GET", "path": "/static/app.js", "status": 304},
           {"client": 1, "do": "emit", "namespace": "/", "event": "chat", "args": ["hi"]}]
    s = live_session.session(obs)
    assert live_session.home_lines(s)[-1] == ("HTTP requests to the app, in order: GET / (200), POST /api/cards (201), "
                                              "GET /static/app.js (304)")
    text, left = live_session.scenario_text(s, "app:socketio")
    steps = scenario_file.parse(text, "saved.toml").steps
    assert [(st.do, st.client) for st in steps] == [("http", "c1"), ("connect", "c1"), ("emit", "c1")]
    assert 'method = "GET"\npath = "/"\nstatus = 200' in text
    assert [line.split(":")[0] for line in left] == ["HTTP POST /api/cards (201)", "HTTP GET /static/app.js (304)"]


def test_repeated_console_lines_are_folded_into_a_count():
    from dispel.run.live import Repeats

    now = [0.0]
    said: list[str] = []
    say = Repeats(said.append, every=5.0, clock=lambda: now[0])
    for line in ["client 1 connected (WebSocket)", *["emit 'tick' to all [/]"] * 4]:
        say(line)
        now[0] += 1.0
    assert said == ["client 1 connected (WebSocket)", "emit 'tick' to all [/]"]  # the three after it are counted
    now[0] += 3.0  # five seconds since the line was said: the count is said while they keep coming
    say("emit 'tick' to all [/]")
    say("emit 'tick' to all [/]")
    say("client 1 disconnected")  # a different line says the count first
    assert said[2:] == ["  … 4 more like it", "  … 1 more like it", "client 1 disconnected"]


UNSET_MODE_APP = """from flask import Flask
from flask_socketio import SocketIO, emit

app = Flask(__name__)
socketio = SocketIO(app)  # async_mode left unset: Flask-SocketIO would pick gevent, which is installed


@socketio.on("ping_me")
def ping_me(data):
    emit("pong", data)
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["", "gevent"])
def test_an_app_that_leaves_async_mode_unset_is_recorded_live_in_threading_or_the_mode_asked_for(tmp_path, mode):
    (tmp_path / "unset_app.py").write_text(UNSET_MODE_APP)
    (tmp_path / "drive.toml").write_text('[app]\nimport = "unset_app:socketio"\n[clients.a]\ntransport = "websocket"\n'
                                         '[[steps]]\ndo = "connect"\n[[steps]]\ndo = "emit"\nevent = "ping_me"\ndata = 1\n'
                                         '[[steps]]\ndo = "expect"\nevent = "pong"\n[[steps]]\ndo = "disconnect"\n')
    extra = ("--async-mode", mode) if mode else ()
    code, _, stderr = live_recording(tmp_path / "live", tmp_path / "drive.toml", "--app", "unset_app:socketio", *extra,
                                   "--save-scenario", str(tmp_path / "saved.toml"), cwd=tmp_path)
    assert code == 0, stderr
    trace = json.loads((tmp_path / "live" / "traces" / "live.json").read_text())
    green = "hub" in [name for name, *_ in trace["threads"]]  # gevent's hub is a lane of its own
    assert green == (mode == "gevent"), trace["threads"]
    assert ('async_mode = "gevent"' in (tmp_path / "saved.toml").read_text()) == (mode == "gevent")
    assert "on-ping_me" in journeys(tmp_path / "live") and "emit-pong" in journeys(tmp_path / "live")


def test_a_saved_scenario_whose_secret_is_not_set_is_one_line(tmp_path):
    (tmp_path / "app.py").write_text("from flask import Flask\nfrom flask_socketio import SocketIO\n"
                                     "app = Flask(__name__)\nsocketio = SocketIO(app, async_mode='threading')\n")
    (tmp_path / "s.toml").write_text('[app]\nimport = "app:socketio"\n[clients.a]\nauth = { token = { env = "DISPEL_SECRET_NOPE" } }\n'
                                     '[[steps]]\ndo = "connect"\n')
    env = {k: v for k, v in os.environ.items() if k != "DISPEL_SECRET_NOPE"}
    proc = subprocess.run([sys.executable, "-m", "dispel", "report", "--scenario", "s.toml", "--out", str(tmp_path / "out")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert "reads the secret DISPEL_SECRET_NOPE from the environment, which is not set" in one_error(proc)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- acceptance: the sample app's chat page in Chromium

PORT_OR_ID = re.compile(r"(?<=[:=])\d{4,5}\b|\b[A-Za-z0-9_-]{20}\b|<(?:sid|eio-sid|sio-sid|port)[^>]*>")


def normalised(value: str | None) -> str:
    return PORT_OR_ID.sub("<x>", value or "")


def hop_differences(name: str, live, scripted) -> list[str]:
    """What differs between two chains of the same journey after ports and ids are normalised:
    hops added or left out (aligned by function, line and edge), then the values of aligned hops
    (the first place they differ, with some context)."""
    import difflib

    def key(h):
        return (h.func.key, h.line, h.edge)

    out = []
    a, b = [key(h) for h in live.hops], [key(h) for h in scripted.hops]
    pairs = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            pairs += zip(range(i1, i2), range(j1, j2))
        else:
            shown = lambda ks: ", ".join(f"{k[0]}:{k[1]}" for k in ks) or "nothing"
            out.append(f"{name}: live hops {i1 + 1}-{i2} ({shown(a[i1:i2])}) where the browser scenario has hops {j1 + 1}-{j2} ({shown(b[j1:j2])})")
    for i, j in pairs:
        x, y = normalised(live.hops[i].value), normalised(scripted.hops[j].value)
        if x != y:
            at = next((k for k, (c, d) in enumerate(zip(x, y)) if c != d), min(len(x), len(y)))
            out.append(f"{name}#{i + 1} ({live.hops[i].func.key}): value differs at {at}: {x[max(0, at - 20):at + 40]!r} live, "
                       f"{y[max(0, at - 20):at + 40]!r} in the browser scenario")
    return out


@pytest.mark.slow
def test_acceptance_the_chat_page_in_chromium_gives_the_browser_scenarios_journeys(tmp_path):
    from dispel.pins.installed import lines_by_source
    from dispel.project import Project, load_traces
    from dispel.report import build_chains
    from dispel.run import browser

    why = browser.unavailable()
    if why:
        pytest.skip(why)
    proc, port = start_live(tmp_path / "live", "--app", "dispel.sample_app.app:socketio", "--save-scenario", str(tmp_path / "browser.toml"),
                            cwd=ROOT / "scripts")
    try:
        time.sleep(0.5)
        client = browser.BrowserClient(port)
        try:
            for step in ("connect", "chat", "join", "ack", "disconnect"):  # the page's own steps (catalog: browser)
                client.step(step, 20)
                time.sleep(0.3)
        finally:
            client.close()
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    live_chains = {p.stem: p for p in (tmp_path / "live" / "traces" / "chains").glob("*.json")}
    committed = load_traces(Project(ROOT))["browser"]
    _, scripted, _ = build_chains(committed, lines_by_source({"browser": committed}, ROOT / "scripts"))
    assert sorted(live_chains) == sorted(scripted)
    from dispel.tracefiles.codec import chain_from_dict

    differences = []
    for name in sorted(scripted):
        differences += hop_differences(name, chain_from_dict(json.loads(live_chains[name].read_text())), scripted[name])
    out = os.environ.get("DISPEL_LIVE_DIFFERENCES")
    if out:  # the list for the closing note
        Path(out).write_text("\n".join(differences) + "\n")
    assert 'transport = "upgrade"' in (tmp_path / "browser.toml").read_text()
    # the one difference: the scenario serves the sample app through its main(), the live mode (as a
    # scenario file does) through SocketIO.run itself
    assert len(differences) == 1 and differences[0].startswith("run: live hops 1-1 (flask_socketio:SocketIO.run:"), differences
    assert "where the browser scenario has hops 1-2 (dispel.sample_app.app:main:" in differences[0]
    # the saved scenario replays the session deterministically: twice, the same trace, byte for byte
    traces = []
    for n in (1, 2):
        done = dispel("record", "--scenario", str(tmp_path / "browser.toml"), "--out", str(tmp_path / f"replay{n}"),
                      "--root", str(ROOT / "scripts"), cwd=ROOT / "scripts", timeout=300)
        assert done.returncode == 0, done.stderr
        traces.append((tmp_path / f"replay{n}" / "browser.json").read_bytes())
    assert traces[0] == traces[1]


@pytest.mark.slow
def test_a_stop_while_a_client_is_still_connected_and_a_task_emits_cuts_cleanly(tmp_path):
    """Ctrl-C in the middle of things: a background task emitting every 0.1 s to a client still
    connected. The recording is cut there, as at the end of a scenario, and the report builds."""
    proc, port = start_live(tmp_path / "live", "--app", "forever:socketio", "--save-scenario", str(tmp_path / "saved.toml"))
    client = subprocess.Popen([sys.executable, "-c", ("import socketio, sys, time\nc = socketio.Client()\n"
                               "c.connect(f'http://127.0.0.1:{sys.argv[1]}', transports=['websocket'])\n"
                               "c.emit('join', 'fans')\ntime.sleep(60)\n"), str(port)])
    try:
        time.sleep(3)
        proc.send_signal(signal.SIGINT)  # the client is still connected, the task still emitting
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        client.kill()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    said = stdout.splitlines()
    assert "client 1 sent 'join' [/]" in said and "emit 'score' to room 'fans' [/]" in said
    assert any(line.startswith("still running when the scenario ended (cut there): ") and "push_scores" in line for line in said)
    assert {"broadcast-score", "on-join"} <= set(journeys(tmp_path / "live"))
    index = (tmp_path / "live" / "docs" / "index.md").read_text()
    assert "- client 1 (WebSocket): connect /, emit 'join'; it was still connected when the recording stopped" in index
    assert "scoreboard-secret" not in (tmp_path / "live" / "traces" / "live.json").read_text()


@pytest.mark.slow
def test_live_takes_a_factory_as_a_scenario_file_does(tmp_path):
    shop = APPS / "shop"
    proc = dispel("report", "--live", "--app", "shopapp:create_app", "--out", str(tmp_path / "out"), "--duration", "1", cwd=shop)
    assert "shopapp:create_app is a function, not a flask_socketio.SocketIO; pass --factory to call it" in one_error(proc)
    proc = dispel("report", "--live", "--app", "shopapp:create_app", "--factory", "--out", str(tmp_path / "out"), "--duration", "1", cwd=shop)
    assert "no Socket.IO traffic" in one_error(proc)  # the factory's app was served
    assert list(tmp_path.iterdir()) == []
