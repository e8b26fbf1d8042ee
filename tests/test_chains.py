"""The joiner on tiny programs and the chains of the committed trace: edges, continuity, required hops, bad input."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import trace_of
from dispel import catalog
from dispel.chains import build as chains
from dispel.chains import finders, hand_written
from dispel.chains import graph as chain_graph
from dispel.chains import makers as chain_makers
from dispel.chains import routes as chain_routes
from dispel.model import (
    EDGE_CALL,
    EDGE_DATA,
    EDGE_ENTRY,
    EDGE_QUEUE,
    EDGE_RETURN,
    EDGE_THREAD_START,
    EDGE_WAKE,
    DispelError,
)
from dispel.pins import installed
from dispel.tracefiles.codec import (
    chain_from_dict,
    chain_to_dict,
    trace_from_json,
    trace_to_json,
)
from dispel.tracefiles.values import value_text_to_python
from programs import threads as prog
from programs import values as pv

ROOT = Path(__file__).resolve().parents[1]


def first(trace, func, **arg_text):
    return next(
        e.index
        for e in trace.events
        if e.func == func and all(any(a.name == k and v in a.text for a in e.args) for k, v in arg_text.items())
    )


# ------------------------------------------------------------------ joiner on tiny programs


def test_queue_producer_to_consumer_crosses_by_wake_up():
    trace = trace_of(prog.producer_consumer)
    g = chain_graph.TraceGraph(trace)
    put = first(trace, "programs.threads:produce")
    got = first(trace, "programs.threads:consume")
    steps = chain_routes.connect(g, put, got)
    edges = [e for _, e in steps]
    assert EDGE_WAKE in edges, edges
    woken = g.ev(steps[edges.index(EDGE_WAKE)][0])
    assert woken.func == "threading:Condition.wait" and woken.thread == "main"


def test_thread_started_by_a_function():
    trace = trace_of(prog.launch)
    g = chain_graph.TraceGraph(trace)
    steps = chain_routes.connect(g, first(trace, "programs.threads:launch"), first(trace, "programs.threads:work"))
    assert [g.ev(i).func for i, e in steps if e == EDGE_THREAD_START] == ["threading:Thread.run"]
    assert g.ev(steps[-1][0]).func == "programs.threads:work"


def test_buffer_and_event_hand_off():
    trace = trace_of(prog.buffer_event)
    g = chain_graph.TraceGraph(trace)
    steps = chain_routes.connect(g, first(trace, "programs.threads:reader"), first(trace, "programs.threads:handle"))
    kinds = [(g.ev(i).func, e) for i, e in steps]
    assert ("threading:Condition.wait", EDGE_WAKE) in kinds
    assert kinds[-1] == ("programs.threads:handle", EDGE_CALL)


def test_two_consumers_identity_decides():
    trace = trace_of(prog.two_consumers)
    g = chain_graph.TraceGraph(trace)
    for name in ("first", "second"):
        made = first(trace, "programs.threads:Payload.__init__", name=name)
        token = g.ev(made).args[0].token  # self: the Payload object
        used = next(e.index for e in trace.events if e.func == "programs.threads:consume" and e.args[0].token == token)
        steps = chain_routes.connect(g, made, used)
        assert steps[-1][0] == used
        # The chain enters the consumer's thread by a wake-up of that consumer, or
        # (when it was already awake) by the get that returned this very object.
        entered = next((i, e) for i, e in steps if g.ev(i).thread == g.ev(used).thread)
        assert entered[1] in (EDGE_WAKE, EDGE_DATA)
        if entered[1] == EDGE_DATA:
            assert g.ev(entered[0]).ret.token == token


# ------------------------------------------------------------------ the committed trace


@pytest.fixture(scope="module")
def traces():
    names = [*catalog.DEFAULT_SCENARIOS, *(n for sc in catalog.PROCESS_SCENARIOS.values() for n in sc.trace_names())]
    return {n: trace_from_json((ROOT / "traces" / f"{n}.json").read_text(), f"traces/{n}.json") for n in names}


@pytest.fixture(scope="module")
def trace(traces):
    return traces["chat"]


@pytest.fixture(scope="module")
def built(traces):
    return finders.build_all(traces, installed.lines_by_source(traces))


def connected(g: chain_graph.TraceGraph, prev: int, cur: int, edge: str) -> bool:
    a, b = g.ev(prev), g.ev(cur)
    if edge == EDGE_CALL:
        return b.parent == prev
    if edge == EDGE_RETURN:
        return a.parent == cur
    if edge == EDGE_THREAD_START:
        return any(t.started_by == prev and t.root == cur for t in g.trace.threads)
    if edge == EDGE_WAKE:
        return any(w.notify == prev and w.wait == cur for w in g.trace.wakeups)
    if edge == EDGE_DATA:
        tokens = {x.token for x in b.args if x.token}
        return any(x.ret is not None and x.ret.token in tokens for x in map(g.ev, g.ancestors(prev)))
    if edge == EDGE_QUEUE:
        return (prev, cur, EDGE_QUEUE) in g.cross
    return edge == EDGE_ENTRY


def test_every_hop_is_in_the_trace_and_consecutive_hops_are_connected(traces, built):
    for name, chain in built.items():
        trace, links = chains.scenario_trace(traces, chain.scenario)
        g = chain_graph.TraceGraph(trace, None, links)
        assert chain.hops[0].edge == EDGE_ENTRY
        for prev, cur in zip(chain.hops, chain.hops[1:]):
            ev = trace.events[cur.event]
            assert (ev.func, ev.thread) == (cur.func.key, cur.thread), f"{name}: hop {cur.func.key} not in the trace"
            assert connected(g, prev.event, cur.event, cur.edge), f"{name}: {prev.func.key} -{cur.edge}-> {cur.func.key}"


def keys(chain):
    return [h.func.key for h in chain.hops]


def in_order(chain, *wanted):
    """Each wanted function appears on the chain, in this order."""
    ks = keys(chain)
    pos = -1
    for w in wanted:
        assert w in ks[pos + 1 :], f"{chain.journey}: {w} missing after position {pos}"
        pos = ks.index(w, pos + 1)


def test_run_goes_from_the_app_to_bind_listen_accept(built):
    # socketio.run -> Flask.run -> werkzeug's server -> socketserver -> the socket calls.
    in_order(
        built["run"],
        "dispel.sample_app.app:main",
        "flask_socketio:SocketIO.run",
        "flask.app:Flask.run",
        "werkzeug.serving:run_simple",
        "socketserver:TCPServer.server_bind",
        "_socket:socket.bind",
        "socketserver:TCPServer.server_activate",
        "_socket:socket.listen",
        "socketserver:BaseServer.serve_forever",
        "_socket:socket._accept",
    )


def test_handshake_follows_the_key_to_the_101(built):
    chain = built["handshake"]
    # Parsed from the TCP socket by http.server/email, rebuilt for wsproto, answered by h11.
    in_order(
        chain,
        "_socket:socket._accept",
        "_socket:socket.recv_into",
        "http.client:parse_headers",
        "werkzeug.serving:WSGIRequestHandler.make_environ",
        "engineio.server:Server.handle_request",
        "simple_websocket.ws:Server.handshake",
        "wsproto.utilities:generate_accept_token",
        "_socket:socket.send",
    )
    assert {h.thread for h in chain.hops} == {"server", "request-1"}
    assert any(h.edge == EDGE_THREAD_START for h in chain.hops)
    fields = {f.name: f.value for layer in chain.wire for f in layer.fields}
    assert fields["Sec-WebSocket-Accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455's worked example


def test_on_registers_then_dispatches_across_three_threads(built):
    chain = built["on"]
    assert [h.edge for h in chain.hops].count(EDGE_ENTRY) == 2  # registration, then dispatch
    in_order(chain, "dispel.sample_app.app:<module>", "flask_socketio:SocketIO.on", "socketio.base_server:BaseServer.on")
    in_order(
        chain,
        "_socket:socket.recv",
        "simple_websocket.ws:Base._handle_events",
        "threading:Condition.notify_all",
        "threading:Condition.wait",
        "engineio.socket:Socket.receive",
        "socketio.server:Server._handle_eio_message",
        "threading:Thread.start",
        "dispel.sample_app.app:on_chat",
    )
    threads = [h.thread for h in chain.hops if h.edge in (EDGE_WAKE, EDGE_THREAD_START)]
    assert threads == ["request-1", "handler-1"]


def test_emit_crosses_to_the_writer_and_ends_on_the_frame(built):
    chain = built["emit"]
    in_order(
        chain,
        "dispel.sample_app.app:on_chat",
        "flask_socketio:emit",
        "socketio.server:Server.emit",
        "socketio.packet:Packet.encode",
        "engineio.socket:Socket.send",
        "queue:Queue.put",
        "threading:Condition.wait",
        "simple_websocket.ws:Base.send",
        "wsproto.frame_protocol:FrameProtocol._serialize_frame",
        "_socket:socket.send",
    )
    sink = chain.hops[-1]
    assert sink.thread.startswith("eio-writer") and '"reply"' in sink.value
    layers = [w.layer for w in chain.wire]
    assert layers[:3] == ["WebSocket frame (RFC 6455)", "Engine.IO packet (v4)", "Socket.IO packet (v5)"]


def test_ack_carries_the_id_and_answers_with_the_return_value(built):
    chain = built["ack"]
    in_order(
        chain,
        "_socket:socket.recv",
        "socketio.server:Server._handle_eio_message",
        "threading:Thread.start",
        "dispel.sample_app.app:on_shout",
        "socketio.server:Server._handle_event_internal",
        "socketio.server:Server._send_packet",
        "queue:Queue.put",
        "threading:Condition.wait",
        "_socket:socket.send",
    )
    assert "421" in next(h.value for h in chain.hops if h.value and "shout" in h.value)
    fields = {f.name: f.value for layer in chain.wire for f in layer.fields}
    assert fields["ack id"] == "1" and fields["type"] == "3"  # ACK, answering id 1


def test_broadcast_stores_the_room_and_reaches_both_members(built):
    chain = built["broadcast"]
    parts = [i for i, h in enumerate(chain.hops) if h.edge == EDGE_ENTRY]
    assert len(parts) == 3  # the room kept, then one frame per client in it
    in_order(chain, "dispel.sample_app.app:on_join", "flask_socketio:join_room", "socketio.base_manager:BaseManager.basic_enter_room")
    sinks = [h for h in chain.hops if h.func.key == "_socket:socket.send"]
    assert len(sinks) == 2 and len({h.thread for h in sinks}) == 2, "two writer threads, one per member"
    assert all('"joined"' in h.value for h in sinks)


def test_disconnect_in_the_order_the_client_leaves(built):
    chain = built["disconnect"]
    assert [h.edge for h in chain.hops].count(EDGE_ENTRY) == 3  # DISCONNECT, CLOSE, the close frame
    in_order(
        chain,
        "_socket:socket.recv",
        "socketio.server:Server._handle_eio_message",
        "socketio.server:Server._handle_disconnect",
        "dispel.sample_app.app:on_disconnect",
        "socketio.base_manager:BaseManager.basic_leave_room",
        "engineio.socket:Socket.close",
        "threading:Condition.wait",
        "simple_websocket.ws:Base.close",
        "_socket:socket.send",
        "_socket:socket.recv",
        "socket:socket.close",
    )
    frames = {f.name: f.value for layer in chain.wire for f in layer.fields}
    assert frames["opcode"] == "0x8" and frames["status code"] == "1000"  # the server's close frame


@pytest.mark.parametrize("name", ["upgrade", "upgrade-python"])
def test_upgrade_probes_then_hands_the_socket_to_a_writer(built, name):
    chain = built[name]
    values = [h.value or "" for h in chain.hops]
    assert any("2probe" in v for v in values) and any("3probe" in v for v in values)
    in_order(chain, "_socket:socket.recv", "engineio.socket:Socket._websocket_handler", "_socket:socket.send")
    starts = [h for h in chain.hops if h.edge == EDGE_THREAD_START]
    assert len(starts) == 1 and starts[0].thread.startswith("eio-writer"), "the writer starts only after the UPGRADE packet"
    assert chain.hops[-1].thread == starts[0].thread and chain.hops[-1].func.key == "_socket:socket.send"


def test_browser_upgrade_answers_its_poll_with_noop_and_inflates_its_frames(built):
    chain = built["upgrade"]
    # Chromium negotiated permessage-deflate: the probe shows in clear only once inflated.
    inflated = [h for h in chain.hops if h.func.key.endswith("PerMessageDeflate.frame_inbound_payload_data")]
    assert inflated and "b'2probe'" in (inflated[0].value or "")
    # The poll made while `upgrading` is set is answered at once, on its own request thread.
    noop = [h for h in chain.hops if h.func.key == "_socket:socket.sendall"]
    assert [h.value for h in noop] == ["data = b'6'"]
    poll_thread = noop[0].thread
    assert poll_thread not in {h.thread for h in chain.hops if "probe" in (h.value or "")}
    in_order(chain, "engineio.socket:Socket.handle_get_request", "engineio.packet:Packet.__init__", "_socket:socket.sendall")
    # The Python client never polls during the probe: no NOOP answer on its chain.
    assert not [h for h in built["upgrade-python"].hops if h.func.key == "_socket:socket.sendall"]


def test_polling_waits_in_a_get_and_answers_with_the_packets_a_post_caused(built):
    chain = built["polling"]
    get_thread = chain.hops[0].thread
    assert "GET /socket.io/" in chain.hops[0].value and "transport=polling" in chain.hops[0].value
    post = next(h for h in chain.hops[1:] if h.func.key.startswith("_socket:socket.recv"))
    assert post.thread != get_thread and "POST /socket.io/" in post.value
    in_order(
        chain,
        "engineio.socket:Socket.handle_get_request", "engineio.socket:Socket.poll",  # the GET waits
        "engineio.socket:Socket.handle_post_request", "engineio.payload:Payload.__init__", "engineio.socket:Socket.receive",
        "socketio.server:Server._handle_connect", "dispel.sample_app.app:on_connect", "queue:Queue.put",  # the POST's packet
        "threading:Condition.wait", "engineio.payload:Payload.encode", "_socket:socket.sendall",  # the GET answers
    )
    wake = next(i for i, h in enumerate(chain.hops) if h.edge == EDGE_WAKE)
    assert chain.hops[wake].thread == get_thread and chain.hops[wake - 1].thread == post.thread
    assert chain.hops[-1].thread == get_thread
    # Two packets in one body, joined by the record separator.
    sent = value_text_to_python(chain.hops[-1].value.split(" = ", 1)[1]).decode()
    assert [p[:3] for p in sent.split("\x1e")] == ['42[', '40{']
    layers = [layer.layer for layer in chain.wire]
    assert layers[:2] == ["HTTP request", "Engine.IO payload (POST body)"]
    assert layers.index("HTTP response") < layers.index("Engine.IO payload (GET response body)")
    response = chain.wire[layers.index("HTTP response")]
    assert ("Transfer-Encoding", "chunked") in [(f.name, f.value) for f in response.fields]


def test_a_client_that_never_upgrades_has_no_upgrade_journey(traces):
    upgrade = catalog.journey("upgrade")
    with pytest.raises(chain_graph.JourneyError, match="never upgraded: no 2probe"):
        finders.build(traces["chat"], upgrade)  # the chat client starts on websocket


@pytest.mark.traced_python
def test_committed_chains_are_what_the_committed_trace_gives(built):
    for name, chain in built.items():
        committed = json.loads((ROOT / "traces" / "chains" / f"{name}.json").read_text())
        assert chain_to_dict(chain) == committed, f"traces/chains/{name}.json is stale: run `dispel chains`"
        assert chain_from_dict(committed) == chain


def test_building_twice_gives_the_same_chains(traces, built):
    again = finders.build_all(traces, installed.lines_by_source(traces))
    assert {k: chain_to_dict(v) for k, v in again.items()} == {k: chain_to_dict(v) for k, v in built.items()}


# ------------------------------------------------------------------ bad input


def test_truncated_trace_is_one_clear_error():
    text = (ROOT / "traces" / "chat.json").read_text()
    with pytest.raises(DispelError, match="not valid JSON.*re-record"):
        trace_from_json(text[: len(text) // 2], "chat.json")


def test_other_schema_version_is_refused(trace):
    data = json.loads(trace_to_json(trace))
    data["schema"] = 99
    with pytest.raises(DispelError, match="schema 99"):
        trace_from_json(json.dumps(data), "chat.json")


def test_a_sink_that_never_happened_names_the_last_hop(trace):
    without_sends = dataclasses.replace(
        trace,
        events=tuple(
            dataclasses.replace(e, func="socketserver:BaseServer.serve_forever") if e.func == "_socket:socket.send" else e
            for e in trace.events
        ),
    )
    with pytest.raises(chain_graph.JourneyError, match="journey 'emit'.*never happened.*last hop reached: on_chat"):
        finders.build_all({"chat": without_sends}, only=["emit"])


def test_unknown_journey_is_refused(trace):
    with pytest.raises(DispelError, match="unknown journey 'nope'"):
        finders.build_all({"chat": trace}, only=["nope"])


# ------------------------------------------------------------------ the right wait


def test_a_long_poll_is_woken_in_its_blocking_get_not_in_the_drain():
    trace = trace_of(pv.long_poll)
    g = chain_graph.TraceGraph(trace)
    poll = first(trace, "programs.values:poll")
    woken = hand_written.woken_waits(g, poll)
    assert len(woken) == 1
    wait = g.ev(woken[0])
    get = g.ev(wait.parent)
    assert wait.func == "threading:Condition.wait" and get.func == "queue:Queue.get"
    assert [a.text for a in get.args if a.name == "block"] == ["True"]  # not get(block=False)
    # The notify that ended it is the sender's put, and the chain from poll to it goes through that get.
    steps = chain_routes.connect(g, poll, woken[0])
    assert [g.ev(i).func for i, _ in steps] == ["queue:Queue.get", "threading:Condition.wait"]
    assert g.ev(steps[0][0]).call_line == pv.poll.__code__.co_firstlineno + 1


def test_polling_part_one_ends_where_the_get_blocks(built):
    chain = built["polling"]
    part1 = chain.hops[: [h.edge for h in chain.hops].index(EDGE_ENTRY, 1)]
    assert part1[-1].func.key == "threading:Condition.wait"
    get, poll = part1[-2], part1[-3]
    assert get.func.key == "queue:Queue.get" and poll.func.key == "engineio.socket:Socket.poll"
    assert "self.queue.get(" in poll.line_text and "block=False" not in poll.line_text
    woken = next(h for h in chain.hops if h.edge == EDGE_WAKE)
    assert woken.event == part1[-1].event, "the wake-up ends the very wait part 1 stopped at"


# ------------------------------------------------------------------ producers


def graph_of(fn):
    trace = trace_of(fn)
    return trace, chain_graph.TraceGraph(trace, installed.lines_by_source({"t": trace}))


def test_a_value_made_in_a_sibling_call_is_joined_to_the_sink():
    trace, g = graph_of(pv.sibling_producer)
    sink = first(trace, "programs.values:sink")
    assert [(g.ev(p).func, u, k) for p, u, k in chain_makers.producers(g, sink)] == [("programs.values:encode", sink, "result")]
    steps, joins = chain_makers.walk_with_producers(g, [[first(trace, "programs.values:sibling_producer"), sink]])
    assert [g.ev(i).func.split(":")[1] for i, _ in steps] == ["sibling_producer", "encode", "sibling_producer", "sink"]
    assert joins == [(first(trace, "programs.values:encode"), sink, "result")]


def test_a_generators_yield_feeds_the_loop_that_calls_the_sink():
    trace, g = graph_of(pv.generator_consumer)
    sinks = [e.index for e in trace.events if e.func == "programs.values:sink"]
    yields = [e.index for e in trace.events if e.func == "programs.values:events"]
    for sink, fed in zip(sinks, yields):
        found = chain_makers.producers(g, sink)
        assert (fed, sink, "yield") in found or (fed, sink, "result") in found
        assert all(p < sink for p, _, _ in found)
    # The last resume (the generator ending) is no producer: it comes after every sink.
    assert yields[-1] not in {p for s in sinks for p, _, _ in chain_makers.producers(g, s)}


def test_of_two_candidates_the_value_decides_not_the_position():
    trace, g = graph_of(pv.two_candidates)
    sink = first(trace, "programs.values:sink")
    chosen = first(trace, "programs.values:encode", name="chosen")
    assert chain_makers.producers(g, sink) == [(chosen, sink, "result")]
    # Swap the texts: the other call becomes the producer.
    decoy = first(trace, "programs.values:encode", name="decoy")
    sink_ev = trace.events[sink]
    swapped = dataclasses.replace(
        trace,
        events=tuple(
            dataclasses.replace(e, args=(dataclasses.replace(e.args[0], text=trace.events[decoy].ret.text),)) if e.index == sink else e
            for e in trace.events
        ),
    )
    g2 = chain_graph.TraceGraph(swapped, g.lines)
    assert chain_makers.producers(g2, sink) == [(decoy, sink, "result")]
    assert sink_ev.args[0].text == "'2chosen'"


def test_the_four_producers_of_the_issue_are_hops_joined_to_their_users(built):
    def joined(journey, producer, kind):
        chain = built[journey]
        for j in chain.joins:
            if chain.hops[j.producer - 1].func.key == producer and j.kind == kind:
                assert j.producer < j.user <= len(chain.hops)
                return chain.hops[j.user - 1]
        raise AssertionError(f"{journey}: {producer} is not joined by {kind}: {chain.joins}")

    for journey in ("emit", "broadcast"):
        user = joined(journey, "socketio.base_manager:BaseManager.get_participants", "yield")
        assert user.func.key == "socketio.server:Server._send_eio_packet"
    assert joined("ack", "socketio.packet:Packet.encode", "result").func.key == "engineio.server:Server.send"
    assert joined("handshake", "wsproto.handshake:H11Handshake._process_connection_request", "stored").func.key == "wsproto.handshake:H11Handshake.events"
    assert joined("handshake", "wsproto.handshake:H11Handshake.events", "yield").func.key == "wsproto:WSConnection.send"
    assert joined("polling", "engineio.packet:Packet.decode", "parsed").func.key == "engineio.socket:Socket.receive"
