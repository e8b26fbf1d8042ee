"""Each chain is one story (dispel.check.integrity): the committed chains pass; a spliced chain, a hop
reached by an edge the trace did not record, and a wire value from another message fail, each
with one line naming the journey and the hop; `dispel check` says the same line."""
from __future__ import annotations

import dataclasses

import pytest
from dispel import cli
from dispel.chains import build as chains
from dispel.chains.stage import chain_files
from dispel.check import integrity
from dispel.check import stage as verify
from dispel.model import EDGE_CALL, EDGE_WAKE, WireLayer
from dispel.project import Project, load_chains, load_traces


@pytest.fixture(scope="module")
def committed():
    p = Project()
    return load_chains(p), load_traces(p)


def verdicts(chain, traces):
    trace, links = chains.scenario_trace(traces, chain.scenario)
    return integrity.verdicts(chain, trace, links)


def spliced(found):
    """The emit journey up to its writer's loop (the packet the wake-up handed over), then the
    ack journey's frame from a later turn of the same loop: every edge is a recorded one (the
    loop's frame calls both encodes), only the message changed. The splice of issue 24."""
    emit, ack = found["emit"], found["ack"]
    cut = max(n for n, h in enumerate(emit.hops) if h.func.qualname.endswith("<locals>.writer"))
    at = max(n for n, h in enumerate(ack.hops) if h.func.qualname.endswith("<locals>.writer"))
    assert emit.hops[cut].event == ack.hops[at].event  # the same writer loop on the same thread
    return dataclasses.replace(emit, hops=emit.hops[: cut + 1] + ack.hops[at + 1 :], wire=ack.wire, joins=())


def test_every_committed_chain_is_one_story(committed):
    found, traces = committed
    assert len(found) >= 10
    assert {name: verdicts(c, traces) for name, c in found.items() if verdicts(c, traces)} == {}


def test_a_spliced_chain_is_named_by_journey_and_hop(committed):
    found, traces = committed
    bad = spliced(found)
    said = verdicts(bad, traces)
    n = len(bad.hops)
    wake = max(k for k, h in enumerate(bad.hops, 1) if h.edge == EDGE_WAKE)
    assert len(said) == 1, said
    assert said[0].startswith(f"emit: hop {n} (_socket:socket.send, call): sends ")
    assert f"not the packet hop {wake}'s wake-up handed over" in said[0] and "42[\"reply\"" in said[0]


def test_an_edge_the_trace_did_not_record(committed):
    found, traces = committed
    emit = found["emit"]
    k = next(k for k, h in enumerate(emit.hops) if h.edge == EDGE_WAKE)
    hops = list(emit.hops)
    hops[k] = dataclasses.replace(hops[k], edge=EDGE_CALL)
    said = verdicts(dataclasses.replace(emit, hops=tuple(hops)), traces)
    assert said == [f"emit: hop {k + 1} (threading:Condition.wait, call): the previous hop (event {emit.hops[k - 1].event}) did not call it"]


def test_a_wake_up_whose_woken_thread_took_another_packet(committed):
    found, traces = committed
    ack = found["ack"]
    trace, links = chains.scenario_trace(traces, ack.scenario)
    k = max(k for k, h in enumerate(ack.hops) if h.edge == EDGE_WAKE)
    # the same notify, recorded as having ended an earlier wait of the writer (another packet's)
    other = next(w for w in trace.wakeups if trace.events[w.wait].thread == ack.hops[k].thread and w.wait != ack.hops[k].event
                 and w.wait < ack.hops[k].event)
    moved = dataclasses.replace(trace, wakeups=trace.wakeups + (dataclasses.replace(other, notify=ack.hops[k - 1].event),))
    hops = list(ack.hops)
    hops[k] = dataclasses.replace(hops[k], event=other.wait)
    said = integrity.verdicts(dataclasses.replace(ack, hops=tuple(hops[: k + 1]), wire=()), moved, links)
    assert said == [f"ack: hop {k + 1} (threading:Condition.wait, wake-up): the woken thread did not take the packet the waker put"]


def test_a_wire_value_of_another_message(committed):
    found, traces = committed
    emit = found["emit"]
    layer = WireLayer("Engine.IO packet (v4)", '42["elsewhere",{"x":"not this message"}]', ())
    said = verdicts(dataclasses.replace(emit, wire=(layer,)), traces)
    assert said == ["emit: wire Engine.IO packet (v4): '42[' is on no hop of the journey"] or said == [
        "emit: wire Engine.IO packet (v4): 'not this message' is on no hop of the journey"]


@pytest.mark.slow  # a whole `dispel check` of a copy of the project
def test_dispel_check_says_the_rules_line(project, committed, monkeypatch, capsys):
    found, traces = committed
    bad = spliced(found)
    for path, text in chain_files({"emit": bad}, project / "traces" / "chains").items():
        path.write_text(text, encoding="utf-8")
    monkeypatch.setattr(verify, "check_drift", lambda *a, **k: ([], []))  # the regeneration comparison off
    assert cli.main(["check", "--root", str(project)]) == 1
    out = capsys.readouterr().out.splitlines()
    line = verdicts(bad, traces)[0]
    assert f"one story: {line}" in out


def test_a_part_that_nothing_earlier_caused(committed):
    """A part whose first event no event of the earlier parts happened before (and that is no
    socket read, whose cause is a client) is another story."""
    found, traces = committed
    emit = found["emit"]
    trace, links = chains.scenario_trace(traces, emit.scenario)
    f = integrity._Facts(trace, links)
    reached = f.reach([h.event for h in emit.hops])
    last = max(h.event for h in emit.hops)
    other = next(e for e in trace.events if e.index > last and e.func not in integrity.READS
                 and not (e.thread in reached and reached[e.thread] <= e.index))
    hop = dataclasses.replace(emit.hops[0], func=trace.funcs[other.func], thread=other.thread, event=other.index, edge="entry")
    said = verdicts(dataclasses.replace(emit, hops=emit.hops + (hop,)), traces)
    assert said == [f"emit: hop {len(emit.hops) + 1} ({other.func}, entry): starts a new part that no event of an earlier part happened before"]
