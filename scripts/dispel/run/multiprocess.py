"""Scenarios of several processes: a Redis server, traced server and emitter processes
(dispel.run.multiprocess_child), and Python Socket.IO clients, driven step by step with a deadline.

The Redis server is started on a free loopback port without persistence and is not traced.
Every process is stopped afterwards, whatever happened; the traces are written by each
process to a temporary folder and moved into place only when every process wrote its own,
so a failed run leaves no trace half-written.
"""
from __future__ import annotations

import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ..catalog import ProcessScenario
from ..model import DispelError
from ..project import write_all_atomic
from .deadline import Deadline
from .launchers import ClientProcess, free_ports

# The channel Flask-SocketIO's message queue publishes on (SocketIO's default).
CHANNEL = "flask-socketio"
REDIS_ENV = "DISPEL_REDIS_SERVER"
# run()'s timings: these phases, and one entry per step
PHASES = ("start", "finish", "total")


def redis_server_path() -> str | None:
    """The redis-server to start: $DISPEL_REDIS_SERVER, or the one on PATH."""
    wanted = os.environ.get(REDIS_ENV, "redis-server")
    return shutil.which(wanted)


def redis_missing() -> str | None:
    """Why scenarios with a Redis server cannot run here (one line), or None."""
    if redis_server_path() is None:
        shown = os.environ.get(REDIS_ENV, "redis-server")
        return f"{shown} not found: install Debian's redis-server (apt-get install redis-server) to record the queue scenario"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "the redis Python client is not installed: pip install 'dispel[queue]' (the queue scenario's extra; `make site` in a checkout)"
    return None


def _resp(*words: str) -> bytes:
    out = [f"*{len(words)}\r\n".encode()]
    for w in words:
        b = w.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class RedisServer:
    """redis-server on a loopback port, no persistence; one untraced connection of ours to
    ask it how many subscribers the channel has."""

    def __init__(self, port: int, deadline: float) -> None:
        path = redis_server_path()
        if path is None:
            raise DispelError(redis_missing() or "redis-server not found")
        self.port = port
        self.dir = tempfile.mkdtemp(prefix="dispel-redis-")
        self.proc = subprocess.Popen(
            [path, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--logfile", "", "--daemonize", "no"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        self.sock: socket.socket | None = None
        while True:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace").strip().splitlines() if self.proc.stdout else []
                self.stop()
                raise DispelError(f"redis-server exited at start ({self.proc.returncode}): {(out or ['no output'])[-1]}")
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise DispelError(f"redis-server did not accept connections on port {port} in time")
                time.sleep(0.02)
        if self._ask(_resp("PING")) != b"+PONG\r\n":
            self.stop()
            raise DispelError("redis-server did not answer PING")

    def _ask(self, command: bytes) -> bytes:
        assert self.sock is not None
        try:
            self.sock.sendall(command)
            return self.sock.recv(4096)
        except OSError as exc:
            raise DispelError(f"redis-server stopped answering ({exc})") from None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def subscribers(self) -> int:
        """PUBSUB NUMSUB on the channel: how many processes listen to it."""
        reply = self._ask(_resp("PUBSUB", "NUMSUB", CHANNEL))
        if not reply:
            raise DispelError("redis-server closed the connection")
        return int(reply.rstrip(b"\r\n").rsplit(b":", 1)[-1])

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class TracedProcess:
    """A dispel.run.multiprocess_child child, one command line at a time."""

    def __init__(self, scenario: str, role: str, argv: list[str], cwd: Path | None = None) -> None:
        self.scenario, self.role = scenario, role
        self.err = tempfile.TemporaryFile()  # noqa: SIM115 - the child's stderr for its lifetime; close() closes it
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True, bufsize=1, cwd=cwd
        )
        assert self.proc.stdin and self.proc.stdout  # opened with PIPE
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.stdout, selectors.EVENT_READ)

    def _fail(self, step: str, why: str) -> DispelError:
        return DispelError(f"scenario {self.scenario!r}: step {step!r}: process {self.role}: {why}")

    def expect(self, step: str, want: str, timeout: float) -> str:
        if not self.sel.select(max(timeout, 0.01)):
            raise self._fail(step, f"no answer within {timeout:.1f}s (raise it with --timeout)")
        answer = self.stdout.readline().strip()
        if answer == want or answer.startswith(want + " "):
            return answer[len(want) + 1:]
        if answer.startswith("error "):
            raise self._fail(step, answer[6:])
        if answer:
            raise self._fail(step, f"unexpected answer {answer[:200]!r}")
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.err.seek(0)
        tail = (self.err.read().decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise self._fail(step, f"exited ({self.proc.returncode}): {tail}")

    def send(self, line: str) -> None:
        """Send a command without waiting for its answer (expect() reads it)."""
        try:
            self.stdin.write(line + "\n")
            self.stdin.flush()
        except OSError:
            pass  # it has exited: expect() says how

    def ask(self, step: str, line: str, timeout: float) -> str:
        """Send a command; its answer's text after "ok"."""
        self.send(line)
        return self.expect(step, "ok", timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.sel.close()
        for f in (self.stdin, self.stdout, self.err):
            try:
                f.close()
            except OSError:
                pass


def run(sc: ProcessScenario, out: Path, timeout: float = 60.0, timings: dict[str, float] | None = None,
        traced: bool = True, after_step: Callable[[str, RedisServer], None] | None = None, redact: tuple[str, ...] = ()) -> dict[str, Path]:
    """Run scenario ``sc``; write traces/<scenario>.<role>.json into ``out`` (all or none) and
    return them by trace name. ``traced`` False runs the same processes without recording
    (for the benchmark) and writes nothing; ``after_step(step, redis)`` runs after each step
    (tests stop Redis there); ``redact``: regexes each process hides (besides the file's).
    Raises DispelError naming the step and the process."""
    began = time.perf_counter()
    r = _Run(sc, Deadline(timeout))
    try:
        r.start(traced, redact)
        if timings is not None:
            timings["start"] = time.perf_counter() - began
        for spec in sc.steps:
            t0 = time.perf_counter()
            r.step(spec)
            if timings is not None:
                timings[spec] = time.perf_counter() - t0
            if after_step is not None:
                assert r.redis is not None
                after_step(spec, r.redis)
        t0 = time.perf_counter()
        r.finish()
        if timings is not None:
            timings["finish"] = time.perf_counter() - t0
            timings["total"] = time.perf_counter() - began
        if not traced:
            return {}
        files = {}
        for role in sc.roles():
            path = r.tmp / f"{sc.name}.{role}.json"
            files[out / path.name] = path.read_text(encoding="utf-8")
        write_all_atomic(files)
        return {p.stem: p for p in files}
    finally:
        r.close()


class _Run:
    """One run of a scenario of several processes: its Redis server, traced processes and clients."""

    def __init__(self, sc: ProcessScenario, deadline: Deadline) -> None:
        self.sc, self.deadline = sc, deadline
        self.redis_port, *server_ports = free_ports(1 + len(sc.processes))
        self.ports = {p.role: port if p.kind == "server" else 0 for p, port in zip(sc.processes, server_ports)}
        self.tmp = Path(tempfile.mkdtemp(prefix="dispel-processes-"))
        self.children: dict[str, TracedProcess] = {}
        self.clients: dict[str, ClientProcess] = {}
        self.server_of = dict(sc.clients)
        self.connected: dict[str, int] = {p.role: 0 for p in sc.processes}
        self.redis: RedisServer | None = None

    def start(self, traced: bool, redact: tuple[str, ...]) -> None:
        sc, deadline = self.sc, self.deadline
        queue = f"redis://127.0.0.1:{self.redis_port}/0"
        self.redis = RedisServer(self.redis_port, time.monotonic() + min(10.0, deadline.remaining()))
        for p in sc.processes:
            argv = [sys.executable, "-m", "dispel.run.multiprocess_child", p.role, p.kind, p.module, queue, str(self.ports[p.role]),
                    str(self.tmp / f"{sc.name}.{p.role}.json"), str(self.redis_port)]
            if not traced:
                argv.append("--untraced")
            argv += [f"--redact={pattern}" for pattern in (*sc.redact, *redact)]
            self.children[p.role] = TracedProcess(sc.name, p.role, argv)
        # the clients' processes start beside the servers' (each connects only at its step)
        for who, role in sc.clients:
            self.clients[who] = ClientProcess(self.ports[role])
        for child in self.children.values():
            child.expect("start", "ready", deadline.remaining())

    def redis_alive(self, spec: str) -> None:
        assert self.redis is not None
        if not self.redis.alive():
            raise DispelError(f"scenario {self.sc.name!r}: step {spec!r}: process redis-server died (exit {self.redis.proc.returncode})")

    def step(self, spec: str) -> None:
        """One step, then every process settled: handlers first, everywhere (what they publish is
        then in every listener's socket), then each listener, until it waits on its socket with
        nothing left to read."""
        sc, deadline, children = self.sc, self.deadline, self.children
        who, _, rest = spec.partition(":")
        step, _, count = rest.partition("*")
        self.redis_alive(spec)
        for child in children.values():
            child.ask(spec, f"begin {spec}", deadline.remaining())
        if who in self.server_of:
            self.client_step(spec, who, step, int(count or 1))
        elif who in children:
            children[who].ask(spec, f"run {spec}", deadline.remaining())
        else:
            raise DispelError(f"scenario {sc.name!r}: step {spec!r}: no client or process {who!r}")
        self.redis_alive(spec)
        for role, child in children.items():
            child.ask(spec, f"settle {spec} {self.connected[role]} {deadline.remaining():.3f}", deadline.remaining())
        for child in children.values():
            child.ask(spec, f"end {spec} {deadline.remaining():.3f}", deadline.remaining())
        self.redis_alive(spec)

    def client_step(self, spec: str, who: str, step: str, count: int) -> None:
        sc, deadline, server = self.sc, self.deadline, self.server_of[who]
        try:
            self.clients[who].step(step, deadline.remaining(), count)
        except DispelError as exc:
            raise DispelError(f"scenario {sc.name!r}: step {spec!r}: client {who} on {server}: {exc}") from None
        if step == "connect":
            self.connected[server] += 1
            # its server's listener subscribes at its first connection: wait for it,
            # so that the processes connect to Redis in the same order every run
            want = sum(1 for n in self.connected.values() if n)
            assert self.redis is not None
            while self.redis.subscribers() < want:
                if deadline.remaining() <= 0:
                    raise DispelError(f"scenario {sc.name!r}: step {spec!r}: {server} never subscribed to {CHANNEL!r}")
                time.sleep(0.005)
        elif step == "disconnect":
            self.connected[server] -= 1

    def finish(self) -> None:
        """Clients closed; then finishing (a server's shutdown waits for its poll) and writing
        (normalizing the trace) run in every process at once: sent to all, then the answers read."""
        for client in self.clients.values():
            client.close()
        self.clients.clear()
        children, deadline = self.children.values(), self.deadline
        for child in children:
            child.send("finish")
        ids: dict[str, str] = {}
        for child in children:
            ids.update(json.loads(child.expect("stop", "ok", deadline.remaining())))
        for child in children:
            child.send(f"write {json.dumps(ids)}")
        for child in children:
            child.expect("stop", "ok", deadline.remaining())

    def close(self) -> None:
        for client in self.clients.values():
            try:
                client.close()
            except Exception:  # noqa: BLE001, S110 - closing what is left, whatever state it is in
                pass
        for child in self.children.values():
            child.close()
        if self.redis is not None:
            self.redis.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
