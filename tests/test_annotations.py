"""Annotations: parsing with file:line errors, fingerprints, and the missing/orphaned/stale reports."""
from __future__ import annotations

import hashlib

import pytest
from dispel.model import DispelError
from dispel.render import annotation_files as ann
from samples import EMIT, EXCERPTS, HOPS, SIO

SIO_TEXT = "\n".join(EXCERPTS[SIO]) + "\n"
SIO_FP = ann.fingerprint(SIO_TEXT, 2, 5)

GOOD = f"""\
journey:emit:
  text: |
    How an **emit** reaches the socket.
socketio.server:Server.emit:
  fingerprint: {SIO_FP}
  reviewed: [emit]
  text: Encodes the packet.
socket:socket.send:
  reviewed: [emit]
  text: The C sink.
"""


def test_fingerprint_is_sha1_of_exact_bytes_of_the_line_range():
    text = "a\r\nb\x0cc\nd\n"  # CRLF kept, form feed is not a line break for Python
    assert ann.fingerprint(text, 1, 2) == hashlib.sha1(b"a\r\nb\x0cc\n").hexdigest()[:12]
    assert ann.fingerprint(text.encode(), 2, 3) == hashlib.sha1(b"b\x0cc\nd\n").hexdigest()[:12]
    assert ann.fingerprint("x\ny", 2, 2) == hashlib.sha1(b"y").hexdigest()[:12]  # no final newline


@pytest.mark.parametrize(("first", "last"), [(0, 1), (3, 2), (1, 9)])
def test_fingerprint_of_lines_outside_the_file_is_an_error(first, last):
    with pytest.raises(DispelError, match="not inside a 3-line file"):
        ann.fingerprint("a\nb\nc\n", first, last)


def test_parse_good_file():
    parsed = ann.parse_annotations(GOOD, "docs/annotations/emit.yml")
    assert list(parsed) == ["journey:emit", "socketio.server:Server.emit", "socket:socket.send"]
    entry = parsed["socketio.server:Server.emit"]
    assert (entry.fingerprint, entry.text, entry.where) == (SIO_FP, "Encodes the packet.", "docs/annotations/emit.yml:4")
    assert entry.reviewed == ("emit",)
    assert parsed["journey:emit"].text == "How an **emit** reaches the socket.\n"
    assert ann.parse_annotations("", "empty.yml") == {}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("m:f:\n  text: x\n   y: z\n", r"^f\.yml:3: not valid YAML: mapping values are not allowed here"),
        ("- a list\n", r"^f\.yml:1: an annotations file must be a mapping"),
        ("m:f:\n  text: x\nm:f:\n  text: y\n", r"^f\.yml:3: 'm:f' is annotated twice \(first at line 1\)"),
        ("not a key:\n  text: x\n", r"^f\.yml:1: 'not a key' is not a function identity"),
        ("m:f: just text\n", r"^f\.yml:1: m:f: expected a mapping"),
        ("m:f:\n  txt: x\n", r"^f\.yml:2: m:f: unknown field 'txt'"),
        ("m:f:\n  fingerprint: 0123456789ab\n", r"^f\.yml:1: m:f: 'text' is missing or empty"),
        ("m:f:\n  fingerprint: XYZ\n  text: t\n", r"^f\.yml:1: m:f: fingerprint 'XYZ' is not 12"),
        ("journey:on:\n  fingerprint: 0123456789ab\n  text: t\n", r"^f\.yml:1: journey:on: a journey summary has no fingerprint"),
        ("m:f:\n  reviewed: on\n  text: t\n", r"^f\.yml:2: m:f: reviewed must be a list of journeys"),
        ("m:f:\n  reviewed: [On_x]\n  text: t\n", r"^f\.yml:2: m:f: 'On_x' in reviewed is not a journey name"),
        ("m:f@on:\n  reviewed: [on]\n  text: t\n", r"^f\.yml:1: m:f@on: a text keyed to a journey is reviewed on that journey only"),
        ("m:f@On:\n  text: t\n", r"^f\.yml:1: 'm:f@On' is not a function identity"),
        ("m:f:\n  text: [a, b]\n", r"^f\.yml:2: m:f: text must be a string"),
    ],
)
def test_parse_errors_name_file_and_line(text, error):
    with pytest.raises(DispelError, match=error):
        ann.parse_annotations(text, "f.yml")


def test_merge_rejects_a_key_in_two_files():
    with pytest.raises(DispelError, match=r"^b\.yml:1: 'm:f' is already annotated at a\.yml:3"):
        ann.merge_annotations([("a.yml", "x:y:\n  text: 1\nm:f:\n  text: 2\n"), ("b.yml", "m:f:\n  text: 3\n")])


def notes(text: str = GOOD):
    return ann.parse_annotations(text, "emit.yml")


def test_missing_lists_unannotated_hops_and_summaries():
    problems = ann.missing([EMIT], notes("socketio.server:Server.emit:\n  text: x\n"))
    assert [p.key for p in problems] == [
        "journey:emit",
        "dispel.sample_app.app:on_chat",
        "queue:Queue.put",
        "simple_websocket.ws:Base._thread",
        "socket:socket.send",
    ]
    assert problems[1].message == "dispel.sample_app.app:on_chat (hop emit#1) has no annotation"


def test_orphaned_lists_annotations_on_no_chain():
    extra = GOOD + "gone.module:Old.func:\n  text: x\njourney:nope:\n  text: y\njourney:run:\n  text: z\n"
    problems = ann.orphaned([EMIT], notes(extra), journeys=["run", "emit"])
    assert [(p.key, p.where) for p in problems] == [("gone.module:Old.func", "emit.yml:11"), ("journey:nope", "emit.yml:13")]
    assert problems[0].message == "emit.yml:11: gone.module:Old.func is not on any chain"


def test_stale_compares_fingerprints_with_the_installed_source():
    changed = SIO_TEXT.replace("packet = ", "pkt = ")
    assert ann.stale([EMIT], notes(), {SIO: SIO_TEXT}) == []
    problems = ann.stale([EMIT], notes(), {SIO: changed})
    assert [p.key for p in problems] == ["socketio.server:Server.emit"]
    assert f"fingerprint {SIO_FP}, now {ann.fingerprint(changed, 2, 5)}" in problems[0].message
    # C functions and files that could not be read are never stale: there is nothing to compare.
    assert ann.stale([EMIT], notes(), {}) == []


def test_stub_is_a_parseable_entry_with_the_current_fingerprint():
    entry = ann.stub(HOPS[1].func, {SIO: SIO_TEXT})
    parsed = ann.parse_annotations(entry, "stub.yml")["socketio.server:Server.emit"]
    assert parsed.fingerprint == SIO_FP
    assert "fingerprint" not in ann.stub(HOPS[4].func, {})  # C function: nothing to fingerprint


def test_texts_is_what_render_takes():
    assert ann.texts(notes())["socket:socket.send"] == "The C sink."


def test_key_true_marks_a_function_key_for_render():
    text = "pkg.mod:f:\n  fingerprint: 0123456789ab\n  key: true\n  text: |\n    Does f.\npkg.mod:g:\n  text: |\n    Does g.\n"
    parsed = ann.parse_annotations(text, "a.yml")
    assert parsed["pkg.mod:f"].key_hop and not parsed["pkg.mod:g"].key_hop
    texts = ann.texts(parsed)
    assert texts["key:pkg.mod:f"] == "" and "key:pkg.mod:g" not in texts
    from dispel.render import pages as render

    assert render.marked_key(texts) == {"pkg.mod:f"}
    with pytest.raises(DispelError, match="key must be true or false"):
        ann.parse_annotations("pkg.mod:f:\n  key: maybe\n  text: x\n", "a.yml")


@pytest.mark.parametrize(
    ("key", "parts"),
    [
        ("engineio.socket:Socket.send", ("engineio.socket:Socket.send", None, None)),
        ("m:C.f@12", ("m:C.f@12", None, None)),  # an overloaded qualname keeps its line
        ("m:C.f@upgrade-python", ("m:C.f", "upgrade-python", None)),
        ("m:C.f@12@polling#L308", ("m:C.f@12", "polling", 308)),
        ("journey:emit", ("journey:emit", None, None)),
    ],
)
def test_split_key(key, parts):
    assert ann.split_key(key) == parts


def test_select_prefers_the_most_specific_text():
    texts = {"m:f": "general", "m:f@on": "on", "m:f@on#L7": "on, line 7"}
    assert ann.select(texts, "m:f", "on", 7) == ("m:f@on#L7", "on, line 7")
    assert ann.select(texts, "m:f", "on", 8) == ("m:f@on", "on")
    assert ann.select(texts, "m:f", "emit", 7) == ("m:f", "general")
    assert ann.select(texts, "m:g", "on", 7) is None


def test_a_keyed_text_covers_its_journey_and_is_orphaned_elsewhere():
    keyed = notes(GOOD + "dispel.sample_app.app:on_chat@emit:\n  text: x\ndispel.sample_app.app:on_chat@on:\n  text: y\n"
                  "dispel.sample_app.app:on_chat@emit#L9:\n  text: z\n")
    assert "dispel.sample_app.app:on_chat" not in [p.key for p in ann.missing([EMIT], keyed)]
    assert [p.message for p in ann.orphaned([EMIT], keyed)] == [
        "emit.yml:13: dispel.sample_app.app:on_chat@on: dispel.sample_app.app:on_chat is not on journey 'on'",
        "emit.yml:15: dispel.sample_app.app:on_chat@emit#L9: no hop of dispel.sample_app.app:on_chat on 'emit' executes line 9",
    ]


def test_a_general_text_is_unreviewed_on_a_journey_not_in_its_list():
    assert ann.unreviewed([EMIT], notes()) == []
    other = EMIT.__class__("broadcast", EMIT.title, EMIT.scenario, EMIT.hops)
    problems = ann.unreviewed([EMIT, other], notes())
    assert [(p.kind, p.key) for p in problems] == [("unreviewed", "socketio.server:Server.emit"), ("unreviewed", "socket:socket.send")]
    assert problems[0].message.startswith("emit.yml:4: socketio.server:Server.emit is unreviewed on broadcast (hop 2);")
    # a text keyed to the journey is reviewed there; confirming adds the journey to the list
    keyed = notes(GOOD.replace("reviewed: [emit]", "reviewed: [emit, broadcast]") + "dispel.sample_app.app:on_chat@broadcast:\n  text: x\n")
    assert ann.unreviewed([EMIT, other], keyed) == []
