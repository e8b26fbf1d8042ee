"""The layered SVG sequence diagram: well-formed, escaped, deterministic, one column per layer,
threads as bands, hand-offs styled apart, labels wrapped and never cut, folded runs as one mark."""
from __future__ import annotations

import functools
import json
import re
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
from dispel.render.diagram import (
    LAYERS,
    STYLES,
    JoinArc,
    Row,
    layer_of,
    layered_svg,
    wrap,
)
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
    svg = layered_svg(ROWS, [JoinArc(1, 4, "result")], title="t <&>")
    assert svg == layered_svg(ROWS, [JoinArc(1, 4, "result")], title="t <&>")
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
    lines = {el.get("class"): el for el in root.iter(SVG + "path") if (el.get("class") or "").startswith("edge-")}
    assert {f"edge-{e}" for e in (EDGE_THREAD_START, EDGE_WAKE, EDGE_DATA, EDGE_CALL, EDGE_RETURN)} <= set(lines)
    looks = {(lines[f"edge-{e}"].get("stroke"), lines[f"edge-{e}"].get("stroke-dasharray")) for e in STYLES}
    assert len(looks) == 3
    assert lines["edge-return"].get("stroke-dasharray") and not lines["edge-call"].get("stroke-dasharray")


def test_folded_run_is_one_linked_mark_and_joins_are_drawn():
    root = parse(layered_svg(ROWS, [JoinArc(1, 4, "yield")]))
    marks = [r for r in root.iter(SVG + "rect") if r.get("class") == "folded"]
    assert len(marks) == 1
    assert [a.get("href") for a in root.iter(SVG + "a")] == ["#hop-1", "#hop-2", "#hop-3", "#hop-10", "#hop-11", "#hop-13"]
    assert [p.get("class") for p in root.iter(SVG + "path") if (p.get("class") or "").startswith("join-")] == ["join-yield"]


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
    numbers = fold.page_numbers(chain)
    assert {f"#hop-{numbers[j.producer]}" for j in chain.joins} <= hrefs  # every producer is a row of its own


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


# ------------------------------------------------------------------ arrows from the recorded caller


def page_svg(text: str) -> ET.Element:
    """The diagram of a generated journey page."""
    start = text.index('<div class="dispel-diagram" markdown="0">\n') + len('<div class="dispel-diagram" markdown="0">\n')
    return parse(text[start : text.index("\n</div>", start)])


def expected_source(chain, events, k: int) -> int:
    """The hop (1-based) an arrow into hop k must leave, found from the trace, not from the chain's
    order: for a call, the hop of its recorded caller (the event's parent); for a return, the hop of
    the call that returned (an event whose parent is hop k's); for a hand-off, the hop before it."""
    hop = chain.hops[k - 1]
    earlier = range(k - 1, 0, -1)
    if hop.edge == EDGE_CALL:
        parent = events[hop.event].parent
        return next((j for j in earlier if chain.hops[j - 1].event == parent), 0)
    if hop.edge == EDGE_RETURN:
        return next((j for j in earlier if events[chain.hops[j - 1].event].parent == hop.event), 0)
    return k - 1


def arrow_problems(chain, events, root: ET.Element) -> list[str]:
    """Every arrow of a drawn diagram whose start is not the row and column of the hop it must
    leave (expected_source), and every row reached by an edge that has no arrow."""
    heads = {"".join(t.itertext()): float(t.get("x")) for t in root.iter(SVG + "text") if t.get("class") == "layer"}
    rows = [el for el in root.iter() if el.get("data-hops")]
    row_of = {int(n): el for el in rows for n in el.get("data-hops").split()}
    arrows = {int(p.get("data-hop")): p for p in root.iter(SVG + "path") if p.get("data-hop")}
    problems = []
    for el in rows:
        k = min(int(n) for n in el.get("data-hops").split())
        hop = chain.hops[k - 1]
        if hop.edge == EDGE_ENTRY:
            continue
        j = expected_source(chain, events, k)
        if k not in arrows or not j:
            problems.append(f"hop {k} {hop.func.qualname}: no arrow, or no recorded source")
            continue
        sx, sy = (float(v) for v in re.match(r"M([-\d.]+),([-\d.]+)", arrows[k].get("d")).groups())
        want = (heads[layer_of(chain.hops[j - 1].func.source.dist)], float(row_of[j].get("data-mid")))
        if (sx, sy) != want:
            problems.append(f"hop {k} {hop.func.qualname} ({hop.edge}): arrow leaves {sx:g},{sy:g}, not hop {j} at {want[0]:g},{want[1]:g}")
    return problems


@functools.cache
def journeys_and_events() -> tuple:
    """Every committed chain, with the events of the trace it was built from."""
    from dispel.chains import build as chain_build
    from dispel.project import Project, load_traces

    traces = load_traces(Project())
    out = []
    for path in sorted((ROOT / "traces" / "chains").glob("*.json")):
        chain = chain_from_dict(json.loads(path.read_text()))
        trace, _ = chain_build.scenario_trace(traces, chain.scenario)
        out.append((chain, trace.events))
    return tuple(out)


def test_every_arrow_leaves_its_recorded_caller_on_every_page():
    seen = 0
    for chain, events in journeys_and_events():
        root = page_svg((ROOT / "docs" / "chains" / f"{chain.journey}.md").read_text(encoding="utf-8"))
        assert arrow_problems(chain, events, root) == [], chain.journey
        seen += 1
    assert seen >= 10


def test_emit_socket_send_arrow_leaves_simple_websocket():
    chain, _events = next((c, e) for c, e in journeys_and_events() if c.journey == "emit")
    root = page_svg((ROOT / "docs" / "chains" / "emit.md").read_text(encoding="utf-8"))
    heads = {"".join(t.itertext()): float(t.get("x")) for t in root.iter(SVG + "text") if t.get("class") == "layer"}
    k = next(n for n, h in enumerate(chain.hops, 1) if h.func.qualname == "socket.send" and h.edge == EDGE_CALL)
    arrow = next(p for p in root.iter(SVG + "path") if p.get("data-hop") == str(k))
    assert arrow.get("class") == "edge-call"
    assert float(re.match(r"M([-\d.]+),", arrow.get("d")).group(1)) == heads["simple-websocket"]


def test_arrows_from_the_previous_row_are_caught(monkeypatch):
    """The caller check fails on the old drawing (every arrow from the row above)."""
    from dataclasses import replace

    chain, events = next((c, e) for c, e in journeys_and_events() if c.journey == "emit")
    drawn = render.layered_svg
    monkeypatch.setattr(render, "layered_svg", lambda rows, links, **kw: drawn([replace(r, source=None, source_layer="") for r in rows], links, **kw))
    html = render.diagram(chain, fold.groups(chain))
    problems = arrow_problems(chain, events, parse(html.split("\n", 1)[1].rsplit("\n</div>", 1)[0]))
    assert any("socket.send" in p for p in problems), problems


def test_a_deep_stack_fits_the_column_with_no_label_past_the_edge():
    """Nine layers (the most a journey page uses) at most FIT wide, never scaled; every label
    wrapped to lie inside the drawing by the width estimate (the browser test measures it)."""
    from dispel.render.diagram import CHAR, FIT, LAYER_ORDER

    layers = [t for t, _ in LAYERS if t != "redis-py"]
    rows = [Row("main", (layers[0],), "1 handler", EDGE_ENTRY, "#hop-1", hops=(1,), hop=1)]
    for n, layer in enumerate(layers[1:] + layers[-2::-1], 2):
        rows.append(Row("main", (layer,), f"{n} Something.rather_long_method_name_{n}", EDGE_CALL, f"#hop-{n}", hops=(n,), hop=n, source=n - 2, source_layer=rows[-1].start))
    svg = layered_svg(rows)
    root = parse(svg)
    width = float(root.get("width"))
    assert width <= FIT and root.get("viewBox") == f"0 0 {root.get('width')} {root.get('height')}"
    for t in root.iter(SVG + "text"):
        if t.get("class") != "hop":
            continue
        x, longest = float(t.get("x")), max(len(s.text or "") for s in t)
        left, right = (x - CHAR * longest, x) if t.get("text-anchor") == "end" else (x, x + CHAR * longest)
        assert 0 <= left and right <= width, "".join(t.itertext())
    assert len(LAYER_ORDER) - 2 == len(layers)


def test_an_arrow_from_a_later_row_is_an_error():
    with pytest.raises(DispelError, match="not an earlier row"):
        layered_svg([Row("main", ("the app",), "1 a", EDGE_ENTRY), Row("main", ("the app",), "2 b", EDGE_CALL, source=1)])
