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


# ------------------------------------------------------------------ the finders on small frozen traces
# Each row: (thread, depth, "module:qualname", {argument: text or (text, token)}, return text or
# (text, token) or None). A module named "app" is the app's code; "_socket" the C socket methods.


def tiny(rows, wakeups=()):
    from dispel.model import (
        Event,
        Func,
        Source,
        ThreadInfo,
        TraceFile,
        Value,
        WakeUp,
        with_ends,
    )

    def value(name, v):
        return Value(name, *v) if isinstance(v, tuple) else Value(name, v)

    funcs, events, stacks, roots = {}, [], {}, {}
    for i, (thread, depth, key, args, ret) in enumerate(rows):
        module, qualname = key.split(":")
        dist = "sample_app" if module == "app" else "builtin" if module == "_socket" else "lib"
        funcs[key] = Func(module, qualname, Source(dist, "1", f"{module}.py"), 1, 9)
        stack = stacks.setdefault(thread, [])
        del stack[depth:]
        roots.setdefault(thread, i)
        events.append(Event(i, key, thread, stack[-1] if stack else -1, 1, depth, i, "s",
                            tuple(value(n, v) for n, v in args.items()), None if ret is None else value("return", ret)))
        stack.append(i)
    threads = tuple(ThreadInfo(name, -1, root) for name, root in roots.items())
    return TraceFile("tiny", "3.11.7", (), ("s",), funcs, threads, tuple(with_ends(events)), tuple(WakeUp(n, w) for n, w in wakeups))


CONNECT = "socketio.server:Server._handle_connect"
HANDLE = "flask_socketio:SocketIO._handle_event"


def test_connect_follows_the_first_accepted_connect_not_a_refused_one_before_it():
    from dispel.chains.graph import TraceGraph

    g = TraceGraph(tiny([
        # eve: refused (python-socketio made the CONNECT_ERROR packet, type 4)
        ("request-1", 0, "threading:Thread.run", {}, "None"),
        ("request-1", 1, "_socket:socket.recv", {}, "b'\\x81\\x0240'"),
        ("request-1", 1, CONNECT, {"namespace": "'/'"}, "None"),
        ("request-1", 2, "socketio.packet:Packet.__init__", {"packet_type": "4"}, "None"),
        ("request-1", 1, "_socket:socket.send", {"data": "b'\\x81\\x0644{\"message\":\"no\"}'"}, "9"),
        # ann: accepted, her handler ran, the answer with her sid
        ("request-2", 0, "threading:Thread.run", {}, "None"),
        ("request-2", 1, "_socket:socket.recv", {}, "b'\\x81\\x0240'"),
        ("request-2", 1, CONNECT, {"namespace": "'/'"}, "None"),
        ("request-2", 2, HANDLE, {"message": "'connect'"}, "None"),
        ("request-2", 3, "app:on_connect", {}, "None"),
        ("request-2", 1, "_socket:socket.send", {"data": "b'\\x81\\x1040{\"sid\":\"<sid-2>\"}'"}, "18"),
    ]))
    parts, _ = derive.find_connect(g)
    assert parts == [[6, 7, 9, 10]]  # not the refused _handle_connect (2), which comes first


def disconnects():
    """Two sessions ending: one closed by Engine.IO (its _handle_disconnect called from
    _handle_eio_disconnect, no close frame follows it), one whose client sent DISCONNECT and then
    CLOSE, answered by its writer's close frame; another session's writer sent a close frame
    earlier in the trace, and its reader read the client's close frame later."""
    closed_by_eio = [
        ("request-1", 0, "threading:Thread.run", {}, "None"),
        ("request-1", 1, "socketio.server:Server._handle_eio_disconnect", {}, "None"),
        ("request-1", 2, "socketio.server:Server._handle_disconnect", {"namespace": "'/'"}, "None"),
    ]
    asked = [
        ("request-2", 0, "threading:Thread.run", {}, "None"),
        ("request-2", 1, "_socket:socket.recv", {}, "b'\\x81\\x0241'"),
        ("request-2", 1, "engineio.packet:Packet.__init__", {"encoded_packet": "'41'"}, "None"),
        ("request-2", 1, "socketio.server:Server._handle_eio_message", {}, "None"),
        ("request-2", 2, "socketio.server:Server._handle_disconnect", {"namespace": "'/'"}, "None"),
        # a handler that takes no reason: the first call raised TypeError before entering it
        ("request-2", 3, HANDLE, {"message": "'disconnect'"}, None),
        ("request-2", 3, HANDLE, {"message": "'disconnect'"}, "None"),
        ("request-2", 4, "app:on_disconnect", {}, "None"),
        ("request-2", 1, "_socket:socket.recv", {}, "b'\\x81\\x011'"),
        ("request-2", 1, "engineio.socket:Socket.receive", {}, "'1'"),
        ("request-2", 2, "engineio.socket:Socket.close", {}, "None"),
        ("request-2", 3, "threading:Condition.notify", {}, "None"),
    ]
    rows = closed_by_eio + asked + [
        ("eio-writer-1", 0, "threading:Thread.run", {}, "None"),
        ("eio-writer-1", 1, "_socket:socket.send", {"self": ("<socket>", 5), "data": "b'\\x88\\x02\\x03\\xe8'"}, "4"),
        ("eio-writer-2", 0, "threading:Thread.run", {}, "None"),
        ("eio-writer-2", 1, "threading:Condition.wait", {}, "True"),
        ("eio-writer-2", 1, "_socket:socket.send", {"self": ("<socket>", 7), "data": "b'\\x88\\x02\\x03\\xe8'"}, "4"),
        ("ws-reader-2", 0, "threading:Thread.run", {}, "None"),
        ("ws-reader-2", 1, "_socket:socket.recv", {"self": ("<socket>", 7)}, "b'\\x88\\x82\\x00\\x00\\x00\\x00\\x03\\xe8'"),
        ("ws-reader-2", 1, "socket:socket.close", {}, "None"),
        ("ws-reader-1", 0, "threading:Thread.run", {}, "None"),
        ("ws-reader-1", 1, "_socket:socket.recv", {"self": ("<socket>", 5)}, "b'\\x88\\x82\\x00\\x00\\x00\\x00\\x03\\xe8'"),
        ("ws-reader-1", 1, "socket:socket.close", {}, "None"),
    ]
    return tiny(rows, wakeups=[(14, 18)])  # Socket.close's put woke eio-writer-2's wait


def test_disconnect_follows_the_clients_disconnect_to_its_own_close_frames():
    from dispel.chains.graph import TraceGraph

    trace = disconnects()
    names = [f"{e.thread}:{e.func.split(':')[1]}" for e in trace.events]
    g = TraceGraph(trace)
    parts, _ = derive.find_disconnect(g)
    farewell, closing, last = parts
    # the client's DISCONNECT (request-2), not Engine.IO's close of request-1's session, which
    # comes first; its handler through the call that entered it (the second)
    assert farewell[0] == 4 and farewell[-1] == 10 and names[10] == "request-2:on_disconnect"
    # its CLOSE led to its own writer's close frame (eio-writer-2), not to eio-writer-1's, earlier
    assert [names[i] for i in (closing[0], closing[-1])] == ["request-2:socket.recv", "eio-writer-2:socket.send"]
    # the client's close frame read on that connection, and the reader closing the socket
    assert [names[i] for i in last] == ["ws-reader-2:socket.recv", "ws-reader-2:socket.close"]


def test_an_emit_taken_by_a_waiting_free_long_poll_is_followed_through_the_queue():
    """Engine.IO queues the packet for a long-polling client; its GET, already past its wait or
    arriving later, takes it without waiting: no wake-up, the take of the very item is the hand-off."""
    from dispel.chains import routes
    from dispel.chains.graph import JourneyError, TraceGraph
    from dispel.chains.hand_written import with_producer
    from dispel.model import EDGE_DATA

    g = TraceGraph(tiny([
        ("request-3", 0, "threading:Thread.run", {}, "None"),
        ("request-3", 1, "engineio.socket:Socket.poll", {}, "<list>"),
        ("request-3", 2, "queue:Queue.get", {"self": ("<Queue>", 3)}, ("<Packet>", 9)),
        ("request-3", 1, "engineio.packet:Packet.encode", {"self": ("<Packet>", 9)}, "'42[\"moved\",1]'"),
        ("request-3", 1, "_socket:socket.sendall", {"data": ("b'42[\"moved\",1]'", 11)}, "None"),
        ("handler-1", 0, "threading:Thread.run", {}, "None"),
        ("handler-1", 1, "app:on_move", {}, "None"),
        ("handler-1", 2, "flask_socketio:SocketIO.emit", {"event": "'moved'"}, "None"),
        ("handler-1", 3, "queue:Queue.put", {"self": ("<Queue>", 3), "item": ("<Packet>", 9)}, "None"),
        ("handler-1", 4, "threading:Condition.notify", {}, "None"),
        # a later GET whose wait that notify ended (as the trace keeps it), which took another packet
        ("request-4", 0, "threading:Thread.run", {}, "None"),
        ("request-4", 1, "engineio.socket:Socket.poll", {}, "<list>"),
        ("request-4", 2, "queue:Queue.get", {"self": ("<Queue>", 3)}, ("<Packet>", 10)),
        ("request-4", 3, "threading:Condition.wait", {}, "True"),
        ("request-4", 1, "engineio.packet:Packet.encode", {"self": ("<Packet>", 10)}, "'42[\"moved\",1]'"),
        ("request-4", 1, "_socket:socket.sendall", {"data": "b'42[\"moved\",1]'"}, "None"),
    ], wakeups=[(9, 13)]))
    emit, sink = 7, 4
    with pytest.raises(JourneyError):
        routes.thread_route(g, emit, sink)
    assert routes.handoff_route(g, emit, sink) == [(8, 2, EDGE_DATA)]
    # the GET that took this very packet; not the one the notify woke, which took another
    assert derive.reaches(g, emit, sink) and derive.recipients(g, emit, ('"moved"',)) == [sink]
    trail = routes.value_trail(g, 6, sink, ('"moved"',))
    assert trail == [6, 8, 3, 4]  # the handler, the put, the encode on the GET's thread, the body
    assert (2, EDGE_DATA) in routes.walk(g, [trail])
    # the body's bytes were made by an untraced str.encode: their text's encoder made them
    assert with_producer(g, [8, 4]) == [8, 3, 4]
    assert not derive.reaches(g, 9, sink)  # a call that put nothing hands nothing over
