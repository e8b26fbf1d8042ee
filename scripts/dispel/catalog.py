"""The one catalogue: scenarios, journeys, traced distributions, standard-library files, thread roles.

Data, and one read: at import it reads the scenarios of several processes from
scripts/dispel/sample_app/*.toml (PROCESS_SCENARIO_FILES), parsed by the pure parser of scenario files.
A leaf otherwise: it imports nothing of dispel but DispelError and that parser.
Every other module reads what it needs from here, so that adding a journey or a traced library
is one edit.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .model import DispelError
from .run import scenario_file, scenario_values

# --------------------------------------------------------------------------- traced code


@dataclass(frozen=True)
class Dist:
    """A distribution whose code is traced and pinned: its PyPI name and its import package."""

    name: str
    package: str


# In the order a request flows through them.
DISTS: tuple[Dist, ...] = (
    Dist("flask-socketio", "flask_socketio"),
    Dist("python-socketio", "socketio"),
    Dist("python-engineio", "engineio"),
    Dist("simple-websocket", "simple_websocket"),
    Dist("wsproto", "wsproto"),
    Dist("h11", "h11"),
    Dist("werkzeug", "werkzeug"),
    Dist("flask", "flask"),
)
DIST_NAMES = tuple(d.name for d in DISTS)
# Traced only in the scenarios of several processes joined by a message queue.
QUEUE_DISTS: tuple[Dist, ...] = (Dist("redis", "redis"),)
# Traced only in gevent mode (its pure-Python modules, dispel.modes.GEVENT_TRACED).
GEVENT_DISTS: tuple[Dist, ...] = (Dist("gevent", "gevent"),)
# Every distribution the lock pins.
PINNED_DIST_NAMES = DIST_NAMES + tuple(d.name for d in QUEUE_DISTS)

# Standard-library code the recorder traces (files, or folders ending in "/"), relative to Lib/.
STDLIB_TRACED = (
    "socketserver.py", "http/server.py", "http/client.py", "email/", "socket.py",
    "queue.py", "threading.py", "selectors.py",
)
# Standard-library files that may appear on a chain (CPython repository paths); the lock pins
# them, and every other standard-library file a recorded trace ran code from.
STDLIB_FILES = (
    "Lib/base64.py",
    "Lib/email/_policybase.py",
    "Lib/email/feedparser.py",
    "Lib/email/message.py",
    "Lib/email/parser.py",
    "Lib/hashlib.py",
    "Lib/http/client.py",
    "Lib/http/server.py",
    "Lib/queue.py",
    "Lib/selectors.py",
    "Lib/socket.py",
    "Lib/socketserver.py",
    "Lib/threading.py",
)

# --------------------------------------------------------------------------- threads

# A thread's logical role, from what it ran first (the target of Thread.run): the first
# needle found in that function's key names the role. Names in traces are role-N.
THREAD_ROLES: tuple[tuple[str, str], ...] = (
    ("PubSubManager._thread", "queue-listener"),
    ("process_request_thread", "request"),
    ("engineio.middleware:WSGIApp.__call__", "request"),  # gevent's server: a greenlet per connection
    ("Base._thread", "ws-reader"),
    ("<locals>.writer", "eio-writer"),
    ("_handle_event_internal", "handler"),
    ("run_handler", "handler"),
    ("_service_task", "eio-service"),
    ("sample_app", "server"),
    # a scenario file's app is served by dispel calling socketio.run itself
    ("SocketIO.run", "server"),
)
# The server's working threads by what their Python thread names contain (targets appear in
# thread names): each connection has a request thread, a reader and a writer; each event a handler.
PER_CONNECTION_THREADS = ("process_request_thread", "simple_websocket", "writer")
HANDLER_THREADS = ("_handle_event_internal", "run_handler")

# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    steps: tuple[str, ...]
    # Which client drives it: "python" (dispel.run.sample_client in a subprocess) or
    # "browser" (the official JavaScript client in headless Chromium).
    client: str = "python"
    # seconds the client waits after each frame (None: its default, which makes every
    # frame arrive in a read of its own); measuring scenarios send faster
    pace: float | None = None
    # recorded by `dispel record` without names and compared by `dispel check --rerecord`
    default: bool = True
    # the app's async mode: "threading", or "gevent" (recorded in a process gevent monkey-patches
    # before the app is imported, as a gunicorn gevent worker does; the sample app leaves it unset)
    async_mode: str = "threading"


def split_step(spec: str) -> tuple[str, str, int]:
    """A scenario step ``[WHO:]STEP[*COUNT]`` ("b:join*2": client b does join twice) -> (who, step, count); who defaults to "a"."""
    who, _, rest = spec.rpartition(":")
    step, _, count = rest.partition("*")
    return who or "a", step, int(count or 1)


def client_names(sc: Scenario) -> list[str]:
    """The clients a scenario's steps name, in the order of their first step."""
    return list(dict.fromkeys(split_step(spec)[0] for spec in sc.steps))


SCENARIOS = {
    "chat": Scenario(
        "chat",
        "One Python Socket.IO client over the websocket transport: connect, chat, join + broadcast, ack, disconnect.",
        ("connect", "chat", "join", "ack", "disconnect"),
    ),
    "rooms": Scenario(
        "rooms",
        "Three Python clients: a and b join room-1, c stays outside; b's join is broadcast to the room.",
        ("a:connect", "b:connect", "c:connect", "a:join", "b:join", "c:disconnect", "b:disconnect", "a:disconnect"),
    ),
    "upgrade": Scenario(
        "upgrade",
        "One Python client on Engine.IO's default transports: long-polling first, then the upgrade to websocket.",
        ("connect-polling", "chat", "disconnect"),
    ),
    "bench": Scenario(
        "bench",
        "The benchmark's workload: connect, 200 chat round trips, disconnect (client frames not paced).",
        ("connect", "chat*200", "disconnect"),
        pace=0.0,
        default=False,
    ),
    "scale": Scenario(
        "scale",
        "Twenty clients connected at once, 1,000 chat messages between them (50 each), then all disconnect.",
        tuple(f"c{i}:connect" for i in range(1, 21))
        + tuple(f"c{i}:chat*50" for i in range(1, 21))
        + tuple(f"c{i}:disconnect" for i in range(1, 21)),
        pace=0.002,
        default=False,
    ),
    "gevent": Scenario(
        "gevent",
        "The chat scenario's Python client and steps, the sample app in gevent mode (monkey-patched before its import, as a gunicorn gevent worker runs it).",
        ("connect", "chat", "join", "ack", "disconnect"),
        async_mode="gevent",
    ),
    # Repeatable because the browser talks through dispel.run.pacer (see there).
    "browser": Scenario(
        "browser",
        "The official Socket.IO JavaScript client in headless Chromium: connect (long-polling, then the upgrade), chat, join + broadcast, ack, disconnect.",
        ("connect", "chat", "join", "ack", "disconnect"),
        client="browser",
    ),
}
DEFAULT_SCENARIOS = tuple(sorted(name for name, sc in SCENARIOS.items() if sc.default))


@dataclass(frozen=True)
class Process:
    """A traced process of a scenario of several: its role (the trace file is
    traces/<scenario>.<role>.json), its kind: "server" (an app served as one of several servers
    joined by the message queue, like dispel.sample_app.cluster) or "emitter" (like dispel.sample_app.emitter,
    which has no Socket.IO server of its own), and the module it runs."""

    role: str
    kind: str
    module: str


@dataclass(frozen=True)
class ProcessScenario:
    """Several traced processes joined by a message queue (a Redis server the scenario starts
    and stops; it is not traced). Each step is "WHO:STEP[*COUNT]": WHO is a client (its
    server in ``clients``) doing one of dispel.run.sample_client's steps, or the emitter (``emit``).

    Read from a scenario file with [broker] and [processes] tables (``from_file``);
    dispel.run.multiprocess runs it from these values only."""

    name: str
    description: str
    processes: tuple[Process, ...]
    clients: tuple[tuple[str, str], ...]  # (client, role of the server it connects to)
    steps: tuple[str, ...]
    broker: str = "redis"
    default: bool = True
    redact: tuple[str, ...] = ()  # the file's redact = [...]: every process hides what matches

    def roles(self) -> tuple[str, ...]:
        return tuple(p.role for p in self.processes)

    def trace_names(self) -> tuple[str, ...]:
        """The trace files' stems, as load_traces keys them."""
        return tuple(f"{self.name}.{role}" for role in self.roles())


def _step_spec(step: scenario_values.Step) -> str:
    """A scenario file's step as the runner's "WHO:STEP[*COUNT]" (the trace's step mark)."""
    if step.process:
        return f"{step.process}:{step.do}"
    what = f"expect-{step.event}" if step.do == "expect" else step.do
    return f"{step.client}:{what}" + (f"*{step.count}" if step.count > 1 else "")


def from_file(sf: scenario_values.ScenarioFile, name: str) -> ProcessScenario:
    """A parsed scenario file of several processes -> the ProcessScenario ``name`` (its title is
    the description)."""
    if not sf.processes or sf.broker is None:
        raise DispelError(f"{sf.source}: not a scenario of several processes: it has no [processes] and [broker]")
    return ProcessScenario(
        name, sf.title,
        tuple(Process(p.role, p.kind, p.module) for p in sf.processes),
        tuple((c.name, c.process) for c in sf.clients),
        tuple(_step_spec(s) for s in sf.steps),
        broker=sf.broker.kind,
        redact=sf.redact,
    )


# The scenario files of several processes, beside the sample app.
PROCESS_SCENARIO_FILES = {"queue": Path(__file__).resolve().parent / "sample_app" / "queue.toml"}
PROCESS_SCENARIOS = {
    name: from_file(scenario_file.parse(path.read_text(encoding="utf-8"), f"scripts/dispel/sample_app/{path.name}"), name)
    for name, path in PROCESS_SCENARIO_FILES.items()
}


DEFAULT_PROCESS_SCENARIOS = tuple(sorted(name for name, sc in PROCESS_SCENARIOS.items() if sc.default))


def process_scenario(name: str) -> ProcessScenario:
    try:
        return PROCESS_SCENARIOS[name]
    except KeyError:
        raise DispelError(f"unknown scenario of several processes {name!r}; choose one of: {', '.join(sorted(PROCESS_SCENARIOS))}") from None


def scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        known = ", ".join(sorted(SCENARIOS))
        raise DispelError(f"unknown scenario {name!r}; choose one of: {known}") from None


# --------------------------------------------------------------------------- journeys


@dataclass(frozen=True)
class Journey:
    """A journey: its page's name and title, the scenario whose trace it is found in, how
    (``finder`` and ``wire`` name functions of dispel.chains.finders' FINDERS and dispel.chains.build' WIRES), and
    the other journeys its page shows beside it in content tabs."""

    name: str
    title: str
    scenario: str
    finder: str
    wire: str = ""
    # Where the same step runs differently by transport or by client: (this page's tab label,
    # ((label, journey), ...)).
    compared: tuple[str, tuple[tuple[str, str], ...]] | None = None
    # A journey of a scenario in another async mode (gevent): the threading journey its page's
    # side-by-side section aligns it with (dispel.review.modes).
    beside: str = ""


JOURNEYS: tuple[Journey, ...] = (
    Journey("run", "socketio.run(app): from the app to a listening socket", "chat", "run"),
    Journey(
        "handshake", "The WebSocket handshake: from the accepted connection to 101 Switching Protocols",
        "chat", "handshake", "handshake",
    ),
    Journey(
        "on", "@socketio.on('chat'): where the handler is stored, and how a frame reaches it", "chat", "on", "on",
        ("WebSocket (this page)", (("Long-polling (polling)", "polling"),)),
    ),
    Journey(
        "emit", "emit('reply'): from the handler to the frame on the socket", "chat", "emit", "sent",
        ("WebSocket (this page)", (("Long-polling (polling)", "polling"),)),
    ),
    Journey("ack", "An acknowledgement: from the event with an ack id to the ACK packet written back", "chat", "ack", "sent"),
    Journey(
        "broadcast", "join_room and emit(to=room): one emit fanned out to every client in the room", "rooms", "broadcast", "sent"
    ),
    Journey(
        "polling", "Long-polling: the GET that waits, the POST that carries packets, the payload joined by \\x1e",
        "browser", "polling", "polling",
        ("Long-polling (this page)", (("WebSocket, client to server (on)", "on"), ("WebSocket, server to client (emit)", "emit"))),
    ),
    Journey(
        "upgrade", "Long-polling to WebSocket: the probe, the NOOP, the UPGRADE packet, the writer taking over",
        "browser", "upgrade", "sent",
        ("Chromium, official client (this page)", (("Python client (upgrade-python)", "upgrade-python"),)),
    ),
    Journey(
        "upgrade-python", "The same upgrade under the Python client, which does not poll while it probes",
        "upgrade", "upgrade", "sent",
        ("Python client (this page)", (("Chromium, official client (upgrade)", "upgrade"),)),
    ),
    Journey(
        "emit-external", "An emit from a process with no server: PUBLISH, Redis, another server's listener, the frame",
        "queue", "emit-external", "queue",
    ),
    Journey(
        "broadcast-across-servers", "emit(to=room) on one of two servers: its own client's frame, and the other server's through Redis",
        "queue", "across-servers", "queue",
    ),
    Journey(
        "disconnect", "The client leaves: DISCONNECT, the handler and the rooms, CLOSE, the close frame",
        "chat", "disconnect", "disconnect",
    ),
)
# The sample app in gevent mode: the chat scenario's journeys found the same way, each set beside its threading one.
GEVENT_JOURNEYS: tuple[Journey, ...] = (
    Journey("gevent-handshake", "The handshake in gevent mode: from the hub's accept to 101 Switching Protocols, on greenlets",
            "gevent", "handshake", "handshake", beside="handshake"),
    Journey("gevent-on", "@socketio.on('chat') in gevent mode: the frame read on one greenlet, the handler run on another",
            "gevent", "on", "on", beside="on"),
    Journey("gevent-emit", "emit('reply') in gevent mode: from the handler's greenlet through the queue to the writer's",
            "gevent", "emit", "sent", beside="emit"),
    Journey("gevent-ack", "An acknowledgement in gevent mode: the ACK packet written back by the writer's greenlet",
            "gevent", "ack", "sent", beside="ack"),
    Journey("gevent-disconnect", "The client leaves, in gevent mode: DISCONNECT, the handler, CLOSE, the close frame",
            "gevent", "disconnect", "disconnect", beside="disconnect"),
)
JOURNEYS += GEVENT_JOURNEYS
JOURNEY_NAMES = tuple(j.name for j in JOURNEYS)


def journey(name: str) -> Journey:
    for j in JOURNEYS:
        if j.name == name:
            return j
    raise DispelError(f"unknown journey {name!r}; choose from: {', '.join(JOURNEY_NAMES)}")

# --------------------------------------------------------------------------- where each layer is parsed and encoded


@dataclass(frozen=True)
class Codec:
    """A library function that parses (``received``) or encodes (``sent``) one protocol layer.
    A journey page's layer table lists the hops of its chain that ran one of these (dispel.aids)."""

    layer: str
    direction: str  # "received" (parsed from bytes that came in) or "sent" (encoded into bytes that go out)
    key: str  # module:qualname (a Func.key without the @line of an overloaded name)
    what: str  # what it does to that layer, in a few words


RECEIVED, SENT = "received", "sent"
LAYERS = ("HTTP", "WebSocket frame", "Engine.IO packet", "Socket.IO packet", "Redis (RESP)")
CODECS: tuple[Codec, ...] = (
    Codec("HTTP", RECEIVED, "http.server:BaseHTTPRequestHandler.parse_request", "the request line, then the headers"),
    Codec("HTTP", RECEIVED, "http.client:parse_headers", "the header lines, by the standard library's `email` parser"),
    Codec("HTTP", RECEIVED, "wsproto.handshake:H11Handshake._process_connection_request", "the upgrade request's WebSocket headers read and checked"),
    Codec("HTTP", SENT, "wsproto.utilities:generate_accept_token", "`Sec-WebSocket-Accept` computed from the key"),
    Codec("HTTP", SENT, "wsproto.handshake:H11Handshake._accept", "the 101 response's headers"),
    Codec("HTTP", SENT, "h11._connection:Connection.send", "the response turned into bytes"),
    Codec("HTTP", SENT, "werkzeug.serving:WSGIRequestHandler.run_wsgi.<locals>.write", "the status line and headers, then the body"),
    Codec("WebSocket frame", RECEIVED, "wsproto.frame_protocol:FrameDecoder.process_buffer", "the frame header, and the payload unmasked"),
    Codec("WebSocket frame", RECEIVED, "wsproto.extensions:PerMessageDeflate.frame_inbound_payload_data", "a compressed payload inflated (permessage-deflate)"),
    Codec("WebSocket frame", RECEIVED, "wsproto.frame_protocol:MessageDecoder.process_frame", "the frames of a message joined, text decoded as UTF-8"),
    Codec("WebSocket frame", SENT, "wsproto.frame_protocol:FrameProtocol._serialize_frame", "the frame header and payload"),
    Codec("Engine.IO packet", RECEIVED, "engineio.payload:Payload.decode", "a long-polling body split into packets"),
    Codec("Engine.IO packet", RECEIVED, "engineio.packet:Packet.decode", "the packet type, then the data"),
    Codec("Engine.IO packet", SENT, "engineio.packet:Packet.encode", "the packet type, then the data"),
    Codec("Engine.IO packet", SENT, "engineio.payload:Payload.encode", "packets joined into one long-polling body"),
    Codec("Socket.IO packet", RECEIVED, "socketio.packet:Packet.decode", "type, namespace, ack id, then JSON"),
    Codec("Socket.IO packet", RECEIVED, "socketio.server:Server._handle_eio_message", "makes the packet from the text (`packet_class(encoded_packet=…)`)"),
    Codec("Socket.IO packet", SENT, "socketio.packet:Packet.encode", "type, namespace, ack id, then JSON"),
    Codec("Redis (RESP)", RECEIVED, "redis._parsers.resp3:_RESP3Parser._read_response", "a reply read from the Redis connection"),
    Codec("Redis (RESP)", SENT, "redis.connection:PythonRespSerializer.pack", "a command, such as PUBLISH, in RESP"),
)
