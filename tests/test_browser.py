"""The official Socket.IO JavaScript client in headless Chromium (scenario "browser"): its
chains for the steps it shares with the Python client agree with those of traces/chat.json,
hop by hop, modulo transport; it long-polls before it upgrades; and it leaves no browser behind."""
from __future__ import annotations

import difflib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dispel import catalog
from dispel.chains import build as chains
from dispel.chains import derive_finders, finders, hand_written
from dispel.chains import graph as chain_graph
from dispel.chains import routes as chain_routes
from dispel.chains.graph import TraceGraph, mentions
from dispel.check import drift
from dispel.run import browser
from dispel.tracefiles.codec import trace_from_json

ROOT = Path(__file__).resolve().parents[1]
CLIENT_JS = ROOT / "scripts" / "dispel" / "sample_app" / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
TIMEOUT = 60  # the scenario's --timeout; the subprocess gets a little more for start-up and writing

# Where a chain may differ by transport: the WebSocket frame codec. Chromium offers
# permessage-deflate (RFC 7692) and the server accepts it, while the Python client
# (websocket-client) does not offer it, so on the reader thread the payload first shows
# in clear inside the inflating extension instead of the message decoder.
TRANSPORT_MODULES = {"wsproto.frame_protocol", "wsproto.extensions"}

pytestmark = pytest.mark.browser


def chromium_pids() -> set[str]:
    """Chromium's processes, and dispel.run.pacer's (the proxy the browser talks through)."""
    proc = subprocess.run(["pgrep", "-f", "chromium|dispel.run.pacer"], capture_output=True, text=True)
    return set(proc.stdout.split())


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """The browser scenario recorded in a fresh interpreter; (trace, seconds it took)."""
    if not (browser.CHROMIUM.is_file() and browser.CHROMEDRIVER.is_file()):
        pytest.skip(f"no {browser.CHROMIUM} / {browser.CHROMEDRIVER}: apt-get install chromium chromium-driver")
    if not CLIENT_JS.is_file():
        pytest.skip("no socket.io-client in scripts/dispel/sample_app/node_modules: npm ci --prefix scripts/dispel/sample_app")
    out = tmp_path_factory.mktemp("browser")
    before = chromium_pids()
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "dispel", "record", "browser", "--out", str(out), "--timeout", str(TIMEOUT)],
        capture_output=True, text=True, cwd=ROOT, timeout=TIMEOUT + 30,
    )
    took = time.monotonic() - began
    assert proc.returncode == 0, proc.stderr
    # Orphaned helpers are reaped a moment after the browser quits.
    end = time.monotonic() + 10
    while chromium_pids() - before and time.monotonic() < end:
        time.sleep(0.1)
    assert not chromium_pids() - before, "chromium or pacer processes left behind"
    text = (out / "browser.json").read_text(encoding="utf-8")
    return trace_from_json(text, "browser.json"), took, text


@pytest.fixture(scope="module")
def python_trace():
    return trace_from_json((ROOT / "traces" / "chat.json").read_text(encoding="utf-8"), "traces/chat.json")


def test_bounded_in_time(recorded):
    _, took, _ = recorded
    print(f"browser scenario recorded in {took:.1f}s")
    assert took < TIMEOUT


# ------------------------------------------------------------------ finders for both clients
# The committed finders look for the payload in clear text: the page that carries the
# JavaScript client also says "chat", and the browser's frames are compressed. These look
# for the Engine.IO + Socket.IO packets instead; on the Python trace they give the same chains.


def find_on(g: TraceGraph):
    handler = hand_written.only_one(hand_written._user_handler(g, "on_chat"), "the chat handler", "none")
    recv = hand_written.recv_before_text(g, ('42["chat"',), g.ev(handler).thread)
    needles = ('"chat"',)
    stored = derive_finders.registration(g, "chat")
    assert stored is not None, "the app's import registers no handler of 'chat'"
    return [stored, chain_routes.value_trail(g, recv, handler, needles)], needles + ("'chat'", "<b>hi</b>")


def find_emit(g: TraceGraph):
    handler = hand_written.only_one(hand_written._user_handler(g, "on_chat"), "the chat handler", "none")
    packet = hand_written.only_one(
        g.find(lambda e: mentions(e, ('42["reply"',)) and e.thread != g.ev(handler).thread), "the encoded reply packet", "on_chat"
    )
    # the frame that carries it: the next socket.send on the thread that holds the packet
    sink = hand_written.only_one(g.find(chain_graph.is_sink("send"), g.ev(packet).thread, after=packet), "the socket.send of the reply frame", "on_chat")
    return [hand_written.with_producer(g, chain_routes.value_trail(g, handler, sink, ('"reply"',)))], ('"reply"', "<b>hi</b>")


FINDERS = {"on": find_on, "emit": find_emit}


def build(trace, name: str):
    """The journey's chain found by this module's generalized finder."""
    return chains.build(trace, catalog.journey(name), find=FINDERS[name])


def hop_key(hop) -> tuple[str, str, str]:
    """A hop as compared across clients: function, thread role (its name without the number), edge."""
    return hop.func.key, re.sub(r"\d+$", "", hop.thread), hop.edge


@pytest.mark.parametrize("name", sorted(FINDERS))
def test_generalized_finder_matches_the_committed_one_on_the_python_trace(python_trace, name):
    assert build(python_trace, name).hops == finders.build(python_trace, catalog.journey(name)).hops


@pytest.mark.traced_python
@pytest.mark.parametrize("name", sorted(FINDERS))
def test_browser_chain_agrees_with_the_python_clients(recorded, python_trace, name):
    trace, _, _ = recorded
    python = [hop_key(h) for h in build(python_trace, name).hops]
    browser = [hop_key(h) for h in build(trace, name).hops]
    matcher = difflib.SequenceMatcher(a=python, b=browser, autojunk=False)
    differ = [(python[i1:i2], browser[j1:j2]) for op, i1, i2, j1, j2 in matcher.get_opcodes() if op != "equal"]
    for py_hops, br_hops in differ:
        print(f"{name}: python {[k[0] for k in py_hops]} / browser {[k[0] for k in br_hops]}")
        outside = [k for k in py_hops + br_hops if k[0].partition(":")[0] not in TRANSPORT_MODULES]
        assert not outside, f"{name}: the chains differ outside the transport modules: python {py_hops}, browser {br_hops}"
    if differ:
        assert "permessage-deflate" in upgrade_response(trace), "the frame codec differs, yet no compression was negotiated"
    # Both chains keep the agreed hops in the same order, and most of the chain is shared.
    same = sum(size for *_, size in matcher.get_matching_blocks())
    assert same >= 0.9 * len(python), f"{name}: only {same} of {len(python)} hops agree"


@pytest.mark.traced_python
def test_a_fresh_recording_repeats_the_committed_trace_byte_for_byte(recorded):
    # What the pacer is for: the browser's keys, masks and timing leave no trace. Its
    # version is no difference either: a browser update is said in a note.
    _, _, text = recorded
    committed = (ROOT / "traces" / "browser.json").read_text(encoding="utf-8")
    same, note = drift.browser_update(committed, text)
    same, batches = drift.writer_batches(committed, same)  # the one tolerated race (docs/how.md)
    for said in (note, batches):
        if said:
            print(f"note: {said}")
    assert same == committed, drift.trace_drift(committed, same)


@pytest.mark.traced_python
def test_another_chromium_version_is_a_note_not_a_difference(tmp_path):
    """A Chromium that says it is another major version, and sends that version in its
    User-Agent, records the committed trace; only the trace's metadata names it."""
    if browser.unavailable():
        pytest.skip(browser.unavailable())
    real = browser.chromium_version()
    major = int(real.split(".")[0]) + 1
    wrapper = tmp_path / "chromium"
    agent = f"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/{major}.0.0.0 Safari/537.36"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = --version ]; then echo "Chromium {major}.0.9999.1 built on a test wrapper"; exit 0; fi\n'
        f'exec {browser.CHROMIUM} --user-agent="{agent}" "$@"\n'
    )
    wrapper.chmod(0o755)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "dispel", "record", "browser", "--out", str(out), "--timeout", str(TIMEOUT)],
        capture_output=True, text=True, cwd=ROOT, timeout=TIMEOUT + 30,
        env={**os.environ, "DISPEL_CHROMIUM": str(wrapper)},
    )
    assert proc.returncode == 0, proc.stderr
    text = (out / "browser.json").read_text(encoding="utf-8")
    assert f"HeadlessChrome/{major}" not in text and "HeadlessChrome/<chromium>" in text
    committed = (ROOT / "traces" / "browser.json").read_text(encoding="utf-8")
    same, note = drift.browser_update(committed, text)
    assert note and f"Chromium {major}.0.9999.1" in note and drift.browser_version(committed) in note
    assert same == committed, drift.trace_drift(committed, same)


def test_browser_upgrade_agrees_with_the_python_clients_modulo_transport(recorded):
    """Same probe, same UPGRADE, same writer: the browser's chain differs only in the frame
    codec (it compresses) and in the poll it makes meanwhile, answered by NOOP."""
    trace, _, _ = recorded
    upgrade = catalog.journey("upgrade")
    python_trace = trace_from_json((ROOT / "traces" / "upgrade.json").read_text(encoding="utf-8"), "traces/upgrade.json")
    py_chain, br_chain = finders.build(python_trace, upgrade), finders.build(trace, upgrade)
    polled = {h.thread for h in br_chain.hops if h.func.key == chain_graph.SOCKET_C + "sendall"}
    assert len(polled) == 1, "the browser's poll during the upgrade is missing"
    python = [hop_key(h) for h in py_chain.hops]
    browser = [hop_key(h) for h in br_chain.hops]
    matcher = difflib.SequenceMatcher(a=python, b=browser, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        # a return into a call both chains make, after the codec's detour (compression), is the codec's too
        back = {k[0] for k in python} & {k[0] for k in browser}
        outside = [k for k in python[i1:i2] if k[0].partition(":")[0] not in TRANSPORT_MODULES] + [
            hop_key(h) for h in br_chain.hops[j1:j2]
            if h.func.key.partition(":")[0] not in TRANSPORT_MODULES and h.thread not in polled
            and not (h.edge == "return" and h.func.key in back)
        ]
        assert not outside, f"upgrade: the chains differ outside the transport: {outside}"


def upgrade_response(trace) -> str:
    return next(
        a.text for e in trace.events if e.func.startswith(chain_graph.SOCKET_C + "send")
        for a in e.args if "101 Switching Protocols" in a.text
    )


# ------------------------------------------------------------------ long-polling first


def request_line(trace, thread: str) -> str:
    """The first request line a server thread read."""
    for e in trace.events:
        if e.thread == thread and e.func in (chain_graph.SOCKET_C + "recv", chain_graph.SOCKET_C + "recv_into") and e.ret:
            return e.ret.text.split("\\r\\n", 1)[0]
    return ""


def test_the_browser_long_polled_before_the_upgrade(recorded):
    trace, _, _ = recorded
    started = {t.name: t.started_by for t in trace.threads}
    upgraded = next(e.thread for e in trace.events if e.func.startswith(chain_graph.SOCKET_C + "send") and any("101 Switching" in a.text for a in e.args))
    assert "transport=websocket" in request_line(trace, upgraded)
    polling = {t for t in started if "transport=polling" in request_line(trace, t)}
    gets = {e.thread for e in trace.events if e.func == "engineio.socket:Socket.handle_get_request"} & polling
    posts = {e.thread for e in trace.events if e.func == "engineio.socket:Socket.handle_post_request"} & polling
    assert gets and posts, "no long-poll GET or POST was handled"
    # Engine.IO's OPEN packet went out in a polling payload, on a connection accepted
    # before the one that upgraded (the server thread starts request threads in order).
    opened = [
        e.thread for e in trace.events
        if e.func == "engineio.payload:Payload.encode" and e.ret and e.ret.text.startswith("'0{")
    ]
    assert opened and opened[0] in polling and started[opened[0]] < started[upgraded], opened


def test_the_served_js_client_has_no_etag():
    # werkzeug would build it from the file's mtime and absolute path, which differ per
    # checkout; its text and length would then make a fresh clone's trace differ.
    if not CLIENT_JS.is_file():
        pytest.skip("no socket.io-client in scripts/dispel/sample_app/node_modules: npm ci --prefix scripts/dispel/sample_app")
    from dispel.sample_app.app import app

    response = app.test_client().get("/vendor/socket.io.min.js")
    assert response.status_code == 200 and response.data.startswith(b"/*")
    assert "ETag" not in response.headers


def test_a_browser_launched_ahead_and_never_taken_is_stopped():
    # record_scenario starts the browser beside the app's import; when the scenario fails
    # before its first step, nothing takes it, and closing the starter must end it
    from dispel.run.launchers import ClientStarter

    if not (browser.CHROMIUM.is_file() and browser.CHROMEDRIVER.is_file()):
        pytest.skip(f"no {browser.CHROMIUM} / {browser.CHROMEDRIVER}: apt-get install chromium chromium-driver")
    before = chromium_pids()
    starter = ClientStarter(catalog.scenario("browser"))
    launch = starter.launch
    assert launch is not None
    launch._thread.join()
    assert chromium_pids() - before, "the browser was not started ahead"
    starter.close()
    end = time.monotonic() + 10
    while chromium_pids() - before and time.monotonic() < end:
        time.sleep(0.1)
    assert not chromium_pids() - before, "chromium left behind"
    assert not Path(launch.profile).exists()
