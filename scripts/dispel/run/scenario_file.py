"""Scenario files: a TOML text (read with the standard library's tomllib) -> frozen values.

Pure: no IO, no import of the app. ``parse(text, source)`` returns a ``ScenarioFile`` or
raises ``ScenarioError`` with one line that names the place: the TOML's line and column for
a syntax error, the table or the step (``steps[3] (emit 'chat')``) for a wrong value.

A file holds the top-level tables ``SECTIONS`` names (name -> required), each read by its
parser in ``parse``. A later format adds a table (as [broker] and [processes] were added) with
a field with a default in ``ScenarioFile``, an entry in ``SECTIONS`` and its parser;
files written for an earlier version stay valid. An unknown table is an error naming the known
ones, so a typo is never silently ignored.

Example (the README has the complete one)::

    title = "My chat"
    timeout = 30                     # the whole run's deadline, seconds
    redact = ["card-[0-9]{4}"]       # traced values matching one become <redacted>

    [app]
    import = "app:socketio"          # module:attribute, a SocketIO object or a factory
    # factory = true                 # call the attribute (no arguments) to get the SocketIO
    # async_mode = "gevent"          # when the app leaves it unset: "threading" (default) or "gevent"

    [clients.a]
    transport = "websocket"          # or "polling"
    namespace = "/"                  # or namespaces = ["/", "/chat"]
    headers = { "X-Team" = "blue" }
    query = { token = "abc" }

    [[steps]]
    client = "a"                     # may be left out when there is one client
    do = "connect"

    [[steps]]
    do = "emit"
    event = "chat"
    data = "hello"
    ack = true                       # wait for the handler's return value
    timeout = 5                      # every step has a deadline (default 10 s)

    [[steps]]
    do = "expect"
    event = "reply"
    count = 1
    # data = { head = { bytes = "hex:8950" } }   # also check what arrived (bytes as a one-key table)

For real apps: ``do = "http"`` (method, path, json/form/body, headers, status) requests the app's
own server; ``do = "connect"`` with ``refused = "message"`` expects the connect handler's
ConnectionRefusedError; ``do = "disconnect"`` with ``by = "server"`` waits for the app's
disconnect(); ``args = [...]`` emits several arguments; ``[clients.a.replies]`` maps an event the
server asks with (socketio.call, a callback) to the value the client acks it with.

Several processes joined by a message queue (scripts/sample_app/queue.toml) replace ``[app]``
by a ``[broker]`` and ``[processes.<role>]`` tables; each client names the server process it
connects to, and a step names a client or an emitter process::

    [broker]
    kind = "redis"                   # a Redis server the run starts and stops (not traced)

    [processes.server-a]
    import = "sample_app.cluster"    # a module whose main(port, message_queue) serves
    kind = "server"

    [processes.emitter]
    import = "sample_app.emitter"    # a module whose main(message_queue) emits
    kind = "emitter"

    [clients.1]
    process = "server-a"

    [[steps]]
    process = "emitter"              # the emitter runs its main(message_queue)
    do = "emit"

A client of several processes is dispel.run.sample_client (websocket, namespace "/"): its steps are
connect, join (the room ``PROCESS_ROOM``), expect (one of ``PROCESS_EVENTS``, with a count)
and disconnect.
"""
from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass

from ..model import DispelError

STEP_KINDS = ("connect", "emit", "expect", "join", "leave", "sleep", "disconnect", "http")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
DISCONNECT_BY = ("client", "server")
# Bytes in TOML (which has none): a table of the one key ``bytes`` whose string starts with
# ``hex:`` or ``base64:``, anywhere a value is sent or compared: data = { bytes = "hex:89504e47" }.
BYTES_KEY = "bytes"
BYTES_PREFIXES = ("hex:", "base64:")
# A secret the replay reads from its environment (as `dispel report --live --save-scenario` writes
# one): a table of the one key ``env`` naming the variable, anywhere a value is sent or in auth:
# auth = { token = { env = "DISPEL_SECRET_TOKEN" } }. The file holds the name, never the value.
ENV_KEY = "env"
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# "upgrade": Engine.IO's default, long-polling first, then the upgrade to WebSocket (a browser's way)
TRANSPORTS = ("websocket", "polling", "upgrade")
BROKERS = ("redis",)
PROCESS_KINDS = ("server", "emitter")
# What dispel.run.sample_client (the client of a scenario of several processes) can do: the events it
# listens to, and the room its join step joins (tests/test_scenario_file.py checks both).
PROCESS_EVENTS = ("welcome", "reply", "joined", "news")
PROCESS_ROOM = "room-1"
_MODULE_RE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
DEFAULT_STEP_TIMEOUT = 10.0
DEFAULT_TIMEOUT = 60.0
_IMPORT_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")


class ScenarioError(DispelError):
    """A scenario file that cannot be read: the message names the file and the place."""


# Flask-SocketIO's async modes a scenario file may name (eventlet: see dispel.modes.decide).
ASYNC_MODES = ("threading", "gevent", "eventlet", "gevent_uwsgi")


@dataclass(frozen=True)
class AppSpec:
    """The app to trace: ``module:attribute`` of a SocketIO object (or of a factory returning one)."""

    module: str
    attribute: str
    factory: bool = False
    # the Flask app, when the SocketIO object was made without one (init_app later): module:attribute
    flask: str = ""
    # Flask-SocketIO's async_mode when the app leaves it unset ("threading" or "gevent"; "" for threading)
    async_mode: str = ""

    @property
    def target(self) -> str:
        return f"{self.module}:{self.attribute}"


@dataclass(frozen=True)
class ClientSpec:
    name: str
    transport: str = "websocket"
    namespaces: tuple[str, ...] = ("/",)
    headers: tuple[tuple[str, str], ...] = ()
    query: tuple[tuple[str, str], ...] = ()
    auth: object = None
    process: str = ""  # with [processes]: the role of the server process it connects to
    # the client's answers to the server's events that ask for an ack (socketio.call, emit with
    # a callback): event -> the value it acks with (bytes allowed); others are acked with nothing
    replies: tuple[tuple[str, object], ...] = ()

    def spec(self) -> dict:
        """What the client process (dispel.run.file_client) is started with (JSON)."""
        return {"transport": self.transport, "namespaces": list(self.namespaces), "headers": dict(self.headers),
                "query": list(self.query), "auth": self.auth, "replies": {k: to_jsonable(v) for k, v in self.replies}}


@dataclass(frozen=True)
class BrokerSpec:
    """The message queue joining several processes: a server the run starts and stops."""

    kind: str = "redis"


@dataclass(frozen=True)
class ProcessSpec:
    """One traced process: its role (traces/<scenario>.<role>.json), its kind (server|emitter)
    and the module it runs (``main(port, message_queue)`` for a server, ``main(message_queue)``
    for an emitter)."""

    role: str
    kind: str
    module: str


@dataclass(frozen=True)
class Step:
    """One step of one client. ``data`` is any TOML value (JSON-like); ``args`` several arguments."""

    index: int  # 1-based, as messages name it
    do: str
    client: str
    timeout: float = DEFAULT_STEP_TIMEOUT
    event: str = ""
    data: object = None
    has_data: bool = False
    ack: bool = False
    namespace: str = ""  # empty: the client's first namespace
    count: int = 1  # expect: how many of the event must have arrived (counting from this step)
    seconds: float = 0.0  # sleep
    process: str = ""  # with [processes]: the emitter process whose step it is (client is then "")
    args: tuple = ()  # emit: several arguments (args = [...]); expect: the arguments to compare
    has_args: bool = False
    refused: object = None  # connect: the refusal expected (a message, or True: any); None: none
    by: str = "client"  # disconnect: who ends it ("server": the step waits for the app's disconnect())
    method: str = ""  # http
    path: str = ""
    body_kind: str = ""  # http: "", "json", "form" or "raw"
    body: object = None
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def connects(self) -> bool:
        """Does the client hold a connection after this step?"""
        return self.do == "connect" and self.refused is None

    @property
    def disconnects(self) -> bool:
        return self.do == "disconnect"

    @property
    def label(self) -> str:
        """How messages and the trace's step marks name it: ``steps[3] (emit 'chat')``."""
        what = f"{self.do} {self.event!r}" if self.event else self.do
        if self.do == "http":
            what = f"http {self.method} {self.path}"
        elif self.refused is not None:
            what = "connect, refused"
        elif self.do == "disconnect" and self.by == "server":
            what = "disconnect by the server"
        who = f"process {self.process}" if self.process else f"client {self.client}"
        return f"steps[{self.index}] ({what}, {who})"

    @property
    def mark(self) -> str:
        """The step's name in the trace: ``3-a-emit-chat``."""
        parts = [str(self.index), self.client, self.do] + ([self.event] if self.event else [])
        return "-".join(parts)

    def to_json(self) -> dict:
        """JSON for the client process: bytes written as TOML's ``{ bytes = "base64:..." }``."""
        out = {
            "index": self.index, "do": self.do, "client": self.client, "timeout": self.timeout, "event": self.event,
            "data": to_jsonable(self.data), "has_data": self.has_data, "ack": self.ack, "namespace": self.namespace,
            "count": self.count, "seconds": self.seconds,
        }
        extra = {
            "args": to_jsonable(list(self.args)), "has_args": self.has_args, "refused": self.refused, "by": self.by,
            "method": self.method, "path": self.path, "body_kind": self.body_kind, "body": to_jsonable(self.body),
            "status": self.status, "headers": [list(h) for h in self.headers],
        }
        defaults = {k: f.default for k, f in Step.__dataclass_fields__.items() if k in extra}
        defaults["args"], defaults["headers"] = [], []
        out.update({k: v for k, v in extra.items() if v != defaults[k]})  # a step of an older kind reads as before
        return out

    @staticmethod
    def from_json(d: Mapping) -> Step:
        d = dict(d)
        for key in ("data", "body"):
            if key in d:
                d[key] = from_jsonable(d[key])
        if "args" in d:
            d["args"] = tuple(from_jsonable(a) for a in d["args"])
        if "headers" in d:
            d["headers"] = tuple(tuple(h) for h in d["headers"])
        return Step(**{k: d[k] for k in Step.__dataclass_fields__ if k in d})


@dataclass(frozen=True)
class ScenarioFile:
    source: str
    app: AppSpec | None  # None when the file has [processes] instead
    clients: tuple[ClientSpec, ...]
    steps: tuple[Step, ...]
    title: str = ""
    timeout: float = DEFAULT_TIMEOUT
    broker: BrokerSpec | None = None
    processes: tuple[ProcessSpec, ...] = ()
    # redact = ["REGEX", ...]: traced values matching one become <redacted> (as `--redact`)
    redact: tuple[str, ...] = ()

    def client(self, name: str) -> ClientSpec:
        return next(c for c in self.clients if c.name == name)


# --------------------------------------------------------------------------- bytes


@dataclass(frozen=True)
class EnvRef:
    """``{ env = "NAME" }``: a value the replay reads from the environment variable NAME (resolve_env)."""

    name: str


def decode_bytes(value: object) -> object:
    """A TOML value with its ``{ bytes = "hex:..." }`` / ``{ bytes = "base64:..." }`` tables made
    bytes and its ``{ env = "NAME" }`` tables EnvRefs (at any depth); ValueError says what is wrong with one."""
    import base64
    import binascii

    if isinstance(value, dict) and set(value) == {ENV_KEY}:
        name = value[ENV_KEY]
        if not isinstance(name, str) or not _ENV_NAME_RE.match(name):
            raise ValueError(f"env = {name!r} must name an environment variable, like {{ env = \"APP_TOKEN\" }}")
        return EnvRef(name)
    if isinstance(value, dict):
        if set(value) == {BYTES_KEY} and isinstance(value[BYTES_KEY], str):
            text = value[BYTES_KEY]
            if text.startswith("hex:"):
                try:
                    return bytes.fromhex(text[4:])
                except ValueError:
                    raise ValueError(f"bytes = {text!r}: after 'hex:' come pairs of hex digits, like \"hex:00ff\"") from None
            if text.startswith("base64:"):
                try:
                    return base64.b64decode(text[7:], validate=True)
                except binascii.Error:
                    raise ValueError(f"bytes = {text!r}: after 'base64:' comes base64 text, like \"base64:AP8=\"") from None
            raise ValueError(f"bytes = {text!r} must start with 'hex:' or 'base64:', like {{ bytes = \"hex:00ff\" }}")
        return {k: decode_bytes(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_bytes(v) for v in value]
    return value


def to_jsonable(value: object) -> object:
    """``value`` as JSON can carry it: bytes become ``{"bytes": "base64:..."}`` (decode_bytes reads them back)."""
    import base64

    if isinstance(value, (bytes, bytearray)):
        return {BYTES_KEY: "base64:" + base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, EnvRef):
        return {ENV_KEY: value.name}
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


from_jsonable = decode_bytes


def resolve_env(value: object, environ: Mapping[str, str]) -> object:
    """``value`` with each EnvRef replaced by its variable's value in ``environ``; a variable not
    set is a DispelError naming it."""
    if isinstance(value, EnvRef):
        if value.name not in environ:
            raise DispelError(f"the environment variable {value.name} is not set: the scenario reads a secret from it; "
                              f"export {value.name}=... before running it")
        return environ[value.name]
    if isinstance(value, dict):
        return {k: resolve_env(v, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env(v, environ) for v in value]
    if isinstance(value, tuple):
        return tuple(resolve_env(v, environ) for v in value)
    return value


def env_names(sf: ScenarioFile) -> list[str]:
    """The environment variables a scenario file's values read (``{ env = "NAME" }``), sorted."""
    found: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, EnvRef):
            found.add(value.name)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    for c in sf.clients:
        walk(decode_bytes(c.auth))
        walk([v for _, v in c.replies])
    for st in sf.steps:
        walk([st.data, list(st.args), st.body])
    return sorted(found)


# --------------------------------------------------------------------------- helpers


def _err(source: str, where: str, message: str) -> ScenarioError:
    return ScenarioError(f"{source}: {where}: {message}")


def _take(table: Mapping, allowed: tuple[str, ...], source: str, where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise _err(source, where, f"unknown key {unknown[0]!r}; allowed: {', '.join(allowed)}")


def _string(table: Mapping, key: str, source: str, where: str, default: str | None = None) -> str:
    if key not in table:
        if default is None:
            raise _err(source, where, f"missing {key!r}")
        return default
    value = table[key]
    if not isinstance(value, str) or not value:
        raise _err(source, where, f"{key!r} must be a non-empty string, not {value!r}")
    return value


def _number(table: Mapping, key: str, source: str, where: str, default: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise _err(source, where, f"{key!r} must be a positive number of seconds, not {value!r}")
    return float(value)


def _count(table: Mapping, source: str, where: str) -> int:
    count = table.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise _err(source, where, f"count must be a whole number >= 1, not {count!r}")
    return count


def _string_table(table: Mapping, key: str, source: str, where: str) -> tuple[tuple[str, str], ...]:
    value = table.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value.values()):
        raise _err(source, where, f"{key!r} must be a table of strings, like {key} = {{ name = \"value\" }}")
    return tuple(sorted((k, str(v)) for k, v in value.items()))


def _value(value: object, source: str, where: str) -> object:
    """A TOML value to send or compare, its bytes tables made bytes."""
    try:
        return decode_bytes(value)
    except ValueError as exc:
        raise _err(source, where, str(exc)) from None


def _namespace(value: object, source: str, where: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise _err(source, where, f"a namespace starts with '/', not {value!r}")
    return value


# --------------------------------------------------------------------------- sections


def _app(raw: object, source: str) -> AppSpec:
    if isinstance(raw, str):
        raw = {"import": raw}
    if not isinstance(raw, dict):
        raise _err(source, "[app]", 'must be a table, like [app] import = "app:socketio"')
    _take(raw, ("import", "factory", "flask", "async_mode"), source, "[app]")
    target = _string(raw, "import", source, "[app]")
    if not _IMPORT_RE.match(target):
        raise _err(source, "[app]", f"import = {target!r} must be module:attribute, like \"app:socketio\"")
    module, _, attribute = target.partition(":")
    factory = raw.get("factory", False)
    if not isinstance(factory, bool):
        raise _err(source, "[app]", f"factory must be true or false, not {factory!r}")
    flask = raw.get("flask", "")
    if flask and (not isinstance(flask, str) or not _IMPORT_RE.match(flask)):
        raise _err(source, "[app]", f"flask = {flask!r} must be module:attribute of the Flask app")
    mode = raw.get("async_mode", "")
    if not isinstance(mode, str) or mode not in ("", *ASYNC_MODES):
        raise _err(source, "[app]", f"async_mode = {mode!r} is not one of: {', '.join(repr(m) for m in ASYNC_MODES)}")
    return AppSpec(module, attribute, factory, flask, mode)


def _named_tables(raw: object, source: str, section: str, naming: str, example: str):
    """(name, table, where) of each ``[section.NAME]`` table, the names and tables checked."""
    if not isinstance(raw, dict) or not raw:
        raise _err(source, f"[{section}]", f"must hold at least one {example}")
    for name, table in raw.items():
        where = f"[{section}.{name}]"
        if not _NAME_RE.match(name):
            raise _err(source, where, f"a {naming} is letters, digits, '-' or '_'")
        if not isinstance(table, dict):
            raise _err(source, where, "must be a table")
        yield name, table, where


def _clients(raw: object, source: str, processes: tuple[ProcessSpec, ...] = ()) -> tuple[ClientSpec, ...]:
    out = []
    for name, table, where in _named_tables(raw, source, "clients", "client's name", 'client, like [clients.a] transport = "websocket"'):
        if processes:
            out.append(_process_client(name, table, source, where, processes))
            continue
        _take(table, ("transport", "namespace", "namespaces", "headers", "query", "auth", "replies"), source, where)
        transport = _string(table, "transport", source, where, "websocket")
        if transport not in TRANSPORTS:
            raise _err(source, where, f"transport {transport!r} is not one of: {', '.join(TRANSPORTS)}")
        if "namespace" in table and "namespaces" in table:
            raise _err(source, where, "give namespace or namespaces, not both")
        if "namespaces" in table:
            spaces = table["namespaces"]
            if not isinstance(spaces, list) or not spaces:
                raise _err(source, where, "namespaces must be a non-empty list, like [\"/\", \"/chat\"]")
            namespaces = tuple(_namespace(s, source, where) for s in spaces)
        else:
            namespaces = (_namespace(table.get("namespace", "/"), source, where),)
        replies = table.get("replies", {})
        if not isinstance(replies, dict):
            raise _err(source, where, 'replies must be a table of event = value, like replies = { ask = "yes" }')
        out.append(ClientSpec(
            name, transport, namespaces, _string_table(table, "headers", source, where),
            _string_table(table, "query", source, where), table.get("auth"),
            replies=tuple(sorted((event, _value(v, source, f"{where} replies.{event}")) for event, v in replies.items())),
        ))
    return tuple(out)


def _process_client(name: str, table: Mapping, source: str, where: str, processes: tuple[ProcessSpec, ...]) -> ClientSpec:
    _take(table, ("process",), source, where)
    servers = [p.role for p in processes if p.kind == "server"]
    process = _string(table, "process", source, where)
    if process not in servers:
        raise _err(source, where, f"process = {process!r} is not a server process; the file's servers: {', '.join(servers)}")
    return ClientSpec(name, process=process)


_STEP_KEYS = {
    "connect": ("refused", "timeout"),
    "emit": ("event", "data", "args", "ack", "namespace", "timeout"),
    "expect": ("event", "count", "data", "args", "namespace", "timeout"),
    "join": ("event", "data", "room", "ack", "namespace", "timeout"),
    "leave": ("event", "data", "room", "ack", "namespace", "timeout"),
    "sleep": ("seconds", "timeout"),
    "disconnect": ("by", "timeout"),
    "http": ("method", "path", "json", "form", "body", "status", "headers", "timeout"),
}
_HTTP_BODIES = ("json", "form", "body")


def _steps(raw: object, source: str, clients: tuple[ClientSpec, ...], processes: tuple[ProcessSpec, ...] = ()) -> tuple[Step, ...]:
    if not isinstance(raw, list) or not raw:
        raise _err(source, "[[steps]]", "must hold at least one step, like [[steps]] do = \"connect\"")
    names = [c.name for c in clients]
    out: list[Step] = []
    for i, table in enumerate(raw, 1):
        if not isinstance(table, dict):
            raise _err(source, f"steps[{i}]", "must be a table")
        if processes:
            out.append(_process_step(i, table, source, names, processes))
            continue
        do = table.get("do")
        where = f"steps[{i}]"
        if do not in STEP_KINDS:
            raise _err(source, where, f"do = {do!r} is not one of: {', '.join(STEP_KINDS)}")
        client = table.get("client")
        if client is None:
            if len(names) != 1:
                raise _err(source, where, f"{do}: which client? give client = one of: {', '.join(names)}")
            client = names[0]
        if client not in names:
            raise _err(source, where, f"{do}: unknown client {client!r}; the file's clients: {', '.join(names)}")
        where = f"steps[{i}] ({do}, client {client})"
        _take(table, ("do", "client", *_STEP_KEYS[do]), source, where)
        timeout = _number(table, "timeout", source, where, DEFAULT_STEP_TIMEOUT)
        event = ""
        data: object = None
        has_data = False
        if do in ("emit", "expect"):
            event = _string(table, "event", source, where)
        elif do in ("join", "leave"):
            # through the app's own event: emit(event, room)
            event = _string(table, "event", source, where, do)
            if "room" in table and "data" in table:
                raise _err(source, where, "give room or data, not both")
            if "room" not in table and "data" not in table:
                raise _err(source, where, f"missing 'room' (the data the app's {event!r} handler receives)")
        if "data" in table or "room" in table:
            data, has_data = _value(table.get("data", table.get("room")), source, where), True
        args: tuple = ()
        if "args" in table:
            if has_data:
                raise _err(source, where, "give data (one argument) or args (several), not both")
            if not isinstance(table["args"], list):
                raise _err(source, where, f"args must be a list of the arguments, like args = [\"a\", 1], not {table['args']!r}")
            args = tuple(_value(a, source, where) for a in table["args"])
        extra = _step_extra(do, table, source, where)
        ack = table.get("ack", False)
        if not isinstance(ack, bool):
            raise _err(source, where, f"ack must be true or false, not {ack!r}")
        namespace = table.get("namespace", "")
        if namespace:
            namespace = _namespace(namespace, source, where)
            if namespace not in clients[names.index(client)].namespaces:
                raise _err(source, where, f"client {client} does not connect to namespace {namespace!r}")
        count = _count(table, source, where)
        seconds = _number(table, "seconds", source, where, 1.0) if do == "sleep" else 0.0
        if do == "sleep" and seconds >= timeout:
            timeout = seconds + DEFAULT_STEP_TIMEOUT
        out.append(Step(i, do, client, timeout, event, data, has_data, ack, namespace, count, seconds,
                        args=args, has_args="args" in table, **extra))
    _check_order(out, source)
    return tuple(out)


def _step_extra(do: str, table: Mapping, source: str, where: str) -> dict:
    """The fields of a connect that expects a refusal, a disconnect by the server, an http request."""
    if do == "connect" and "refused" in table:
        refused = table["refused"]
        if not isinstance(refused, (str, bool)) or refused is False or refused == "":
            raise _err(source, where, f"refused must be the refusal's message (a string) or true (any message), not {refused!r}")
        return {"refused": refused}
    if do == "disconnect":
        by = table.get("by", "client")
        if by not in DISCONNECT_BY:
            raise _err(source, where, f"by = {by!r} is not one of: {', '.join(DISCONNECT_BY)} (\"server\": wait for the app's disconnect())")
        return {"by": by}
    if do != "http":
        return {}
    method = table.get("method", "GET")
    if method not in HTTP_METHODS:
        raise _err(source, where, f"method = {method!r} is not one of: {', '.join(HTTP_METHODS)}")
    path = _string(table, "path", source, where)
    if not path.startswith("/"):
        raise _err(source, where, f"path = {path!r} must start with '/', like \"/notify?room=r1\"")
    given = [k for k in _HTTP_BODIES if k in table]
    if len(given) > 1:
        raise _err(source, where, f"give one body: json, form or body, not {' and '.join(given)}")
    kind, body = "", None
    if given:
        key = given[0]
        body = _value(table[key], source, where)
        if key == "form" and (not isinstance(body, dict) or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in body.values())):
            raise _err(source, where, "form must be a table of strings, like form = { room = \"r1\" }")
        if key == "body" and not isinstance(body, (str, bytes)):
            raise _err(source, where, f"body must be a string or {{ bytes = \"hex:...\" }}, not {body!r}")
        kind = "raw" if key == "body" else key
        if method == "GET":
            raise _err(source, where, f"a GET sends no body: give method = \"POST\" (or another) with {key}")
    status = table.get("status", 200)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise _err(source, where, f"status must be an HTTP status code, like 200, not {status!r}")
    return {"method": method, "path": path, "body_kind": kind, "body": body, "status": status,
            "headers": _string_table(table, "headers", source, where)}


# with [processes]: what a client step may hold (dispel.run.sample_client's steps), and an emitter's
_PROCESS_STEP_KEYS = {"connect": (), "join": ("room",), "expect": ("event", "count"), "disconnect": ()}
_EMITTER_STEPS = ("emit",)


def _process_step(i: int, table: Mapping, source: str, names: list[str], processes: tuple[ProcessSpec, ...]) -> Step:
    """A step of a file with [processes]: a client's (connect, join, expect, disconnect) or an
    emitter process's (emit: it runs its module's main(message_queue))."""
    do = table.get("do")
    if "process" in table:
        emitters = [p.role for p in processes if p.kind == "emitter"]
        role = table["process"]
        if role not in emitters:
            raise _err(source, f"steps[{i}]", f"process = {role!r} is not an emitter process; the file's emitters: {', '.join(emitters) or 'none'}")
        where = f"steps[{i}] ({do}, process {role})"
        if "client" in table:
            raise _err(source, where, "give client or process, not both")
        if do not in _EMITTER_STEPS:
            raise _err(source, where, f"do = {do!r}: an emitter process's step is one of: {', '.join(_EMITTER_STEPS)}")
        _take(table, ("do", "process"), source, where)
        return Step(i, do, "", process=role)
    if do not in _PROCESS_STEP_KEYS:
        raise _err(source, f"steps[{i}]", f"do = {do!r}: a client's step of several processes is one of: {', '.join(_PROCESS_STEP_KEYS)}")
    client = table.get("client")
    if client is None and len(names) == 1:
        client = names[0]
    if client not in names:
        raise _err(source, f"steps[{i}]", f"{do}: give client = one of: {', '.join(names)} (or process = an emitter), not {client!r}")
    where = f"steps[{i}] ({do}, client {client})"
    _take(table, ("do", "client", *_PROCESS_STEP_KEYS[do]), source, where)
    event, data, has_data, count = "", None, False, 1
    if do == "join":
        room = _string(table, "room", source, where)
        if room != PROCESS_ROOM:
            raise _err(source, where, f"room = {room!r}: the client of several processes joins {PROCESS_ROOM!r} only")
        event, data, has_data = "join", room, True
    elif do == "expect":
        event = _string(table, "event", source, where)
        if event not in PROCESS_EVENTS:
            raise _err(source, where, f"event = {event!r}: the client of several processes listens to: {', '.join(PROCESS_EVENTS)}")
        count = _count(table, source, where)
    return Step(i, do, client, event=event, data=data, has_data=has_data, count=count)


def _check_order(steps: list[Step], source: str) -> None:
    """A client connects before anything else, and does nothing after it disconnects."""
    connected: dict[str, bool] = {}
    for s in steps:
        if s.process:
            continue
        state = connected.get(s.client)
        if s.do == "connect":
            if state:
                raise _err(source, s.label, "the client is already connected")
            connected[s.client] = s.connects
        elif s.do not in ("sleep", "http") and not state:
            raise _err(source, s.label, "the client is not connected: add a connect step before it")
        elif s.do == "disconnect":
            connected[s.client] = False


def _broker(raw: object, source: str) -> BrokerSpec:
    if not isinstance(raw, dict):
        raise _err(source, "[broker]", 'must be a table, like [broker] kind = "redis"')
    _take(raw, ("kind",), source, "[broker]")
    kind = _string(raw, "kind", source, "[broker]", "redis")
    if kind not in BROKERS:
        raise _err(source, "[broker]", f"kind = {kind!r} is not one of: {', '.join(BROKERS)}")
    return BrokerSpec(kind)


def _processes(raw: object, source: str) -> tuple[ProcessSpec, ...]:
    out = []
    for role, table, where in _named_tables(raw, source, "processes", "process's role", 'process, like [processes.server-a] import = "app" kind = "server"'):
        _take(table, ("import", "kind"), source, where)
        module = _string(table, "import", source, where)
        if not _MODULE_RE.match(module):
            raise _err(source, where, f"import = {module!r} must be a module, like \"sample_app.cluster\"")
        kind = _string(table, "kind", source, where, "server")
        if kind not in PROCESS_KINDS:
            raise _err(source, where, f"kind = {kind!r} is not one of: {', '.join(PROCESS_KINDS)}")
        out.append(ProcessSpec(role, kind, module))
    if not any(p.kind == "server" for p in out):
        raise _err(source, "[processes]", 'needs a server process for the clients, like [processes.server-a] kind = "server"')
    return tuple(out)


# The top-level tables: name -> required (each read by its parser in parse).
SECTIONS: dict[str, bool] = {
    "app": True,  # not with [processes]
    "clients": True,
    "steps": True,
    "broker": False,  # with [processes] only
    "processes": False,
}
_SCALARS = ("title", "timeout", "redact")


# --------------------------------------------------------------------------- parse


def _redact(raw: object, source: str) -> tuple[str, ...]:
    """``redact = ["REGEX", ...]``: each a valid regular expression."""
    if not isinstance(raw, list) or not all(isinstance(r, str) and r for r in raw):
        raise _err(source, "redact", 'must be a list of regular expressions, like redact = ["card-[0-9]{4}"]')
    for pattern in raw:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _err(source, "redact", f"{pattern!r} is not a valid regular expression ({exc}); fix it") from None
    return tuple(raw)


def _syntax_error(source: str, exc: tomllib.TOMLDecodeError, text: str = "") -> ScenarioError:
    # tomllib's message ends with "(at line L, column C)"; put the place first, as compilers do
    message = str(exc)
    m = re.search(r"\(at line (\d+), column (\d+)\)$", message)
    if m:
        return ScenarioError(f"{source}:{m[1]}:{m[2]}: not valid TOML: {message[:m.start()].strip()} (line {m[1]}, column {m[2]})")
    m = re.search(r"\(at end of document\)$", message)
    if m:
        last = max(1, len(text.splitlines()))
        return ScenarioError(f"{source}:{last}: not valid TOML: {message[:m.start()].strip()} (at the end of the file, line {last})")
    return ScenarioError(f"{source}: not valid TOML: {message}")


def parse(text: str, source: str = "scenario.toml") -> ScenarioFile:
    """A scenario file's text -> ScenarioFile; ScenarioError names the line/column or the step."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(source, exc, text) from None
    unknown = sorted(set(raw) - set(SECTIONS) - set(_SCALARS))
    if unknown:
        known = ", ".join([*SECTIONS, *_SCALARS])
        raise _err(source, repr(unknown[0]), f"unknown top-level key or table; known: {known}")
    several = "processes" in raw
    for name, required in SECTIONS.items():
        if required and name not in raw and not (several and name == "app"):
            example = {"app": '[app] import = "app:socketio"', "clients": '[clients.a] transport = "websocket"',
                       "steps": '[[steps]] do = "connect"'}.get(name, f"[{name}]")
            raise _err(source, f"[{name}]", f"missing; add it, like {example}")
    title = raw.get("title", "")
    if not isinstance(title, str):
        raise _err(source, "title", f"must be a string, not {title!r}")
    timeout = _number(raw, "timeout", source, "timeout", DEFAULT_TIMEOUT)
    redact = _redact(raw.get("redact", []), source)
    processes = _processes(raw["processes"], source) if several else ()
    broker = _broker(raw["broker"], source) if "broker" in raw else None
    if several and "app" in raw:
        raise _err(source, "[app]", "give [app] (one server) or [processes] (several), not both")
    if several and broker is None:
        raise _err(source, "[broker]", 'missing: several processes are joined by a message queue; add [broker] kind = "redis"')
    if broker is not None and not several:
        raise _err(source, "[broker]", "a broker joins several processes: add [processes.<role>] tables, or remove it")
    app = None if several else _app(raw["app"], source)
    clients = _clients(raw["clients"], source, processes)
    steps = _steps(raw["steps"], source, clients, processes)
    return ScenarioFile(source, app, clients, steps, title, timeout, broker, processes, redact)


def one_app(sf: ScenarioFile) -> ScenarioFile:
    """``sf`` if it has one app to serve; a file of several processes is recorded by `dispel record NAME`."""
    app_spec(sf)
    return sf


def app_spec(sf: ScenarioFile) -> AppSpec:
    """The one app ``sf`` serves (ScenarioError, as one_app, for a file of several processes)."""
    if sf.app is None:
        raise ScenarioError(f"{sf.source}: [processes]: a file of several processes is not run on its own yet; "
                            "it is recorded as a catalogued scenario (`dispel record queue`)")
    return sf.app
