"""The recorder: the only user of sys.settrace; it keeps primitive rows and resolves nothing while the program runs."""
from __future__ import annotations

import contextlib
import dis
import importlib
import itertools
import socket
import sys
import threading
import time
from array import array
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from types import CodeType, FrameType, ModuleType
from typing import Any, Protocol, Self

from .fold import ACC, FOLD_AFTER, FRAME, RAISED_AT, ROW, counted, entry, fold

SIZED = frozenset({list, tuple, dict, set})
RAISED = object()  # the "value" of a call left by an exception

# Socket methods implemented in C: invisible to settrace, so they are wrapped in
# tiny Python functions (probes) while recording. They end most chains.
SOCKET_SINKS = ("bind", "listen", "_accept", "recv", "recv_into", "send", "sendall")


def original(module: str, name: str):
    """``module.name`` as it was before gevent monkey-patched it (itself when nothing did): the
    recorder's own thread idents, locks and sleeps are the operating system's, never a greenlet's."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None:
        return monkey.get_original(module, name)
    return getattr(importlib.import_module(module), name)


def line_at(code: CodeType, offset: int, _cache: dict = {}) -> int:  # noqa: B006 - a deliberate cache
    """The source line of the instruction at byte ``offset`` of ``code``.

    The recorder keeps instruction offsets (``f_lasti``, free to read) and turns them
    into lines after the run (``f_lineno`` searches the line table on every read).
    """
    table = _cache.get(code)
    if table is None:
        rows = [(start, end, line) for start, end, line in code.co_lines() if line is not None]
        table = _cache[code] = ([start for start, _, _ in rows], rows)  # co_lines runs in order
    starts, rows = table
    i = bisect_right(starts, offset) - 1
    if i >= 0 and offset < rows[i][1]:
        return rows[i][2]
    return 0


class Tracer(Protocol):
    """What every recorder core offers; scenarios and the stages see recorders only through it.

    ``start``/``stop`` trace this thread and the threads it starts; ``pause()`` and
    ``mark(step)`` are contexts (the calling thread untraced; rows named by a scenario
    step); ``errors`` says why the recorder disabled itself (it never raises into the
    traced program); ``rows()`` is everything recorded, resolved after the run.
    """

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def pause(self) -> contextlib.AbstractContextManager: ...

    def mark(self, step: str) -> contextlib.AbstractContextManager: ...

    @property
    def errors(self) -> list[str]: ...

    def rows(self) -> RawTrace: ...


MISSING = object()  # an argument the frame did not have (yet) when it was called


@dataclass
class RawTrace:
    """Everything a run left behind, still holding code objects and values.

    Kept flat and compact (an int array and two lists, not a tuple per call), since
    it grows by a row for every recorded call while the program runs. Every core
    (Python, C, sys.monitoring) fills the same layout.
    """

    # Row r is the r-th recorded call: codes[r]; ints[3r:3r+3] = thread serial, parent
    # row (-1 for none), instruction offset in the parent; its argument values follow
    # the previous row's in ``values``, one per name in names[codes[r]] (MISSING when
    # absent). The values themselves are kept until the trace is normalized: a live
    # object's id() is never reused by another, so it can be read then, off the hot
    # path, and identity joins stay exact.
    codes: list = field(default_factory=list)
    ints: array = field(default_factory=lambda: array("q"))
    values: list = field(default_factory=list)
    names: dict = field(default_factory=dict)  # code -> argument names, None for unwanted code
    # per return: rets[4i:4i+4] = row, calls recorded so far, offset it returned from,
    # size or -1; ret_values[i] its value, RAISED when the frame was left by an exception
    rets: array = field(default_factory=lambda: array("q"))
    ret_values: list = field(default_factory=list)
    # thread serial -> (row of the Thread.start that launched it or -1, id of the Thread object)
    threads: dict = field(default_factory=dict)
    # (step name, first row, end row)
    steps: list = field(default_factory=list)
    # each greenlet's first switch, in order: (calls recorded so far, serial switched from, serial switched to)
    switches: list = field(default_factory=list)
    greenlets: dict = field(default_factory=dict)  # serial of a greenlet made at a switch -> "hub" or "greenlet"
    errors: list = field(default_factory=list)  # why the recorder disabled itself
    # the probes' code objects -> the C socket method each stands for
    probe_codes: dict = field(default_factory=dict)
    # calls folded while recording (record.fold): (parent row, offset in the parent) -> how many
    folded: dict = field(default_factory=dict)
    core: str = "py"  # which recorder core filled it (not part of the trace file: every core writes the same bytes)

    def __len__(self) -> int:
        return len(self.codes)

    def call_rows(self):
        """(code, thread serial, parent row, offset in parent, ((name, value), ...)) per row."""
        ints, values, names = self.ints, self.values, self.names
        at = 0
        for row, code in enumerate(self.codes):
            args = names[code]
            got = values[at:at + len(args)]
            at += len(args)
            yield (code, ints[3 * row], ints[3 * row + 1], ints[3 * row + 2],
                   tuple((n, v) for n, v in zip(args, got) if v is not MISSING))

    def return_map(self) -> dict:
        """row -> (calls recorded so far, value, offset it returned from, size or -1)."""
        r, rows = self.rets, len(self.codes)
        return {r[4 * i]: (r[4 * i + 1], v, r[4 * i + 2], r[4 * i + 3]) for i, v in enumerate(self.ret_values) if r[4 * i] < rows}

    def cut(self, names: dict) -> RawTrace:
        """This trace as the recording ended, once no thread records into it any more
        (``_Recorder._silence``): a row or a return a thread was still writing when it was
        silenced is left out, in place (nothing is copied). ``names``: the decisions made.

        Threads still running then (a background task's ``while True`` loop) are cut where
        they are: their unfinished calls have no return.
        """
        n = min(len(self.codes), len(self.ints) // 3)
        total = sum(len(names[c]) for c in itertools.islice(self.codes, n))
        while total > len(self.values):  # the last row's values were not all there yet
            n -= 1
            total -= len(names[self.codes[n]])
        del self.codes[n:]
        del self.ints[3 * n:]
        del self.values[total:]
        m = min(len(self.rets) // 4, len(self.ret_values))
        del self.rets[4 * m:]
        del self.ret_values[m:]
        self.folded = {k: v for k, v in self.folded.items() if k[0] < n}
        self.names = names
        return self


def _is_hub(glet) -> bool:
    """gevent's hub: the greenlet that runs the event loop and switches to the others."""
    hub = sys.modules.get("gevent.hub")
    return hub is not None and isinstance(glet, hub.Hub)


_SPAWNS = (("Greenlet.start", "gevent/greenlet.py"), ("Thread.start", "/threading.py"))


def _spawns(code: CodeType) -> bool:
    """gevent's Greenlet.start (gevent.spawn calls it) or, in a monkey-patched program, Thread.start:
    each schedules its greenlet's first switch."""
    return code.co_name == "start" and any(
        code.co_qualname == q and code.co_filename.replace("\\", "/").endswith(f) for q, f in _SPAWNS)


def greenlet_starts(raw: RawTrace) -> None:
    """The row that started each greenlet, in ``raw.threads`` (in place; after the run, by every core alike).

    A greenlet's first switch gives it its serial. Its start is the last ``Greenlet.start`` of
    that very greenlet object (``self``) recorded before that switch, on any greenlet (the
    spawn); else the switch itself: the innermost call still open on the greenlet that switched
    to it (a raw greenlet switched to, the hub's first run).
    """
    first: dict[int, tuple[int, int]] = {}
    seen: set[int] = set()
    for n, origin, target in raw.switches:  # a greenlet made at a switch is first seen as its target
        if target not in seen:
            first[target] = (n, origin)
        seen.update((origin, target))
    if not first:
        return
    spawns: list[tuple[int, int]] = []  # (row, id of its self)
    returned: dict[int, int] = {raw.rets[4 * i]: raw.rets[4 * i + 1] for i in range(len(raw.rets) // 4)}
    for row, (code, _, _, _, args) in enumerate(raw.call_rows()):
        if _spawns(code) and args and args[0][0] == "self":
            spawns.append((row, id(args[0][1])))
    ints = raw.ints
    first_self: dict[int, int] = {}  # serial -> id of the self of its first recorded call (a patched Thread's _bootstrap)
    for row, (_, serial, _, _, args) in enumerate(raw.call_rows()):
        if serial in first and serial not in first_self:
            first_self[serial] = id(args[0][1]) if args and args[0][0] == "self" else 0
    for serial, (n, origin) in first.items():
        start, obj = raw.threads.get(serial, (-1, 0))
        if start >= 0:
            continue
        found = [row for row, who in spawns if who in (obj, first_self.get(serial, 0)) and row < n]
        if found:
            start = found[-1]
        else:
            open_rows = [r for r in range(min(n, len(ints) // 3)) if ints[3 * r] == origin and returned.get(r, n + 1) > n]
            start = open_rows[-1] if open_rows else -1
        raw.threads[serial] = (start, obj)


def still_running(raw: RawTrace) -> list[int]:
    """The serials of the threads that were still running when the recording was cut: their
    first recorded call (Thread.run, or the first call under it) never returned."""
    returned = {raw.rets[4 * i] for i in range(len(raw.rets) // 4)}
    roots: dict[int, int] = {}
    for row in range(len(raw.codes)):
        serial, parent = raw.ints[3 * row], raw.ints[3 * row + 1]
        if parent == -1 and serial not in roots:
            roots[serial] = row
    start_rows = {s for s, (start, _) in raw.threads.items() if start >= 0}
    return [s for s, row in sorted(roots.items()) if s in start_rows and row not in returned]


class _Decisions(dict):
    """code -> its argument names when its calls are recorded, else None; decided on first sight."""

    def __init__(self, decide: Callable[[CodeType], tuple[str, ...] | None]) -> None:
        super().__init__()
        self._decide = decide

    def __missing__(self, code: CodeType) -> tuple[str, ...] | None:
        names = self[code] = self._decide(code)
        return names

    def refuse_all(self) -> dict:
        """From now on no code is wanted (what a core that reads this dict then records
        nothing new); returns the decisions made until now."""
        made = dict(self)
        self._decide = lambda code: None
        self.clear()
        return made


class _ThreadState:
    __slots__ = ("last_none", "serial", "stack", "trace")

    def __init__(self, serial: int) -> None:
        self.serial = serial
        self.stack: list[list] = []  # record.fold.entry per open recorded call
        self.trace: Callable | None = None
        self.last_none: tuple | None = None  # (frame, index of its return) of the last return of None


def _arg_names(code: CodeType) -> tuple[str, ...]:
    n = code.co_argcount + code.co_kwonlyargcount
    n += bool(code.co_flags & 0x04) + bool(code.co_flags & 0x08)  # *args, **kwargs
    return tuple(code.co_varnames[:n])


# ---------------------------------------------------------------- socket probes
# Each probe calls the C method it replaces; the recorder sees the probe's call
# and return like any Python function. Each is written out with the C method's own
# argument names, so that the bytes passed and returned are recorded by name.
# ``_observed`` reports the bytes that recv_into wrote into a caller's buffer,
# which its return value (a count) hides.


def _observed(data):  # the argument is what gets recorded
    return None


def _make_probe(name: str, original: Callable) -> Callable:
    if name == "recv_into":

        def recv_into(self, buffer, nbytes=0, flags=0):
            n = original(self, buffer, nbytes, flags)
            _observed(bytes(memoryview(buffer)[:n]))
            return n

        return recv_into
    if name == "send":

        def send(self, data, flags=0):
            return original(self, data, flags)

        return send
    if name == "sendall":

        def sendall(self, data, flags=0):
            return original(self, data, flags)

        return sendall
    if name == "recv":

        def recv(self, bufsize, flags=0):
            return original(self, bufsize, flags)

        return recv
    if name == "_accept":

        def _accept(self):
            return original(self)

        return _accept
    if name == "bind":

        def bind(self, address):
            return original(self, address)

        return bind

    def listen(self, *backlog):
        return original(self, *backlog)

    return listen


def _green_listeners() -> tuple:
    """(class, probed methods) beyond socket.socket: gevent's servers listen on a plain subclass of
    _socket.socket (gevent._socket3._wrefsocket, not the patched socket.socket) and accept on it."""
    mod = sys.modules.get("gevent._socket3")
    cls = getattr(mod, "_wrefsocket", None)
    return ((cls, ("_accept",)),) if isinstance(cls, type) else ()


# What a frame's last instruction is when it returns a value or yields one.
_RETURN_OPS = frozenset(dis.opmap[n] for n in ("RETURN_VALUE", "RETURN_CONST") if n in dis.opmap)
_YIELD_OP = dis.opmap["YIELD_VALUE"]


def left_by_exception(code: CodeType, offset: int, raised_at: int | None, _cache: dict = {}) -> bool:  # noqa: B006 - a cache
    """Whether a frame of ``code`` whose return event came with None from ``offset`` was unwinding
    (Python 3.11; later ones say so through sys.monitoring).

    The C core is told (its return value is NULL); a trace function is not. Only
    an unwinding frame returns from another instruction than a return or a yield;
    at a yield, it unwinds when the exception came in there (thrown into the
    generator, say by close()). ``raised_at``: the offset of the frame's last
    exception event. Not told apart: a generator that catches what was thrown in
    at a yield and yields None from that same yield before it is resumed again.
    """
    raw = _cache.get(code)
    if raw is None:
        raw = _cache[code] = code.co_code
    if offset < 0:
        return True
    op = raw[offset]
    return op not in _RETURN_OPS and (op != _YIELD_OP or raised_at == offset)


class _Recorder:
    """What every core shares: the wanted-code decisions, socket probes, threads, pause and steps.

    ``want(code) -> bool`` decides, once per code object, whether its calls are
    recorded. A thread is traced when a traced thread started it, so a driver
    can keep its own client threads out of the trace by pausing itself. A core
    says how a thread is traced (``_trace_thread``, ``_untrace_thread``) and
    records the first call of a new thread (``_first_call``).
    """

    core = ""

    def __init__(self, want: Callable[[CodeType], bool]) -> None:
        self._want = want
        self._decisions = _Decisions(self._decide)
        self._raw = RawTrace(names=self._decisions, core=self.core)
        self._states: dict[int, Any] = {}  # thread ident -> its state, of the core's own kind
        self._pending_threads: dict[int, int] = {}  # id(Thread) -> row of its start()
        self._serials = 0
        self.probe_codes: dict[CodeType, str] = self._raw.probe_codes
        self._active = False
        self._saved_socket: dict[tuple[type, str], Callable | None] = {}
        self._thread_start_code = threading.Thread.start.__code__
        self._notify_code = threading.Condition.notify.__code__
        self._wait_code = threading.Condition.wait.__code__
        self._get_ident = original("_thread", "get_ident")
        self._turns = _WakeTurns()
        self._cut: RawTrace | None = None  # the rows as the recording ended (stop)
        self._every_state: list = []  # every thread's and greenlet's state, in the order made
        self._serials_of: dict[int, int] = {}  # id(state) -> its serial
        self._green: ModuleType | None = None  # the greenlet module, while switches are followed
        self._green_patched = False  # gevent patched threading: Threads are greenlets
        self._green_states: dict = {}  # greenlet -> its state (the greenlets are kept alive until the end)
        self._paused: set[int] = set()  # id() of the states of paused threads and greenlets
        self.fold_after = FOLD_AFTER  # record.fold: calls of one shape kept under one open call
        self._barrier = [0]  # record.fold: rows below it are named elsewhere, and never folded

    def _pin(self, rows: int) -> None:
        """Rows before ``rows`` are named outside the rows (a start, a step, a switch): never fold them."""
        self._barrier[0] = max(self._barrier[0], rows)

    def _open_states(self) -> list:
        """Every thread's and greenlet's state that may have calls open, each once."""
        return list({id(s): s for s in (*self._states.values(), *self._green_states.values())}.values())

    def _decide(self, code: CodeType) -> tuple[str, ...] | None:
        return _arg_names(code) if (code in self.probe_codes or self._want(code)) else None

    def _appenders(self) -> tuple:
        """What the hot path adds rows with: codes, and the appenders of codes, ints, values, rets, return values."""
        raw = self._raw
        return raw.codes, raw.codes.append, raw.ints.extend, raw.values.extend, raw.rets.extend, raw.ret_values.append

    # ------------------------------------------------------------ control

    def start(self) -> None:
        self._install_probes()
        self._active = True
        state = self._attach(self._get_ident(), -1, 0)
        if not self._follow_greenlets():
            threading.settrace(self._thread_hook)
        self._trace_thread(state)

    def stop(self) -> None:
        self._active = False
        self._unfollow_greenlets()
        self._untrace_thread()
        threading.settrace(None)
        self._remove_probes()
        self._end()

    def _end(self) -> None:
        """The end of the recording: threads still running (a background task that never
        ends) record nothing more, and rows() is what was complete now (RawTrace.cut)."""
        if self._cut is None:
            names = self._silence()
            self._cut = self._rows_now().cut(names)
            greenlet_starts(self._cut)
            self._green_states.clear()  # the greenlets were kept alive for greenlet_starts' identity test

    def _silence(self) -> dict:
        """Make the threads that are still traced record nothing more; the decisions made."""
        return self._decisions.refuse_all()

    def _rows_now(self) -> RawTrace:
        return self._raw

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def pause(self) -> _Paused:
        """A context in which the calling thread (and threads it starts) is not traced."""
        return _Paused(self)

    def rows(self) -> RawTrace:
        """Everything recorded: once stopped, what was complete when it stopped."""
        return self._cut if self._cut is not None else self._rows_now()

    def mark(self, step: str) -> _Step:
        """A context naming the rows recorded while a scenario step runs."""
        return _Step(self, step)

    @property
    def errors(self) -> list[str]:
        return self._raw.errors

    # ------------------------------------------------------------ probes

    def _install_probes(self) -> None:
        for cls, names in ((socket.socket, SOCKET_SINKS), *_green_listeners()):
            for name in names:
                original = getattr(cls, name)
                self._saved_socket[cls, name] = cls.__dict__.get(name)  # None: inherited from _socket
                probe = _make_probe(name, original)
                self.probe_codes[probe.__code__] = name
                setattr(cls, name, probe)
        self.probe_codes[_observed.__code__] = "observed"

    def _remove_probes(self) -> None:
        for (cls, name), saved in self._saved_socket.items():
            if saved is None:
                delattr(cls, name)
            else:
                setattr(cls, name, saved)
        self._saved_socket.clear()

    # ------------------------------------------------------------ threads

    def _attach(self, ident: int, start_row: int, thread_obj: int):
        self._serials += 1
        state = self._new_state(self._serials)
        self._states[ident] = state
        self._every_state.append(state)
        self._serials_of[id(state)] = self._serials
        self._raw.threads[self._serials] = (start_row, thread_obj)
        return state

    # ------------------------------------------------------------ greenlets

    def _follow_greenlets(self) -> bool:
        """Where greenlet is imported, each greenlet of a traced thread is traced like a thread,
        with its own state: greenlet.settrace reports every switch, and the thread's entry in
        the states dict (and its trace or profile function) becomes the state of the greenlet
        switched to. True when gevent has monkey-patched threading (its app was patched before
        it was imported, as a gunicorn gevent worker does): a Thread is then a greenlet too,
        and no thread hook is installed."""
        green = sys.modules.get("greenlet")
        if green is None or not hasattr(green, "settrace"):
            return False
        self._green = green
        self._green_states = {green.getcurrent(): self._states[self._get_ident()]}
        monkey = sys.modules.get("gevent.monkey")
        patched = monkey is not None and monkey.is_module_patched("threading")
        if patched:
            self._turns.MAX_WAIT = 0  # one OS thread: woken greenlets run in the order the hub switches to them
        green.settrace(self._switched)
        return patched

    def _unfollow_greenlets(self) -> None:
        if self._green is not None:
            self._green.settrace(None)
            self._green = None

    def _switched(self, event: str, args) -> None:
        """greenlet's trace callback, called in the greenlet switched to (tracing is off meanwhile)."""
        try:
            if event not in ("switch", "throw") or not self._active:
                return
            origin, target = args
            ident = self._get_ident()
            here = self._green_states.get(origin)
            if here is None:  # the first switch on a traced thread: its state is its greenlet's
                here = self._states.get(ident)
                if here is None:
                    return  # a thread that is not traced
                self._green_states[origin] = here
            elif self._states.get(ident) is not here:
                return
            state = self._green_states.get(target)
            if state is None:  # a new greenlet: a new serial, its start found after the run (greenlet_starts)
                state = self._green_states[target] = self._attach(ident, -1, id(target))
                self._raw.greenlets[self._serials_of[id(state)]] = "hub" if _is_hub(target) else "greenlet"
                # only a greenlet's first switch is kept (all greenlet_starts reads): a long run's
                # switches do not pile up, and only these pin the rows (record.fold)
                self._raw.switches.append((len(self._raw.codes), self._serials_of[id(here)], self._serials_of[id(state)]))
                self._pin(len(self._raw.codes))
            self._states[ident] = state
            if id(state) in self._paused:
                self._untrace_thread()
            else:
                self._trace_thread(state)
        except Exception as exc:  # noqa: BLE001 - never let the recorder break the program
            self._disable(exc)

    def _thread_hook(self, frame: FrameType, event: str, arg: object):
        # First event of a thread launched while threading.settrace was on:
        # frame is Thread.run (or an override). Trace it only if a traced thread
        # started it; idents are reused, so always start a fresh state.
        try:
            thread_obj = frame.f_locals.get("self")
            start_row = self._pending_threads.pop(id(thread_obj), None)
            if start_row is None or not self._active:
                sys.settrace(None)
                return None
            state = self._attach(self._get_ident(), start_row, id(thread_obj))
            return self._first_call(state, frame, event, arg)
        except Exception as exc:  # noqa: BLE001 - never let the recorder break the program
            self._disable(exc)
            return None

    def _started(self, thread_obj: threading.Thread, row: int) -> None:
        """Thread.start was called (row): its thread's first event joins it to that row."""
        self._pending_threads[id(thread_obj)] = row
        self._pin(row + 1)

    def _disable(self, exc: BaseException) -> None:
        self._active = False
        self._unfollow_greenlets()
        self._untrace_thread()
        threading.settrace(None)
        self._raw.errors.append(f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------ a core's part

    def _new_state(self, serial: int):
        raise NotImplementedError

    def _trace_thread(self, state) -> None:
        raise NotImplementedError

    def _untrace_thread(self) -> None:
        raise NotImplementedError

    def _first_call(self, state, frame: FrameType, event: str, arg: object):
        raise NotImplementedError


class SettraceRecorder(_Recorder):
    """The Python core: a sys.settrace function per thread (the reference the others are tested against)."""

    core = "py"

    def _new_state(self, serial: int) -> _ThreadState:
        state = _ThreadState(serial)
        state.trace = self._tracers(state)
        return state

    def _trace_thread(self, state: _ThreadState) -> None:
        sys.settrace(state.trace)

    def _untrace_thread(self) -> None:
        sys.settrace(None)

    def _first_call(self, state: _ThreadState, frame: FrameType, event: str, arg: object):
        trace = state.trace
        assert trace is not None  # set by _new_state
        sys.settrace(trace)
        return trace(frame, event, arg)

    def _silence(self) -> dict:
        # A thread still running keeps its trace function: it now wants no code, and the
        # calls it has open no longer report their return.
        made = self._decisions.refuse_all()
        for state in list(self._every_state):
            for e in list(state.stack):
                e[FRAME].f_trace = None
        return made

    # Python >= 3.12: a trace function's return event does not say whether the frame
    # unwinds; sys.monitoring's PY_UNWIND, which comes right after it for the same
    # frame (the settrace tool is called first), does: it turns that None into RAISED.
    UNWIND_TOOL = 4

    def start(self) -> None:
        super().start()
        if hasattr(sys, "monitoring"):
            mon = sys.monitoring
            mon.use_tool_id(self.UNWIND_TOOL, "dispel-unwind")
            mon.register_callback(self.UNWIND_TOOL, mon.events.PY_UNWIND, self._unwound)
            mon.set_events(self.UNWIND_TOOL, mon.events.PY_UNWIND)

    def stop(self) -> None:
        super().stop()
        if hasattr(sys, "monitoring") and sys.monitoring.get_tool(self.UNWIND_TOOL) == "dispel-unwind":
            sys.monitoring.set_events(self.UNWIND_TOOL, 0)
            sys.monitoring.register_callback(self.UNWIND_TOOL, sys.monitoring.events.PY_UNWIND, None)
            sys.monitoring.free_tool_id(self.UNWIND_TOOL)

    def _unwound(self, code: CodeType, offset: int, exc: BaseException) -> None:
        state = self._states.get(self._get_ident())
        if self._cut is None and state is not None and state.last_none is not None and state.last_none[0] is sys._getframe(1):
            self._raw.ret_values[state.last_none[1]] = RAISED
            state.last_none = None

    def _tracers(self, state: _ThreadState):
        """The trace functions of one thread: closures, so the hot path looks nothing up
        by thread id or attribute (coverage.py's CTracer does the same in C)."""
        codes, add_code, add_ints, add_values, add_ret, add_ret_value = self._appenders()
        raw = self._raw
        ints, values = raw.ints, raw.values
        decisions = self._decisions
        missing = itertools.repeat(MISSING)
        stack = state.stack
        push = stack.append
        pop = stack.pop
        serial = state.serial
        start_code, notify_code, wait_code = self._thread_start_code, self._notify_code, self._wait_code
        started = self._started
        turns = self._turns
        sized = SIZED
        disable = self._disable
        monitored = hasattr(sys, "monitoring")
        raw_values = raw.ret_values
        fold_after, barrier, open_states = self.fold_after, self._barrier, self._open_states

        def trace(frame, event, arg):
            try:
                code = frame.f_code
                names = decisions[code]
                if names is None:
                    return None
                frame.f_trace_lines = False
                row = len(codes)
                if stack:
                    parent = stack[-1]
                    parent_row, line = parent[ROW], parent[FRAME].f_lasti  # an offset; its line is looked up after the run
                else:
                    parent_row, line = -1, 0
                loc = frame.f_locals  # CPython has built this dict for the trace call anyway
                push(entry(row, frame, len(values), len(raw_values)))
                add_code(code)
                add_ints((serial, parent_row, line))
                add_values(map(loc.get, names, missing))
                if code is start_code:
                    started(loc["self"], row)
                elif code is notify_code:
                    turns.notified(loc["self"])
                return local
            except Exception as exc:  # noqa: BLE001 - never let the recorder break the program
                disable(exc)
                return None

        def local(frame, event, arg):
            try:
                if event == "exception":
                    # where the exception was raised in (or passed through) the frame
                    if stack and stack[-1][FRAME] is frame:
                        stack[-1][RAISED_AT] = frame.f_lasti
                    return local
                if event != "return":
                    return local
                left = 0  # calls above it that never returned
                while stack and stack[-1][FRAME] is not frame:
                    pop()
                    left += 1
                if not stack:
                    return local
                if frame.f_code is wait_code:
                    turns.woken(frame.f_locals.get("self"))  # may let other threads fold: rows are read after it
                e = pop()
                row = e[ROW]
                # len(codes) places the return in the global order of
                # calls: what wake-up edges are matched by.
                offset = frame.f_lasti
                if arg is None and not monitored and left_by_exception(frame.f_code, offset, e[RAISED_AT]):
                    value, size = RAISED, -1
                else:
                    # a container's size now is what the caller got (empty polls are idle)
                    value, size = arg, (len(arg) if type(arg) in sized else -1)
                if stack:  # record.fold: this call's shape, counted under its caller
                    shape = hash((id(frame.f_code), ints[3 * row + 2], offset, (size > 0) - (size < 0), e[ACC], left))
                    parent = stack[-1]
                    parent[ACC] = hash((parent[ACC], shape))
                    if counted(parent, shape) > fold_after and row >= barrier[0]:
                        fold(raw, decisions, e, serial, parent, open_states(), _stack_of)
                        return local
                if arg is None and monitored:
                    state.last_none = (frame, len(raw_values))  # RAISED if a PY_UNWIND follows
                add_ret((row, len(codes), offset, size))
                add_ret_value(value)
                return local
            except Exception as exc:  # noqa: BLE001 - never let the recorder break the program
                disable(exc)
                return None

        return trace


def _stack_of(state) -> list:
    return state.stack


class _WakeTurns:
    """Woken threads go on in the order they were notified.

    When one thread notifies two others (a broadcast wakes a writer per client),
    both are runnable and the OS picks who runs first: what each then sees (who
    encodes a shared packet, who finds it cached) would change run to run. A
    woken thread therefore waits, at the end of its Condition.wait, until every
    thread notified before it has got past its own wait. It only orders threads
    that could run in either order anyway, and never waits longer than MAX_WAIT.
    """

    MAX_WAIT = 0.2

    def __init__(self) -> None:
        self._lock = original("_thread", "allocate_lock")()
        self._sleep = original("time", "sleep")
        self._ticket = 0
        self._open: set[int] = set()  # tickets whose woken thread has not gone on yet
        self._by_condition: dict[int, list[int]] = {}

    def notified(self, condition) -> None:
        waiters = len(getattr(condition, "_waiters", ()))
        if not waiters:
            return  # a notify that wakes nobody hands nothing on
        with self._lock:
            self._ticket += 1
            self._open.add(self._ticket)
            self._by_condition.setdefault(id(condition), []).append(self._ticket)

    def woken(self, condition) -> None:
        with self._lock:
            tickets = self._by_condition.get(id(condition))
            if not tickets:
                return
            mine = tickets.pop(0)
        if min(self._open) < mine:  # mine is open: a thread notified earlier has not gone on
            end = time.monotonic() + self.MAX_WAIT
            while min(self._open) < mine and time.monotonic() < end:
                self._sleep(0.0005)
        with self._lock:
            self._open.discard(mine)


class NullRecorder:
    """The Tracer that traces nothing: the untraced side of `dispel bench`."""

    def __init__(self) -> None:
        self._raw = RawTrace()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def pause(self):
        return contextlib.nullcontext()

    def mark(self, step: str):
        return contextlib.nullcontext()

    def rows(self) -> RawTrace:
        return self._raw

    @property
    def errors(self) -> list[str]:
        return []


class _Paused:
    def __init__(self, recorder: _Recorder) -> None:
        self._recorder = recorder

    # threading.settrace is process-wide: it stays on, and the thread hook
    # leaves alone the threads that this (untraced) thread starts.
    def __enter__(self) -> None:
        recorder = self._recorder
        self._state = recorder._states.get(recorder._get_ident())
        recorder._paused.add(id(self._state))  # a greenlet switched back to stays untraced
        recorder._untrace_thread()

    def __exit__(self, *exc: object) -> None:
        recorder = self._recorder
        recorder._paused.discard(id(self._state))
        state = recorder._states.get(recorder._get_ident())
        if recorder._active and state is not None:
            recorder._trace_thread(state)


class _Step:
    def __init__(self, recorder: _Recorder, name: str) -> None:
        self._recorder = recorder
        self._name = name

    def __enter__(self) -> None:
        self._first = len(self._recorder._raw)
        self._recorder._pin(self._first)

    def __exit__(self, *exc: object) -> None:
        end = len(self._recorder._raw)
        self._recorder._pin(end)
        self._recorder._raw.steps.append((self._name, self._first, end))


def c_core(recorder: _Recorder):
    """The C core's shared state for ``recorder`` (filling its RawTrace), and its Thread type."""
    from . import _ctracer

    raw = recorder._raw
    turns = recorder._turns
    core = _ctracer.Core(
        raw.names, recorder._decisions.__missing__, raw.codes, raw.values, raw.ret_values, MISSING, RAISED,
        recorder._thread_start_code, recorder._notify_code, recorder._wait_code,
        recorder._started, turns.notified, turns.woken, recorder._disable,
    )
    return core, _ctracer.Thread


def c_rows(raw: RawTrace, core) -> RawTrace:
    """``raw`` with the ints the C core kept in its own buffers."""
    raw.ints = array("q", core.ints())
    raw.rets = array("q", core.rets())
    raw.folded = dict(core.folded)
    return raw


class CRecorder(_Recorder):
    """The C core (dispel.record._ctracer) for Python 3.11: the Python core's hot path as a profile function in C."""

    core = "c"

    def __init__(self, want: Callable[[CodeType], bool]) -> None:
        super().__init__(want)
        self._core, self._thread_type = c_core(self)

    def start(self) -> None:
        self._core.fold_after = self.fold_after
        super().start()

    def _pin(self, rows: int) -> None:
        self._core.barrier = max(self._core.barrier, rows)

    def _new_state(self, serial: int):
        return self._thread_type(self._core, serial)

    def _trace_thread(self, state) -> None:
        state.install()

    def _untrace_thread(self) -> None:
        sys.setprofile(None)

    def _first_call(self, state, frame: FrameType, event: str, arg: object):
        # Called as the new thread's trace function, for its first call: CPython
        # calls the profile function right after it for the same event
        # (trace_function_entry), so the C core records that call itself.
        sys.settrace(None)
        state.install()

    def _silence(self) -> dict:
        self._core.stop()  # its profile functions, still set on running threads, return at once
        return dict(self._decisions)

    def _rows_now(self) -> RawTrace:
        return c_rows(self._raw, self._core)
