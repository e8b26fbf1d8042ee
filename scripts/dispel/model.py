"""Frozen values that flow between the stages: trace events, hops, chains, pins."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

# Version of the on-disk JSON formats (trace files, chain files); checked on load.
TRACE_SCHEMA = 1
CHAIN_SCHEMA = 1
LOCK_SCHEMA = 1


class DispelError(Exception):
    """A problem the user can fix; the CLI prints it as one line and exits non-zero."""


# How a pin names its revision: a commit (the rule), a tag (marked on the page), or docs (C code).
PINNED_COMMIT = "commit"
PINNED_TAG = "tag"
PINNED_DOCS = "docs"
PYTHON = "python"  # the lock's name for CPython's standard library


def normalize_dist(name: str) -> str:
    """PEP 503 name: ``Flask_SocketIO`` -> ``flask-socketio``."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True, order=True)
class Source:
    """Where a function's code lives, independent of this machine.

    ``dist`` is a distribution name (``python-engineio``), ``python`` for the
    standard library, ``sample_app`` for the traced app, or ``builtin`` for C code.
    ``path`` is relative to the distribution's install root (``engineio/socket.py``)
    or, for the standard library, CPython's ``Lib/`` path (``Lib/socketserver.py``).
    """

    dist: str
    version: str
    path: str


@dataclass(frozen=True, order=True)
class Func:
    """A function identity: module + qualname, and where its definition sits."""

    module: str
    qualname: str
    source: Source
    first_line: int  # line of ``def`` (after decorators); 0 for C functions
    last_line: int
    # True when the file has several functions of this qualname (a property's
    # getter and setter, two comprehensions): the key then carries the line.
    overloaded: bool = False

    @property
    def key(self) -> str:
        base = f"{self.module}:{self.qualname}"
        return f"{base}@{self.first_line}" if self.overloaded else base

    @property
    def is_c(self) -> bool:
        return self.source.dist == "builtin"


@dataclass(frozen=True)
class Value:
    """An observed argument or return value, normalized.

    ``text`` is a repr-like rendering (``'42["chat"]'``, ``b'\\x81\\x05'``,
    ``<list len=2>``); ``token`` names the object's identity within one trace
    (0 when identity carries nothing: the object was seen in one event only).
    """

    name: str
    text: str
    token: int = 0


@dataclass(frozen=True)
class Event:
    """One recorded call, detached from live frames (a row of a trace file).

    ``parent`` is the index of the nearest recorded caller on the same thread
    (-1 for a thread's root); ``call_line`` is the line in the parent that was
    executing when this call started; ``end`` is the index of the last event
    inside this call (itself for a leaf). Events of one thread are contiguous
    and in the order they ran.
    """

    index: int
    func: str  # Func.key; resolved through TraceFile.funcs
    thread: str
    parent: int
    call_line: int
    depth: int
    end: int
    step: str
    args: tuple[Value, ...] = ()
    ret: Value | None = None
    raised: bool = False
    return_line: int = 0  # the line it returned (or raised) from; 0 if it never did

    @property
    def returned(self) -> Value:
        """``ret``, for a call the caller knows returned a recorded value (an AttributeError,
        as ``ret.text`` would raise, when it did not)."""
        if self.ret is None:
            raise AttributeError(f"{self.func} (event {self.index}) returned no recorded value")
        return self.ret


def subtree_ends(parents: list[int]) -> list[int]:
    """For events given by their parents' indexes (a parent before its children), the index of
    each one's last descendant (itself when a leaf)."""
    end = list(range(len(parents)))
    for i in range(len(parents) - 1, -1, -1):
        parent = parents[i]
        if parent >= 0 and end[i] > end[parent]:
            end[parent] = end[i]
    return end


def with_ends(events: list[Event]) -> list[Event]:
    """Events with ``end`` set: the index of each one's last descendant (itself when a leaf)."""
    end = subtree_ends([e.parent for e in events])
    return [Event(**{**e.__dict__, "end": end[e.index]}) for e in events]


@dataclass(frozen=True)
class WakeUp:
    """A happens-before edge: ``notify`` (a Condition.notify call) ended ``wait`` on another thread."""

    notify: int
    wait: int


@dataclass(frozen=True)
class ThreadInfo:
    name: str  # logical, stable: main, server, request-1, ws-reader-1 ...
    started_by: int  # index of the Thread.start event that started it, -1 if unknown
    root: int  # index of its first recorded event


@dataclass(frozen=True)
class TraceFile:
    scenario: str
    python: str
    versions: tuple[tuple[str, str], ...]  # (distribution, version), sorted
    steps: tuple[str, ...]  # the scenario's steps, in order
    funcs: dict[str, Func] = field(hash=False, compare=True)
    threads: tuple[ThreadInfo, ...]
    events: tuple[Event, ...]
    wakeups: tuple[WakeUp, ...]
    # the process's role in a scenario of several processes ("server-a", "emitter"); "" for one
    process: str = ""
    # (thread, iterations) the recorder kept a count of instead of rows (record.fold), by thread
    folded: tuple[tuple[str, int], ...] = ()


# Edges a chain can take from one hop to the next.
EDGE_ENTRY = "entry"  # the first hop, in the user's code
EDGE_CALL = "call"  # the previous hop called this one
EDGE_RETURN = "return"  # the previous hop returned to this one, its caller
EDGE_THREAD_START = "thread-start"  # Thread.start() in the previous hop's thread
EDGE_WAKE = "wake-up"  # Condition.notify() woke the wait() in this thread
EDGE_DATA = "data"  # another thread took the very object the previous hop passed on (a queue's put and get)
EDGE_QUEUE = "via-redis"  # a message published in one process, read by another's listener (chains/across.py)
EDGES = (EDGE_ENTRY, EDGE_CALL, EDGE_RETURN, EDGE_THREAD_START, EDGE_WAKE, EDGE_DATA, EDGE_QUEUE)


@dataclass(frozen=True)
class Hop:
    """One link of a chain: a function that ran, on a thread, reached by an edge.

    ``line`` is the executed line inside ``func`` that leads on to the next hop
    (the call site); for the last hop it is the function's first line.
    """

    func: Func
    line: int
    thread: str
    edge: str
    event: int  # index of the event in the trace it came from
    value: str | None = None  # the observed value that explains the step
    line_text: str = ""  # the executed line's source text, stripped


# How a producer's value reached the hop that used it (a Join between two hops of a chain).
JOIN_RESULT = "result"  # the producer returned the value, and the user received it as an argument
JOIN_YIELD = "yield"  # a generator yielded the value to the loop that then called the user
JOIN_STORED = "stored"  # the producer made an object, kept in a container, that the user took out later
JOIN_PARSED = "parsed"  # the producer parsed received text into the object the user received
JOINS = (JOIN_RESULT, JOIN_YIELD, JOIN_STORED, JOIN_PARSED)


@dataclass(frozen=True)
class Join:
    """A value's producer and the hop that used it, both hops of the same chain (1-based numbers)."""

    producer: int
    user: int
    kind: str  # one of JOINS


@dataclass(frozen=True)
class WireField:
    name: str
    value: str
    meaning: str


@dataclass(frozen=True)
class WireLayer:
    """One protocol layer of a captured message, decoded (WebSocket, Engine.IO …)."""

    layer: str
    raw: str  # printable form of the bytes of this layer
    fields: tuple[WireField, ...]


@dataclass(frozen=True)
class Relay:
    """What one process did with one message it read from the message queue (facts of the
    merged traces of a scenario of several processes; see joins.relays)."""

    publisher: str  # the process role that published it
    event: str  # the event it carries
    room: str  # its room as JSON ("null": every client of the namespace)
    reader: str  # the process role whose listener read it
    handled: bool  # its listener passed it to _handle_emit (False: its own host id, skipped)
    sent: int  # packets handed to this process's clients for it


@dataclass(frozen=True)
class Chain:
    journey: str
    title: str
    scenario: str
    hops: tuple[Hop, ...]
    wire: tuple[WireLayer, ...] = ()
    joins: tuple[Join, ...] = ()  # producers joined to the hops that used their values
    relays: tuple[Relay, ...] = ()  # a scenario of several processes: every message through the queue


@dataclass(frozen=True)
class FilePin:
    """An installed file and the upstream blob it was proven identical to."""

    installed: str  # path inside the distribution's install root
    path: str  # path inside the repository
    blob: str  # git blob SHA-1 of the file's bytes


@dataclass(frozen=True)
class Pin:
    """A distribution pinned to its upstream repository at an exact commit."""

    dist: str
    version: str
    forge: str  # "github"
    repo: str  # OWNER/NAME
    tag: str
    commit: str  # 40-hex; "" when only the tag could be resolved
    pinned: str  # "commit" or "tag" (tag-only pins are marked on the page)
    files: tuple[FilePin, ...]
    # the license files the distribution ships (in its .dist-info), proven at paths of the same commit's tree
    licenses: tuple[FilePin, ...] = ()


@dataclass(frozen=True)
class Lock:
    """The committed lock: CPython's pin plus one pin per distribution (sorted by name)."""

    python: Pin
    dists: tuple[Pin, ...]

    def pin(self, dist: str) -> Pin:
        name = normalize_dist(dist)
        if name == PYTHON:
            return self.python
        for p in self.dists:
            if p.dist == name:
                return p
        raise DispelError(f"{dist} is not in the lock; add it to `dispel pin` and run it")

    def pin_for(self, source: Source) -> Pin:
        """The pin of a hop's source; DispelError when the lock pins another version."""
        if source.dist in ("builtin", "sample_app"):
            raise DispelError(f"{source.dist} code has no upstream pin ({source.path})")
        p = self.pin(source.dist)
        if source.version and source.version != p.version:
            raise DispelError(
                f"{source.dist}: the chains ran {source.version}, the lock pins {p.version}: "
                "run make pin, then make regen"
            )
        return p


# --------------------------------------------------------------------------- source text
# The one way a source file's bytes become lines: fingerprints and blobs read the bytes, pages,
# chains and the prose check the text.


def source_lines(text: str | bytes) -> list[bytes]:
    """The file's lines as bytes, each keeping its own line ending.

    Split on b"\\n" only: str.splitlines would also split on form feeds and other
    separators that Python's own line numbers do not count.
    """
    data = text.encode("utf-8") if isinstance(text, str) else text
    lines = data.split(b"\n")
    out = [line + b"\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


def text_lines(data: str | bytes) -> list[str]:
    """A source file's lines as text (UTF-8, undecodable bytes replaced), without line endings;
    index ``n - 1`` is line ``n``, as Python numbers them (see source_lines)."""
    return [line.decode("utf-8", errors="replace").rstrip("\r\n") for line in source_lines(data)]
