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
    client = "a"                     # may be left out when there is one client (and on http
    do = "connect"                   # and sleep, which need no connection: the first client)

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
own server, needing no connect (without ``client``, the file's first client sends it); ``do = "connect"`` with ``refused = "message"`` expects the connect handler's
ConnectionRefusedError; ``do = "disconnect"`` with ``by = "server"`` waits for the app's
disconnect(); ``args = [...]`` emits several arguments; ``[clients.a.replies]`` maps an event the
server asks with (socketio.call, a callback) to the value the client acks it with.

Several processes joined by a message queue (scripts/dispel/sample_app/queue.toml) replace ``[app]``
by a ``[broker]`` and ``[processes.<role>]`` tables; each client names the server process it
connects to, and a step names a client or an emitter process::

    [broker]
    kind = "redis"                   # a Redis server the run starts and stops (not traced)

    [processes.server-a]
    import = "dispel.sample_app.cluster"    # a module whose main(port, message_queue) serves
    kind = "server"

    [processes.emitter]
    import = "dispel.sample_app.emitter"    # a module whose main(message_queue) emits
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

from .scenario_values import (
    ASYNC_MODES,
    BROKERS,
    DEFAULT_STEP_TIMEOUT,
    DEFAULT_TIMEOUT,
    DISCONNECT_BY,
    HTTP_METHODS,
    IMPORT_RE,
    MODULE_RE,
    NAME_RE,
    PROCESS_EVENTS,
    PROCESS_KINDS,
    PROCESS_ROOM,
    STEP_KINDS,
    TRANSPORTS,
    AppSpec,
    BrokerSpec,
    ClientSpec,
    ProcessSpec,
    ScenarioError,
    ScenarioFile,
    Step,
    decode_bytes,
)

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
    if not IMPORT_RE.match(target):
        raise _err(source, "[app]", f"import = {target!r} must be module:attribute, like \"app:socketio\"")
    module, _, attribute = target.partition(":")
    factory = raw.get("factory", False)
    if not isinstance(factory, bool):
        raise _err(source, "[app]", f"factory must be true or false, not {factory!r}")
    flask = raw.get("flask", "")
    if flask and (not isinstance(flask, str) or not IMPORT_RE.match(flask)):
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
        if not NAME_RE.match(name):
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
# steps that need no connection: without ``client``, the file's first client runs them
_ANY_CLIENT = ("http", "sleep")


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
            if len(names) != 1 and do not in _ANY_CLIENT:
                raise _err(source, where, f"{do}: which client? give client = one of: {', '.join(names)}")
            client = names[0]  # one client, or a step that needs no connection: the file's first
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
        if not MODULE_RE.match(module):
            raise _err(source, where, f"import = {module!r} must be a module, like \"dispel.sample_app.cluster\"")
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
