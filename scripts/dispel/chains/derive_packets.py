"""Derived journeys of the packets beyond a plain event and its ack (pure): by what python-socketio
and python-engineio do, for any app. dispel.chains.derive calls ``journeys`` and names them in its list.

- ``connect-refused``: the CONNECT packet read, ``Server._handle_connect``, the app's connect
  handler raising ``ConnectionRefusedError`` (where it raised, and where python-socketio caught it),
  the CONNECT_ERROR packet (``Packet(packet_type=4)``) to the frame ``44{...}`` on the wire;
- ``binary-<event>``: an emit whose packet is a BINARY_EVENT (python-socketio's
  ``_deconstruct_binary`` put each ``bytes`` aside as an attachment): from the app's emit to the
  frame of the ``45N-[...]`` packet (its placeholders), then from the attachment's Engine.IO packet
  to its binary frame (opcode 2), both on the wire;
- ``binary-in-<event>``: a BINARY_EVENT the client sent: the text frame read and parsed into a
  packet waiting for its attachments, then the binary frame read, ``add_attachment`` and
  ``reconstruct_binary`` (the parse that puts the bytes back), to the app's handler;
- ``http-<route>``: an HTTP request to a Flask route (``Flask.dispatch_request`` calling the app's
  view function) that emitted: the request read from the socket to the view, then the view's
  emit to each client's frame;
- ``call-<event>``: a server-to-client ``call`` (``Server.call``: an emit with an ack id, then a
  wait on an Event): the emit to the frame ``42N[...]``, then the client's ACK read by the reader,
  ``Server._handle_ack``, the callback that sets the Event, and the wake-up of the waiting handler;
- ``server-disconnect-<function>``: the app's ``disconnect()`` (``Server.disconnect``) to the frame of
  the DISCONNECT packet ``41``; when it ran in an ack's callback, from the ACK read first; then the
  client's close frame read and the server's close frame sent on that connection.

A connect handler that returns False instead of raising is refused the same way (no hop raises).
Over long-polling the packets go in HTTP bodies, joined by the record separator, an attachment
as ``b`` and base64 in the same body: a binary event is then one part (``packets_of``).
Each finder returns (parts, shown values) as dispel.chains.build.build wants; a journey that cannot be
followed raises JourneyError, which the report lists as not derived.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ..model import Event
from ..tracefiles.values import value_text_to_python
from .graph import JourneyError, TraceGraph, is_sink, mentions, str_arg
from .hand_written import (
    CLOSE_FRAME,
    fan_out,
    happened_before,
    only_one,
    with_producer,
    woken_waits,
)
from .routes import data_route, thread_route, value_trail

APP_DIST = "sample_app"  # the traced app's marker (as dispel.chains.derive_finders.APP_DIST)
HANDLE_CONNECT = "socketio.server:Server._handle_connect"
SIO_PACKET = "socketio.packet:Packet.__init__"
EIO_PACKET = "engineio.packet:Packet.__init__"
CONNECT_ERROR = "4"  # socketio.packet.CONNECT_ERROR
SERVER_EMIT = "socketio.server:Server.emit"
SERVER_CALL = "socketio.server:Server.call"
HANDLE_ACK = "socketio.server:Server._handle_ack"
SERVER_DISCONNECT = "socketio.server:Server.disconnect"
DISPATCH = "flask.app:Flask.dispatch_request"
ADD_ATTACHMENT = "socketio.packet:Packet.add_attachment"
RECONSTRUCT = "socketio.packet:Packet.reconstruct_binary"
HANDLE_EIO_MESSAGE = "socketio.server:Server._handle_eio_message"


@dataclass(frozen=True)
class Found:
    """A journey this module derives: dispel.chains.derive turns it into a Derived."""

    name: str
    title: str
    wire: str  # a chains.WIRES key, for a WebSocket client
    find: Callable[[TraceGraph], tuple[list[list[int]], tuple[str, ...]]]
    kind: str
    event: str = ""
    namespace: str = "/"


# The generated summary of each kind (dispel.render.app_notes): {event}, {namespace}, and {handler}, the
# first of the app's functions on the chain.
SUMMARIES = {
    "connect-refused": "From the socket read of the CONNECT packet on namespace {namespace}, through the app's {handler}, "
                       "which refused it (it raised `ConnectionRefusedError`, or returned False), to python-socketio's "
                       "CONNECT_ERROR packet and its frame.",
    "binary": "From the app's {handler} emitting {event} with bytes: the BINARY_EVENT packet's frame, whose "
              "placeholders stand for the bytes, then the frame of the attachment itself.",
    "binary-in": "From the socket read of the client's BINARY_EVENT {event}, parsed into a packet that waits for its "
                 "attachment, to the read of the attachment's frame and the parse that puts the bytes back.",
    "http": "From the socket read of an HTTP request, through Flask's dispatch to the app's route {handler}, to the "
            "frame of each event it emitted.",
    "call": "From the app's {handler} calling the client with {event}: the event sent with an ack id, then the "
            "client's ACK read, python-socketio's callback, and the wake-up of the waiting call.",
    "server-disconnect": "From the app's {handler} calling `disconnect()` to the frame of the DISCONNECT packet, then "
                         "the client's close frame and the server's answer.",
}


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_") or "_"


def _name(kind: str, what: str = "", namespace: str = "/") -> str:
    parts = [kind] + ([_safe(what)] if what else []) + ([_safe(namespace.strip("/"))] if namespace not in ("/", "") else [])
    return "-".join(parts)


def _is_app(g: TraceGraph, i: int) -> bool:
    return g.trace.funcs[g.ev(i).func].source.dist == APP_DIST


def _app_caller(g: TraceGraph, i: int) -> int | None:
    return next((a for a in g.ancestors(i)[1:] if _is_app(g, a)), None)


def _arg(e: Event, name: str) -> str | None:
    return next((a.text for a in e.args if a.name == name), None)


def _sent(e: Event) -> bytes:
    """The bytes a socket send wrote (b'' when not shown)."""
    try:
        value = value_text_to_python(_arg(e, "data") or "")
    except Exception:  # noqa: BLE001 - any text the recorder wrote that does not parse means no bytes shown
        return b""
    return value if isinstance(value, bytes) else b""


def frame_payload(data: bytes) -> tuple[int, bytes] | None:
    """(opcode, payload) of an unmasked, final WebSocket frame (the server's), or None."""
    if len(data) < 2 or data[1] & 0x80 or not data[0] & 0x80:
        return None
    n, start = data[1] & 0x7F, 2
    if n == 126:
        start = 4
    elif n == 127:
        start = 10
    return data[0] & 0x0F, data[start:]


def packets_of(data: bytes) -> list[tuple[int, bytes]]:
    """The Engine.IO packets one socket write of the server carries, as (1, text) or (2, binary):
    a WebSocket frame's payload (opcode 1 or 2), or each packet of a long-polling body (joined by
    the record separator; a binary one is ``b`` and base64). [] for anything else."""
    frame = frame_payload(data)
    if frame is not None:
        return [frame] if frame[0] in (1, 2) else []
    if not data or data.startswith(b"HTTP/") or data.endswith(b"\r\n") or not data[:1].isdigit() and data[:1] != b"b":
        return []
    return [(2 if p.startswith(b"b") else 1, p) for p in data.split(b"\x1e")]


def _is_body(g: TraceGraph, s: int, data: bytes) -> bool:
    """Is write ``s`` an HTTP body (a long-poll's packets), not a chunk's size line ("41" is both)?
    Its chunk's size line and CRLF, or its head's Content-Length, went just before it."""
    before = [_sent(g.ev(i)) for i in g.find(is_sink("send", "sendall"), g.ev(s).thread, before=s)[-2:]]
    if len(before) == 2 and before[1] == b"\r\n" and re.fullmatch(rb"[0-9a-f]+", before[0]) and int(before[0], 16) == len(data):
        return True
    return bool(before) and before[-1].startswith(b"HTTP/") and f"Content-Length: {len(data)}\r\n".encode() in before[-1]


def _payloads(g: TraceGraph, opcode: int, test: Callable[[bytes], bool]) -> list[int]:
    """The socket writes of the server that carry a packet of ``opcode`` (1 text, 2 binary) passing ``test``."""
    out = []
    for s in g.find(is_sink("send", "sendall")):
        data = _sent(g.ev(s))
        if any(o == opcode and test(p) for o, p in packets_of(data)) and (frame_payload(data) is not None or _is_body(g, s, data)):
            out.append(s)
    return out


def _reaches(g: TraceGraph, a: int, b: int) -> bool:
    """Can a hand-off lead from a to b: a wake-up, or the very object a made taken by b's thread."""
    if g.ev(a).thread == g.ev(b).thread:
        return a < b
    for route in (thread_route, data_route):
        try:
            route(g, a, b)
        except JourneyError:
            continue
        return True
    return False


def _inside(g: TraceGraph, scope: int, func: str) -> list[int]:
    return [c for c in range(scope, g.ev(scope).end + 1) if g.ev(c).func == func]


def _reads_before(g: TraceGraph, i: int) -> int:
    recv = happened_before(g, i, is_sink("recv", "recv_into"))
    if recv is None:
        raise JourneyError(f"no socket read happened before {g.ev(i).func} (last hop reached: none)")
    return recv


# ------------------------------------------------------------------ a refused connect


def refusal(g: TraceGraph, handle: int) -> int | None:
    """The CONNECT_ERROR packet a _handle_connect made, if it refused."""
    return next((p for p in _inside(g, handle, SIO_PACKET) if _arg(g.ev(p), "packet_type") == CONNECT_ERROR), None)


def find_refused(handle: int) -> Callable:
    def find(g: TraceGraph):
        made = refusal(g, handle)
        if made is None:
            raise JourneyError("the connect was not refused (last hop reached: Server._handle_connect)")
        recv = _reads_before(g, handle)
        # the app's connect handler (Flask-SocketIO's _handle_event calls it), then, if it raised,
        # the deepest app frame that did: where it raised; python-socketio caught it in _handle_connect
        handles = [c for c in _inside(g, handle, "flask_socketio:SocketIO._handle_event") if str_arg(g.ev(c), "message") == "connect"]
        handler = [c for h in handles[:1] for c in g.children.get(h, []) if _is_app(g, c)][:1]
        raised = handler + [c for c in range(handle, g.ev(handle).end + 1) if _is_app(g, c) and g.ev(c).raised and c not in handler]
        sends = [c for c in _inside(g, handle, "socketio.server:Server._send_packet") if c > made]
        send = only_one(sends[:1], "the _send_packet of the CONNECT_ERROR packet", "Server._handle_connect")
        sinks = [s for s in _payloads(g, 1, lambda p: p.startswith(b"44")) if _reaches(g, send, s)]
        sink = only_one(sinks[:1], "the frame of the CONNECT_ERROR packet 44{...}", "Server._send_packet")
        # where the app raised (its connect handler, deepest app frame), then where python-socketio caught it
        waypoints = [recv, handle, *raised[:1], *raised[1:][-1:], made, send, sink]
        payload = next(p for o, p in packets_of(_sent(g.ev(sink))) if p.startswith(b"44")).decode("utf-8", "replace")
        return [with_producer(g, waypoints)], ("ConnectionRefusedError", repr(payload[1:]), f"'{payload[1:]}'")

    return find


# ------------------------------------------------------------------ binary events


def _binary_packets(g: TraceGraph, emit: int) -> list[int]:
    """The Engine.IO packets of bytes (the attachments) an emit made."""
    return [p for p in _inside(g, emit, EIO_PACKET) if (_arg(g.ev(p), "data") or "").startswith(("b'", 'b"', "<bytes"))]


def find_binary(event: str, emit: int) -> Callable:
    def find(g: TraceGraph):
        source = _app_caller(g, emit)
        if source is None:
            raise JourneyError(f"no app code called emit({event!r}) (last hop reached: SocketIO.emit)")
        head = re.compile(rb"^45\d+-(/[^,]*,)?\d*\[" + re.escape(f'"{event}"'.encode()))
        texts = [s for s in _payloads(g, 1, lambda p: bool(head.match(p))) if _reaches(g, source, s)]
        text = only_one(texts[:1], f"the frame of the BINARY_EVENT 45N-[\"{event}\",...]", "SocketIO.emit")
        attachments = _binary_packets(g, emit)
        first = only_one(attachments[:1], "the attachment's Engine.IO packet", "SocketIO.emit")
        needles = (f'"{event}"', "_placeholder")
        if any(o == 2 for o, _ in packets_of(_sent(g.ev(text)))):  # long-polling: one body, the attachment in base64
            return [with_producer(g, value_trail(g, source, text, needles))], needles + ("'45",)
        writer = g.ev(text).thread
        frames = [s for s in _payloads(g, 2, lambda p: True) if g.ev(s).thread == writer and s > text]
        frame = only_one(frames[:1], "the binary frame of the attachment", "the BINARY_EVENT's frame")
        # the writer takes the attachment from the queue by identity, in the drain after the
        # wake-up that the text packet's put caused (the trace folds the second put into the first)
        token = next((a.token for a in g.ev(first).args if a.name == "self"), 0)
        gets = g.find(lambda e: e.func == "queue:Queue.get" and e.ret is not None and e.ret.token == token and bool(token), writer, before=frame)
        got = only_one(gets[-1:], "the writer's get of the attachment's packet", "the BINARY_EVENT's frame")
        parts = [with_producer(g, value_trail(g, source, text, needles)), [got, frame]]
        return parts, needles + ("'45",)

    return find


def find_binary_in(event: str, add: int) -> Callable:
    """From the BINARY_EVENT's text frame to the parse, then the attachment's frame to the handler."""
    def find(g: TraceGraph):
        thread = g.ev(add).thread
        head = f'-["{event}"'
        parsed = [p for p in g.find(lambda e: e.func == SIO_PACKET and head in (_arg(e, "encoded_packet") or ""), thread, before=add)]
        packet = only_one(parsed[-1:], f"the parse of the BINARY_EVENT 5N-[\"{event}\",...]", "none")
        text_read = _reads_before(g, packet)
        message = next(a for a in g.ancestors(add) if g.ev(a).func == HANDLE_EIO_MESSAGE)
        bin_read = _reads_before(g, message)
        rebuilt = only_one(_inside(g, message, RECONSTRUCT)[:1], "reconstruct_binary", "Packet.add_attachment")
        handled = None
        for h in g.find(lambda e: e.func == "flask_socketio:SocketIO._handle_event" and str_arg(e, "message") == event):
            app = next((c for c in g.children.get(h, []) if _is_app(g, c)), None)
            if app is not None and _reaches(g, rebuilt, app):
                handled = app
                break
        rest = [message, add, rebuilt, *([handled] if handled is not None else [])]
        if bin_read == text_read:  # long-polling: one POST body carried both packets
            return [[text_read, packet, *rest]], (head, "_placeholder", "'5")
        return [[text_read, packet], [bin_read, *rest]], (head, "_placeholder", "'5")

    return find


# ------------------------------------------------------------------ an HTTP route that emits


def find_route(view: int, emits: tuple[int, ...]) -> Callable:
    def find(g: TraceGraph):
        dispatch = next((a for a in g.ancestors(view) if g.ev(a).func == DISPATCH), None)
        if dispatch is None:
            raise JourneyError("the view was not called by Flask.dispatch_request (last hop reached: none)")
        thread = g.ev(view).thread
        reads = g.find(is_sink("recv", "recv_into", "readinto"), thread, before=view)
        read = only_one(reads[:1], "the socket read of the HTTP request", "Flask.dispatch_request")
        parts: list[list[int]] = []
        shown: tuple[str, ...] = ()
        for emit in emits:
            event = str_arg(g.ev(emit), "event") or ""
            needles = (f'"{event}"',)
            first: dict[str, int] = {}
            for s in g.find(lambda e: is_sink("send", "sendall")(e) and mentions(e, needles)):  # noqa: B023 - called before the loop moves on
                if g.ev(s).thread not in first and g.ev(s).thread != thread and _reaches(g, emit, s):
                    first[g.ev(s).thread] = s
            sinks = sorted(first.values())
            only_one(sinks[:1], f"the socket send of {needles[0]}", "the view")
            parts += fan_out(g, view, sinks, needles)
            shown += needles
        # the request, read from the socket, to the view: then the view's first emit
        parts[0] = [read, dispatch, *parts[0]]
        return parts, shown

    return find


# ------------------------------------------------------------------ a server-to-client call


def find_call(event: str, call: int) -> Callable:
    def find(g: TraceGraph):
        source = _app_caller(g, call)
        if source is None:
            raise JourneyError(f"no app code called call({event!r}) (last hop reached: Server.call)")
        needles = (f'"{event}"',)
        asked = re.compile(rb"^42(/[^,]*,)?\d+\[" + re.escape(needles[0].encode()))
        sinks = [s for s in _payloads(g, 1, lambda p: bool(asked.match(p))) if _reaches(g, call, s)]
        sink = only_one(sinks[:1], f"the frame of the event with an ack id 42N[{needles[0]},...]", "Server.call")
        waits = woken_waits(g, call)
        wait = only_one(waits[-1:], "the wait that the client's ACK ended", "Server.call")
        waker = next(x for x, y, _ in g.cross if y == wait)
        handle = next((a for a in g.ancestors(waker) if g.ev(a).func == HANDLE_ACK), None)
        if handle is None:
            raise JourneyError("no ACK woke the waiting call (last hop reached: the wait)")
        ack_id = _arg(g.ev(handle), "id") or ""
        read = _reads_before(g, handle)
        asking = with_producer(g, value_trail(g, source, sink, needles))
        answered = [read, handle, waker, wait, source]
        return [asking, answered], needles + (f"id={ack_id}",)

    return find


# ------------------------------------------------------------------ a server-side disconnect


def find_server_disconnect(done: int) -> Callable:
    def find(g: TraceGraph):
        source = _app_caller(g, done)
        if source is None:
            raise JourneyError("no app code called disconnect() (last hop reached: Server.disconnect)")
        namespace = str_arg(g.ev(done), "namespace") or "/"
        said = b"41" if namespace == "/" else f"41{namespace},".encode()
        packet = only_one(_inside(g, done, EIO_PACKET)[:1], "the Engine.IO packet of the DISCONNECT", "Server.disconnect")
        sinks = [s for s in _payloads(g, 1, lambda p: p == said or p.startswith(said + b"{")) if _reaches(g, packet, s)]
        sink = only_one(sinks[:1], f"the frame of the DISCONNECT packet {said.decode()}", "Server.disconnect")
        start: list[int] = []
        handle = next((a for a in g.ancestors(source) if g.ev(a).func == HANDLE_ACK), None)
        if handle is not None:  # the disconnect ran in an ack's callback: from the ACK read
            start = [_reads_before(g, handle), handle]
        parts = [with_producer(g, [*start, source, done, packet, sink])]
        # the connection's close frames: the client's, read by that socket's reader, and the server's answer
        token = next((a.token for a in g.ev(sink).args if a.name == "self"), 0)
        on_socket = lambda e: bool(token) and any(a.name == "self" and a.token == token for a in e.args)
        closes = g.find(lambda e: is_sink("recv")(e) and on_socket(e) and e.ret is not None and e.ret.text.startswith(CLOSE_FRAME))
        if closes:
            answers = g.find(lambda e: is_sink("send")(e) and on_socket(e) and mentions(e, (CLOSE_FRAME,)), g.ev(closes[0]).thread, after=closes[0])
            if answers:
                parts.append([closes[0], answers[0]])
        return parts, ("'1'", "'41'", said.decode(), CLOSE_FRAME[2:])

    return find


# ------------------------------------------------------------------ what happened


def journeys(g: TraceGraph) -> list[Found]:
    """The journeys of this module that happened in the trace, in the order the trace holds them
    (by kind: refused connects, HTTP routes, binary events, calls, server-side disconnects)."""
    out: list[Found] = []
    seen: set[str] = set()

    def add(found: Found) -> None:
        if found.name not in seen:
            seen.add(found.name)
            out.append(found)

    for handle in g.find(lambda e: e.func == HANDLE_CONNECT):
        if refusal(g, handle) is not None:
            namespace = str_arg(g.ev(handle), "namespace") or "/"
            add(Found(_name("connect-refused", "", namespace),
                      f"A refused connect on {namespace}: the connect handler refuses, the CONNECT_ERROR packet on the wire",
                      "sent", find_refused(handle), "connect-refused", "", namespace))
    for view in g.find(lambda e: e.func == DISPATCH):
        app_views = [c for c in g.children.get(view, []) if _is_app(g, c)]
        for v in app_views:
            emits = tuple(c for c in _inside(g, v, "flask_socketio:SocketIO.emit") if str_arg(g.ev(c), "event"))
            if emits:
                func = g.trace.funcs[g.ev(v).func]
                add(Found(_name("http", func.qualname), f"An HTTP request to the route {func.qualname}: its emit to the frame",
                          "sent", find_route(v, emits), "http"))
    for emit in g.find(lambda e: e.func == SERVER_EMIT):
        if _binary_packets(g, emit) and _app_caller(g, emit) is not None:
            event = str_arg(g.ev(emit), "event") or ""
            namespace = str_arg(g.ev(emit), "namespace") or "/"
            add(Found(_name("binary", event, namespace), f"emit({event!r}) with bytes: the BINARY_EVENT packet and its attachment, both on the wire",
                      "frames", find_binary(event, emit), "binary", event, namespace))
    for add_ in g.find(lambda e: e.func == ADD_ATTACHMENT):
        parsed = [p for p in g.find(lambda e: e.func == SIO_PACKET and re.match(r"^5\d+-", str_arg(e, "encoded_packet") or "") is not None,
                                    g.ev(add_).thread, before=add_)]
        if parsed:
            m = re.search(r'\["([^"]*)"', str_arg(g.ev(parsed[-1]), "encoded_packet") or "")
            event = m.group(1) if m else ""
            if event:
                add(Found(_name("binary-in", event), f"A BINARY_EVENT {event!r} from the client: its text and binary frames, parsed back into bytes",
                          "frames", find_binary_in(event, add_), "binary-in", event))
    for call in g.find(lambda e: e.func == SERVER_CALL):
        if _app_caller(g, call) is not None:
            event = str_arg(g.ev(call), "event") or ""
            namespace = str_arg(g.ev(call), "namespace") or "/"
            add(Found(_name("call", event, namespace), f"call({event!r}): the server asks the client and waits for its ACK",
                      "frames", find_call(event, call), "call", event, namespace))
    for done in g.find(lambda e: e.func == SERVER_DISCONNECT):
        source = _app_caller(g, done)
        if source is not None:
            func = g.trace.funcs[g.ev(source).func]
            add(Found(_name("server-disconnect", func.qualname.split(".")[-1]),
                      f"disconnect() from {func.qualname}: the DISCONNECT packet, then the close frames",
                      "frames", find_server_disconnect(done), "server-disconnect"))
    return out
