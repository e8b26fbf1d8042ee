"""A pacing proxy between a client and the traced server (`python -m dispel.run.pacer UPSTREAM_PORT`): whole requests and frames, one at a time, in a canonical order.

Its clients are the browser, and a scenario file's long-polling Python client (whose read
loop's GET and whose POSTs are concurrent requests too); PacerProcess runs it.

The browser is not as obliging as dispel's Python client: it picks a random
WebSocket key and a random mask per frame, reuses or opens TCP connections as it
pleases, and sends concurrent requests in whatever order its network stack
reaches first. Any of these would make the server's trace differ from run to run.
This proxy, a process of its own so that none of its threads are traced, makes
what reaches the server repeatable without changing what it means:

* each request, and each WebSocket frame, is forwarded whole in a single send,
  ``PACE`` seconds after the previous one, so that every one arrives in a read of
  its own (as the Python client's pacing does);
* sends that arrive together (within ``GATHER`` seconds of the first) are one batch,
  forwarded in a fixed order: their bytes, sorted, each connection's own in order;
* the upstream connection is opened when its first request is forwarded, so the
  server accepts connections in the forwarding order (werkzeug closes each one after
  its response, so there is one request per connection whatever the browser's pool does);
* the WebSocket key becomes RFC 6455's example key, and frames are re-masked with
  its example mask (the browser gets the ``Sec-WebSocket-Accept`` it expects);
* after an upgrade request nothing more is forwarded until the server's 101 has come
  back (at most ``UPGRADE_WAIT`` seconds): the thread that answers it starts the
  WebSocket's reader thread right after, and a connection forwarded meanwhile made the
  server start its thread first or second as the machine's load decided (their default
  names, ``Thread-N``, are numbered in that order);
* the proxy's port in ``Host``, ``Origin`` and ``Referer`` becomes the server's;
* the browser's end of a connection is passed on only once the server has closed its side
  (at most ``CLOSE_WAIT`` seconds later), as dispel's Python client does: werkzeug waits
  10 ms for more data before it closes, and whether the browser's end, paced, came within
  those 10 ms was the machine's load's choice.

The byte handling is a pure state machine per connection (``RequestStream``,
``ResponseStream``) and the order a pure function (``batch_order``); only ``main`` and
``Pacer`` touch sockets.
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from .. import wire
from ..model import DispelError
from ..wire import MASK_KEY, WS_KEY

PACE = 0.05
GATHER = 0.05
UPGRADE_WAIT = 10.0
CLOSE_WAIT = 5.0
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_HEAD_END = b"\r\n\r\n"


def accept_for(key: str) -> str:
    """The Sec-WebSocket-Accept a server answers to ``key`` (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + WS_GUID).digest()).decode("ascii")


def remask(frame: bytes, new_key: bytes) -> bytes:
    """A whole masked frame with its payload masked by ``new_key`` instead; unmasked frames as they are."""
    layout = wire.frame_layout(frame)
    if layout is None or not frame[1] & 0x80:
        return frame
    start = layout[0]
    clear = wire.xor_mask(frame[start:], frame[start - 4:start])
    return frame[:start - 4] + new_key + wire.xor_mask(clear, new_key)


def frame_size(buf: bytes) -> int | None:
    """The size of the first WebSocket frame in ``buf``, or None while its header is incomplete."""
    layout = wire.frame_layout(buf)
    return None if layout is None else sum(layout)


@dataclass(frozen=True)
class Unit:
    """What to forward in one send: a request or a frame (empty: the browser closed its side)."""

    data: bytes
    # the browser's own Sec-WebSocket-Key, when this unit is its upgrade request
    browser_key: str | None = None


class RequestStream:
    """Browser-to-server bytes of one connection -> whole, canonical units (sans-IO)."""

    def __init__(self, proxy_port: int, server_port: int) -> None:
        self._buf = b""
        self._websocket = False
        self._ports = (proxy_port, server_port)

    def feed(self, data: bytes) -> list[Unit]:
        """Units completed by ``data``; ``b""`` means end of stream (what is left goes as it is)."""
        if not data:
            rest, self._buf = self._buf, b""
            return ([Unit(rest)] if rest else []) + [Unit(b"")]
        self._buf += data
        out: list[Unit] = []
        while True:
            unit = self._next_frame() if self._websocket else self._next_request()
            if unit is None:
                return out
            out.append(unit)

    def _next_frame(self) -> Unit | None:
        size = frame_size(self._buf)
        if size is None or len(self._buf) < size:
            return None
        frame, self._buf = self._buf[:size], self._buf[size:]
        return Unit(remask(frame, MASK_KEY))

    def _next_request(self) -> Unit | None:
        end = self._buf.find(_HEAD_END)
        if end < 0:
            return None
        head = self._buf[:end].decode("latin-1")
        body_size = int(_header(head, "content-length") or 0)
        size = end + len(_HEAD_END) + body_size
        if len(self._buf) < size:
            return None
        body, self._buf = self._buf[end + len(_HEAD_END):size], self._buf[size:]
        browser_key = _header(head, "sec-websocket-key") if (_header(head, "upgrade") or "").lower() == "websocket" else None
        lines = head.split("\r\n")
        lines = [lines[0]] + [_local_port(line, *self._ports) for line in lines[1:]]
        if browser_key is not None:
            lines = _set_header(lines, "sec-websocket-key", WS_KEY)
            self._websocket = True
        return Unit("\r\n".join(lines).encode("latin-1") + _HEAD_END + body, browser_key)


def _is(line: str, name: str) -> bool:
    return line.partition(":")[0].strip().lower() == name


def _header(head: str, name: str) -> str | None:
    for line in head.split("\r\n")[1:]:
        if _is(line, name):
            return line.partition(":")[2].strip()
    return None


def _set_header(lines: list[str], name: str, value: str) -> list[str]:
    return [f"{line.partition(':')[0]}: {value}" if _is(line, name) else line for line in lines]


def _local_port(line: str, old: int, new: int) -> str:
    if not any(_is(line, h) for h in ("host", "origin", "referer")):
        return line
    return re.sub(rf"(127\.0\.0\.1|localhost):{old}(?!\d)", rf"\g<1>:{new}", line)


class ResponseStream:
    """Server-to-browser bytes of one connection (sans-IO): after an upgrade request, the
    101's Sec-WebSocket-Accept is made to answer the browser's own key; all else passes."""

    def __init__(self) -> None:
        self._key: str | None = None
        self._buf = b""

    def expect_upgrade(self, browser_key: str) -> None:
        self._key = browser_key

    @property
    def upgrading(self) -> bool:
        """An upgrade request was forwarded and the head of its answer has not come back yet."""
        return self._key is not None

    def feed(self, data: bytes) -> bytes:
        if self._key is None:
            return data
        self._buf += data
        end = self._buf.find(_HEAD_END)
        if end < 0:
            return b""
        head, rest = self._buf[:end].decode("latin-1"), self._buf[end:]
        lines = _set_header(head.split("\r\n"), "sec-websocket-accept", accept_for(self._key))
        self._key, self._buf = None, b""
        return "\r\n".join(lines).encode("latin-1") + rest


def batch_order(batch: dict[int, list[Unit]]) -> list[tuple[int, Unit]]:
    """The order to forward one batch in (connection number, unit): each time, the waiting
    unit with the smallest bytes (the connection number breaks ties), each connection's
    own units in their order, so the order no longer depends on arrival."""
    queues = {n: list(units) for n, units in batch.items() if units}
    out = []
    while queues:
        n = min(queues, key=lambda k: (queues[k][0].data, k))
        out.append((n, queues[n].pop(0)))
        if not queues[n]:
            del queues[n]
    return out


# ------------------------------------------------------------------ the IO shell


class Pacer:
    """Listens on 127.0.0.1 (port chosen by the OS) and forwards to ``server_port``."""

    def __init__(self, server_port: int, pace: float = PACE, gather: float = GATHER, log=None) -> None:
        self.log = log  # a text file: one line per unit forwarded, to see what a batch held
        self.server_port = server_port
        self.pace = pace
        self.gather = gather
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.ready = threading.Condition()
        self.conns: dict[int, _Conn] = {}

    def start(self) -> None:
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._forward, daemon=True).start()

    def _accept(self) -> None:
        while True:
            browser, _ = self.listener.accept()
            with self.ready:
                conn = _Conn(len(self.conns), browser, RequestStream(self.port, self.server_port))
                self.conns[conn.number] = conn
            threading.Thread(target=self._read_browser, args=(conn,), daemon=True).start()

    def _read_browser(self, conn: _Conn) -> None:
        while True:
            try:
                data = conn.browser.recv(65536)
            except OSError:
                data = b""
            units = conn.requests.feed(data)
            with self.ready:
                conn.waiting.extend(units)
                self.ready.notify()
            if not data:
                return

    def _forward(self) -> None:
        while True:
            with self.ready:
                self.ready.wait_for(lambda: any(c.waiting for c in self.conns.values()))
            time.sleep(self.gather)
            # What arrived until now is one batch, forwarded in canonical order; what
            # arrives meanwhile waits for the next batch (sorting across batches would
            # let a busy connection starve the others).
            with self.ready:
                batch = {c.number: c.waiting for c in self.conns.values()}
                for c in self.conns.values():
                    c.waiting = []
            for number, unit in batch_order(batch):
                self._send(self.conns[number], unit)
                if self.log is not None:
                    print(f"{time.monotonic():.3f} c{number} {unit.data[:70]!r}", file=self.log, flush=True)
                time.sleep(self.pace)

    def _send(self, conn: _Conn, unit: Unit) -> None:
        if not unit.data:
            if conn.server is not None:
                threading.Thread(target=self._end, args=(conn, conn.server), daemon=True).start()
            return
        if conn.server is None:
            conn.server = socket.create_connection(("127.0.0.1", self.server_port))
            threading.Thread(target=self._read_server, args=(conn, conn.server), daemon=True).start()
        if unit.browser_key is not None:
            conn.responses.expect_upgrade(unit.browser_key)
            conn.answered.clear()
        try:
            conn.server.sendall(unit.data)
        except OSError:
            conn.answered.set()
        conn.answered.wait(UPGRADE_WAIT)  # set at once unless this was an upgrade request

    def _end(self, conn: _Conn, server) -> None:
        """The browser's end, passed on once the server has closed its side (or CLOSE_WAIT has passed)."""
        if conn.server_closed.wait(CLOSE_WAIT):
            return  # nothing to pass on: the server's socket is closed
        try:
            server.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _read_server(self, conn: _Conn, server) -> None:
        while True:
            try:
                data = server.recv(65536)
            except OSError:
                data = b""
            try:
                if data:
                    conn.browser.sendall(conn.responses.feed(data))
                else:
                    conn.browser.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            if not data or not conn.responses.upgrading:
                conn.answered.set()
            if not data:
                conn.server_closed.set()
                server.close()
                return


class _Conn:
    def __init__(self, number: int, browser, requests: RequestStream) -> None:
        self.number = number
        self.browser = browser
        self.requests = requests
        self.responses = ResponseStream()
        self.waiting: list[Unit] = []
        self.server: socket.socket | None = None
        self.answered = threading.Event()  # cleared while an upgrade request waits for its 101
        self.answered.set()
        self.server_closed = threading.Event()


class PacerProcess:
    """This module in a subprocess (a process of its own, so that none of its threads are traced), in front of the server on ``upstream``: clients connect to
    ``port``. It puts concurrent requests in a canonical order (see that module)."""

    def __init__(self, upstream: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dispel.run.pacer", str(upstream)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        said = self.proc.stdout.readline().split()
        if len(said) != 2 or said[0] != "listening":
            self.close()
            raise DispelError("dispel.run.pacer did not start: run `python -m dispel.run.pacer PORT` to see why")
        self.port = int(said[1])

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


def main(argv: list[str]) -> int:
    """Prints ``listening PORT`` and forwards until stdin closes; with DISPEL_PACER_LOG=FILE,
    logs what it forwards there."""
    where = os.environ.get("DISPEL_PACER_LOG")
    # the log stays open as long as the process forwards (until stdin closes and the process ends)
    pacer = Pacer(int(argv[0]), log=open(where, "a", encoding="utf-8") if where else None)  # noqa: SIM115
    pacer.start()
    print(f"listening {pacer.port}", flush=True)
    sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
