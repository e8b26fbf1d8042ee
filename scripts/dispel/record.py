"""The recorder: the only user of sys.settrace; it keeps primitive rows and resolves nothing while the program runs."""
from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Callable, Protocol

SIZED = frozenset({list, tuple, dict, set})
RAISED = object()  # the "value" of a call left by an exception

# Socket methods implemented in C: invisible to settrace, so they are wrapped in
# tiny Python functions (probes) while recording. They end most chains.
SOCKET_SINKS = ("bind", "listen", "_accept", "recv", "recv_into", "send", "sendall")


def line_at(code: CodeType, offset: int, _cache: dict = {}) -> int:  # noqa: B006 - a deliberate cache
    """The source line of the instruction at byte ``offset`` of ``code``.

    The recorder keeps instruction offsets (``f_lasti``, free to read) and turns them
    into lines after the run (``f_lineno`` searches the line table on every read).
    """
    table = _cache.get(code)
    if table is None:
        table = _cache[code] = [(start, end, line) for start, end, line in code.co_lines() if line is not None]
    for start, end, line in table:
        if start <= offset < end:
            return line
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

    def rows(self) -> "RawTrace": ...


@dataclass
class RawTrace:
    """Everything a run left behind, still holding code objects and values."""

    # (code, thread serial, parent row, instruction offset in parent, args) per call;
    # args is a tuple of (name, value) pairs. The values themselves are kept until the
    # trace is normalized: a live object's id() is never reused by another, so it can
    # be read then, off the hot path, and identity joins stay exact.
    calls: list = field(default_factory=list)
    # row -> (calls recorded so far, value, offset it returned from, size or -1);
    # value RAISED when the frame was left by an exception
    returns: dict = field(default_factory=dict)
    # thread serial -> (row of the Thread.start that launched it or -1, id of the Thread object)
    threads: dict = field(default_factory=dict)
    # (step name, first row, end row)
    steps: list = field(default_factory=list)
    errors: list = field(default_factory=list)  # why the recorder disabled itself
    # the probes' code objects -> the C socket method each stands for
    probe_codes: dict = field(default_factory=dict)


class _ThreadState:
    __slots__ = ("serial", "stack", "trace")

    def __init__(self, serial: int) -> None:
        self.serial = serial
        self.stack: list[tuple[int, FrameType]] = []
        self.trace: Callable | None = None


def _arg_names(code: CodeType) -> tuple[str, ...]:
    n = code.co_argcount + code.co_kwonlyargcount
    n += bool(code.co_flags & 0x04) + bool(code.co_flags & 0x08)  # *args, **kwargs
    return code.co_varnames[:n]


# ---------------------------------------------------------------- socket probes
# Each probe calls the C method it replaces; the recorder sees the probe's call
# and return like any Python function. Each is written out with the C method's own
# argument names, so that the bytes passed and returned are recorded by name.
# ``_observed`` reports the bytes that recv_into wrote into a caller's buffer,
# which its return value (a count) hides.


def _observed(data):  # noqa: ARG001 - the argument is what gets recorded
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


class SettraceRecorder:
    """Records calls and returns of wanted code on this thread and the threads it starts.

    ``want(code) -> bool`` decides, once per code object, whether its calls are
    recorded. A thread is traced when a traced thread started it, so a driver
    can keep its own client threads out of the trace by pausing itself.
    """

    def __init__(self, want: Callable[[CodeType], bool]) -> None:
        self._want = want
        self._decisions: dict[CodeType, tuple[str, ...] | None] = {}
        self._states: dict[int, _ThreadState] = {}
        self._pending_threads: dict[int, int] = {}  # id(Thread) -> row of its start()
        self._serials = 0
        self._raw = RawTrace()
        self.probe_codes: dict[CodeType, str] = self._raw.probe_codes
        self._raised: set[int] = set()
        self._active = False
        self._saved_socket: dict[str, Callable] = {}
        self._thread_start_code = threading.Thread.start.__code__
        self._notify_code = threading.Condition.notify.__code__
        self._wait_code = threading.Condition.wait.__code__
        self._turns = _WakeTurns()

    # ------------------------------------------------------------ control

    def start(self) -> None:
        self._install_probes()
        self._active = True
        state = self._attach(threading.get_ident(), -1, 0)
        threading.settrace(self._thread_hook)
        sys.settrace(state.trace)

    def stop(self) -> None:
        self._active = False
        sys.settrace(None)
        threading.settrace(None)  # type: ignore[arg-type]
        self._remove_probes()

    def __enter__(self) -> "SettraceRecorder":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def pause(self) -> "_Paused":
        """A context in which the calling thread (and threads it starts) is not traced."""
        return _Paused(self)

    def rows(self) -> RawTrace:
        return self._raw

    def mark(self, step: str) -> "_Step":
        """A context naming the rows recorded while a scenario step runs."""
        return _Step(self, step)

    @property
    def errors(self) -> list[str]:
        return self._raw.errors

    # ------------------------------------------------------------ probes

    def _install_probes(self) -> None:
        cls = socket.socket
        for name in SOCKET_SINKS:
            original = getattr(cls, name)
            self._saved_socket[name] = cls.__dict__.get(name)  # None: inherited from _socket
            probe = _make_probe(name, original)
            self.probe_codes[probe.__code__] = name
            setattr(cls, name, probe)
        self.probe_codes[_observed.__code__] = "observed"

    def _remove_probes(self) -> None:
        cls = socket.socket
        for name, saved in self._saved_socket.items():
            if saved is None:
                delattr(cls, name)
            else:
                setattr(cls, name, saved)
        self._saved_socket.clear()

    # ------------------------------------------------------------ hot path

    def _attach(self, ident: int, start_row: int, thread_obj: int) -> _ThreadState:
        self._serials += 1
        state = _ThreadState(self._serials)
        state.trace = self._tracers(state)
        self._states[ident] = state
        self._raw.threads[state.serial] = (start_row, thread_obj)
        return state

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
            state = self._attach(threading.get_ident(), start_row, id(thread_obj))
            sys.settrace(state.trace)
            return state.trace(frame, event, arg)
        except Exception as exc:  # never let the recorder break the program
            self._disable(exc)
            return None

    def _tracers(self, state: _ThreadState):
        """The trace functions of one thread: closures, so the hot path looks nothing up
        by thread id or attribute (coverage.py's CTracer does the same in C)."""
        raw = self._raw
        calls = raw.calls
        append = calls.append
        returns = raw.returns
        raised = self._raised
        decisions = self._decisions
        want = self._want
        probes = self.probe_codes
        stack = state.stack
        push = stack.append
        pop = stack.pop
        serial = state.serial
        start_code, notify_code, wait_code = self._thread_start_code, self._notify_code, self._wait_code
        pending = self._pending_threads
        turns = self._turns
        sized = SIZED
        disable = self._disable

        def trace(frame, event, arg):
            try:
                code = frame.f_code
                names = decisions.get(code, False)
                if names is False:
                    names = decisions[code] = _arg_names(code) if (code in probes or want(code)) else None
                if names is None:
                    return None
                frame.f_trace_lines = False
                row = len(calls)
                if stack:
                    parent, parent_frame = stack[-1]
                    line = parent_frame.f_lasti  # an offset; its line is looked up after the run
                else:
                    parent, line = -1, 0
                loc = frame.f_locals  # CPython has built this dict for the trace call anyway
                args = tuple([(n, loc[n]) for n in names if n in loc])
                append((code, serial, parent, line, args))
                if code is start_code:
                    pending[id(loc["self"])] = row
                elif code is notify_code:
                    turns.notified(loc["self"])
                push((row, frame))
                return local
            except Exception as exc:
                disable(exc)
                return None

        def local(frame, event, arg):
            try:
                if event == "return":
                    while stack:
                        row, f = pop()
                        if f is frame:
                            if frame.f_code is wait_code:
                                turns.woken(frame.f_locals.get("self"))
                            # len(calls) places the return in the global order of
                            # calls: what wake-up edges are matched by.
                            if arg is None and row in raised:
                                returns[row] = (len(calls), RAISED, frame.f_lasti, -1)
                            else:
                                # a container's size now is what the caller got (empty polls are idle)
                                returns[row] = (
                                    len(calls), arg, frame.f_lasti, len(arg) if type(arg) in sized else -1
                                )
                            break
                elif event == "exception":
                    if stack and stack[-1][1] is frame:
                        raised.add(stack[-1][0])
                return local
            except Exception as exc:
                disable(exc)
                return None

        return trace

    def _disable(self, exc: BaseException) -> None:
        self._active = False
        sys.settrace(None)
        threading.settrace(None)  # type: ignore[arg-type]
        self._raw.errors.append(f"{type(exc).__name__}: {exc}")


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
        self._lock = threading.Lock()
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
        end = time.monotonic() + self.MAX_WAIT
        while any(t < mine for t in self._open) and time.monotonic() < end:
            time.sleep(0.0005)
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
    def __init__(self, recorder: SettraceRecorder) -> None:
        self._recorder = recorder

    # threading.settrace is process-wide: it stays on, and the thread hook
    # leaves alone the threads that this (untraced) thread starts.
    def __enter__(self) -> None:
        sys.settrace(None)

    def __exit__(self, *exc: object) -> None:
        state = self._recorder._states.get(threading.get_ident())
        if self._recorder._active and state is not None:
            sys.settrace(state.trace)


class _Step:
    def __init__(self, recorder: SettraceRecorder, name: str) -> None:
        self._recorder = recorder
        self._name = name

    def __enter__(self) -> None:
        self._first = len(self._recorder._raw.calls)

    def __exit__(self, *exc: object) -> None:
        self._recorder._raw.steps.append((self._name, self._first, len(self._recorder._raw.calls)))
