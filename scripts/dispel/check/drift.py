"""Drift (pure): what differs between committed generated files (chains, pages, traces) and a regeneration, named for a reader, and which differences the environment explains."""
from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..model import Chain
from ..review.diff import compare_chains
from ..review.diff import describe as describe_chain_diff
from .links import HEADING, HOP_HEADING, clipped, prose_lines

# --------------------------------------------------------------------------- drift


def diff_chains(journey: str, old: Chain | None, new: Chain | None) -> list[str]:
    """How the committed chain of a journey differs from the regenerated one: per hop, the field that changed."""
    return [f"{journey}: {line}" for line in describe_chain_diff(compare_chains(journey, old, new))]


def hop_sections(page: str) -> dict[int, str]:
    """A journey page cut at its hop headings: {0: everything before hop 1, n: hop n's section}."""
    out: dict[int, list[str]] = {0: []}
    current = 0
    for line in page.split("\n"):
        m = HOP_HEADING.search(line)
        if m and line.lstrip().startswith("#"):
            current = int(m.group(1))
            out[current] = []
        out.setdefault(current, []).append(line)
    return {n: "\n".join(lines) for n, lines in out.items()}


_TOKEN = re.compile(r"\s+|\||[^\s|]+")


def changed_words(old: str, new: str) -> str:
    """``'old words' → 'new words'``: the first run of words that differs between two lines."""
    a, b = _TOKEN.findall(old), _TOKEN.findall(new)
    ops = [op for op in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes() if op[0] != "equal"]
    if not ops:
        return f"{clipped(old)} → {clipped(new)}"
    _, i1, i2, j1, j2 = ops[0]
    more = f" (and {len(ops) - 1} more change{'s' if len(ops) > 2 else ''} on the line)" if len(ops) > 1 else ""
    return f"{clipped(''.join(a[i1:i2]).strip())} → {clipped(''.join(b[j1:j2]).strip())}{more}"


def first_difference(old: str, new: str) -> str:
    """``line N: 'old words' → 'new words'`` for the first line two texts differ in."""
    a, b = old.split("\n"), new.split("\n")
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"line {i + 1}: {changed_words(x, y)}"
    if len(a) == len(b):
        return "none: the texts are equal"
    longer, what = (b, "added") if len(b) > len(a) else (a, "removed")
    return f"line {min(len(a), len(b)) + 1}: {len(a)} lines → {len(b)} lines, {what} {clipped(longer[min(len(a), len(b))])}"


def _section_of(text: str, line: int) -> str:
    """The heading (without #s and attributes) of the section a 1-based line stands in; "" before any."""
    heading = ""
    for n, ln in enumerate(prose_lines(text)[:line], 1):
        m = HEADING.match(ln)
        if m:
            heading = re.sub(r"\s*\{[^{}]*\}\s*$", "", m.group(2))
    return heading


def diff_page(path: str, old: str, new: str, chain: Chain | None, notes: Mapping[str, str]) -> list[str]:
    """Why a committed generated page differs from its regeneration, named by hop or by section.

    ``chain``: the regenerated chain of the page (None for other pages); ``notes``: annotation
    key -> current text, to tell a changed annotation from other changes.
    """
    if old == new:
        return []
    if chain is None:
        why = first_difference(old, new)
        line = int(why.split(":", 1)[0].removeprefix("line "))
        section = _section_of(new, line) or _section_of(old, line)
        where = f"section {section!r}" if section else "the page head"
        return [f"{path}: {where} differs from a regeneration: {why}"]
    out = []
    before, after = hop_sections(old), hop_sections(new)
    for n in sorted(set(before) | set(after)):
        a, b = before.get(n, ""), after.get(n, "")
        if a == b:
            continue
        hop = chain.hops[n - 1] if 1 <= n <= len(chain.hops) else None
        where = f"hop {n} ({hop.func.key})" if hop else "the page head" if n == 0 else f"hop {n}"
        why = first_difference(a, b)
        key = hop.func.key if hop else f"journey:{chain.journey}"
        note = notes.get(key)
        if note and note.strip() in b and note.strip() not in a:
            why = f"the annotation of {key} changed"
        out.append(f"{path}: {where} differs from a regeneration: {why}")
    return out


# A trace file's rows (traces/README.md, schema 1), column by column.
TRACE_ROWS = {
    "funcs": ("module", "qualname", "dist", "version", "path", "first_line", "last_line", "overloaded"),
    "threads": ("name", "started_by", "root"),
    "wakeups": ("notify", "wait"),
    "events": ("thread", "parent", "call_line", "func", "step", "args", "ret", "raised", "return_line"),
}


def _func_key(row: Sequence[object]) -> str:
    module, qualname, first, overloaded = row[0], row[1], row[5], row[7]
    return f"{module}:{qualname}" + (f"@{first}" if overloaded else "")


def _rows(data: Mapping[str, object], name: str) -> list[list[Any]]:
    """The rows of one table of a parsed trace (JSON: their cells are whatever the file holds)."""
    rows = data.get(name)
    return [r for r in rows if isinstance(r, list)] if isinstance(rows, list) else []


def _versions(data: Mapping[str, object]) -> dict[str, object]:
    versions = data.get("versions")
    return versions if isinstance(versions, dict) else {}


def _names(items: Iterable[str], limit: int = 3) -> str:
    items = list(items)
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def diff_traces(old: Mapping[str, object], new: Mapping[str, object]) -> list[str]:
    """How a fresh recording differs from the committed trace, field by field (parsed JSON of both).

    Versions are named per distribution (``versions: python-engineio 4.13.3 → 4.13.2``); functions
    by key and the column that changed; events by index, thread, function and the column. A
    function whose only change is the version a changed ``versions`` entry explains is not repeated.
    """
    out = []
    for key in ("schema", "scenario", "python"):
        if old.get(key) != new.get(key):
            out.append(f"{key}: {old.get(key)} → {new.get(key)}")
    va, vb = _versions(old), _versions(new)
    versions = [f"{d} {va.get(d, '(none)')} → {vb.get(d, '(none)')}" for d in sorted(set(va) | set(vb)) if va.get(d) != vb.get(d)]
    if versions:
        out.append(f"versions: {', '.join(versions)}")
    if old.get("steps") != new.get("steps"):
        out.append(f"steps: {old.get('steps')} → {new.get('steps')}")
    fa = {_func_key(r): r for r in _rows(old, "funcs") if len(r) >= 8}
    fb = {_func_key(r): r for r in _rows(new, "funcs") if len(r) >= 8}
    if set(fa) - set(fb):
        out.append(f"funcs: no longer called: {_names(sorted(set(fa) - set(fb)))}")
    if set(fb) - set(fa):
        out.append(f"funcs: newly called: {_names(sorted(set(fb) - set(fa)))}")
    for key in sorted(set(fa) & set(fb)):
        a, b = fa[key], fb[key]
        cols = [c for c, x, y in zip(TRACE_ROWS["funcs"], a, b) if x != y]
        if cols == ["version"] and va.get(a[2]) == a[3] and vb.get(b[2]) == b[3]:
            continue  # explained by the versions line
        if "first_line" in cols or "last_line" in cols:
            out.append(f"funcs: {key} lines {a[5]}-{a[6]} → {b[5]}-{b[6]}")
            cols = [c for c in cols if c not in ("first_line", "last_line")]
        out += [f"funcs: {key} {c} {x} → {y}" for c, x, y in zip(TRACE_ROWS["funcs"], a, b) if c in cols]
    for name in ("threads", "wakeups"):
        ra, rb = _rows(old, name), _rows(new, name)
        if ra != rb:
            i = next((i for i, (x, y) in enumerate(zip(ra, rb)) if x != y), min(len(ra), len(rb)))
            at = f"first at row {i + 1}: {ra[i] if i < len(ra) else '(none)'} → {rb[i] if i < len(rb) else '(none)'}"
            out.append(f"{name}: {len(ra)} → {len(rb)} rows, {at}" if len(ra) != len(rb) else f"{name}: {at}")
    out += _diff_events(old, new)
    known = {"schema", "scenario", "python", "versions", "steps", *TRACE_ROWS}
    out += [f"{k}: changed" for k in sorted((set(old) | set(new)) - known) if old.get(k) != new.get(k)]
    return out


# The browser's version, in a trace file's header (its identity in the requests is a placeholder).
_BROWSER_VERSION = re.compile(r'^ "versions": \{[^\n]*?"chromium": "([^"]*)"', re.MULTILINE)


def browser_version(trace_text: str) -> str | None:
    """The browser version a trace file's header names (None for a trace made without one)."""
    found = _BROWSER_VERSION.search(trace_text, 0, 4096)
    return found.group(1) if found else None


def browser_update(old: str, new: str) -> tuple[str, str | None]:
    """A browser update, the one named normalisation of a fresh trace: ``new`` with the committed
    trace's browser version put back, and a note naming both versions (None when they agree,
    or when either trace has none). Any other difference is left for trace_drift to name."""
    a, b = _BROWSER_VERSION.search(old, 0, 4096), _BROWSER_VERSION.search(new, 0, 4096)
    if not (a and b) or a.group(1) == b.group(1):
        return new, None
    note = f"recorded with Chromium {b.group(1)}; the committed trace was recorded with Chromium {a.group(1)}"
    return new[:b.start(1)] + a.group(1) + new[b.end(1):], note


# The one race between the server's threads a recording does not pin down: which of the packets
# queued for a WebSocket the writer thread's Socket.poll takes together (a handler that queues two
# packets, with a blocking call between them, may or may not have been overtaken by the writer).
_WRITER = "engineio.socket:Socket._websocket_handler.<locals>.writer"
_POLL = "engineio.socket:Socket.poll"
_GET = "queue:Queue.get"


def _without_writer_polls(data: Mapping[str, object]) -> tuple[dict, dict, frozenset, int] | None:
    """A parsed trace without the WebSocket writers' Socket.poll calls and everything under them,
    indices renumbered: (the rest, the packets each writer thread's polls took in order, the
    calls under the polls as (thread, function, arguments), how many polls); None
    when the rows do not have the schema's shape."""
    try:
        funcs = [_func_key(r) for r in _rows(data, "funcs")]
        threads = _rows(data, "threads")
        events = _rows(data, "events")
        removed: set[int] = set()
        taken: dict[str, list[object]] = {}
        shapes: set[tuple] = set()
        polls = 0
        for i, row in enumerate(events):
            parent = row[1]
            if funcs[row[3]] != _POLL or not (0 <= parent < len(events)) or funcs[events[parent][3]] != _WRITER:
                continue
            polls += 1
            thread = threads[row[0]][0]
            members, j = {i}, i + 1
            while j < len(events) and events[j][1] in members:
                members.add(j)
                j += 1
            for k in sorted(members):
                e = events[k]
                shapes.add((thread, funcs[e[3]], tuple((a[0], a[1]) for a in e[5])))
                if e[1] == i and funcs[e[3]] == _GET and not e[7] and e[6] and e[6][0] != "None":
                    taken.setdefault(thread, []).append(e[6][1])
            removed |= members
    except (IndexError, TypeError, KeyError):
        return None
    index: dict[int, int] = {-1: -1}
    kept: list[list[Any]] = []
    for i, row in enumerate(events):
        if i not in removed:
            index[i] = len(kept)
            kept.append(row)
    rest = dict(data)
    rest["events"] = [[r[0], index[r[1]], *r[2:]] for r in kept]
    rest["wakeups"] = [[index[n], index[w]] for n, w in _rows(data, "wakeups") if n not in removed and w not in removed]
    rest["threads"] = [[r[0], index.get(r[1], r[1]), index.get(r[2], r[2])] for r in threads]
    return rest, taken, frozenset(shapes), polls


def writer_batches(old: str, new: str) -> tuple[str, str | None]:
    """The server's one tolerated race, a named normalisation of a fresh trace: which queued
    packets a WebSocket writer's ``Socket.poll`` takes together. When ``new`` differs from
    ``old`` only in the writers' polls (how many there were and what is under them), and the
    polls took the same packets in the same order with calls of the same functions and
    arguments, it is ``old`` and a note; otherwise ``new`` as it is (None: no note), for
    trace_drift to name the difference. What the writer sent is outside the polls and compared
    as it is."""
    if old == new:
        return new, None
    try:
        a, b = json.loads(old), json.loads(new)
    except json.JSONDecodeError:
        return new, None
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return new, None
    ra, rb = _without_writer_polls(a), _without_writer_polls(b)
    if ra is None or rb is None or ra[:3] != rb[:3]:
        return new, None
    note = (f"a WebSocket writer's Socket.poll took the same packets in {rb[3]} polls, the committed trace's in {ra[3]} "
            f"(which queued packets a poll takes together is a race between the server's threads)")
    return old, note


def trace_drift(old: str, new: str) -> list[str]:
    """The differences of two trace files' texts, named by field (diff_traces); the first differing
    line only when a side is not JSON or the difference is in layout alone."""
    try:
        a, b = json.loads(old), json.loads(new)
    except json.JSONDecodeError:
        a = b = None
    found = diff_traces(a, b) if isinstance(a, dict) and isinstance(b, dict) else []
    ra, rb = (_without_writer_polls(a), _without_writer_polls(b)) if found else (None, None)
    if ra and rb and ra[3] != rb[3] and ra[0] != rb[0]:
        # The writers' polls took their packets in other batches too (writer_batches): name
        # what differs beside them, not the batches that come first.
        rows = ("threads", "wakeups", "events")
        found = [f"{d} (rows counted without the WebSocket writers' polls, whose batches differ too)" if d.startswith(rows) else d
                 for d in diff_traces(ra[0], rb[0])]
    return found or [f"layout at {first_difference(old, new)}"]


def _diff_events(old: Mapping[str, object], new: Mapping[str, object]) -> list[str]:
    """The first event that differs, by index, thread and function, naming the columns that changed."""
    def resolve(data: Mapping[str, object]) -> list[tuple[object, ...]]:
        funcs = [_func_key(r) if len(r) >= 8 else "?" for r in _rows(data, "funcs")]
        threads = [r[0] if r else "?" for r in _rows(data, "threads")]
        steps = data.get("steps")
        steps = steps if isinstance(steps, list) else []

        def name(seq: list, i: object) -> object:
            return seq[i] if isinstance(i, int) and 0 <= i < len(seq) else i

        out = []
        for r in _rows(data, "events"):
            r = list(r) + [None] * (len(TRACE_ROWS["events"]) - len(r))
            out.append((name(threads, r[0]), r[1], r[2], name(funcs, r[3]), name(steps, r[4]), *r[5:]))
        return out

    ea, eb = resolve(old), resolve(new)
    if ea == eb:
        return []
    i = next((i for i, (x, y) in enumerate(zip(ea, eb)) if x != y), min(len(ea), len(eb)))
    differ = sum(1 for x, y in zip(ea, eb) if x != y)
    count = f"{len(ea)} → {len(eb)} calls, " if len(ea) != len(eb) else f"{differ} of {len(ea)} differ, "
    if i >= len(ea) or i >= len(eb):
        extra = (eb if len(eb) > len(ea) else ea)[i]
        return [f"events: {count}from event {i}: {extra[0]} {extra[3]}"]
    a, b = ea[i], eb[i]
    cols = [f"{c} {clipped(str(x), 40)} → {clipped(str(y), 40)}" for c, x, y in zip(TRACE_ROWS["events"], a, b) if x != y]
    return [f"events: {count}first at event {i} ({b[0]}, {b[3]}): {', '.join(cols)}"]


def environment_reasons(
    traces: Mapping[str, tuple[str, Sequence[tuple[str, str]]]], python: str, installed: Mapping[str, str | None]
) -> list[str]:
    """Why a regeneration can differ: traces recorded on another Python or other library versions.

    ``traces``: scenario -> (python, [(distribution, version)]) from the trace headers.
    """
    out = []
    for scenario, (traced_python, versions) in sorted(traces.items()):
        if traced_python != python:
            out.append(f"trace {scenario} was recorded with Python {traced_python}, this is Python {python}")
        for dist, version in versions:
            now = installed.get(dist)
            if now != version:
                out.append(f"trace {scenario} was recorded with {dist} {version}, installed here: {now or 'none'}")
    return out
