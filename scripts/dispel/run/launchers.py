"""The step clients a scenario is driven by: dispel.run.sample_client in a subprocess, or the browser."""
from __future__ import annotations

import selectors
import socket
import subprocess
import sys
from contextlib import ExitStack
from typing import TYPE_CHECKING

from ..catalog import Scenario, client_names
from ..model import DispelError
from .pacer import PacerProcess

if TYPE_CHECKING:
    from .browser import BrowserClient


def free_ports(n: int = 1) -> list[int]:
    """``n`` distinct free ports on 127.0.0.1: all are bound at once, so no two are the same."""
    with ExitStack() as held:
        socks = [held.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


class ClientProcess:
    """The scenario client (dispel.run.sample_client) in a subprocess, answering one line per step."""

    module = "dispel.run.sample_client"

    def __init__(self, port: int, pace: float | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, str(port), *([] if pace is None else [str(pace)])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        # One selector for the whole run: opening one per step would take a file
        # descriptor at a random moment and shift the server's numbers.
        assert self.proc.stdout  # opened with PIPE
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)

    def step(self, name: str, timeout: float, count: int = 1) -> None:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(f"{name} {timeout:.3f} {count}\n")
        self.proc.stdin.flush()
        if not self.sel.select(timeout):
            raise DispelError(f"step {name!r} did not finish within {timeout:.1f}s (raise it with --timeout)")
        answer = self.proc.stdout.readline().strip()
        if answer != f"ok {name}":
            detail = answer.split(" ", 2)[2] if answer.startswith("error ") else (answer or "the client exited")
            raise DispelError(f"step {name!r} failed in the client: {detail}")

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.sel.close()
        if self.proc.stdout:
            self.proc.stdout.close()


class ClientStarter:
    """What starts the clients of scenario ``sc`` on a port: the browser, or dispel.run.sample_client.

    What takes long to start is started at once, before the app's import: the browser
    (browser.Launch), and, when ``port`` is known, one dispel.run.sample_client process for each client
    the steps name (each connects only at its step, and its pipes are opened before the
    server's first file descriptor). close() stops what no step took."""

    def __init__(self, sc: Scenario, port: int | None = None) -> None:
        self.sc, self.port = sc, port
        self.launch = None
        self.ready: list[ClientProcess] = []
        if sc.client == "browser":
            from .browser import Launch  # selenium is imported only for the browser

            self.launch = Launch()
        elif port is not None:
            self.ready = [ClientProcess(port, sc.pace) for _ in client_names(sc)]

    def __call__(self, port: int) -> ClientProcess | BrowserClient:
        if self.sc.client == "browser":
            from .browser import BrowserClient

            launch, self.launch = self.launch, None  # the one started ahead, for the first client
            return BrowserClient(port, launch)
        if self.ready and port == self.port:
            return self.ready.pop(0)
        return ClientProcess(port, self.sc.pace)

    def close(self) -> None:
        if self.launch is not None:
            self.launch.close()
            self.launch = None
        while self.ready:
            self.ready.pop().close()


class FileClientProcess(ClientProcess):
    """A scenario file's client (dispel.run.file_client) in a subprocess, answering one line per step;
    its first line is the client's spec. A long-polling client talks through dispel.run.pacer: its
    read loop's GET and its POSTs are concurrent requests, which the server would otherwise
    accept in whichever order they came."""

    module = "dispel.run.file_client"

    def __init__(self, port: int, spec: dict, pace: float | None = None) -> None:
        import json

        self.pacer = PacerProcess(port) if spec.get("transport") in ("polling", "upgrade") else None
        super().__init__(self.pacer.port if self.pacer else port, pace)
        # an http step goes to the server itself, never through the pacer
        self._send(json.dumps({**spec, "server_port": port}, sort_keys=True))

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.pacer is not None:
                self.pacer.close()

    def _send(self, line: str) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def run_step(self, step, label: str, timeout: float) -> None:
        """Do one step (a dispel.run.scenario_file.Step); DispelError names ``label`` and what went wrong."""
        import json

        assert self.proc.stdout
        self._send(json.dumps(step.to_json(), sort_keys=True))
        # the client has the step's own deadline; a little more here for its answer to arrive
        if not self.sel.select(min(timeout, step.timeout) + 2.0):
            raise DispelError(f"{label} did not finish within {min(timeout, step.timeout):g}s")
        answer = self.proc.stdout.readline().strip()
        if answer != "ok":
            detail = answer.removeprefix("error ") if answer else "the client exited"
            raise DispelError(f"{label} failed: {detail}")
