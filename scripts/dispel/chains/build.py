"""Chains: pure functions from a trace to one ordered chain of hops per journey, joined across threads by happens-before edges."""
from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from .. import catalog, wire
from ..catalog import Journey
from ..model import (
    EDGE_CALL,
    EDGE_DATA,
    EDGE_ENTRY,
    EDGE_QUEUE,
    EDGE_RETURN,
    EDGE_THREAD_START,
    EDGE_WAKE,
    JOIN_PARSED,
    JOIN_RESULT,
    JOIN_STORED,
    JOIN_YIELD,
    Chain,
    DispelError,
    Event,
    Hop,
    Join,
    Source,
    TraceFile,
)
from ..tracefiles.values import value_text_to_python, wire_bytes
from . import across  # across processes

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


# ------------------------------------------------------------------ connecting waypoints

Step = tuple[int, str]  # (event index, edge that reached it)


def tree_path(g: TraceGraph, a: int, b: int) -> list[Step]:
    """From a to b in one thread's call tree: up to their common ancestor, then down."""
    up = g.ancestors(a)
    down = g.ancestors(b)
    common = next((x for x in up if x in set(down)), None)
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
        return None
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
    made = [i for i in range(max(after, scope) + 1, handoff) if i not in top and _object(g.ev(i)) and g.ev(i).parent == scope]
    if not made:
        return None
    here = made[-1]
    token = g.ev(here).returned.token
    while True:
        # down through the calls that returned this object, then through the last
        # callee that returned any object or bytes: where it was made from
        same = [c for c in g.children.get(here, []) if g.ev(c).ret is not None and g.ev(c).returned.token == token]
        kids = same or [c for c in g.children.get(here, []) if _object(g.ev(c)) or _bytes_like(g.ev(c))]
        if not kids:
            return here
        here = kids[-1]
        token = g.ev(here).returned.token


def _object(e: Event) -> bool:
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
    route = thread_route(g, start, end)
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
        elif i + 1 < len(legs) and stop is not None:
            # The value is not visible here (held in objects): show what this thread
            # made right before handing off, the object it then passed on.
            made = object_producer(g, after, stop)
            if made is not None:
                points.append(made)
                here = made
    points.append(end)
    return points


# ------------------------------------------------------------------ producers: where a passed-on value was made

_RECEIVER = ("self", "cls")


def _texty(text: str) -> bool:
    """A string or bytes value long enough to say something (not '/', not b'')."""
    body = text.removeprefix("b")
    return body[:1] in ("'", '"') and len(body) >= 4


def _same(a, b) -> bool:
    """Two observed values are the same object (token), or equal text worth comparing."""
    if a is None or b is None:
        return False
    if a.token and a.token == b.token:
        return True
    return _texty(a.text) and a.text == b.text


def _decides(v) -> bool:
    """Values that decide what is sent or where: text, bytes, and objects seen more than once."""
    return v.name not in _RECEIVER and (_texty(v.text) or bool(v.token and v.text.startswith("<")))


def v_short(v) -> bool:
    """A short string or bytes value (not worth comparing by text elsewhere, but a sibling that returned it made it)."""
    body = v.text.removeprefix("b")
    return v.name not in _RECEIVER and body[:1] in ("'", '"') and 2 < len(body) < 4


def _made(e: Event, v) -> bool:
    """Did call e make the value v: returned it, or built it as the object its __init__ set up?"""
    if _same(e.ret, v):
        return True
    return bool(v.token) and e.func.endswith(".__init__") and any(a.name == "self" and a.token == v.token for a in e.args)


def _down(g: TraceGraph, p: int, v) -> tuple[int, bool]:
    """From a producer down to where the value is computed, no deeper: through the callees that
    returned the same value; for an object's __init__, into the last callee that filled it from
    text (then True: the object was parsed)."""
    parsed = False
    while True:
        kids = g.children.get(p, [])
        same = [c for c in kids if _same(g.ev(c).ret, v)]
        if not same and g.ev(p).func.endswith(".__init__") and v.token:
            same = [c for c in kids if any(a.token == v.token for a in g.ev(c).args) and any(_texty(a.text) for a in g.ev(c).args)]
            parsed = parsed or bool(same)
        if not same:
            return p, parsed
        p = same[-1]


def _yields(g: TraceGraph, s: int) -> bool:
    """Did call s end at a ``yield`` (a generator handing its loop a value)? Read from the source line."""
    e = g.ev(s)
    src = g.lines.get(g.trace.funcs[e.func].source) if e.func in g.trace.funcs else None
    return bool(src and 0 < e.return_line <= len(src) and re.search(r"\byield\b", src[e.return_line - 1]))


def _resumed_after(g: TraceGraph, s: int, c: int) -> bool:
    """Is s a generator's resume: the same call (function and arguments) runs again under the same caller after c?"""
    e = g.ev(s)
    sig = [(a.name, a.text, a.token) for a in e.args]
    return any(
        g.ev(x).func == e.func and [(a.name, a.text, a.token) for a in g.ev(x).args] == sig
        for x in g.children.get(e.parent, []) if x > c
    )


def producers(g: TraceGraph, c: int, floor: int = -1) -> list[tuple[int, int, str]]:
    """The calls that made the values a call c received from its caller: (producer, user, kind).

    A sibling that returned the very value (by identity, or equal text) is its producer
    (``result``); two candidates are told apart by the value, not by position. A generator
    resumed before c and again after it fed the loop that called c (``yield``). An object
    made earlier elsewhere and taken out of a container is followed to the call that made it
    (``stored``), or that parsed it from text (``parsed``). ``floor``: no producer before it."""
    e = g.ev(c)
    if e.parent < 0:
        return []
    siblings = [s for s in g.children.get(e.parent, []) if s < c]
    above = set(g.ancestors(c))
    out: list[tuple[int, int, str]] = []
    for v in (a for a in e.args if _decides(a)):
        made = [s for s in siblings if _made(g.ev(s), v)]
        if made:
            p, parsed = _down(g, made[-1], v)
            out.append((p, c, JOIN_PARSED if parsed else JOIN_RESULT))
            continue
        if not v.token:
            continue
        # An object made earlier and kept (a list, a deque): followed when it was parsed from text,
        # or built around text (a packet around its encoded payload).
        maker = [m for m in g.find(lambda x: _made(x, v), e.thread, after=floor, before=c) if m not in above]  # noqa: B023 - called before the loop moves on
        if maker:
            p, parsed = _down(g, maker[0], v)
            if parsed or _parsed_under_sibling(g, p, siblings):
                out.append((p, c, JOIN_PARSED))
            elif g.ev(p).func.endswith(".__init__") and any(_texty(a.text) for a in g.ev(p).args):
                out.append((p, c, JOIN_STORED))
    loops = [s for s in siblings if _yields(g, s) and _resumed_after(g, s, c)]
    if loops:
        s = loops[-1]
        v = g.ev(s).returned
        fed = _down(g, s, v)[0]
        out.append((fed, c, JOIN_YIELD))
        if v.token:
            inside = range(s, g.ev(s).end + 1)
            maker = [m for m in g.find(lambda x: _made(x, v), e.thread, after=floor, before=s) if m not in inside]
            if maker:
                out.append((_down(g, maker[0], v)[0], fed, JOIN_STORED))
    firsts: dict[int, tuple[int, int, str]] = {}
    for pair in out:
        firsts.setdefault(pair[0], pair)  # the first pair of each producer, in order
    return list(firsts.values())


def short_made(g: TraceGraph, c: int) -> list[tuple[int, int, str]]:
    """A short text call c received (an Engine.IO packet such as ``'6'``): only an earlier sibling
    that returned it made it (a value so short is compared nowhere else)."""
    e = g.ev(c)
    if e.parent < 0:
        return []
    siblings = [s for s in g.children.get(e.parent, []) if s < c]
    out = []
    for v in (a for a in e.args if v_short(a)):
        made = [s for s in siblings if g.ev(s).ret is not None and g.ev(s).returned.text == v.text]
        if made:
            out.append((_down(g, made[-1], v)[0], c, JOIN_RESULT))
    return out


def _parsed_under_sibling(g: TraceGraph, p: int, siblings: Sequence[int]) -> bool:
    """Was p called, inside an earlier sibling of the user, by a call that took text: the object
    is the decoded fields of a parse (a packet's JSON arguments, decoded where the packet was)?"""
    home = next((s for s in siblings if s < p <= g.ev(s).end), None)
    if home is None or not _object(g.ev(p)):
        return False
    return any(x != p and any(_texty(a.text) for a in g.ev(x).args if a.name not in _RECEIVER) for x in g.ancestors(p) if x >= home)


def _step_time(g: TraceGraph, steps: Sequence[Step], k: int) -> int:
    """When a step happened on its thread: a call's start, or for a return the end of the call it left."""
    i, edge = steps[k]
    return g.ev(steps[k - 1][0]).end + 1 if edge == EDGE_RETURN and k else i  # a return: after all of the call it left


def insert_producer(g: TraceGraph, steps: list[Step], p: int, start: int, stop: int) -> list[Step] | None:
    """Steps with a detour through producer p, at the point of the part (steps[start:stop]) where it ran:
    between two steps of its thread that happened before and after it, or under the part's last
    call (the part then ends there). None when no such point."""
    thread = g.ev(p).thread
    for j in range(stop - 2, start - 1, -1):
        a, b = steps[j][0], steps[j + 1][0]
        if g.ev(a).thread != thread or g.ev(b).thread != thread or steps[j + 1][1] not in (EDGE_CALL, EDGE_RETURN):
            continue
        if _step_time(g, steps, j) <= p < _step_time(g, steps, j + 1):
            return steps[: j + 1] + tree_path(g, a, p) + tree_path(g, p, b) + steps[j + 2 :]
    last = steps[stop - 1][0]
    if stop == len(steps) and steps[stop - 1][1] != EDGE_RETURN and last < p <= g.ev(last).end:
        return steps + tree_path(g, last, p)  # inside the part's last call: the part ends down there
    return None


def _floor(g: TraceGraph, part: Sequence[Step], thread: str) -> int:
    """No producer before it, on ``thread``: the caller of the part's first call there (the part's
    start, or where a hand-off arrived; event indexes order calls within a thread only)."""
    first = next(i for i, _ in part if g.ev(i).thread == thread)
    return first if g.ev(first).parent < 0 else g.ev(first).parent


def _made_object(g: TraceGraph, i: int) -> int:
    """The object call i made (returned, or set up as an __init__), when a call outside it took it later; else 0."""
    e = g.ev(i)
    token = e.returned.token if _object(e) else 0
    if not token and e.func.endswith(".__init__"):
        token = next((a.token for a in e.args if a.name == "self" and a.token), 0)
    if not token:
        return 0
    later = g.find(lambda x: any(a.token == token and a.name not in _RECEIVER for a in x.args), e.thread, after=e.end)
    return token if later else 0


def _takes(e: Event, v) -> bool:
    """Did call e take the value v (the same object, or for a value without identity, equal text)?"""
    return any(a.name not in _RECEIVER and (a.token == v.token if v.token else a.text == v.text) for a in e.args)


def _deepest_taker(g: TraceGraph, c: int, v) -> int:
    """From c down through the first callee that took the value v too, as deep as it goes."""
    while True:
        kids = [k for k in g.children.get(c, []) if _takes(g.ev(k), v)]
        if not kids:
            return c
        c = kids[0]


def _parse_of(g: TraceGraph, taker: int, v, itself: bool = False) -> int | None:
    """Where the text or bytes v that call ``taker`` received was parsed: down the callees that took
    it too; under the deepest, the first call that made an object used later (the decoded fields);
    else, when the deepest kept the bytes in its object (a buffer), the first later call of that
    object's methods, up to its nearest caller that made such an object (the frame parser); else
    the deepest itself, when it is below ``taker`` (it decoded into its own fields)."""
    deepest = _deepest_taker(g, taker, v)
    e = g.ev(deepest)
    for i in range(deepest, e.end + 1):
        if _made_object(g, i):
            return i
    kept = next((a.token for a in e.args if a.name == "self" and a.token), 0)
    if kept and e.ret is not None and e.ret.text == "None" and deepest != taker:
        later = g.find(lambda x: any(a.name == "self" and a.token == kept for a in x.args), e.thread, after=e.end)
        for x in g.ancestors(later[0]) if later else ():
            if _made_object(g, x):
                return x
    return deepest if deepest != taker or itself else None


def parsers(g: TraceGraph, part: Sequence[Step]) -> list[tuple[int, int, str]]:
    """Where the values a part received were parsed (producer, user, ``parsed``): the bytes its first
    hop read from a socket, and every text a hop took that an earlier hop of the part returned (the
    message a wait returned, passed on to be decoded). The user is the parse's caller on the part."""
    out: list[tuple[int, int, str]] = []
    first = g.ev(part[0][0])
    returned: list = []
    read = value_text_to_python(first.ret.text) if first.func.startswith(SOCKET_C + "recv") and first.ret is not None else None
    carried = _carried(read) if isinstance(read, bytes) else set()
    if isinstance(read, bytes) and read[:1].isalpha() and b"\r\n" in read:
        out += _head_parse(g, first, read)
    if isinstance(read, bytes) and len(read) > 1:
        takers = g.find(lambda x: _takes(x, first.ret), first.thread, after=first.end)
        p = _parse_of(g, takers[0], first.ret) if takers else None
        if p is not None:
            out.append((p, takers[0], JOIN_PARSED))
            out += _acted_on(g, part, p)
            squeezed = _compressed_payload(read)
            if squeezed:  # permessage-deflate: where the frame's payload was inflated, under its parse
                inflate = [x for x in range(p, g.ev(p).end + 1)
                           if any(a.name not in _RECEIVER and a.text.startswith("b") and _py_bytes(a.text) == squeezed for a in g.ev(x).args)]
                if inflate:
                    out.append((inflate[-1], p, JOIN_PARSED))
    for i, edge in part:
        e = g.ev(i)
        if edge == EDGE_CALL:
            took = [a for a in e.args if a.name not in _RECEIVER and a.text[:1] in ("'", '"') and _py_text(a.text) in carried]
            for v in returned + took:
                if _takes(e, v):
                    p = _parse_of(g, i, v)
                    if p is not None:
                        out.append((p, i, JOIN_PARSED))
                    break
        if e.ret is not None and e.ret.text[:1] in ("'", '"', "b") and _py_text(e.ret.text) in carried:
            returned.append(e.ret)
    # a text the read carried that no hop of the part took (an HTTP body a route reads itself):
    # the first call on the reading thread that took it, and its parse
    seen = {_py_text(v.text) for v in returned} | {_py_text(a.text) for i, _ in part for a in g.ev(i).args}
    for text in sorted(carried - seen):
        takers = g.find(lambda x: any(a.name not in _RECEIVER and a.text[:1] in ("'", '"', "b") and _py_text(a.text) == text for a in x.args),  # noqa: B023 - called before the loop moves on
                        first.thread, after=first.end)
        if takers and len(text) >= 4:
            v = next(a for a in g.ev(takers[0]).args if a.name not in _RECEIVER and _py_text(a.text) == text)
            p = _parse_of(g, takers[0], v, itself=True)
            if p is not None and _object(g.ev(p)):
                out.append((p, takers[0], JOIN_PARSED))
    return out


def _head_parse(g: TraceGraph, read: Event, data: bytes) -> list[tuple[int, int, str]]:
    """Where an HTTP request's head was parsed (it is read line by line, so no call takes it whole):
    the first call after the read on its thread that took a text of two lines or more of it, and its
    parse (``parsed``)."""
    head = data.partition(b"\r\n\r\n")[0].decode("latin-1")
    for x in g.find(lambda e: True, read.thread, after=read.end):
        for a in g.ev(x).args:
            text = _py_text(a.text) if a.name not in _RECEIVER and a.text[:1] in ("'", '"', "b") else None
            if text and text.count("\r\n") >= 2 and text.rstrip("\r\n") in head:
                p = _parse_of(g, x, a, itself=True)
                return [(p, x, JOIN_PARSED)] if p is not None else []
    return []


def _acted_on(g: TraceGraph, part: Sequence[Step], parse: int) -> list[tuple[int, int, str]]:
    """What the reader did next with what it parsed: the outermost of the calls above the parse that
    returned objects (the event: a close, a message), then the later calls beside it that took
    that object, and what they returned (a close's response, and the send of it): (user, maker,
    ``result``). Two steps at most."""
    above = []
    for a in g.ancestors(parse):
        if not _object(g.ev(a)):
            break
        above.append(a)
    if not above:
        return []
    out: list[tuple[int, int, str]] = []
    source = above[-1]
    for _ in range(2):
        token = g.ev(source).returned.token if _object(g.ev(source)) else 0
        parent = g.ev(source).parent
        nxt = [k for k in g.children.get(parent, []) if k > g.ev(source).end and any(a.token == token for a in g.ev(k).args)] if token else []
        if not nxt:
            break
        user = _deepest_taker(g, nxt[0], next(a for a in g.ev(nxt[0]).args if a.token == token))
        out.append((user, source, JOIN_RESULT))
        source = nxt[0]
    return out


def _py_bytes(text: str) -> bytes | None:
    try:
        v = value_text_to_python(text)
    except (ValueError, SyntaxError):
        return None
    return v if isinstance(v, bytes) else None


def _compressed_payload(data: bytes) -> bytes | None:
    """A compressed WebSocket frame's payload as sent (unmasked), before inflating; None for any other bytes."""
    layout = wire.frame_layout(data)
    if layout is None or data.startswith((b"GET ", b"POST ", b"HTTP/")) or not (data[0] >> 4) & 0x4:
        return None
    start, _ = layout
    payload = data[start:]
    return wire.xor_mask(payload, data[start - 4 : start]) if data[1] >> 7 else payload


def _py_text(text: str):
    try:
        v = value_text_to_python(text)
    except (ValueError, SyntaxError):
        return None
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v if isinstance(v, str) else None


def _carried(data: bytes) -> set[str]:
    """The texts a read's bytes carry: a WebSocket frame's payload (unmasked, inflated), an HTTP
    body's packets (split at the record separator), and the Socket.IO text of each Engine.IO message."""
    texts = []
    layout = wire.frame_layout(data)
    if layout is not None and not data.startswith((b"GET ", b"POST ", b"HTTP/")):
        start, _ = layout
        payload = data[start:]
        if data[1] >> 7:
            payload = wire.xor_mask(payload, data[start - 4 : start])
        if (data[0] >> 4) & 0x4:
            payload = wire.inflate(payload) or b""
        texts.append(payload.decode("utf-8", "replace"))
    else:
        body = data.partition(b"\r\n\r\n")[2].decode("utf-8", "replace")
        texts += body.split("\x1e") if body else []
    return {t for t in texts if t} | {t[1:] for t in texts if t[:1] == "4" and len(t) > 1}


PRODUCER_ROUNDS = 3  # a producer's producer, and that one's: deeper makers fold into them


def walk_with_producers(g: TraceGraph, parts: Sequence[Sequence[int]]) -> tuple[list[Step], list[tuple[int, int, str]]]:
    """The chain's steps with, for every call on it, the producers of the values it received
    put on it where they ran; and the joins (producer event, user event, kind)."""
    steps: list[Step] = []
    joins: list[tuple[int, int, str]] = []
    for waypoints in parts:
        part = walk(g, [waypoints])
        seen: set[int] = set()
        joined: set[int] = set()
        # The producers of the calls on the part; then those of the calls a detour put on it (the
        # parse that made what a producer used), until no detour adds a call.
        for _ in range(PRODUCER_ROUNDS):
            # the producers of what each call received first: a parse joins to the call that used its result
            found = []
            extra = (parsers(g, part) + compressors(g, part) if not seen else []) + composers(g, part)
            for k in range(1, len(part)):
                c, edge = part[k]
                if edge == EDGE_CALL and g.ev(c).parent == part[k - 1][0] and c not in seen:
                    seen.add(c)
                    found += producers(g, c, floor=min(_floor(g, part, g.ev(c).thread), c))
                    extra += short_made(g, c)
            detail = {x[0] for x in extra} - {x[0] for x in found}
            found += extra
            first_use: dict[int, tuple[int, int, str]] = {}
            for x in found:
                if x[0] not in joined:
                    first_use.setdefault(x[0], x)  # a value passed on and on is joined to its first user
            grew = False
            for p, user, kind in first_use.values():
                joined.add(p)
                # a parse, an inflate or deflate, a joiner's piece: detail on the chain, folded (no join)
                if p in {i for i, _ in part}:
                    joins += [] if p in detail else [(p, user, kind)]
                    continue
                longer = insert_producer(g, part, p, 0, len(part))
                if longer is not None:
                    part = _dedup(longer)
                    joins += [] if p in detail else [(p, user, kind)]
                    grew = True
            if not grew:
                break
        joins += kept_text(g, part, {p for p, _, _ in joins})
        before: list[Step] = []
        for m, put, r in handoffs(g, part, {i for i, _ in steps}):
            if not _after_earlier_part(g, steps, m):
                continue  # its own part must follow an earlier one (nothing to follow in a chain's first part)
            longer = insert_producer(g, part, r, 0, len(part))
            if longer is None:
                continue
            part = _dedup(longer)
            before += walk(g, [[m, put]])  # the object made and put on the queue, on its own thread
            joins.append((put, r, JOIN_STORED))
        steps += before + part
    return steps, joins


def compressors(g: TraceGraph, part: Sequence[Step]) -> list[tuple[int, int, str]]:
    """Where the payload of a compressed frame the part ends by sending was compressed
    (permessage-deflate): the last call before the send on its thread that took the payload as it
    was before compression (the compressor returns it with the frame's bits, not alone): (that
    call, the send, ``result``)."""
    sink = part[-1][0]
    e = g.ev(sink)
    if e.func not in (SOCKET_C + "send", SOCKET_C + "sendall"):
        return []
    data = _py_bytes(next((a.text for a in e.args if a.name == "data"), ""))
    squeezed = _compressed_payload(data) if data else None
    clear = wire.inflate(squeezed) if squeezed else None
    if not clear:
        return []
    above = set(g.ancestors(sink))
    took = [i for i in g.find(lambda x: any(a.name not in _RECEIVER and a.text[:1] in ("'", '"', "b") and _py_text(a.text) == clear.decode("utf-8", "replace")
                                            for a in x.args), e.thread, before=sink) if i not in above]
    return [(took[-1], sink, JOIN_RESULT)] if took else []


def composers(g: TraceGraph, part: Sequence[Step]) -> list[tuple[int, int, str]]:
    """The calls whose texts a hop of the part joined into the text it returned (a long-polling
    payload of several packets, each encoded by its own call): (callee, joiner, ``result``), for a
    joiner with at least two such callees."""
    out: list[tuple[int, int, str]] = []
    for i, _ in part:
        e = g.ev(i)
        whole = _py_text(e.ret.text) if e.ret is not None and _texty(e.ret.text) else None
        if not whole:
            continue
        pieces = [c for c in g.children.get(i, []) if g.ev(c).ret is not None and _texty(g.ev(c).returned.text)
                  and (t := _py_text(g.ev(c).returned.text)) and t != whole and t in whole]
        if len(pieces) >= 2:
            out += [(c, i, JOIN_RESULT) for c in pieces]
    return out


def _after_earlier_part(g: TraceGraph, steps: Sequence[Step], m: int) -> bool:
    """Did an event of the earlier parts happen before m (same thread earlier, or a hand-off leads to it)?"""
    thread = g.ev(m).thread
    if any(g.ev(i).thread == thread and i < m for i, _ in steps):
        return True
    for i in {i for i, _ in steps}:
        try:
            thread_route(g, i, m)
            return True
        except JourneyError:
            continue
    return False


def handoffs(g: TraceGraph, part: Sequence[Step], earlier: set[int]) -> list[tuple[int, int, int]]:
    """Objects a call of the part received from another thread through a container (a packet an
    Engine.IO queue held): (maker, put, get). The get is the earlier call on the user's thread that
    returned the object, a method of the container; the put is the container's method that took the
    object on the maker's thread; the maker made it there (returned it, or set it up in __init__).
    Left out when the put is on the chain already (the part followed that hand-off)."""
    on = {i for i, _ in part} | earlier
    out: list[tuple[int, int, int]] = []
    done: set[int] = set()
    for c, edge in part:
        if edge != EDGE_CALL:
            continue
        e = g.ev(c)
        above = set(g.ancestors(c))
        for v in e.args:
            if not (v.token and v.text.startswith("<")) or v.token in done:
                continue
            gets = [r for r in g.find(lambda x: x.ret is not None and x.ret.token == v.token, e.thread, before=c)  # noqa: B023 - called before the loop moves on
                    if r not in above and g.ev(g.ev(r).parent).ret is not None and g.ev(g.ev(r).parent).returned.token != v.token]
            for r in gets[:1]:
                box = next((a.token for a in g.ev(r).args if a.name == "self" and a.token), 0)
                puts = g.find(lambda x: x.thread != e.thread and any(a.name == "self" and a.token == box for a in x.args)  # noqa: B023 - called before the loop moves on
                              and any(a.token == v.token and a.name not in _RECEIVER for a in x.args)) if box else []  # noqa: B023 - called before the loop moves on
                if not puts or puts[0] in on:
                    continue
                x = puts[0]
                makers = [m for m in g.find(lambda y: _made(y, v), g.ev(x).thread, before=x) if m not in set(g.ancestors(x))]  # noqa: B023 - called before the loop moves on
                if makers:
                    done.add(v.token)
                    out.append((makers[0], x, r))
    return out


def kept_text(g: TraceGraph, part: Sequence[Step], known: set[int]) -> list[tuple[int, int, str]]:
    """Joins between hops already on the part: a call received text (by identity) that an
    earlier hop of the part returned, kept meanwhile in a variable or a list (``stored``)."""
    on = [i for i, _ in part]
    out: list[tuple[int, int, str]] = []
    users: set[int] = set()
    for c, edge in part:
        if edge != EDGE_CALL:
            continue
        above = set(g.ancestors(c))
        for v in g.ev(c).args:
            if not (v.token and _texty(v.text)) or v.name in _RECEIVER:
                continue
            made = [m for m in on if m < c and m not in above and g.ev(m).end < c and _same(g.ev(m).ret, v)]
            if made and made[0] not in known and made[0] not in users and g.ev(made[0]).parent != g.ev(c).parent:
                out.append((made[0], c, JOIN_STORED))
                known.add(made[0])
    return out


def _dedup(steps: Sequence[Step]) -> list[Step]:
    out: list[Step] = []
    for s in steps:
        if not out or out[-1][0] != s[0]:
            out.append(s)
    return out


# ------------------------------------------------------------------ journeys


def _one(found: list[int], what: str, last: str) -> int:
    if not found:
        raise JourneyError(f"{what} never happened in the trace (last hop reached: {last})")
    return found[0]


_UPGRADE = "Upgrade: websocket"
# How the 101 response begins: "HTTP/1.1 101 Switching Protocols" from wsproto 1.3 on, "HTTP/1.1 101 "
# (no reason phrase) from wsproto 1.2.0
SWITCHING = "HTTP/1.1 101 "


def _header(data: bytes, name: str) -> str | None:
    m = re.search(rb"(?im)^" + re.escape(name.encode()) + rb":\s*(\S+)\r?$", data)
    return m.group(1).decode("latin-1") if m else None


def find_handshake(g: TraceGraph):
    sink = _one(g.find(lambda e: e.func in (SOCKET_C + "send", SOCKET_C + "sendall") and any(SWITCHING in a.text for a in e.args)), "the 101 Switching Protocols response", "none")
    thread = g.ev(sink).thread
    info = next(t for t in g.trace.threads if t.name == thread)
    if info.started_by < 0:
        raise JourneyError(f"thread {thread} has no recorded start (last hop reached: {g.ev(sink).func})")
    starter = g.ev(info.started_by).thread
    accept = [i for i in g.find(is_sink("_accept"), starter, before=info.started_by)]
    entry = _one(accept[-1:], "the accept of the upgraded connection", "none")
    request = _one(g.find(lambda e: is_sink("recv_into")(e) and e.ret is not None and _UPGRADE in e.ret.text, thread), "the recv_into of the upgrade request", g.ev(entry).func)
    raw = wire_bytes(g.ev(request).returned.text)
    key = _header(raw, "Sec-WebSocket-Key")
    if key is None:
        raise JourneyError("the upgrade request carries no Sec-WebSocket-Key (last hop reached: socket.recv_into)")
    accepted = _header(wire_bytes(next(a.text for a in g.ev(sink).args if a.name == "data")), "Sec-WebSocket-Accept") or key
    # Follow the key (then the accept value computed from it) call by call: the first
    # call of each function that shows it is a waypoint.
    seen: set[str] = set()
    trail = []
    for i in g.find(lambda e: mentions(e, (key, accepted)), thread, after=request, before=sink):
        if g.ev(i).func not in seen:
            seen.add(g.ev(i).func)
            trail.append(i)
    return [with_producer(g, [entry, request, *trail, sink])], (key, accepted, _UPGRADE, "101")


def woken_waits(g: TraceGraph, scope: int) -> list[int]:
    """The waits under ``scope`` (itself included) that another thread's notify ended, in order:
    where a thread blocked until a hand-off reached it. A poll that blocks in ``get()`` and then
    drains without blocking is woken in the first ``get``; the drain is no wait at all."""
    end = g.ev(scope).end
    return sorted(w.wait for w in g.trace.wakeups if scope <= w.wait <= end)


def happened_before(g: TraceGraph, e: int, pred: Callable[[Event], bool]) -> int | None:
    """The latest call matching pred that happens-before position e: on e's thread before it,
    else before the hand-off that led into e's thread, and so on back."""
    while True:
        thread = g.ev(e).thread
        arrivals = [(y, x) for x, y, _ in g.cross if g.ev(y).thread == thread and y < e]
        start = max(arrivals)[0] if arrivals else -1
        hits = g.find(pred, thread, after=start, before=e)
        if hits:
            return hits[-1]
        if not arrivals:
            return None
        e = max(arrivals)[1]


def with_producer(g: TraceGraph, waypoints: list[int]) -> list[int]:
    """Waypoints with the builder of the sink's bytes put before the sink (see producer)."""
    sink = waypoints[-1]
    made = producer(g, sink)
    if made is None:
        return waypoints
    thread = g.ev(sink).thread
    kept = [w for w in waypoints[:-1] if g.ev(w).thread != thread or w < made]
    return kept + [made, sink]


def _wire_of(g: TraceGraph, parts: list[list[int]], sink_arg: str) -> tuple:
    sink = g.ev(parts[-1][-1])
    data = next((a.text for a in sink.args if a.name == sink_arg), None)
    return wire.decode_frame(wire_bytes(data)) if data else ()


def _wire_frames(g: TraceGraph, parts: list[list[int]]) -> tuple:
    """Every WebSocket frame a part starts by reading or ends by writing, in order (a binary
    event's two frames, a call's ask and the client's ACK, the close frames)."""
    frames: list[tuple[str, tuple]] = []
    for part in parts:
        first, last = g.ev(part[0]), g.ev(part[-1])
        if is_sink("recv", "recv_into")(first) and first.ret is not None and first.ret.text.startswith("b'\\x8"):
            frames.append(("read", wire.decode_frame(wire_bytes(first.ret.text))))
        if is_sink("send", "sendall")(last):
            data = next((a.text for a in last.args if a.name == "data"), "")
            if data.startswith("b'\\x8"):
                frames.append(("sent", wire.decode_frame(wire_bytes(data))))
    if len(frames) == 1:
        return frames[0][1]
    # each tab names its frame: the layers of several frames would otherwise share their titles
    return tuple(replace(layer, layer=f"{layer.layer} · frame {k}, {how}") for k, (how, layers) in enumerate(frames, 1) for layer in layers)


def _wire_on(g: TraceGraph, parts: list[list[int]]) -> tuple:
    # the last part that starts at a socket read (a raising handler's journey ends with where it was caught)
    recv = g.ev(next(p[0] for p in reversed(parts) if is_sink("recv", "recv_into")(g.ev(p[0]))))
    return wire.decode_frame(wire_bytes(recv.ret.text)) if recv.ret else ()


def _wire_handshake(g: TraceGraph, parts: list[list[int]]) -> tuple:
    request = wire_bytes(g.ev(parts[0][1]).returned.text)
    response = _sent(g.ev(parts[0][-1]))
    return wire.decode_http(request, "request") + wire.decode_http(response, "response")


def _user_handler(g: TraceGraph, name: str) -> list[int]:
    return g.find(lambda e: e.func.startswith("sample_app.") and e.func.endswith(f":{name}"))


def _recv_before_text(g: TraceGraph, needles: Sequence[str], not_thread: str = "") -> int:
    """The socket read that happened-before the first call (off ``not_thread``) showing needles."""
    first = _one(g.find(lambda e: mentions(e, needles) and e.thread != not_thread), f"a message with {needles[0]}", "none")
    recv = happened_before(g, g.ev(first).end, is_sink("recv", "recv_into"))
    if recv is None:
        raise JourneyError(f"no socket read happened before {needles[0]} (last hop reached: none)")
    return recv


CLOSE_FRAME = "b'\\x88"  # how a close frame's bytes begin in a trace value


def fan_out(g: TraceGraph, source: int, sinks: Sequence[int], sent: Sequence[str]) -> list[list[int]]:
    """One emit reaching several sockets: from ``source`` to the first sink, then for each further
    client, from the loop that fans the packet out (the caller both hand-offs share) down to
    that client's frame."""
    parts = [with_producer(g, value_trail(g, source, sinks[0], sent))]
    first_handoff = thread_route(g, source, sinks[0])[0][0]
    for sink in sinks[1:]:
        handoff = thread_route(g, source, sink)[0][0]
        mine = g.ancestors(handoff)
        fork = next(x for x in g.ancestors(first_handoff) if x in mine)
        branch = mine[mine.index(fork) - 1]  # the fork's call that leads to this client
        parts.append(with_producer(g, value_trail(g, branch, sink, sent)))
    return parts


def find_upgrade(g: TraceGraph):
    """The probe over the new WebSocket ("2probe" -> "3probe"); a long-poll answered by
    NOOP ("6") meanwhile, if the client polls; the client's UPGRADE packet ("5"), after
    which the writer thread sends what the socket's queue holds over the WebSocket: first
    the NOOP queued after the probe, to end a poll that might still be waiting."""
    probe = ("2probe",)
    if not g.find(lambda e: mentions(e, probe)):
        raise JourneyError(
            "the client never upgraded: no 2probe in the trace; record a scenario whose client "
            "starts on long-polling and upgrades to websocket (last hop reached: none)"
        )
    recv = _recv_before_text(g, probe)
    # Found by its encoding, not in the frame: a compressed frame (permessage-deflate) hides it.
    encoded = _one(g.find(lambda e: e.ret is not None and e.ret.text == "'3probe'"), "the 3probe answer", "socket.recv")
    thread = g.ev(encoded).thread
    answer = _one(g.find(is_sink("send"), thread, after=encoded)[:1], "the socket.send of the 3probe frame", "3probe")
    probing = with_producer(g, value_trail(g, recv, answer, ("probe",)))
    flushing = _noop_part(g, thread)
    upgraded = _one(g.find(lambda e: any(a.text == "'5'" for a in e.args), thread, after=answer), "the UPGRADE packet", "3probe")
    recv5 = _one([r for r in [happened_before(g, upgraded, is_sink("recv", "recv_into"))] if r is not None], "the socket read of the UPGRADE packet", "UPGRADE")
    started = [t for t in g.trace.threads if t.started_by > upgraded and g.ev(t.started_by).thread == thread]
    writer = _one([t.root for t in started[:1]], "the writer thread started after the upgrade", "UPGRADE")
    first_frame = _one(g.find(is_sink("send"), g.ev(writer).thread), "the writer's first frame", "Thread.start")
    switching = with_producer(g, [recv5, upgraded, first_frame])
    return [probing, *([flushing] if flushing else []), switching], probe + ("3probe", "'5'", "\\x81", "b'6'")


def _noop_part(g: TraceGraph, thread: str) -> list[int] | None:
    """A long-poll answered during the upgrade. With ``upgrading`` set, Engine.IO answers
    every poll at once with a NOOP (``6``), so that a client still polling (the browser)
    stops; None for a client that does not poll meanwhile (the Python client)."""
    polled = g.find(lambda e: is_sink("sendall")(e) and any(a.text == "b'6'" for a in e.args) and e.thread != thread)
    if not polled:
        return None
    sink = polled[0]
    recv = _first_read(g, g.ev(sink).thread, "the long-poll GET answered by NOOP", "3probe")
    noop = _one(
        g.find(lambda e: e.func.endswith("Packet.__init__") and any(a.text == "6" for a in e.args), g.ev(sink).thread),
        "the NOOP packet", "the long-poll GET",
    )
    return with_producer(g, [recv, noop, sink])


def find_polling(g: TraceGraph):
    """Three parts: a long-poll GET arrives and waits for packets; a POST carries the
    client's CONNECT ("40") to the app's connect handler; the handler's emit wakes the
    waiting GET, which answers with every queued packet joined by the record separator."""
    post = _one(
        g.find(lambda e: is_sink("recv", "recv_into")(e) and e.ret is not None and e.ret.text.startswith("b'POST /socket.io/")),
        "a long-polling POST", "none",
    )
    handler = _one(_user_handler(g, "on_connect"), "the connect handler", "POST")
    joined = ("\\x1e",)
    sink = _one(
        g.find(lambda e: is_sink("sendall")(e) and mentions(e, joined)),
        "a long-poll answer with two packets joined by \\x1e", "on_connect",
    )
    get = _first_read(g, g.ev(sink).thread, "the long-poll GET", "none")
    poll = _one(g.find(lambda e: e.func.endswith("Socket.poll"), g.ev(sink).thread), "Socket.poll", "the long-poll GET")
    waiting = [get, _one(woken_waits(g, poll)[:1], "the wait that the emit's notify ended", "Socket.poll")]
    posted = value_trail(g, post, handler, ("40",))
    answered = with_producer(g, value_trail(g, handler, sink, ('"welcome"',)))
    return [waiting, posted, answered], ("40", '"welcome"', "\\x1e")


def _first_read(g: TraceGraph, thread: str, what: str, last: str) -> int:
    """The first socket read on a request thread: the request it serves."""
    return _one(g.find(is_sink("recv", "recv_into"), thread)[:1], what, last)


def _wire_polling(g: TraceGraph, parts: list[list[int]]) -> tuple:
    """The POST as read (head and body), then the GET's answer as written: its head, and the
    payload that went out as one chunk of the chunked body."""
    request = wire_bytes(g.ev(parts[1][0]).returned.text)
    written = [_sent(g.ev(i)) for i in g.find(is_sink("sendall"), g.ev(parts[2][-1]).thread, before=parts[2][-1] + 1)]
    head = next((w for w in written if w.startswith(b"HTTP/")), b"")
    return (
        wire.decode_http(request, "request")
        + tuple(wire.decode_payload(request.partition(b"\r\n\r\n")[2].decode("utf-8", "replace"), "POST body"))
        + (wire.decode_http(head, "response") if head else ())
        + tuple(wire.decode_payload(written[-1].decode("utf-8", "replace"), "GET response body"))
    )


def _sent(e: Event) -> bytes:
    return wire_bytes(next(a.text for a in e.args if a.name == "data"))


# ------------------------------------------------------------------ across processes (a merged trace, chains/across.py)


def _in(process: str) -> Callable[[Event], bool]:
    return lambda e: across.process_of(e.thread) == process


def _publishes(g: TraceGraph, process: str, needles: Sequence[str]) -> list[int]:
    """The PUBLISH writes of ``process`` whose message shows needles."""
    return g.find(lambda e: _in(process)(e) and is_sink("sendall")(e) and mentions(e, ("PUBLISH",)) and mentions(e, needles))


def _queue_leg(g: TraceGraph, publish: int, process: str, needles: Sequence[str], what: str) -> list[int]:
    """From a PUBLISH (found by data in the subscriber, joins.delivery) to the frame
    ``process`` wrote for it: the read, the listener's _handle_emit, the socket.send."""
    read = across.delivery(g.trace, publish, process)
    reader = g.ev(read).thread
    handled = _one(
        g.find(lambda e: e.func.endswith(":PubSubManager._handle_emit"), reader, after=read)[:1],
        f"{process}'s _handle_emit of the message", "the read from Redis",
    )
    sink = _one(_frame_after(g, handled, process, needles)[:1], f"the frame {process} wrote for {what}", "_handle_emit")
    trail = value_trail(g, handled, sink, needles)
    return [read, *trail]


def _frame_after(g: TraceGraph, call: int, process: str, needles: Sequence[str]) -> list[int]:
    """The frames showing needles that ``call`` had written: on the thread its first hand-off
    (inside it) woke, after the wake-up."""
    woken = [(x, y) for x, y, _ in g.cross if call <= x <= g.ev(call).end and _in(process)(g.ev(y))]
    if not woken:
        return []
    _, y = min(woken)
    return g.find(lambda e: is_sink("send")(e) and mentions(e, needles), g.ev(y).thread, after=y)


def find_emit_external(g: TraceGraph):
    """From the emitter's emit, through its PUBLISH and Redis, to server-b's listener and the
    frame it writes to its client."""
    needles = ('"news"',)
    main = _one(g.find(lambda e: e.func == "sample_app.emitter:main"), "the emitter's main", "none")
    publish = _one(_publishes(g, "emitter", needles), "the emitter's PUBLISH", "emit")
    to_publish = value_trail(g, main, publish, needles)
    return [with_producer(g, to_publish + _queue_leg(g, publish, "server-b", needles, "the news"))], needles + ("PUBLISH",)


def find_across_servers(g: TraceGraph):
    """Client 1's join on server-a: its frame written by server-a itself, and its PUBLISH,
    read by server-b's listener, which writes the frame to its own client."""
    needles = ('"joined"',)
    handler = _one(g.find(lambda e: _in("server-a")(e) and e.func == "sample_app.app:on_join"), "server-a's join handler", "none")
    local = _one(_frame_after(g, handler, "server-a", needles)[:1], "the frame server-a wrote to its client", "on_join")
    publish = _one(
        [i for i in _publishes(g, "server-a", needles) if g.ev(i).thread == g.ev(handler).thread],
        "server-a's PUBLISH of the room's event", "on_join",
    )
    parts = [with_producer(g, value_trail(g, handler, local, needles))]
    remote = value_trail(g, handler, publish, needles)
    parts.append(with_producer(g, remote + _queue_leg(g, publish, "server-b", needles, "the room's event")))
    return parts, needles + ("'room-1'", "PUBLISH")


def _wire_queue(g: TraceGraph, parts: list[list[int]]) -> tuple:
    """The last part's PUBLISH as written, the push the subscriber read, and the frame."""
    last = parts[-1]
    publish = next(i for i in last if is_sink("sendall")(g.ev(i)) and mentions(g.ev(i), ("PUBLISH",)))
    read = next(i for i in last if is_sink("recv", "recv_into")(g.ev(i)) and g.ev(i).thread != g.ev(publish).thread)
    written = _sent(g.ev(publish))
    _channel, message = across.published_at(g.trace, publish)
    return (
        wire.decode_publish(written)
        + wire.decode_delivery(wire_bytes(g.ev(read).returned.text), message)
        + _wire_of(g, [last], "data")
    )


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
# between processes (a merged trace, chains/across.py), which the derivation over one app's trace does
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
    "handshake": _wire_handshake,
    "on": _wire_on,
    "sent": lambda g, parts: _wire_of(g, parts, "data"),
    "frames": _wire_frames,
    "disconnect": lambda g, parts: _wire_of(g, [parts[1]], "data"),
    "polling": _wire_polling,
    "queue": _wire_queue,
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
