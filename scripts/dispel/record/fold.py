"""Bounded memory while recording: the Python cores' fold of repeated loop iterations.

A call that returns is *identical* to an earlier sibling when it is the same code, called
from the same instruction of the same open parent call, left from the same instruction the
same way (a return or an exception; an empty, a non-empty or no container), and every call
under it was identical in that sense, in the same order (its *shape*: a hash over all that).
Under one open call, once FOLD_AFTER calls of one shape have been kept, each further call of
that shape is folded: its rows (its own, and every row under it) are taken out of the trace
at once and only counted, in ``RawTrace.folded`` (parent row, offset in the parent) -> calls.

Rows are numbered in the global order of calls, which orders returns and wake-ups: taking
rows out renumbers the rows recorded after them by other threads (their ints, their returns,
the stacks of their open calls); everything else that names a row (a Thread.start, a step,
a greenlet's first switch) pins the rows before it (``barrier``): a call that began before the
barrier is never folded. Rows kept keep their order, so every wake-up between kept rows
stays exact; a wait whose notify was folded (or the reverse) simply has no wake-up.

The C cores (dispel.record._ctracer) do the same in C (``fold`` there); both cores write the
same rows.
"""
from __future__ import annotations

from array import array
from typing import Any

FOLD_AFTER = 500  # calls of one shape kept under one open call; the committed scenarios stay far below (docs/how.md)
MAX_SHAPES = 256  # shapes counted per open call; a call with more distinct children folds none beyond them

# A Python core's stack entry: a list, so that renumbering can change it in place.
ROW, FRAME, VALUES_AT, RETS_AT, ACC, SHAPES, RAISED_AT = range(7)


def entry(row: int, frame: Any, values_at: int, rets_at: int) -> list:
    """A call's place on its thread's stack: its row, frame, where its values and the returns
    after it begin, the hash of its children so far, their shape counts, where it raised."""
    return [row, frame, values_at, rets_at, 0, None, None]


def counted(parent: list, shape: int) -> int:
    """Count one more child of ``shape`` under ``parent``; how many there are now (0: not counted)."""
    shapes = parent[SHAPES]
    if shapes is None:
        shapes = parent[SHAPES] = {}
    n = shapes.get(shape, 0) + 1
    if n == 1 and len(shapes) >= MAX_SHAPES:
        return 0
    shapes[shape] = n
    return n


def fold(raw: Any, names: Any, done: list, serial: int, parent: list, states: list, stack_of: Any) -> None:
    """Take ``done`` (an entry just popped from thread ``serial``'s stack, its return not
    recorded) and every row under it out of ``raw``; count it under ``parent``. ``states``:
    every thread's state, whose stacks ``stack_of(state)`` are renumbered; their
    ``last_none`` (a return's index) too, where a core keeps one."""
    first, vfirst, rfirst = done[ROW], done[VALUES_AT], done[RETS_AT]
    codes, ints, values = raw.codes, raw.ints, raw.values
    n = len(codes)
    key = (parent[ROW], ints[3 * first + 2])
    raw.folded[key] = raw.folded.get(key, 0) + 1
    new: list[int] = []  # tail row -> its new row, -1 when dropped
    live_codes: list = []
    live_ints = array("q")
    live_values: list = []
    value_at: dict[int, int] = {}  # new row -> where its values begin now
    at = vfirst
    for r in range(first, n):
        code = codes[r]
        k = len(names[code])
        if ints[3 * r] == serial:
            new.append(-1)
        else:
            p = ints[3 * r + 1]
            row = first + len(live_codes)
            new.append(row)
            value_at[row] = vfirst + len(live_values)
            live_codes.append(code)
            live_ints.extend((ints[3 * r], new[p - first] if p >= first else p, ints[3 * r + 2]))
            live_values.extend(values[at:at + k])
        at += k
    counts = array("q", [first])  # rows kept before each tail row, + first
    for m in new:
        counts.append(counts[-1] + (m >= 0))
    codes[first:] = live_codes
    ints[3 * first:] = live_ints
    values[vfirst:] = live_values
    rets, ret_values = raw.rets, raw.ret_values
    live_rets = array("q")
    live_ret_values: list = []
    ret_new: list[int] = []  # old return index - rfirst -> new index, -1 when dropped
    for i in range(rfirst, len(ret_values)):
        row, seq, offset, size = rets[4 * i:4 * i + 4]
        if row >= first and new[row - first] < 0:
            ret_new.append(-1)
            continue
        ret_new.append(rfirst + len(live_ret_values))
        live_rets.extend((new[row - first] if row >= first else row, counts[seq - first] if seq >= first else seq, offset, size))
        live_ret_values.append(ret_values[i])
    rets[4 * rfirst:] = live_rets
    ret_values[rfirst:] = live_ret_values

    kept_before = [rfirst]  # returns kept before each old index from rfirst on
    for m in ret_new:
        kept_before.append(kept_before[-1] + (m >= 0))

    def ret_index(i: int) -> int:
        return i if i < rfirst else kept_before[i - rfirst]

    for state in states:
        for e in reversed(stack_of(state)):
            if e[ROW] < first:
                break
            e[ROW] = new[e[ROW] - first]
            e[VALUES_AT] = value_at[e[ROW]]
            e[RETS_AT] = ret_index(e[RETS_AT])
        last_none = getattr(state, "last_none", None)
        if last_none is not None and last_none[1] >= rfirst:
            kept = ret_new[last_none[1] - rfirst] >= 0 if last_none[1] - rfirst < len(ret_new) else False
            state.last_none = (last_none[0], ret_index(last_none[1])) if kept else None
    for (p, offset), k in list(raw.folded.items()):
        if p >= first:  # the places under a call taken out go with it
            del raw.folded[p, offset]
            if p < n and new[p - first] >= 0:
                raw.folded[new[p - first], offset] = k
