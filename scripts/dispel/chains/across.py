"""Joins across processes (pure): the traces of a scenario's processes as one trace, and the
edges that a message queue makes between them, found by data.

A process's trace knows nothing of the others. What joins them is what went over the
Redis connection: the bytes of a PUBLISH one process wrote, and the ``message`` push another
read with the same channel and message. The Redis server itself is not traced; it relays.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping

from .. import wire
from ..model import (
    EDGE_QUEUE,
    DispelError,
    Event,
    Relay,
    ThreadInfo,
    TraceFile,
    Value,
    WakeUp,
)
from ..tracefiles.values import bytes_of

SEP = "/"  # a merged trace's thread names are "<process role>/<thread>"


def process_of(thread: str) -> str:
    """The process role of a merged trace's thread name ("" in a trace of one process)."""
    return thread.split(SEP, 1)[0] if SEP in thread else ""


def merge(traces: Mapping[str, TraceFile]) -> TraceFile:
    """The traces of one scenario's processes (name -> trace, each with its process role) as
    one trace: events one process after another, thread names prefixed with the role,
    identity tokens kept apart. Steps and funcs are the union."""
    if not traces:
        raise DispelError("no traces to merge")
    scenarios = {t.scenario for t in traces.values()}
    if len(scenarios) != 1:
        raise DispelError(f"traces of different scenarios cannot be merged: {', '.join(sorted(scenarios))}")
    events: list[Event] = []
    threads: list[ThreadInfo] = []
    wakeups: list[WakeUp] = []
    funcs: dict = {}
    versions: dict[str, str] = {}
    steps: list[str] = []
    token_base = 0
    for name in sorted(traces, key=lambda n: traces[n].process):
        t = traces[name]
        if not t.process:
            raise DispelError(f"trace {name!r} names no process role: re-record its scenario")
        base = len(events)
        top = 0

        def shift(v: Value, token_base: int = token_base) -> Value:
            return v if not v.token else Value(v.name, v.text, v.token + token_base)

        for e in t.events:
            top = max([top, *(v.token for v in e.args), e.ret.token if e.ret else 0])
            events.append(Event(  # every field, as dataclasses.replace would (it is slower)
                e.index + base, e.func, f"{t.process}{SEP}{e.thread}", e.parent + base if e.parent >= 0 else -1,
                e.call_line, e.depth, e.end + base, e.step, tuple(shift(v) for v in e.args),
                shift(e.ret) if e.ret else None, e.raised, e.return_line,
            ))
        threads += [
            ThreadInfo(f"{t.process}{SEP}{th.name}", th.started_by + base if th.started_by >= 0 else -1, th.root + base)
            for th in t.threads
        ]
        wakeups += [WakeUp(w.notify + base, w.wait + base) for w in t.wakeups]
        funcs.update(t.funcs)
        versions.update(dict(t.versions))
        steps += [s for s in t.steps if s not in steps]
        token_base += top
    first = next(iter(traces.values()))
    return TraceFile(
        scenario=first.scenario, python=first.python, versions=tuple(sorted(versions.items())), steps=tuple(steps),
        funcs=funcs, threads=tuple(threads), events=tuple(events), wakeups=tuple(wakeups), process="",
    )


def _written(e: Event) -> bytes | None:
    if e.func not in ("_socket:socket.sendall", "_socket:socket.send"):
        return None
    return next((b for a in e.args if a.name == "data" and (b := bytes_of(a.text)) is not None), None)


def _read(e: Event) -> bytes | None:
    if e.func not in ("_socket:socket.recv", "_socket:socket.recv_into") or e.ret is None:
        return None
    return bytes_of(e.ret.text)


@dataclasses.dataclass(frozen=True)
class QueueEdge:
    """A message through Redis: the PUBLISH written at ``publish`` (one process) and the
    ``message`` push read at ``read`` (a subscriber, maybe the publisher's own listener)."""

    publish: int
    read: int
    channel: bytes
    message: bytes


def queue_edges(merged: TraceFile) -> list[QueueEdge]:
    """Every PUBLISH joined to every read of the same (channel, message) in a subscriber:
    the k-th publish of a payload to the k-th read of it on each reading thread."""
    publishes: dict[tuple[bytes, bytes], list[int]] = {}
    for e in merged.events:
        data = _written(e)
        found = wire.published(data) if data else None
        if found:
            publishes.setdefault(found, []).append(e.index)
    seen: dict[tuple[str, tuple[bytes, bytes]], int] = {}
    edges = []
    for e in merged.events:
        data = _read(e)
        for msg in wire.delivered(data) if data else ():
            n = seen.get((e.thread, msg), 0)
            seen[(e.thread, msg)] = n + 1
            sources = publishes.get(msg, [])
            if n < len(sources):
                edges.append(QueueEdge(sources[n], e.index, *msg))
    return edges


def cross_edges(merged: TraceFile) -> list[tuple[int, int, str]]:
    """The queue's edges as a TraceGraph's cross-thread edges."""
    return [(q.publish, q.read, EDGE_QUEUE) for q in queue_edges(merged)]


def published_at(merged: TraceFile, i: int) -> tuple[bytes, bytes]:
    """(channel, message) of the PUBLISH written at event ``i``."""
    data = _written(merged.events[i])
    found = wire.published(data) if data else None
    if not found:
        raise DispelError(f"event {i} writes no PUBLISH")
    return found


def delivery(merged: TraceFile, publish: int, reader_process: str) -> int:
    """The read in ``reader_process`` of the message published at ``publish``; a clear error
    when none carries it (the join is by data: the bytes must be equal)."""
    channel, message = published_at(merged, publish)
    for q in queue_edges(merged):
        if q.publish == publish and process_of(merged.events[q.read].thread) == reader_process:
            return q.read
    shown = message[:120].decode("utf-8", "replace")
    raise DispelError(
        f"no read in process {reader_process} carries the message that "
        f"{process_of(merged.events[publish].thread) or 'a process'} published on {channel.decode('utf-8', 'replace')!r} "
        f"(event {publish}: {shown}): the traces do not join; re-record the scenario"
    )


def relays(merged: TraceFile) -> tuple[Relay, ...]:
    """For every message read from the queue, in the order of the reads: who published it,
    which process read it, whether its listener handled it (or skipped it as its own), and
    how many packets that process then handed to its clients (calls of Engine.IO's Socket.send under
    its _handle_emit: python-socketio 5.8 and 5.16 reach it by other names)."""
    out = []
    events = merged.events
    for q in sorted(queue_edges(merged), key=lambda q: q.read):
        read = events[q.read]
        later = [i for i in range(q.read + 1, len(events)) if events[i].thread == read.thread]
        nxt = next((i for i in later if _read(events[i]) is not None), None)
        handled = next(
            (i for i in later if (nxt is None or i < nxt) and events[i].func.endswith(":PubSubManager._handle_emit")), None
        )
        sent = 0
        if handled is not None:
            sent = sum(1 for e in events[handled:events[handled].end + 1] if e.func == "engineio.socket:Socket.send")
        message = wire.queue_message(q.message) or {}  # JSON, or 5.8's pickle read as plain values
        out.append(Relay(
            process_of(events[q.publish].thread), str(message.get("event", "")), json.dumps(message.get("room")),
            process_of(read.thread), handled is not None, sent,
        ))
    return tuple(out)
