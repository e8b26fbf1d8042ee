"""One traced process of a scenario of several (`python -m dispel.run.multiprocess_child ROLE KIND MODULE QUEUE PORT OUT REDIS_PORT [--untraced] [--redact=REGEX ...]`).

KIND is ``server`` (MODULE's ``main(port, message_queue)`` serves the app, one of several
servers joined by the message queue) or ``emitter`` (MODULE's ``main(message_queue)`` emits
from a process with no Socket.IO server of its own). Under the recorder it imports
its app module, starts what it runs, says ``ready`` and then obeys one line at a time:

- ``begin STEP``: the rows recorded from now on belong to STEP;
- ``run STEP``: the emitter emits (traced, on its main thread);
- ``settle STEP CONNECTED``: waits until no event handler runs and the server holds no
  more connections than CONNECTED clients;
- ``end STEP``: waits until the queue's listener thread is blocked on its socket with
  nothing unread, then closes STEP;
- ``finish``: stops the server and the recorder; answers ``ok {RANDOM ID: PLACEHOLDER}``
  (its host id on the queue, its session ids, its Redis pools);
- ``write {ID: PLACEHOLDER}``: writes its trace to OUT with every process's ids replaced, and exits.

Each answer is ``ok``, or ``error MESSAGE``. The parent (dispel.run.multiprocess) names the
process and the step of any error.
"""
from __future__ import annotations

import importlib
import json
import os
import select
import sys
import threading
import time
from contextlib import AbstractContextManager
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from .. import catalog
from ..model import DispelError
from ..pins.installed import FlaskSecrets
from ..record.recorder import NullRecorder
from . import modes

if TYPE_CHECKING:
    from ..tracefiles.normalize import RawCall

SETTLE_POLL = 0.005
# Redis numbers its connections in the order they come: the id in a RESP3 HELLO reply.
REDIS_PATTERNS = ((r"(\$2\r\nid\r\n):\d+", r"\1:<redis-client-id>"),)
# The listener is idle when found blocked on its socket, with nothing unread, this many times in a row.
IDLE_CHECKS = 3


def _listener_idle(manager) -> bool:
    """True when the message queue's listener thread is blocked in recv() with nothing to read
    (or has not started: a server's manager starts it at its first connection)."""
    thread = getattr(manager, "thread", None)
    pubsub = getattr(manager, "pubsub", None)
    if thread is None:
        return True
    conn = getattr(pubsub, "connection", None)
    sock = getattr(conn, "_sock", None)
    if sock is None:
        return False  # still connecting
    frame = sys._current_frames().get(thread.ident)
    # blocked in the socket read (recv is the recorder's probe when traced)
    if frame is None or frame.f_code.co_name not in ("recv", "_read_from_socket"):
        return False
    readable, _, _ = select.select([sock], [], [], 0)
    return not readable


class _Child:
    def __init__(self, role: str, kind: str, module: str, queue: str, port: int, out: str, redis_port: int, traced: bool = True,
                 redact: tuple[str, ...] = ()) -> None:
        from ..record.cores import recorder_for
        from . import runner as scenarios

        self.role, self.kind, self.module_name, self.queue, self.port, self.out = role, kind, module, queue, port, out
        self.redis_port = redis_port
        self.scenarios = scenarios
        extra = tuple(scenarios.package_dirs(d.package for d in catalog.QUEUE_DISTS))
        for lib in (*(d.package for d in (*catalog.DISTS, *catalog.QUEUE_DISTS)), "werkzeug.serving"):
            importlib.import_module(lib)
        self.traced = traced
        self.recorder = recorder_for(scenarios.wanted_code(extra)) if traced else NullRecorder()
        self.steps: dict[str, AbstractContextManager[object]] = {}
        self.module: ModuleType | None = None
        self.errors: list[BaseException] = []
        self.thread: threading.Thread | None = None
        self.server = None
        self.recorded: tuple[list[RawCall], dict] | None = None
        self.secrets = FlaskSecrets()
        self.redact = redact  # --redact=REGEX: traced values matching one become <redacted>

    # ---------------------------------------------------------------- commands

    def start(self, timeout: float) -> None:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.CRITICAL)
        sys.setswitchinterval(5.0)  # as scenarios.run: each thread keeps the GIL until it blocks
        if self.traced:  # every Flask app's secrets, whichever module makes it (dispel.sample_app.cluster serves app.py's)
            self.secrets.install()
        self.recorder.start()
        with self.recorder.mark("import"):
            self.module = module = importlib.import_module(self.module_name)
        if self.kind != "server":
            return

        def serve() -> None:
            try:
                module.main(self.port, self.queue)
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                self.errors.append(exc)

        with self.recorder.mark("start"):
            self.thread = threading.Thread(target=serve, name="dispel-server", daemon=True)
            self.thread.start()
        with self.recorder.pause():
            end = time.monotonic() + timeout
            while not self.errors and self.scenarios.find_server(self.port) is None:
                if time.monotonic() > end:
                    raise DispelError(f"the server did not listen on its port within {timeout:g}s")
                time.sleep(SETTLE_POLL)
            if self.errors:
                exc = self.errors[0]
                raise DispelError(f"the app failed to start: {type(exc).__name__}: {exc}")
            self.server = self.scenarios.find_server(self.port)

    def _module(self) -> ModuleType:
        if self.module is None:
            raise DispelError(f"{self.role} has not imported its module: start it first")
        return self.module

    def begin(self, step: str) -> None:
        mark = self.recorder.mark(step)
        mark.__enter__()
        self.steps[step] = mark

    def run(self, step: str) -> None:
        if self.kind != "emitter":
            raise DispelError(f"{self.role} is a server: it runs no step of its own")
        self._module().main(self.queue)

    def settle(self, step: str, connected: int, timeout: float) -> None:
        if self.kind != "server":
            return
        with self.recorder.pause():
            self._wait(step, timeout, lambda: self.scenarios.server_settled(connected))

    def end(self, step: str, timeout: float) -> None:
        if self.kind == "server":
            with self.recorder.pause():
                manager = self._module().socketio.server.manager
                seen = [0]

                def idle() -> bool:
                    seen[0] = seen[0] + 1 if _listener_idle(manager) else 0
                    return seen[0] >= IDLE_CHECKS

                self._wait(step, timeout, idle)
        self.steps.pop(step).__exit__(None, None, None)

    def finish(self) -> dict[str, str]:
        """Stop the server and the recorder; this process's random ids -> placeholders naming
        it (its host id on the queue, its session ids, its Redis pools)."""
        from ..pins.installed import code_roots
        from ..tracefiles.recording import random_ids, recorded_calls

        try:
            with self.recorder.pause():
                if self.server is not None and self.thread is not None and self.thread.is_alive():
                    self.server.shutdown()
                if self.thread is not None:
                    self.thread.join(timeout=5)
        finally:
            self.recorder.stop()
        if not self.traced:
            return {}
        self.recorded = recorded_calls(self.recorder, code_roots(tuple(d.name for d in catalog.QUEUE_DISTS)))
        ids = random_ids(self.recorded[0], f"@{self.role}")
        socketio = getattr(self.module, "socketio", None)
        host_id = getattr(getattr(getattr(socketio, "server", None), "manager", None), "host_id", None)
        if host_id:
            ids[host_id] = f"<host-id@{self.role}>"
        return ids

    def write(self, ids: dict[str, str]) -> None:
        """Write the trace, with every process's random ids (``ids``) as placeholders."""
        from ..pins.installed import code_roots
        from ..project import write_atomic
        from ..tracefiles.codec import trace_to_json
        from ..tracefiles.recording import trace_from_recording

        if not self.traced:
            return
        dists = (*catalog.DIST_NAMES, *(d.name for d in catalog.QUEUE_DISTS))
        versions = {d: metadata.version(d) for d in dists}
        trace = trace_from_recording(
            self.recorder, "queue", self.port or None, code_roots(tuple(d.name for d in catalog.QUEUE_DISTS)),
            versions, self.secrets.settings(), self.redact, process=self.role, ports={self.redis_port: "<redis-port>"},
            ids=ids, recorded=self.recorded, patterns=REDIS_PATTERNS,
        )
        write_atomic(Path(self.out), trace_to_json(trace))

    def _wait(self, step: str, timeout: float, done) -> None:
        end = time.monotonic() + timeout
        while not done():
            if time.monotonic() > end:
                alive = ", ".join(sorted(t.name for t in threading.enumerate()))
                raise DispelError(f"step {step!r} did not settle within {timeout:g}s (threads: {alive})")
            time.sleep(SETTLE_POLL)


def main(argv: list[str]) -> int:
    with modes.unset_is_threading():  # the servers and the emitter run in threading mode (an emitter leaves it unset)
        return _main(argv)


def _main(argv: list[str]) -> int:
    role, kind, module, queue, port, out, redis_port = argv[0], argv[1], argv[2], argv[3], int(argv[4]), argv[5], int(argv[6])
    flags = argv[7:]
    redact = tuple(f.removeprefix("--redact=") for f in flags if f.startswith("--redact="))
    child = _Child(role, kind, module, queue, port, out, redis_port, traced="--untraced" not in flags, redact=redact)

    # The protocol keeps the real stdout; what the app prints (Flask's banner) goes to stderr.
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def answer(text: str) -> None:
        proto.write(text.replace("\n", " ") + "\n")
        proto.flush()

    try:
        child.start(30.0)
    except Exception as exc:  # noqa: BLE001 - any failure is answered to the parent, which names it
        answer(f"error {exc if isinstance(exc, DispelError) else f'{type(exc).__name__}: {exc}'}")
        return 1
    answer("ready")
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        command, args = parts[0], parts[1:]
        try:
            if command == "begin":
                child.begin(args[0])
            elif command == "run":
                child.run(args[0])
            elif command == "settle":
                child.settle(args[0], int(args[1]), float(args[2]))
            elif command == "end":
                child.end(args[0], float(args[1]))
            elif command == "finish":
                answer("ok " + json.dumps(child.finish()))
                continue
            elif command == "write":
                # every process's random ids, so that all traces name them alike
                child.write(json.loads(line.split(" ", 1)[1]))
                answer("ok")
                return 0
            else:
                raise DispelError(f"unknown command {command!r}")
        except Exception as exc:  # noqa: BLE001 - any failure is answered to the parent, which names it
            answer(f"error {exc if isinstance(exc, DispelError) else f'{type(exc).__name__}: {exc}'}")
            continue
        answer("ok")
    return 1  # the parent went away without saying stop: no trace is written


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
