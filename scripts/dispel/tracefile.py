"""Trace files: normalize a raw recording into a deterministic TraceFile, and TraceFile/Chain <-> JSON."""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable

from .catalog import THREAD_ROLES
from .values import IMMUTABLE, Normalizer
from .model import (
    CHAIN_SCHEMA,
    TRACE_SCHEMA,
    Chain,
    Relay,
    DispelError,
    Event,
    Func,
    Hop,
    Join,
    Source,
    ThreadInfo,
    TraceFile,
    Value,
    WakeUp,
    WireField,
    WireLayer,
)

# ------------------------------------------------------------------ where code lives


@dataclass(frozen=True)
class Root:
    """A folder of installed code: files under ``prefix`` belong to ``dist``.

    ``base`` is the folder that distribution-relative paths start from
    (site-packages for a library, the stdlib folder for ``python``).
    ``lib_prefix`` is prepended to the relative path (``Lib/`` for the stdlib).
    """

    prefix: str
    base: str
    dist: str
    version: str
    lib_prefix: str = ""


def locate(roots: Iterable[Root], filename: str) -> tuple[Source, str] | None:
    """(Source, module name) of a file, by the longest matching root."""
    best = None
    for root in roots:
        if filename.startswith(root.prefix) and (best is None or len(root.prefix) > len(best.prefix)):
            best = root
    if best is None:
        return None
    rel = filename[len(best.base):].lstrip("/")
    module = rel[:-3] if rel.endswith(".py") else rel
    if module.endswith("/__init__"):
        module = module[: -len("/__init__")]
    return Source(best.dist, best.version, best.lib_prefix + rel), module.replace("/", ".")


def def_line(lines: list[str], first: int) -> int:
    """The line of ``def``/``class`` at or after ``first``: skips decorators (co_firstlineno points at them)."""
    for n in range(first, min(len(lines), first + 50) + 1):
        text = lines[n - 1].lstrip()
        if text.startswith(("def ", "async def ", "class ", "lambda")) or "lambda" in text:
            return n
        if not text.startswith("@") and text and not text.startswith("#"):
            return first
    return first


# ------------------------------------------------------------------ normalization

SYNC_NOTIFY = ("Condition.notify", "Condition.notify_all")
MAX_PERIOD = 3
SYNC_WAIT = "Condition.wait"


@dataclass(frozen=True)
class RawCall:
    """A raw row with its code already resolved to a Func key (see normalize)."""

    row: int
    func: str
    serial: int
    parent: int
    line: int
    args: tuple[tuple[str, int, object], ...]
    ret: tuple[int, int, object, int, int] | None  # (calls-so-far, id, value, return line, size or -1)


def thread_role(root_children: list[str]) -> str:
    """A logical role from what a thread ran first (the target of Thread.run)."""
    first = root_children[0] if root_children else ""
    for needle, role in THREAD_ROLES:
        if needle in first:
            return role
    return "thread"


def normalize(
    scenario: str,
    python: str,
    versions: dict[str, str],
    steps: list[tuple[str, int, int]],
    calls: list[RawCall],
    funcs: dict[str, Func],
    thread_starts: dict[int, int],
    normalizer: Normalizer,
) -> TraceFile:
    """A deterministic TraceFile from raw calls (all of it pure).

    Threads are ordered by who started them and when, and named by role;
    consecutive identical sibling subtrees (idle polls, pings) are kept once.
    """
    for c in calls:
        # An accepted connection's peer port is chosen by the OS: learn it first.
        if c.func == "_socket:socket._accept" and c.ret and isinstance(c.ret[2], tuple):
            addr = c.ret[2][1] if len(c.ret[2]) > 1 else None
            if isinstance(addr, tuple) and len(addr) > 1 and isinstance(addr[1], int):
                normalizer.learn_client_port(addr[1])
    by_thread: dict[int, list[RawCall]] = defaultdict(list)
    for c in calls:
        by_thread[c.serial].append(c)
    children: dict[int, list[int]] = defaultdict(list)
    for c in calls:
        children[c.parent].append(c.row)
    row_of = {c.row: c for c in calls}

    def ret_text(c: RawCall) -> str:
        text = normalizer.value(c.func, "return", c.ret[2])
        # the size a container had when it was returned, which the caller saw
        return f"{text[:-1]} len={c.ret[4]}>" if c.ret[4] >= 0 and text.startswith("<") else text

    # --- fold: consecutive siblings with the same signature are kept once.
    sig_cache: dict[int, tuple] = {}

    def signature(row: int) -> tuple:
        if row in sig_cache:
            return sig_cache[row]
        c = row_of[row]
        kids = tuple(signature(k) for k in _folded(children.get(row, [])))
        args = tuple((n, normalizer.value(c.func, n, v)) for n, _, v in c.args)
        ret = ret_text(c) if c.ret else None
        sig_cache[row] = sig = (c.func, c.line, args, ret, kids)
        return sig

    alias: dict[int, int] = {}  # dropped row -> the kept row it duplicates
    idle: set[int] = set()  # rows of idle poll iterations, dropped with their subtrees

    def _busy(kids: list[int]) -> list[int]:
        # An idle iteration of a poll loop: a call that returned an empty container
        # and is made again, from the same line, later among the same siblings. It and
        # what follows it, up to that next call, happen as often as the clock allows.
        out: list[int] = []
        # only calls that sometimes return something: an always-empty result is no poll
        busy_sites = {(row_of[k].func, row_of[k].line) for k in kids if (row_of[k].ret or (0, 0, 0, 0, -1))[4] > 0}
        i = 0
        while i < len(kids):
            c = row_of[kids[i]]
            again = next(
                (j for j in range(i + 1, len(kids)) if (row_of[kids[j]].func, row_of[kids[j]].line) == (c.func, c.line)),
                None,
            )
            if c.ret is not None and c.ret[4] == 0 and again is not None and (c.func, c.line) in busy_sites:
                for k in kids[i:again]:
                    idle.add(k)
                i = again
                continue
            out.append(kids[i])
            i += 1
        return out

    def _folded(kids: list[int]) -> list[int]:
        # A block of up to MAX_PERIOD siblings that repeats the block just before
        # it is dropped: idle loops (select, service_actions, select, ...) run
        # as often as the clock allows, and only their shape matters.
        kept: list[int] = []
        for k in _busy(kids):
            kept.append(k)
            for period in range(1, MAX_PERIOD + 1):
                if len(kept) >= 2 * period and all(
                    signature(a) == signature(b) for a, b in zip(kept[-2 * period : -period], kept[-period:])
                ):
                    for d, a in zip(kept[-period:], kept[-2 * period : -period]):
                        _alias_tree(d, a)
                    del kept[-period:]
                    break
        return kept

    def _alias_tree(dropped: int, kept: int) -> None:
        alias[dropped] = kept
        for d, k in zip(_folded(children.get(dropped, [])), _folded(children.get(kept, []))):
            _alias_tree(d, k)

    # --- canonical order of threads: by the starter's canonical position.
    serials = sorted(by_thread)
    roots = {s: [c.row for c in by_thread[s] if c.parent == -1] for s in serials}

    def preorder(row: int) -> Iterable[int]:
        yield row
        for k in _folded(children.get(row, [])):
            yield from preorder(k)

    order: list[int] = []  # canonical list of serials
    position: dict[int, int] = {}  # raw row -> canonical index
    thread_name: dict[int, str] = {}
    role_count: dict[str, int] = defaultdict(int)

    thread_sigs: dict[tuple, int] = {}

    def place(serial: int) -> None:
        kept_roots = _folded(roots[serial])
        sig = tuple(signature(r) for r in kept_roots)
        twin = thread_sigs.get(sig)
        if twin is not None and serial != serials[0]:
            # A thread that did exactly what an earlier one did (the handler of the
            # 50th identical message) is kept once, like repeated calls are.
            for mine, theirs in zip(kept_roots, _folded(roots[twin])):
                _alias_tree(mine, theirs)
            return
        thread_sigs.setdefault(sig, serial)
        order.append(serial)
        rows = [r for root in kept_roots for r in preorder(root)]
        if serial == serials[0]:
            name = "main"
        else:
            first_root = roots[serial][0]
            kids = [row_of[k].func for k in children.get(first_root, [])]
            role = thread_role(kids or [row_of[first_root].func])
            role_count[role] += 1
            name = role if role in ("server", "eio-service") and role_count[role] == 1 else f"{role}-{role_count[role]}"
        thread_name[serial] = name
        for r in rows:
            position[r] = len(position)

    # Breadth by start position: a thread is placed after its starter, and the
    # threads one thread starts are placed in the order it started them.
    starts_of: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for serial, start_row in thread_starts.items():
        if start_row >= 0 and serial in by_thread:
            starter = row_of[start_row].serial if start_row in row_of else serials[0]
            starts_of[starter].append((start_row, serial))
    queue = [serials[0]]
    placed = set()
    while queue:
        s = queue.pop(0)
        if s in placed or s not in by_thread:
            continue
        placed.add(s)
        place(s)
        for start_row, child in sorted(starts_of[s], key=lambda p: position.get(alias.get(p[0], p[0]), 1 << 60)):
            queue.append(child)
    for s in serials:  # threads whose start was not seen (should not happen)
        if s not in placed:
            placed.add(s)
            place(s)

    def canon(row: int) -> int:
        while row in alias:
            row = alias[row]
        return position.get(row, -1)

    # --- object identity tokens: ids seen in two or more kept events.
    seen: dict[int, set[int]] = defaultdict(set)
    kept_rows = sorted(position, key=position.__getitem__)
    for r in kept_rows:
        c = row_of[r]
        for _, oid, v in c.args:
            if _tokenizable(v):
                seen[oid].add(r)
        if c.ret and _tokenizable(c.ret[2]):
            seen[c.ret[1]].add(r)
    token_of: dict[int, int] = {}

    def token(oid: int, v: object) -> int:
        if not _tokenizable(v) or len(seen.get(oid, ())) < 2:
            return 0
        if oid not in token_of:
            token_of[oid] = len(token_of) + 1
        return token_of[oid]

    # A thread's step is the step during which it started: the steps of single
    # calls would depend on how far a thread got before the driver moved on.
    step_of_row = _step_lookup(steps)
    thread_step = {s: step_of_row(thread_starts.get(s, -1) if thread_starts.get(s, -1) >= 0 else roots[s][0]) for s in serials}
    events: list[Event] = []
    depth_of: dict[int, int] = {}
    for r in kept_rows:
        c = row_of[r]
        parent = canon(c.parent) if c.parent >= 0 else -1
        depth = depth_of[parent] + 1 if parent >= 0 else 0
        idx = len(events)
        depth_of[idx] = depth
        args = tuple(Value(n, normalizer.value(c.func, n, v), token(oid, v)) for n, oid, v in c.args)
        raised = bool(c.ret and c.ret[2] == "raise" and c.ret[1] == 0)
        ret = None
        if c.ret and not raised:
            ret = Value("return", ret_text(c), token(c.ret[1], c.ret[2]))
        events.append(
            Event(
                idx, c.func, thread_name[c.serial], parent, c.line, depth, idx, thread_step[c.serial],
                # a probe's lines are the recorder's own, not the C function's
                args, ret, raised, c.ret[3] if c.ret and funcs[c.func].source.dist != "builtin" else 0,
            )
        )
    events = _with_ends(events)

    threads = []
    for s in order:
        start_row = thread_starts.get(s, -1)
        if start_row >= 0 and canon(start_row) < 0:
            start_row = -1
        first = next(i for i, e in enumerate(events) if e.thread == thread_name[s])
        threads.append(ThreadInfo(thread_name[s], canon(start_row) if start_row >= 0 else -1, first))

    wakeups = _wakeups(calls, canon)
    used = {e.func for e in events}
    return TraceFile(
        scenario=scenario,
        python=python,
        versions=tuple(sorted(versions.items())),
        steps=tuple(name for name, _, _ in steps),
        funcs={k: funcs[k] for k in sorted(used)},
        threads=tuple(threads),
        events=tuple(events),
        wakeups=wakeups,
    )


def _tokenizable(v: object) -> bool:
    # Small ints, None, bools and short strings are shared by the interpreter:
    # their identity says nothing about data flow.
    if isinstance(v, (str, bytes)):
        return len(v) >= 8
    return type(v) not in IMMUTABLE


def _step_lookup(steps: list[tuple[str, int, int]]) -> Callable[[int], str]:
    def step_of(row: int) -> str:
        name = ""
        for step, first, _ in steps:
            if row >= first:
                name = step
        return name

    return step_of


def _with_ends(events: list[Event]) -> list[Event]:
    end = [e.index for e in events]
    for e in reversed(events):
        if e.parent >= 0:
            end[e.parent] = max(end[e.parent], end[e.index])
    return [Event(**{**e.__dict__, "end": end[e.index]}) for e in events]


def _wakeups(calls: list[RawCall], canon: Callable[[int], int]) -> tuple[WakeUp, ...]:
    """Pair each Condition.wait that returned with the notify that ended it.

    The notify must run on another thread, on the same Condition, after the
    wait began and before it returned: the first such notify is the one that
    woke it (later ones found no waiter or woke another).
    """
    notifies: dict[int, list[RawCall]] = defaultdict(list)
    waits: list[RawCall] = []
    for c in calls:
        qual = c.func.partition(":")[2]
        if not c.func.startswith("threading:") or not c.args:
            continue
        if qual in SYNC_NOTIFY:
            notifies[c.args[0][1]].append(c)
        elif qual == SYNC_WAIT and c.ret is not None:
            waits.append(c)
    pairs = set()
    for w in waits:
        returned_at = w.ret[0]
        for n in notifies.get(w.args[0][1], ()):
            if w.row < n.row < returned_at and n.serial != w.serial:
                a, b = canon(n.row), canon(w.row)
                if a >= 0 and b >= 0:
                    pairs.add((a, b))
                break
    return tuple(WakeUp(a, b) for a, b in sorted(pairs))


# ------------------------------------------------------------------ JSON


def trace_to_json(trace: TraceFile) -> str:
    """One event per line: diffs of trace files stay readable."""
    func_keys = list(trace.funcs)
    fidx = {k: i for i, k in enumerate(func_keys)}
    tidx = {t.name: i for i, t in enumerate(trace.threads)}
    sidx = {s: i for i, s in enumerate(trace.steps)}
    head = {
        "schema": TRACE_SCHEMA,
        "scenario": trace.scenario,
        **({"process": trace.process} if trace.process else {}),
        "python": trace.python,
        "versions": dict(trace.versions),
        "steps": list(trace.steps),
    }
    out = ["{"]
    for k, v in head.items():
        out.append(f" {json.dumps(k)}: {json.dumps(v, sort_keys=True, ensure_ascii=False)},")
    out.append(' "funcs": [')
    rows = []
    for k in func_keys:
        f = trace.funcs[k]
        rows.append("  " + json.dumps([f.module, f.qualname, f.source.dist, f.source.version, f.source.path, f.first_line, f.last_line, int(f.overloaded)], ensure_ascii=False))
    out.append(",\n".join(rows))
    out.append(" ],")
    out.append(' "threads": [')
    out.append(",\n".join("  " + json.dumps([t.name, t.started_by, t.root]) for t in trace.threads))
    out.append(" ],")
    out.append(' "wakeups": [')
    out.append(",\n".join("  " + json.dumps([w.notify, w.wait]) for w in trace.wakeups))
    out.append(" ],")
    out.append(' "events": [')
    rows = []
    for e in trace.events:
        row = [
            tidx[e.thread],
            e.parent,
            e.call_line,
            fidx[e.func],
            sidx.get(e.step, -1),
            [[a.name, a.text, a.token] for a in e.args],
            None if e.ret is None else [e.ret.text, e.ret.token],
            int(e.raised),
            e.return_line,
        ]
        rows.append("  " + json.dumps(row, ensure_ascii=False))
    out.append(",\n".join(rows))
    out.append(" ]")
    out.append("}")
    return "\n".join(out) + "\n"


def trace_from_json(text: str, origin: str = "trace file") -> TraceFile:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DispelError(f"{origin} is not valid JSON (line {exc.lineno}: {exc.msg}); it may be truncated: re-record it with `dispel record`") from None
    if not isinstance(data, dict) or "schema" not in data:
        raise DispelError(f"{origin} is not a dispel trace (no schema field); re-record it with `dispel record`")
    if data["schema"] != TRACE_SCHEMA:
        raise DispelError(
            f"{origin} has trace schema {data['schema']!r}, this dispel reads schema {TRACE_SCHEMA}; re-record it with `dispel record`"
        )
    try:
        funcs = {}
        keys = []
        for module, qualname, dist, version, path, first, last, overloaded in data["funcs"]:
            f = Func(module, qualname, Source(dist, version, path), first, last, bool(overloaded))
            funcs[f.key] = f
            keys.append(f.key)
        threads = tuple(ThreadInfo(n, s, r) for n, s, r in data["threads"])
        steps = tuple(data["steps"])
        events = []
        depth: dict[int, int] = {}
        for i, (t, parent, line, fi, si, args, ret, raised, return_line) in enumerate(data["events"]):
            depth[i] = depth[parent] + 1 if parent >= 0 else 0
            events.append(
                Event(
                    i,
                    keys[fi],
                    threads[t].name,
                    parent,
                    line,
                    depth[i],
                    i,
                    steps[si] if si >= 0 else "",
                    tuple(Value(n, v, tok) for n, v, tok in args),
                    None if ret is None else Value("return", ret[0], ret[1]),
                    bool(raised),
                    return_line,
                )
            )
        wakeups = tuple(WakeUp(a, b) for a, b in data["wakeups"])
        return TraceFile(
            scenario=data["scenario"],
            python=data["python"],
            versions=tuple(sorted(data["versions"].items())),
            steps=steps,
            funcs=funcs,
            threads=threads,
            events=tuple(_with_ends(events)),
            wakeups=wakeups,
            process=data.get("process", ""),
        )
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise DispelError(f"{origin} is malformed ({type(exc).__name__}: {exc}); re-record it with `dispel record`") from None


# ------------------------------------------------------------------ chains <-> JSON


def chain_to_dict(chain: Chain) -> dict:
    def func(f: Func) -> dict:
        return {
            "module": f.module,
            "qualname": f.qualname,
            "dist": f.source.dist,
            "version": f.source.version,
            "path": f.source.path,
            "first_line": f.first_line,
            "last_line": f.last_line,
            "overloaded": f.overloaded,
        }

    return {
        "schema": CHAIN_SCHEMA,
        "journey": chain.journey,
        "title": chain.title,
        "scenario": chain.scenario,
        "hops": [
            {
                "func": func(h.func),
                "line": h.line,
                "line_text": h.line_text,
                "thread": h.thread,
                "edge": h.edge,
                "event": h.event,
                "value": h.value,
            }
            for h in chain.hops
        ],
        "wire": [
            {"layer": w.layer, "raw": w.raw, "fields": [[f.name, f.value, f.meaning] for f in w.fields]}
            for w in chain.wire
        ],
        "joins": [[j.producer, j.user, j.kind] for j in chain.joins],
        **({"relays": [[r.publisher, r.event, r.room, r.reader, int(r.handled), r.sent] for r in chain.relays]} if chain.relays else {}),
    }


def chain_from_dict(data: dict, origin: str = "chain file") -> Chain:
    if not isinstance(data, dict) or data.get("schema") != CHAIN_SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else None
        raise DispelError(f"{origin} has chain schema {got!r}, expected {CHAIN_SCHEMA}; regenerate it with `dispel chains`")
    try:
        hops = []
        for h in data["hops"]:
            f = h["func"]
            func = Func(f["module"], f["qualname"], Source(f["dist"], f["version"], f["path"]), f["first_line"], f["last_line"], f.get("overloaded", False))
            hops.append(Hop(func, h["line"], h["thread"], h["edge"], h["event"], h["value"], h["line_text"]))
        wire = tuple(
            WireLayer(w["layer"], w["raw"], tuple(WireField(*fl) for fl in w["fields"])) for w in data["wire"]
        )
        joins = tuple(Join(int(a), int(b), str(k)) for a, b, k in data.get("joins", ()))
        relays = tuple(Relay(str(p), str(e), str(r), str(who), bool(h), int(n)) for p, e, r, who, h, n in data.get("relays", ()))
        return Chain(data["journey"], data["title"], data["scenario"], tuple(hops), wire, joins, relays)
    except (KeyError, TypeError, ValueError) as exc:
        raise DispelError(f"{origin} is malformed ({type(exc).__name__}: {exc}); regenerate it with `dispel chains`") from None
