"""Every byte has its maker and its reader (issue 27): the steps the chains took in (the Socket.IO
packet parse, h11's parse, the hand-offs of the CONNECT answer and of the writer's NOOP, the
outbound compression, the close that ends the read loop), each found here from the trace; and the
completeness rule (dispel.completeness), on the committed chains and on a chain with a maker hop
removed, alone and through `dispel check`."""
from __future__ import annotations

import dataclasses
import json
import zlib
from pathlib import Path

import pytest
from dispel import catalog
from dispel.chains import build as chains
from dispel.chains import finders
from dispel.check import completeness
from dispel.check import stage as verify
from dispel.model import EDGE_CALL, EDGE_ENTRY, JOIN_PARSED, JOIN_RESULT, JOIN_STORED
from dispel.pins import installed
from dispel.project import Project
from dispel.tracefiles.codec import chain_from_dict, chain_to_dict, trace_from_json
from dispel.tracefiles.values import value_text_to_python

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def traces():
    names = [*catalog.DEFAULT_SCENARIOS, *(n for sc in catalog.PROCESS_SCENARIOS.values() for n in sc.trace_names())]
    return {n: trace_from_json((ROOT / "traces" / f"{n}.json").read_text(), f"traces/{n}.json") for n in names}


@pytest.fixture(scope="module")
def built(traces):
    return finders.build_all(traces, installed.lines_by_source(traces))


def trace_of(traces, chain):
    return chains.scenario_trace(traces, chain.scenario)


def hop_number(chain, event: int) -> int:
    """The chain's hop number (1-based) of a trace event; fails when it is not on the chain."""
    found = [n for n, h in enumerate(chain.hops, 1) if h.event == event]
    assert found, f"event {event} is not on the chain {chain.journey}"
    return found[0]


def joined(chain, producer: int, user: int) -> str | None:
    """The kind of the join between two events' hops, if any."""
    p, u = hop_number(chain, producer), hop_number(chain, user)
    return next((j.kind for j in chain.joins if j.producer == p and j.user == u), None)


def func(trace, i: int) -> str:
    return trace.events[i].func


# ------------------------------------------------------------------ the six steps, found from the trace


@pytest.mark.parametrize("name", ["on", "ack"])
def test_the_socketio_packet_parse_is_on_the_chain(traces, built, name):
    """The call that decoded the Socket.IO packet's JSON into the arguments Server._handle_event received."""
    chain = built[name]
    trace, _ = trace_of(traces, chain)
    handle = next(h.event for h in chain.hops if h.func.key == "socketio.server:Server._handle_event")
    data = next(a.token for a in trace.events[handle].args if a.name == "data")
    made = [e.index for e in trace.events if e.ret is not None and e.ret.token == data and e.thread == trace.events[handle].thread and e.index < handle]
    assert made, "no call returned the arguments _handle_event received"
    assert func(trace, made[0]) == "engineio.json:loads"
    assert func(trace, trace.events[made[0]].parent) == "socketio.packet:Packet.decode"
    assert joined(chain, made[0], handle) == JOIN_PARSED
    hop_number(chain, trace.events[made[0]].parent)  # the decode itself is a hop


def test_the_h11_parse_of_the_rebuilt_request_is_on_the_chain(traces, built):
    """The call that made the h11 Request _process_connection_request checked."""
    chain = built["handshake"]
    trace, _ = trace_of(traces, chain)
    check = next(h.event for h in chain.hops if h.func.key == "wsproto.handshake:H11Handshake._process_connection_request")
    request = next(a.token for a in trace.events[check].args if a.name == "event")
    made = [e.index for e in trace.events if e.ret is not None and e.ret.token == request and e.index < check]
    deepest = made[-1]  # the calls that returned it nest: the innermost made it
    assert func(trace, deepest).startswith("h11._readers:")
    assert joined(chain, deepest, check) == JOIN_RESULT


def _handed_over(trace, chain, user_func: str, thread: str):
    """For the hop of ``user_func`` on ``thread`` whose receiver came out of a queue: (maker, put, get) in the trace."""
    user = next(h.event for h in chain.hops if h.func.key == user_func and h.thread == thread)
    packet = next(a.token for a in trace.events[user].args if a.name == "self")
    thread = trace.events[user].thread
    get = next(e.index for e in trace.events if e.func == "queue:Queue.get" and e.thread == thread and e.ret is not None and e.ret.token == packet)
    put = next(e.index for e in trace.events if e.func == "queue:Queue.put" and e.thread != thread and any(a.name == "item" and a.token == packet for a in e.args))
    maker = next(e.index for e in trace.events if e.func.endswith("Packet.__init__") and any(a.name == "self" and a.token == packet for a in e.args))
    return maker, put, get


def test_the_connect_answer_in_the_long_poll_is_handed_over_by_its_queue(traces, built):
    chain = built["polling"]
    trace, _ = trace_of(traces, chain)
    # the packet of the answer's second piece ('40{"sid":...}') is the one the GET's non-blocking get took
    encodes = [h.event for h in chain.hops if h.func.key == "engineio.packet:Packet.encode"]
    second = next(i for i in encodes if trace.events[i].ret.text.startswith("'40"))
    packet = next(a.token for a in trace.events[second].args if a.name == "self")
    get = next(e.index for e in trace.events if e.func == "queue:Queue.get" and e.ret is not None and e.ret.token == packet)
    assert any(a.name == "block" and a.text == "False" for a in trace.events[get].args), "collected by the non-blocking get"
    put = next(e.index for e in trace.events if e.func == "queue:Queue.put" and any(a.name == "item" and a.token == packet for a in e.args))
    assert trace.events[put].thread != trace.events[get].thread
    assert joined(chain, put, get) == JOIN_STORED
    maker = next(e.index for e in trace.events if e.func.endswith("Packet.__init__") and any(a.name == "self" and a.token == packet for a in e.args))
    assert chain.hops[hop_number(chain, maker) - 1].edge == EDGE_ENTRY  # its own part, on the POST's thread
    assert hop_number(chain, maker) < hop_number(chain, put) < hop_number(chain, get)


@pytest.mark.parametrize("name", ["upgrade", "upgrade-python"])
def test_the_writers_first_noop_was_queued_by_the_websocket_handler(traces, built, name):
    chain = built[name]
    trace, _ = trace_of(traces, chain)
    writer = chain.hops[-1].thread  # the writer thread sends the page's last frame
    maker, put, get = _handed_over(trace, chain, "engineio.packet:Packet.encode", writer)
    assert any(a.name == "packet_type" and a.text == "6" for a in trace.events[maker].args), "a NOOP"
    assert "Socket._websocket_handler" in func(trace, trace.events[put].parent) or any(
        "Socket._websocket_handler" in func(trace, a) for a in _ancestors(trace, put))
    assert joined(chain, put, get) == JOIN_STORED
    assert hop_number(chain, maker) < hop_number(chain, put) < hop_number(chain, get)


def _ancestors(trace, i: int) -> list[int]:
    out = []
    while i >= 0:
        out.append(i)
        i = trace.events[i].parent
    return out


def test_the_outbound_compression_is_on_the_chain(traces, built):
    """Each compressed frame the browser's page sends: the call that took its payload in clear
    last before the send is a hop, joined to the send."""
    chain = built["upgrade"]
    trace, _ = trace_of(traces, chain)
    sends = [h.event for h in chain.hops if h.func.key == "_socket:socket.send"]
    squeezed = 0
    for s in sends:
        data = value_text_to_python(next(a.text for a in trace.events[s].args if a.name == "data"))
        if not data[0] & 0x40:
            continue
        squeezed += 1
        clear = zlib.decompressobj(-15).decompress(data[2:] + b"\x00\x00\xff\xff")
        took = [e.index for e in trace.events if e.thread == trace.events[s].thread and e.index < s and e.index not in _ancestors(trace, s)
                and any(a.name != "self" and a.text in (repr(clear), repr(clear.decode())) for a in e.args)]
        assert func(trace, took[-1]) == "wsproto.extensions:PerMessageDeflate.frame_outbound"
        # detail on the chain, folded: reached by a call from the frame's serializer on the send's thread
        hop = chain.hops[hop_number(chain, took[-1]) - 1]
        assert hop.edge == EDGE_CALL and chain.hops[hop_number(chain, took[-1]) - 2].event == trace.events[took[-1]].parent
    assert squeezed >= 1


def test_the_close_frame_ends_the_read_loop_through_the_response_that_raises(traces, built):
    chain = built["disconnect"]
    trace, _ = trace_of(traces, chain)
    close = next(h.event for h in chain.hops if h.func.key == "_socket:socket.recv" and (h.value or "").startswith("return = b'\\x88"))
    after = [h for h in chain.hops[hop_number(chain, close):]]
    keys = [h.func.key for h in after]
    # the parse of the close frame, the event it gave, its response, and the send that raised
    parse = next(h.event for h in after if h.func.key == "wsproto.frame_protocol:FrameDecoder.process_buffer")
    assert trace.events[parse].ret.text == "<Frame>"
    response = next(h for h in after if h.func.key == "wsproto.events:CloseConnection.response")
    raised = [h for h in after if trace.events[h.event].raised]
    assert raised and raised[0].func.key == "wsproto:WSConnection.send"
    assert any(h.func.key == "wsproto.connection:Connection.send" for h in raised)
    # the response answers the very event the parse gave (the object the events call returned)
    event = next(a.token for a in trace.events[response.event].args if a.name == "self")
    assert any(trace.events[h.event].ret is not None and trace.events[h.event].ret.token == event for h in after)
    assert response.edge == EDGE_CALL and raised[0].edge == EDGE_CALL
    assert keys.index("wsproto.events:CloseConnection.response") < keys.index(raised[0].func.key) < keys.index("socket:socket.close")


# ------------------------------------------------------------------ the completeness rule


def test_the_layers_of_a_frame_a_compressed_frame_and_a_long_poll_body():
    frame = b"\x81\x0542[1]"
    assert completeness.layers(frame) == [frame, "42[1]", "2[1]"]
    squeeze = zlib.compressobj(wbits=-15)
    payload = (squeeze.compress(b"3probe") + squeeze.flush(zlib.Z_SYNC_FLUSH))[:-4]
    compressed = bytes([0xC1, len(payload)]) + payload
    assert completeness.layers(compressed) == [compressed, payload, "3probe"]
    assert completeness.compressed(compressed) == (payload, b"3probe")
    body = b'42["a"]\x1e40{"sid":"x"}'
    assert completeness.layers(body) == [body, body.decode(), '42["a"]', '2["a"]', '40{"sid":"x"}', '0{"sid":"x"}']
    assert completeness.layers(b"GET / HTTP/1.1\r\n\r\n") == [b"GET / HTTP/1.1\r\n\r\n"]


def test_every_committed_page_has_every_maker_and_reader(traces, built):
    per_page = completeness.site_findings(traces, built)
    assert set(per_page) == set(built)
    assert completeness.problems([f for fs in per_page.values() for f in fs]) == []
    done, total = completeness.figures([f for fs in per_page.values() for f in fs])
    assert done == total and total >= len(built)  # every page but run shows wire values


def _without(chain, event: int):
    """The chain with one hop taken out (the mutation)."""
    return dataclasses.replace(chain, hops=tuple(h for h in chain.hops if h.event != event), joins=())


def test_a_chain_without_its_maker_hop_is_named_by_page_and_value(traces, built):
    chain = built["on"]
    trace, links = trace_of(traces, chain)
    found = completeness.findings(trace, chain, "on", links)
    parse = next(f for f in found if f.way == "received" and f.value.startswith('2["chat"'))
    broken = _without(chain, parse.found[0])
    lines = completeness.problems(completeness.findings(trace, broken, "on", links))
    assert len(lines) == 1
    assert lines[0].startswith("completeness: docs/chains/on.md: the received value `2[\"chat\"")
    assert func(trace, parse.found[0]) in lines[0]
    # and a maker: the emit's frame without the call that encoded its Socket.IO packet
    emit = built["emit"]
    trace, links = trace_of(traces, emit)
    sent = next(f for f in completeness.findings(trace, emit, "emit", links) if f.value.startswith('2["reply"'))
    lines = completeness.problems(completeness.findings(trace, _without(emit, sent.found[0]), "emit", links))
    assert lines == [line for line in lines if "docs/chains/emit.md: the sent value `2[\"reply\"" in line] and len(lines) == 1


def test_dispel_check_fails_on_a_chain_without_its_maker(project):
    path = project / "traces" / "chains" / "emit.json"
    chain = chain_from_dict(json.loads(path.read_text()))
    traces = {p.stem: trace_from_json(p.read_text()) for p in (project / "traces").glob("*.json") if not p.name.endswith(".lock.json")}
    trace, links = chains.scenario_trace(traces, chain.scenario)
    sent = next(f for f in completeness.findings(trace, chain, "emit", links) if f.value.startswith('2["reply"'))
    path.write_text(json.dumps(chain_to_dict(_without(chain, sent.found[0])), indent=1))
    result = verify.check(Project(project), drift=False)
    mine = [line for line in result.failures if line.startswith("completeness:")]
    assert len(mine) == 1 and "docs/chains/emit.md: the sent value `2[\"reply\"" in mine[0]
    assert "socketio.packet:Packet.encode" in mine[0]
    assert not any(line.startswith("drift") for line in result.failures)
    assert result.completeness.startswith("completeness: ") and " of " in result.completeness


def test_audit_says_how_many_values_have_both(built):
    from dispel.review import stage as stages

    line = stages.chains_completeness(Project(ROOT), built, None)
    m = __import__("re").fullmatch(r"completeness: (\d+) of (\d+) wire values have their maker or reader on the chain \((\d+) pages\)", line)
    assert m and m.group(1) == m.group(2) and int(m.group(3)) == len(built)


def test_every_page_of_the_oldest_set_has_every_maker_and_reader():
    """The chains recorded at the oldest supported set (traces/oldest/, derived by that set's own
    dispel; `dispel check` compares them with a fresh derivation) hold the same rule: there, the
    disconnect's CLOSE is decoded on the request thread and only queues the end (python-engineio
    4.4), and the server's close frame is the reader's answer to the client's, its code the one the
    parse of the client's frame unmasked (simple-websocket 0.10, wsproto 1.2)."""
    folder = ROOT / "traces" / "oldest"
    traces = {p.stem: trace_from_json(p.read_text()) for p in folder.glob("*.json") if not p.name.endswith(".lock.json")}
    built = {p.stem: chain_from_dict(json.loads(p.read_text())) for p in sorted((folder / "chains").glob("*.json"))}
    per_page = completeness.site_findings(traces, built)
    assert completeness.problems([f for fs in per_page.values() for f in fs]) == []
    chain = built["disconnect"]
    trace = traces[chain.scenario]
    close = [f for f in per_page["disconnect"] if f.way == "received" and f.value == "1"]
    decoded = {func(trace, i) for f in close for i in f.found}
    assert "engineio.packet:Packet.decode" in decoded
    code = next(f for f in per_page["disconnect"] if f.way == "sent" and f.value == "\\x03\\xe8")
    assert func(trace, code.found[0]) == "wsproto.frame_protocol:XorMaskerSimple.process"
    answer = next(h for h in chain.hops if h.func.key == "_socket:socket.send")
    assert answer.thread == chain.hops[-1].thread and chain.hops[-1].func.key == "socket:socket.close"
