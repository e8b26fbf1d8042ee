"""A scenario file's Socket.IO client, run as a separate process (`python -m dispel.run.file_client PORT`).

The first stdin line is the client's spec (JSON: transport, namespaces, headers, query, auth,
replies, and ``server_port``: where an http step goes, the server itself even when the client
talks through dispel.run.pacer); each later line is one step of the scenario file
(dispel.run.scenario_file.Step as JSON) or ``quit``.
The answer to each step is ``ok`` or ``error MESSAGE``. Like dispel.run.sample_client, it keeps the
client's threads and sockets out of the traced server, and paces its frames.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from urllib.parse import urlencode

from ..wire import WS_KEY
from .sample_client import (
    PACE_SECONDS,
    disconnect_cleanly,
    no_timestamps,
    patch_http_close,
    patch_websocket,
)
from .scenario_values import Step, from_jsonable, resolve_env


class ScenarioClient:
    def __init__(self, port: int, spec: dict, pace: float = PACE_SECONDS) -> None:
        import socketio

        self.client: socketio.Client  # made below; the patches read it when they run
        patch_websocket(pace, lambda: self.client)
        patch_http_close()
        self.spec = spec
        self.url = f"http://127.0.0.1:{port}"
        if spec.get("query"):
            self.url += "?" + urlencode(sorted(tuple(pair) for pair in spec["query"]))  # pairs arrive as JSON lists
        self.namespaces = list(spec.get("namespaces") or ["/"])
        # No "t=" cache-buster in the URL: it would put the clock into the request line.
        self.client = socketio.Client(reconnection=False, **no_timestamps())
        self.arrived = threading.Condition()
        self.got: dict[tuple[str, str], int] = {}  # (namespace, event) -> how many arrived
        self.taken: dict[tuple[str, str], int] = {}  # how many earlier expect steps consumed
        self.values: dict[tuple[str, str], list[tuple]] = {}  # (namespace, event) -> each arrival's arguments
        self.replies = {event: from_jsonable(v) for event, v in (spec.get("replies") or {}).items()}
        self.refusals: list[tuple] = []  # the arguments of each connect_error the server sent
        self.server_port = int(spec.get("server_port") or port)
        for ns in self.namespaces:
            self.client.on("*", self._catch(ns), namespace=ns)
            self.client.on("connect_error", self._refused, namespace=ns)
        if spec.get("transport") in ("polling", "upgrade"):
            _order_polling(pace)

    def _catch(self, ns: str):
        def handler(event, *args):
            with self.arrived:
                self.got[(ns, event)] = self.got.get((ns, event), 0) + 1
                self.values.setdefault((ns, event), []).append(args)
                self.arrived.notify_all()
            # the ack the server asked for, if it did (python-socketio sends None as no data)
            return self.replies.get(event)

        return handler

    def _refused(self, *args):
        with self.arrived:
            self.refusals.append(args)
            self.arrived.notify_all()

    def _auth(self):
        auth = self.spec.get("auth")
        return None if auth is None else resolve_env(from_jsonable(auth), os.environ)

    def _drained(self, timeout: float) -> None:
        queue = self.client.eio.queue
        end = time.monotonic() + timeout
        while queue.unfinished_tasks and time.monotonic() < end:
            time.sleep(0.005)

    def step(self, s: Step) -> None:
        ns = s.namespace or self.namespaces[0]
        if s.do == "connect":
            transport = self.spec.get("transport", "websocket")
            # upgrade: long-polling first, then the upgrade to WebSocket (as a browser does)
            transports = ["polling", "websocket"] if transport == "upgrade" else [transport]
            headers = dict(self.spec.get("headers") or {})
            if "websocket" in transports:
                headers.setdefault("Sec-WebSocket-Key", WS_KEY)
            if s.refused is not None:
                self._connect_refused(s, transports, headers)
                return
            self.client.connect(
                self.url, transports=transports, namespaces=self.namespaces, headers=headers,
                auth=self._auth(), wait_timeout=s.timeout,
            )
            if transport == "upgrade":
                end = time.monotonic() + s.timeout
                while self.client.transport() != "websocket" and time.monotonic() < end:
                    time.sleep(0.01)
                if self.client.transport() != "websocket":
                    raise TimeoutError("the client never upgraded to websocket")
        elif s.do in ("emit", "join", "leave"):
            # several arguments go as a tuple (python-socketio spreads it), one as itself
            data = tuple(s.args) if s.has_args else s.data if s.has_data else None
            data = resolve_env(data, os.environ)  # { env = "NAME" }: a secret the replay reads
            if s.ack:
                answer = self.client.call(s.event, data, namespace=ns, timeout=s.timeout)
                del answer  # any answer will do: the trace shows it
            else:
                self.client.emit(s.event, data, namespace=ns)
                self._drained(s.timeout)
        elif s.do == "expect":
            key = (ns, s.event)
            want = self.taken.get(key, 0) + s.count
            with self.arrived:
                if not self.arrived.wait_for(lambda: self.got.get(key, 0) >= want, s.timeout):
                    seen = ", ".join(f"{e!r}x{n}" for (n_s, e), n in sorted(self.got.items()) if n_s == ns) or "none"
                    raise TimeoutError(
                        f"expected {s.count} {s.event!r} event(s) on namespace {ns!r} within {s.timeout:g}s, "
                        f"got {self.got.get(key, 0) - self.taken.get(key, 0)} (events received there: {seen}); "
                        f"does the app emit {s.event!r}?"
                    )
            arrived = self.values.get(key, [])[self.taken.get(key, 0):want]
            self.taken[key] = want
            if s.has_data or s.has_args:
                wanted = tuple(s.args) if s.has_args else (s.data,)
                if wanted not in arrived:
                    shown = "; ".join(_shown(a) for a in arrived)
                    raise ValueError(f"{s.event!r} arrived with {shown}, not {_shown(wanted)}")
        elif s.do == "sleep":
            time.sleep(s.seconds)
        elif s.do == "disconnect" and s.by == "server":
            self._disconnected_by_server(s.timeout)
        elif s.do == "disconnect":
            disconnect_cleanly(self.client, s.timeout)
        elif s.do == "http":
            self._http(s)
        else:  # the parser allows no other
            raise ValueError(f"unknown step {s.do!r}")

    def _connect_refused(self, s: Step, transports: list[str], headers: dict) -> None:
        """A connect the app's connect handler refuses (ConnectionRefusedError): the server's
        CONNECT_ERROR arrives as connect_error, whose first argument carries its message. The
        client then closes as a disconnect step does, one packet at a time (python-socketio's own
        connect() would queue its CLOSE and close the socket at once, and whether the server's
        reader or werkzeug read the close frame would vary from run to run)."""
        self.client.connect(
            self.url, transports=transports, namespaces=self.namespaces, headers=headers,
            auth=self._auth(), wait=False,
        )
        with self.arrived:
            self.arrived.wait_for(lambda: self.refusals or set(self.client.namespaces) == set(self.namespaces), s.timeout)
        if not self.refusals:
            accepted = set(self.client.namespaces) == set(self.namespaces)
            disconnect_cleanly(self.client, s.timeout)
            raise ValueError("the server accepted the connection; the step expects the connect handler to refuse it" if accepted
                             else f"no answer to the connect within {s.timeout:g}s")
        disconnect_cleanly(self.client, s.timeout)
        self._gone(s.timeout)
        said = self.refusals.pop(0)
        message = said[0].get("message") if said and isinstance(said[0], dict) else (said[0] if said else None)
        if s.refused is not True and message != s.refused:
            raise ValueError(f"refused with the message {message!r}, not {s.refused!r}")

    def _gone(self, timeout: float) -> None:
        """Wait until the Engine.IO connection is closed and its threads have ended."""
        end = time.monotonic() + timeout
        while self.client.eio.state != "disconnected" and time.monotonic() < end:
            time.sleep(0.005)
        for task in (getattr(self.client.eio, "read_loop_task", None), getattr(self.client.eio, "write_loop_task", None)):
            if task is not None:
                task.join(max(0.0, end - time.monotonic()))
        if self.client.eio.state != "disconnected":
            raise TimeoutError(f"the connection was still open after {timeout:g}s")

    def _disconnected_by_server(self, timeout: float) -> None:
        """The app's disconnect() ends the session: DISCONNECT arrives, the client closes Engine.IO."""
        end = time.monotonic() + timeout
        while self.client.connected and time.monotonic() < end:
            time.sleep(0.005)
        if self.client.connected:
            raise TimeoutError(f"the server did not disconnect the client within {timeout:g}s; does the app call disconnect()?")
        self._gone(max(0.1, end - time.monotonic()))

    def _http(self, s: Step) -> None:
        """One HTTP request to the server itself, on a connection of its own (closed by the server)."""
        import http.client
        import json as json_module
        from urllib.parse import urlencode as form_encode

        headers = dict(s.headers)
        body: bytes | None = None
        if s.body_kind == "json":
            body = json_module.dumps(s.body).encode("utf-8")
            headers.setdefault("Content-Type", "application/json")
        elif s.body_kind == "form":
            assert isinstance(s.body, dict)  # scenario_file made a form body a table
            body = form_encode(sorted(s.body.items())).encode("utf-8")
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        elif s.body_kind == "raw":
            assert isinstance(s.body, (bytes, str))  # scenario_file made a raw body text or bytes
            body = s.body if isinstance(s.body, bytes) else s.body.encode("utf-8")
            headers.setdefault("Content-Type", "application/octet-stream" if isinstance(s.body, bytes) else "text/plain; charset=utf-8")
        conn = http.client.HTTPConnection("127.0.0.1", self.server_port, timeout=s.timeout)
        try:
            conn.request(s.method, s.path, body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read()
        finally:
            conn.close()
        if response.status != s.status:
            raise ValueError(f"{s.method} {s.path} answered {response.status} {response.reason}, not {s.status}: {answer[:200]!r}")

    def close(self) -> None:
        if self.client.connected:
            self.client.disconnect()


def _shown(args: tuple) -> str:
    """An event's arguments as a message shows them: one as itself, several as a list."""
    return repr(args[0]) if len(args) == 1 else repr(list(args))


def _order_polling(pace: float) -> None:
    """Long-polling in a repeatable order: a POST is sent only once the client's waiting GET has
    been out for ``pace`` seconds (so it reached the server first), and each request is paced.
    Without it, the read loop's next GET and the write loop's POST race, and which request
    thread of the server carries which packet changes from run to run."""
    import engineio.client

    original = engineio.client.Client._send_request
    state = {"get_since": None}

    def send_request(self, method, url, headers=None, body=None, timeout=None):
        if method == "POST" and self.state == "connected":
            end = time.monotonic() + 5
            while time.monotonic() < end and (state["get_since"] is None or time.monotonic() - state["get_since"] < pace):
                time.sleep(0.005)
        reading = method == "GET" and self.state == "connected"
        if reading:
            state["get_since"] = time.monotonic()
        try:
            return original(self, method, url, headers=headers, body=body, timeout=timeout)
        finally:
            if reading:
                state["get_since"] = None
            if pace:
                time.sleep(pace)

    engineio.client.Client._send_request = send_request

    import urllib3.connection

    original_endheaders = urllib3.connection.HTTPConnection.endheaders

    def endheaders(self, *args, **kwargs):
        # urllib3 sends a POST's body in a write of its own: wait, so that the server always
        # reads the headers alone first (else how its reads split the request varies)
        try:
            return original_endheaders(self, *args, **kwargs)
        finally:
            if pace and getattr(self, "_method", "") == "POST":
                time.sleep(pace)

    urllib3.connection.HTTPConnection.endheaders = endheaders  # type: ignore[method-assign]  # patched on purpose (see above)


def main(argv: list[str]) -> int:
    port = int(argv[0])
    pace = float(argv[1]) if len(argv) > 1 else PACE_SECONDS
    spec = json.loads(sys.stdin.readline())
    client = ScenarioClient(port, spec, pace)
    for line in sys.stdin:
        if not line.strip():
            continue
        if line.strip() == "quit":
            break
        try:
            client.step(Step.from_json(json.loads(line)))
        except Exception as exc:  # noqa: BLE001 - reported to the driver, which names the step
            print(f"error {type(exc).__name__}: {exc}".replace("\n", " "), flush=True)
            continue
        print("ok", flush=True)
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
