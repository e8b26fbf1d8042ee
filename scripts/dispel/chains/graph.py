"""A trace as a graph (pure): events by index, children, ancestors and the waits each wake-up ended; what an event says."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from ..model import (
    EDGE_THREAD_START,
    EDGE_WAKE,
    DispelError,
    Event,
    Source,
    TraceFile,
)
from ..tracefiles.values import value_text_to_python

SOCKET_C = "_socket:socket."  # the probes of the C socket methods: where chains end


class JourneyError(DispelError):
    """A journey could not be followed to its sink; names the last hop reached."""


# ------------------------------------------------------------------ the trace as a graph


class TraceGraph:
    """Lookups over one TraceFile: the call tree per thread and the cross-thread edges."""

    def __init__(
        self, trace: TraceFile, lines: Mapping[Source, Sequence[str]] | None = None, links: Sequence[tuple[int, int, str]] = ()
    ) -> None:
        self.trace = trace
        self.lines = lines or {}  # source text, where known: tells a generator's yield
        self.events = trace.events
        self.children: dict[int, list[int]] = {}
        self.by_thread: dict[str, list[int]] = {}
        for e in self.events:
            self.by_thread.setdefault(e.thread, []).append(e.index)
            if e.parent >= 0:
                self.children.setdefault(e.parent, []).append(e.index)
        # Cross-thread edges (from, to): Thread.start -> the new thread's root,
        # and Condition.notify -> the Condition.wait it ended.
        self.cross: list[tuple[int, int, str]] = []
        for t in trace.threads:
            if t.started_by >= 0:
                self.cross.append((t.started_by, t.root, EDGE_THREAD_START))
        for w in trace.wakeups:
            self.cross.append((w.notify, w.wait, EDGE_WAKE))
        # edges between processes (a merged trace's, joins.cross_edges)
        self.cross.extend(links)
        self.cross.sort()
        # a gevent program's trace: its greenlets' top calls are made by gevent's hidden code
        self.green = any(t.name == "hub" for t in trace.threads)

    def ev(self, i: int) -> Event:
        return self.events[i]

    def ancestors(self, i: int) -> list[int]:
        """i, its parent, ... up to its thread's root."""
        out = []
        while i >= 0:
            out.append(i)
            i = self.events[i].parent
        return out

    def find(self, pred: Callable[[Event], bool], thread: str | None = None, after: int = -1, before: int | None = None) -> list[int]:
        idx = self.by_thread[thread] if thread else range(len(self.events))
        return [i for i in idx if i > after and (before is None or i < before) and pred(self.events[i])]

    def descend(self, start: int, pred: Callable[[Event], bool]) -> int:
        """From ``start`` down through the last callee matching pred, as deep as it goes."""
        here = start
        while True:
            kids = [c for c in self.children.get(here, []) if pred(self.events[c])]
            if not kids:
                return here
            here = kids[-1]


def str_arg(e: Event, name: str) -> str | None:
    """An argument's value as the Python string it was; None when it was not a string (or not shown)."""
    v = next((a.text for a in e.args if a.name == name), None)
    if v is None or v == "None":
        return None
    try:
        value = value_text_to_python(v)
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, str) else None


def mentions(e: Event, needles: Sequence[str]) -> bool:
    """Does any value of ``e`` contain one of ``needles``?"""
    texts = [a.text for a in e.args]
    if e.ret is not None:
        texts.append(e.ret.text)
    return any(n in t for t in texts for n in needles)


def is_sink(*names: str) -> Callable[[Event], bool]:
    keys = {SOCKET_C + n for n in names}
    return lambda e: e.func in keys


