"""Scenarios: run the sample app in-process under a recorder and drive it with a real Socket.IO client, step by step, each with a deadline."""
from __future__ import annotations

import gc
import importlib
import importlib.util
import logging
import socket
import sys
import threading
import time
from types import CodeType
from typing import Callable, Protocol

from .catalog import DISTS, HANDLER_THREADS, PER_CONNECTION_THREADS, STDLIB_TRACED, scenario
from .model import DispelError
from .record import Tracer



def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Deadline:
    def __init__(self, scenario_name: str, seconds: float) -> None:
        self.scenario = scenario_name
        self.end = time.monotonic() + seconds
        self.seconds = seconds

    def left(self, step: str) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise DispelError(
                f"scenario {self.scenario!r}: step {step!r} did not finish within the "
                f"{self.seconds:g}s deadline (raise it with --timeout)"
            )
        return left

    def wait_for(self, step: str, done: Callable[[], bool], poll: float = 0.005) -> None:
        while not done():
            self.left(step)
            time.sleep(poll)


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as werkzeug binds
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise DispelError(f"port {port} is already in use; choose another with --port or stop what holds it") from None


def _find_server(port: int):
    """The werkzeug server listening on ``port`` (it offers no handle of its own)."""
    from werkzeug.serving import BaseWSGIServer

    for obj in gc.get_objects():
        if isinstance(obj, BaseWSGIServer) and obj.port == port:
            return obj
    return None


class StepClient(Protocol):
    """A real Socket.IO client in another process, driven one named step at a time."""

    def step(self, name: str, timeout: float, count: int = 1) -> None: ...

    def close(self) -> None: ...


def run(
    name: str,
    recorder: Tracer,
    start_client: Callable[[int], StepClient],
    app_module: str = "sample_app.app",
    timeout: float = 30.0,
    port: int | None = None,
    timings: dict[str, float] | None = None,
):
    """Run scenario ``name`` with ``recorder`` tracing the server side only; returns the app module.

    ``start_client(port)`` starts the client (the CLI runs it as a subprocess);
    this thread drives it with tracing paused. Raises DispelError naming the
    step that failed or ran past the deadline. Leaves no thread or socket behind.
    """
    sc = scenario(name)
    deadline = _Deadline(name, timeout)
    logging.getLogger("werkzeug").setLevel(logging.CRITICAL)
    # With a long switch interval a thread keeps the GIL until it blocks, so each
    # thread's sequence of calls no longer depends on preemption: traces repeat.
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(5.0)
    port = port or free_port()
    _check_port_free(port)
    server_errors: list[BaseException] = []
    clients: dict[str, StepClient] = {}
    connected: set[str] = set()
    server = None
    thread = None
    # The libraries are imported before tracing starts: their module bodies are
    # not part of any journey, while the app's own import (the decorators that
    # register its handlers) is.
    for lib in (*(d.package for d in DISTS), "werkzeug.serving"):
        importlib.import_module(lib)
    sys.modules.pop(app_module, None)
    try:
        recorder.start()
        with recorder.mark("import"):
            try:
                module = importlib.import_module(app_module)
            except Exception as exc:
                raise DispelError(
                    f"cannot import app module {app_module!r}: {type(exc).__name__}: {exc}"
                ) from None

        def serve() -> None:
            try:
                module.main(port)
            except BaseException as exc:  # reported by the driver, which names the step
                server_errors.append(exc)

        with recorder.mark("start"):
            thread = threading.Thread(target=serve, name="dispel-server", daemon=True)
            thread.start()
        with recorder.pause():
            deadline.wait_for("start", lambda: server_errors or _find_server(port) is not None)
            if server_errors:
                exc = server_errors[0]
                if isinstance(exc, OSError) and exc.errno == 98:
                    raise DispelError(
                        f"port {port} is already in use; choose another with --port or stop what holds it"
                    )
                raise DispelError(f"the app failed to start: {type(exc).__name__}: {exc}")
            server = _find_server(port)
            for spec in sc.steps:
                # "b:join*2": client b (default a) does step join twice; each client is
                # started before its first step, so its connection comes when the step says.
                who, _, rest = spec.rpartition(":")
                who = who or "a"
                step, _, count = rest.partition("*")
                if who not in clients:
                    clients[who] = start_client(port)
                client = clients[who]
                began = time.perf_counter()
                with recorder.mark(step):
                    try:
                        client.step(step, deadline.left(step), int(count or 1))
                    except Exception as exc:
                        raise DispelError(f"scenario {name!r}: {exc}") from None
                    # The server may still be finishing what the step caused.
                    if step.startswith("connect"):
                        connected.add(who)
                    elif step == "disconnect":
                        connected.discard(who)
                    deadline.wait_for(step, lambda: _server_settled(len(connected)))
                if timings is not None:
                    timings[step] = time.perf_counter() - began
    finally:
        try:
            with recorder.pause():
                for client in clients.values():
                    client.close()
                if server is None and not server_errors:
                    server = _find_server(port)
                # shutdown() waits for serve_forever to end: only a running server has one.
                if server is not None and thread is not None and thread.is_alive():
                    server.shutdown()
                if thread is not None:
                    thread.join(timeout=5)
        finally:
            recorder.stop()
            sys.setswitchinterval(old_interval)
    return module




def _server_settled(connected: int) -> bool:
    """Every event handler has finished, and the server holds no more connections than
    clients are connected."""
    alive = [t.name for t in threading.enumerate() if t.is_alive()]
    handlers = [n for n in alive if any(w in n for w in HANDLER_THREADS)]
    per_connection = [n for n in alive if any(w in n for w in PER_CONNECTION_THREADS)]
    return not handlers and len(per_connection) <= len(PER_CONNECTION_THREADS) * connected


def package_dirs(packages) -> list[str]:
    """The folders of import packages (to trace more code than the catalogue's DISTS)."""
    import os

    dirs: list[str] = []
    for pkg in packages:
        spec = importlib.util.find_spec(pkg)
        dirs.extend(os.path.join(loc, "") for loc in (spec.submodule_search_locations or ()) if spec)
    return dirs


def wanted_code(extra_dirs: tuple[str, ...] = ()) -> Callable[[CodeType], bool]:
    """The filter for the recorder: the Socket.IO stack, werkzeug, flask, the app, and the stdlib on the path."""
    import os
    import sysconfig

    roots: list[str] = []
    for pkg in (d.package for d in DISTS):
        spec = importlib.util.find_spec(pkg)
        for loc in spec.submodule_search_locations or ():
            roots.append(os.path.join(loc, ""))
    here = os.path.dirname(os.path.abspath(importlib.util.find_spec("sample_app").origin))
    roots.append(os.path.join(here, ""))
    roots.extend(os.path.join(d, "") for d in extra_dirs)
    stdlib = sysconfig.get_paths()["stdlib"]
    for rel in STDLIB_TRACED:
        roots.append(os.path.join(stdlib, rel))
    prefixes = tuple(roots)

    def want(code: CodeType) -> bool:
        # .py only: the app's Jinja templates compile to code named after the .html file
        return code.co_filename.startswith(prefixes) and code.co_filename.endswith(".py")

    return want
