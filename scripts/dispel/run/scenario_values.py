"""A scenario file's frozen values (pure): the app, clients, steps, broker and processes it names, the format's constants, and the value forms a file may use (bytes as hex/base64, environment references)."""
from __future__ import annotations

import re
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
MODULE_RE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
DEFAULT_STEP_TIMEOUT = 10.0
DEFAULT_TIMEOUT = 60.0
IMPORT_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")


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
