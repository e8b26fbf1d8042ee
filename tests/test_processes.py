"""Scenarios of several processes joined by Redis: the join across processes is found by data,
the RESP bytes decode, and the runner fails clearly (Redis absent, Redis killed, a server that
cannot start) leaving no trace and no process behind."""
from __future__ import annotations

import dataclasses
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from dispel import catalog, wire
from dispel.chains import across as joins
from dispel.chains import finders
from dispel.check import drift
from dispel.model import EDGE_QUEUE, DispelError
from dispel.render import pages as render
from dispel.run import multiprocess as processes
from dispel.tracefiles.codec import trace_from_json

ROOT = Path(__file__).resolve().parents[1]
SC = catalog.process_scenario("queue")


def committed() -> dict:
    return {n: trace_from_json((ROOT / "traces" / f"{n}.json").read_text(), n) for n in SC.trace_names()}


# ------------------------------------------------------------------ RESP (pure)

PUBLISH = b'*3\r\n$7\r\nPUBLISH\r\n$14\r\nflask-socketio\r\n$8\r\n{"a": 1}\r\n'
PUSHES = b'>3\r\n$9\r\nsubscribe\r\n$14\r\nflask-socketio\r\n:1\r\n>3\r\n$7\r\nmessage\r\n$14\r\nflask-socketio\r\n$8\r\n{"a": 1}\r\n'


def test_resp_publish_and_message_push_decode():
    assert wire.published(PUBLISH) == (b"flask-socketio", b'{"a": 1}')
    assert wire.published(b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n") is None
    # two pushes in one read: the subscribe confirmation is no message
    assert wire.delivered(PUSHES) == [(b"flask-socketio", b'{"a": 1}')]
    layers = wire.decode_publish(PUBLISH)
    assert [layer.layer for layer in layers] == ["Redis command (RESP)", "JSON message (python-socketio's PubSubManager)"]
    assert wire.decode_delivery(PUSHES, b'{"a": 1}')[0].fields[1].value == "message"


def test_a_placeholder_that_changed_a_bulk_string_length_still_parses():
    # the trace wrote <host-id@emitter> where 32 hex digits were: the length no longer fits
    data = b'*3\r\n$7\r\nPUBLISH\r\n$14\r\nflask-socketio\r\n$40\r\n{"host_id": "<host-id@emitter>"}\r\n'
    assert wire.published(data) == (b"flask-socketio", b'{"host_id": "<host-id@emitter>"}')


class _Named:  # a class a pickle names: the reader must refuse it, never import or call it
    def __reduce__(self):
        return (os.getcwd, ())


# python-socketio 5.8's RedisManager publishes pickle.dumps(dict); from 5.9 on, JSON
MESSAGES = [
    ("JSON", b'{"event": "news", "room": null}', {"event": "news", "room": None}),
    ("pickle of plain values", pickle.dumps({"event": "news", "data": {"n": [1, (2, b"x")]}, "room": None}),
     {"event": "news", "data": {"n": [1, (2, b"x")]}, "room": None}),
    ("pickle, protocol 2 (no frame)", pickle.dumps({"event": "news"}, protocol=2), {"event": "news"}),
    ("pickle that names a class", pickle.dumps({"event": _Named()}), None),
    ("pickle of a set (a class by name)", pickle.dumps({"event": {1, 2}}, protocol=2), None),
    ("pickle of a list", pickle.dumps(["news"]), None),
    ("truncated pickle", pickle.dumps({"event": "news"})[:-3], None),
    ("neither", b"\x80\x04garbage", None),
]


@pytest.mark.parametrize("data, expected", [m[1:] for m in MESSAGES], ids=[m[0] for m in MESSAGES])
def test_a_published_message_is_read_as_json_or_as_a_pickle_of_plain_values(data, expected):
    assert wire.queue_message(data) == expected


def test_a_placeholder_in_a_pickled_string_is_read_as_itself():
    # the trace wrote <host-id@emitter> where 32 hex digits were: the string's length byte and the
    # FRAME's size no longer fit
    real = pickle.dumps({"event": "news", "host_id": "0123456789abcdef0123456789abcdef"})
    traced = real.replace(b"0123456789abcdef0123456789abcdef", b"<host-id@emitter>")
    assert wire.queue_message(traced) == {"event": "news", "host_id": "<host-id@emitter>"}
    layers = wire.decode_publish(b"*3\r\n$7\r\nPUBLISH\r\n$14\r\nflask-socketio\r\n$%d\r\n%s\r\n" % (len(real), traced))
    assert layers[1].layer.startswith("pickled dict") and [f.name for f in layers[1].fields] == ["event", "host_id"]


# ------------------------------------------------------------------ joins (pure, on the committed traces)


def test_merge_names_threads_by_process_and_keeps_tokens_apart():
    traces = committed()
    merged = joins.merge(traces)
    assert len(merged.events) == sum(len(t.events) for t in traces.values())
    assert {joins.process_of(t.name) for t in merged.threads} == {"emitter", "server-a", "server-b"}
    tokens = {}
    for e in merged.events:
        for v in (*e.args, *([e.ret] if e.ret else [])):
            if v.token:
                tokens.setdefault(v.token, set()).add(joins.process_of(e.thread))
    assert all(len(p) == 1 for p in tokens.values()), "an identity token is shared by two processes"
    # every other field of every event is carried over as it was
    shifted = {"index", "thread", "parent", "end", "args", "ret"}
    originals = [e for name in sorted(traces, key=lambda n: traces[n].process) for e in traces[name].events]
    for e, o in zip(merged.events, originals):
        for f in dataclasses.fields(o):
            if f.name not in shifted:
                assert getattr(e, f.name) == getattr(o, f.name), f.name
        assert [(v.name, v.text) for v in e.args] == [(v.name, v.text) for v in o.args]


def test_every_server_receives_every_message_published_after_it_subscribed():
    merged = joins.merge(committed())
    edges = joins.queue_edges(merged)
    news = [q for q in edges if b'"news"' in q.message]
    # the emitter's one message reaches both servers' listeners, and nobody else
    assert sorted(joins.process_of(merged.events[q.read].thread) for q in news) == ["server-a", "server-b"]
    assert {joins.process_of(merged.events[q.publish].thread) for q in news} == {"emitter"}
    # the emitter is write-only: it never reads from Redis after subscribing, it has no listener
    assert [t.name for t in merged.threads if t.name.startswith("emitter/")] == ["emitter/main"]


@pytest.mark.parametrize("journey", ["emit-external", "broadcast-across-servers"])
def test_the_journey_crosses_processes_by_a_via_redis_edge(journey):
    chain = finders.build_all(committed(), None, [journey])[journey]
    crossing = [n for n, h in enumerate(chain.hops) if h.edge == EDGE_QUEUE]
    assert len(crossing) == 1
    before, after = chain.hops[crossing[0] - 1], chain.hops[crossing[0]]
    assert before.func.key == "_socket:socket.sendall" and after.func.key == "_socket:socket.recv"
    assert joins.process_of(before.thread) != joins.process_of(after.thread)
    assert joins.process_of(chain.hops[-1].thread) == "server-b"


def test_altering_the_payload_in_one_process_breaks_the_join_by_name():
    traces = committed()
    emitter = traces["queue.emitter"]
    altered = []
    for e in emitter.events:
        if e.func == "_socket:socket.sendall" and any("PUBLISH" in a.text for a in e.args):
            e = dataclasses.replace(e, args=tuple(dataclasses.replace(a, text=a.text.replace("from a worker", "from a wurker")) for a in e.args))
        altered.append(e)
    traces["queue.emitter"] = dataclasses.replace(emitter, events=tuple(altered))
    with pytest.raises(DispelError, match=r"no read in process server-b carries the message that emitter published on 'flask-socketio'"):
        finders.build_all(traces, None, ["emit-external"])


# ------------------------------------------------------------------ the runner (real processes)

needs_redis = pytest.mark.skipif(processes.redis_missing() is not None, reason=processes.redis_missing() or "")


def leftovers(*needles: str) -> list[str]:
    """Command lines of running processes that contain every needle."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if all(n in cmd for n in needles):
            found.append(cmd)
    return found


@pytest.mark.slow
def test_without_redis_the_recording_says_what_to_install(tmp_path):
    env = {**os.environ, "DISPEL_REDIS_SERVER": "/nonexistent/redis-server"}
    proc = subprocess.run([sys.executable, "-m", "dispel", "record", "queue", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "apt-get install redis-server" in lines[0], proc.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
@needs_redis
def test_redis_killed_mid_scenario_names_the_step_and_leaves_nothing(tmp_path, monkeypatch):
    ports = processes.free_ports(4)
    monkeypatch.setattr(processes, "free_ports", lambda n: ports[:n])

    def kill(step, redis):
        if step == "2:join":
            redis.proc.kill()
            redis.proc.wait()

    with pytest.raises(DispelError, match=r"step '1:join': process redis-server died"):
        processes.run(SC, tmp_path, 60, after_step=kill)
    assert not list(tmp_path.iterdir()), "a trace was written"
    assert not leftovers("dispel.run.multiprocess_child", f"redis://127.0.0.1:{ports[0]}/0")
    assert not leftovers("redis-server", f"--port {ports[0]}")


@pytest.mark.slow
@needs_redis
def test_a_server_that_cannot_start_names_the_process_and_leaves_nothing(tmp_path, monkeypatch):
    ports = processes.free_ports(4)
    monkeypatch.setattr(processes, "free_ports", lambda n: ports[:n])
    with socket.socket() as held:  # server-b's port is taken
        held.bind(("127.0.0.1", ports[2]))
        held.listen()
        with pytest.raises(DispelError, match=r"step 'start': process server-b: .*(failed to start|did not listen)"):
            processes.run(SC, tmp_path, 30)
    assert not list(tmp_path.iterdir())
    assert not leftovers("dispel.run.multiprocess_child", f"redis://127.0.0.1:{ports[0]}/0")
    assert not leftovers("redis-server", f"--port {ports[0]}")


@pytest.mark.traced_python
@pytest.mark.slow
@needs_redis
def test_recording_twice_gives_the_committed_bytes(tmp_path):
    processes.run(SC, tmp_path, 120)
    for name in SC.trace_names():
        committed = (ROOT / "traces" / f"{name}.json").read_text()
        # the one tolerated race (docs/how.md): which queued packets a writer's poll takes together
        same, note = drift.writer_batches(committed, (tmp_path / f"{name}.json").read_text())
        if note:
            print(f"note: {name}: {note}")
        assert same == committed, (name, drift.trace_drift(committed, same))


def test_relays_say_what_each_server_did_with_each_message():
    relays = joins.relays(joins.merge(committed()))
    did = {(r.publisher, r.event, r.reader): (r.handled, r.sent) for r in relays}
    # its own message comes back and is skipped; the other server's room event is handled
    # locally and finds no client of the room on server-a when client 1 has not joined yet
    assert did[("server-a", "joined", "server-a")] == (False, 0)
    assert did[("server-b", "joined", "server-a")] == (True, 0)
    assert did[("server-a", "joined", "server-b")] == (True, 1)
    assert did[("emitter", "news", "server-a")] == did[("emitter", "news", "server-b")] == (True, 1)
    assert "emitter" not in {r.reader for r in relays}
    page = render.render_relays(relays)
    assert "`emitter` published and read nothing" in page and "no client of the room on this server" in page


def test_the_oldest_set_publishes_pickles_and_its_journeys_cross_by_them():
    """At python-socketio 5.8.0 (traces/oldest/) the messages through Redis are pickles: the same
    two journeys cross processes by a via-redis edge, each PUBLISH read as a dict with its event,
    and server-a's own client gets the room's event from server-a's listener, reading it back."""
    traces = {n: trace_from_json((ROOT / "traces" / "oldest" / f"{n}.json").read_text(), n) for n in SC.trace_names()}
    merged = joins.merge(traces)
    edges = joins.queue_edges(merged)
    assert edges and all(q.message.startswith(b"\x80") for q in edges)
    relays = joins.relays(merged)
    did = {(r.publisher, r.event, r.reader): (r.handled, r.sent) for r in relays}
    assert did[("emitter", "news", "server-a")] == did[("emitter", "news", "server-b")] == (True, 1)
    assert did[("server-a", "joined", "server-a")] == (True, 1)  # 5.16 skips its own message; 5.8 sends from it
    built = finders.build_all(traces, None, ["emit-external", "broadcast-across-servers"])
    for name, chain in built.items():
        assert any(h.edge == EDGE_QUEUE for h in chain.hops), name
        assert any(layer.layer.startswith("pickled dict") for layer in chain.wire), name
