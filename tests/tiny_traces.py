"""Small frozen traces written as tables, for the derivation's table tests: a thread is a list of rows
``(label, depth, function, args, returned)``; a row's parent is the nearest row above it one level up.
``args`` is a tuple of ``(name, value)`` or ``(name, value, token)``; a value is a str (shown as a
trace shows a str), bytes (shown as a trace shows bytes) or the text of anything else (``<Packet>``,
``None``); ``returned`` is the same, or a ``(value, token)`` pair, or None (no return recorded)."""
from __future__ import annotations

from collections.abc import Sequence

from dispel.model import Event, Func, Source, ThreadInfo, TraceFile, Value, WakeUp

Row = tuple[str, int, str, tuple, object]


def text(value) -> str:
    """A value as a trace file writes it (Normalizer.text: bytes as latin-1 text after a ``b``)."""
    if isinstance(value, bytes):
        return "b" + repr(value.decode("latin-1"))
    if isinstance(value, str) and not value.startswith("<") and value not in ("None", "True", "False"):
        return repr(value)
    return str(value)


def _value(name: str, spec) -> Value:
    if isinstance(spec, tuple):
        return Value(name, text(spec[0]), spec[1])
    return Value(name, text(spec))


def _func(key: str) -> Func:
    module, _, qualname = key.partition(":")
    dist = "builtin" if module in ("_socket",) else "sample_app" if module == "app" else module.split(".")[0]
    return Func(module, qualname, Source(dist, "0", module.replace(".", "/") + ".py"), 1, 99)


def trace(threads: dict[str, Sequence[Row]], wakeups: Sequence[tuple[str, str]] = ()) -> tuple[TraceFile, dict[str, int]]:
    """The TraceFile of the tables, and each row's event index by its label. ``wakeups``: (the label of
    a notify, the label of the wait it ended)."""
    events: list[Event] = []
    at: dict[str, int] = {}
    infos = []
    for name, rows in threads.items():
        stack: list[int] = []  # the open calls' indexes, outermost first
        first = len(events)
        for label, depth, func, args, returned in rows:
            del stack[depth:]
            i = len(events)
            ret = None if returned is None else _value("return", returned)
            events.append(Event(i, func, name, stack[-1] if stack else -1, 1, depth, i, "step", tuple(_value(a[0], a[1] if len(a) == 2 else (a[1], a[2])) for a in args), ret, False, 1))
            stack.append(i)
            if label:
                at[label] = i
        infos.append(ThreadInfo(name, -1, first))
    # each call ends at the last event under it
    ends = [e.index for e in events]
    for e in reversed(events):
        if e.parent >= 0:
            ends[e.parent] = max(ends[e.parent], ends[e.index])
    events = [Event(e.index, e.func, e.thread, e.parent, e.call_line, e.depth, ends[e.index], e.step, e.args, e.ret, e.raised, e.return_line) for e in events]
    funcs = {e.func: _func(e.func) for e in events}
    wakes = tuple(WakeUp(at[n], at[w]) for n, w in wakeups)
    return TraceFile("tiny", "3.11.7", (), ("step",), funcs, tuple(infos), tuple(events), wakes), at
