"""Derived journeys on the sample app's committed traces: the committed chain files (written by the
hand-written finders these replaced), hop for hop (function, event, edge, line), with the same joins,
values and wire; the names derived; the generated texts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from dispel.chains import build as chains
from dispel.chains import derive
from dispel.pins import installed
from dispel.tracefiles.codec import chain_from_dict, trace_from_json

ROOT = Path(__file__).resolve().parents[1]
# derived journey -> the catalogue's journey it must equal, per scenario
SAME = {
    "chat": {"run": "run", "handshake": "handshake", "on-chat": "on", "emit-reply": "emit", "ack-shout": "ack", "disconnect": "disconnect"},
    "rooms": {"broadcast-joined": "broadcast"},
}
CASES = [(sc, d, c) for sc, m in SAME.items() for d, c in m.items()]


@pytest.fixture(scope="module")
def traces():
    return {sc: trace_from_json((ROOT / "traces" / f"{sc}.json").read_text()) for sc in SAME}


@pytest.mark.parametrize("scenario, derived, committed", CASES, ids=[c[1] for c in CASES])
def test_derived_equals_the_catalogues_chain(traces, scenario, derived, committed):
    trace = traces[scenario]
    found = {d.journey.name: d for d in derive.derive(trace)}
    d = found[derived]
    chain = chains.build(trace, d.journey, installed.lines_by_source({scenario: trace}), d.find)
    old = chain_from_dict(json.loads((ROOT / "traces" / "chains" / f"{committed}.json").read_text()))
    assert [(h.func.key, h.event, h.edge, h.line) for h in chain.hops] == [(h.func.key, h.event, h.edge, h.line) for h in old.hops]
    assert [h.value for h in chain.hops] == [h.value for h in old.hops]
    assert chain.joins == old.joins and chain.wire == old.wire


def test_what_is_derived_from_the_chat_trace(traces):
    names = [d.journey.name for d in derive.derive(traces["chat"])]
    assert names == [
        "run", "handshake", "connect", "on-chat", "on-join", "on-shout", "ack-shout",
        "emit-welcome", "emit-reply", "broadcast-joined", "disconnect",
    ]


@pytest.mark.parametrize("kind, event, namespace, name", [
    ("on", "message", "/chat", "on-message-chat"), ("on", "*", "/", "on-any"), ("emit", "a b/c", "/", "emit-a_b_c"),
    ("disconnect", "", "/", "disconnect"),
])
def test_slug(kind, event, namespace, name):
    assert derive.slug(kind, event, namespace) == name


def test_generated_texts_for_the_apps_hops(traces):
    from dispel.render import app_notes

    trace = traces["chat"]
    lines = installed.lines_by_source({"chat": trace})
    derived = derive.derive(trace)
    built = {d.journey.name: chains.build(trace, d.journey, lines, d.find) for d in derived}
    texts = app_notes.app_texts(trace, built, lines)
    assert texts["dispel.sample_app.app:on_chat"] == (
        f"{app_notes.GENERATED} The app's handler of 'chat' on namespace `/`: Flask-SocketIO's `SocketIO._handle_event` "
        "calls it. It emits 'reply' at line 25: `emit(\"reply\", {\"echo\": message})`."
    )
    assert "It emits 'joined' at line 31" in texts["dispel.sample_app.app:on_join"]
    assert texts["dispel.sample_app.app:<module>"].startswith(f"{app_notes.GENERATED} The app's module body")
    summaries = app_notes.summaries(derived, built)
    assert "`on_chat`" in summaries["journey:on-chat"] and "`'chat'`" in summaries["journey:on-chat"]
    # the sample's keyed texts and journey summaries are not reused for another app's journeys
    kept = app_notes.library_texts({"a:f": "x", "a:f@on": "y", "journey:on": "z"})
    assert kept == {"a:f": "x"}


def test_a_text_that_cannot_be_filled_on_a_derived_journey_is_left_out_not_fatal(traces):
    from dispel import report_pages

    trace = traces["chat"]
    d = {x.journey.name: x for x in derive.derive(trace)}["emit-reply"]
    chain = chains.build(trace, d.journey, installed.lines_by_source({"chat": trace}), d.find)
    bad, good = chain.hops[1].func.key, chain.hops[2].func.key
    mine, dropped = report_pages.fillable(chain, {bad: "see {{hop:nowhere:nothing}}", good: "on {{thread}}"})
    assert bad not in mine and good in mine
    assert len(dropped) == 1 and dropped[0].startswith(f"{bad} on emit-reply:") and "nowhere:nothing" in dropped[0]
