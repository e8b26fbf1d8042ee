"""Derived journeys: from the trace of any Flask-SocketIO app, the journeys that happened in it (pure).

Where the catalogue's finders (dispel.chains.FINDERS) look for the sample app's handler names,
these rules look for what Flask-SocketIO itself calls, so they hold for any app:

- ``run``: the app's ``SocketIO.run`` (or its own function that called it) to bind, listen, accept;
- ``handshake``: the accepted connection to the 101 (the catalogue's finder: it names no handler);
- ``connect``: python-socketio's ``_handle_connect`` of the first namespace, from the socket read
  before it, through the app's connect handler (if any) to the frame of the CONNECT answer;
- ``on:<event>``: every handler ``SocketIO._handle_event`` called (``@socketio.on``, ``on_event``,
  ``Namespace.on_<event>``, the catch-all ``'*'``, any namespace), from the socket read that
  carried the event to the handler; the first call per (namespace, event, handler);
- ``emit:<event>`` / ``broadcast:<event>``: every ``SocketIO.emit`` (``send`` is an emit of
  ``message``) the app's code made, in a handler or a background task, to the first socket
  send of that event; a broadcast when python-socketio's ``Server.emit`` was addressed to a
  room or to everyone rather than to one sid. A background task's emit starts at
  ``start_background_task``;
- ``ack:<event>``: an event that came with an ack id, from the read to the ACK packet's frame;
- ``disconnect``: the DISCONNECT packet to python-socketio's ``_handle_disconnect`` and the
  app's handler, then the server's close frame.

A journey's page name is its kind and event, made safe for a file and a URL: ``on:message`` on
``/chat`` is ``on-message-chat``; the catch-all is ``on-any``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from .catalog import Journey
from .chains import (
    CLOSE_FRAME,
    SWITCHING,
    JourneyError,
    TraceGraph,
    _one,
    _recv_before_text,
    fan_out,
    find_handshake,
    happened_before,
    is_sink,
    mentions,
    thread_route,
    value_trail,
    with_producer,
)
from .model import Event, TraceFile
from .values import value_text_to_python

APP_DIST = "sample_app"  # the traced app's marker (dispel.model.Source)
HANDLE_EVENT = "flask_socketio:SocketIO._handle_event"
SIO_EMIT = "flask_socketio:SocketIO.emit"
SERVER_EMIT = "socketio.server:Server.emit"
BACKGROUND = "flask_socketio:SocketIO.start_background_task"
RESERVED = ("connect", "disconnect")


@dataclass(frozen=True)
class Derived:
    """A derived journey: its catalogue entry (the finder named ``derived``) and how to find it."""

    journey: Journey
    find: Callable[[TraceGraph], tuple[list[list[int]], tuple[str, ...]]]
    kind: str  # run, handshake, connect, on, emit, broadcast, ack, disconnect
    event: str = ""
    namespace: str = "/"


def slug(kind: str, event: str = "", namespace: str = "/") -> str:
    """A journey's page name: ``on-message``, ``on-message-chat`` (namespace /chat), ``on-any``."""
    parts = [kind]
    if event:
        parts.append("any" if event == "*" else event)
    if namespace not in ("/", ""):
        parts.append(namespace.strip("/"))
    return "-".join(re.sub(r"[^A-Za-z0-9_]+", "_", p).strip("_") or "_" for p in parts)


def _text(e: Event, name: str) -> str | None:
    """An argument's value as Python (strings and None), or None when not shown."""
    v = next((a.text for a in e.args if a.name == name), None)
    if v is None or v == "None":
        return None
    try:
        value = value_text_to_python(v)
    except Exception:
        return None
    return value if isinstance(value, str) else None


def _is_app(g: TraceGraph, i: int) -> bool:
    return g.trace.funcs[g.ev(i).func].source.dist == APP_DIST


def _app_caller(g: TraceGraph, i: int) -> int | None:
    """The nearest caller of i that is the app's own code."""
    return next((a for a in g.ancestors(i)[1:] if _is_app(g, a)), None)


def _handler_of(g: TraceGraph, handle: int) -> int | None:
    return next((c for c in g.children.get(handle, []) if _is_app(g, c)), None)


def _sends(g: TraceGraph, needles: tuple[str, ...]) -> list[int]:
    return g.find(lambda e: is_sink("send", "sendall")(e) and mentions(e, needles))


def _packet_needle(event: str) -> tuple[str, ...]:
    return (f'"{event}"',)


def _payload(g: TraceGraph, i: int) -> tuple[str, ...]:
    """What a page shows of the strings call i received (a handler's message): each up to its
    first quote or backslash, which JSON and repr write differently, when 3 characters remain."""
    out = []
    for a in g.ev(i).args:
        if a.name in ("self", "cls") or a.text[:1] not in ("'", '"'):
            continue
        head = re.split(r"[\\'\"]", a.text[1:], maxsplit=1)[0]
        if len(head) >= 3:
            out.append(head)
    return tuple(out)


# ------------------------------------------------------------------ finders


def find_run(g: TraceGraph):
    run = _one(g.find(lambda e: e.func == "flask_socketio:SocketIO.run"), "SocketIO.run", "none")
    entry = _app_caller(g, run) or run
    thread = g.ev(run).thread
    bind = _one(g.find(is_sink("bind"), thread, after=run), "socket.bind", "SocketIO.run")
    listen = _one(g.find(is_sink("listen"), thread, after=bind), "socket.listen", "socket.bind")
    accept = _one(g.find(is_sink("_accept"), thread, after=listen), "socket.accept", "socket.listen")
    return [[entry, bind, listen, accept]], ()


def find_connect(g: TraceGraph):
    connect = _one(g.find(lambda e: e.func == "socketio.server:Server._handle_connect"), "Server._handle_connect", "none")
    recv = happened_before(g, connect, is_sink("recv", "recv_into"))
    if recv is None:
        raise JourneyError("no socket read happened before the CONNECT packet (last hop reached: none)")
    thread = g.ev(connect).thread
    handles = g.find(lambda e: e.func == HANDLE_EVENT and _text(e, "message") == "connect", thread, after=connect, before=g.ev(connect).end + 1)
    handler = _handler_of(g, handles[0]) if handles else None
    answer = ('"sid"',)
    sinks = [s for s in _sends(g, answer) if b"0{" in _sent_bytes(g.ev(s))[:12] or b"0/" in _sent_bytes(g.ev(s))[:12]]
    sio = [s for s in sinks if b"40" in _sent_bytes(g.ev(s))[:12]]
    sink = _one(sio, "the socket send of the CONNECT answer", "Server._handle_connect")
    waypoints = [recv, connect, *([handler] if handler is not None else []), sink]
    return [with_producer(g, waypoints)], answer + ("'40'",)


def _sent_bytes(e: Event) -> bytes:
    text = next((a.text for a in e.args if a.name == "data"), "")
    try:
        value = value_text_to_python(text)
    except Exception:
        return b""
    return value if isinstance(value, bytes) else b""


def registration(g: TraceGraph, message: str) -> list[int] | None:
    """Where the app's import stored the handler of ``message`` (as the catalogue's register_part):
    the module body, the first and last calls that name the event, the deepest call under the last.
    None when no call names it (a class-based Namespace registers its methods by the class)."""
    for module in g.find(lambda e: e.func.endswith(":<module>") and _is_app(g, e.index) and e.parent < 0):
        named = g.find(lambda e: any(a.text == repr(message) for a in e.args), g.ev(module).thread, after=module, before=g.ev(module).end + 1)
        # from the app's own call that names it (@socketio.on('chat'), on_event): a library
        # registering a handler of the same name for itself (Engine.IO's 'message') is not it
        named = named[next((k for k, i in enumerate(named) if g.ev(i).parent == module), len(named)):]
        if named:
            first, last = named[0], named[-1]
            return [module, first, last, g.descend(last, lambda e: True)]
    return None


def find_on(event: str, handler: int, message: str = "") -> Callable:
    def find(g: TraceGraph):
        needles = _packet_needle(event)
        first = happened_before(g, handler, lambda e: mentions(e, needles))
        if first is None:
            raise JourneyError(f"no call before the handler shows {needles[0]} (last hop reached: none)")
        recv = happened_before(g, g.ev(first).end, is_sink("recv", "recv_into"))
        if recv is None:
            raise JourneyError(f"no socket read happened before {needles[0]} (last hop reached: none)")
        stored = registration(g, message or event)
        return [*([stored] if stored else []), value_trail(g, recv, handler, needles)], needles + (f"'{event}'",) + _payload(g, handler)

    return find


def recipients(g: TraceGraph, emit: int, needles: tuple[str, ...]) -> list[int]:
    """The socket sends an emit led to: per thread, the first send showing the event that a
    hand-off from the emit reaches (an earlier send of the same event on that thread does not)."""
    first: dict[str, int] = {}
    for s in _sends(g, needles):
        if g.ev(s).thread not in first and _reaches(g, emit, s):
            first[g.ev(s).thread] = s
    return sorted(first.values())


def find_emit(event: str, emit: int) -> Callable:
    """From the app's code that emitted (a background task: from start_background_task) to the
    socket sends; a broadcast also shows the join_room before it (as the catalogue's broadcast
    does) and fans out to every client it reached."""
    def find(g: TraceGraph):
        needles = _packet_needle(event)
        source = _app_caller(g, emit)
        if source is None:
            raise JourneyError(f"no app code called emit({event!r}) (last hop reached: SocketIO.emit)")
        sinks = recipients(g, source, needles)
        _one(sinks, f"the socket send of {needles[0]}", g.trace.funcs[g.ev(source).func].qualname)
        parts = []
        root = g.ancestors(source)[-1]
        info = next(t for t in g.trace.threads if t.name == g.ev(source).thread)
        starts = [a for a in (g.ancestors(info.started_by) if info.started_by >= 0 else []) if g.ev(a).func == BACKGROUND]
        if starts:
            # a background task: from start_background_task to the task's thread
            parts.append([starts[0], root, source] if root != source else [starts[0], source])
        rooms: tuple[str, ...] = ()
        joins = g.find(lambda e: e.func == "flask_socketio:join_room", g.ev(source).thread, after=source, before=emit)
        room = _text(g.ev(joins[0]), "room") if joins else None
        if room:
            rooms = (repr(room),)
            stored = g.find(lambda e: mentions(e, rooms) and "enter_room" in e.func, g.ev(source).thread, after=source, before=emit)
            if stored:
                parts.append([source, g.descend(stored[0], lambda e: mentions(e, rooms))])
        parts += fan_out(g, source, sinks, needles)
        return parts, rooms + needles + _payload(g, source)

    return find


def _strings(frame: bytes, prefix: str) -> tuple[str, ...]:
    """The string values (of 3 characters or more) in the JSON after ``prefix`` in a frame."""
    import json

    text = frame.decode("utf-8", errors="replace")
    at = text.find(prefix + "[")
    if at < 0:
        return ()
    try:
        data = json.loads(text[at + len(prefix):])
    except ValueError:
        return ()
    out: list[str] = []
    stack = [data]
    while stack:
        v = stack.pop(0)
        if isinstance(v, str) and len(v) >= 3:
            out.append(v)
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
    return tuple(dict.fromkeys(out))


def _fanned(g: TraceGraph, emit: int) -> int:
    """How many Engine.IO sockets one emit queued its packet for."""
    return sum(1 for c in range(emit, g.ev(emit).end + 1) if g.ev(c).func == "socketio.server:Server._send_eio_packet")


def _reaches(g: TraceGraph, a: int, b: int) -> bool:
    """Can a hand-off lead from a's thread (at a) to b? (b comes after a, then.)"""
    if g.ev(a).thread == g.ev(b).thread:
        return a < b
    try:
        thread_route(g, a, b)
    except JourneyError:
        return False
    return True


def find_ack(event: str, handle: int, internal: int, ack_id: int, namespace: str) -> Callable:
    def find(g: TraceGraph):
        handler = _handler_of(g, handle)
        if handler is None:
            raise JourneyError(f"no handler of {event!r} ran (last hop reached: SocketIO._handle_event)")
        asked = _packet_needle(event)
        first = happened_before(g, handler, lambda e: mentions(e, asked))
        recv = happened_before(g, g.ev(first).end, is_sink("recv", "recv_into")) if first is not None else None
        if recv is None:
            raise JourneyError(f"no socket read happened before {asked[0]} (last hop reached: none)")
        prefix = "43" + ("" if namespace == "/" else f"{namespace},") + str(ack_id)
        sinks = [s for s in _sends(g, (prefix + "[",)) if _reaches(g, internal, s)]
        sink = _one(sinks, f"the socket send of the ACK packet {prefix}[...]", "the handler")
        # the handler's return value is an object in the trace; the strings it carried, as the
        # ACK packet shows them, are what the trail follows (else the packet's prefix)
        answer = _strings(_sent_bytes(g.ev(sink)), prefix) or (prefix + "[",)
        to_handler = value_trail(g, recv, handler, asked)
        to_sink = value_trail(g, handler, sink, answer)
        return [with_producer(g, to_handler + to_sink[1:])], asked + answer + (prefix + "[",)

    return find


def find_disconnect(g: TraceGraph, websocket: bool = True):
    """As the catalogue's finder, with what it knows of the sample app taken from the trace: the
    app's disconnect handler is the one ``_handle_event`` called for 'disconnect', and the room
    whose cleanup is shown is the first one the app joined (``join_room``), if any."""
    done = _one(g.find(lambda e: e.func == "socketio.server:Server._handle_disconnect"), "Server._handle_disconnect", "none")
    thread = g.ev(done).thread
    namespace = _text(g.ev(done), "namespace") or "/"
    said = ("'41'",) if namespace == "/" else (f"'41{namespace},",)
    recv41 = _recv_before_text(g, said)
    handles = g.find(lambda e: e.func == HANDLE_EVENT and _text(e, "message") == "disconnect", thread, after=done, before=g.ev(done).end + 1)
    handler = _handler_of(g, handles[0]) if handles else None
    target = handler if handler is not None else done
    farewell = [recv41, *value_trail(g, recv41, target, said)[1:]]
    joined = [_text(g.ev(i), "room") for i in g.find(lambda e: e.func == "flask_socketio:join_room")]
    rooms = tuple(repr(r) for r in joined[:1] if r)
    after = target
    if rooms:
        left = g.find(lambda e: mentions(e, rooms) and "leave" in e.func, thread, after=target)
        if left:
            farewell.append(left[0])
            after = left[0]
    parts = [farewell]
    close_frame = (CLOSE_FRAME, CLOSE_FRAME.replace("'", '"'))
    closed = g.find(lambda e: e.ret is not None and e.ret.text == "'1'", thread, after=after)
    sent = g.find(lambda e: is_sink("send")(e) and any(a.text.startswith(close_frame) for a in e.args) and e.thread != thread)
    recv1 = happened_before(g, g.ev(closed[0]).end, is_sink("recv", "recv_into")) if closed and sent else None
    if recv1 is not None and _reaches(g, recv1, sent[0]):
        parts.append(with_producer(g, [recv1, *value_trail(g, recv1, sent[0], ("'1'",))[1:]]))
    elif websocket:  # the page decodes the close frame of this part
        raise JourneyError("Engine.IO's CLOSE never led to the server's close frame (last hop reached: the disconnect handler)")
    # The client's own close frame, read last: the reader thread ends and closes the socket.
    frames = g.find(lambda e: is_sink("recv")(e) and e.ret is not None and e.ret.text.startswith(close_frame))
    if frames:
        shut = g.find(lambda e: e.func == "socket:socket.close", g.ev(frames[-1]).thread, after=frames[-1])
        if shut:
            parts.append([frames[-1], shut[0]])
    return parts, rooms + said + ("'1'", CLOSE_FRAME[2:])


# ------------------------------------------------------------------ what happened


def derive(trace: TraceFile) -> list[Derived]:
    """The journeys that happened in ``trace``, in a stable order (run, handshake, connect, then
    handlers, emits and acks in the order the trace holds them, disconnect last)."""
    g = TraceGraph(trace)
    sc = trace.scenario
    out: list[Derived] = [
        Derived(Journey("run", "socketio.run(app): from the app to a listening socket", sc, "derived"), find_run, "run"),
    ]
    websocket = bool(g.find(lambda e: is_sink("send", "sendall")(e) and mentions(e, (SWITCHING,))))
    if websocket:
        out.append(Derived(Journey(
            "handshake", "The WebSocket handshake: from the accepted connection to 101 Switching Protocols", sc, "derived", "handshake",
        ), find_handshake, "handshake"))
    if g.find(lambda e: e.func == "socketio.server:Server._handle_connect"):
        out.append(Derived(Journey(
            "connect", "Connect: the CONNECT packet, the connect handler, the answer with the session id", sc, "derived", "sent" if websocket else "",
        ), find_connect, "connect"))
    seen: set[str] = set()
    chosen: dict[str, int] = {}
    later: list[Derived] = []
    for i in g.find(lambda e: e.func == HANDLE_EVENT):
        e = g.ev(i)
        message, namespace = _text(e, "message"), _text(e, "namespace") or "/"
        handler = _handler_of(g, i)
        if message is None or message in RESERVED or handler is None:
            continue
        name = slug("on", message, namespace)
        if name not in seen:
            seen.add(name)
            func = trace.funcs[g.ev(handler).func]
            what = "the catch-all '*'" if message == "*" else repr(message)
            title = f"on({what}) on {namespace}: how the event reaches {func.qualname}"
            event = message
            if message == "*":
                event = _text(g.ev(handler), "event") or next((_text(g.ev(handler), a.name) for a in g.ev(handler).args), None) or "*"
            out.append(Derived(Journey(name, title, sc, "derived", "on" if websocket else ""), find_on(event, handler, message), "on", event, namespace))
        internal = next((a for a in g.ancestors(i) if g.ev(a).func == "socketio.server:Server._handle_event_internal"), None)
        ack_id = next((a.text for a in g.ev(internal).args if a.name == "id"), "None") if internal is not None else "None"
        if ack_id.isdigit():
            name = slug("ack", message, namespace)
            if name not in seen:
                seen.add(name)
                title = f"ack({message!r}) on {namespace}: the handler's return value sent back as the ACK packet"
                later.append(Derived(Journey(name, title, sc, "derived", "sent" if websocket else ""),
                                     find_ack(message, i, internal, int(ack_id), namespace), "ack", message, namespace))
    for i in g.find(lambda e: e.func == SIO_EMIT):
        if _app_caller(g, i) is None:
            continue
        event = _text(g.ev(i), "event")
        server_emit = next((c for c in range(i, g.ev(i).end + 1) if g.ev(c).func == SERVER_EMIT), None)
        if event is None or server_emit is None:
            continue
        to = _text(g.ev(server_emit), "to") or _text(g.ev(server_emit), "room")
        namespace = _text(g.ev(server_emit), "namespace") or "/"
        kind = "emit" if to is not None and to.startswith("<sid-") else "broadcast"
        name = slug(kind, event, namespace)
        if name in seen:
            if kind == "broadcast":
                # the broadcast that reached the most clients is the one worth showing
                k, d = next((k, d) for k, d in enumerate(later) if d.journey.name == name)
                if _fanned(g, i) > _fanned(g, chosen[name]):
                    later[k] = Derived(d.journey, find_emit(event, i), kind, event, namespace)
                    chosen[name] = i
            continue
        seen.add(name)
        chosen[name] = i
        caller = trace.funcs[g.ev(_app_caller(g, i)).func].qualname
        title = (f"emit({event!r}) from {caller}: to the frame on the socket" if kind == "emit"
                 else f"emit({event!r}, to={to!r}) from {caller}: one emit fanned out to the room" if to
                 else f"emit({event!r}) to everyone from {caller}")
        later.append(Derived(Journey(name, title, sc, "derived", "sent" if websocket else ""), find_emit(event, i), kind, event, namespace))
    out += later
    if g.find(lambda e: e.func == "socketio.server:Server._handle_disconnect"):
        out.append(Derived(Journey(
            "disconnect", "The client leaves: DISCONNECT, the handler, CLOSE, the close frame", sc, "derived",
            "disconnect" if websocket else "",
        ), lambda g: find_disconnect(g, websocket), "disconnect"))
    return out
