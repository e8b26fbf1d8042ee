"""A deadline shared by the steps of one scenario run (in-process or of several processes)."""
from __future__ import annotations

import time
from collections.abc import Callable

from ..model import DispelError


class Deadline:
    """``seconds`` from now. ``remaining()`` never raises; ``left(step)`` and ``wait_for`` raise one
    line naming the scenario (when given) and the step that ran past it."""

    def __init__(self, seconds: float, scenario: str | None = None) -> None:
        self.scenario = scenario
        self.end = time.monotonic() + seconds
        self.seconds = seconds

    def remaining(self) -> float:
        return max(self.end - time.monotonic(), 0.0)

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
