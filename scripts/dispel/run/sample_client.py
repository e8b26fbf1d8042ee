"""The scenario's Socket.IO client, run as a separate process (`python -m dispel.run.sample_client PORT [PACE]`), one step per stdin line.

A separate process keeps the client's threads, sockets and file descriptors
out of the traced server: what the server does no longer depends on them.
Each line read is ``STEP TIMEOUT [COUNT]``; the answer is ``ok STEP`` or ``error STEP MESSAGE``.
"""
from __future__ import annotations

import sys
import threading

from ..wire import MASK_KEY, WS_KEY

CHAT_PAYLOAD = '<b>hi</b> & "quotes"'
ROOM = "room-1"


# Frames are sent this far apart, so that each arrives in a read of its own:
# TCP would otherwise coalesce some of them at random, and the server's reads
# (and so its trace) would change from run to run.
PACE_SECONDS = 0.05


def _fixed_mask(length: int) -> bytes:
    return MASK_KEY


def patch_websocket(pace: float, current_client) -> None:
    """The websocket-client changes every scenario client makes: a fixed mask key, frames sent
    ``pace`` seconds apart, and the close frame sent only after the writer's queue is empty
    (``current_client()`` is the socketio.Client whose Engine.IO queue that is)."""
    import time

    import websocket

    original_init = websocket.WebSocket.__init__
    original_send_frame = websocket.WebSocket.send_frame

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.get_mask_key = _fixed_mask

    def send_frame(self, frame):
        try:
            return original_send_frame(self, frame)
        finally:
            if pace:
                time.sleep(pace)

    original_connect = websocket.WebSocket.connect

    def connect(self, *args, **kwargs):
        # After the 101, the server sets up its reader thread; the first frame
        # waits until it is listening, as later frames do.
        try:
            return original_connect(self, *args, **kwargs)
        finally:
            if pace:
                time.sleep(pace)

    websocket.WebSocket.__init__ = init  # type: ignore[method-assign]  # patched on purpose (see above)
    websocket.WebSocket.send_frame = send_frame  # type: ignore[method-assign]  # patched on purpose (see above)
    websocket.WebSocket.connect = connect  # type: ignore[method-assign]  # patched on purpose (see above)
    original_close = websocket.WebSocket.close

    def close(self, *args, **kwargs):
        # Engine.IO's disconnect queues its last packets for the writer thread and
        # closes the WebSocket at once, from this thread: let the writer finish with
        # its queue first, so the close frame is always the last thing sent. A writer
        # that has ended (the connection closed before it took the stop marker) sends
        # nothing more: waiting for it would only cost the full five seconds.
        eio = getattr(current_client(), "eio", None)
        queue = getattr(eio, "queue", None)
        end = time.monotonic() + 5
        while queue is not None and queue.unfinished_tasks and eio.write_loop_task is not None and time.monotonic() < end:
            time.sleep(0.005)
        return original_close(self, *args, **kwargs)

    websocket.WebSocket.close = close  # type: ignore[method-assign]  # patched on purpose (see above)


def patch_http_close(timeout: float = 5.0) -> None:
    """Long-polling: the client closes an HTTP connection only once the server has closed its
    side. werkzeug closes every connection after its response, and first waits 10 ms for
    anything more from the client; a client that closed within those 10 ms or not (which the
    load of the machine decides) made the server's trace differ. Now the server never sees
    the client's end first, as with a browser, which keeps its connections open."""
    import http.client
    import socket

    original_close_conn = http.client.HTTPResponse._close_conn  # type: ignore[attr-defined]  # private, patched on purpose

    def close_conn(self):
        sock = getattr(getattr(self.fp, "raw", None), "_sock", None)  # the socket under the response's file
        if self.will_close and isinstance(sock, socket.socket) and sock.fileno() >= 0:
            try:
                sock.settimeout(timeout)
                while sock.recv(65536):  # nothing is expected but the server's end
                    pass
            except OSError:
                pass
        return original_close_conn(self)

    http.client.HTTPResponse._close_conn = close_conn  # type: ignore[attr-defined]  # private, patched on purpose


def drained(client, timeout: float) -> None:
    """Wait until the client's Engine.IO writer has sent everything queued."""
    import time

    queue = client.eio.queue
    end = time.monotonic() + timeout
    while queue.unfinished_tasks and time.monotonic() < end:
        time.sleep(0.005)


def disconnect_cleanly(client, timeout: float) -> None:
    # What client.disconnect() sends, one packet at a time: its own version
    # queues them all and flags the writer thread to stop at once, so which of
    # them left before the close frame varied from run to run.
    import engineio
    from socketio import packet as sio_packet

    if client.eio.current_transport == "websocket":
        for namespace in list(client.namespaces):
            client._send_packet(client.packet_class(sio_packet.DISCONNECT, namespace=namespace))
            drained(client, timeout)
        client.eio._send_packet(engineio.packet.Packet(engineio.packet.CLOSE))
        drained(client, timeout)
        writer = client.eio.write_loop_task
        client.eio.queue.put(None)  # the writer stops; nothing more is sent but the close frame
        if writer is not None:
            writer.join(timeout)
    client.disconnect()


EVENTS = ("welcome", "reply", "joined", "news")  # the events the sample's steps wait for


class _Steps:
    """The sample scenarios' client: one python-socketio Client, the events it has received, and
    each step a driver can ask for."""

    def __init__(self, port: int, pace: float) -> None:
        import socketio

        self.client: socketio.Client  # made below; the patches read it when they run
        patch_websocket(pace, lambda: self.client)
        patch_http_close()
        self.url = f"http://127.0.0.1:{port}"
        self.got: dict[str, list] = {event: [] for event in EVENTS}
        self.arrived = threading.Condition()
        # No "t=" cache-buster in the URL: it only matters to long-polling and
        # would put the clock into the request line.
        self.client = socketio.Client(reconnection=False, **no_timestamps())
        for event in self.got:
            self.client.on(event, self._handler(event))

    def _handler(self, event: str):
        def handler(data):
            with self.arrived:
                self.got[event].append(data)
                self.arrived.notify_all()

        return handler

    def wait_for(self, event: str, count: int, timeout: float) -> None:
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.got[event]) >= count, timeout):
                raise TimeoutError(f"no {event!r} event from the server")

    def connect(self, name: str, timeout: float) -> None:
        import time

        # connect-polling: Engine.IO's default, long-polling first, then the upgrade
        transports = ["websocket"] if name == "connect" else ["polling", "websocket"]
        self.client.connect(self.url, transports=transports, headers={"Sec-WebSocket-Key": WS_KEY}, wait_timeout=timeout)
        self.wait_for("welcome", 1, timeout)
        if name == "connect-polling":
            end = time.monotonic() + timeout
            while self.client.transport() != "websocket" and time.monotonic() < end:
                time.sleep(0.01)
            if self.client.transport() != "websocket":
                raise TimeoutError("the client never upgraded to websocket")

    def step(self, name: str, timeout: float, count: int) -> None:
        client, got = self.client, self.got
        if name in ("connect", "connect-polling"):
            self.connect(name, timeout)
        elif name == "chat":
            for _ in range(count):
                n = len(got["reply"])
                client.emit("chat", CHAT_PAYLOAD)
                self.wait_for("reply", n + 1, timeout)
        elif name == "join":
            client.emit("join", ROOM)
            self.wait_for("joined", 1, timeout)
        elif name == "ack":
            answer = client.call("shout", "hello", timeout=timeout)
            if answer != {"upper": "HELLO"}:
                raise ValueError(f"wrong acknowledgement {answer!r}")
        elif name == "disconnect":
            disconnect_cleanly(client, timeout)
        elif name.startswith("expect-") and name[7:] in got:
            # an event some other client's step (or another process) made the server send
            self.wait_for(name[7:], count, timeout)
        else:
            raise ValueError(f"unknown step {name!r}")


def main(argv: list[str]) -> int:
    """One step per stdin line (``NAME [TIMEOUT [COUNT]]``, or ``quit``), answered ``ok NAME`` or
    ``error NAME ...`` on stdout."""
    steps = _Steps(int(argv[0]), float(argv[1]) if len(argv) > 1 else PACE_SECONDS)
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "quit":
            break
        name = parts[0]
        timeout = float(parts[1]) if len(parts) > 1 else 10.0
        count = int(parts[2]) if len(parts) > 2 else 1
        try:
            steps.step(name, timeout, count)
        except Exception as exc:  # noqa: BLE001 - reported to the driver, which names the step
            print(f"error {name} {type(exc).__name__}: {exc}".replace("\n", " "), flush=True)
            continue
        print(f"ok {name}", flush=True)
    if steps.client.connected:
        steps.client.disconnect()
    return 0


def no_timestamps() -> dict:
    """``timestamp_requests=False`` where this python-engineio's client takes it (4.11 on); an older one
    always sends ``t=...`` (dispel.tracefiles.values.Normalizer makes it ``t=<time>``): here with six decimals,
    so that a request's length does not vary from run to run."""
    import inspect
    import time

    import engineio

    if "timestamp_requests" in inspect.signature(engineio.Client.__init__).parameters:
        return {"timestamp_requests": False}
    engineio.Client._get_url_timestamp = lambda self: f"&t={time.time():.6f}"
    return {}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

