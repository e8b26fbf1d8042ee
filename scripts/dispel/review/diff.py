"""What changed between two versions of the chains and the lock, named for a reviewer (pure).

`dispel diff` and `dispel check`'s drift report both describe chains through these functions:
hops added, removed or moved, and for a hop that stayed, which of its fields changed (executed
line, line text, edge, value, definition lines, version). A library upgrade that changes no
traced code shows up as versions and commits only, and the summary says so.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..model import Chain, Hop, Pin
from ..pins.permalinks import ref as pin_ref

# Fields of a hop that stayed on its chain, compared one by one, in the order they are reported.
# "version" and "event" alone do not make a hop "changed": the same code ran, recorded again.
HOP_FIELDS = ("line", "line text", "edge", "value", "definition", "path", "version", "event")
INCIDENTAL = frozenset({"version", "event"})


def _field(hop: Hop, name: str) -> str:
    f = hop.func
    return {
        "line": str(hop.line),
        "line text": hop.line_text,
        "edge": hop.edge,
        "value": hop.value or "",
        "definition": f"{f.first_line}-{f.last_line}",
        "path": f.source.path,
        "version": f"{f.source.dist} {f.source.version}",
        "event": str(hop.event),
    }[name]


@dataclass(frozen=True)
class HopChange:
    """One difference between two chains of a journey.

    ``kind``: "added", "removed", "moved" (same function on the same thread, at another place in
    the chain) or "changed" (same place). ``old``/``new``: 1-based hop numbers (0: none).
    ``fields``: (field, old text, new text) of what differs, in HOP_FIELDS order.
    """

    kind: str
    old: int
    new: int
    hop: Hop  # the new hop; the old one when removed
    fields: tuple[tuple[str, str, str], ...] = ()

    @property
    def substantive(self) -> bool:
        """A change a reviewer must read: anything but a version label or an event index."""
        return self.kind != "changed" or any(name not in INCIDENTAL for name, _, _ in self.fields)


@dataclass(frozen=True)
class ChainDiff:
    journey: str
    old_hops: int  # -1: no chain on that side
    new_hops: int
    changes: tuple[HopChange, ...]
    notes: tuple[str, ...] = ()  # title, scenario, wire

    @property
    def hops_changed(self) -> int:
        return sum(1 for c in self.changes if c.substantive)


def _identity(hop: Hop) -> tuple[str, str]:
    return (hop.func.key, hop.thread)


def _fields(old: Hop, new: Hop) -> tuple[tuple[str, str, str], ...]:
    return tuple((n, _field(old, n), _field(new, n)) for n in HOP_FIELDS if _field(old, n) != _field(new, n))


def compare_chains(journey: str, old: Chain | None, new: Chain | None) -> ChainDiff:
    """Align two chains of a journey by (function, thread) and name every difference."""
    a = old.hops if old else ()
    b = new.hops if new else ()
    notes = []
    if old and new:
        if old.title != new.title:
            notes.append(f"title {old.title!r} → {new.title!r}")
        if old.scenario != new.scenario:
            notes.append(f"scenario {old.scenario} → {new.scenario}")
        if old.wire != new.wire:
            layers = [w.layer for w, v in zip(old.wire, new.wire) if w != v]
            layers += [w.layer for w in (old.wire[len(new.wire):] or new.wire[len(old.wire):])]
            notes.append(f"the bytes on the wire changed ({', '.join(dict.fromkeys(layers))})")
    changes: list[HopChange] = []
    removed: list[int] = []
    added: list[int] = []
    matcher = difflib.SequenceMatcher(None, [_identity(h) for h in a], [_identity(h) for h in b], autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            for i, j in zip(range(i1, i2), range(j1, j2)):
                fields = _fields(a[i], b[j])
                if fields:
                    changes.append(HopChange("changed", i + 1, j + 1, b[j], fields))
        else:
            removed += range(i1, i2)
            added += range(j1, j2)
    # A hop that left one place and arrived at another with the same function and thread moved.
    for i in list(removed):
        to = next((j for j in added if _identity(b[j]) == _identity(a[i])), None)
        if to is not None:
            removed.remove(i)
            added.remove(to)
            changes.append(HopChange("moved", i + 1, to + 1, b[to], _fields(a[i], b[to])))
    changes += [HopChange("removed", i + 1, 0, a[i]) for i in removed]
    changes += [HopChange("added", 0, j + 1, b[j]) for j in added]
    changes.sort(key=lambda c: (c.new or c.old, c.kind))
    return ChainDiff(journey, len(a) if old else -1, len(b) if new else -1, tuple(changes), tuple(notes))


def _short(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _hop_label(n: int, hop: Hop) -> str:
    return f"hop {n} {hop.func.key} ({hop.thread})"


def _field_text(name: str, old: str, new: str) -> str:
    if name in ("line text", "value"):
        return f"{name} {_short(old)} → {_short(new)}"
    if name == "version":
        return f"version {old} → {new.rsplit(' ', 1)[-1]}"
    if name == "definition":
        return f"definition lines {old} → {new}"
    return f"{name} {old} → {new}"


def describe_change(c: HopChange) -> str:
    """One line: which hop, and what about it changed."""
    if c.kind == "added":
        return f"new {_hop_label(c.new, c.hop)} line {c.hop.line} via {c.hop.edge}"
    if c.kind == "removed":
        return f"no longer on the chain: {_hop_label(c.old, c.hop)} line {c.hop.line}"
    what = ", ".join(_field_text(*f) for f in c.fields)
    if c.kind == "moved":
        return f"{_hop_label(c.new, c.hop)} moved from hop {c.old}" + (f": {what}" if what else "")
    return f"{_hop_label(c.new, c.hop)}: {what}"


def _version_only(c: HopChange) -> str | None:
    """"dist old → new" when a hop that stayed changed only its version (and event index)."""
    if c.kind != "changed" or c.substantive:
        return None
    return next((f"{old} → {new.rsplit(' ', 1)[-1]}" for name, old, new in c.fields if name == "version"), None)


def describe(d: ChainDiff) -> list[str]:
    """A chain's differences as lines; hops that only changed version are grouped per version change."""
    if d.old_hops < 0 and d.new_hops < 0:
        return []
    if d.old_hops < 0:
        return [f"a new chain of {d.new_hops} hops; none before"]
    if d.new_hops < 0:
        return [f"the chain of {d.old_hops} hops is gone"]
    out = list(d.notes)
    versions: dict[str, list[int]] = {}
    events = []
    for c in d.changes:
        v = _version_only(c)
        if v:
            versions.setdefault(v, []).append(c.new)
        elif c.kind == "changed" and not c.substantive:
            events.append(c.new)
        else:
            out.append(describe_change(c))
    for v, hops in versions.items():
        out.append(f"versions: {v} (hops {_numbers(hops)})")
    if events:
        out.append(f"event indices changed (hops {_numbers(events)}): the trace around them changed")
    return out


def _numbers(ns: Sequence[int], limit: int = 8) -> str:
    shown = ", ".join(map(str, ns[:limit]))
    return shown + (f" … {len(ns) - limit} more" if len(ns) > limit else "")


# --------------------------------------------------------------------------- the lock


@dataclass(frozen=True)
class PinChange:
    dist: str
    old: Pin | None
    new: Pin | None
    files: tuple[str, ...]  # installed files whose blob changed, or that came or went, sorted

    @property
    def version(self) -> str:
        if self.old is None:
            return f"{self.dist} {self.new.version} (new)" if self.new else self.dist  # (one of them is always there)
        if self.new is None:
            return f"{self.dist} {self.old.version} (gone)"
        if self.old.version == self.new.version:
            return f"{self.dist} {self.new.version}"
        return f"{self.dist} {self.old.version} → {self.new.version}"


def compare_locks(old: Iterable[Pin], new: Iterable[Pin]) -> list[PinChange]:
    """Pins whose version, repository, ref or files differ, by distribution name."""
    before = {p.dist: p for p in old}
    after = {p.dist: p for p in new}
    out = []
    for dist in sorted(set(before) | set(after)):
        a, b = before.get(dist), after.get(dist)
        if a == b:
            continue
        fa = {f.installed: f.blob for f in a.files} if a else {}
        fb = {f.installed: f.blob for f in b.files} if b else {}
        out.append(PinChange(dist, a, b, tuple(sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k)))))
    return out


def _files(files: Sequence[str], on_chains: set[str], limit: int = 4) -> str:
    """``2: `a.py`, `b.py` (none on a chain)``: how many files changed, which, and whether a hop runs in one."""
    if not files:
        return "0"
    names = ", ".join(f"`{f}`" for f in files[:limit]) + (f" and {len(files) - limit} more" if len(files) > limit else "")
    hit = on_chains & set(files)
    where = f"{len(hit)} on a chain" if hit else "none on a chain"
    return f"{len(files)}: {names} ({where})"


def _ref(p: Pin | None) -> str:
    if p is None:
        return "—"
    r = pin_ref(p)
    return f"`{r[:12]}` ({p.tag})" if r != p.tag else f"`{p.tag}`"


# --------------------------------------------------------------------------- the summary


def summary_line(diffs: Sequence[ChainDiff], pins: Sequence[PinChange]) -> str:
    """The one sentence a reviewer reads first."""
    versions = [p.version for p in pins if not (p.old and p.new and p.old.version == p.new.version)]
    parts = ["; ".join(versions) if versions else "no version changed"]
    journeys = [d for d in diffs if d.new_hops >= 0 or d.old_hops >= 0]
    changed = sum(d.hops_changed + (d.new_hops if d.old_hops < 0 else 0) + (d.old_hops if d.new_hops < 0 else 0) for d in diffs)
    parts.append(f"{changed} hop{'' if changed == 1 else 's'} changed in {len(journeys)} journeys")
    moved = [p for p in pins if p.new is not None and (p.old is None or pin_ref(p.old) != pin_ref(p.new))]
    if moved:
        parts.append("links moved to " + ", ".join(f"{p.dist} {_ref(p.new)}" for p in moved))
    return "; ".join(parts) + "."


def render_summary(
    ref: str,
    diffs: Sequence[ChainDiff],
    pins: Sequence[PinChange],
    annotations: Sequence[str] = (),
    annotated: Mapping[str, str] = {},
    chain_files: Iterable[tuple[str, str]] = (),
) -> str:
    """The Markdown of `dispel diff`: the summary sentence, then versions, journeys, annotations.

    ``annotations``: the working tree's stale and missing annotation problems, one line each;
    ``annotated``: function key -> where its annotation stands, to point at prose over hops that changed;
    ``chain_files``: (distribution, installed path) of every file a hop of the working tree lives in.
    """
    out = [f"# dispel diff: {ref} → working tree", "", summary_line(diffs, pins), ""]
    on_chains = set(chain_files)
    if pins:
        out += ["## Versions and commits", "", "| distribution | version | link ref | files changed |", "|---|---|---|---|"]
        for p in pins:
            old_v = p.old.version if p.old else "—"
            new_v = p.new.version if p.new else "—"
            version = new_v if old_v == new_v else f"{old_v} → {new_v}"
            ref_text = _ref(p.new) if p.old and p.new and pin_ref(p.old) == pin_ref(p.new) else f"{_ref(p.old)} → {_ref(p.new)}"
            out.append(f"| {p.dist} | {version} | {ref_text} | {_files(p.files, {path for dist, path in on_chains if dist == p.dist})} |")
        out.append("")
    out += ["## Journeys", "", "| journey | hops | hops changed |", "|---|---|---|"]
    for d in diffs:
        hops = str(d.new_hops) if d.old_hops == d.new_hops else f"{max(d.old_hops, 0)} → {max(d.new_hops, 0)}"
        out.append(f"| {d.journey} | {hops} | {d.hops_changed} |")
    out.append("")
    for d in diffs:
        lines = [ln for ln in describe(d) if not ln.startswith(("versions: ", "event indices"))]
        if lines:
            out += [f"### {d.journey}", ""] + [f"- {ln}" for ln in lines] + [""]
    review = sorted(
        {
            f"{c.hop.func.key} ({annotated[c.hop.func.key]}): hop {c.new or c.old} of {d.journey} {c.kind}"
            for d in diffs
            for c in d.changes
            if c.substantive and c.hop.func.key in annotated
        }
    )
    if annotations or review:
        out += ["## Annotations", ""]
        out += [f"- {a}" for a in annotations]
        out += [f"- re-read: {r}" for r in review]
        out.append("")
    else:
        out += ["No annotation is stale or missing.", ""]
    return "\n".join(out)



def report(
    ref: str,
    old_chains: Mapping[str, Chain],
    new_chains: Mapping[str, Chain],
    old_pins: Iterable[Pin],
    new_pins: Iterable[Pin],
    annotations: Sequence[str] = (),
    annotated: Mapping[str, str] = {},
    order: Sequence[str] = (),
) -> str:
    """The whole `dispel diff` Markdown from both sides' chains and pins; journeys in ``order`` first."""
    names = set(old_chains) | set(new_chains)
    journeys = [j for j in order if j in names] + sorted(names - set(order))
    diffs = [compare_chains(j, old_chains.get(j), new_chains.get(j)) for j in journeys]
    files = {(h.func.source.dist, h.func.source.path) for c in (*old_chains.values(), *new_chains.values()) for h in c.hops}
    return render_summary(ref, diffs, compare_locks(old_pins, new_pins), annotations, annotated, files)
