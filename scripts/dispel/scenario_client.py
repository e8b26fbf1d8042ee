"""A scenario file's Socket.IO client, run as a separate process (`python -m dispel.scenario_client PORT`).

The first stdin line is the client's spec (JSON: transport, namespaces, headers, query, auth);
each later line is one step of the scenario file (dispel.scenario_file.Step as JSON) or ``quit``.
The answer to each step is ``ok`` or ``error MESSAGE``. Like dispel.client, it keeps the
client's threads and sockets out of the traced server, and paces its frames.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from urllib.parse import urlencode

from .client import PACE_SECONDS, disconnect_cleanly, patch_http_close, patch_websocket
from .client import no_timestamps
from .scenario_file import Step
from .wire import WS_KEY


class ScenarioClient:
    def __init__(self, port: int, spec: dict, pace: float = PACE_SECONDS) -> None:
        import socketio

        patch_websocket(pace, lambda: self.client)
        patch_http_close()
        self.spec = spec
        self.url = f"http://127.0.0.1:{port}"
        if spec.get("query"):
            self.url += "?" + urlencode(sorted(spec["query"]))
        self.namespaces = list(spec.get("namespaces") or ["/"])
        # No "t=" cache-buster in the URL: it would put the clock into the request line.
        self.client = socketio.Client(reconnection=False, **no_timestamps())
        self.arrived = threading.Condition()
        self.got: dict[tuple[str, str], int] = {}  # (namespace, event) -> how many arrived
        self.taken: dict[tuple[str, str], int] = {}  # how many earlier expect steps consumed
        for ns in self.namespaces:
            self.client.on("*", self._catch(ns), namespace=ns)
        if spec.get("transport") == "polling":
            _order_polling(pace)

    def _catch(self, ns: str):
        def handler(event, *args):
            with self.arrived:
                self.got[(ns, event)] = self.got.get((ns, event), 0) + 1
                self.arrived.notify_all()

        return handler

    def _drained(self, timeout: float) -> None:
        queue = self.client.eio.queue
        end = time.monotonic() + timeout
        while queue.unfinished_tasks and time.monotonic() < end:
            time.sleep(0.005)

    def step(self, s: Step) -> None:
        ns = s.namespace or self.namespaces[0]
        if s.do == "connect":
            transports = [self.spec.get("transport", "websocket")]
            headers = dict(self.spec.get("headers") or {})
            if transports == ["websocket"]:
                headers.setdefault("Sec-WebSocket-Key", WS_KEY)
            self.client.connect(
                self.url, transports=transports, namespaces=self.namespaces, headers=headers,
                auth=self.spec.get("auth"), wait_timeout=s.timeout,
            )
        elif s.do in ("emit", "join", "leave"):
            args = () if not s.has_data else (s.data,)
            data = args[0] if args else None
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
            self.taken[key] = want
        elif s.do == "sleep":
            time.sleep(s.seconds)
        elif s.do == "disconnect":
            disconnect_cleanly(self.client, s.timeout)
        else:  # the parser allows no other
            raise ValueError(f"unknown step {s.do!r}")

    def close(self) -> None:
        if self.client.connected:
            self.client.disconnect()


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

    urllib3.connection.HTTPConnection.endheaders = endheaders


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
        except Exception as exc:  # reported to the driver, which names the step
            print(f"error {type(exc).__name__}: {exc}".replace("\n", " "), flush=True)
            continue
        print("ok", flush=True)
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
