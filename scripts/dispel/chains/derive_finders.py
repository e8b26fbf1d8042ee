"""The finders of derived journeys (pure): from what Flask-SocketIO called, where a journey of
any app starts and ends (run, connect, on, emit, ack, disconnect); dispel.chains.derive lists
what happened and names them."""
from __future__ import annotations

import itertools
import re
from collections.abc import Callable

from ..model import Event
from ..tracefiles.values import value_text_to_python
from .derive_packets import refusal
from .graph import JourneyError, TraceGraph, is_sink, mentions, str_arg
from .hand_written import (
    CLOSE_FRAME,
    fan_out,
    happened_before,
    only_one,
    recv_before_text,
    with_producer,
)
from .routes import handoff_route, value_trail

APP_DIST = "sample_app"  # the traced app's marker (dispel.model.Source)

HANDLE_EVENT = "flask_socketio:SocketIO._handle_event"

SIO_EMIT = "flask_socketio:SocketIO.emit"

SERVER_EMIT = "socketio.server:Server.emit"

BACKGROUND = "flask_socketio:SocketIO.start_background_task"

TRIGGER_CALLBACK = "socketio.manager:Manager.trigger_callback"

RESERVED = ("connect", "disconnect")

def is_app(g: TraceGraph, i: int) -> bool:
    return g.trace.funcs[g.ev(i).func].source.dist == APP_DIST

def app_caller(g: TraceGraph, i: int) -> int | None:
    """The nearest caller of i that is the app's own code."""
    return next((a for a in g.ancestors(i)[1:] if is_app(g, a)), None)

def handler_of(g: TraceGraph, handle: int) -> int | None:
    return next((c for c in g.children.get(handle, []) if is_app(g, c)), None)

def sends(g: TraceGraph, needles: tuple[str, ...]) -> list[int]:
    return g.find(lambda e: is_sink("send", "sendall")(e) and mentions(e, needles))

def packet_needle(event: str) -> tuple[str, ...]:
    return (f'"{event}"',)

def payload(g: TraceGraph, i: int) -> tuple[str, ...]:
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

def find_run(g: TraceGraph):
    run = only_one(g.find(lambda e: e.func == "flask_socketio:SocketIO.run"), "SocketIO.run", "none")
    entry = app_caller(g, run) or run
    thread = g.ev(run).thread
    bind = only_one(g.find(is_sink("bind"), thread, after=run), "socket.bind", "SocketIO.run")
    listen = only_one(g.find(is_sink("listen"), thread, after=bind), "socket.listen", "socket.bind")
    accepts = g.find(is_sink("_accept"), thread, after=listen)
    if not accepts and g.green and g.find(is_sink("_accept"), "hub"):
        # gevent: the hub accepts, in a watcher callback of gevent's own (opaque) code, which no
        # recorded call of the server's lane hands on to: the journey ends where the socket listens
        return [[entry, bind, listen]], ()
    accept = only_one(accepts, "socket.accept", "socket.listen")
    return [[entry, bind, listen, accept]], ()

def find_connect(g: TraceGraph):
    """The first connect the app accepted: a refused one (its CONNECT_ERROR packet) is the
    journey ``connect-refused`` (dispel.chains.derive_packets), and no answer with a sid follows it."""
    connects = g.find(lambda e: e.func == "socketio.server:Server._handle_connect")
    only_one(connects, "Server._handle_connect", "none")
    connect = only_one([c for c in connects if refusal(g, c) is None], "an accepted connect (every CONNECT was refused)", "Server._handle_connect")
    recv = happened_before(g, connect, is_sink("recv", "recv_into"))
    if recv is None:
        raise JourneyError("no socket read happened before the CONNECT packet (last hop reached: none)")
    thread = g.ev(connect).thread
    handles = g.find(lambda e: e.func == HANDLE_EVENT and str_arg(e, "message") == "connect", thread, after=connect, before=g.ev(connect).end + 1)
    handler = handler_of(g, handles[0]) if handles else None
    answer = ('"sid"',)
    sinks = [s for s in sends(g, answer) if b"0{" in sent_bytes(g.ev(s))[:12] or b"0/" in sent_bytes(g.ev(s))[:12]]
    sio = [s for s in sinks if b"40" in sent_bytes(g.ev(s))[:12]]
    sink = only_one([s for s in sio if reaches(g, connect, s)], "the socket send of the CONNECT answer", "Server._handle_connect")
    # the answer's own send: what the handler emitted meanwhile (its packets were queued first)
    # is another message, and the chain follows this one's hand-off
    sending = [c for c in range(connect, g.ev(connect).end + 1) if g.ev(c).func == "socketio.server:Server._send_packet"
               and (handler is None or c > g.ev(handler).end)
               and any(g.ev(k).func == "socketio.packet:Packet.encode" and g.ev(k).ret is not None and g.ev(k).returned.text[1:2] == "0"
                       for k in range(c, g.ev(c).end + 1))]
    put = [c for c in range(sending[0], g.ev(sending[0]).end + 1) if g.ev(c).func == "queue:Queue.put"][:1] if sending else []
    waypoints = [recv, connect, *([handler] if handler is not None else []), *put, sink]
    return [with_producer(g, waypoints)], answer + ("'40'",)

def sent_bytes(e: Event) -> bytes:
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
    for module in g.find(lambda e: e.func.endswith(":<module>") and is_app(g, e.index) and e.parent < 0):
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
        needles = packet_needle(event)
        first = happened_before(g, handler, lambda e: mentions(e, needles))
        if first is None:
            raise JourneyError(f"no call before the handler shows {needles[0]} (last hop reached: none)")
        recv = happened_before(g, g.ev(first).end, is_sink("recv", "recv_into"))
        if recv is None:
            raise JourneyError(f"no socket read happened before {needles[0]} (last hop reached: none)")
        stored = registration(g, message or event)
        up, after = caught(g, handler)
        parts = [*([stored] if stored else []), value_trail(g, recv, handler, needles) + up]
        return parts + after, needles + (f"'{event}'",) + payload(g, handler)

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
    """The socket sends an emit led to: for each Engine.IO session it queued its packet for (a
    ``Queue.put`` inside the emit), the first send showing the packet on the thread that took it
    (see ``taken``). Without a recorded put (gevent's queues are not shown): per thread, the first
    send showing the packet that a hand-off from the emit reaches (an earlier send of the same
    event on that thread does not)."""
    puts = [c for c in range(emit, g.ev(emit).end + 1) if g.ev(c).func == "queue:Queue.put"]
    if puts:
        return sorted({s for s in (taken(g, put, needles) for put in puts) if s is not None})
    first: dict[str, int] = {}
    for s in sends(g, needles):
        if g.ev(s).thread not in first and reaches(g, emit, s):
            first[g.ev(s).thread] = s
    return sorted(first.values())

def taken(g: TraceGraph, put: int, needles: tuple[str, ...]) -> int | None:
    """The first send showing needles on the thread that took the item ``put`` queued: the thread
    its notify woke, when that thread's ``Queue.get`` returned this very item; else the thread
    whose get of that queue returned it without waiting (a long-poll GET that came after the put);
    else the thread its notify woke (which took another turn's item, when the trace kept one of a
    task's identical turns)."""
    queue = next((a.token for a in g.ev(put).args if a.name == "self" and a.token), 0)
    item = next((a.token for a in g.ev(put).args if a.name == "item" and a.token), 0)
    if not item:
        return None

    def took(e: Event) -> bool:
        return (e.func == "queue:Queue.get" and e.ret is not None and e.ret.token == item
                and any(a.name == "self" and a.token == queue for a in e.args))

    woken = [y for x, y, _ in g.cross if put <= x <= g.ev(put).end]
    sure = [y for y in woken if any(took(g.ev(a)) for a in g.ancestors(y))]
    # then the take by identity; then a wake-up whose thread took an item of the same text (the
    # trace kept one of a task's identical turns: its put stands for each turn's)
    starts = sure + [i for i in g.find(took) if g.ev(i).thread != g.ev(put).thread][:1] + woken
    for start in starts:
        sent = g.find(lambda e: is_sink("send", "sendall")(e) and mentions(e, needles), g.ev(start).thread, after=start)
        if sent:
            return sent[0]
    return None

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
    k = next(k for k, a in enumerate(anc) if is_app(g, a))
    return anc[k], anc[k - 1]

def find_emit(event: str, emit: int) -> Callable:
    """From the app's code that emitted (a background task: from start_background_task) to the
    socket sends of this emit's packet; a broadcast also shows the join_room before it (as the
    catalogue's broadcast does) and fans out to every client it reached."""
    def find(g: TraceGraph):
        needles = packet_needle(event)
        if app_caller(g, emit) is None:
            raise JourneyError(f"no app code called emit({event!r}) (last hop reached: SocketIO.emit)")
        source, call = emit_start(g, emit)
        sinks = recipients(g, call, packet_text(g, emit) or needles)
        only_one(sinks, f"the socket send of {needles[0]}", g.trace.funcs[g.ev(source).func].qualname)
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
        return parts, rooms + needles + payload(g, source)

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

def strings(frame: bytes, prefix: str) -> tuple[str, ...]:
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

def fanned(g: TraceGraph, emit: int) -> int:
    """How many Engine.IO sockets one emit queued its packet for."""
    return sum(1 for c in range(emit, g.ev(emit).end + 1) if g.ev(c).func == "socketio.server:Server._send_eio_packet")

def reaches(g: TraceGraph, a: int, b: int) -> bool:
    """Can a hand-off lead from a's thread (at a) to b: a wake-up or a thread start, or the take of
    a packet a put on a queue (a long-polling GET)? (b comes after a, then.)"""
    if g.ev(a).thread == g.ev(b).thread:
        return a < b
    try:
        handoff_route(g, a, b)
    except JourneyError:
        return False
    return True

def find_ack(event: str, handle: int, internal: int, ack_id: int, namespace: str) -> Callable:
    def find(g: TraceGraph):
        handler = handler_of(g, handle)
        if handler is None:
            raise JourneyError(f"no handler of {event!r} ran (last hop reached: SocketIO._handle_event)")
        asked = packet_needle(event)
        first = happened_before(g, handler, lambda e: mentions(e, asked))
        recv = happened_before(g, g.ev(first).end, is_sink("recv", "recv_into")) if first is not None else None
        if recv is None:
            raise JourneyError(f"no socket read happened before {asked[0]} (last hop reached: none)")
        prefix = "43" + ("" if namespace == "/" else f"{namespace},") + str(ack_id)
        sinks = [s for s in sends(g, (prefix + "[",)) if reaches(g, internal, s)]
        sink = only_one(sinks, f"the socket send of the ACK packet {prefix}[...]", "the handler")
        # the handler's return value is an object in the trace; the strings it carried, as the
        # ACK packet shows them, are what the trail follows (else the packet's prefix)
        answer = strings(sent_bytes(g.ev(sink)), prefix) or (prefix + "[",)
        to_handler = value_trail(g, recv, handler, asked)
        to_sink = value_trail(g, handler, sink, answer)
        own = own_handoff(g, internal, handler)
        if own is not None:
            # the handler handed other messages off first (it emitted): follow the ACK's own put
            put, woke = own
            to_sink = [handler, *(value_trail(g, put, sink, answer) if woke else [put, sink])]
        return [with_producer(g, to_handler + to_sink[1:])], asked + answer + (prefix + "[",)

    return find

def own_handoff(g: TraceGraph, internal: int, handler: int) -> tuple[int, bool] | None:
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
    whose cleanup is shown is the first one the app joined (``join_room``), if any.

    The disconnect followed is the first that the client asked for with its DISCONNECT packet
    (python-socketio's ``_handle_eio_message`` called ``_handle_disconnect``; Engine.IO's own close
    of a session calls it from ``_handle_eio_disconnect``) and that completes: the CLOSE it led to
    reached the server's close frame. A session whose close cannot be followed (one that another
    connection ended first, a refused client's) does not hide a later one that can."""
    dones = g.find(lambda e: e.func == "socketio.server:Server._handle_disconnect")
    only_one(dones, "Server._handle_disconnect", "none")
    asked = [d for d in dones if g.ev(g.ev(d).parent).func == "socketio.server:Server._handle_eio_message"]
    first: JourneyError | None = None
    for done in asked + [d for d in dones if d not in asked]:
        try:
            return _disconnect(g, done, websocket)
        except JourneyError as e:
            first = first or e
    assert first is not None
    raise first

def _disconnect(g: TraceGraph, done: int, websocket: bool):
    thread = g.ev(done).thread
    namespace = str_arg(g.ev(done), "namespace") or "/"
    said = ("'41'",) if namespace == "/" else (f"'41{namespace},",)
    # the read of this DISCONNECT packet: the one that happened before its _handle_disconnect
    told = happened_before(g, done, lambda e: mentions(e, said))
    recv41 = happened_before(g, g.ev(told).end, is_sink("recv", "recv_into")) if told is not None else None
    if recv41 is None:
        recv41 = recv_before_text(g, said)
    handles = g.find(lambda e: e.func == HANDLE_EVENT and str_arg(e, "message") == "disconnect", thread, after=done, before=g.ev(done).end + 1)
    # the call that reached the app's handler: Flask-SocketIO calls a handler that takes no reason
    # again without it, after the first call raised TypeError before entering it
    handler = next((h for h in (handler_of(g, x) for x in handles) if h is not None), None)
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
    # the close frame this CLOSE led to (another session's, sent earlier, is not it)
    sent = [s for s in sent if recv1 is not None and reaches(g, recv1, s)]
    # Did the CLOSE, where it was decoded, lead to the server's close frame? (python-engineio 4.13:
    # Socket.close queues the end and the writer closes the WebSocket.) Else the server's close
    # frame answers the client's (python-engineio 4.4: the CLOSE closes the Engine.IO socket with no
    # frame of its own, and simple-websocket's reader answers the client's close frame)
    answered = recv1 is not None and bool(sent) and reaches(g, closed[0], sent[0])
    if recv1 is not None and answered:
        parts.append(with_producer(g, [recv1, *value_trail(g, recv1, sent[0], ("'1'",))[1:]]))
    elif recv1 is not None and sent:
        parts.append(close_handled(g, recv1, closed[0]))
    elif websocket:  # the page decodes the close frame of this part
        raise JourneyError("Engine.IO's CLOSE never led to the server's close frame (last hop reached: the disconnect handler)")
    # The client's own close frame, read last: the reader thread ends and closes the socket (on
    # the connection whose close frame the server sent, when it sent one; and, when the CLOSE did
    # not lead to that frame, the reader answers the client's close frame with it first).
    socket = {a.token for s in sent[:1] for a in g.ev(s).args if a.name == "self" and a.token}
    frames = g.find(lambda e: is_sink("recv")(e) and e.ret is not None and e.ret.text.startswith(close_frame)
                    and (not socket or any(a.name == "self" and a.token in socket for a in e.args)))
    if frames:
        reader = g.ev(frames[-1]).thread
        shut = g.find(lambda e: e.func == "socket:socket.close", reader, after=frames[-1])
        if shut:
            answer = [] if answered else [s for s in sent if g.ev(s).thread == reader and frames[-1] < s < shut[0]]
            parts.append([frames[-1], *answer[:1], shut[0]])
    return parts, rooms + said + ("'1'", CLOSE_FRAME[2:])

def close_handled(g: TraceGraph, recv: int, got: int) -> list[int]:
    """The waypoints of Engine.IO's CLOSE that led to no close frame: from its read to the thread
    that got it (``got`` returned ``'1'``), to the call there that decoded it (the first that took
    it, and down through the callees that took it too), to the call that took the decoded packet,
    and on to the hand-off that call made (the end queued for the writer), if it made one."""
    one = lambda e: any(a.text == "'1'" for a in e.args if a.name not in ("self", "cls"))
    takers = g.find(one, g.ev(got).thread, after=g.ev(got).end)
    if not takers:
        raise JourneyError("Engine.IO's CLOSE was never decoded (last hop reached: the read of the CLOSE)")
    decode = g.descend(takers[0], one)
    packet = next((a.token for a in g.ev(takers[0]).args if a.name == "self" and a.token), 0)
    users = g.find(lambda e: any(a.token == packet and a.name != "self" for a in e.args), g.ev(got).thread, after=g.ev(takers[0]).end) if packet else []
    waypoints = [recv, *value_trail(g, recv, decode, ("'1'",))[1:]]
    if users:
        waypoints.append(users[0])
        handoff = [x for x, _, _ in g.cross if users[0] <= x <= g.ev(users[0]).end]
        waypoints += handoff[:1]
    return waypoints
