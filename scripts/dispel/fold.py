"""Key hops and folded detail (pure): which hops a reader sees first, and how the rest group.

A hop is *key* when it is the entry of a part, the first hop in another distribution, a
hand-off between threads, a producer or user of a value (a Join), the sink of a part, or
an annotation marks it key. A return to a function already on the page is no entry of its
own: it joins the entry of that call, which then shows both lines. Runs of entries that
are not key fold into one group, titled by what they are.
"""
from __future__ import annotations

from dataclasses import dataclass

from .model import EDGE_DATA, EDGE_ENTRY, EDGE_RETURN, EDGE_THREAD_START, EDGE_WAKE, Chain

HAND_OFFS = (EDGE_THREAD_START, EDGE_WAKE, EDGE_DATA)


@dataclass(frozen=True)
class Entry:
    """One hop entry of the page: a hop, and the later returns to that same call (hop numbers, 1-based)."""

    hop: int
    returns: tuple[int, ...] = ()
    key: bool = False

    @property
    def numbers(self) -> tuple[int, ...]:
        return (self.hop, *self.returns)


@dataclass(frozen=True)
class Group:
    """Consecutive entries shown together: one key entry, or a folded run of the others."""

    entries: tuple[Entry, ...]
    folded: bool
    title: str = ""


def _dists(chain: Chain) -> list[str]:
    return [h.func.source.dist for h in chain.hops]


def key_numbers(chain: Chain, marked: frozenset[str] | set[str] = frozenset()) -> set[int]:
    """The key hops' numbers (1-based); ``marked``: function keys an annotation marks key."""
    hops = chain.hops
    out: set[int] = set()
    joined = {n for j in chain.joins for n in (j.producer, j.user)}
    seen: set[str] = set()
    for n, hop in enumerate(hops, 1):
        last = n == len(hops) or hops[n].edge == EDGE_ENTRY  # the sink of its part
        entered = hop.func.source.dist not in seen  # the journey's first hop in this distribution
        seen.add(hop.func.source.dist)
        if hop.edge == EDGE_ENTRY or entered or hop.edge in HAND_OFFS or last or n in joined or hop.func.key in marked:
            out.add(n)
    return out


def entries(chain: Chain, marked: frozenset[str] | set[str] = frozenset()) -> list[Entry]:
    """The page's hop entries in chain order: a return to a call already shown joins that call's entry."""
    key = key_numbers(chain, marked)
    first_of: dict[int, int] = {}  # event -> position in out
    out: list[tuple[int, list[int]]] = []
    for n, hop in enumerate(chain.hops, 1):
        if hop.edge == EDGE_RETURN and hop.event in first_of and n not in key:
            out[first_of[hop.event]][1].append(n)
            continue
        first_of.setdefault(hop.event, len(out))
        out.append((n, []))
    return [Entry(n, tuple(r), n in key or any(x in key for x in r)) for n, r in out]


def _what(chain: Chain, numbers: list[int]) -> str:
    """A run's title: how many calls, in which packages of which distributions."""
    hops = [chain.hops[n - 1] for n in numbers]
    by_dist: dict[str, list[str]] = {}
    for h in hops:
        label = "the standard library" if h.func.source.dist == "python" else h.func.source.dist
        top = h.func.module.split(".")[0].lstrip("_") or h.func.module
        by_dist.setdefault(label, [])
        if top not in by_dist[label]:
            by_dist[label].append(top)
    where = "; ".join(f"{dist}'s {', '.join(mods)}" if dist == "the standard library" else f"{dist} ({', '.join(mods)})" for dist, mods in by_dist.items())
    calls = sum(1 for h in hops)
    return f"{calls} {'call' if calls == 1 else 'calls'} in {where}"


def groups(chain: Chain, marked: frozenset[str] | set[str] = frozenset()) -> list[Group]:
    """Key entries one by one; each run of other entries folded into one titled group."""
    out: list[Group] = []
    run: list[Entry] = []

    def flush() -> None:
        if run:
            numbers = [n for e in run for n in e.numbers]
            out.append(Group(tuple(run), True, _what(chain, numbers)))
            run.clear()

    for e in entries(chain, marked):
        if e.key:
            flush()
            out.append(Group((e,), False))
        else:
            run.append(e)
    flush()
    return out
