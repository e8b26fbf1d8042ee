"""Derived journeys: from the trace of any Flask-SocketIO app, the journeys that happened in it (pure).

Where the catalogue's finders (dispel.chains.build.FINDERS) look for the sample app's handler names,
these rules look for what Flask-SocketIO itself calls, so they hold for any app:

- ``run``: the app's ``SocketIO.run`` (or its own function that called it) to bind, listen, accept;
- ``handshake``: the accepted connection to the 101 (the catalogue's finder: it names no handler);
- ``connect``: python-socketio's first ``_handle_connect`` that the app accepted (a refused one is
  ``connect-refused``), from the socket read before it, through the app's connect handler (if
  any) to the frame of the CONNECT answer;
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
  sites send one event, each journey's name ends in the function and the line. Each recipient is
  the thread that took the packet the emit queued for its session: the writer its put woke, or a
  long-polling client's GET that took it from the queue without waiting;
- ``callback:<event>``: an emit with a ``callback``: its frame with the ack id, then the client's
  ACK read, ``Manager.trigger_callback``, the app's callback and the first thing it does;
- ``ack:<event>``: an event that came with an ack id, from the read to the ACK packet's frame;
- ``disconnect``: the first DISCONNECT packet a client sent whose close can be followed, to
  python-socketio's ``_handle_disconnect`` and the app's handler, then the server's close frame.

A journey's page name is its kind and event, made safe for a file and a URL: ``on:message`` on
``/chat`` is ``on-message-chat``; the catch-all is ``on-any``.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..catalog import Journey
from ..model import Chain, TraceFile
from . import derive_packets
from .derive_finders import (
    HANDLE_EVENT,
    RESERVED,
    SERVER_EMIT,
    SIO_EMIT,
    TRIGGER_CALLBACK,
    app_caller,
    caught,
    emit_start,
    fanned,
    find_ack,
    find_connect,
    find_disconnect,
    find_emit,
    find_on,
    find_run,
    handler_of,
    is_app,
    packet_needle,
    packet_text,
    reaches,
    recipients,
    sends,
)
from .graph import JourneyError, TraceGraph, is_sink, mentions, str_arg
from .hand_written import SWITCHING, find_handshake, happened_before
from .routes import value_trail


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


# ------------------------------------------------------------------ what happened


def derive(trace: TraceFile) -> list[Derived]:
    """The journeys that happened in ``trace``, in a stable order (run, handshake, connect, then
    handlers, emits and acks in the order the trace holds them, disconnect last)."""
    return derive_all(trace)[0]

def where(g: TraceGraph, i: int) -> str:
    """``path:line`` of event i's call in the app: the app's file and the line of its frame that led to i."""
    anc = g.ancestors(i)
    for k, a in enumerate(anc):
        if is_app(g, a):
            func = g.trace.funcs[g.ev(a).func]
            line = g.ev(anc[k - 1]).call_line if k > 0 else func.first_line
            return f"{func.source.path}:{line}"
    return "the library (no app frame above it)"

def emit_site(g: TraceGraph, emit: int) -> tuple[int, int] | None:
    """(the app's frame that emitted, the line of that frame that led to SocketIO.emit)."""
    anc = g.ancestors(emit)
    k = next((k for k, a in enumerate(anc) if is_app(g, a)), None)
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
             if app_caller(g, i) is not None and any(p.startswith(f"2{prefix}{ack_id}[") for p in packet_text(g, i))
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
        handler = handler_of(g, i)
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
        order = sorted(emits, key=lambda i: (-fanned(g, i), i)) if kind == "broadcast" else emits
        reached = (i for i in order if recipients(g, emit_start(g, i)[1], packet_text(g, i) or packet_needle(event)))
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
        handler = handler_of(g, i)
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
        reached = bool(event and any(reaches(g, i, c) for c in sends(g, packet_needle(event))))
        why = ("no journey follows it yet" if reached else "no socket send of it is in the trace")
        out.append(f"{func.source.path}:{at[1]}: {func.qualname} emitted {event!r} through {via}, and no journey shows it: {why}")
    return out

def raised_sites(trace: TraceFile) -> list[tuple[str, int, str]]:
    """(path, line, qualname) of every app frame whose exception left the app's code (its caller
    is a library's, or none): where the app raised, in trace order, each once."""
    g = TraceGraph(trace)
    out: list[tuple[str, int, str]] = []
    for e in trace.events:
        if e.raised and is_app(g, e.index) and (e.parent < 0 or not is_app(g, e.parent)):
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
