"""The sample app's journeys at the oldest supported set against the lock's: what changed (pure pages, small shell).

The oldest supported set (constraints/oldest.txt) is recorded like the lock's, by the dispel of
a second venv (`make site` builds it: .venv-oldest), into traces/oldest/ (traces, chains/ and
its own lock, pins.lock.json). `dispel render` writes one page per journey under
docs/versions/ from the two chains and the two locks, with `dispel diff`'s alignment
(dispel.diff.compare_chains): hops added, removed or moved, lines changed, and every hop on
both sides linked at its own commit. `dispel check` proves the oldest set's links by blob
against the second venv's installed files; without that venv they are unproven, said in one
line, and never counted as verified (the venv's side: dispel.review.oldest_venv).
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import catalog
from ..chains import fold
from ..check.links import PageLink, lock_file, recording_drift
from ..model import Chain, DispelError, Hop, Lock
from ..pins import permalinks
from ..pins.forges import parse_source_url, repo_url
from ..render.markup import generated_header, inline_code, md_text
from . import diff

SET = "oldest"  # traces/<SET>/: project.OLDEST_SET
PAGES = "versions"  # docs/<PAGES>/<journey>.md and index.md
# The scenarios recorded at the oldest set (`make regen`): every one of the sample's. The queue's
# messages differ there: python-socketio 5.8.0's Redis manager publishes pickles (`pickle.dumps`),
# 5.16.3's JSON; wire.queue_message reads both (a pickle as plain values only, no code run).
SCENARIOS = ("browser", "chat", "rooms", "upgrade", "queue")


def journeys() -> tuple[str, ...]:
    """The journeys recorded at the oldest set, in the catalogue's order."""
    return tuple(j.name for j in catalog.JOURNEYS if j.scenario in SCENARIOS)


# --------------------------------------------------------------------------- alignment (dispel diff's)


@dataclass(frozen=True)
class Pair:
    """A hop on both sides: its numbers (1-based) and what differs (diff.HOP_FIELDS order)."""

    old: int
    new: int
    kind: str  # "same", "changed" (another line or text) or "moved"
    fields: tuple[tuple[str, str, str], ...] = ()


def pairs(old: Chain, new: Chain) -> tuple[list[Pair], diff.ChainDiff]:
    """Every hop found on both sides, in the lock's order, and `dispel diff`'s verdict on the chain."""
    d = diff.compare_chains(old.journey, old, new)
    listed = {(c.old, c.new): c for c in d.changes if c.kind in ("changed", "moved")}
    matcher = difflib.SequenceMatcher(None, [diff._identity(h) for h in old.hops], [diff._identity(h) for h in new.hops],
                                      autojunk=False)
    out = {(i + 1, j + 1) for op, i1, i2, j1, j2 in matcher.get_opcodes() if op == "equal" for i, j in zip(range(i1, i2), range(j1, j2))}
    out |= set(listed)
    result = []
    for o, n in sorted(out, key=lambda p: (p[1], p[0])):
        c = listed.get((o, n))
        fields = tuple(f for f in c.fields if f[0] not in diff.INCIDENTAL) if c else ()
        kind = "moved" if c and c.kind == "moved" else "changed" if fields else "same"
        result.append(Pair(o, n, kind, fields))
    return result, d


# --------------------------------------------------------------------------- pages (pure)


def _link(lock: Lock, hop: Hop) -> str:
    """The hop's executed line at the lock's commit, as a Markdown link; "—" where it has none."""
    try:
        found = permalinks.link(lock, hop.func, max(0, hop.line))
    except DispelError:
        found = None
    if found is None:
        return "—" if hop.func.source.dist != "sample_app" else "(the app)"
    return f"[line {hop.line}]({found.url})" if hop.line > 0 else f"[definition]({found.url})"


def _version_rows(old: Lock, new: Lock, chains: Iterable[Chain]) -> list[str]:
    dists = sorted({h.func.source.dist for c in chains for h in c.hops} - {"builtin", "sample_app"},
                   key=lambda d: (d != "python", d))
    rows = []
    for dist in dists:
        cells = []
        for lock in (old, new):
            try:
                pin = lock.pin(dist)
            except DispelError:
                cells.append("—")
                continue
            ref = permalinks.ref(pin)
            cells.append(f"[{pin.version}]({repo_url(pin.forge, pin.repo, ref)}) ({inline_code(ref[:12])})")
        rows.append(f"| {dist} | {cells[0]} | {cells[1]} |")
    return rows


def _fields(fields: Sequence[tuple[str, str, str]]) -> str:
    shown = []
    for name, a, b in fields:
        if name in ("line text", "value"):
            shown.append(f"{name} {inline_code(a)} → {inline_code(b)}")
        else:
            shown.append(f"{name} {md_text(a)} → {md_text(b)}")
    return "; ".join(shown)


def _calls(chain: Chain) -> int:
    """The hops its journey page shows: one per recorded call (a return is its call's hop)."""
    return len(set(fold.page_numbers(chain).values()))


def _hop(hop: Hop) -> str:
    return f"{inline_code(hop.func.key)} ({md_text(hop.thread)})"


def render_journey(old: Chain, new: Chain, old_lock: Lock, new_lock: Lock) -> str:
    """One journey's page: the two version sets, then dispel diff's changes, then every hop on both sides."""
    both, d = pairs(old, new)
    added = [c for c in d.changes if c.kind == "added"]
    removed = [c for c in d.changes if c.kind == "removed"]
    moved = [p for p in both if p.kind == "moved"]
    changed = [p for p in both if p.kind == "changed"]
    journey = new.journey
    # hops are named by the numbers their journey pages show (one per recorded call)
    on, nn = fold.page_numbers(old), fold.page_numbers(new)
    out = [
        generated_header(),
        f"# {md_text(journey)}: the oldest supported set and the lock's",
        "",
        (f"{md_text(new.title)}. The chain as recorded at the oldest supported set "
        f"(`traces/{SET}/chains/{journey}.json`) against the lock's "
        f"([`traces/chains/{journey}.json`](../chains/{journey}.md)); each link is pinned to its own side's commit."),
        "",
        "| | oldest supported set | the lock's |",
        "|---|---|---|",
        f"| hops | {_calls(old)} | {_calls(new)} |",
        *_version_rows(old_lock, new_lock, (old, new)),
        "",
        (f"{len({nn[p.new] for p in both})} hops on both sides ({len({nn[p.new] for p in changed})} at another line or text, "
         f"{len({nn[p.new] for p in moved})} moved); {len({nn[c.new] for c in added})} added, {len({on[c.old] for c in removed})} removed."),
        "",
    ]
    for note in d.notes:
        out += [f"- {md_text(note)}"]
    if d.notes:
        out.append("")
    out += ["## Hops added", ""]
    out += [f"- hop {nn[c.new]} {_hop(c.hop)} via {md_text(c.hop.edge)}: {_link(new_lock, c.hop)}"
            for c in added] or ["None."]
    out += ["", "## Hops removed", ""]
    out += [f"- hop {on[c.old]} {_hop(c.hop)} via {md_text(c.hop.edge)}: {_link(old_lock, c.hop)}" for c in removed] or ["None."]
    out += ["", "## Hops moved", ""]
    out += [f"- hop {on[p.old]} → {nn[p.new]} {_hop(new.hops[p.new - 1])}"
            + (f": {_fields(p.fields)}" if p.fields else "")
            + f"; oldest {_link(old_lock, old.hops[p.old - 1])}, lock {_link(new_lock, new.hops[p.new - 1])}"
            for p in moved] or ["None."]
    out += ["", "## Lines changed", ""]
    out += [f"- hop {on[p.old]} → {nn[p.new]} {_hop(new.hops[p.new - 1])}: {_fields(p.fields)}"
            for p in changed] or ["None."]
    out += ["", "## Both sides", "", "| oldest hop | lock hop | function | oldest supported set | the lock's |", "|---|---|---|---|---|"]
    for p in both:
        a, b = old.hops[p.old - 1], new.hops[p.new - 1]
        out.append(f"| {on[p.old]} | {nn[p.new]} | {inline_code(b.func.key)} | "
                   f"{_link(old_lock, a)} | {_link(new_lock, b)} |")
    return "\n".join(out) + "\n"


def render_index(compared: Mapping[str, tuple[Chain, Chain]], old_lock: Lock, new_lock: Lock, absent: Sequence[str]) -> str:
    """The section's first page: the two version sets and one row per journey."""
    out = [
        generated_header(),
        "# Versions: the oldest supported set and the lock's",
        "",
        ("dispel supports Flask-SocketIO from the oldest set of `constraints/oldest.txt` to the versions of "
        "`requirements.lock`. The sample app's journeys are recorded at both ends; each page below shows what "
        "changed in a journey's chain between them, with `dispel diff`'s alignment."),
        "",
        "| | oldest supported set | the lock's |",
        "|---|---|---|",
        *_version_rows(old_lock, new_lock, [c for pair in compared.values() for c in pair]),
        "",
        "| journey | hops | on both sides | at another line or text | moved | added | removed |",
        "|---|---|---|---|---|---|---|",
    ]
    for journey, (old, new) in compared.items():
        both, d = pairs(old, new)
        on, nn = fold.page_numbers(old), fold.page_numbers(new)
        out.append(f"| [{md_text(journey)}]({journey}.md) | {_calls(old)} → {_calls(new)} | {len({nn[p.new] for p in both})} | "
                   f"{len({nn[p.new] for p in both if p.kind == 'changed'})} | {len({nn[p.new] for p in both if p.kind == 'moved'})} | "
                   f"{len({nn[c.new] for c in d.changes if c.kind == 'added'})} | {len({on[c.old] for c in d.changes if c.kind == 'removed'})} |")
    if absent:
        scenarios = sorted({j.scenario for j in catalog.JOURNEYS if j.name in absent})
        out += ["", "Not recorded at the oldest set: " + ", ".join(inline_code(j) for j in absent)
                + f" (the journeys of {', '.join(inline_code(s) for s in scenarios)})."]
    return "\n".join(out) + "\n"


def pages(docs: Path, old_chains: Mapping[str, Chain], new_chains: Mapping[str, Chain],
          old_lock: Lock | None, new_lock: Lock | None) -> dict[Path, str]:
    """docs/versions/*.md for every journey both sides recorded; {} while no journey is on both sides."""
    if not old_chains or old_lock is None or new_lock is None:
        return {}
    order = [j for j in catalog.JOURNEY_NAMES if j in old_chains and j in new_chains]
    compared = {j: (old_chains[j], new_chains[j]) for j in order}
    if not compared:
        return {}
    files = {docs / PAGES / f"{j}.md": render_journey(o, n, old_lock, new_lock) for j, (o, n) in compared.items()}
    # the gevent journeys are set beside their threading ones on their own pages, not across version sets
    absent = [j for j in catalog.JOURNEY_NAMES if j in new_chains and j not in old_chains and not catalog.journey(j).beside]
    files[docs / PAGES / "index.md"] = render_index(compared, old_lock, new_lock, absent)
    return files


# --------------------------------------------------------------------------- the oldest set's links (check)


def oldest_links(links: Iterable[PageLink], lock: Lock | None, oldest: Lock | None) -> tuple[list[PageLink], list[PageLink]]:
    """(links the project's lock pins or that are no source link, links only the oldest set's lock pins)."""
    mine, theirs = [], []
    for link in links:
        sl = parse_source_url(link.target)
        if sl and oldest is not None and isinstance(lock_file(oldest, sl.repo, sl.ref, sl.path), tuple) and not (
                lock is not None and isinstance(lock_file(lock, sl.repo, sl.ref, sl.path), tuple)):
            theirs.append(link)
        else:
            mine.append(link)
    return mine, theirs


def unproven_line(count: int, env: Path, variable: str) -> str:
    return (f"unproven: {count} links of the oldest supported set (traces/{SET}/pins.lock.json): no venv at {env} "
            f"to prove them by blob (`make site` builds it from the registry; {variable}=DIR names another)")


def version_drift(chains: Iterable[Chain], oldest: Lock) -> list[str]:
    """One line per library whose hops at the oldest set ran another version than its lock pins
    (a recording by the wrong venv)."""
    return [f"versions: traces/{SET}/chains ran {dist} {ran}, traces/{SET}/pins.lock.json pins {pinned}: "
            f"record them with the second venv (`make regen-oldest`)"
            for dist, (ran, pinned) in sorted(recording_drift(chains, oldest).items())]
