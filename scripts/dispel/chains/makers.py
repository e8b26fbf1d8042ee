"""Makers and readers (pure): where a value a chain passes on was made, where a received one was parsed, and the hand-offs between threads that carried them."""
from __future__ import annotations

import re
from collections.abc import Sequence

from .. import wire
from ..model import (
    EDGE_CALL,
    EDGE_RETURN,
    JOIN_PARSED,
    JOIN_RESULT,
    JOIN_STORED,
    JOIN_YIELD,
    Event,
)
from ..tracefiles.values import value_text_to_python
from .graph import SOCKET_C, JourneyError, TraceGraph
from .routes import Step, is_object, thread_route, tree_path, walk

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
    if home is None or not is_object(g.ev(p)):
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
    for j in range(stop - 2, start - 1, -1):
        # inside a call that handed off to another thread next (in gevent mode a wake-up is drawn on the
        # traced call around gevent's own set or put, so the call goes on past the hand-off): ran under
        # it before the hand-off, a detour down and back up to it
        a, b = steps[j][0], steps[j + 1][0]
        if (g.ev(a).thread == thread and g.ev(b).thread != thread and steps[j][1] != EDGE_RETURN
                and a < p <= g.ev(a).end):
            return steps[: j + 1] + tree_path(g, a, p) + tree_path(g, p, a) + steps[j + 1 :]
    return None


def _floor(g: TraceGraph, part: Sequence[Step], thread: str) -> int:
    """No producer before it, on ``thread``: the caller of the part's first call there (the part's
    start, or where a hand-off arrived; event indexes order calls within a thread only)."""
    first = next(i for i, _ in part if g.ev(i).thread == thread)
    return first if g.ev(first).parent < 0 else g.ev(first).parent


def _made_object(g: TraceGraph, i: int) -> int:
    """The object call i made (returned, or set up as an __init__), when a call outside it took it later; else 0."""
    e = g.ev(i)
    token = e.returned.token if is_object(e) else 0
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
    on = {i for i, _ in part}
    for i, edge in part:
        e = g.ev(i)
        if edge == EDGE_CALL:
            took = [a for a in e.args if a.name not in _RECEIVER and a.text[:1] in ("'", '"') and _py_text(a.text) in carried]
            for v in took:
                # a call on the thread took the text first, off the part (python-engineio 4.4 reads an
                # Engine.IO message's payload as JSON before Socket.IO parses it): its parse too
                earlier = [x for x in g.find(lambda x: _takes(x, v), e.thread, after=_floor(g, part, e.thread), before=i)  # noqa: B023 - called before the loop moves on
                           if x not in on and x not in g.ancestors(i)]
                p = _parse_of(g, earlier[0], v, itself=True) if earlier else None
                if p is not None and p not in on:
                    out.append((p, earlier[0], JOIN_PARSED))
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
            if p is not None and is_object(g.ev(p)):
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
        if not is_object(g.ev(a)):
            break
        above.append(a)
    if not above:
        return []
    out: list[tuple[int, int, str]] = []
    source = above[-1]
    for _ in range(2):
        token = g.ev(source).returned.token if is_object(g.ev(source)) else 0
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
            extra = (parsers(g, part) + compressors(g, part) + echoes(g, part) if not seen else []) + composers(g, part)
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


def echoes(g: TraceGraph, part: Sequence[Step]) -> list[tuple[int, int, str]]:
    """Where the payload of a frame the part sends was made when no call made it on its own: the
    latest call on the send's thread, since the part reached that thread and outside the send's
    callers, that returned those very bytes (wsproto's answer to a close frame carries the code the
    client sent, unmasked by the parse of its frame), down through the callees that returned them too:
    (that call, the send, ``result``)."""
    on = {i for i, _ in part}
    out: list[tuple[int, int, str]] = []
    for sink, _ in part:
        e = g.ev(sink)
        if e.func not in (SOCKET_C + "send", SOCKET_C + "sendall"):
            continue
        data = _py_bytes(next((a.text for a in e.args if a.name == "data"), ""))
        layout = wire.frame_layout(data) if data and not data.startswith((b"GET ", b"POST ", b"HTTP/")) else None
        if data is None or layout is None or (data[0] >> 4) & 0x4:
            continue
        start, _ = layout
        payload = data[start:] if not data[1] >> 7 else wire.xor_mask(data[start:], data[start - 4 : start])
        if len(payload) < 2 or any(_returns(g.ev(i), payload) for i in on):
            continue
        above = set(g.ancestors(sink))
        made = [x for x in g.find(lambda x: _returns(x, payload), e.thread, after=_floor(g, part, e.thread), before=sink) if x not in above]  # noqa: B023 - called before the loop moves on
        if made:
            out.append((g.descend(made[-1], lambda x: _returns(x, payload)), sink, JOIN_RESULT))  # noqa: B023 - called before the loop moves on
    return out


def _returns(e: Event, data: bytes) -> bool:
    return e.ret is not None and e.ret.text[:2] in ("b'", 'b"') and _py_bytes(e.ret.text) == data


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


