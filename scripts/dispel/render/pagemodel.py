"""The page model (pure, frozen values): what a journey page says, computed once from the chain.

dispel.render.pages builds a JourneyPage from a chain, its links, the installed sources and the
annotations, and writes it as MkDocs Markdown; dispel.handin.document writes the same values as the
hand-in's Markdown, DOCX and PDF. A fact (a hop's permalink, its thread, its filled text, which
hops are key and which fold) is decided here once, and every format writes that one value.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..chains import fold
from ..model import Chain, Hop, Join, Relay, WireLayer


@dataclass(frozen=True)
class HopLinks:
    """Where a hop's source can be read: the executed line and the whole definition."""

    line: str
    definition: str
    pinned: str = "commit"  # "commit", "tag" (marked on the page) or "docs" (no source link)


@dataclass(frozen=True)
class Return:
    """A later hop that came back to the same call: it joins that call's entry."""

    number: int
    hop: Hop
    previous: Hop
    links: HopLinks | None
    annotation: str | None = None  # shown when it differs from the call's (a text keyed to this line)
    text_at: int | None = None  # the page number of an entry that already shows that text (then only linked)


@dataclass(frozen=True)
class HopView:
    """One hop entry of a page: the hop, how it was reached, its links, text, source and returns."""

    number: int
    hop: Hop
    previous: Hop | None
    links: HopLinks | None
    lines: Sequence[str] | None  # the installed file's lines (None: not readable)
    annotation: str | None  # Markdown, placeholders filled
    returns: tuple[Return, ...] = ()
    joins: tuple[Join, ...] = ()
    short: str | None = None  # the text's `short:` sentence (the hand-in's), placeholders filled
    shown: Mapping[int, int] | None = None  # chain position -> the number the page shows it under (fold.page_numbers)
    text_at: int | None = None  # the page number of an earlier entry showing the same text (then only linked)
    values_at: Mapping[str, int] | None = None  # observed values shown on the page before this entry -> that entry's page number
    onward: tuple[tuple[int, str, str], ...] = ()  # hand-offs to an entry listed earlier: (its page number, edge, thread)

    @property
    def numbers(self) -> tuple[int, ...]:
        """The chain positions this entry shows: its call, then every later hop of the same call."""
        return (self.number, *(r.number for r in self.returns))

    @property
    def page_number(self) -> int:
        """The entry's number on the page (hop numbers count calls only)."""
        return self.shown.get(self.number, self.number) if self.shown else self.number


@dataclass(frozen=True)
class Section:
    """A key entry shown in the open, or a folded run of entries under one title."""

    folded: bool
    title: str
    numbers: tuple[int, ...]  # chain positions
    entries: tuple[HopView, ...]
    part: fold.Part | None = None  # the part of the journey this section begins (None: it begins none)


@dataclass(frozen=True)
class JourneyPage:
    """Everything a journey page shows, in order."""

    chain: Chain
    title: str
    summary: str | None  # the journey's summary (Markdown, placeholders filled); None: not written
    threads: tuple[str, ...]  # in the order the chain first visits them
    groups: tuple[fold.Group, ...]
    sections: tuple[Section, ...]
    wire: tuple[WireLayer, ...] = ()
    relays: tuple[Relay, ...] = ()
    compared_label: str = ""
    compared: tuple[tuple[str, Chain], ...] = ()
    marked: frozenset[str] = frozenset()
    parts: tuple[fold.Part, ...] = ()
    cited: frozenset[int] = frozenset()  # chain positions the summary cites (always shown)

    @property
    def journey(self) -> str:
        return self.chain.journey

    @property
    def key_count(self) -> int:
        return sum(1 for s in self.sections if not s.folded)

    @property
    def key_hops(self) -> tuple[HopView, ...]:
        return tuple(s.entries[0] for s in self.sections if not s.folded)

    @property
    def folded_hops(self) -> tuple[tuple[Section, HopView], ...]:
        return tuple((s, e) for s in self.sections if s.folded for e in s.entries)
