"""The step clients a scenario is driven by: dispel.client in a subprocess, or the browser."""
from __future__ import annotations

import selectors
import subprocess
import sys
from typing import Callable

from .catalog import Scenario
from .model import DispelError


class ClientProcess:
    """The scenario client (dispel.client) in a subprocess, answering one line per step."""

    def __init__(self, port: int, pace: float | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dispel.client", str(port), *([] if pace is None else [str(pace)])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        # One selector for the whole run: opening one per step would take a file
        # descriptor at a random moment and shift the server's numbers.
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


def client_starter(sc: Scenario) -> Callable[[int], object]:
    """What starts a client of scenario ``sc`` on a port: the browser, or dispel.client."""
    if sc.client == "browser":
        from .browser import BrowserClient  # selenium is imported only for the browser

        return BrowserClient
    return lambda port: ClientProcess(port, sc.pace)
