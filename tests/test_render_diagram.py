"""The layered SVG sequence diagram: well-formed, escaped, deterministic, one column per layer,
threads as bands, hand-offs styled apart, labels wrapped and never cut, folded runs as one mark."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from dispel.chains import fold
from dispel.model import (
    EDGE_CALL,
    EDGE_DATA,
    EDGE_ENTRY,
    EDGE_RETURN,
    EDGE_THREAD_START,
    EDGE_WAKE,
    DispelError,
)
from dispel.render import pages as render
from dispel.render.diagram import LAYERS, STYLES, Link, Row, layer_of, layered_svg, wrap
from dispel.tracefiles.codec import chain_from_dict

ROOT = Path(__file__).resolve().parents[1]
SVG = "{http://www.w3.org/2000/svg}"
ROWS = [
    Row("main", ("the app",), "1 run", EDGE_ENTRY, "#hop-1"),
    Row("main", ("python-socketio",), "2 Server.emit", EDGE_CALL, "#hop-2"),
    Row("main", ("python-socketio", "standard library"), "hops 3–9: 7 calls in python-socketio", EDGE_CALL, "#hop-3", folded=True, exit="standard library"),
    Row("server", ("standard library",), '10 <b>hi</b> & "q"', EDGE_THREAD_START, "#hop-10"),
    Row("writer", ("standard library",), "11 Condition.wait", EDGE_WAKE, "#hop-11"),
    Row("writer", ("python-engineio",), "12 Socket.poll", EDGE_RETURN),
    Row("other", ("socket (C)",), "13 " + "z" * 200, EDGE_DATA, "#hop-13"),
]


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(SVG + "text")]


def test_svg_is_well_formed_and_deterministic():
    svg = layered_svg(ROWS, [Link(1, 4, "result")], title="t <&>")
    assert svg == layered_svg(ROWS, [Link(1, 4, "result")], title="t <&>")
    assert parse(svg).tag == SVG + "svg"
    assert "\n\n" not in svg  # one raw HTML block in Markdown


def test_labels_are_escaped_text_wrapped_and_never_cut():
    root = parse(layered_svg(ROWS))
    shown = texts(root)
    assert '10 <b>hi</b> & "q"' in shown  # round-trips as text: escaped, not markup
    assert not list(root.iter(SVG + "b"))
    assert not any(t.endswith("…") for t in shown)
    long = next(t for t in root.iter(SVG + "text") if "".join(t.itertext()).startswith("13 "))
    assert "".join(long.itertext()) == "13 " + "z" * 200 and len(list(long)) > 5  # wrapped into tspans


def test_wrap_breaks_at_dots_and_keeps_every_character():
    assert wrap("BaseManager.get_participants", 14) == ["BaseManager.", "get_participan", "ts"]
    text = "H11Handshake._process_connection_request"
    assert "".join(wrap(text, 10)) == text and all(len(x) <= 10 for x in wrap(text, 10))


def test_one_column_per_layer_in_stack_order():
    root = parse(layered_svg(ROWS))
    heads = ["".join(t.itertext()) for t in root.iter(SVG + "text") if t.get("class") == "layer"]
    order = [t for t, _ in LAYERS]
    assert heads == sorted(heads, key=lambda h: order.index(h))
    assert heads[0] == "the app" and heads[-1] == "socket (C)"
    assert layer_of("h11") == layer_of("wsproto") == "wsproto / h11" and layer_of("nope") == "other libraries"


def test_threads_are_named_bands():
    root = parse(layered_svg(ROWS))
    bands = [r for r in root.iter(SVG + "rect") if r.get("class") == "band"]
    assert len(bands) == 4  # main, server, writer, other
    names = ["".join(t.itertext()) for t in root.iter(SVG + "text") if t.get("class") == "thread"]
    assert names == ["threadmain", "threadserver", "threadwriter", "threadother"]


def test_hand_offs_styled_apart_calls_and_returns_local():
    root = parse(layered_svg(ROWS))
    lines = {el.get("class"): el for el in root.iter(SVG + "line") if (el.get("class") or "").startswith("edge-")}
    assert {f"edge-{e}" for e in (EDGE_THREAD_START, EDGE_WAKE, EDGE_DATA, EDGE_CALL, EDGE_RETURN)} <= set(lines)
    looks = {(lines[f"edge-{e}"].get("stroke"), lines[f"edge-{e}"].get("stroke-dasharray")) for e in STYLES}
    assert len(looks) == 3
    assert lines["edge-return"].get("stroke-dasharray") and not lines["edge-call"].get("stroke-dasharray")


def test_folded_run_is_one_linked_mark_and_joins_are_drawn():
    root = parse(layered_svg(ROWS, [Link(1, 4, "yield")]))
    marks = [r for r in root.iter(SVG + "rect") if r.get("class") == "folded"]
    assert len(marks) == 1
    assert [a.get("href") for a in root.iter(SVG + "a")] == ["#hop-1", "#hop-2", "#hop-3", "#hop-10", "#hop-11", "#hop-13"]
    assert [p.get("class") for p in root.iter(SVG + "path") if p.get("class")] == ["join-yield"]


def test_bad_rows_are_errors():
    with pytest.raises(DispelError, match="unknown layer 'nowhere'"):
        layered_svg([Row("main", ("nowhere",), "x", EDGE_CALL)])
    with pytest.raises(DispelError, match="at least one row"):
        layered_svg([])


def test_emit_diagram_draws_five_distributions_and_cuts_no_label():
    chain = chain_from_dict(json.loads((ROOT / "traces" / "chains" / "emit.json").read_text()))
    html = render.diagram(chain, fold.groups(chain))
    root = parse(html.split("\n", 1)[1].rsplit("\n</div>", 1)[0])
    heads = ["".join(t.itertext()) for t in root.iter(SVG + "text") if t.get("class") == "layer"]
    assert len(heads) >= 5, heads
    assert not any(t.rstrip().endswith("…") for t in texts(root))
    hrefs = {a.get("href") for a in root.iter(SVG + "a")}
    assert {f"#hop-{j.producer}" for j in chain.joins} <= hrefs  # every producer is a row of its own


@pytest.mark.browser
@pytest.mark.parametrize("journey, scheme", [(j, s) for j in ("emit", "handshake") for s in ("light", "dark")])
def test_diagram_screenshot_in_headless_chromium(tmp_path, journey, scheme):
    """Draw a committed chain's diagram on Material's light or dark background in headless
    Chromium and keep the screenshot under test-output/ (look at it)."""
    import shutil
    import subprocess

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("no chromium")
    chain = chain_from_dict(json.loads((ROOT / "traces" / "chains" / f"{journey}.json").read_text()))
    svg = render.diagram(chain, fold.groups(chain))
    root = parse(svg.split("\n", 1)[1].rsplit("\n</div>", 1)[0])
    width, height = int(float(root.get("width"))), int(float(root.get("height")))
    bg, fg = {"light": ("#ffffff", "rgba(0,0,0,0.87)"), "dark": ("#1e2129", "#e2e4e9")}[scheme]
    page = tmp_path / "diagram.html"
    page.write_text(f'<!doctype html><body style="margin:0;background:{bg};color:{fg}">{svg}</body>', encoding="utf-8")
    out = ROOT / "test-output" / f"{journey}-diagram-{scheme}.png"
    out.parent.mkdir(exist_ok=True)
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars",
         f"--window-size={width},{height}", f"--screenshot={out}", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    assert out.stat().st_size > 10_000
