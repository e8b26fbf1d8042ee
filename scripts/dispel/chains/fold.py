"""Key hops and folded detail (pure): which hops a reader sees first, and how the rest group.

A hop is *key* when it is the entry of a part, the first hop in another distribution, a
hand-off between threads (either side), the producer of a value another hop used (a Join), the sink of a part, or
an annotation marks it key. A return to a function already on the page is no entry of its
own: it joins the entry of that call, which then shows both lines. Runs of entries that
are not key fold into one group, titled by what they are.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..model import (
    EDGE_DATA,
    EDGE_ENTRY,
    EDGE_QUEUE,
    EDGE_RETURN,
    EDGE_THREAD_START,
    EDGE_WAKE,
    Chain,
)

HAND_OFFS = (EDGE_THREAD_START, EDGE_WAKE, EDGE_DATA, EDGE_QUEUE)


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

    @property
    def numbers(self) -> list[int]:
        return sorted(n for e in self.entries for n in e.numbers)


def _dists(chain: Chain) -> list[str]:
    return [h.func.source.dist for h in chain.hops]


def key_numbers(chain: Chain, marked: frozenset[str] | set[str] = frozenset()) -> set[int]:
    """The key hops' numbers (1-based); ``marked``: function keys an annotation marks key."""
    hops = chain.hops
    out: set[int] = set()
    joined = {j.producer for j in chain.joins}
    seen: set[str] = set()
    for n, hop in enumerate(hops, 1):
        last = n == len(hops) or hops[n].edge == EDGE_ENTRY  # the sink of its part
        entered = hop.func.source.dist not in seen  # the journey's first hop in this distribution
        seen.add(hop.func.source.dist)
        handing = n < len(hops) and hops[n].edge in HAND_OFFS  # the hop that hands off to another thread
        if hop.edge == EDGE_ENTRY or entered or hop.edge in HAND_OFFS or handing or last or n in joined or hop.func.key in marked:
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


def hop_ranges(numbers: list[int] | tuple[int, ...]) -> str:
    """``hops 3–5, 9`` for [3, 4, 5, 9]; ``hop 7`` for one."""
    runs: list[list[int]] = []
    for n in sorted(set(numbers)):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    text = ", ".join(f"{r[0]}–{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)
    return f"hop {text}" if len(numbers) == 1 else f"hops {text}"


def _what(chain: Chain, calls: list[int]) -> str:
    """A run's title: how many calls, in which distributions (the standard library by module)."""
    hops = [chain.hops[n - 1] for n in calls]
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
    names = [f"the standard library ({', '.join(stdlib)})" if d == "python" else "the C socket" if d == "builtin" else d for d in dists]
    where = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    if len(hops) == 1:
        return f"1 call in {where}: {hops[0].func.qualname}"
    return f"{len(hops)} calls in {where}"


def groups(chain: Chain, marked: frozenset[str] | set[str] = frozenset()) -> list[Group]:
    """Key entries one by one; each run of other entries folded into one titled group."""
    out: list[Group] = []
    run: list[Entry] = []

    def flush() -> None:
        if run:
            out.append(Group(tuple(run), True, _what(chain, [e.hop for e in run])))
            run.clear()

    for e in entries(chain, marked):
        if e.key:
            flush()
            out.append(Group((e,), False))
        else:
            run.append(e)
    flush()
    return out
