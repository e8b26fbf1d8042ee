"""Chains: pure functions from a trace to one ordered chain of hops per journey, joined across threads by happens-before edges.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from .. import catalog
from ..catalog import Journey
from ..model import (
    EDGE_CALL,
    EDGE_QUEUE,
    EDGE_RETURN,
    Chain,
    DispelError,
    Event,
    Hop,
    Join,
    Source,
    TraceFile,
)
from . import across  # across processes
from .graph import SOCKET_C, TraceGraph
from .hand_written import (
    find_across_servers,
    find_emit_external,
    find_polling,
    find_upgrade,
    wire_close,
    wire_frames,
    wire_handshake,
    wire_of,
    wire_on,
    wire_polling,
    wire_queue,
)
from .makers import walk_with_producers

# How the journeys whose finders live here are found in their trace (catalog.Journey.finder;
# dispel.chains.finders.FINDERS holds them all) and which wire bytes a page decodes
# (catalog.Journey.wire): parts (each a list of waypoints, the first an entry) and the values
# worth showing.
#
# run, handshake, on, emit, ack, broadcast and disconnect are derived (dispel.chains.derive, by what
# Flask-SocketIO calls, for any app); polling and upgrade stay hand-written here because the
# derivation cannot express them yet: they are the transport's journeys (a long-poll GET
# answered by NOOP, the probe and the UPGRADE packet), which no handler, emit or ack marks,
# and their waypoints are Engine.IO packets ('2probe', '5', '6') rather than the app's events.
# emit-external and across-servers stay hand-written too: they follow a message through Redis
# between processes (a merged trace, joins.py), which the derivation over one app's trace does
# not know.
Finder = Callable[[TraceGraph], tuple[list[list[int]], tuple[str, ...]]]
HAND_WRITTEN_FINDERS: dict[str, Finder] = {
    "polling": find_polling,
    "upgrade": find_upgrade,
    "emit-external": find_emit_external,
    "across-servers": find_across_servers,
}
WIRES: dict[str, Callable[[TraceGraph, list[list[int]]], tuple]] = {
    "": lambda g, parts: (),
    "handshake": wire_handshake,
    "on": wire_on,
    "sent": lambda g, parts: wire_of(g, parts, "data"),
    "frames": wire_frames,
    "disconnect": wire_close,
    "polling": wire_polling,
    "queue": wire_queue,
}


def build(
    trace: TraceFile, journey: Journey, lines: Mapping[Source, Sequence[str]] | None = None, find: Finder | None = None,
    links: Sequence[tuple[int, int, str]] = (),
) -> Chain:
    """One journey's chain from a trace (pure). ``lines`` gives source text for line_text (and
    tells a generator's yield); ``find`` replaces the journey's finder (tests try other finders
    on the same trace); ``links``: edges between processes of a merged trace."""
    g = TraceGraph(trace, lines, links)
    find = find or HAND_WRITTEN_FINDERS.get(journey.finder)
    if find is None:
        raise DispelError(f"journey {journey.name!r}: its finder {journey.finder!r} is in dispel.chains.finders; build it with finders.build")
    parts, shown = find(g)
    steps, made = walk_with_producers(g, parts)
    hops = []
    for n, (i, edge) in enumerate(steps):
        e = g.ev(i)
        func = trace.funcs[e.func]
        nxt = steps[n + 1] if n + 1 < len(steps) else None
        if nxt is not None and nxt[1] == EDGE_CALL:
            line = g.ev(nxt[0]).call_line  # the call that leads on
        elif (nxt is not None or e.raised) and e.return_line:
            line = e.return_line  # it returned (or handed off, or raised: the journey ends there) from here
        else:
            line = func.first_line
        if func.is_c:
            line = 0
        text = ""
        if lines is not None and line and func.source in lines:
            src = lines[func.source]
            text = src[line - 1].strip() if 0 < line <= len(src) else ""
        value = _shown_value(e, shown)
        if nxt is None and e.raised:
            value = "raised an exception: the call ended here, at the highlighted line"
        elif e.raised and nxt is not None and nxt[1] == EDGE_RETURN:
            value = "raised an exception: it left this call here, at the highlighted line, to its caller"
        hops.append(Hop(func, line, e.thread, edge, i, value, text))
    number: dict[int, int] = {}
    for n, (i, _) in enumerate(steps, 1):
        number.setdefault(i, n)
    joins = tuple(sorted({Join(number[p], number[u], kind) for p, u, kind in made if p in number and u in number}, key=lambda j: (j.user, j.producer)))
    relayed = across.relays(trace) if any(kind == EDGE_QUEUE for _, _, kind in links) else ()
    return Chain(journey.name, journey.title, trace.scenario, tuple(hops), WIRES[journey.wire](g, parts), joins, relayed)


def _shown_value(e: Event, needles: Sequence[str]) -> str | None:
    """The value that explains a hop: the one showing what the journey follows, or a sink's bytes."""
    values = list(e.args) + ([e.ret] if e.ret else [])
    for v in values:
        if needles and any(n in v.text for n in needles):
            return f"{v.name} = {v.text}"
    if e.func.startswith(SOCKET_C):
        for v in values:
            if v.text.startswith(("b'", 'b"')):
                return f"{v.name} = {v.text}"
    return None


def scenario_trace(traces: Mapping[str, TraceFile], name: str) -> tuple[TraceFile | None, list[tuple[int, int, str]]]:
    """A scenario's trace: its own file, or its processes' traces merged (joins.merge) with
    the edges the message queue makes between them; (None, []) when a trace is missing."""
    if name in traces:
        return traces[name], []
    sc = catalog.PROCESS_SCENARIOS.get(name)
    if sc is None or not all(n in traces for n in sc.trace_names()):
        return None, []
    merged = across.merge({n: traces[n] for n in sc.trace_names()})
    return merged, across.cross_edges(merged)
