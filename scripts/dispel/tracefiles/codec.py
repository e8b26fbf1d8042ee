"""Trace files: normalize a raw recording into a deterministic TraceFile, and TraceFile/Chain <-> JSON."""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from ..model import (
    CHAIN_SCHEMA,
    TRACE_SCHEMA,
    Chain,
    DispelError,
    Event,
    Func,
    Hop,
    Join,
    Relay,
    Source,
    ThreadInfo,
    TraceFile,
    Value,
    WakeUp,
    WireField,
    WireLayer,
    subtree_ends,
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
    module = rel.removesuffix(".py")
    module = module.removesuffix("/__init__")
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
        **({"folded": dict(trace.folded)} if trace.folded else {}),
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
        rows = data["events"]
        # depth and end (model.subtree_ends) first: each Event is made once
        parents = [row[1] for row in rows]
        depth = [0] * len(rows)
        for i, parent in enumerate(parents):
            if parent >= 0:
                depth[i] = depth[parent] + 1
        end = subtree_ends(parents)
        events = [
            Event(
                i, keys[fi], threads[t].name, parent, line, depth[i], end[i], steps[si] if si >= 0 else "",
                tuple(Value(n, v, tok) for n, v, tok in args),
                None if ret is None else Value("return", ret[0], ret[1]),
                bool(raised), return_line,
            )
            for i, (t, parent, line, fi, si, args, ret, raised, return_line) in enumerate(rows)
        ]
        wakeups = tuple(WakeUp(a, b) for a, b in data["wakeups"])
        return TraceFile(
            scenario=data["scenario"],
            python=data["python"],
            versions=tuple(sorted(data["versions"].items())),
            steps=steps,
            funcs=funcs,
            threads=threads,
            events=tuple(events),
            wakeups=wakeups,
            process=data.get("process", ""),
            folded=tuple(sorted((str(k), int(v)) for k, v in data.get("folded", {}).items())),
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
