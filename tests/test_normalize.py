"""The steps of normalization, each on a handful of hand-made raw calls (no recording)."""
from __future__ import annotations

from pathlib import Path

import pytest
from dispel.tracefiles.normalize import (
    Arg,
    CallTree,
    IdentityTokens,
    RawCall,
    Returned,
    ThreadOrder,
    raw_calls,
    thread_role,
    wakeups,
)
from dispel.tracefiles.values import Normalizer


def call(row, func, parent=-1, serial=0, line=1, args=(), ret=None):
    return RawCall(row, func, serial, parent, line, tuple(args), ret)


def tree(calls):
    return CallTree(calls, Normalizer(0, {}))


def test_a_repeated_block_of_siblings_is_kept_once_and_aliased():
    # main -> a, b, a, b, c: the second (a, b) repeats the first and folds into it
    calls = [call(0, "m:main")] + [call(i, f"m:{f}", parent=0) for i, f in enumerate("abab", 1)] + [call(5, "m:c", parent=0)]
    t = tree(calls)
    assert t.folded([1, 2, 3, 4, 5]) == [1, 2, 5]
    assert t.alias == {3: 1, 4: 2}


def test_calls_that_differ_in_a_value_are_not_folded():
    calls = [call(0, "m:main"), call(1, "m:send", 0, args=[Arg("data", 7, b"one")]), call(2, "m:send", 0, args=[Arg("data", 8, b"two")])]
    assert tree(calls).folded([1, 2]) == [1, 2]


def test_an_idle_poll_iteration_is_dropped_with_what_follows_it():
    # poll() returned nothing, select(), then poll() again returned one item: the idle round goes
    calls = [
        call(0, "m:loop"),
        call(1, "m:poll", 0, line=3, ret=Returned(2, 11, [], 3, size=0)),
        call(2, "m:select", 0, line=4),
        call(3, "m:poll", 0, line=3, ret=Returned(4, 12, ["x"], 3, size=1)),
    ]
    t = tree(calls)
    assert t.busy([1, 2, 3]) == [3] and t.idle == {1, 2}


@pytest.mark.parametrize(
    ("first_calls", "role"),
    [
        (["socketserver:ThreadingMixIn.process_request_thread"], "request"),
        (["simple_websocket.ws:Base._thread"], "ws-reader"),
        (["engineio.socket:Socket._websocket_handler.<locals>.writer"], "eio-writer"),
        (["socketio.base_server:BaseServer._handle_event_internal"], "handler"),
        (["something:else"], "thread"),
        ([], "thread"),
    ],
)
def test_thread_roles_from_what_a_thread_ran_first(first_calls, role):
    assert thread_role(first_calls) == role


def test_threads_are_placed_after_their_starter_and_named_by_role():
    calls = [
        call(0, "m:main", serial=1),
        call(1, "threading:Thread.start", 0, serial=1, line=2),
        call(2, "threading:Thread.start", 0, serial=1, line=3),
        call(3, "threading:Thread.run", serial=9),  # started second, though its serial sorts last
        call(4, "socketserver:ThreadingMixIn.process_request_thread", 3, serial=9),
        call(5, "threading:Thread.run", serial=5),
        call(6, "simple_websocket.ws:Base._thread", 5, serial=5),
        call(7, "threading:Thread.run", serial=7),  # did what thread 9 did: kept once
        call(8, "socketserver:ThreadingMixIn.process_request_thread", 7, serial=7),
    ]
    order = ThreadOrder(tree(calls), {9: 1, 5: 2, 7: 2})
    assert order.order == [1, 9, 5]
    assert [order.name[s] for s in order.order] == ["main", "request-1", "ws-reader-1"]
    assert order.kept_rows() == [0, 1, 2, 3, 4, 5, 6]
    assert order.canon(7) == order.canon(3)


def test_only_objects_seen_twice_get_tokens_numbered_by_first_use():
    shared, alone = object(), object()
    calls = [
        call(0, "m:put", args=[Arg("item", id(shared), shared)]),
        call(1, "m:other", args=[Arg("x", id(alone), alone)]),
        call(2, "m:get", ret=Returned(3, id(shared), shared, 1)),
        call(3, "m:name", args=[Arg("s", 99, "short")]),
    ]
    tokens = IdentityTokens(calls)
    assert tokens(id(alone), alone) == 0
    assert tokens(id(shared), shared) == 1
    assert tokens(99, "short") == 0  # small strings are shared by the interpreter: no token


def test_a_wait_is_paired_with_the_first_notify_from_another_thread_while_it_waited():
    cond = 42
    calls = [
        call(0, "threading:Condition.wait", serial=1, args=[Arg("self", cond, None)], ret=Returned(4, 0, True, 1)),
        call(1, "threading:Condition.notify", serial=1, args=[Arg("self", cond, None)]),  # its own thread
        call(2, "threading:Condition.notify", serial=2, args=[Arg("self", cond, None)]),  # the one
        call(3, "threading:Condition.notify", serial=2, args=[Arg("self", cond, None)]),  # too late to count
        call(5, "threading:Condition.notify", serial=2, args=[Arg("self", cond, None)]),  # after it returned
    ]
    assert [(w.notify, w.wait) for w in wakeups(calls, lambda row: row)] == [(2, 0)]


def test_raw_rows_become_calls_with_a_raised_flag_and_observed_bytes():
    class Func:
        def __init__(self, key):
            self.key = key

    funcs = {"f": Func("m:f"), "g": Func("m:g"), "recv_into": Func("_socket:socket.recv_into"), "obs": Func("_socket:socket.observed")}
    buffer = b"hello bytes"
    rows = [
        ("f", 0, -1, 0, ()),
        ("g", 0, 0, 6, (("x", 5),)),
        ("recv_into", 0, 0, 8, ()),
        ("obs", 0, 2, 0, (("data", buffer),)),
    ]
    raised = object()
    returns = {1: (2, raised, 10, -1), 2: (4, 11, 12, -1)}
    calls = raw_calls(rows, [r[0] for r in rows], returns, funcs.__getitem__, lambda code, offset: offset // 2, raised)
    assert [c.func for c in calls] == ["m:f", "m:g", "_socket:socket.recv_into"]
    assert calls[1].ret.raised and calls[1].ret.value is None and calls[1].line == 3
    assert calls[2].ret.value == buffer and not calls[2].ret.raised


def test_qualname_counts_read_the_current_source_whether_or_not_its_bytecode_is_cached(tmp_path):
    import os
    import py_compile
    import time

    from dispel.pins.installed import qualname_counts

    path = tmp_path / "mod.py"
    one = "def f():\n    pass\n\nclass C:\n    def m(self):\n        pass\n"
    two = one + "\nif True:\n    def f():\n        return 1\n"
    path.write_text(one)
    assert qualname_counts(one, str(path)) == {"<module>": 1, "f": 1, "C": 1, "C.m": 1}
    py_compile.compile(str(path))  # a current cached bytecode is read instead of compiling
    assert qualname_counts(one, str(path)) == {"<module>": 1, "f": 1, "C": 1, "C.m": 1}
    path.write_text(two)  # the cache is now stale: the source counts
    later = time.time() + 5
    os.utime(path, (later, later))
    assert qualname_counts(two, str(path))["f"] == 2


def test_line_at_finds_the_line_of_every_instruction_offset():
    import json.decoder
    import types

    from dispel.record.recorder import line_at

    def by_scan(code, offset):
        return next((ln for start, end, ln in code.co_lines() if ln is not None and start <= offset < end), 0)

    stack = [compile(Path(json.decoder.__file__).read_text(encoding="utf-8"), json.decoder.__file__, "exec")]
    checked = 0
    while stack:
        code = stack.pop()
        stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
        for offset in range(0, len(code.co_code) + 4, 2):  # and past the end: 0
            assert line_at(code, offset) == by_scan(code, offset), (code.co_qualname, offset)
            checked += 1
    assert checked > 500
