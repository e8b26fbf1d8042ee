"""A journey recorded in gevent mode set beside the same journey in threading mode: where the two
chains depart (pure).

The alignment is `dispel diff`'s (dispel.review.versions.pairs over diff.compare_chains), with each
lane named by its role (``request-1`` and ``request-2`` are both ``request``), since the two runs
number their threads and greenlets on their own. What is left between two hops found on both
sides is a departure: the hops only one mode ran there. The hand-offs between lanes (a start, a
wake-up, a value taken off a queue) are listed apart, since the wake-up is where the modes differ
most. Every hop links to its place on its journey page and to its line at the pinned commit;
gevent's own code is on no chain (it is left out of the trace), so nothing here links into it.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..chains import fold
from ..model import EDGE_DATA, EDGE_THREAD_START, EDGE_WAKE, Chain, Hop
from ..render.markup import inline_code, md_text
from . import versions

HEADING = "## Beside the threading mode { #threading-mode }"
HAND_OFFS = (EDGE_THREAD_START, EDGE_WAKE, EDGE_DATA)

# A hop -> (its line's URL, or "" when the lock has none), from the render stage's linker.
LineLink = Callable[[Hop], str]


def role(thread: str) -> str:
    """A lane's role: its name without the serial (``eio-writer-1`` -> ``eio-writer``)."""
    return re.sub(r"-\d+$", "", thread)


def _calls(chain: Chain) -> Chain:
    """The chain as its page numbers it: one hop per recorded call (its first), each lane named by its role."""
    page = fold.page_numbers(chain)
    first = sorted({n: i for i, n in sorted(page.items(), reverse=True)}.items())
    return replace(chain, hops=tuple(replace(chain.hops[i - 1], thread=role(chain.hops[i - 1].thread)) for _, i in first))


@dataclass(frozen=True)
class Departure:
    """Hops only one mode ran between two hops found on both sides (1-based hop numbers; 0: the chain's
    start or end). ``threading`` and ``gevent``: the hops of each side in that stretch."""

    after: tuple[int, int]  # (threading hop, gevent hop) found on both sides just before, (0, 0) at the start
    threading: tuple[int, ...]
    gevent: tuple[int, ...]


def departures(threading: Chain, gevent: Chain) -> tuple[list[versions.Pair], list[Departure]]:
    """(the hops found on both sides, in order (``old``: threading's number, ``new``: gevent's, as their
    pages number them: one per recorded call); the stretches between them where the chains depart)."""
    found, _ = versions.pairs(_calls(threading), _calls(gevent))
    kept: list[versions.Pair] = []
    for p in sorted(found, key=lambda p: (p.new, p.old)):
        if p.kind != "moved" and (not kept or p.old > kept[-1].old and p.new > kept[-1].new):
            kept.append(p)
    both = [(p.old, p.new) for p in kept]
    out = []
    ends = (max(fold.page_numbers(threading).values()) + 1, max(fold.page_numbers(gevent).values()) + 1)
    edges = [(0, 0), *both, ends]
    for (o1, n1), (o2, n2) in itertools.pairwise(edges):
        only_t, only_g = tuple(range(o1 + 1, o2)), tuple(range(n1 + 1, n2))
        if only_t or only_g:
            out.append(Departure((o1, n1), only_t, only_g))
    return kept, out


def _first(chain: Chain, number: int) -> Hop:
    page = fold.page_numbers(chain)
    return chain.hops[min(i for i, n in page.items() if n == number) - 1]


def _hop(chain: Chain, number: int, page: str, link: LineLink) -> str:
    """Hop ``number`` of its page: a link to it, its function and lane, and its line at the pinned commit."""
    hop = _first(chain, number)
    url = link(hop)
    line = f" ([line {hop.line}]({url}))" if url and hop.line > 0 else f" ([definition]({url}))" if url else ""
    return f"[hop {number}]({page}#hop-{number}) {inline_code(hop.func.key)} ({md_text(hop.thread)}){line}"


def _cell(chain: Chain, numbers: tuple[int, ...], page: str, link: LineLink) -> str:
    return "<br>".join(_hop(chain, n, page, link) for n in numbers) or "—"


def _lanes(chain: Chain) -> str:
    return ", ".join(inline_code(t) for t in dict.fromkeys(h.thread for h in chain.hops))


def _hand_offs(chain: Chain, page: str, link: LineLink) -> list[str]:
    numbers = fold.page_numbers(chain)
    out = []
    for i, hop in enumerate(chain.hops, 1):
        if hop.edge in HAND_OFFS and i > 1:
            out.append(f"{inline_code(hop.edge)}: {_hop(chain, numbers[i - 1], page, link)} → {_hop(chain, numbers[i], page, link)}")
    return out or ["none: the whole chain runs on one lane"]


def section(threading: Chain, gevent: Chain, link: LineLink) -> str:
    """The section a gevent journey's page ends with: its chain against ``threading``'s, hop by hop."""
    there = f"{threading.journey}.md"
    both, parts = departures(threading, gevent)
    shown_t, shown_g = set(fold.page_numbers(threading).values()), set(fold.page_numbers(gevent).values())
    same_t, same_g = {p.old for p in both}, {p.new for p in both}
    lines = [p for p in both if any(f[0] == "line" for f in p.fields)]
    out = [
        HEADING,
        "",
        (f"This chain set beside the threading mode's, [{md_text(threading.journey)}]({there}) (`dispel diff`'s alignment, "
         f"each lane named by its role). {len(shown_g)} hops here, {len(shown_t)} there; "
         f"{len(same_g)} of this page's hops are found there too, and {len(shown_g - same_g)} only here; "
         f"{len(shown_t - same_t)} of its hops only there. gevent's own calls are left out of the trace, so no hop links into gevent."),
        "",
        f"- **Lanes in threading mode:** {_lanes(threading)}",
        f"- **Lanes in gevent mode:** {_lanes(gevent)}",
        "",
        "### Where the chains depart { #departures }",
        "",
        "| after the hops on both sides | threading mode only | gevent mode only |",
        "|---|---|---|",
    ]
    for d in parts:
        o, n = d.after
        where = "the start" if (o, n) == (0, 0) else f"[hop {o}]({there}#hop-{o}) there, [hop {n}](#hop-{n}) here"
        out.append(f"| {where} | {_cell(threading, d.threading, there, link)} | {_cell(gevent, d.gevent, '', link)} |")
    out += ["", "### The same function, at another line { #other-lines }", ""]
    out += [f"- {_hop(threading, p.old, there, link)} there, {_hop(gevent, p.new, '', link)} here" for p in lines] or ["None."]
    out += [
        "",
        "### Hand-offs between lanes { #hand-offs }",
        "",
        f"In threading mode ([{md_text(threading.journey)}]({there})):",
        "",
        *[f"- {line}" for line in _hand_offs(threading, there, link)],
        "",
        "In gevent mode (this page):",
        "",
        *[f"- {line}" for line in _hand_offs(gevent, "", link)],
    ]
    return "\n".join(out) + "\n"


def with_section(page: str, text: str) -> str:
    """A rendered journey page with the section at its end."""
    return f"{page.rstrip()}\n\n{text}"
