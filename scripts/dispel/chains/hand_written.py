"""The hand-written finders (pure): the transport's journeys (polling, upgrade, the handshake) and those across processes, and the wire bytes each page decodes."""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import replace

from .. import wire
from ..model import (
    Event,
)
from ..tracefiles.values import wire_bytes
from . import across  # across processes
from .graph import SOCKET_C, JourneyError, TraceGraph, is_sink, mentions
from .routes import handoff_route, producer, value_trail

# ------------------------------------------------------------------ journeys


def only_one(found: list[int], what: str, last: str) -> int:
    if not found:
        raise JourneyError(f"{what} never happened in the trace (last hop reached: {last})")
    return found[0]


_UPGRADE = "Upgrade: websocket"
# How the 101 response begins: "HTTP/1.1 101 Switching Protocols" from wsproto 1.3 on, "HTTP/1.1 101 "
# (no reason phrase) from wsproto 1.2.0
SWITCHING = "HTTP/1.1 101 "


def _header(data: bytes, name: str) -> str | None:
    m = re.search(rb"(?im)^" + re.escape(name.encode()) + rb":\s*(\S+)\r?$", data)
    return m.group(1).decode("latin-1") if m else None


def find_handshake(g: TraceGraph):
    sink = only_one(g.find(lambda e: e.func in (SOCKET_C + "send", SOCKET_C + "sendall") and any(SWITCHING in a.text for a in e.args)), "the 101 Switching Protocols response", "none")
    thread = g.ev(sink).thread
    info = next(t for t in g.trace.threads if t.name == thread)
    if info.started_by < 0:
        raise JourneyError(f"thread {thread} has no recorded start (last hop reached: {g.ev(sink).func})")
    starter = g.ev(info.started_by).thread
    # the accept before the start of the request's thread (in gevent, the accept itself: the hub
    # spawns a greenlet per accepted connection in gevent's own code)
    accept = [i for i in g.find(is_sink("_accept"), starter, before=info.started_by + 1)]
    entry = only_one(accept[-1:], "the accept of the upgraded connection", "none")
    request = only_one(g.find(lambda e: is_sink("recv_into")(e) and e.ret is not None and _UPGRADE in e.ret.text, thread), "the recv_into of the upgrade request", g.ev(entry).func)
    raw = wire_bytes(g.ev(request).returned.text)
    key = _header(raw, "Sec-WebSocket-Key")
    if key is None:
        raise JourneyError("the upgrade request carries no Sec-WebSocket-Key (last hop reached: socket.recv_into)")
    accepted = _header(wire_bytes(next(a.text for a in g.ev(sink).args if a.name == "data")), "Sec-WebSocket-Accept") or key
    # Follow the key (then the accept value computed from it) call by call: the first
    # call of each function that shows it is a waypoint.
    seen: set[str] = set()
    trail = []
    for i in g.find(lambda e: mentions(e, (key, accepted)), thread, after=request, before=sink):
        if g.ev(i).func not in seen:
            seen.add(g.ev(i).func)
            trail.append(i)
    return [with_producer(g, [entry, request, *trail, sink])], (key, accepted, _UPGRADE, "101")


def woken_waits(g: TraceGraph, scope: int) -> list[int]:
    """The waits under ``scope`` (itself included) that another thread's notify ended, in order:
    where a thread blocked until a hand-off reached it. A poll that blocks in ``get()`` and then
    drains without blocking is woken in the first ``get``; the drain is no wait at all."""
    end = g.ev(scope).end
    return sorted(w.wait for w in g.trace.wakeups if scope <= w.wait <= end)


def happened_before(g: TraceGraph, e: int, pred: Callable[[Event], bool]) -> int | None:
    """The latest call matching pred that happens-before position e: on e's thread before it,
    else before the hand-off that led into e's thread, and so on back. A hand-off into e itself
    counts (in gevent mode a wake-up lands on the traced call around gevent's wait, which may be
    the very call whose end e is)."""
    while True:
        thread = g.ev(e).thread
        arrivals = [(y, x) for x, y, _ in g.cross if g.ev(y).thread == thread and (y < e or y == e and g.ev(e).end == e)]
        start = max(arrivals)[0] if arrivals else -1
        hits = g.find(pred, thread, after=start, before=e)
        if hits:
            return hits[-1]
        if not arrivals:
            return None
        e = max(arrivals)[1]


def with_producer(g: TraceGraph, waypoints: list[int]) -> list[int]:
    """Waypoints with the builder of the sink's bytes put before the sink (see producer)."""
    sink = waypoints[-1]
    made = producer(g, sink)
    if made is None:
        return waypoints
    thread = g.ev(sink).thread
    kept = [w for w in waypoints[:-1] if g.ev(w).thread != thread or w < made]
    return kept + [made, sink]


def wire_of(g: TraceGraph, parts: list[list[int]], sink_arg: str) -> tuple:
    sink = g.ev(parts[-1][-1])
    data = next((a.text for a in sink.args if a.name == sink_arg), None)
    return wire.decode_frame(wire_bytes(data)) if data else ()


def wire_close(g: TraceGraph, parts: list[list[int]]) -> tuple:
    """The server's close frame, which a disconnect's page decodes: the first socket send of a close
    frame among the waypoints after the first part (the CLOSE's part ends at it; where the server's
    frame answers the client's instead, the last part sends it)."""
    for part in parts[1:]:
        for w in part:
            if is_sink("send", "sendall")(g.ev(w)) and mentions(g.ev(w), (CLOSE_FRAME, CLOSE_FRAME.replace("'", '"'))):
                return wire_of(g, [[w]], "data")
    return ()


def wire_frames(g: TraceGraph, parts: list[list[int]]) -> tuple:
    """Every WebSocket frame a part starts by reading or ends by writing, in order (a binary
    event's two frames, a call's ask and the client's ACK, the close frames)."""
    frames: list[tuple[str, tuple]] = []
    for part in parts:
        first, last = g.ev(part[0]), g.ev(part[-1])
        if is_sink("recv", "recv_into")(first) and first.ret is not None and first.ret.text.startswith("b'\\x8"):
            frames.append(("read", wire.decode_frame(wire_bytes(first.ret.text))))
        if is_sink("send", "sendall")(last):
            data = next((a.text for a in last.args if a.name == "data"), "")
            if data.startswith("b'\\x8"):
                frames.append(("sent", wire.decode_frame(wire_bytes(data))))
    if len(frames) == 1:
        return frames[0][1]
    # each tab names its frame: the layers of several frames would otherwise share their titles
    return tuple(replace(layer, layer=f"{layer.layer} · frame {k}, {how}") for k, (how, layers) in enumerate(frames, 1) for layer in layers)


def wire_on(g: TraceGraph, parts: list[list[int]]) -> tuple:
    # the last part that starts at a socket read (a raising handler's journey ends with where it was caught)
    recv = g.ev(next(p[0] for p in reversed(parts) if is_sink("recv", "recv_into")(g.ev(p[0]))))
    return wire.decode_frame(wire_bytes(recv.ret.text)) if recv.ret else ()


def wire_handshake(g: TraceGraph, parts: list[list[int]]) -> tuple:
    request = wire_bytes(g.ev(parts[0][1]).returned.text)
    response = _sent(g.ev(parts[0][-1]))
    return wire.decode_http(request, "request") + wire.decode_http(response, "response")


def _user_handler(g: TraceGraph, name: str) -> list[int]:
    return g.find(lambda e: e.func.startswith("dispel.sample_app.") and e.func.endswith(f":{name}"))


def recv_before_text(g: TraceGraph, needles: Sequence[str], not_thread: str = "") -> int:
    """The socket read that happened-before the first call (off ``not_thread``) showing needles."""
    first = only_one(g.find(lambda e: mentions(e, needles) and e.thread != not_thread), f"a message with {needles[0]}", "none")
    recv = happened_before(g, g.ev(first).end, is_sink("recv", "recv_into"))
    if recv is None:
        raise JourneyError(f"no socket read happened before {needles[0]} (last hop reached: none)")
    return recv


CLOSE_FRAME = "b'\\x88"  # how a close frame's bytes begin in a trace value


def fan_out(g: TraceGraph, source: int, sinks: Sequence[int], sent: Sequence[str]) -> list[list[int]]:
    """One emit reaching several sockets: from ``source`` to the first sink, then for each further
    client, from the loop that fans the packet out (the caller both hand-offs share) down to
    that client's frame."""
    parts = [with_producer(g, value_trail(g, source, sinks[0], sent))]
    first_handoff = handoff_route(g, source, sinks[0])[0][0]
    for sink in sinks[1:]:
        handoff = handoff_route(g, source, sink)[0][0]
        mine = g.ancestors(handoff)
        fork = next(x for x in g.ancestors(first_handoff) if x in mine)
        branch = mine[mine.index(fork) - 1]  # the fork's call that leads to this client
        parts.append(with_producer(g, value_trail(g, branch, sink, sent)))
    return parts


def find_upgrade(g: TraceGraph):
    """The probe over the new WebSocket ("2probe" -> "3probe"); a long-poll answered by
    NOOP ("6") meanwhile, if the client polls; the client's UPGRADE packet ("5"), after
    which the writer thread sends what the socket's queue holds over the WebSocket: first
    the NOOP queued after the probe, to end a poll that might still be waiting."""
    probe = ("2probe",)
    if not g.find(lambda e: mentions(e, probe)):
        raise JourneyError(
            "the client never upgraded: no 2probe in the trace; record a scenario whose client "
            "starts on long-polling and upgrades to websocket (last hop reached: none)"
        )
    recv = recv_before_text(g, probe)
    # Found by its encoding, not in the frame: a compressed frame (permessage-deflate) hides it.
    encoded = only_one(g.find(lambda e: e.ret is not None and e.ret.text == "'3probe'"), "the 3probe answer", "socket.recv")
    thread = g.ev(encoded).thread
    answer = only_one(g.find(is_sink("send"), thread, after=encoded)[:1], "the socket.send of the 3probe frame", "3probe")
    probing = with_producer(g, value_trail(g, recv, answer, ("probe",)))
    flushing = _noop_part(g, thread)
    upgraded = only_one(g.find(lambda e: any(a.text == "'5'" for a in e.args), thread, after=answer), "the UPGRADE packet", "3probe")
    recv5 = only_one([r for r in [happened_before(g, upgraded, is_sink("recv", "recv_into"))] if r is not None], "the socket read of the UPGRADE packet", "UPGRADE")
    started = [t for t in g.trace.threads if t.started_by > upgraded and g.ev(t.started_by).thread == thread]
    writer = only_one([t.root for t in started[:1]], "the writer thread started after the upgrade", "UPGRADE")
    first_frame = only_one(g.find(is_sink("send"), g.ev(writer).thread), "the writer's first frame", "Thread.start")
    switching = with_producer(g, [recv5, upgraded, first_frame])
    return [probing, *([flushing] if flushing else []), switching], probe + ("3probe", "'5'", "\\x81", "b'6'")


def _noop_part(g: TraceGraph, thread: str) -> list[int] | None:
    """A long-poll answered during the upgrade. With ``upgrading`` set, Engine.IO answers
    every poll at once with a NOOP (``6``), so that a client still polling (the browser)
    stops; None for a client that does not poll meanwhile (the Python client)."""
    polled = g.find(lambda e: is_sink("sendall")(e) and any(a.text == "b'6'" for a in e.args) and e.thread != thread)
    if not polled:
        return None
    sink = polled[0]
    recv = _first_read(g, g.ev(sink).thread, "the long-poll GET answered by NOOP", "3probe")
    noop = only_one(
        g.find(lambda e: e.func.endswith("Packet.__init__") and any(a.text == "6" for a in e.args), g.ev(sink).thread),
        "the NOOP packet", "the long-poll GET",
    )
    return with_producer(g, [recv, noop, sink])


def find_polling(g: TraceGraph):
    """Three parts: a long-poll GET arrives and waits for packets; a POST carries the
    client's CONNECT ("40") to the app's connect handler; the handler's emit wakes the
    waiting GET, which answers with every queued packet joined by the record separator."""
    post = only_one(
        g.find(lambda e: is_sink("recv", "recv_into")(e) and e.ret is not None and e.ret.text.startswith("b'POST /socket.io/")),
        "a long-polling POST", "none",
    )
    handler = only_one(_user_handler(g, "on_connect"), "the connect handler", "POST")
    joined = ("\\x1e",)
    sink = only_one(
        g.find(lambda e: is_sink("sendall")(e) and mentions(e, joined)),
        "a long-poll answer with two packets joined by \\x1e", "on_connect",
    )
    get = _first_read(g, g.ev(sink).thread, "the long-poll GET", "none")
    poll = only_one(g.find(lambda e: e.func.endswith("Socket.poll"), g.ev(sink).thread), "Socket.poll", "the long-poll GET")
    waiting = [get, only_one(woken_waits(g, poll)[:1], "the wait that the emit's notify ended", "Socket.poll")]
    posted = value_trail(g, post, handler, ("40",))
    answered = with_producer(g, value_trail(g, handler, sink, ('"welcome"',)))
    return [waiting, posted, answered], ("40", '"welcome"', "\\x1e")


def _first_read(g: TraceGraph, thread: str, what: str, last: str) -> int:
    """The first socket read on a request thread: the request it serves."""
    return only_one(g.find(is_sink("recv", "recv_into"), thread)[:1], what, last)


def wire_polling(g: TraceGraph, parts: list[list[int]]) -> tuple:
    """The POST as read (head and body), then the GET's answer as written: its head, and the
    payload that went out as one chunk of the chunked body."""
    request = wire_bytes(g.ev(parts[1][0]).returned.text)
    written = [_sent(g.ev(i)) for i in g.find(is_sink("sendall"), g.ev(parts[2][-1]).thread, before=parts[2][-1] + 1)]
    head = next((w for w in written if w.startswith(b"HTTP/")), b"")
    return (
        wire.decode_http(request, "request")
        + tuple(wire.decode_payload(request.partition(b"\r\n\r\n")[2].decode("utf-8", "replace"), "POST body"))
        + (wire.decode_http(head, "response") if head else ())
        + tuple(wire.decode_payload(written[-1].decode("utf-8", "replace"), "GET response body"))
    )


def _sent(e: Event) -> bytes:
    return wire_bytes(next(a.text for a in e.args if a.name == "data"))


# ------------------------------------------------------------------ across processes (a merged trace, joins.py)


def _in(process: str) -> Callable[[Event], bool]:
    return lambda e: across.process_of(e.thread) == process


def _publishes(g: TraceGraph, process: str, event: str) -> list[int]:
    """The PUBLISH writes of ``process`` whose message emits ``event`` (a message read as JSON or,
    from python-socketio 5.8's RedisManager, as a pickle of plain values: wire.queue_message)."""
    def emits(e: Event) -> bool:
        found = wire.published(_sent(e)) if is_sink("sendall")(e) and mentions(e, ("PUBLISH",)) else None
        message = wire.queue_message(found[1]) if found else None
        return message is not None and message.get("event") == event

    return g.find(lambda e: _in(process)(e) and emits(e))


def _queue_leg(g: TraceGraph, publish: int, process: str, needles: Sequence[str], what: str) -> list[int]:
    """From a PUBLISH (found by data in the subscriber, joins.delivery) to the frame
    ``process`` wrote for it: the read, the listener's _handle_emit, the socket.send."""
    read = across.delivery(g.trace, publish, process)
    reader = g.ev(read).thread
    handled = only_one(
        g.find(lambda e: e.func.endswith(":PubSubManager._handle_emit"), reader, after=read)[:1],
        f"{process}'s _handle_emit of the message", "the read from Redis",
    )
    sink = only_one(_frame_after(g, handled, process, needles)[:1], f"the frame {process} wrote for {what}", "_handle_emit")
    trail = value_trail(g, handled, sink, needles)
    return [read, *trail]


def _frame_after(g: TraceGraph, call: int, process: str, needles: Sequence[str]) -> list[int]:
    """The frames showing needles that ``call`` had written: on the thread its first hand-off
    (inside it) woke, after the wake-up."""
    woken = [(x, y) for x, y, _ in g.cross if call <= x <= g.ev(call).end and _in(process)(g.ev(y))]
    if not woken:
        return []
    _, y = min(woken)
    return g.find(lambda e: is_sink("send")(e) and mentions(e, needles), g.ev(y).thread, after=y)


def _frames_reached(g: TraceGraph, call: int, process: str, needles: Sequence[str]) -> list[int]:
    """The frames showing needles that ``process`` wrote after a hand-off from ``call`` led there
    (across processes too: through the message queue)."""
    def reached(s: int) -> bool:
        try:
            handoff_route(g, call, s)
        except JourneyError:
            return False
        return True

    return [s for s in g.find(lambda e: _in(process)(e) and is_sink("send")(e) and mentions(e, needles)) if g.ev(s).thread != g.ev(call).thread and reached(s)]


def find_emit_external(g: TraceGraph):
    """From the emitter's emit, through its PUBLISH and Redis, to server-b's listener and the
    frame it writes to its client."""
    needles = ('"news"',)
    main = only_one(g.find(lambda e: e.func == "dispel.sample_app.emitter:main"), "the emitter's main", "none")
    publish = only_one(_publishes(g, "emitter", "news"), "the emitter's PUBLISH", "emit")
    to_publish = value_trail(g, main, publish, needles)
    return [with_producer(g, to_publish + _queue_leg(g, publish, "server-b", needles, "the news"))], needles + ("PUBLISH",)


def find_across_servers(g: TraceGraph):
    """Client 1's join on server-a: its frame written by server-a itself, and its PUBLISH,
    read by server-b's listener, which writes the frame to its own client."""
    needles = ('"joined"',)
    handler = only_one(g.find(lambda e: _in("server-a")(e) and e.func == "dispel.sample_app.app:on_join"), "server-a's join handler", "none")
    # python-socketio 5.16 sends to its own clients right away; 5.8 publishes only, and its own
    # listener, reading the message back from Redis, sends it: the first frame the handler leads to
    local = only_one((_frame_after(g, handler, "server-a", needles) or _frames_reached(g, handler, "server-a", needles))[:1],
                     "the frame server-a wrote to its client", "on_join")
    publish = only_one(
        [i for i in _publishes(g, "server-a", "joined") if g.ev(i).thread == g.ev(handler).thread],
        "server-a's PUBLISH of the room's event", "on_join",
    )
    parts = [with_producer(g, value_trail(g, handler, local, needles))]
    remote = value_trail(g, handler, publish, needles)
    parts.append(with_producer(g, remote + _queue_leg(g, publish, "server-b", needles, "the room's event")))
    return parts, needles + ("'room-1'", "PUBLISH")


def wire_queue(g: TraceGraph, parts: list[list[int]]) -> tuple:
    """The last part's PUBLISH as written, the push the subscriber read, and the frame."""
    last = parts[-1]
    publish = next(i for i in last if is_sink("sendall")(g.ev(i)) and mentions(g.ev(i), ("PUBLISH",)))
    read = next(i for i in last if is_sink("recv", "recv_into")(g.ev(i)) and g.ev(i).thread != g.ev(publish).thread)
    written = _sent(g.ev(publish))
    _channel, message = across.published_at(g.trace, publish)
    return (
        wire.decode_publish(written)
        + wire.decode_delivery(wire_bytes(g.ev(read).returned.text), message)
        + wire_of(g, [last], "data")
    )


