"""Derived journeys on the sample app's committed traces: the committed chain files (written by the
hand-written finders these replaced), hop for hop (function, event, edge, line), with the same joins,
values and wire; the names derived; the generated texts."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from dispel.catalog import Journey
from dispel.chains import build as chains
from dispel.chains import derive
from dispel.chains.derive_finders import find_disconnect
from dispel.check import completeness, integrity
from dispel.pins import installed
from dispel.tracefiles.codec import chain_from_dict, trace_from_json
from tiny_traces import trace

ROOT = Path(__file__).resolve().parents[1]
# derived journey -> the catalogue's journey it must equal, per scenario
SAME = {
    "chat": {"run": "run", "handshake": "handshake", "on-chat": "on", "emit-reply": "emit", "ack-shout": "ack", "disconnect": "disconnect"},
    "rooms": {"broadcast-joined": "broadcast"},
}
CASES = [(sc, d, c) for sc, m in SAME.items() for d, c in m.items()]


@pytest.fixture(scope="module")
def traces():
    return {sc: trace_from_json((ROOT / "traces" / f"{sc}.json").read_text()) for sc in SAME}


@pytest.mark.parametrize("scenario, derived, committed", CASES, ids=[c[1] for c in CASES])
def test_derived_equals_the_catalogues_chain(traces, scenario, derived, committed):
    trace = traces[scenario]
    found = {d.journey.name: d for d in derive.derive(trace)}
    d = found[derived]
    chain = chains.build(trace, d.journey, installed.lines_by_source({scenario: trace}), d.find)
    old = chain_from_dict(json.loads((ROOT / "traces" / "chains" / f"{committed}.json").read_text()))
    assert [(h.func.key, h.event, h.edge, h.line) for h in chain.hops] == [(h.func.key, h.event, h.edge, h.line) for h in old.hops]
    assert [h.value for h in chain.hops] == [h.value for h in old.hops]
    assert chain.joins == old.joins and chain.wire == old.wire


def test_what_is_derived_from_the_chat_trace(traces):
    names = [d.journey.name for d in derive.derive(traces["chat"])]
    assert names == [
        "run", "handshake", "connect", "on-chat", "on-join", "on-shout", "ack-shout",
        "emit-welcome", "emit-reply", "broadcast-joined", "disconnect",
    ]


@pytest.mark.parametrize("kind, event, namespace, name", [
    ("on", "message", "/chat", "on-message-chat"), ("on", "*", "/", "on-any"), ("emit", "a b/c", "/", "emit-a_b_c"),
    ("disconnect", "", "/", "disconnect"),
])
def test_slug(kind, event, namespace, name):
    assert derive.slug(kind, event, namespace) == name


def test_generated_texts_for_the_apps_hops(traces):
    from dispel.render import app_notes

    trace = traces["chat"]
    lines = installed.lines_by_source({"chat": trace})
    derived = derive.derive(trace)
    built = {d.journey.name: chains.build(trace, d.journey, lines, d.find) for d in derived}
    texts = app_notes.app_texts(trace, built, lines)
    assert texts["dispel.sample_app.app:on_chat"] == (
        f"{app_notes.GENERATED} The app's handler of 'chat' on namespace `/`: Flask-SocketIO's `SocketIO._handle_event` "
        "calls it. It emits 'reply' at line 25: `emit(\"reply\", {\"echo\": message})`."
    )
    assert "It emits 'joined' at line 31" in texts["dispel.sample_app.app:on_join"]
    assert texts["dispel.sample_app.app:<module>"].startswith(f"{app_notes.GENERATED} The app's module body")
    summaries = app_notes.summaries(derived, built)
    assert "`on_chat`" in summaries["journey:on-chat"] and "`'chat'`" in summaries["journey:on-chat"]
    # the sample's keyed texts and journey summaries are not reused for another app's journeys
    kept = app_notes.library_texts({"a:f": "x", "a:f@on": "y", "journey:on": "z"})
    assert kept == {"a:f": "x"}


def test_a_text_that_cannot_be_filled_on_a_derived_journey_is_left_out_not_fatal(traces):
    from dispel import report_pages

    trace = traces["chat"]
    d = {x.journey.name: x for x in derive.derive(trace)}["emit-reply"]
    chain = chains.build(trace, d.journey, installed.lines_by_source({"chat": trace}), d.find)
    bad, good = chain.hops[1].func.key, chain.hops[2].func.key
    mine, dropped = report_pages.fillable(chain, {bad: "see {{hop:nowhere:nothing}}", good: "on {{thread}}"})
    assert bad not in mine and good in mine
    assert len(dropped) == 1 and dropped[0].startswith(f"{bad} on emit-reply:") and "nowhere:nothing" in dropped[0]


# ------------------------------------------------------------------ the disconnect's CLOSE, on small frozen traces

MASK = b"7\xfa!="
CLOSE_CODE = b"\x03\xe8"  # 1000, normal closure


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A client's masked frame, as the reader's socket.recv returned it."""
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + MASK + bytes(b ^ MASK[k % 4] for k, b in enumerate(payload))


def disconnect_trace(shape: str):
    """A client's DISCONNECT ('41'), CLOSE ('1') and close frame, as the server's threads ran them.
    ``lock`` (python-engineio 4.13, simple-websocket 1.1): the CLOSE queues the end, and the writer
    closes the WebSocket with the server's close frame; the reader's answer to the client's close
    frame then raises (not recorded here). ``oldest`` (python-engineio 4.4, simple-websocket 0.10):
    Engine.IO's decode first tries each payload as JSON; the CLOSE only queues the end (the writer
    stops, sending nothing), and the reader answers the client's close frame with the server's,
    whose code is the client's, unmasked by the parse of its frame."""
    oldest = shape == "oldest"
    packet_41, packet_1 = 11, 12
    closing = b"\x88\x02" + CLOSE_CODE  # the server's close frame
    reader = [
        ("", 0, "simple_websocket.ws:Base._thread", (), None),
        ("recv41", 1, "_socket:socket.recv", (), client_frame(1, b"41")),
        ("", 1, "simple_websocket.ws:Base._handle_events", (), "True"),
        ("", 2, "wsproto.frame_protocol:XorMaskerSimple.process", (), b"41"),
        ("set41", 2, "threading:Condition.notify_all", (), "None"),
        ("recv1", 1, "_socket:socket.recv", (), client_frame(1, b"1")),
        ("", 1, "simple_websocket.ws:Base._handle_events", (), "True"),
        ("", 2, "wsproto.frame_protocol:XorMaskerSimple.process", (), b"1"),
        ("set1", 2, "threading:Condition.notify_all", (), "None"),
        ("recv_close", 1, "_socket:socket.recv", (), client_frame(8, CLOSE_CODE)),
        ("", 1, "simple_websocket.ws:Base._handle_events", (), "False"),
        ("unmask", 2, "wsproto.frame_protocol:XorMaskerSimple.process", (), CLOSE_CODE),
        ("", 2, "wsproto.events:CloseConnection.response", (), ("<CloseConnection>", 21)),
        *([("", 2, "wsproto:WSConnection.send", (("event", "<CloseConnection>", 21),), closing),
           ("answer", 2, "_socket:socket.send", (("data", closing),), "4")] if oldest else []),
        ("shut", 1, "socket:socket.close", (), "None"),
    ]
    request = [
        ("", 0, "engineio.socket:Socket._websocket_handler", (), None),
        ("", 1, "engineio.socket:Socket._websocket_handler.<locals>.websocket_wait", (), "41"),
        ("woke41", 2, "threading:Condition.wait", (), "True"),
        ("", 2, "threading:Event.clear", (), "None"),
        ("", 1, "engineio.packet:Packet.__init__", (("self", "<Packet>", packet_41), ("encoded_packet", "41")), "None"),
        ("", 2, "engineio.packet:Packet.decode", (("self", "<Packet>", packet_41), ("encoded_packet", "41")), "None"),
        *([("", 3, "engineio.json:loads", (("args", "<tuple>"),), "1"),
           ("json_try", 4, "engineio.json:_safe_int", (("s", "1"),), "1")] if oldest else []),
        ("", 1, "engineio.socket:Socket.receive", (("pkt", "<Packet>", packet_41),), "None"),
        ("", 2, "socketio.server:Server._handle_eio_message", (("data", "1"),), "None"),
        ("", 3, "socketio.packet:Packet.decode", (("encoded_packet", "1"),), "0"),
        ("", 3, "socketio.server:Server._handle_disconnect", (("namespace", "None"),), "None"),
        ("", 4, "flask_socketio:SocketIO._handle_event", (("message", "disconnect"),), "None"),
        ("handler", 5, "app:on_disconnect", (), "None"),
        ("got1", 1, "engineio.socket:Socket._websocket_handler.<locals>.websocket_wait", (), "1"),
        ("woke1", 2, "threading:Condition.wait", (), "True"),
        ("", 2, "threading:Event.clear", (), "None"),
        ("", 1, "engineio.packet:Packet.__init__", (("self", "<Packet>", packet_1), ("encoded_packet", "1")), "None"),
        ("decode1", 2, "engineio.packet:Packet.decode", (("self", "<Packet>", packet_1), ("encoded_packet", "1")), "None"),
        ("receive1", 1, "engineio.socket:Socket.receive", (("pkt", "<Packet>", packet_1),), "None"),
        ("", 2, "engineio.socket:Socket.close", (), "None"),
        ("", 3, "queue:Queue.put", (("item", "None"),), "None"),
        ("end_queued", 4, "threading:Condition.notify", (), "None"),
    ]
    writer = [
        ("", 0, "engineio.socket:Socket._websocket_handler.<locals>.writer", (), None),
        ("", 1, "engineio.socket:Socket.poll", (), "<list len=0>"),
        ("", 2, "queue:Queue.get", (), "None"),
        ("woke_writer", 3, "threading:Condition.wait", (), "True"),
        *([("", 1, "simple_websocket.ws:Base.close", (), "None"),
           ("", 2, "wsproto:WSConnection.send", (("event", "<CloseConnection>", 22),), closing),
           ("closes", 2, "_socket:socket.send", (("data", closing),), "4")] if not oldest else []),
    ]
    return trace({"ws-reader-1": reader, "request-1": request, "eio-writer-1": writer},
                 [("set41", "woke41"), ("set1", "woke1"), ("end_queued", "woke_writer")])


# shape -> (where the CLOSE's part ends, the send of the server's close frame, its part, the close
# code's maker when the server echoes the client's, Engine.IO's JSON try of the DISCONNECT's text)
CLOSES = {
    "lock": ("closes", "closes", 1, None, None),
    "oldest": ("end_queued", "answer", 2, "unmask", "json_try"),
}


@pytest.mark.parametrize("shape", list(CLOSES))
def test_the_close_is_followed_to_where_it_is_decoded_and_the_close_frame_to_its_maker(shape):
    trace, at = disconnect_trace(shape)
    close_end, send, send_part, echoed, json_try = CLOSES[shape]
    parts, _ = find_disconnect(chains.TraceGraph(trace), websocket=True)
    assert [p[0] for p in parts] == [at["recv41"], at["recv1"], at["recv_close"]]
    assert parts[1][-1] == at[close_end]
    assert at[send] in parts[send_part] and parts[-1][-1] == at["shut"]
    chain = chains.build(trace, Journey("disconnect", "t", "tiny", "derived", "disconnect"), {}, lambda g: find_disconnect(g, True))
    on = {h.event for h in chain.hops}
    assert {at["decode1"], at["receive1"], at[send]} <= on  # the CLOSE, on to where it was decoded and what took it
    assert (echoed is None or at[echoed] in on) and (json_try is None or at[json_try] in on)
    assert [layer.layer for layer in chain.wire][-1] == "WebSocket close" and chain.wire[-1].fields[0].value == "1000"
    assert integrity.verdicts(chain, trace) == []
    found = completeness.findings(trace, chain)
    assert completeness.problems(found) == [] and completeness.figures(found)[1] >= 4
    # without the hop the shape added, the rule names what is missing
    for label in (echoed, json_try):
        if label:
            cut = [f for f in completeness.findings(trace, dataclasses.replace(chain, hops=tuple(h for h in chain.hops if h.event != at[label])))
                   if f.missing]
            assert [f.missing for f in cut] == [(at[label],)]
