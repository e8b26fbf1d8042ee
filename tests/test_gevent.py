"""gevent: the async mode an app gets, and the recorder following greenlets."""
from __future__ import annotations

import subprocess
import sys

import pytest
from dispel.run import modes

EMITTER = """
from dispel.run import modes
from flask_socketio import SocketIO
ctx = modes.unset_is_threading() if {hide} else __import__("contextlib").nullcontext()
with ctx:
    s = SocketIO(message_queue="redis://127.0.0.1:1")
print(s.server.eio.async_mode)
"""


def _mode_of_unset_app(hide: bool) -> str:
    out = subprocess.run([sys.executable, "-c", EMITTER.format(hide=hide)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.slow
def test_an_app_leaving_async_mode_unset_runs_threading_in_a_threading_run():
    # gevent is installed (the lock): Flask-SocketIO alone would pick it
    assert _mode_of_unset_app(False) == "gevent"
    assert _mode_of_unset_app(True) == "threading"


def test_hiding_undoes_itself_and_leaves_an_imported_package_alone():
    before = "gevent" in sys.modules
    with modes.unset_is_threading():
        if not before:
            assert sys.modules["gevent"] is None
    assert ("gevent" in sys.modules) == before


# ---------------------------------------------------------------- greenlets under the recorder (raw greenlets, in-process)

from conftest import trace_of
from dispel.record.cores import available_cores
from programs import greenlets as green


@pytest.fixture(params=available_cores())
def core(request, monkeypatch):
    monkeypatch.setenv("DISPEL_CORE", request.param)
    return request.param


def _lanes(trace):
    """thread -> [(function, its parent's function)], and thread -> the function of the row that started it."""
    name = {e.index: e.func.rpartition(":")[2] for e in trace.events}
    lanes: dict[str, list] = {}
    for e in trace.events:
        lanes.setdefault(e.thread, []).append((name[e.index], name.get(e.parent, "-")))
    started = {t.name: name.get(t.started_by, "-") for t in trace.threads}
    return lanes, started


GREENLET_TABLE = [
    (  # a greenlet switched away in the middle of a call keeps its stack: leaf's second call is child_body's
        green.ping_pong,
        {"main": [("ping_pong", "-")],
         "greenlet-1": [("child_body", "-"), ("leaf", "child_body"), ("leaf", "child_body")]},
        {"main": "-", "greenlet-1": "ping_pong"},
    ),
    (  # two interleaved greenlets: neither's calls land on the other's stack
        green.two_children,
        {"main": [("two_children", "-"), ("leaf", "two_children")],
         "greenlet-1": [("twice", "-"), ("leaf", "twice"), ("leaf", "twice")],
         "greenlet-2": [("twice", "-"), ("leaf", "twice"), ("leaf", "twice")]},
        {"main": "-", "greenlet-1": "two_children", "greenlet-2": "two_children"},
    ),
]


@pytest.mark.parametrize("program, lanes, started", GREENLET_TABLE, ids=lambda v: getattr(v, "__name__", ""))
def test_each_greenlet_is_a_lane_with_its_own_stack_joined_by_its_first_switch(core, program, lanes, started):
    got_lanes, got_started = _lanes(trace_of(program))
    assert got_lanes == lanes
    assert got_started == started


def test_each_greenlets_first_switch_is_recorded_and_a_greenlet_keeps_its_serial(core):
    from conftest import record

    _, rec = record(green.two_children)
    raw = rec.rows()
    # main (1) -> a (2) -> main -> b (3) -> main -> a -> main -> b -> main: only each greenlet's
    # first switch is kept (all greenlet_starts reads; a long run's switches do not pile up)
    assert [(o, t) for _, o, t in raw.switches] == [(1, 2), (1, 3)]
    assert raw.greenlets == {2: "greenlet", 3: "greenlet"}
    # switched back to, a greenlet goes on under its own serial: each leaf on its twice's
    leaves = [(serial, raw.ints[3 * parent]) for code, serial, parent, _, _ in raw.call_rows()
              if code.co_name == "leaf" and raw.codes[parent].co_name == "twice"]
    assert sorted(leaves) == [(2, 2), (2, 2), (3, 3), (3, 3)]


# ---------------------------------------------------------------- a monkey-patched gevent program (a process of its own)

from pathlib import Path

from dispel.tracefiles.codec import trace_from_json

RUN = Path(__file__).parent / "programs" / "gevent_run.py"


def _gevent_trace(core: str, program: str = "all_three") -> str:
    import os

    out = subprocess.run([sys.executable, str(RUN), program], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "DISPEL_CORE": core})
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.slow
def test_every_core_writes_the_same_bytes_on_a_gevent_program():
    written = {core: _gevent_trace(core) for core in available_cores()}
    reference = written.pop("py")
    for core, text in written.items():
        assert text == reference, f"core {core} and the Python core differ on the gevent program"
    # and a second run of the reference gives the same bytes (regeneration)
    assert _gevent_trace("py") == reference


@pytest.mark.slow
def test_gevent_hand_offs_are_wake_ups_and_spawns_are_starts_with_gevent_itself_opaque():
    trace = trace_from_json(_gevent_trace(available_cores()[0]))
    ev = trace.events
    func = {e.index: e.func for e in ev}
    threads = {t.name: t for t in trace.threads}
    # gevent's own calls are recorded (its hand-offs are found on them) but left out of the trace
    assert not [f for f in trace.funcs.values() if f.source.dist == "gevent"]
    lane = {name: next(e.thread for e in ev if e.func == f"programs.green:{name}") for name in ("write", "handle", "waiter", "setter")}
    assert len({*lane.values(), "main"}) == 5
    wakes = {(func[w.notify], ev[w.notify].thread, func[w.wait], ev[w.wait].thread) for w in trace.wakeups}
    # Queue.put in handle woke Queue.get in write; Event.set in setter woke Event.wait in waiter:
    # each lifted to the nearest call shown around it
    assert wakes == {("programs.green:handle", lane["handle"], "programs.green:write", lane["write"]),
                     ("programs.green:setter", lane["setter"], "programs.green:waiter", lane["waiter"])}
    # each spawned greenlet is joined to where main spawned it (gevent.spawn, lifted to its caller)
    for name, spawner in (("write", "queue_wakeup"), ("handle", "queue_wakeup"), ("waiter", "event_wakeup"), ("setter", "event_wakeup")):
        start = ev[threads[lane[name]].started_by]
        assert start.func == f"programs.green:{spawner}" and start.thread == "main"
    # the packet handle made is the packet write got
    made = next(e for e in ev if e.func == "programs.green:handle").ret
    got = next(e for e in ev if e.func == "programs.green:write").ret
    assert made.token and made.token == got.token


# ---------------------------------------------------------------- a Flask-SocketIO app in gevent mode

APPS = Path(__file__).parent / "programs" / "apps"


def _record_gevent_app(tmp_path, name: str = "green_chat"):
    import os

    out = subprocess.run([sys.executable, "-m", "dispel", "record", "--scenario", str(APPS / f"{name}.toml"), "--out", str(tmp_path)],
                         cwd=APPS, capture_output=True, text=True, timeout=180, env={**os.environ, "DISPEL_GEVENT": "1"})
    assert out.returncode == 0, out.stderr
    return trace_from_json((tmp_path / f"{name}.json").read_text()), out.stdout


@pytest.mark.slow
def test_emit_wakes_the_writer_greenlet_from_the_handler_greenlet(tmp_path):
    trace, _said = _record_gevent_app(tmp_path)
    ev = trace.events

    def under(i: int, func: str) -> bool:
        while i >= 0:
            if ev[i].func == func:
                return True
            i = ev[i].parent
        return False

    lanes = {t.name for t in trace.threads}
    assert {"request-1", "ws-reader-1", "eio-writer-1", "handler-1"} <= lanes
    emits = [(ev[w.notify], ev[w.wait]) for w in trace.wakeups
             if ev[w.notify].thread.startswith("handler-") and ev[w.wait].thread.startswith("eio-writer-")]
    assert emits, "no wake-up from a handler's greenlet to the writer's"
    for put, get in emits:
        # gevent's Queue.put and get, lifted to the Engine.IO calls around them
        assert put.func == "engineio.socket:Socket.send" and get.func == "engineio.socket:Socket.poll"
        assert under(put.index, "flask_socketio:emit") or under(put.index, "flask_socketio:send")


def _report(tmp_path, name: str):
    import json

    from dispel.tracefiles.codec import chain_from_dict

    out = tmp_path / name
    proc = subprocess.run([sys.executable, "-m", "dispel", "report", "--scenario", f"{name}.toml", "--out", str(out), "--no-site"],
                          cwd=APPS, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr
    return {c.journey: c for c in (chain_from_dict(json.loads(p.read_text())) for p in sorted((out / "traces" / "chains").glob("*.json")))}


SOCKET_IO = {"_socket:socket.send", "_socket:socket.sendall", "_socket:socket.recv", "_socket:socket.recv_into"}


@pytest.mark.slow
def test_report_on_a_gevent_app_derives_the_threading_journeys_each_reaching_the_socket(tmp_path):
    # green_chat.py is ns_chat.py with async_mode="gevent", driven by the same steps
    green, threads = _report(tmp_path, "green_chat"), _report(tmp_path, "ns_chat")
    assert sorted(green) == sorted(threads)
    for name, chain in green.items():
        if name != "run":  # from the app to the listening socket
            assert SOCKET_IO & {h.func.key for h in chain.hops}, f"{name} reaches no socket send or receive"
    lanes = {h.thread for c in green.values() for h in c.hops}
    assert "hub" in lanes and not [h for c in green.values() for h in c.hops if h.func.source.dist == "gevent"]


DECISIONS = [
    # (the app's async_mode, the scenario file's, the mode recorded or the error's start)
    ("", "", "threading"),
    ("", "gevent", "gevent"),
    ("gevent", "", "gevent"),
    ("threading", "", "threading"),
    ("gevent", "gevent", "gevent"),
    ("threading", "gevent", "async_mode: the app asks for 'threading', the scenario file for 'gevent'"),
    ("eventlet", "", "async_mode='eventlet': dispel does not trace eventlet"),
    ("", "eventlet", "async_mode='eventlet': dispel does not trace eventlet"),
    ("gevent_uwsgi", "", "async_mode='gevent_uwsgi': dispel traces 'threading' and 'gevent'"),
]


@pytest.mark.parametrize("app, file, want", DECISIONS)
def test_the_app_s_async_mode_wins_and_the_file_s_fills_in(app, file, want):
    from dispel.model import DispelError

    if want in ("threading", "gevent"):
        assert modes.decide(app, file) == want
    else:
        with pytest.raises(DispelError) as err:
            modes.decide(app, file)
        assert str(err.value).startswith(want) and "\n" not in str(err.value)


def test_gevent_needs_python_engineio_4_8():
    assert modes.gevent_supported("4.8.0") == "" and modes.gevent_supported("4.13.3") == ""
    why = modes.gevent_supported("4.7.1")
    assert why.startswith("async_mode='gevent' needs python-engineio 4.8.0 or later") and "4.7.1" in why


def test_a_scenario_file_names_its_async_mode_under_app():
    from dispel.model import DispelError
    from dispel.run import scenario_file

    text = '[app]\nimport = "chat:socketio"\nasync_mode = "MODE"\n[clients.a]\n[[steps]]\ndo = "connect"\n'
    assert scenario_file.parse(text.replace("MODE", "gevent"), "s.toml").app.async_mode == "gevent"
    assert scenario_file.parse(text.replace('async_mode = "MODE"\n', ""), "s.toml").app.async_mode == ""
    with pytest.raises(DispelError, match="async_mode = 'uvloop' is not one of"):
        scenario_file.parse(text.replace("MODE", "uvloop"), "s.toml")


@pytest.mark.slow
def test_the_python_core_and_the_default_core_write_the_same_gevent_app_trace(tmp_path):
    import os

    written = {}
    for core in {"py", available_cores()[0]}:
        out = tmp_path / core
        proc = subprocess.run([sys.executable, "-m", "dispel", "record", "--scenario", str(APPS / "green_chat.toml"), "--out", str(out)],
                              cwd=APPS, capture_output=True, text=True, timeout=180, env={**os.environ, "DISPEL_CORE": core})
        assert proc.returncode == 0, proc.stderr
        written[core] = (out / "green_chat.json").read_bytes()
    assert len(set(written.values())) == 1, "the cores differ on the gevent app"


# ---------------------------------------------------------------- the sample app's gevent scenario (the committed trace and chains)

from dispel import catalog
from dispel.project import Project, load_chains, load_traces

GEVENT_PAGES = ("gevent-handshake", "gevent-on", "gevent-emit", "gevent-ack", "gevent-disconnect")


def test_the_gevent_scenario_is_chat_s_steps_in_gevent_mode_and_its_journeys_are_set_beside_threading_ones():
    green, chat = catalog.scenario("gevent"), catalog.scenario("chat")
    assert green.async_mode == "gevent" and green.steps == chat.steps and green.default
    for name in GEVENT_PAGES:
        j = catalog.journey(name)
        assert j.scenario == "gevent" and catalog.journey(j.beside).scenario == "chat"


@pytest.mark.parametrize("name", GEVENT_PAGES)
def test_each_gevent_journey_reaches_a_socket_send_or_receive_on_greenlet_lanes(name):
    chain = load_chains(Project())[name]
    assert SOCKET_IO & {h.func.key for h in chain.hops}, f"{name} reaches no socket send or receive"
    assert not [h for h in chain.hops if h.func.source.dist == "gevent"]
    trace = load_traces(Project())["gevent"]
    greenlets = {t.name for t in trace.threads}
    assert {h.thread for h in chain.hops} <= greenlets


def test_the_sample_s_gevent_trace_has_the_handler_greenlet_wake_the_writer_s_on_emit():
    trace = load_traces(Project())["gevent"]
    ev = trace.events
    assert "hub" in {t.name for t in trace.threads}
    wakes = [(ev[w.notify], ev[w.wait]) for w in trace.wakeups
             if ev[w.notify].thread.startswith("handler-") and ev[w.wait].thread.startswith("eio-writer-")]
    assert wakes
    assert {(p.func, g.func) for p, g in wakes} == {("engineio.socket:Socket.send", "engineio.socket:Socket.poll")}
    emit = load_chains(Project())["gevent-emit"]
    hand = [(a.thread, b.thread, b.edge) for a, b in zip(emit.hops, emit.hops[1:]) if a.thread != b.thread]
    assert hand == [("handler-1", "eio-writer-1", "wake-up")]


def test_a_gevent_page_has_greenlet_lanes_and_ends_beside_the_threading_chain():
    from dispel.review import beside

    text = (Project().docs / "chains" / "gevent-emit.md").read_text(encoding="utf-8")
    assert beside.HEADING in text and "](emit.md#hop-" in text
    assert "`hub`" in (Project().docs / "chains" / "gevent-handshake.md").read_text(encoding="utf-8")


def test_departures_are_the_stretches_between_hops_on_both_sides():
    from dispel.model import Chain, Func, Hop, Source
    from dispel.review import beside

    def chain(name, spec):
        src = Source("d", "1", "m.py")
        return Chain(name, name, "s", tuple(
            Hop(Func("m", f, src, 1, 2), 1, thread, "call" if i else "entry", i) for i, (f, thread) in enumerate(spec)))

    threading = chain("t", [("a", "request-1"), ("put", "request-1"), ("notify", "request-1"), ("wait", "eio-writer-1"), ("poll", "eio-writer-1"), ("send", "eio-writer-1")])
    gevent = chain("g", [("a", "request-2"), ("poll", "eio-writer-2"), ("send", "eio-writer-2")])
    both, parts = beside.departures(threading, gevent)
    assert [(p.old, p.new) for p in both] == [(1, 1), (5, 2), (6, 3)]
    assert parts == [beside.Departure((1, 1), (2, 3, 4), ())]


@pytest.mark.slow
def test_the_gevent_scenario_records_the_committed_trace_again(tmp_path):
    """`dispel record gevent` starts a monkey-patched interpreter itself; its trace is the committed one, byte for byte."""
    from dispel.check.stage import _rerecord_drift

    proc = subprocess.run([sys.executable, "-m", "dispel", "record", "gevent", "--out", str(tmp_path)],
                          cwd=Project().root, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "recorded gevent:" in proc.stdout
    assert _rerecord_drift(Project(), tmp_path, "gevent", []) == []


def test_a_gevent_pages_lanes_are_greenlets_and_a_threading_pages_threads():
    import json

    from dispel.render import pages
    from dispel.tracefiles.codec import chain_from_dict

    root = Path(__file__).resolve().parent.parent
    green = chain_from_dict(json.loads((root / "traces" / "chains" / "gevent-on.json").read_text()))
    plain = chain_from_dict(json.loads((root / "traces" / "chains" / "on.json").read_text()))
    assert (pages.lane_kind(green), pages.lane_kind(plain)) == ("greenlet", "thread")
    from dispel.chains import fold

    svg = pages.diagram(green, tuple(fold.groups(green, frozenset(), frozenset())))
    assert ">greenlet<" in svg and ">thread<" not in svg


# ---------------------------------------------------------------- taskboard in gevent mode: a long-polling recipient


@pytest.mark.slow
def test_taskboard_in_gevent_mode_follows_bob_s_packets_from_engineio_s_queue_to_his_get(tmp_path):
    """taskboard/ with async_mode = "gevent" (its scenario file with that one line more): the
    broadcast bob alone receives and the DISCONNECT its on_leave sends him leave on his long-poll
    GETs. gevent's Queue.put and get are not in the trace: each is followed from Engine.IO's
    Socket.send to the poll of his socket whose greenlet then encoded that very packet (a data
    hand-off when his GET came after the put, else the wake-up), and check --root proves them."""
    import json
    import re

    board = APPS / "taskboard"
    text = (board / "taskboard.toml").read_text()
    assert "\nfactory = true\n" in text and "async_mode" not in text
    scenario = tmp_path / "taskboard.toml"
    scenario.write_text(text.replace("\nfactory = true\n", '\nfactory = true\nasync_mode = "gevent"\n'))
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "dispel", "report", "--scenario", str(scenario), "--root", str(board),
                           "--out", str(out), "--no-site"], cwd=board, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    said = proc.stdout.splitlines()
    assert not [ln for ln in said if ln.startswith("not derived: ")], said
    (line,) = [ln for ln in said if ln.startswith("completeness: ")]
    done, total = (int(n) for n in re.findall(r"\d+", line)[:2])
    assert done == total > 0, line
    assert "hub" in [name for name, *_ in json.loads((out / "traces" / "taskboard.json").read_text())["threads"]]  # recorded on greenlets
    chains = {p.stem: json.loads(p.read_text()) for p in (out / "traces" / "chains").glob("*.json")}
    assert {"broadcast-card_moved-board", "server-disconnect-on_leave"} <= set(chains), sorted(chains)
    for name, said_packet in (("broadcast-card_moved-board", "card_moved"), ("server-disconnect-on_leave", "41/board,")):
        hops = chains[name]["hops"]
        handoff = [n for n, h in enumerate(hops) if h["edge"] in ("data", "wake-up") and h["func"]["qualname"] == "Socket.poll"]
        assert handoff, f"{name}: no hand-off to a Socket.poll"
        assert hops[handoff[0] - 1]["func"]["qualname"] == "Socket.send" and hops[handoff[0]]["thread"].startswith("request-")
        assert hops[-1]["func"]["qualname"] == "socket.sendall" and said_packet in (hops[-1]["value"] or ""), hops[-1]
    check = subprocess.run([sys.executable, "-m", "dispel", "check", "--root", str(out)], cwd=Path(__file__).resolve().parent.parent,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and check.stdout.startswith("0 problem(s)"), check.stdout + check.stderr
