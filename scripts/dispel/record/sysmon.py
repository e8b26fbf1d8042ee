"""The sys.monitoring core of the recorder (Python >= 3.12), like coverage.py's SysMonitor.

sys.monitoring calls back per code object and instruction, for every thread, and a
callback that returns DISABLE for code that is not wanted never hears of that code
again. It sees the events a trace function sees (PY_START, PY_RESUME and PY_THROW
are its "call"; PY_RETURN and PY_YIELD its "return"; PY_UNWIND a return by an
exception) and fills the same RawTrace, so it writes the same trace files as the
Python core on the same interpreter.

Threads: events come from every thread, so each looks up its own state (dropped
when Thread._bootstrap starts, as idents are reused). A thread is traced from
its run() on when a traced thread started it: its first wanted call made directly
by Thread._bootstrap_inner after the thread said it started. (A
thread whose run() is no wanted code is not traced by this core; the Python core
would record the wanted calls under it.)
"""
from __future__ import annotations

import itertools
import sys
import threading
from types import CodeType

from .fold import ACC, FRAME, ROW, counted, entry, fold
from .recorder import MISSING, RAISED, SIZED, _Recorder, _stack_of, c_core, c_rows

# Imported only where sys.monitoring exists (cores.py): a type checker set for 3.11 reads no further.
assert sys.version_info >= (3, 12)

TOOL = 2  # sys.monitoring.PROFILER_ID (coverage.py takes COVERAGE_ID, 1)


class _SysmonThread:
    __slots__ = ("on", "serial", "stack")

    def __init__(self, serial: int) -> None:
        self.serial = serial
        self.stack: list = []
        self.on = True


class SysmonRecorder(_Recorder):
    """The sys.monitoring core with its callbacks in Python (the fallback when dispel.record._ctracer is not built)."""

    core = "sysmon-py"

    def _new_state(self, serial: int) -> _SysmonThread:
        return _SysmonThread(serial)

    def _trace_thread(self, state: _SysmonThread) -> None:
        state.on = True

    def _untrace_thread(self) -> None:
        state = self._states.get(self._get_ident())
        if state is not None:
            state.on = False

    def _first_call(self, state, frame, event, arg):  # threads attach in the callbacks instead
        return None

    _bootstrap_codes = (
        threading.Thread._bootstrap_inner.__code__,  # type: ignore[attr-defined]  # private: where every thread starts
        threading.Thread._bootstrap.__code__,  # type: ignore[attr-defined]
    )

    def _joining(self, code: CodeType, frame):
        """The state of a thread that has none, from a call of wanted ``code`` in ``frame``:
        a new thread's from its run() on (its first call made directly by _bootstrap_inner
        once the thread has started), else None. When a thread starts, its ident may be a
        finished thread's: its state is dropped."""
        bootstrap, outer = self._bootstrap_codes
        if code is bootstrap or code is outer:
            if self._green_patched:  # a patched Thread is a greenlet: it keeps its switch's state
                return self._states.get(self._get_ident())
            self._states.pop(self._get_ident(), None)
            return None
        back = frame.f_back
        if back is None or back.f_code is not bootstrap:
            return None
        thread_obj = back.f_locals.get("self")
        if thread_obj is None or not thread_obj._started._flag or id(thread_obj) not in self._pending_threads:
            return None
        return self._attach(self._get_ident(), self._pending_threads.pop(id(thread_obj)), id(thread_obj))

    def start(self) -> None:
        mon = sys.monitoring
        self._install_probes()
        self._active = True
        self._attach(self._get_ident(), -1, 0)
        self._green_patched = self._follow_greenlets()
        mon.use_tool_id(TOOL, "dispel")
        events = mon.events
        call, ret, unwind, throw = self._callbacks()
        for event in (events.PY_START, events.PY_RESUME):
            mon.register_callback(TOOL, event, call)
        mon.register_callback(TOOL, events.PY_THROW, throw)
        for event in (events.PY_RETURN, events.PY_YIELD):
            mon.register_callback(TOOL, event, ret)
        mon.register_callback(TOOL, events.PY_UNWIND, unwind)
        mon.restart_events()  # what an earlier recording disabled is wanted again
        mon.set_events(TOOL, events.PY_START | events.PY_RESUME | events.PY_THROW | events.PY_RETURN | events.PY_YIELD | events.PY_UNWIND)

    def stop(self) -> None:
        self._active = False
        self._unfollow_greenlets()
        self._off()
        self._remove_probes()
        self._end()

    def _silence(self) -> dict:
        return dict(self._decisions)  # no events come any more (_off)

    def _off(self) -> None:
        mon = sys.monitoring
        if mon.get_tool(TOOL) == "dispel":
            mon.set_events(TOOL, 0)
            for event in (mon.events.PY_START, mon.events.PY_RESUME, mon.events.PY_THROW,
                          mon.events.PY_RETURN, mon.events.PY_YIELD, mon.events.PY_UNWIND):
                mon.register_callback(TOOL, event, None)
            mon.free_tool_id(TOOL)
            mon.restart_events()

    def _disable(self, exc: BaseException) -> None:
        self._active = False
        self._unfollow_greenlets()
        self._off()
        self._raw.errors.append(f"{type(exc).__name__}: {exc}")

    def _callbacks(self):
        """The callbacks (PY_START and PY_RESUME, PY_RETURN and PY_YIELD, PY_UNWIND, PY_THROW), as closures over what they use (the hot path looks nothing up by attribute)."""
        codes, add_code, add_ints, add_values, add_ret, add_ret_value = self._appenders()
        raw = self._raw
        ints, values, ret_values = raw.ints, raw.values, raw.ret_values
        fold_after, barrier, open_states = self.fold_after, self._barrier, self._open_states
        decisions = self._decisions
        missing = itertools.repeat(MISSING)
        states = self._states
        get_ident = self._get_ident
        getframe = sys._getframe
        start_code, notify_code, wait_code = self._thread_start_code, self._notify_code, self._wait_code
        bootstrap_code, outer_bootstrap_code = self._bootstrap_codes
        joining = self._joining
        started = self._started
        turns = self._turns
        sized = SIZED
        disable = self._disable
        DISABLE = sys.monitoring.DISABLE

        def enter(code: CodeType, names, frame) -> None:
            """A call of wanted code: the hot path, in one function that looks nothing up by attribute."""
            state = states.get(get_ident())
            if state is None or code is bootstrap_code or code is outer_bootstrap_code:
                state = joining(code, frame)
                if state is None:
                    return
            elif not state.on:
                return
            stack = state.stack
            row = len(codes)
            if stack:
                parent = stack[-1]
                parent_row, line = parent[ROW], parent[FRAME].f_lasti
            else:
                parent_row, line = -1, 0
            loc = frame.f_locals
            stack.append(entry(row, frame, len(values), len(ret_values)))
            add_code(code)
            add_ints((state.serial, parent_row, line))
            add_values(map(loc.get, names, missing))
            if code is start_code:
                started(loc["self"], row)
            elif code is notify_code:
                turns.notified(loc["self"])

        def leave(code: CodeType, value, frame) -> None:
            state = states.get(get_ident())
            if state is None or not state.on:
                return
            stack = state.stack
            left = 0  # calls above it that never returned
            while stack and stack[-1][FRAME] is not frame:
                stack.pop()
                left += 1
            if not stack:
                return
            if code is wait_code:
                turns.woken(frame.f_locals.get("self"))  # may let other threads fold: rows are read after it
            e = stack.pop()
            row = e[ROW]
            offset = frame.f_lasti
            size = -1 if value is RAISED or type(value) not in sized else len(value)
            if stack:  # record.fold: this call's shape, counted under its caller
                shape = hash((id(code), ints[3 * row + 2], offset, (size > 0) - (size < 0), e[ACC], left))
                parent = stack[-1]
                parent[ACC] = hash((parent[ACC], shape))
                if counted(parent, shape) > fold_after and row >= barrier[0]:
                    fold(raw, decisions, e, state.serial, parent, open_states(), _stack_of)
                    return
            add_ret((row, len(codes), offset, size))
            add_ret_value(value)

        def guarded(act, local: bool):
            """A callback: ``act(code, names, arg, frame)`` for wanted code, errors disable the
            recorder. Only a local event's callback may return DISABLE."""
            def callback(code: CodeType, offset: int, arg=None):
                try:
                    names = decisions[code]
                    if names is None:
                        return DISABLE if local else None
                    act(code, names, arg, getframe(1))
                except Exception as exc:  # noqa: BLE001 - never let the recorder break the program
                    disable(exc)
                return None

            return callback

        call = guarded(lambda code, names, arg, frame: enter(code, names, frame), True)
        throw = guarded(lambda code, names, exc, frame: enter(code, names, frame), False)
        ret = guarded(lambda code, names, value, frame: leave(code, value, frame), True)
        unwind = guarded(lambda code, names, exc, frame: leave(code, RAISED, frame), False)
        return call, ret, unwind, throw


class CSysmonRecorder(SysmonRecorder):
    """The sys.monitoring core with its callbacks in C (dispel.record._ctracer), when that is built."""

    core = "sysmon"

    def __init__(self, want) -> None:
        super().__init__(want)
        self._core, self._thread_type = c_core(self)
        self._core.monitor(self._states, self._joining, sys.monitoring.DISABLE, *self._bootstrap_codes)

    def start(self) -> None:
        self._core.fold_after = self.fold_after
        super().start()

    def _pin(self, rows: int) -> None:
        self._core.barrier = max(self._core.barrier, rows)

    def _new_state(self, serial: int):
        return self._thread_type(self._core, serial)

    def _callbacks(self):
        core = self._core
        return core.py_start, core.py_return, core.py_unwind, core.py_throw

    def _silence(self) -> dict:
        self._core.stop()
        return dict(self._decisions)

    def _rows_now(self):
        return c_rows(self._raw, self._core)
