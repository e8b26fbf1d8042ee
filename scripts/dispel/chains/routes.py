"""Routes between waypoints (pure): along the call tree, across threads by happens-before edges, and by the data passed on."""
from __future__ import annotations

import itertools
from collections.abc import Sequence

from ..model import (
    EDGE_CALL,
    EDGE_DATA,
    EDGE_ENTRY,
    EDGE_RETURN,
    Event,
)
from .graph import JourneyError, TraceGraph, mentions

# ------------------------------------------------------------------ connecting waypoints

Step = tuple[int, str]  # (event index, edge that reached it)


def tree_path(g: TraceGraph, a: int, b: int) -> list[Step]:
    """From a to b in one thread's call tree: up to their common ancestor, then down."""
    up = g.ancestors(a)
    down = g.ancestors(b)
    common = next((x for x in up if x in set(down)), None)
    if common is None and g.green and up[-1] < down[-1]:
        # a greenlet runs one call after another from gevent's own code, which is not shown
        # (normalize.opaque_calls): from a up to its top call, then b's top call, entered from
        # that hidden code, and down to b
        top, *below = list(reversed(down))
        return [(x, EDGE_RETURN) for x in up[1:]] + [(top, EDGE_ENTRY)] + [(x, EDGE_CALL) for x in below]
    if common is None:
        raise JourneyError(f"{g.ev(a).func} and {g.ev(b).func} share no caller on thread {g.ev(a).thread}")
    steps: list[Step] = []
    for x in up[1 : up.index(common) + 1]:
        steps.append((x, EDGE_RETURN))
    for x in reversed(down[: down.index(common)]):
        steps.append((x, EDGE_CALL))
    return steps


def producer(g: TraceGraph, sink: int, arg: str = "data") -> int | None:
    """The call that built the bytes ``sink`` received: the first earlier call on its
    thread that returned that very object, then down through the callees that
    returned bytes, to the deepest (it is no longer on the stack at the sink)."""
    token = next((a.token for a in g.ev(sink).args if a.name == arg), 0)
    above = set(g.ancestors(sink))
    if not token:
        return _text_producer(g, sink, arg, above)
    found = g.find(lambda e: e.ret is not None and e.ret.token == token, g.ev(sink).thread, before=sink)
    found = [i for i in found if i not in above]
    if not found:
        # bytes made by a call the trace does not show (a long-poll body: ``str.encode`` of the
        # payload's text), from the text a recorded call returned
        return _text_producer(g, sink, arg, above)
    return g.descend(found[0], _bytes_like)


def _text_producer(g: TraceGraph, sink: int, arg: str, above: set[int]) -> int | None:
    """Bytes without identity (a short body, b'6'): the latest earlier call on the sink's thread
    that returned them, or the text they encode, then down through the callees that returned it."""
    data = next((a.text for a in g.ev(sink).args if a.name == arg), "")
    if not data.startswith(("b'", 'b"')):
        return None
    texts = {data, data[1:]}  # the bytes, and the same text as a str
    found = [i for i in g.find(lambda e: e.ret is not None and e.ret.text in texts, g.ev(sink).thread, before=sink) if i not in above]
    if not found:
        return None
    here = found[-1]
    while True:
        kids = [c for c in g.children.get(here, []) if g.ev(c).ret is not None and g.ev(c).returned.text in texts]
        if not kids:
            return here
        here = kids[-1]


def consumer(g: TraceGraph, source: int) -> int | None:
    """Where the object ``source`` returned went next on its thread: the first later call
    that took it as an argument, then down through the callees that took it too."""
    ret = g.ev(source).ret
    if ret is None or not ret.token:
        return None
    takes = lambda e: any(a.token == ret.token for a in e.args)
    after = g.ev(source).end
    found = g.find(takes, g.ev(source).thread, after=after)
    if not found:
        return None
    return g.descend(found[0], takes)


def object_producer(g: TraceGraph, after: int, handoff: int) -> int | None:
    """The last object a thread made before a hand-off (under the hand-off's caller),
    followed down to the deepest call that returned it."""
    top = g.ancestors(handoff)
    scope = top[2] if len(top) > 2 else top[-1]  # the caller of what notifies
    made = [i for i in range(max(after, scope) + 1, handoff) if i not in top and is_object(g.ev(i)) and g.ev(i).parent == scope]
    if not made:
        return None
    here = made[-1]
    token = g.ev(here).returned.token
    while True:
        # down through the calls that returned this object, then through the last
        # callee that returned any object or bytes: where it was made from
        same = [c for c in g.children.get(here, []) if g.ev(c).ret is not None and g.ev(c).returned.token == token]
        kids = same or [c for c in g.children.get(here, []) if is_object(g.ev(c)) or _bytes_like(g.ev(c))]
        if not kids:
            return here
        here = kids[-1]
        token = g.ev(here).returned.token


def is_object(e: Event) -> bool:
    return bool(e.ret and e.ret.token and e.ret.text.startswith("<"))


def _bytes_like(e: Event) -> bool:
    t = e.ret.text if e.ret else ""
    return t.startswith(("b'", 'b"', "<bytearray>", "<bytes>", "<memoryview>"))


def thread_route(g: TraceGraph, a: int, b: int) -> list[tuple[int, int, str]]:
    """The cross-thread edges that lead from event a to event b (breadth-first over threads).

    From a position in a thread, the earliest hand-off at or after it to each
    other thread is taken: what a thread hands on next is what it just did.
    """
    target = g.ev(b).thread
    frontier: list[tuple[str, int, list[tuple[int, int, str]]]] = [(g.ev(a).thread, a, [])]
    seen = {g.ev(a).thread}
    while frontier:
        nxt = []
        for thread, pos, route in frontier:
            if thread == target and pos <= b:
                return route
            first: dict[str, tuple[int, int, str]] = {}
            for x, y, kind in g.cross:
                if x >= pos and g.ev(x).thread == thread and g.ev(y).thread not in first:
                    first[g.ev(y).thread] = (x, y, kind)
            for to, edge in sorted(first.items(), key=lambda kv: kv[1]):
                if to == target and edge[1] > b:
                    continue
                if to not in seen or to == target:
                    seen.add(to)
                    nxt.append((to, edge[1], route + [edge]))
        frontier = nxt
    raise JourneyError(f"no hand-off leads from thread {g.ev(a).thread} to thread {target}")


def data_route(g: TraceGraph, a: int, b: int) -> list[tuple[int, int, str]]:
    """A hand-off by identity: a later call on a's thread passes on an object of a's,
    and a call on b's thread before b returned that very object (a queue's put and get).
    Used when no wake-up leads there: the receiver was already awake when it took it."""
    ea = g.ev(a)
    tokens = {v.token for v in (*ea.args, *([ea.ret] if ea.ret else ())) if v.token}
    target = g.ev(b).thread
    for x in g.find(lambda e: any(v.token in tokens for v in e.args), ea.thread, after=a - 1):
        passed = {v.token for v in g.ev(x).args if v.token in tokens}
        got = g.find(lambda e: e.ret is not None and e.ret.token in passed, target, before=b + 1)  # noqa: B023 - called before the loop moves on
        if got:
            return [(x, got[-1], EDGE_DATA)]
    raise JourneyError(f"no hand-off leads from thread {ea.thread} to thread {target}")


def put_route(g: TraceGraph, a: int, b: int) -> list[tuple[int, int, str]]:
    """A packet that call a put on a queue (a ``Queue.put`` inside a) and b's thread took before
    b without waiting for it: Engine.IO queues a packet for a long-polling client, and the GET
    that carries it may come after the put, so no wake-up leads there. The hand-off is the take
    (the latest call on b's thread before b that returned, from that queue, the item the put received)."""
    target = g.ev(b).thread
    for put in range(a, g.ev(a).end + 1):
        if g.ev(put).func != "queue:Queue.put":
            continue
        items = {v.token for v in g.ev(put).args if v.name == "item" and v.token}
        queue = {v.token for v in g.ev(put).args if v.name == "self" and v.token}
        got = g.find(lambda e: e.ret is not None and e.ret.token in items  # noqa: B023 - called before the loop moves on
                     and any(v.name == "self" and v.token in queue for v in e.args), target, before=b + 1)  # noqa: B023
        if got:
            return [(put, got[-1], EDGE_DATA)]
    raise JourneyError(f"no hand-off leads from thread {g.ev(a).thread} to thread {target}")


def handoff_route(g: TraceGraph, a: int, b: int) -> list[tuple[int, int, str]]:
    """The cross-thread edges from a to b: by wake-ups and thread starts (thread_route), else
    the take of a packet a put on a queue (put_route)."""
    try:
        return thread_route(g, a, b)
    except JourneyError:
        return put_route(g, a, b)


def connect(g: TraceGraph, a: int, b: int) -> list[Step]:
    """Steps from waypoint a (excluded) to waypoint b (included)."""
    if a == b:
        return []
    if g.ev(a).thread == g.ev(b).thread:
        return tree_path(g, a, b)
    if g.ev(a).func == "queue:Queue.put" and not any(a <= x <= g.ev(a).end for x, _, _ in g.cross):
        # a put that woke no one (the taker was awake): the taker's get of that very item is
        # the hand-off; a later wake-up from this thread would be another message's
        route = data_route(g, a, b)
    else:
        try:
            route = thread_route(g, a, b)
        except JourneyError:
            route = data_route(g, a, b)
    steps: list[Step] = []
    here = a
    for x, y, kind in route:
        steps += connect(g, here, x)
        steps.append((y, kind))
        here = y
    return steps + connect(g, here, b)


def walk(g: TraceGraph, parts: Sequence[Sequence[int]]) -> list[Step]:
    """The chain's steps: each part starts at an entry and follows its waypoints."""
    steps: list[Step] = []
    for waypoints in parts:
        steps.append((waypoints[0], EDGE_ENTRY))
        for a, b in itertools.pairwise(waypoints):
            steps += connect(g, a, b)
    # A waypoint reached twice in a row (a trail point that is also on the path) is kept once.
    out: list[Step] = []
    for s in steps:
        if not out or out[-1][0] != s[0]:
            out.append(s)
    return out


def value_trail(g: TraceGraph, start: int, end: int, needles: Sequence[str]) -> list[int]:
    """Waypoints that follow a value from start to end: in every thread the route
    passes through, the first call after arriving whose values show it."""
    points = [start]
    here = start
    route = handoff_route(g, start, end)
    legs = [(g.ev(start).thread, start)] + [(g.ev(y).thread, y) for _, y, _ in route]
    for i, (thread, arrive) in enumerate(legs):
        stop = end if thread == g.ev(end).thread and i == len(legs) - 1 else None
        if i + 1 < len(legs):
            stop = route[i][0]  # leave this thread no later than its hand-off to the next
        after = max(arrive, here) if g.ev(here).thread == thread else arrive
        if i == 0:
            used = consumer(g, start)
            # where start's result went, if that was before the value left this thread (an HTTP
            # route's return value is used by Flask only after its emit was handed off)
            if used is not None and (stop is None or used < stop):
                points.append(used)
                here = after = used
        hits = g.find(lambda e: mentions(e, needles), thread=thread, after=after, before=stop)
        if hits:
            points.append(hits[0])
            here = hits[0]
        if i + 1 < len(legs) and route[i][2] == EDGE_DATA:
            # a queue's put that woke no one: the put itself, which connect joins to the take
            points.append(route[i][0])
            here = route[i][0]
        elif not hits and i + 1 < len(legs) and stop is not None:
            # The value is not visible here (held in objects): show what this thread
            # made right before handing off, the object it then passed on.
            made = object_producer(g, after, stop)
            if made is not None:
                points.append(made)
                here = made
    points.append(end)
    return points


