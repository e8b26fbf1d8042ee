"""`dispel report` on tests/programs/apps/one_reply.py, an app that sends every answer as the same
event: one journey per emit call site, the sender left out of a room's broadcast, an emit with a
callback, a handler that raises, the emit after a `socketio.call` (the splice of issue 24, found
by dispel.check.integrity on the old derivation), and nothing that ran left unsaid."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from dispel.catalog import Journey
from dispel.chains import build as chains
from dispel.chains import derive, derive_finders, hand_written
from dispel.chains import graph as chain_graph
from dispel.chains import routes as chain_routes
from dispel.check import integrity
from dispel.model import EDGE_ENTRY
from dispel.tracefiles.codec import chain_from_dict, trace_from_json

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "tests" / "programs" / "apps"
SOURCE = (APPS / "one_reply.py").read_text().splitlines()


def line_of(text: str) -> int:
    """The line of the app's source that holds ``text`` (one line only)."""
    found = [n for n, line in enumerate(SOURCE, 1) if text in line]
    assert len(found) == 1, (text, found)
    return found[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("one_reply") / "report"
    proc = subprocess.run([sys.executable, "-m", "dispel", "report", "--scenario", "one_reply.toml", "--out", str(out)],
                          cwd=APPS, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    found = {p.stem: chain_from_dict(json.loads(p.read_text())) for p in (out / "traces" / "chains").glob("*.json")}
    trace = trace_from_json((out / "traces" / "one_reply.json").read_text())
    return out, proc.stdout, found, trace


def test_one_journey_per_emit_call_site(built):
    _, stdout, found, _ = built
    sites = {
        "emit-reply-on_hello": line_of('{"text": f"hello {name}"}'),
        "emit-reply-on_join": line_of('{"text": f"joined {room}"}'),
        "emit-reply-on_ask": line_of('{"text": f"you answered {answer}"}'),
        "emit-reply-on_bye": line_of('{"text": "bye then"}'),
        "emit-reply-acked": line_of('{"text": "got your ack"}'),
    }
    for name, line in sites.items():
        assert f"{name}-{line}" in found, (name, line, sorted(found))
        assert f"journey {name}-{line}: " in stdout
    # each ends at the frame of its own message
    assert '"joined lobby"' in found[f"emit-reply-on_join-{sites['emit-reply-on_join']}"].hops[-1].value
    assert '"got your ack"' in found[f"emit-reply-acked-{sites['emit-reply-acked']}"].hops[-1].value
    assert "line" in found[f"emit-reply-on_hello-{sites['emit-reply-on_hello']}"].title


def test_the_emit_after_a_call_is_its_own_message(built):
    _, _, found, _ = built
    chain = found[f"emit-reply-on_ask-{line_of('you answered')}"]
    assert chain.hops[0].func.qualname == "on_ask" and '"you answered' in chain.hops[-1].value
    assert not any("quiz" in (h.value or "") for h in chain.hops)


def test_the_old_derivation_spliced_it_and_the_rule_says_where(built):
    """The old finder followed the trail from the handler's frame: its first hand-off was the
    call's packet ('quiz'), then it ended at the reply's frame on a later turn of the writer's loop."""
    _, _, _found, trace = built
    g = chain_graph.TraceGraph(trace)
    source = next(i for i in g.find(lambda e: e.func == "one_reply:on_ask"))
    sink = next(i for i in g.find(lambda e: chain_graph.is_sink("send")(e) and chain_graph.mentions(e, ("you answered",))))
    needles = ('"reply"',)
    old = chains.build(trace, Journey("emit-old", "old", trace.scenario, "derived", "sent"), None,
                       lambda g: ([hand_written.with_producer(g, chain_routes.value_trail(g, source, sink, needles))], needles + ('"quiz"',)))
    said = integrity.verdicts(old, trace)
    assert any('"quiz"' in (h.value or "") for h in old.hops)  # it was spliced
    assert len(said) == 1 and said[0].startswith(f"emit-old: hop {len(old.hops)} (_socket:socket.send, call): sends ")
    assert "you answered" in said[0] and "quiz" in said[0] and "wake-up handed over" in said[0]


def test_the_sender_left_out_is_on_the_broadcast(built):
    out, _, found, _ = built
    assert "where python-socketio leaves the sender out" in (out / "docs" / "chains" / "broadcast-reply.md").read_text()
    chain = found["broadcast-reply"]
    assert "the sender left out" in chain.title
    starts = [n for n, h in enumerate(chain.hops) if h.edge == EDGE_ENTRY]
    last = chain.hops[starts[-1]:]
    # Manager.emit's loop over get_participants (a generator: one hop per resume) moves on past
    # the sender without a send
    keys = [h.func.key for h in last]
    assert keys[0] == "socketio.manager:Manager.emit" and keys.count("socketio.base_manager:BaseManager.get_participants") >= 2
    assert set(keys) == {"socketio.manager:Manager.emit", "socketio.base_manager:BaseManager.get_participants"}
    assert '"someone joined"' in chain.hops[starts[-1] - 1].value  # the part before it: the frame to the other client


def test_an_emit_with_a_callback(built):
    _, _, found, _ = built
    name = f"callback-reply-on_bye-{line_of('bye then')}"
    chain = found[name]
    starts = [n for n, h in enumerate(chain.hops) if h.edge == EDGE_ENTRY]
    ack = chain.hops[starts[-1]:]
    keys = [h.func.key for h in ack]
    assert ack[0].func.key.startswith("_socket:socket.recv")
    assert keys.index("socketio.manager:Manager.trigger_callback") < keys.index("one_reply:on_bye.<locals>.acked")
    assert keys[-1] == "flask_socketio:SocketIO.emit"  # what the callback does: it emits again


def test_a_raising_handler_is_printed_with_its_journey(built):
    out, stdout, found, _ = built
    line = line_of('data["amount"] / 2')
    # the recording's own line, which names the step too (the traceback's is then not said again)
    assert (f"error in the app: steps[16] (emit 'oops', client b): TypeError: unsupported operand type(s) for /: 'str' and 'int' "
            f"(raised at one_reply.py:{line} in on_oops); shown by journey on-oops") in stdout
    assert "the app raised: TypeError" not in stdout
    hops = found["on-oops"].hops
    at = next(n for n, h in enumerate(hops) if h.func.key == "one_reply:on_oops" and h.edge != EDGE_ENTRY)
    assert hops[at].line == line and hops[at].value.startswith("raised an exception")
    index = (out / "docs" / "index.md").read_text()
    assert f"`one_reply.py:{line}` in `on_oops`: [on-oops](chains/on-oops.md) shows where it was caught" in index


def test_nothing_that_ran_is_left_unsaid(built):
    out, stdout, found, trace = built
    g = chain_graph.TraceGraph(trace)
    on = {h.func.key for c in found.values() for h in c.hops}
    said = [ln for ln in stdout.splitlines() if ln.startswith("not derived: ")]
    for i in g.find(lambda e: e.func == derive_finders.HANDLE_EVENT):
        handler = derive_finders.handler_of(g, i)
        if handler is not None:
            func = trace.funcs[g.ev(handler).func]
            assert func.key in on or any(f"{func.source.path}:{func.first_line}" in s for s in said), func.key
    # every call site of the app that reached python-socketio's Server.emit (the call's 'quiz' too)
    shown = {(h.func.key, h.line) for c in found.values() for h in c.hops}
    sites = {derive.emit_site(g, i) for i in g.find(lambda e: e.func == derive_finders.SERVER_EMIT)}
    assert len(sites) >= 7
    for frame, line in sites:
        func = trace.funcs[g.ev(frame).func]
        assert (func.key, line) in shown or any(s.startswith(f"not derived: {func.source.path}:{line}: ") for s in said), (func.key, line)
    index = (out / "docs" / "index.md").read_text().replace("\\", "")  # Markdown's escapes
    assert all(f"- {s}" in index for s in said)  # (none, now that the server-to-client call has its journey)


def test_the_report_checks_clean(built):
    out = built[0]
    proc = subprocess.run([sys.executable, "-m", "dispel", "check", "--root", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout
    assert re.search(r"integrity \d", proc.stdout)
    # every wire value of the app's pages has its maker or reader on its chain, and both commands say how many
    for said in (built[1], proc.stdout):
        m = re.search(r"^completeness: (\d+) of (\d+) wire values have their maker or reader on the chain", said, re.MULTILINE)
        assert m and m.group(1) == m.group(2) and int(m.group(2)) > 0, said


CAUGHT = '''from flask import Flask
from flask_socketio import SocketIO, emit

app = Flask(__name__)
socketio = SocketIO(app, async_mode="threading")


@socketio.on("boom")
def on_boom(data):
    raise ValueError(f"cannot handle {data!r}")


@socketio.on_error_default
def on_any_error(exc):
    emit("error", {"why": str(exc)})
'''


def test_an_exception_the_apps_error_handler_caught(tmp_path):
    (tmp_path / "caught.py").write_text(CAUGHT)
    (tmp_path / "scenario.toml").write_text('[app]\nimport = "caught:socketio"\n[clients.a]\n[[steps]]\ndo = "connect"\n'
                                            '[[steps]]\ndo = "emit"\nevent = "boom"\ndata = "x"\n[[steps]]\ndo = "expect"\nevent = "error"\n'
                                            '[[steps]]\ndo = "disconnect"\n')
    proc = subprocess.run([sys.executable, "-m", "dispel", "report", "--scenario", "scenario.toml", "--out", "out", "--no-site"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert ("the app raised: ValueError, caught by flask_socketio:SocketIO._handle_event, which called on_any_error "
            "(caught.py:10, in on_boom; its message is not in the trace): journey on-boom shows it") in proc.stdout
    hops = chain_from_dict(json.loads((tmp_path / "out" / "traces" / "chains" / "on-boom.json").read_text())).hops
    at = next(n for n, h in enumerate(hops) if h.func.key == "caught:on_boom" and h.edge != EDGE_ENTRY)
    assert [h.func.key for h in hops[at + 1:]] == ["flask_socketio:SocketIO._handle_event", "caught:on_any_error"]
    assert hops[at + 1].line_text == "return err_handler(value)"


def test_an_ack_after_the_handler_emitted(built):
    """on_echo emits, then returns its ack: the ACK's journey follows the ACK's own hand-off, not
    the emit's (from the handler the first hand-off was the reply's packet)."""
    _, stdout, found, trace = built
    chain = found["ack-echo"]
    assert chain.hops[-1].func.key == "_socket:socket.send" and '431[{"echo":"ping"}]' in chain.hops[-1].value
    assert not any('"echoing"' in (h.value or "") for h in chain.hops)
    assert integrity.verdicts(chain, trace) == []
    assert f"journey emit-reply-on_echo-{line_of('echoing')}: " in stdout
