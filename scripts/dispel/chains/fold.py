"""Key hops, parts and folded detail (pure): which hops a reader sees first, and how the rest group.

One recorded call is one entry of the page: a later hop of the same call (a return to it, the
wait a notify ended, the same frame picked up again as the start of a part) joins the entry of
its first hop, which then shows every line the call ran. Entries are numbered in chain order, so
a page's hop numbers count calls only (``Entry.number``; ``page_numbers`` maps every chain hop to
the entry that shows it).

A *part* of a journey begins at its first hop, at a thread's first frame (``thread-start``), at a
message read from another process (``via-redis``) and where the chain starts again (``entry``):
``parts`` names each with what caused it.

An entry is *key* when one of its hops starts a part, runs the app's own code, is the first hop
in another distribution, a hand-off between threads (either side), the producer of a value another
hop used (a Join), the sink of a part, a hop the journey's summary cites, or an annotation marks
it key. Runs of entries that are not key fold into one group, titled by what they hold. When the
key entries are more than a page may show (``MAX_OPEN``), whole parts fold, from the last one,
each under its part's title.
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from ..model import (
    EDGE_DATA,
    EDGE_ENTRY,
    EDGE_QUEUE,
    EDGE_THREAD_START,
    EDGE_WAKE,
    Chain,
    Hop,
)

HAND_OFFS = (EDGE_THREAD_START, EDGE_WAKE, EDGE_DATA, EDGE_QUEUE)
PART_EDGES = (EDGE_ENTRY, EDGE_THREAD_START, EDGE_QUEUE)  # where a new part of a journey begins
APP_DIST = "sample_app"
MAX_OPEN = 30  # at most this many entries shown before anything is opened (issue #27)


@dataclass(frozen=True)
class Entry:
    """One hop entry of the page: one recorded call. ``hop`` is its first hop on the chain and
    ``returns`` the later hops of the same call (1-based chain positions); ``number`` is its
    number on the page (calls only)."""

    hop: int
    returns: tuple[int, ...] = ()
    key: bool = False
    number: int = 0

    @property
    def numbers(self) -> tuple[int, ...]:
        """The chain positions this entry shows."""
        return (self.hop, *self.returns)


@dataclass(frozen=True)
class Group:
    """Consecutive entries shown together: one key entry, or a folded run of the others."""

    entries: tuple[Entry, ...]
    folded: bool
    title: str = ""

    @property
    def numbers(self) -> list[int]:
        """The chain positions the group shows."""
        return sorted(n for e in self.entries for n in e.numbers)

    @property
    def shown(self) -> list[int]:
        """The page numbers of its entries."""
        return [e.number for e in self.entries]


@dataclass(frozen=True)
class Part:
    """A part of a journey: its number, the page number of its first entry and what caused it."""

    number: int
    first: int  # page number of the entry it starts with
    title: str  # what it is, in a few words (Markdown)
    cause: str  # what caused it (Markdown, may link the hop that did)


def _dists(chain: Chain) -> list[str]:
    return [h.func.source.dist for h in chain.hops]


def key_numbers(chain: Chain, marked: Collection[str] = frozenset(), cited: Collection[int] = frozenset()) -> set[int]:
    """The key hops' chain positions (1-based); ``marked``: function keys an annotation marks key;
    ``cited``: chain positions the journey's summary cites."""
    hops = chain.hops
    out: set[int] = set(cited)
    joined = {j.producer for j in chain.joins}
    seen: set[str] = set()
    for n, hop in enumerate(hops, 1):
        last = n == len(hops) or hops[n].edge == EDGE_ENTRY  # the sink of its part
        entered = hop.func.source.dist not in seen  # the journey's first hop in this distribution
        seen.add(hop.func.source.dist)
        handing = n < len(hops) and hops[n].edge in HAND_OFFS  # the hop that hands off to another thread
        app = hop.func.source.dist == APP_DIST
        if hop.edge == EDGE_ENTRY or entered or app or hop.edge in HAND_OFFS or handing or last or n in joined or hop.func.key in marked:
            out.add(n)
    return out


def entries(chain: Chain, marked: Collection[str] = frozenset(), cited: Collection[int] = frozenset()) -> list[Entry]:
    """The page's entries in chain order, one per recorded call: a later hop of a call already
    shown (same trace event) joins that call's entry."""
    key = key_numbers(chain, marked, cited)
    first_of: dict[int, int] = {}  # event -> position in out
    out: list[tuple[int, list[int]]] = []
    for n, hop in enumerate(chain.hops, 1):
        if hop.event in first_of:
            out[first_of[hop.event]][1].append(n)
            continue
        first_of[hop.event] = len(out)
        out.append((n, []))
    return [Entry(n, tuple(r), n in key or any(x in key for x in r), i) for i, (n, r) in enumerate(out, 1)]


def page_numbers(chain: Chain) -> dict[int, int]:
    """Every chain position (1-based) -> the page number of the entry that shows it."""
    return {n: e.number for e in entries(chain) for n in e.numbers}


def chain_positions(chain: Chain) -> dict[int, int]:
    """A page number -> the chain position of its entry's first hop."""
    return {e.number: e.hop for e in entries(chain)}


def hop_ranges(numbers: list[int] | tuple[int, ...]) -> str:
    """``hops 3–5, 9`` for [3, 4, 5, 9]; ``hop 7`` for one."""
    runs: list[list[int]] = []
    for n in sorted(set(numbers)):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    text = ", ".join(f"{r[0]}–{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)
    return f"hop {text}" if len(set(numbers)) == 1 else f"hops {text}"


def _where(hops: list[Hop]) -> str:
    dists: list[str] = []
    stdlib: list[str] = []
    for h in hops:
        if h.func.source.dist == "python":
            top = h.func.module.split(".")[0].lstrip("_")
            if top not in stdlib:
                stdlib.append(top)
            if "python" not in dists:
                dists.append("python")
        elif h.func.source.dist not in dists:
            dists.append(h.func.source.dist)
    names = [
        f"the standard library ({', '.join(stdlib)})" if d == "python" else "the C socket" if d == "builtin" else "the app" if d == APP_DIST else d
        for d in dists
    ]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _short(hop: Hop) -> str:
    return hop.func.qualname.replace(".<locals>", "")


def _what(chain: Chain, calls: list[int]) -> str:
    """A run's title: what it holds (how many calls, where, and which, or from which to which)."""
    hops = [chain.hops[n - 1] for n in calls]
    where = _where(hops)
    if len(hops) == 1:
        return f"1 call in {where}: {_short(hops[0])}"
    if len(hops) <= 3:
        return f"{len(hops)} calls in {where}: " + ", ".join(_short(h) for h in hops)
    return f"{len(hops)} calls in {where}, from {_short(hops[0])} to {_short(hops[-1])}"


def _process(thread: str) -> str:
    return thread.split("/")[0] if "/" in thread else ""


def parts(chain: Chain) -> list[Part]:
    """The journey's parts, in order, each with what caused it."""
    numbers = page_numbers(chain)
    out: list[Part] = []
    for e in entries(chain):
        n = e.hop
        hop = chain.hops[n - 1]
        thread = f"`{hop.thread}`"
        if n == 1:
            out.append(Part(1, e.number, f"{_short(hop)} on {thread}", f"The journey starts at `{_short(hop)}`, on thread {thread}."))
            continue
        if hop.edge not in PART_EDGES:
            continue
        prev = chain.hops[n - 2]
        by = f"[hop {numbers[n - 1]}](#hop-{numbers[n - 1]})"
        k = len(out) + 1
        if hop.edge == EDGE_THREAD_START:
            title = f"thread {thread} starts"
            cause = f"`{_short(prev)}` on thread `{prev.thread}` ({by}) started thread {thread}; this is its first frame."
        elif hop.edge == EDGE_QUEUE:
            proc = _process(hop.thread) or hop.thread
            title = f"across Redis, in `{proc}`"
            cause = (f"Thread `{prev.thread}` published a message to Redis ({by}); thread {thread} of "
                     f"`{proc}` read it from its own Redis connection.")
        else:
            title = f"{_short(hop)} on {thread}"
            again = next((x for x in entries(chain) if x.number < e.number and chain.hops[x.hop - 1].func == hop.func), None)
            like = f" (a read like [hop {again.number}](#hop-{again.number}))" if again is not None else ""
            if hop.func.source.dist == "builtin":
                what = f"bytes that reached the server, read at the socket{like}"
            elif again is not None:
                what = f"`{_short(hop)}` runs again, as at [hop {again.number}](#hop-{again.number}), and the journey follows this call too"
            elif hop.func.source.dist == APP_DIST:
                what = "the app's own code"
            else:
                what = f"a call in {_where([hop])} that the journey follows from here"
            cause = f"The journey picks up again at `{_short(hop)}` on thread {thread}: {what}."
        out.append(Part(k, e.number, title, cause))
    return out


def groups(
    chain: Chain, marked: Collection[str] = frozenset(), cited: Collection[int] = frozenset(), limit: int = MAX_OPEN
) -> list[Group]:
    """Key entries one by one; each run of other entries folded into one titled group. Runs never
    span two parts. When more than ``limit`` entries would be open, whole parts fold, the last first."""
    es = entries(chain, marked, cited)
    starts = {p.first: p for p in parts(chain)}
    by_part: list[list[Entry]] = []
    for e in es:
        if e.number in starts or not by_part:
            by_part.append([])
        by_part[-1].append(e)
    part_list = list(starts.values())
    open_count = sum(e.key for e in es)
    folded_parts: set[int] = set()
    for i in range(len(by_part) - 1, 0, -1):
        if open_count <= limit:
            break
        folded_parts.add(i)
        open_count -= sum(e.key for e in by_part[i])
    out: list[Group] = []
    for i, part in enumerate(by_part):
        if i in folded_parts:
            p = part_list[i]
            out.append(Group(tuple(part), True, f"Part {p.number}, {_strip(p.title)}: {_what(chain, [e.hop for e in part])}"))
            continue
        run: list[Entry] = []
        for e in part:
            if e.key:
                if run:
                    out.append(Group(tuple(run), True, _what(chain, [x.hop for x in run])))
                    run = []
                out.append(Group((e,), False))
            else:
                run.append(e)
        if run:
            out.append(Group(tuple(run), True, _what(chain, [x.hop for x in run])))
    return out


def _strip(markdown: str) -> str:
    return markdown.replace("`", "")
