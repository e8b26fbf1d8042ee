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

from .client import PACE_SECONDS, disconnect_cleanly, patch_websocket
from .scenario_file import Step
from .wire import WS_KEY


class ScenarioClient:
    def __init__(self, port: int, spec: dict, pace: float = PACE_SECONDS) -> None:
        import socketio

        patch_websocket(pace, lambda: self.client)
        self.spec = spec
        self.url = f"http://127.0.0.1:{port}"
        if spec.get("query"):
            self.url += "?" + urlencode(sorted(spec["query"]))
        self.namespaces = list(spec.get("namespaces") or ["/"])
        # No "t=" cache-buster in the URL: it would put the clock into the request line.
        self.client = socketio.Client(reconnection=False, timestamp_requests=False)
        self.arrived = threading.Condition()
        self.got: dict[tuple[str, str], int] = {}  # (namespace, event) -> how many arrived
        self.taken: dict[tuple[str, str], int] = {}  # how many earlier expect steps consumed
        for ns in self.namespaces:
            self.client.on("*", self._catch(ns), namespace=ns)

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
