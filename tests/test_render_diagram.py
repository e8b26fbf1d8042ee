"""The SVG sequence diagram: well-formed, escaped, deterministic, cross-thread edges distinct."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from dispel.diagram import STYLES, Message, sequence_svg
from dispel.model import (
    EDGE_CALL,
    EDGE_DATA,
    EDGE_ENTRY,
    EDGE_THREAD_START,
    EDGE_WAKE,
    DispelError,
)

SVG = "{http://www.w3.org/2000/svg}"
MESSAGES = [
    Message("main", "main", "1 run", EDGE_ENTRY, "#hop-1"),
    Message("main", "server", "2 serve_forever", EDGE_THREAD_START, "#hop-2"),
    Message("server", "writer", "3 <b>hi</b> & \"q\"", EDGE_WAKE, "#hop-3"),
    Message("writer", "writer", "4 send", EDGE_CALL),
    Message("writer", "main", "5 " + "z" * 200, EDGE_DATA, "#hop-5"),
]


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def test_svg_is_well_formed_and_deterministic():
    svg = sequence_svg(["main", "server", "writer"], MESSAGES, title="t <&>")
    assert svg == sequence_svg(["main", "server", "writer"], MESSAGES, title="t <&>")
    root = parse(svg)
    assert root.tag == SVG + "svg"
    assert "\n\n" not in svg  # one raw HTML block in Markdown


def test_labels_are_escaped_text():
    root = parse(sequence_svg(["main", "server", "writer"], MESSAGES))
    texts = [t.text for t in root.iter(SVG + "text")]
    assert '3 <b>hi</b> & "q"' in texts  # round-trips as text: it was escaped, not markup
    assert not list(root.iter(SVG + "b"))


def test_long_labels_are_cut_but_kept_in_a_tooltip():
    root = parse(sequence_svg(["main", "server", "writer"], MESSAGES))
    assert any(t.text and t.text.endswith("…") and len(t.text) <= 34 for t in root.iter(SVG + "text"))
    assert any(t.text == "5 " + "z" * 200 for t in root.iter(SVG + "title"))


def test_cross_thread_edges_are_arrows_styled_apart():
    root = parse(sequence_svg(["main", "server", "writer"], MESSAGES))
    arrows = {line.get("class"): line for line in root.iter(SVG + "line") if line.get("class")}
    assert set(arrows) == {f"edge-{e}" for e in (EDGE_THREAD_START, EDGE_WAKE, EDGE_DATA)}
    looks = {(a.get("stroke"), a.get("stroke-dasharray")) for a in arrows.values()}
    assert len(looks) == 3, "each cross-thread edge must look different"
    assert all(a.get("marker-end") for a in arrows.values())
    assert set(STYLES) == {EDGE_THREAD_START, EDGE_WAKE, EDGE_DATA}


def test_labels_link_to_hops():
    root = parse(sequence_svg(["main", "server", "writer"], MESSAGES))
    hrefs = [a.get("href") for a in root.iter(SVG + "a")]
    assert hrefs == ["#hop-1", "#hop-2", "#hop-3", "#hop-5"]


def test_unknown_lifeline_is_an_error():
    with pytest.raises(DispelError, match="unknown lifeline 'nowhere'"):
        sequence_svg(["main"], [Message("main", "nowhere", "x", EDGE_CALL)])
    with pytest.raises(DispelError, match="at least one lifeline"):
        sequence_svg([], [])
