"""Generated descriptions for an unknown app's own hops and for derived journeys (pure).

The project's annotations (docs/annotations/*.yml) were written for the libraries and for the
sample app. A report on another app reuses the libraries' general texts; what they cannot know
-- the app's handlers, its events and namespaces, the lines where it emits, its background
tasks -- is described here from the trace, and every such text says that it was generated.
Texts keyed to one of the sample app's journeys (``module:qualname@journey``) and the sample
journeys' summaries are dropped: they were checked on those journeys only.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..chains import derive_packets
from ..chains.derive import Derived
from ..chains.derive_finders import APP_DIST, BACKGROUND, HANDLE_EVENT
from ..chains.graph import str_arg
from ..model import Chain, TraceFile

GENERATED = "*Generated from the trace, not written by hand.*"
EMITTERS = ("flask_socketio:emit", "flask_socketio:send", "flask_socketio:SocketIO.emit", "flask_socketio:SocketIO.send")

_SUMMARIES = {
    "run": "From the call of `socketio.run(app)` to the listening socket and the serve loop's first `accept`.",
    "handshake": "From the accepted connection to the `101 Switching Protocols` answer: the WebSocket handshake.",
    "connect": "From the socket read that carried the Socket.IO CONNECT packet, through python-socketio's connect "
               "handling{handler}, to the frame that answers it with the session id.",
    "on": "From the socket read that carried the event {event} on namespace {namespace} to the app's handler {handler}.",
    "emit": "From the app's {handler} calling emit/send of {event} to the first socket send that carries it.",
    "broadcast": "From the app's {handler} emitting {event} to a room (or to everyone) to the first socket send that carries it.",
    "ack": "From the socket read of the event {event}, sent with an ack id, through the handler {handler} to the "
           "ACK packet that carries its return value back.",
    "callback": "From the app's {handler} emitting {event} with a callback to the frame that carries it with an ack id; "
                "then from the socket read of the client's ACK, through python-socketio's `trigger_callback`, to the "
                "app's callback and the first thing it does.",
    "disconnect": "From the socket read of the Socket.IO DISCONNECT packet to python-socketio's disconnect handling"
                  "{handler}, then the Engine.IO CLOSE and the server's close frame (when the client sent them).",
    **derive_packets.SUMMARIES,  # refused connects, binary events, HTTP routes, calls, server-side disconnects
}


def _code(text: str) -> str:
    return "`" + text.replace("`", "'") + "`"


def library_texts(texts: Mapping[str, str]) -> dict[str, str]:
    """The project's texts that hold for any app: general function texts (no ``@journey``)."""
    return {k: v for k, v in texts.items() if "@" not in k and not k.startswith("journey:")}


def _app_events(trace: TraceFile) -> dict[int, str]:
    return {e.index: e.func for e in trace.events if trace.funcs[e.func].source.dist == APP_DIST}


def app_texts(trace: TraceFile, chains: Mapping[str, Chain], lines: Mapping) -> dict[str, str]:
    """Function key -> a generated description, for every function of the app on a chain."""
    app = _app_events(trace)
    on_chain = {h.func.key for c in chains.values() for h in c.hops if h.func.source.dist == APP_DIST}
    handles: dict[str, list[str]] = {}
    emits: dict[str, list[str]] = {}
    starts: dict[str, list[str]] = {}
    for e in trace.events:
        parent = e.parent
        if e.func == HANDLE_EVENT:
            for c in trace.events[e.index + 1: e.end + 1]:
                if c.parent == e.index and c.index in app:
                    message, namespace = str_arg(e, "message"), str_arg(e, "namespace") or "/"
                    what = "every event without a handler of its own (the catch-all '*')" if message == "*" else f"{message!r}"
                    handles.setdefault(app[c.index], []).append(f"{what} on namespace {_code(namespace)}")
        elif e.func in EMITTERS and parent in app:
            func = trace.funcs[trace.events[parent].func]
            src = lines.get(func.source)
            text = src[e.call_line - 1].strip() if src and 0 < e.call_line <= len(src) else ""
            event = str_arg(e, "event") or ("message" if e.func.endswith("send") else "?")
            quoted = f": {_code(text)}" if text and "{{" not in text else ""
            emits.setdefault(app[parent], []).append(f"{event!r} at line {e.call_line}{quoted}")
        elif e.func == BACKGROUND and parent in app:
            root = next((t.root for t in trace.threads if t.started_by >= e.index and t.started_by <= e.end), None)
            target = next((c.func for c in trace.events if root is not None and c.parent == root and c.index in app), None)
            if target:
                starts.setdefault(target, []).append(trace.funcs[trace.events[parent].func].qualname)
    out = {}
    for key in sorted(on_chain):
        qual = key.partition(":")[2]
        said = []
        if qual == "<module>":
            said.append("The app's module body, run when dispel imported the app: its decorators and "
                        "`on_namespace`/`on_event` calls register the handlers.")
        for h in dict.fromkeys(handles.get(key, ())):
            said.append(f"The app's handler of {h}: Flask-SocketIO's `SocketIO._handle_event` calls it.")
        for s in dict.fromkeys(starts.get(key, ())):
            said.append(f"A background task: {_code(s)} started it with `socketio.start_background_task`.")
        for m in dict.fromkeys(emits.get(key, ())):
            said.append(f"It emits {m}.")
        if not said:
            said.append(f"The app's own function {_code(qual)}.")
        out[key] = GENERATED + " " + " ".join(said)
    return out


def summaries(derived: Sequence[Derived], chains: Mapping[str, Chain]) -> dict[str, str]:
    """``journey:<name>`` -> a generated summary, for each derived journey that has a chain."""
    out = {}
    for d in derived:
        chain = chains.get(d.journey.name)
        if chain is None:
            continue
        apps = [h.func.qualname for h in chain.hops if h.func.source.dist == APP_DIST]
        handler = _code(apps[-1] if d.kind in ("on",) else apps[0]) if apps else ""
        text = _SUMMARIES[d.kind].format(
            event=_code(repr(d.event)) if d.event else "",
            namespace=_code(d.namespace),
            handler=(f" and the app's {handler}" if d.kind in ("connect", "disconnect") else handler) if handler else "",
        )
        if d.kind == "broadcast" and any(h.func.key == "socketio.base_manager:BaseManager.get_participants" and h.edge == "call"
                                         and chain.hops[n - 1].edge == "entry" for n, h in enumerate(chain.hops) if n):
            text += (" Its last part is where python-socketio leaves the sender out (`include_self=False` gives "
                     "`skip_sid`): `Manager.emit`'s loop over `get_participants` moves on to the next participant without a send.")
        out[f"journey:{d.journey.name}"] = f"{GENERATED} {text}"
    return out


def exceptions(stderr: str) -> list[tuple[str, str, int, str]]:
    """The exceptions a run printed (Python's traceback of an uncaught exception in a thread):
    (``Type: message``, file, line, function) of each, its innermost frame; in order, each once."""
    import re

    out: list[tuple[str, str, int, str]] = []
    frame = None
    inside = False
    for line in stderr.splitlines():
        if line.startswith("Traceback (most recent call last):"):
            inside, frame = True, None
            continue
        if not inside:
            continue
        m = re.match(r'\s+File "(.+)", line (\d+), in (.+)$', line)
        if m:
            frame = (m.group(1), int(m.group(2)), m.group(3))
        elif line and not line[0].isspace() and frame is not None:
            said = (line.strip(), *frame)
            if said not in out:
                out.append(said)
            inside = False
    return out
