"""The recorder on tiny programs, with each core this interpreter has: threads, queues, exceptions in traced code and in the recorder itself."""
from __future__ import annotations

import dataclasses
import sys
import threading

import pytest
from conftest import ROOTS, record, trace_of, want
from dispel.model import DispelError
from dispel.record.cores import available_cores, recorder_for
from dispel.tracefiles import recording as tracefiles_recording
from programs import threads as prog


@pytest.fixture(autouse=True, params=available_cores())
def core(request, monkeypatch):
    monkeypatch.setenv("DISPEL_CORE", request.param)
    return request.param


def funcs_on(trace, thread):
    return [e.func for e in trace.events if e.thread == thread]


def test_records_calls_with_parent_and_call_line():
    trace = trace_of(prog.catches)
    by_func = {e.func: e for e in trace.events}
    outer, inner = by_func["programs.threads:catches"], by_func["programs.threads:fails"]
    assert inner.parent == outer.index
    assert inner.call_line == prog.catches.__code__.co_firstlineno + 2  # the `fails()` line
    assert inner.raised and not outer.raised
    assert outer.ret.text == "'caught'"


def test_two_threads_named_and_joined_by_thread_start():
    trace = trace_of(prog.launch)
    names = [t.name for t in trace.threads]
    assert names[0] == "main" and len(names) == 2
    worker = trace.threads[1]
    start = trace.events[worker.started_by]
    assert start.func == "threading:Thread.start" and start.thread == "main"
    assert "programs.threads:work" in funcs_on(trace, worker.name)


def test_queue_hand_off_is_a_wake_up_and_keeps_identity():
    trace = trace_of(prog.producer_consumer)
    put = next(e for e in trace.events if e.func == "queue:Queue.put")
    get = next(e for e in trace.events if e.func == "queue:Queue.get")
    item = next(a for a in put.args if a.name == "item")
    assert item.token and get.ret.token == item.token, "the object put is the object got"
    wakes = [(trace.events[w.notify], trace.events[w.wait]) for w in trace.wakeups]
    assert any(n.thread != w.thread and w.func == "threading:Condition.wait" for n, w in wakes)


def test_threads_in_turn_are_each_their_own_and_a_second_recording_starts_afresh():
    # A reused thread ident must not find the finished thread's state, nor a recording
    # the threads of the recording before it in this process (the C cores cache both).
    for _ in range(2):
        _, rec = record(prog.launch_in_turn)
        raw = rec.rows()
        calls = list(raw.call_rows())
        starts = [row for row, c in enumerate(calls) if c[0] is threading.Thread.start.__code__]
        assert len(starts) == 3 and all(calls[row][1] == 1 for row in starts)  # by the main thread, serial 1
        assert sorted(start for serial, (start, _) in raw.threads.items() if serial != 1) == starts
        workers = [c[1] for c in calls if c[0] is prog.work.__code__]
        assert len(workers) == 3 and len(set(workers)) == 3 and 1 not in workers


def test_untraced_threads_stay_untraced():
    recorder = recorder_for(want)
    with recorder:
        with recorder.pause():
            prog.launch()  # started by a paused thread: not traced
        prog.work(1)
    trace = tracefiles_recording.trace_from_recording(recorder, "pause", 0, ROOTS, {})
    assert [t.name for t in trace.threads] == ["main"]
    assert "programs.threads:launch" not in funcs_on(trace, "main")


def test_exception_in_the_recorder_disables_it_and_spares_the_program():
    calls = []

    def exploding(code):
        calls.append(code)
        if code.co_name == "work":
            raise RuntimeError("recorder bug")
        return want(code)

    recorder = recorder_for(exploding)
    result, _ = record(lambda: prog.work(2) + prog.work(3), recorder)
    assert result == 10
    assert recorder.errors and "recorder bug" in recorder.errors[0]
    assert sys.gettrace() is None and threading.gettrace() is None and sys.getprofile() is None
    with pytest.raises(DispelError, match="recorder disabled itself"):
        tracefiles_recording.trace_from_recording(recorder, "broken", 0, ROOTS, {})


def test_socket_methods_restored_after_recording():
    import socket

    before = {n: socket.socket.__dict__.get(n) for n in ("send", "recv", "bind")}
    record(prog.launch)
    assert {n: socket.socket.__dict__.get(n) for n in before} == before


def test_folding_keeps_one_of_repeated_idle_iterations():
    def idle_loop():
        for _ in range(50):
            prog.work(1)
        return prog.consume(prog.Payload("x"))

    trace = trace_of(idle_loop)
    assert funcs_on(trace, "main").count("programs.threads:work") == 1


def test_rows_say_which_core_recorded_them(core):
    _, rec = record(prog.launch)
    assert rec.rows().core == core


def test_a_generator_closed_while_suspended_unwinds_and_one_that_caught_returns_none():
    def closes():
        gen = prog.counts(3)
        next(gen)
        gen.close()  # GeneratorExit at the yield: the resumed frame is left by an exception
        return prog.swallows()

    trace = trace_of(closes)
    counts = [e for e in trace.events if e.func == "programs.threads:counts"]
    assert [e.raised for e in counts] == [False, True]
    swallows = next(e for e in trace.events if e.func == "programs.threads:swallows")
    assert not swallows.raised and swallows.ret.text == "None"


def test_a_thread_still_running_at_the_end_is_cut_where_it_is():
    # A `while True` task still turning when the recorder stops: what it does afterwards is
    # not recorded, the rows stay whole (each call's ints and values, each return's value),
    # and the thread is named as still running, with the turns its loop made.
    state = {"turns": 0, "quit": False}
    try:
        thread, rec = record(lambda: prog.leaves_a_loop_running(state))
        raw = rec.rows()
        rows = len(raw.codes)
        turns = state["turns"]
        while state["turns"] < turns + 20:  # it goes on turning after the end
            threading.Event().wait(0.001)
        again = rec.rows()
        assert again is raw and len(again.codes) == rows, "nothing is recorded after the end"
        assert len(raw.ints) == 3 * rows and len(raw.rets) == 4 * len(raw.ret_values)
        assert all(r < rows for r in raw.return_map())
        running: list = []
        trace = tracefiles_recording.trace_from_recording(rec, "loop", 0, ROOTS, {}, running=running)
    finally:
        state["quit"] = True
    (cut,) = running
    assert cut.task == "programs.threads:forever" and cut.iterations >= 20
    assert cut.thread in [t.name for t in trace.threads]
    root = trace.events[next(t.root for t in trace.threads if t.name == cut.thread)]
    assert root.ret is None and not root.raised, "its first call never returned"
    thread.join(5)


# ---------------------------------------------------------------- bounded memory (record.fold)

K = 3  # a small FOLD_AFTER, so that tiny programs reach it


def folding_record(fn, fold_after=K):
    recorder = recorder_for(want)
    recorder.fold_after = fold_after
    return record(fn, recorder)


def test_a_loop_of_10000_identical_iterations_keeps_k_of_them_and_a_count():
    _, rec = folding_record(lambda: prog.loop(10_000))
    raw = rec.rows()
    # the loop's row, then K iterations of its body: work(i), turn(i) -> Payload(...), consume(...)
    assert len(raw.codes) <= 1 + 4 * K + 2, len(raw.codes)
    assert len(raw.ret_values) == len(raw.codes) and len(raw.rets) == 4 * len(raw.ret_values)
    assert sorted(raw.folded.values()) == [10_000 - K, 10_000 - K]  # work's line and turn's line, under loop
    trace = tracefiles_recording.trace_from_recording(rec, "loop", 0, ROOTS, {})
    assert trace.folded == (("main", 10_000 - K),)
    work = [e for e in trace.events if e.func == "programs.threads:work"]
    assert len(work) == K and [e.args[0].text for e in work][1:] == ["1", "2"], "the first K are kept"  # (0 reads as the port 0)


def test_the_kept_iterations_are_the_trace_of_a_loop_that_made_k():
    # Folding takes rows out whole: what stays is what a loop of K turns records, but for the
    # loop's own argument and return (its n and total) and the header's count.
    many = tracefiles_recording.trace_from_recording(folding_record(lambda: prog.loop(500))[1], "loop", 0, ROOTS, {})
    few = tracefiles_recording.trace_from_recording(folding_record(lambda: prog.loop(K), fold_after=10**9)[1], "loop", 0, ROOTS, {})
    assert few.folded == () and many.folded == (("main", 500 - K),)
    strip = lambda t: [dataclasses.replace(e, args=(), ret=None) if e.func == "programs.threads:loop" else e for e in t.events]
    assert strip(many) == strip(few)


def test_two_threads_in_step_fold_on_both_sides_and_keep_exact_wake_ups():
    _, rec = folding_record(lambda: prog.relay(300))
    raw = rec.rows()
    assert len(raw.codes) < 400, len(raw.codes)  # unfolded: over 300 iterations of a dozen calls each
    trace = tracefiles_recording.trace_from_recording(rec, "relay", 0, ROOTS, {})
    folded = dict(trace.folded)
    assert folded.get("main", 0) > 250 and sum(folded.values()) > 500, trace.folded
    # every wake-up left joins a kept put's notify to a kept wait of the other thread, in order
    events = trace.events
    for w in trace.wakeups:
        notify, wait = events[w.notify], events[w.wait]
        assert notify.func == "threading:Condition.notify" and wait.func == "threading:Condition.wait"
        assert notify.thread == "main" and wait.thread != "main"
    assert trace.wakeups, "the kept iterations keep their wake-ups"


def test_calls_that_started_a_thread_are_never_folded():
    # A Thread.start is named by its thread: the rows before it are pinned.
    _, rec = folding_record(lambda: [prog.launch() for _ in range(10)])
    raw = rec.rows()
    starts = [row for row, c in enumerate(raw.codes) if c is threading.Thread.start.__code__]
    assert len(starts) == 10
    assert sorted(start for serial, (start, _) in raw.threads.items() if serial != 1) == starts
