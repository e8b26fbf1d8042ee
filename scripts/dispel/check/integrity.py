"""Chain integrity: each chain is one story, proven against its trace (pure verdicts over frozen values).

A chain is a list of hops, each reached from the one before by a declared edge. Here every
claim is checked against the recorded trace:

- every hop after the first is joined to the previous one by a recorded edge of its kind: a
  ``call`` is a callee of the previous hop's call, a ``return`` its caller, a ``thread-start``
  the recorded Thread.start and the new thread's first frame, a ``wake-up`` a recorded notify
  and the wait it ended, a ``data`` hand-off an object the previous hop passed on and the next
  one took (in gevent mode, whose queue calls the trace leaves out, also Engine.IO's
  ``Socket.send`` and the ``Socket.poll`` of that socket on another greenlet after which that
  greenlet took the very packet sent), a ``via-redis`` a recorded edge between processes;
- or the hop starts a new part (``entry``) whose first event happened after an event of an
  earlier part (happens-before over the recorded edges: same thread later, or reached by
  thread starts, wake-ups and edges between processes), or is a socket read: the client's
  next request (a long-poll's POST beside its GET), whose cause is outside the trace;
- a wake-up counts only if the packet the waker put (``Queue.put``'s item) is the packet the
  woken thread took (a ``Queue.get`` of the same wake-up returned that very object); where
  the trace kept one wait for repeated identical cycles (normalize keeps consecutive identical
  calls once: several recorded notifies ended it), the packet taken must carry the same type
  and data as the packet put;
- the socket send a part ends at carries the packet its hand-off carried: where the woken
  thread encoded that packet, the bytes it sent show the encoding (a part that follows one
  message's hand-off and then ends at another message's frame is two stories spliced);
- every wire value on the page (the chain's decoded layers) is a value of one of its hops (or
  a socket read or write of the same request, between two of its hops on that thread).

Each failure is one line naming the journey and the hop: ``<journey>: hop N (<func>, <edge>): why``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from ..model import (
    EDGE_CALL,
    EDGE_DATA,
    EDGE_ENTRY,
    EDGE_QUEUE,
    EDGE_RETURN,
    EDGE_THREAD_START,
    EDGE_WAKE,
    Chain,
    Event,
    TraceFile,
)
from ..tracefiles.values import value_text_to_python
from ..wire import decode_frame, frame_layout

PUT = "queue:Queue.put"
GET = "queue:Queue.get"
WAIT = "threading:Condition.wait"
EIO_SEND = "engineio.socket:Socket.send"  # puts a packet on its client's queue
EIO_POLL = "engineio.socket:Socket.poll"  # takes the queued packets
SENDS = ("_socket:socket.send", "_socket:socket.sendall")
# A part may also begin where a client's bytes came in: its cause is the client, outside the trace.
READS = ("_socket:socket.recv", "_socket:socket.recv_into", "_socket:socket._accept")


def _head(text: str) -> str:
    """A value's text inside its quotes, up to its first backslash: str and bytes reprs write it alike."""
    body = text[2:-1] if text.startswith(("b'", 'b"')) else text[1:-1] if text[:1] in ("'", '"') else text
    return body.split("\\", 1)[0]


class _Facts:
    """The trace's recorded edges, as lookups."""

    def __init__(self, trace: TraceFile, links: Sequence[tuple[int, int, str]]) -> None:
        self.trace = trace
        self.ev = trace.events
        self.starts = {(t.started_by, t.root) for t in trace.threads if t.started_by >= 0}
        self.wakes = {(w.notify, w.wait) for w in trace.wakeups}
        self.links = {(a, b) for a, b, kind in links if kind == EDGE_QUEUE}
        self.green = any(t.name == "hub" for t in trace.threads)  # a gevent program's trace
        self.notifies: dict[int, int] = {}  # wait -> how many recorded notifies ended it
        for w in trace.wakeups:
            self.notifies[w.wait] = self.notifies.get(w.wait, 0) + 1
        # an Engine.IO packet's identity -> what it carries (its type and data, as recorded)
        self.packets: dict[int, tuple[str, ...]] = {}
        for e in trace.events:
            if e.func == "engineio.packet:Packet.__init__":
                me = next((a.token for a in e.args if a.name == "self"), 0)
                if me:
                    self.packets[me] = tuple(a.text for a in e.args if a.name != "self")
        cross = [(a, b) for a, b in self.starts] + [(a, b) for a, b in self.wakes] + [(a, b) for a, b, _ in links]
        self.cross_from: dict[str, list[tuple[int, int]]] = {}
        for a, b in sorted(cross):
            self.cross_from.setdefault(self.ev[a].thread, []).append((a, b))

    def ancestor(self, i: int, func: str) -> int | None:
        while i >= 0:
            if self.ev[i].func == func:
                return i
            i = self.ev[i].parent
        return None

    def reach(self, sources: Sequence[int]) -> dict[str, int]:
        """The earliest position on each thread that some event of ``sources`` happened before."""
        best: dict[str, int] = {}
        todo = list(sources)
        while todo:
            i = todo.pop()
            t = self.ev[i].thread
            if t in best and best[t] <= i:
                continue
            best[t] = i
            todo += [b for a, b in self.cross_from.get(t, ()) if a >= i]
        return best

    def green_take(self, send: Event, poll: Event) -> int:
        """gevent mode, whose queue calls the trace leaves out: the packet Engine.IO's
        ``Socket.send`` put on its client's queue, when the ``Socket.poll`` of that socket on
        another greenlet took it (a call of that greenlet after the poll, before its next poll,
        took that very packet); else 0."""
        if not self.green or send.func != EIO_SEND or poll.func != EIO_POLL or send.thread == poll.thread:
            return 0
        mine = {v.name: v.token for v in send.args}
        packet = mine.get("pkt", 0)
        if not packet or not any(v.name == "self" and v.token == mine.get("self") for v in poll.args):
            return 0
        k = poll.end + 1
        while k < len(self.ev) and self.ev[k].thread == poll.thread and self.ev[k].func != EIO_POLL:
            if any(v.token == packet for v in self.ev[k].args):
                return packet
            k += 1
        return 0

    def put_item(self, notify: int) -> int:
        """The token of the object the notifying thread put on a queue (0: no queue's put)."""
        put = self.ancestor(notify, PUT)
        if put is None:
            return 0
        return next((a.token for a in self.ev[put].args if a.name == "item"), 0)

    def taken(self, wait: int) -> list[int]:
        """The tokens the woken thread took in this wake-up: the get that waited, and the gets
        without a wait right after it under the same caller (Engine.IO's poll drains the queue)."""
        get = self.ancestor(wait, GET)
        if get is None:
            return []
        out = [self.ev[get].returned.token] if self.ev[get].ret else []
        parent = self.ev[get].parent
        k = get + 1
        while k < len(self.ev) and self.ev[k].thread == self.ev[get].thread:
            e = self.ev[k]
            if e.parent == parent and e.func == GET:
                if any(self.ev[c].func == WAIT for c in range(k, e.end + 1)):
                    break
                out.append(e.ret.token if e.ret else 0)
            if e.parent == parent and e.func == WAIT:
                break
            k = e.end + 1 if e.parent == parent else k + 1
        return [t for t in out if t]


def verdicts(chain: Chain, trace: TraceFile, links: Sequence[tuple[int, int, str]] = ()) -> list[str]:
    """Why ``chain`` is not one story of ``trace`` (``links``: edges between processes of a
    merged trace); [] when every hop is proven."""
    f = _Facts(trace, links)
    hops = chain.hops
    out: list[str] = []

    def say(n: int, why: str) -> None:
        h = hops[n - 1]
        out.append(f"{chain.journey}: hop {n} ({h.func.key}, {h.edge}): {why}")

    for n, h in enumerate(hops, 1):
        if not 0 <= h.event < len(f.ev) or f.ev[h.event].func != h.func.key or f.ev[h.event].thread != h.thread:
            say(n, f"event {h.event} of the trace is not this function on thread {h.thread}")
            return out
    if hops and hops[0].edge != EDGE_ENTRY:
        say(1, "the first hop is not an entry")
    parts: list[list[int]] = []  # hop numbers of each part
    carried: dict[int, int] = {}  # hop number of a hand-off -> the token it carried
    for n, h in enumerate(hops, 1):
        if h.edge == EDGE_ENTRY:
            if parts:
                earlier = [hops[m - 1].event for p in parts for m in p]
                reached = f.reach(earlier)
                if not (h.thread in reached and reached[h.thread] <= h.event) and h.func.key not in READS:
                    say(n, "starts a new part that no event of an earlier part happened before")
            parts.append([n])
            continue
        if not parts:
            continue
        parts[-1].append(n)
        prev, cur = f.ev[hops[n - 2].event], f.ev[h.event]
        why = _edge(f, h.edge, prev, cur, carried, n)
        if why:
            say(n, why)
    for part in parts:
        out += _message(f, chain, part, carried)
    out += _wire(f, chain, parts)
    return out


def _edge(f: _Facts, edge: str, prev: Event, cur: Event, carried: dict[int, int], n: int) -> str | None:
    if edge == EDGE_CALL:
        return None if cur.parent == prev.index else f"the previous hop (event {prev.index}) did not call it"
    if edge == EDGE_RETURN:
        return None if prev.parent == cur.index else f"the previous hop (event {prev.index}) did not return to it"
    if edge == EDGE_THREAD_START:
        return None if (prev.index, cur.index) in f.starts else "no recorded Thread.start of the previous hop started this thread here"
    if edge == EDGE_WAKE:
        if (prev.index, cur.index) not in f.wakes:
            return "no recorded notify of the previous hop ended this wait"
        item = f.put_item(prev.index)
        if item:
            taken = f.taken(cur.index)
            if item not in taken:
                # a wait the trace kept once for repeated identical cycles (the recorder keeps
                # consecutive identical calls once; several notifies ended it) stands for each
                # of them: there the packet taken must carry what the packet put carried
                same = f.notifies.get(cur.index, 0) > 1 and item in f.packets and any(f.packets.get(t) == f.packets[item] for t in taken)
                if not same:
                    return "the woken thread did not take the packet the waker put"
                item = next(t for t in taken if f.packets.get(t) == f.packets[item])
            carried[n] = item
        return None
    if edge == EDGE_DATA:
        tokens = {v.token for v in prev.args if v.token}
        if cur.ret is not None and cur.ret.token and cur.ret.token in tokens:
            carried[n] = cur.ret.token
            return None
        packet = f.green_take(prev, cur)
        if not packet:
            return "it did not return an object the previous hop passed on"
        carried[n] = packet
        return None
    if edge == EDGE_QUEUE:
        return None if (prev.index, cur.index) in f.links else "no recorded edge between processes joins it to the previous hop"
    return f"unknown edge {edge!r}"


def _message(f: _Facts, chain: Chain, part: list[int], carried: Mapping[int, int]) -> list[str]:
    """The socket send a part ends at carries the packet the part's last hand-off carried."""
    last = chain.hops[part[-1] - 1]
    if last.func.key not in SENDS:
        return []
    handoffs = [n for n in part if n in carried and chain.hops[n - 1].thread == last.thread]
    if not handoffs:
        return []
    n = handoffs[-1]
    token = carried[n]
    sent = next((a.text for a in f.ev[last.event].args if a.name == "data"), "")
    for k in range(chain.hops[n - 1].event, last.event):
        e = f.ev[k]
        if e.thread != last.thread or e.ret is None or e.ret.text[:1] not in ("'", '"', "b"):
            continue
        if any(a.token == token for a in e.args):
            encoded = _head(e.ret.text)
            if len(encoded) >= 4 and encoded not in sent:
                return [(f"{chain.journey}: hop {part[-1]} ({last.func.key}, {last.edge}): sends {sent[:60]}, not the packet "
                        f"hop {n}'s {chain.hops[n - 1].edge} handed over (encoded {encoded[:60]!r} at event {k})")]
            return []
    return []


def _wire(f: _Facts, chain: Chain, parts: Sequence[list[int]]) -> list[str]:
    """Every decoded wire layer shows bytes one of the chain's hops holds, or a socket read or
    write of the same request: on a thread of one part, between its first and last hop there
    (an HTTP response written as a head, then its body)."""
    if not chain.wire:
        return []
    values = [h.value or "" for h in chain.hops]
    for part in parts:
        spans: dict[str, list[int]] = {}
        for n in part:
            h = chain.hops[n - 1]
            spans.setdefault(h.thread, []).append(h.event)
        for thread, events in spans.items():
            for k in range(min(events), max(events) + 1):
                e = f.ev[k]
                if e.thread == thread and e.func in SENDS + READS:
                    values += [v.text for v in (*e.args, *([e.ret] if e.ret else ()))]
    out = []
    decoded: list[str] | None = None
    for layer in chain.wire:
        pieces = [p for p in re.split(r"\\x[0-9a-fA-F]{2}|\\.|[^\x20-\x7e]|['\"]", layer.raw) if len(p) >= 4]
        if not pieces:
            continue
        piece = max(pieces, key=len)
        if any(piece in v for v in values):
            continue
        if decoded is None:  # what those bytes carry: a client's frame is masked, a compressed one deflated
            decoded = [raw for v in values for raw in _frame_layers(v)]
        if not any(piece in v for v in decoded):
            out.append(f"{chain.journey}: wire {layer.layer}: {piece[:60]!r} is on no hop of the journey")
    return out


def _frame_layers(text: str) -> list[str]:
    """The decoded layers (as the page shows them) of the WebSocket frames a bytes value holds."""
    if not text.startswith(("b'", 'b"')):
        return []
    try:
        data = value_text_to_python(text)
    except (ValueError, SyntaxError):
        return []
    out: list[str] = []
    while isinstance(data, bytes) and (layout := frame_layout(data)) is not None:
        end = sum(layout)
        out += [layer.raw for layer in decode_frame(data[:end])]
        data = data[end:]
    return out
