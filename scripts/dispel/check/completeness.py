"""Completeness (pure): every wire value a page shows has its maker or its reader on the chain.

Found from the trace alone, independently of how the chain was built:

- a value **sent** (the bytes a socket call wrote, and the text they carry before framing and
  compression) has a **maker**: the first recorded call, on any thread, whose return value is that
  value; it is followed back by identity (the same object returned earlier), then down to the
  deepest callee that returned it too: where it was computed;
- a value **received** (the bytes a socket call read, and the texts they carry once unframed and
  inflated) has a **reader**: the first call that took that value (or the text it carries) as an
  argument and, under it, the first call that returned the decoded fields (an object) that a call
  outside it received later.

A hop folded away on the page is still on the chain. A value none of whose layers has a maker (or
reader) in the trace is not counted.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .. import wire
from ..chains.build import (
    scenario_trace,  # a scenario's processes merged, with the edges between them
)
from ..model import Chain, Event, TraceFile
from ..tracefiles.values import value_text_to_python

SOCKET_C = "_socket:socket."
_WRITES = {SOCKET_C + n for n in ("send", "sendall")}
_READS = {SOCKET_C + n for n in ("recv", "recv_into")}


@dataclass(frozen=True)
class Finding:
    """One wire value of a page: what it is, which way it went, its maker or reader in the
    trace (event indexes; empty when the trace has none), and those missing from the chain."""

    page: str
    value: str  # the value as the page shows it (printable, shortened)
    way: str  # "sent" or "received"
    found: tuple[int, ...]  # the makers (sent) or readers (received), one per layer that has one
    missing: tuple[int, ...]  # those of them not on the chain
    names: tuple[str, ...] = ()  # the functions of the missing ones

    @property
    def complete(self) -> bool:
        return bool(self.found) and not self.missing


def _py(text: str | None):
    if not text or text[:1] not in ("'", '"', "b"):
        return None
    try:
        v = value_text_to_python(text)
    except (ValueError, SyntaxError):
        return None
    return v if isinstance(v, (str, bytes)) else None


def layers(data: bytes) -> list[bytes | str]:
    """The values a wire buffer carries, outermost first: the buffer; a WebSocket frame's payload
    (unmasked), inflated when compressed, and its text; an HTTP message's body and the packets of a
    long-polling payload (split at the record separator)."""
    out: list[bytes | str] = [data]
    layout = wire.frame_layout(data) if _framed(data) else None
    if layout is not None:
        b0, b1 = data[0], data[1]
        start, _ = layout
        payload = data[start:]
        if b1 >> 7:
            payload = wire.xor_mask(payload, data[start - 4 : start])
        opcode = b0 & 0x0F
        if opcode == 1 and (b0 >> 4) & 0x4:
            out.append(payload)
            clear = wire.inflate(payload)
            if clear is None:
                return out
            payload = clear
        if opcode == 1:
            out.extend(_packets(payload.decode("utf-8", "replace")))
        elif payload:
            out.append(payload)
        return out
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep and not data[:1].isalpha():  # a long-polling body written on its own (a chunk)
        head, sep, body = b"", b"\r\n\r\n", data
        out = [data]
    if sep and body:
        text = body.decode("utf-8", "replace")
        if head.lower().find(b"transfer-encoding: chunked") >= 0:
            text = _unchunk(body).decode("utf-8", "replace")
        out.append(text)
        if "\x1e" in text:
            for p in text.split("\x1e"):
                out.extend(_packets(p))
        elif text[:1].isdigit():
            out.extend(_packets(text)[1:])
    return out


def _packets(text: str) -> list[str]:
    """An Engine.IO packet's text, and the Socket.IO packet a message (``4``) carries."""
    out = [text] if text else []
    if text[:1] == "4" and len(text) > 1:
        out.append(text[1:])
    return out


def _framed(data: bytes) -> bool:
    """Do the bytes begin like a WebSocket frame: a defined opcode, and no reserved bit but
    permessage-deflate's (an HTTP message or a long-polling body does not)?"""
    return len(data) >= 2 and (data[0] & 0x0F) in (0, 1, 2, 8, 9, 10) and (data[0] >> 4) & 0x3 == 0


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        try:
            n = int(size, 16)
        except ValueError:
            return out
        if n == 0:
            break
        out += rest[:n]
        body = rest[n + 2 :]
    return out


class _Trace:
    def __init__(self, trace: TraceFile, links: Sequence[tuple[int, int, str]] = ()) -> None:
        self.events = trace.events
        self.children: dict[int, list[int]] = {}
        for e in self.events:
            if e.parent >= 0:
                self.children.setdefault(e.parent, []).append(e.index)
        self.returned: dict[object, list[int]] = {}  # value -> events that returned it, in order
        self.took: dict[object, list[int]] = {}  # value -> events that took it as an argument
        self.passed: dict[int, list[int]] = {}  # object token -> events that took it (not as self)
        self.passed_self: dict[int, list[int]] = {}  # object token -> calls of its methods
        for e in self.events:
            for a in e.args:
                if a.token and a.name not in ("self", "cls"):
                    self.passed.setdefault(a.token, []).append(e.index)
                elif a.token and a.name == "self":
                    self.passed_self.setdefault(a.token, []).append(e.index)
            v = _py(e.ret.text) if e.ret is not None else None
            if v is not None and len(v):
                self.returned.setdefault(v, []).append(e.index)
            for a in e.args:
                if a.name in ("self", "cls"):
                    continue
                v = _py(a.text)
                if v is not None and len(v):
                    self.took.setdefault(v, []).append(e.index)

        self.edges: list[tuple[int, int]] = sorted(
            [(th.started_by, th.root) for th in trace.threads if th.started_by >= 0]
            + [(w.notify, w.wait) for w in trace.wakeups]
            + [(x, y) for x, y, _ in links]
        )

    def ev(self, i: int) -> Event:
        return self.events[i]

    def after(self, i: int) -> dict[str, int]:
        """Per thread, the earliest position that call i happens-before (its own thread: i)."""
        reach = {self.events[i].thread: i}
        todo = [i]
        while todo:
            pos = todo.pop()
            thread = self.events[pos].thread
            for x, y in self.edges:
                if x >= pos and self.events[x].thread == thread:
                    ty = self.events[y].thread
                    if y < reach.get(ty, len(self.events)):
                        reach[ty] = y
                        todo.append(y)
        return reach

    def before(self, i: int) -> dict[str, int]:
        """Per thread, the latest position that happens-before call i (its own thread: i)."""
        reach = {self.events[i].thread: i}
        todo = [i]
        while todo:
            pos = todo.pop()
            thread = self.events[pos].thread
            for x, y in self.edges:
                if y <= pos and self.events[y].thread == thread:
                    tx = self.events[x].thread
                    if x > reach.get(tx, -1):
                        reach[tx] = x
                        todo.append(x)
        return reach

    def ancestors(self, i: int) -> set[int]:
        out = set()
        while i >= 0:
            out.add(i)
            i = self.events[i].parent
        return out


def _same_value(value: bytes | str):
    """The keys a value may have been recorded under: itself, and as str/bytes of the other kind."""
    keys = [value]
    if isinstance(value, str):
        keys.append(value.encode("utf-8"))
    else:
        try:
            keys.append(value.decode("utf-8"))
        except UnicodeDecodeError:
            pass
    return keys


def makers(t: _Trace, value: bytes | str, sink: int) -> list[int]:
    """The call that made a sent value (several, when the trace kept one of identical cycles and
    each could have): of the calls that returned it (outside the sink's own callers) and happened
    before the sink, the nearest back along the hand-offs (_latest_back); back to the first that
    returned that very object (by identity); down to the deepest callee returning it."""
    above = t.ancestors(sink)
    found = sorted({i for k in _same_value(value) for i in t.returned.get(k, ()) if i not in above and i != sink})
    if not found:
        return []
    before = t.before(sink)
    found = [i for i in found if i < before.get(t.ev(i).thread, -1)]
    if not found:
        return []
    out = []
    for last in _latest_back(t, found, sink):
        token = t.ev(last).returned.token
        if token:
            first = [i for i in found if t.ev(i).returned.token == token]
            last = first[0] if first else last
        out.append(_down(t, last, t.ev(last).ret))
    return out


def _latest_back(t: _Trace, found: list[int], sink: int) -> list[int]:
    """Of the calls that happened-before the sink, those nearest back along the hand-offs that led
    to it: the latest on the sink's thread before it; else, through the latest hand-off into that
    thread before then, the latest on the thread it came from; and so on back. A wait that several
    notifies ended (the trace kept one of identical cycles) leads back to each of them: all count."""
    frontier, seen = [sink], set()
    while frontier:
        here = []
        nxt = []
        for pos in frontier:
            if pos in seen:
                continue
            seen.add(pos)
            thread = t.ev(pos).thread
            mine = [i for i in found if t.ev(i).thread == thread and i < pos]
            if mine:
                here.append(mine[-1])
                continue
            into = [(y, x) for x, y in t.edges if t.ev(y).thread == thread and y <= pos]
            if into:
                last = max(y for y, _ in into)
                nxt += [x for y, x in into if y == last]
        if here:
            return sorted(set(here))
        frontier = nxt
    return [found[-1]]


def _down(t: _Trace, i: int, v) -> int:
    while True:
        same = [c for c in t.children.get(i, []) if t.ev(c).ret is not None and t.ev(c).returned.text == v.text]
        if not same:
            return i
        i = same[-1]


def _object(e: Event):
    """The object a call made: what it returned, or for an __init__ the instance it set up."""
    if e.ret is not None and e.ret.token and e.ret.text.startswith("<"):
        return e.ret.token
    if e.func.endswith(".__init__"):
        return next((a.token for a in e.args if a.name == "self" and a.token), 0)
    return 0


def _used_later(t: _Trace, i: int) -> bool:
    """Did call i make an object that a call outside it received later?"""
    token = _object(t.ev(i))
    end, thread = t.ev(i).end, t.ev(i).thread
    return bool(token) and any(t.ev(x).thread != thread or x > end for x in t.passed.get(token, ()))


def reader(t: _Trace, value: bytes | str, source: int) -> int | None:
    """The call that read a received value. From the first call that took it as an argument (not
    the source itself), down through the callees that took it too, to the deepest: under it, the
    first call that made an object a call outside it received later (the decoded fields); else,
    when that call kept the value in its object (a buffer it is a method of), the first later
    method call on that object, up to its nearest caller that made such an object; else the
    deepest taker itself (it read the value into its own fields)."""
    keys = _same_value(value)
    after = t.after(source)
    takers = sorted({i for k in keys for i in t.took.get(k, ()) if i != source and i > after.get(t.ev(i).thread, len(t.events))})
    if not takers:
        return None
    thread = t.ev(source).thread
    mine = [i for i in takers if t.ev(i).thread == thread]
    deepest = mine[0] if mine else min(takers, key=lambda i: (i - after[t.ev(i).thread], i))
    while True:
        kids = [c for c in t.children.get(deepest, []) if c in takers]
        if not kids:
            break
        deepest = kids[0]
    e = t.ev(deepest)
    for i in range(deepest, e.end + 1):
        if _used_later(t, i):
            return i
    kept = [a.token for a in e.args if a.name == "self" and a.token]
    later = [x for x in t.passed_self.get(kept[0], ()) if x > e.end and t.ev(x).thread == e.thread] if kept else []
    if later and e.ret is not None and e.ret.text == "None":
        x = later[0]
        while x >= 0:
            if _used_later(t, x):
                return x
            x = t.ev(x).parent
    return deepest


def compressed(data: bytes) -> tuple[bytes, bytes] | None:
    """A compressed WebSocket frame's (payload as sent, payload inflated); None for other bytes,
    or a payload that cannot be inflated on its own (it refers back to earlier messages)."""
    layout = wire.frame_layout(data) if _framed(data) else None
    if layout is None or not (data[0] >> 4) & 0x4:
        return None
    start, _ = layout
    payload = data[start:]
    if data[1] >> 7:
        payload = wire.xor_mask(payload, data[start - 4 : start])
    clear = wire.inflate(payload)
    return (payload, clear) if clear is not None else None


def compressor(t: _Trace, clear: bytes, sink: int) -> list[int]:
    """Where compressed bytes sent were made: the compressor does not return them alone (wsproto's
    returns them with the frame's bits), so it is the last call before the sink on its thread that
    took the payload as it was before compression."""
    above = t.ancestors(sink)
    took = sorted({i for k in _same_value(clear) for i in t.took.get(k, ())
                   if t.ev(i).thread == t.ev(sink).thread and i < sink and i not in above})
    return took[-1:]


def head_reader(t: _Trace, data: bytes, source: int) -> int | None:
    """The reader of an HTTP request's head, which no call takes whole (it is read line by line from
    a file over the socket): the first call on the reading thread after the read that took a text
    of at least two of its lines, and under it, as for any value, where it was parsed."""
    if not data[:1].isalpha() or b"\r\n" not in data:
        return None
    head = data.partition(b"\r\n\r\n")[0].decode("latin-1")
    e = t.ev(source)
    for i in range(e.index + 1, len(t.events)):
        x = t.ev(i)
        if x.thread != e.thread:
            break
        for a in x.args:
            v = _py(a.text) if a.name not in ("self", "cls") else None
            text = v.decode("latin-1") if isinstance(v, bytes) else v
            if v is not None and text and text.count("\r\n") >= 2 and text.rstrip("\r\n") in head:
                return reader(t, v, source)
    return None


def _short(value: bytes | str, limit: int = 60) -> str:
    text = wire.printable(value) if isinstance(value, bytes) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"


def wire_values(trace: TraceFile, chain: Chain) -> list[tuple[int, str, bytes]]:
    """The wire buffers a chain's page shows: (sink event, "sent" or "received", bytes), in hop order."""
    out = []
    seen: set[int] = set()
    for hop in chain.hops:
        e = trace.events[hop.event]
        if hop.event in seen:
            continue
        seen.add(hop.event)
        if e.func in _WRITES:
            data = _py(next((a.text for a in e.args if a.name == "data"), None))
            if isinstance(data, bytes) and data:
                out.append((hop.event, "sent", data))
        elif e.func in _READS and e.ret is not None:
            data = _py(e.ret.text)
            if isinstance(data, bytes) and data:
                out.append((hop.event, "received", data))
    return out


def findings(trace: TraceFile, chain: Chain, page: str | None = None, links: Sequence[tuple[int, int, str]] = ()) -> list[Finding]:
    """Every wire value of a chain's page (each buffer at a sink, and each text it carries: a layer
    whose maker or reader is that of an outer layer is the same value), with its maker or reader,
    and whether the chain lacks it (``links``: the edges between the processes of a merged trace)."""
    t = _Trace(trace, links)
    on = {h.event for h in chain.hops}
    out = []
    for sink, way, data in wire_values(trace, chain):
        seen: set[int] = set()
        squeezed = compressed(data)
        for layer in layers(data):
            if way == "sent" and squeezed is not None and layer == squeezed[0]:
                found = tuple(compressor(t, squeezed[1], sink))
            elif way == "sent":
                found = tuple(makers(t, layer, sink))
            else:
                i = reader(t, layer, sink)
                if i is None and isinstance(layer, bytes) and layer is data:
                    i = head_reader(t, data, sink)
                found = (i,) if i is not None else ()
            if not found or seen & set(found):
                continue
            seen.update(found)
            # one of them on the chain is enough (alternatives: identical cycles the trace kept once)
            missing = () if set(found) & on else found[:1]
            out.append(Finding(page or chain.journey, _short(layer), way, found, missing, tuple(trace.events[m].func for m in missing)))
    return out


def problems(results: Sequence[Finding], pages: str = "docs/chains/{}.md") -> list[str]:
    """One line per value whose maker or reader is not on its page's chain (``pages``: where a
    journey's page is, its name in braces)."""
    lines = []
    for f in results:
        if f.missing:
            who = "maker" if f.way == "sent" else "reader"
            calls = ", ".join(f"{n} (event {i})" for n, i in zip(f.names, f.missing))
            lines.append(f"completeness: {pages.format(f.page)}: the {f.way} value `{f.value}` has no {who} on its chain "
                         f"(the trace's {who}: {calls}); make the chain take it in (dispel.chains), then `dispel chains`")
    return lines


def figures(results: Sequence[Finding]) -> tuple[int, int]:
    """(values with their maker or reader on the chain, values counted)."""
    return sum(1 for f in results if not f.missing), len(results)


def site_findings(traces, found) -> dict[str, list[Finding]]:
    """Every page's wire values, found from its scenario's trace (merged across processes)
    (``traces``: scenario name -> TraceFile; ``found``: journey -> Chain). A page whose trace is
    missing is left out (the integrity check names it)."""
    out: dict[str, list[Finding]] = {}
    merged: dict[str, tuple] = {}
    for name, chain in sorted(found.items()):
        if chain.scenario not in merged:
            merged[chain.scenario] = scenario_trace(traces, chain.scenario)
        trace, links = merged[chain.scenario]
        if trace is not None:
            out[name] = findings(trace, chain, name, links)
    return out


def figures_line(per_page) -> str:
    """How many of the pages' wire values have their maker or reader on the chain, in one line."""
    done = total = 0
    for results in per_page.values():
        ok, n = figures(results)
        done, total = done + ok, total + n
    return f"completeness: {done} of {total} wire values have their maker or reader on the chain ({len(per_page)} pages)"
