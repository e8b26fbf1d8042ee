"""What the clients of a live recording did (`dispel report --live`), as frozen values: the
observations the recorder's console saw, in the order they happened, -> the clients, their
transports and events (the report's home page), and -> a scenario file that replays them with
dispel's own client (`--save-scenario`).

Pure: no IO. An observation is a dict (JSON as the recording child wrote it, bytes as
``{"bytes": "base64:..."}``): ``{"client": 1, "do": "open", "transport": "polling"}``,
``"upgrade"``, ``"connect"`` (namespace, auth), ``"emit"`` (namespace, event, args, ack),
``"disconnect"`` (namespace), ``"close"``; and, as client 0 (no Socket.IO client made it), a plain
HTTP request to the app: ``{"client": 0, "do": "http", "method": "POST", "path": "/api/x", "status": 201}``
(werkzeug's request line: no headers, no body).

A value under a secret-named key (values.SECRET_NAME: token, password, api_key ...) is written
to the scenario as ``{ env = "DISPEL_SECRET_<KEY>" }``, which the replay reads from its
environment (scenario_file.EnvRef): the saved file holds no secret.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..tracefiles.values import SECRET_NAME
from .scenario_values import BYTES_KEY, ENV_KEY, EnvRef, decode_bytes, to_jsonable

UPGRADE = "upgrade"  # the transport of a client that long-polled, then upgraded (scenario_file.TRANSPORTS)


@dataclass(frozen=True)
class Action:
    """One thing a client did: connect (a namespace, with its auth), emit, disconnect."""

    do: str
    namespace: str = "/"
    event: str = ""
    args: tuple = ()
    ack: bool = False
    auth: object = None


@dataclass(frozen=True)
class LiveClient:
    number: int
    transport: str  # "websocket", "polling" or UPGRADE
    actions: tuple[Action, ...] = ()
    closed: bool = False  # it disconnected before the recording stopped
    replies: tuple[tuple[str, tuple], ...] = ()  # event the server asked with -> what the client answered (the first time)

    @property
    def name(self) -> str:
        return f"c{self.number}"

    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(a.namespace for a in self.actions if a.do == "connect")) or ("/",)

    @property
    def auth(self) -> object:
        return next((a.auth for a in self.actions if a.do == "connect" and a.auth is not None), None)


@dataclass(frozen=True)
class Request:
    """A plain HTTP request to the app (not Engine.IO's), as werkzeug logged it."""

    method: str
    path: str
    status: int

    @property
    def text(self) -> str:
        return f"{self.method} {self.path} ({self.status})"


BODIED = ("POST", "PUT", "PATCH")  # requests that usually carry a body, which the live recording does not keep


@dataclass(frozen=True)
class Session:
    clients: tuple[LiveClient, ...]
    order: tuple[tuple[int, int], ...] = field(default=())  # (client number, index of its action), as they happened
    requests: tuple[Request, ...] = ()  # in order: client 0's entries in ``order`` index them


def session(observations: Iterable[Mapping]) -> Session:
    """The observations of a recording -> the Session (clients numbered as they connected)."""
    transports: dict[int, str] = {}
    actions: dict[int, list[Action]] = {}
    closed: set[int] = set()
    order: list[tuple[int, int]] = []
    replies: dict[int, dict[str, tuple]] = {}
    requests: list[Request] = []
    for o in observations:
        n = int(o["client"])
        do = o["do"]
        if n == 0 and do == "http":
            order.append((0, len(requests)))
            requests.append(Request(str(o.get("method", "GET")), str(o.get("path", "/")), int(o.get("status", 200))))
        elif do == "open":
            transports[n] = o.get("transport", "websocket")
            actions.setdefault(n, [])
        elif n not in transports:
            continue  # a client seen before its OPEN (the recording started in its middle)
        elif do == "upgrade":
            transports[n] = UPGRADE
        elif do == "reply":  # the client's answer to the server's call: the replay's client answers the same
            replies.setdefault(n, {}).setdefault(o.get("event", ""), tuple(decode_bytes(x) for x in o.get("args") or ()))
        elif do in ("connect", "emit", "disconnect", "close"):
            if do == "close":
                closed.add(n)
            a = Action(do, o.get("namespace") or "/", o.get("event", ""), tuple(decode_bytes(x) for x in o.get("args") or ()),
                       bool(o.get("ack")), decode_bytes(o.get("auth")))
            order.append((n, len(actions[n])))
            actions[n].append(a)
    clients = tuple(LiveClient(n, transports[n], tuple(actions[n]), n in closed, tuple(sorted(replies.get(n, {}).items())))
                    for n in sorted(transports))
    return Session(clients, tuple(order), tuple(requests))


def transport_text(transport: str) -> str:
    return "long-polling, then the upgrade to WebSocket" if transport == UPGRADE else \
        "long-polling only" if transport == "polling" else "WebSocket"


def action_text(a: Action) -> str:
    """``emit 'chat' on /`` (event names and namespaces only: the home page shows no payload)."""
    if a.do == "emit":
        return f"emit {a.event!r}" + (" with an ack" if a.ack else "") + (f" on {a.namespace}" if a.namespace != "/" else "")
    return f"{a.do} {a.namespace}"


def home_lines(s: Session) -> list[str]:
    """The home page's list of what the clients did: one item per client, its transport and its events in order."""
    out = []
    for c in s.clients:
        done = ", ".join(action_text(a) for a in c.actions if a.do != "close") or "nothing after the handshake"
        end = "; it disconnected" if c.closed else "; it was still connected when the recording stopped"
        out.append(f"client {c.number} ({transport_text(c.transport)}): {done}{end}")
    if s.requests:
        out.append("HTTP requests to the app, in order: " + ", ".join(r.text for r in s.requests))
    return out


# --------------------------------------------------------------------------- Socket.IO packets

CONNECT, DISCONNECT, EVENT, ACK, CONNECT_ERROR, BINARY_EVENT, BINARY_ACK = range(7)


@dataclass(frozen=True)
class Packet:
    """A Socket.IO packet as a client sent it (protocol 5): parsed here, not by python-socketio,
    whose code the recorder traces."""

    type: int
    namespace: str = "/"
    data: object = None
    id: int | None = None
    attachments: int = 0


def parse_packet(text: str) -> Packet:
    """``2/chat,7["ev",1]`` -> Packet(EVENT, "/chat", ["ev", 1], 7); ValueError if it is not one."""
    if not text or not text[0].isdigit():
        raise ValueError(f"not a Socket.IO packet: {text[:40]!r}")
    kind, i, attachments = int(text[0]), 1, 0
    if kind in (BINARY_EVENT, BINARY_ACK):
        j = text.index("-", i)
        attachments, i = int(text[i:j]), j + 1
    namespace = "/"
    if text[i:i + 1] == "/":
        j = text.find(",", i)
        namespace, i = (text[i:], len(text)) if j == -1 else (text[i:j], j + 1)
    j = i
    while j < len(text) and text[j].isdigit():
        j += 1
    ack = int(text[i:j]) if j > i else None
    data = json.loads(text[j:]) if j < len(text) else None
    return Packet(kind, namespace, data, ack, attachments)


def with_attachments(value: object, attachments: Sequence[bytes]) -> object:
    """A binary packet's data with its ``{"_placeholder": true, "num": N}`` made the N-th attachment."""
    if isinstance(value, dict):
        if value.get("_placeholder") is True and isinstance(value.get("num"), int) and value["num"] < len(attachments):
            return attachments[value["num"]]
        return {k: with_attachments(v, attachments) for k, v in value.items()}
    if isinstance(value, list):
        return [with_attachments(v, attachments) for v in value]
    return value


# --------------------------------------------------------------------------- the scenario file


def env_name(key: str) -> str:
    return "DISPEL_SECRET_" + re.sub(r"[^A-Za-z0-9]+", "_", key).strip("_").upper()


def hide_secrets(value: object, key: str = "") -> object:
    """``value`` with every value under a secret-named key (values.SECRET_NAME) an EnvRef."""
    if key and SECRET_NAME.search(key) and not isinstance(value, (dict, list, tuple)):
        return EnvRef(env_name(key))
    if isinstance(value, dict):
        return {k: hide_secrets(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [hide_secrets(v, key) for v in value]
    return value


def toml_value(value: object) -> str:
    """A value as a TOML inline value: bytes as ``{ bytes = "base64:..." }``, an EnvRef as ``{ env = "NAME" }``."""
    value = to_jsonable(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)} = {toml_value(v)}" for k, v in value.items()) + " }" if value else "{}"
    if value is None:
        raise ValueError("null")
    raise ValueError(type(value).__name__)


def has_null(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(has_null(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(has_null(v) for v in value)
    return False


def scenario_text(s: Session, target: str, factory: bool = False, flask: str = "", title: str = "",
                  async_mode: str = "") -> tuple[str, list[str]]:
    """The scenario file that replays ``s`` (TOML), and what it cannot replay (a value TOML has
    no form for: null), each as one line. Steps are in the order the clients did them; each
    client connects all its namespaces with its first connect (dispel's client connects them together)."""
    left: list[str] = []
    out = ["# Saved by `dispel report --live`: what the clients did, replayed by dispel's own client.",
           f"title = {json.dumps(title or f'{target}, a live session', ensure_ascii=False)}",
           f"timeout = {60 + 10 * len(s.order)}", "", "[app]", f"import = {json.dumps(target)}"]
    if factory:
        out.append("factory = true")
    if flask:
        out.append(f"flask = {json.dumps(flask)}")
    if async_mode:
        out.append(f"async_mode = {json.dumps(async_mode)}")
    out.append("")
    envs = set()
    for c in s.clients:
        out.append(f"[clients.{c.name}]")
        out.append(f"transport = {json.dumps(c.transport)}")
        out.append(f"namespaces = {toml_value(list(c.namespaces))}")
        if c.auth is not None:
            auth = hide_secrets(c.auth)
            envs |= set(_envs(auth))
            if has_null(auth):
                left.append(f"client {c.number}'s auth holds a null, which TOML cannot write: left out")
            else:
                out.append(f"auth = {toml_value(auth)}")
        answers = []
        for event, args in c.replies:
            value = hide_secrets(args[0]) if len(args) == 1 else None
            envs |= set(_envs(value))
            if value is None or has_null(value):
                if args:
                    left.append(f"client {c.number}'s answer to {event!r} is not one value TOML can write: left out")
                continue
            answers.append(f"{json.dumps(event, ensure_ascii=False)} = {toml_value(value)}")
        if answers:
            out.append(f"replies = {{ {', '.join(answers)} }}")
        out.append("")
    connected: set[int] = set()
    by_number = {c.number: c for c in s.clients}
    for n, i in s.order:
        if n == 0:  # a plain HTTP request, made as the file's first client (scenario_file: an http step's client)
            r = s.requests[i]
            if r.method in BODIED:
                left.append(f"HTTP {r.text}: a request that may carry a body, whose headers and body are not recorded live; "
                            "add it as an http step (json = ..., headers = ..., README) if the replay needs it")
            elif r.status == 304:
                left.append(f"HTTP {r.text}: the browser's cached copy was still good, which a replay without its cache "
                            "headers would not get: left out")
            elif s.clients:
                out += ["[[steps]]", f"client = {json.dumps(s.clients[0].name)}", 'do = "http"',
                        f"method = {json.dumps(r.method)}", f"path = {json.dumps(r.path, ensure_ascii=False)}",
                        f"status = {r.status}", ""]
            continue
        c = by_number[n]
        a = c.actions[i]
        step = ["[[steps]]", f"client = {json.dumps(c.name)}"]
        if a.do == "connect":
            if n in connected:
                continue  # its namespaces were connected together with the first
            connected.add(n)
            step.append('do = "connect"')
        elif a.do == "emit":
            sent = [hide_secrets(x) for x in a.args]
            envs |= set(_envs(sent))
            if has_null(sent):
                left.append(f"client {c.number}'s emit {a.event!r} holds a null, which TOML cannot write: left out")
                continue
            step += ['do = "emit"', f"event = {json.dumps(a.event, ensure_ascii=False)}"]
            if a.namespace != c.namespaces[0]:
                step.append(f"namespace = {json.dumps(a.namespace)}")
            if len(sent) == 1:
                step.append(f"data = {toml_value(sent[0])}")
            elif len(sent) > 1:
                step.append(f"args = {toml_value(sent)}")
            if a.ack:
                step.append("ack = true")
        else:  # disconnect (a namespace), close (the whole connection)
            later = [x.do for x in c.actions[i + 1:]]
            if n not in connected or "disconnect" in later or (a.do == "disconnect" and "close" in later):
                continue  # the client's last disconnect (or its close) is its disconnect step
            if any(d in ("emit", "connect") for d in later):
                left.append(f"client {c.number} left {a.namespace} and stayed on its other namespaces: dispel's client "
                            "disconnects them together; left out")
                continue
            connected.discard(n)
            step.append('do = "disconnect"')
        out += step + [""]
    if envs:
        out.insert(1, "# The replay reads these secrets from its environment: " + ", ".join(sorted(envs)))
    return "\n".join(out).rstrip("\n") + "\n", left


def _envs(value: object) -> list[str]:
    if isinstance(value, EnvRef):
        return [value.name]
    if isinstance(value, dict):
        return [e for v in value.values() for e in _envs(v)]
    if isinstance(value, (list, tuple)):
        return [e for v in value for e in _envs(v)]
    return []


__all__ = [
    "BYTES_KEY",
    "ENV_KEY",
    "Action",
    "LiveClient",
    "Session",
    "env_name",
    "hide_secrets",
    "home_lines",
    "scenario_text",
    "session",
]


def observations_jsonable(observations: Sequence[Mapping]) -> list:
    return [to_jsonable(dict(o)) for o in observations]
