"""How each journey of the catalogue is found (catalog.Journey.finder -> a finder), and the catalogue's chains (pure).

The sample app's run, handshake, on, emit, ack, broadcast and disconnect come out of the same
derivation as any app's journeys (dispel.chains.derive): each is the derived journey of that name in
its scenario's trace (on is the handler of 'chat', emit the emit of 'reply', ...). The
long-polling and upgrade journeys, and those across processes, keep the hand-written finders
of dispel.chains.build, which says why.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from .. import catalog
from ..catalog import Journey
from ..model import Chain, DispelError, Source, TraceFile
from . import build as chains
from . import derive
from .build import Finder
from .graph import JourneyError, TraceGraph


def derived(name: str) -> Finder:
    """The finder of the derived journey ``name`` (a page name of dispel.chains.derive)."""

    def find(g: TraceGraph):
        found = {d.journey.name: d for d in derive.derive(g.trace)}
        if name not in found:
            raise JourneyError(f"no {name!r} journey is derived from the trace (derived: {', '.join(found)}; last hop reached: none)")
        return found[name].find(g)

    return find


FINDERS: dict[str, Finder] = {
    "run": derived("run"),
    "handshake": derived("handshake"),
    "on": derived("on-chat"),
    "emit": derived("emit-reply"),
    "ack": derived("ack-shout"),
    "broadcast": derived("broadcast-joined"),
    "disconnect": derived("disconnect"),
    **chains.HAND_WRITTEN_FINDERS,  # polling, upgrade, and the journeys across processes
}


def build(
    trace: TraceFile, journey: Journey, lines: Mapping[Source, Sequence[str]] | None = None, links: Sequence[tuple[int, int, str]] = (),
) -> Chain:
    """One catalogue journey's chain from a trace (see chains.build; ``links``: edges between processes)."""
    return chains.build(trace, journey, lines, FINDERS[journey.finder], links)


def build_all(traces: Mapping[str, TraceFile], lines: Mapping[Source, Sequence[str]] | None = None, only: Iterable[str] = ()) -> dict[str, Chain]:
    """Every journey of the catalogue (or those in ``only``) from the traces of their scenarios."""
    for name in only:
        catalog.journey(name)  # unknown names fail first
    out = {}
    merged: dict[str, tuple] = {}  # a scenario's trace (its processes' merged once) and links
    for j in catalog.JOURNEYS:
        if only and j.name not in only:
            continue
        if j.scenario not in merged:
            merged[j.scenario] = chains.scenario_trace(traces, j.scenario)
        trace, links = merged[j.scenario]
        if trace is None:
            raise DispelError(f"journey {j.name!r} needs the trace of scenario {j.scenario!r}: run `dispel record {j.scenario}`")
        try:
            out[j.name] = build(trace, j, lines, links)
        except JourneyError as exc:
            raise JourneyError(f"journey {j.name!r}: {exc}") from None
    return out
