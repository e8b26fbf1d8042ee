"""Derived journeys: from the trace of any Flask-SocketIO app, the journeys that happened in it (pure).

These rules look for what Flask-SocketIO itself calls, never for an app's own names, so they hold
for any app; the sample app's run, handshake, on, emit, ack, broadcast and disconnect journeys are
derived by them too (dispel.chains.finders). Only the transport's journeys (polling, upgrade) and
those across processes keep hand-written finders (dispel.chains.build.FINDERS). The rules:

- ``run``: the app's ``SocketIO.run`` (or its own function that called it) to bind, listen, accept;
- ``handshake``: the accepted connection to the 101 (chains.build.find_handshake: it names no handler);
- ``connect``: python-socketio's ``_handle_connect`` of the first namespace, from the socket read
  before it, through the app's connect handler (if any) to the frame of the CONNECT answer;
- ``on:<event>``: every handler ``SocketIO._handle_event`` called (``@socketio.on``, ``on_event``,
  ``Namespace.on_<event>``, the catch-all ``'*'``, any namespace), from the socket read that
  carried the event to the handler; the first call per (namespace, event, handler); a handler
  that raised goes on to where the exception was caught (see ``caught``);
- ``emit:<event>`` / ``broadcast:<event>``: every call site (the app's function and line) of a
  ``SocketIO.emit`` (``send`` is an emit of ``message``) the app's code made, in a handler or a
  background task, to the socket sends of that emit's own packet (followed from the emit call,
  not from the function: what the function handed off before, a ``socketio.call``'s packet, is
  another message); a broadcast when python-socketio's ``Server.emit`` was addressed to a room or
  to everyone rather than to one sid, with the participant it skipped (``include_self=False``)
  as a part. A background task's emit starts at ``start_background_task``. When several call
  sites send one event, each journey's name ends in the function and the line;
- ``callback:<event>``: an emit with a ``callback``: its frame with the ack id, then the client's
  ACK read, ``Manager.trigger_callback``, the app's callback and the first thing it does;
- ``ack:<event>``: an event that came with an ack id, from the read to the ACK packet's frame;
- ``disconnect``: the DISCONNECT packet to python-socketio's ``_handle_disconnect`` and the
  app's handler, then the server's close frame.

A journey's page name is its kind and event, made safe for a file and a URL: ``on:message`` on
``/chat`` is ``on-message-chat``; the catch-all is ``on-any``.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..catalog import Journey
from ..model import Chain, Event, TraceFile
from ..tracefiles.values import value_text_to_python
from . import derive_packets
from .build import (
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
    str_arg,
    thread_route,
    value_trail,
    with_producer,
)

APP_DIST = "sample_app"  # the traced app's marker (dispel.model.Source)
HANDLE_EVENT = "flask_socketio:SocketIO._handle_event"
SIO_EMIT = "flask_socketio:SocketIO.emit"
SERVER_EMIT = "socketio.server:Server.emit"
BACKGROUND = "flask_socketio:SocketIO.start_background_task"
TRIGGER_CALLBACK = "socketio.manager:Manager.trigger_callback"
RESERVED = ("connect", "disconnect")


@dataclass(frozen=True)
class Derived:
    """A derived journey: its catalogue entry (the finder named ``derived``) and how to find it."""

    journey: Journey
    find: Callable[[TraceGraph], tuple[list[list[int]], tuple[str, ...]]]
    kind: str  # run, handshake, connect, on, emit, broadcast, ack, disconnect
    event: str = ""
    namespace: str = "/"
    site: str = ""  # path:line in the app it starts from (a handler's def, an emit's call), if any


def slug(kind: str, event: str = "", namespace: str = "/") -> str:
    """A journey's page name: ``on-message``, ``on-message-chat`` (namespace /chat), ``on-any``."""
    parts = [kind]
    if event:
        parts.append("any" if event == "*" else event)
    if namespace not in ("/", ""):
        parts.append(namespace.strip("/"))
    return "-".join(re.sub(r"[^A-Za-z0-9_]+", "_", p).strip("_") or "_" for p in parts)


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
    handles = g.find(lambda e: e.func == HANDLE_EVENT and str_arg(e, "message") == "connect", thread, after=connect, before=g.ev(connect).end + 1)
    handler = _handler_of(g, handles[0]) if handles else None
    answer = ('"sid"',)
    sinks = [s for s in _sends(g, answer) if b"0{" in _sent_bytes(g.ev(s))[:12] or b"0/" in _sent_bytes(g.ev(s))[:12]]
    sio = [s for s in sinks if b"40" in _sent_bytes(g.ev(s))[:12]]
    sink = _one(sio, "the socket send of the CONNECT answer", "Server._handle_connect")
    # the answer's own send: what the handler emitted meanwhile (its packets were queued first)
    # is another message, and the chain follows this one's hand-off
    sending = [c for c in range(connect, g.ev(connect).end + 1) if g.ev(c).func == "socketio.server:Server._send_packet"
               and (handler is None or c > g.ev(handler).end)
               and any(g.ev(k).func == "socketio.packet:Packet.encode" and g.ev(k).ret is not None and g.ev(k).returned.text[1:2] == "0"
                       for k in range(c, g.ev(c).end + 1))]
    put = [c for c in range(sending[0], g.ev(sending[0]).end + 1) if g.ev(c).func == "queue:Queue.put"][:1] if sending else []
    waypoints = [recv, connect, *([handler] if handler is not None else []), *put, sink]
    return [with_producer(g, waypoints)], answer + ("'40'",)


def _sent_bytes(e: Event) -> bytes:
    text = next((a.text for a in e.args if a.name == "data"), "")
    try:
        value = value_text_to_python(text)
    except Exception:  # noqa: BLE001 - any text the recorder wrote that does not parse means no bytes shown
        return b""
    return value if isinstance(value, bytes) else b""


def registration(g: TraceGraph, message: str) -> list[int] | None:
    """Where the app's import stored the handler of ``message``:
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
        up, after = caught(g, handler)
        parts = [*([stored] if stored else []), value_trail(g, recv, handler, needles) + up]
        return parts + after, needles + (f"'{event}'",) + _payload(g, handler)

    return find


def caught(g: TraceGraph, handler: int) -> tuple[list[int], list[list[int]]]:
    """A handler that raised: the waypoints from where it raised up through every frame the
    exception passed (each hop's line is where it left that frame: Flask-SocketIO's re-raise when
    the app has no error handler) to the frame that caught it, and on to what that frame then
    called (an ``on_error`` handler); when no recorded frame caught it (the thread's run() raised
    too), a last part: threading's excepthook, which the thread ran next. ([], []) when it did not raise."""
    if not g.ev(handler).raised:
        return [], []
    up = g.ancestors(handler)
    catcher = next((a for a in up[1:] if not g.ev(a).raised), None)
    if catcher is not None:
        raised_child = up[up.index(catcher) - 1]
        after = [c for c in g.children.get(catcher, []) if c > raised_child]
        return [catcher, *after[:1]], []
    root = up[-1]
    hook = g.find(lambda e: e.parent < 0 and "excepthook" in e.func, g.ev(root).thread, after=g.ev(root).end)
    return [root], [[hook[0]]] if hook else []


def recipients(g: TraceGraph, emit: int, needles: tuple[str, ...]) -> list[int]:
    """The socket sends an emit led to: per thread, the first send showing the packet that a
    hand-off from the emit reaches (an earlier send of the same event on that thread does not)."""
    first: dict[str, int] = {}
    for s in _sends(g, needles):
        if g.ev(s).thread not in first and _reaches(g, emit, s):
            first[g.ev(s).thread] = s
    return sorted(first.values())


def packet_text(g: TraceGraph, emit: int) -> tuple[str, ...]:
    """The Socket.IO packet one emit encoded, as a frame shows it (``2["reply",{...}]`` after the
    Engine.IO type): up to its first quote or backslash, which str and bytes write alike; () when
    the emit encoded none (a binary event: its attachments go apart)."""
    for c in range(emit, g.ev(emit).end + 1):
        e = g.ev(c)
        if e.func == "socketio.packet:Packet.encode" and e.ret is not None and e.ret.text[:1] in ("'", '"'):
            body = re.split(r"[\\']", e.ret.text[1:-1], maxsplit=1)[0]
            if len(body) >= 4:
                return (body,)
    return ()


def emit_start(g: TraceGraph, emit: int) -> tuple[int, int]:
    """(the app's frame that emitted, its call that led to SocketIO.emit: ``emit()``, ``send()``,
    ``socketio.emit`` itself). The journey follows the message from that call, not from the
    frame: what the frame handed off before it (a socketio.call's packet) is another message."""
    anc = g.ancestors(emit)
    k = next(k for k, a in enumerate(anc) if _is_app(g, a))
    return anc[k], anc[k - 1]


def find_emit(event: str, emit: int) -> Callable:
    """From the app's code that emitted (a background task: from start_background_task) to the
    socket sends of this emit's packet; a broadcast also shows the join_room before it (as the
    catalogue's broadcast does) and fans out to every client it reached."""
    def find(g: TraceGraph):
        needles = _packet_needle(event)
        if _app_caller(g, emit) is None:
            raise JourneyError(f"no app code called emit({event!r}) (last hop reached: SocketIO.emit)")
        source, call = emit_start(g, emit)
        sinks = recipients(g, call, packet_text(g, emit) or needles)
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
        room = str_arg(g.ev(joins[0]), "room") if joins else None
        if room:
            rooms = (repr(room),)
            stored = g.find(lambda e: mentions(e, rooms) and "enter_room" in e.func, g.ev(source).thread, after=source, before=emit)
            if stored:
                parts.append([source, g.descend(stored[0], lambda e: mentions(e, rooms))])
        fanned = fan_out(g, call, sinks, needles)
        fanned[0] = [source, *fanned[0]]
        parts += fanned
        skip = skipped(g, emit)
        if skip:
            parts.append(skip)
        return parts, rooms + needles + _payload(g, source)

    return find


def skipped(g: TraceGraph, emit: int) -> list[int]:
    """Where the sender is left out (``include_self=False``, ``skip_sid``): python-socketio's
    ``Manager.emit`` loops over ``get_participants`` (a generator: each participant is a resume)
    and sends only ``if sid not in skip_sid``. The resume that yielded a participant, followed by
    the next resume with no send between them, is the participant skipped: the part goes from
    ``Manager.emit`` into that resume and on to the next. [] when no one was skipped."""
    manager = next((c for c in range(emit, g.ev(emit).end + 1) if g.ev(c).func == "socketio.manager:Manager.emit"), None)
    if manager is None or (str_arg(g.ev(manager), "skip_sid") is None and not any(
            a.name == "skip_sid" and a.text.startswith("[") for a in g.ev(manager).args)):
        return []
    kids = g.children.get(manager, [])
    resumes = [c for c in kids if g.ev(c).func == "socketio.base_manager:BaseManager.get_participants"]
    for a, b in itertools.pairwise(resumes):
        sent = any(g.ev(c).func in ("socketio.server:Server._send_eio_packet", "socketio.server:Server._send_packet") and a < c < b for c in kids)
        if not sent and g.ev(a).ret is not None and g.ev(a).returned.text != "None":
            return [manager, a, b]
    return []


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
        own = _own_handoff(g, internal, handler)
        if own is not None:
            # the handler handed other messages off first (it emitted): follow the ACK's own put
            put, woke = own
            to_sink = [handler, *(value_trail(g, put, sink, answer) if woke else [put, sink])]
        return [with_producer(g, to_handler + to_sink[1:])], asked + answer + (prefix + "[",)

    return find


def _own_handoff(g: TraceGraph, internal: int, handler: int) -> tuple[int, bool] | None:
    """When the handler handed something off before its ACK was sent (an emit, a task started),
    (the ACK's own Queue.put, whether it woke a thread); None when the ACK's is the first hand-off."""
    thread = g.ev(handler).thread
    first = min((x for x, _, _ in g.cross if x >= handler and g.ev(x).thread == thread), default=None)
    sending = [c for c in range(g.ev(handler).end + 1, g.ev(internal).end + 1) if g.ev(c).func == "socketio.server:Server._send_packet"]
    puts = [c for c in range(sending[0], g.ev(sending[0]).end + 1) if g.ev(c).func == "queue:Queue.put"] if sending else []
    if not puts or first is None or puts[0] <= first <= g.ev(puts[0]).end:
        return None
    return puts[0], any(puts[0] <= x <= g.ev(puts[0]).end for x, _, _ in g.cross)


def find_disconnect(g: TraceGraph, websocket: bool = True):
    """As the catalogue's finder, with what it knows of the sample app taken from the trace: the
    app's disconnect handler is the one ``_handle_event`` called for 'disconnect', and the room
    whose cleanup is shown is the first one the app joined (``join_room``), if any."""
    done = _one(g.find(lambda e: e.func == "socketio.server:Server._handle_disconnect"), "Server._handle_disconnect", "none")
    thread = g.ev(done).thread
    namespace = str_arg(g.ev(done), "namespace") or "/"
    said = ("'41'",) if namespace == "/" else (f"'41{namespace},",)
    recv41 = _recv_before_text(g, said)
    handles = g.find(lambda e: e.func == HANDLE_EVENT and str_arg(e, "message") == "disconnect", thread, after=done, before=g.ev(done).end + 1)
    handler = _handler_of(g, handles[0]) if handles else None
    target = handler if handler is not None else done
    farewell = [recv41, *value_trail(g, recv41, target, said)[1:]]
    joined = [str_arg(g.ev(i), "room") for i in g.find(lambda e: e.func == "flask_socketio:join_room")]
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
    return derive_all(trace)[0]


def where(g: TraceGraph, i: int) -> str:
    """``path:line`` of event i's call in the app: the app's file and the line of its frame that led to i."""
    anc = g.ancestors(i)
    for k, a in enumerate(anc):
        if _is_app(g, a):
            func = g.trace.funcs[g.ev(a).func]
            line = g.ev(anc[k - 1]).call_line if k > 0 else func.first_line
            return f"{func.source.path}:{line}"
    return "the library (no app frame above it)"


def emit_site(g: TraceGraph, emit: int) -> tuple[int, int] | None:
    """(the app's frame that emitted, the line of that frame that led to SocketIO.emit)."""
    anc = g.ancestors(emit)
    k = next((k for k, a in enumerate(anc) if _is_app(g, a)), None)
    if k is None:
        return None
    return anc[k], (g.ev(anc[k - 1]).call_line if k > 0 else 0)


def _callback_journey(g: TraceGraph, sc: str, handle: int, handler: int, trigger: int, websocket: bool) -> Derived | str:
    """The journey of an emit with a callback: the emit to its frame (with the ack id), then the
    client's ACK read, python-socketio's ``trigger_callback``, the app's callback and what it does.
    A ``path:line: why`` when the emit that carried the ack id is not in the trace."""
    func = g.trace.funcs[g.ev(handler).func]
    ack_id = next((a.text for a in g.ev(trigger).args if a.name == "id"), "")
    sid = str_arg(g.ev(trigger), "sid")
    namespace = str_arg(g.ev(handle), "namespace") or "/"
    prefix = "" if namespace == "/" else f"{namespace},"
    emits = [i for i in g.find(lambda e: e.func == SIO_EMIT)
             if _app_caller(g, i) is not None and any(p.startswith(f"2{prefix}{ack_id}[") for p in packet_text(g, i))
             and any(g.ev(c).func == "socketio.manager:Manager.emit" and sid in (str_arg(g.ev(c), "to"), str_arg(g.ev(c), "room"))
                     for c in range(i, g.ev(i).end + 1))]
    if not emits:
        return f"{func.source.path}:{func.first_line}: the callback {func.qualname} ran, and no emit of the app's code carried its ack id {ack_id}"
    emit = emits[0]
    event = str_arg(g.ev(emit), "event") or "?"
    source, _ = emit_start(g, emit)
    site = emit_site(g, emit)
    assert site is not None  # emits has only calls with an app caller, which emit_site finds
    line = site[1]
    caller = g.trace.funcs[g.ev(source).func]
    name = f"{slug('callback', event, namespace)}-{slug(caller.qualname.split('.')[-1])}-{line}"
    title = (f"emit({event!r}, callback={func.qualname.split('.')[-1]}) from {caller.qualname} line {line}: "
             f"the frame with ack id {ack_id}, the client's ACK, and the callback")
    return Derived(Journey(name, title, sc, "derived", "sent" if websocket else ""), find_callback(event, emit, handler, ack_id, prefix),
                   "callback", event, namespace, f"{caller.source.path}:{line}")


def find_callback(event: str, emit: int, callback: int, ack_id: str, prefix: str) -> Callable:
    def find(g: TraceGraph):
        parts, shown = find_emit(event, emit)(g)
        needles = (f"3{prefix}{ack_id}[",)
        first = happened_before(g, callback, lambda e: mentions(e, needles))
        recv = happened_before(g, g.ev(first).end, is_sink("recv", "recv_into")) if first is not None else None
        if recv is None:
            raise JourneyError(f"no socket read happened before the ACK {needles[0]}...] (last hop reached: the emit's frame)")
        does = g.children.get(callback, [])[:1]  # what the callback does first
        return parts + [value_trail(g, recv, callback, needles) + does], shown + needles

    return find


def derive_all(trace: TraceFile) -> tuple[list[Derived], list[str]]:
    """The derived journeys and, for every handler that ran and every emit of the app's code that
    is on no journey, one ``path:line: why`` (printed as ``not derived:``)."""
    g = TraceGraph(trace)
    sc = trace.scenario
    notes: list[str] = []
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
    later: list[Derived] = []
    for i in g.find(lambda e: e.func == HANDLE_EVENT):
        e = g.ev(i)
        message, namespace = str_arg(e, "message"), str_arg(e, "namespace") or "/"
        handler = _handler_of(g, i)
        if handler is None or message in RESERVED:
            continue
        trigger = next((a for a in g.ancestors(i) if g.ev(a).func == TRIGGER_CALLBACK), None)
        if message is None and trigger is not None:
            d = _callback_journey(g, sc, i, handler, trigger, websocket)
            if isinstance(d, str):
                notes.append(d)
            elif d.journey.name not in seen:
                seen.add(d.journey.name)
                later.append(d)
            continue
        if message is None:
            notes.append(f"{where(g, handler)}: the handler {trace.funcs[g.ev(handler).func].qualname} ran for an event "
                         "whose name the trace does not show as text")
            continue
        name = slug("on", message, namespace)
        if name not in seen:
            seen.add(name)
            func = trace.funcs[g.ev(handler).func]
            what = "the catch-all '*'" if message == "*" else repr(message)
            title = f"on({what}) on {namespace}: how the event reaches {func.qualname}"
            event = message
            if message == "*":
                event = str_arg(g.ev(handler), "event") or next((str_arg(g.ev(handler), a.name) for a in g.ev(handler).args), None) or "*"
            out.append(Derived(Journey(name, title, sc, "derived", "on" if websocket else ""), find_on(event, handler, message), "on", event,
                               namespace, f"{func.source.path}:{func.first_line}"))
        internal = next((a for a in g.ancestors(i) if g.ev(a).func == "socketio.server:Server._handle_event_internal"), None)
        ack_id = next((a.text for a in g.ev(internal).args if a.name == "id"), "None") if internal is not None else "None"
        if internal is not None and ack_id.isdigit():
            name = slug("ack", message, namespace)
            if name not in seen:
                seen.add(name)
                title = f"ack({message!r}) on {namespace}: the handler's return value sent back as the ACK packet"
                func = trace.funcs[g.ev(handler).func]
                later.append(Derived(Journey(name, title, sc, "derived", "sent" if websocket else ""),
                                     find_ack(message, i, internal, int(ack_id), namespace), "ack", message, namespace,
                                     f"{func.source.path}:{func.first_line}"))
    # One journey per call site: (kind, event, namespace, the app's function, its line).
    sites: dict[tuple[str, str, str, str, int], list[int]] = {}
    for i in g.find(lambda e: e.func == SIO_EMIT):
        site = emit_site(g, i)
        if site is None:
            continue  # a library's own emit
        emitted = str_arg(g.ev(i), "event")
        server_emit = next((c for c in range(i, g.ev(i).end + 1) if g.ev(c).func == SERVER_EMIT), None)
        if emitted is None or server_emit is None:
            why = ("the event's name is not text in the trace" if emitted is None
                   else "SocketIO.emit never called python-socketio's Server.emit (it raised, or went to a message queue)")
            notes.append(f"{where(g, i)}: emit({emitted!r}): {why}" if emitted else f"{where(g, i)}: an emit: {why}")
            continue
        to = str_arg(g.ev(server_emit), "to") or str_arg(g.ev(server_emit), "room")
        namespace = str_arg(g.ev(server_emit), "namespace") or "/"
        kind = "emit" if to is not None and to.startswith("<sid-") else "broadcast"
        sites.setdefault((kind, emitted, namespace, g.ev(site[0]).func, site[1]), []).append(i)
    per_name: dict[str, int] = {}
    for kind, event, namespace, _, _ in sites:
        per_name[slug(kind, event, namespace)] = per_name.get(slug(kind, event, namespace), 0) + 1
    for (kind, event, namespace, func_key, line), emits in sites.items():
        # a repeated call site (a loop, a background task): its first emit that reached a client's
        # socket; a broadcast: the one that reached the most clients
        order = sorted(emits, key=lambda i: (-_fanned(g, i), i)) if kind == "broadcast" else emits
        reached = (i for i in order if recipients(g, emit_start(g, i)[1], packet_text(g, i) or _packet_needle(event)))
        chosen = next(reached, order[0])  # the first that reached a socket (else the finder says why not)
        func = trace.funcs[func_key]
        name = slug(kind, event, namespace)
        if per_name[name] > 1:  # several call sites send this event: each is its own journey
            name = f"{name}-{slug(func.qualname.split('.')[-1])}-{line}"
        to = str_arg(g.ev(next(c for c in range(chosen, g.ev(chosen).end + 1) if g.ev(c).func == SERVER_EMIT)), "to") or str_arg(
            g.ev(next(c for c in range(chosen, g.ev(chosen).end + 1) if g.ev(c).func == SERVER_EMIT)), "room")
        caller = func.qualname
        at = f" line {line}" if per_name[slug(kind, event, namespace)] > 1 else ""
        server_emit = next(c for c in range(chosen, g.ev(chosen).end + 1) if g.ev(c).func == SERVER_EMIT)
        if any(a.name == "skip_sid" and a.text != "None" for a in g.ev(server_emit).args):
            at += ", the sender left out"
        title = (f"emit({event!r}) from {caller}{at}: to the frame on the socket" if kind == "emit"
                 else f"emit({event!r}, to={to!r}) from {caller}{at}: one emit fanned out to the room" if to
                 else f"emit({event!r}) to everyone from {caller}{at}")
        later.append(Derived(Journey(name, title, sc, "derived", "sent" if websocket else ""), find_emit(event, chosen), kind, event,
                             namespace, f"{func.source.path}:{line}"))
    out += later
    # refused connects, HTTP routes, binary events, server calls, server-side disconnects
    packets = derive_packets.journeys(g)
    # an event that came with binary attachments reaches its handler on its binary-in journey
    # (the text packet, the attachment's frame, the reconstruction), which stands for its on-
    binary_in = {(f.event, f.namespace) for f in packets if f.kind == "binary-in"}
    out = [d for d in out if not (d.kind == "on" and (d.event, d.namespace) in binary_in)]
    out += [Derived(Journey(f.name, f.title, sc, "derived", f.wire if websocket else ""), f.find, f.kind, f.event, f.namespace)
            for f in packets]
    if g.find(lambda e: e.func == "socketio.server:Server._handle_disconnect"):
        out.append(Derived(Journey(
            "disconnect", "The client leaves: DISCONNECT, the handler, CLOSE, the close frame", sc, "derived",
            "disconnect" if websocket else "",
        ), lambda g: find_disconnect(g, websocket), "disconnect"))
    return out, notes


def unshown(trace: TraceFile, built: Mapping[str, Chain]) -> list[str]:
    """``path:line: why`` for every app handler that ran (any event, connect and disconnect
    included) and is on no built journey: nothing that ran goes unsaid."""
    g = TraceGraph(trace)
    on = {h.func.key for c in built.values() for h in c.hops}
    out: list[str] = []
    said: set[str] = set()
    for i in g.find(lambda e: e.func == HANDLE_EVENT):
        handler = _handler_of(g, i)
        if handler is None:
            continue
        key = g.ev(handler).func
        if key in on or key in said:
            continue
        said.add(key)
        func = trace.funcs[key]
        message, namespace = str_arg(g.ev(i), "message"), str_arg(g.ev(i), "namespace") or "/"
        why = ("the connect journey follows the first namespace's connect only" if message == "connect"
               else "the disconnect journey follows the first DISCONNECT only" if message == "disconnect"
               else "its journey could not be followed (see its line)")
        out.append(f"{func.source.path}:{func.first_line}: the handler {func.qualname} of {message!r} on {namespace} ran and is on no journey: {why}")
    # every call site of the app that reached python-socketio's Server.emit (SocketIO.emit, send,
    # SocketIO.call, ...) is on a journey: a hop of its function at its line
    shown = {(h.func.key, h.line) for c in built.values() for h in c.hops}
    sites: set[tuple[str, int]] = set()
    for i in g.find(lambda e: e.func == SERVER_EMIT):
        site = emit_site(g, i)
        if site is None:
            continue
        at = (g.ev(site[0]).func, site[1])
        if at in shown or at in sites:
            continue
        sites.add(at)
        func = trace.funcs[at[0]]
        anc = g.ancestors(i)
        via = trace.funcs[g.ev(anc[anc.index(site[0]) - 1]).func].key
        event = str_arg(g.ev(i), "event")
        reached = bool(event and any(_reaches(g, i, c) for c in _sends(g, _packet_needle(event))))
        why = ("no journey follows it yet" if reached else "no socket send of it is in the trace")
        out.append(f"{func.source.path}:{at[1]}: {func.qualname} emitted {event!r} through {via}, and no journey shows it: {why}")
    return out


def raised_sites(trace: TraceFile) -> list[tuple[str, int, str]]:
    """(path, line, qualname) of every app frame whose exception left the app's code (its caller
    is a library's, or none): where the app raised, in trace order, each once."""
    g = TraceGraph(trace)
    out: list[tuple[str, int, str]] = []
    for e in trace.events:
        if e.raised and _is_app(g, e.index) and (e.parent < 0 or not _is_app(g, e.parent)):
            func = trace.funcs[e.func]
            site = (func.source.path, e.return_line, func.qualname)
            if site not in out:
                out.append(site)
    return out


def shown_by(built: Mapping[str, Chain], site: tuple[str, int, str]) -> str | None:
    """The first journey (by name) with a hop that left ``site`` raising."""
    path, line, qualname = site
    for name in sorted(built):
        if any(h.func.source.path == path and h.func.qualname == qualname and h.line == line
               and (h.value or "").startswith("raised an exception") for h in built[name].hops):
            return name
    return None


def caught_by(trace: TraceFile, site: tuple[str, int, str]) -> str | None:
    """How the exception raised at ``site`` was caught when a recorded frame caught it:
    ``ValueError, caught by flask_socketio:SocketIO._handle_event, which called the app's on_error``
    (the type as the handler it was passed to received it); None when none did (the thread's excepthook)."""
    g = TraceGraph(trace)
    path, line, qualname = site
    for e in trace.events:
        func = trace.funcs[e.func]
        if not (e.raised and func.source.path == path and func.qualname == qualname and e.return_line == line):
            continue
        up, _ = caught(g, e.index)
        if len(up) < 1 or g.ev(up[0]).raised:
            return None
        catcher = trace.funcs[g.ev(up[0]).func]
        said = f"caught by {catcher.key}"
        if len(up) > 1:
            then = g.ev(up[1])
            # the exception as the catcher passed it on (to an error handler): an argument of an
            # exception's type, never the callee's own self (Packet.__init__'s <Packet>)
            kinds = [m.group(1) for a in then.args
                     if a.name != "self" and (m := re.fullmatch(r"<([A-Z]\w*(?:Error|Exception|Exit|Interrupt))>", a.text))]
            said = (f"{kinds[0]}, " if kinds else "an exception, ") + said + f", which called {trace.funcs[then.func].qualname}"
        return said
    return None
