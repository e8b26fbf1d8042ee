"""Layered sequence diagrams as inline SVG text, drawn in pure Python at build time (no JS, no CDN).

One column per layer of the stack (the app, Flask-SocketIO, python-socketio, python-engineio,
simple-websocket, wsproto/h11, Flask/Werkzeug, the standard library, the socket), time running
downwards, each thread a horizontal band. A call is an arrow toward the socket, a return an
arrow back; a hand-off between threads is drawn by its kind; a folded run of hops is one
labelled mark; a value's producer is joined to its user by a dotted curve. Labels are wrapped,
never cut. Text and strokes use ``currentColor``, so the page's light or dark scheme colours them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from html import escape

from ..model import (
    EDGE_CALL,
    EDGE_DATA,
    EDGE_ENTRY,
    EDGE_QUEUE,
    EDGE_RETURN,
    EDGE_THREAD_START,
    EDGE_WAKE,
    JOIN_PARSED,
    JOIN_RESULT,
    JOIN_STORED,
    JOIN_YIELD,
    DispelError,
)

# The layers, from the app down to the socket: (column title, distributions drawn in it).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("the app", ("sample_app",)),
    ("Flask-SocketIO", ("flask-socketio",)),
    ("python-socketio", ("python-socketio",)),
    ("python-engineio", ("python-engineio",)),
    ("redis-py", ("redis",)),
    ("simple-websocket", ("simple-websocket",)),
    ("wsproto / h11", ("wsproto", "h11")),
    ("Flask / Werkzeug", ("flask", "werkzeug")),
    ("standard library", ("python",)),
    ("socket (C)", ("builtin",)),
)
OTHER_LAYER = "other libraries"
LAYER_ORDER = (*(t for t, _ in LAYERS), OTHER_LAYER)

# Geometry, in SVG user units (drawn at natural size; the page scrolls it sideways).
BAND_LABEL = 120  # room left of the first column for the thread names
COLUMN = 150
MARGIN = 16
HEAD = 46
LINE = 14  # height of one line of label text
ROW_PAD = 10
WRAP = 28  # characters per label line
LEGEND = 92

# How each kind of edge looks. Cross-thread edges stand out from calls and returns, and from
# each other even in black and white: dash patterns, not only colours. The colours are mid
# tones, readable on Material's white and slate backgrounds alike.
STYLES: dict[str, tuple[str, str]] = {  # edge -> (stroke colour, dash pattern)
    EDGE_THREAD_START: ("#d81b60", ""),
    EDGE_WAKE: ("#1e88e5", "7 4"),
    EDGE_DATA: ("#f4511e", "2 3"),
}
# Drawn (and in the legend) only on the pages of several processes that have one.
OPTIONAL_STYLES: dict[str, tuple[str, str]] = {EDGE_QUEUE: ("#8e24aa", "10 3 2 3")}
CROSS_EDGES = tuple(STYLES) + tuple(OPTIONAL_STYLES)
LOCAL = {EDGE_CALL: "", EDGE_RETURN: "5 4"}  # calls solid, returns dashed, in currentColor
JOIN_COLOUR = "#2e9d4f"
# A value's join, green, one dash pattern per kind (see model.JOINS).
JOIN_DASHES = {JOIN_RESULT: "6 3", JOIN_YIELD: "2 3", JOIN_STORED: "9 3 2 3", JOIN_PARSED: "1 3"}


@dataclass(frozen=True)
class Row:
    """One row of the diagram: a hop entry, or a folded run of hops drawn as one mark."""

    thread: str
    layers: tuple[str, ...]  # the layer of a hop; every layer a folded run touches
    label: str  # full text: wrapped, never cut
    edge: str  # how the chain reached it from the previous row (a model.EDGES name)
    href: str = ""  # where the label links to (an anchor on the same page)
    folded: bool = False
    exit: str = ""  # a folded run: the layer of its last hop, where the next arrow starts

    @property
    def start(self) -> str:
        return self.layers[0]

    @property
    def end(self) -> str:
        return self.exit or self.layers[0]


@dataclass(frozen=True)
class Link:
    """A value's producer (row index) joined to the row that used it."""

    producer: int
    user: int
    kind: str


def layer_of(dist: str) -> str:
    for title, dists in LAYERS:
        if dist in dists:
            return title
    return OTHER_LAYER


def wrap(text: str, width: int = WRAP) -> list[str]:
    """Lines of at most ``width`` characters where possible, broken after '.', '_', ' ' or '>';
    a longer unbreakable piece is split, never cut."""
    pieces = re.findall(r"[^. >]*[. >]?", text)
    lines: list[str] = []
    line = ""
    for piece in (p for p in pieces if p):
        while len(piece) > width:
            if line:
                lines.append(line)
                line = ""
            lines.append(piece[:width])
            piece = piece[width:]
        if len(line) + len(piece) > width and line:
            lines.append(line)
            line = ""
        line += piece
    if line or not lines:
        lines.append(line)
    return lines


def _text(x: float, y: float, lines: list[str], *, anchor: str = "start", cls: str = "", weight: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    bold = f' font-weight="{weight}"' if weight else ""
    spans = "".join(f'<tspan x="{x:g}" dy="{0 if i == 0 else LINE}">{escape(t)}</tspan>' for i, t in enumerate(lines))
    return f'<text x="{x:g}" y="{y:g}" text-anchor="{anchor}" fill="currentColor"{klass}{bold}>{spans}</text>'


def _linked(inner: str, href: str, title: str) -> str:
    tip = f"<title>{escape(title)}</title>"
    if not href:
        return f"<g>{tip}{inner}</g>"
    return f'<a href="{escape(href)}">{tip}{inner}</a>'


def layered_svg(rows: list[Row] | tuple[Row, ...], links: list[Link] | tuple[Link, ...] = (), *, title: str = "") -> str:
    """The SVG text of a layered sequence diagram. Deterministic, and without blank lines, so
    Markdown keeps it as one raw HTML block."""
    if not rows:
        raise DispelError("a sequence diagram needs at least one row")
    known = set(LAYER_ORDER)
    for r in rows:
        for layer in r.layers:
            if layer not in known:
                raise DispelError(f"diagram row {r.label!r} names unknown layer {layer!r}")
    used = {layer for r in rows for layer in r.layers}
    columns = [t for t in LAYER_ORDER if t in used]
    col = {name: i for i, name in enumerate(columns)}
    items = [(EDGE_CALL, "currentColor", LOCAL[EDGE_CALL]), (EDGE_RETURN, "currentColor", LOCAL[EDGE_RETURN])]
    styles = {**STYLES, **{e: v for e, v in OPTIONAL_STYLES.items() if any(r.edge == e for r in rows)}}
    items += [(e, c, d) for e, (c, d) in styles.items()]
    items += [(f"value: {kind}", JOIN_COLOUR, dash) for kind, dash in JOIN_DASHES.items()]
    per_row = 5  # legend entries per line
    legend_width = MARGIN + 54 + max(
        sum(36 + 8 * len(name) + 24 for name, _, _ in items[i : i + per_row]) for i in range(0, len(items), per_row)
    )
    # One spare column for the labels of the last one; never narrower than the legend.
    width = max(BAND_LABEL + COLUMN * len(columns) + COLUMN + MARGIN, legend_width)

    def x_of(layer: str) -> float:
        return BAND_LABEL + COLUMN * col[layer] + COLUMN / 2

    labels = [wrap(r.label) for r in rows]
    heights = [max(2, len(lines)) * LINE + ROW_PAD for lines in labels]
    tops = []
    y = MARGIN + HEAD + 16
    for h in heights:
        tops.append(y)
        y += h
    bottom = y + 8
    height = bottom + LEGEND
    mid = [t + LINE for t in tops]  # where a row's dot and arrows sit

    out = [
        (f'<svg xmlns="http://www.w3.org/2000/svg" class="dispel-sequence" viewBox="0 0 {width:g} {height:g}" '
        f'width="{width:g}" height="{height:g}" role="img" aria-label="{escape(title or "sequence diagram")}" '
        f'font-family="sans-serif" font-size="12">'),
        "<defs>",
    ]
    markers = [(f"arrow-{e}", c) for e, (c, _) in sorted(styles.items())]
    markers += [("arrow-local", "currentColor"), ("arrow-join", JOIN_COLOUR)]
    for name, colour in markers:
        out.append(
            f'<marker id="{name}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
            f'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>'
        )
    out.append("</defs>")
    if title:
        out.append(f"<title>{escape(title)}</title>")
    # Thread bands: consecutive rows on one thread, shaded in turn, named on the left.
    band_start = 0
    shade = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i].thread != rows[band_start].thread:
            top = tops[band_start] - 4
            bot = tops[i] - 4 if i < len(rows) else bottom
            opacity = "0.07" if shade % 2 == 0 else "0.02"
            out.append(
                f'<rect x="0" y="{top:g}" width="{width:g}" height="{bot - top:g}" fill="currentColor" '
                f'fill-opacity="{opacity}" class="band"/>'
            )
            process, _, name = rows[band_start].thread.rpartition("/")
            if process and (band_start == 0 or rows[band_start - 1].thread.rpartition("/")[0] != process):
                # a process swimlane begins: a rule across, and the process named above the thread
                out.append(f'<line x1="0" y1="{top:g}" x2="{width:g}" y2="{top:g}" stroke="currentColor" stroke-width="2" class="process"/>')
            head = ["process " + process, "thread"] if process else ["thread"]
            out.append(_text(8, top + LINE + 2, [*head, *wrap(name, 16)], cls="thread", weight="bold"))
            shade += 1
            band_start = i
    # Column heads and lifelines.
    for name in columns:
        x = x_of(name)
        out.append(
            f'<rect x="{x - COLUMN / 2 + 6:g}" y="{MARGIN}" width="{COLUMN - 12}" height="{HEAD}" rx="6" '
            f'fill="none" stroke="currentColor"/>'
        )
        head = wrap(name, 18)
        out.append(_text(x, MARGIN + HEAD / 2 + 4 - (len(head) - 1) * LINE / 2, head, anchor="middle", cls="layer", weight="bold"))
        out.append(
            f'<line x1="{x:g}" y1="{MARGIN + HEAD}" x2="{x:g}" y2="{bottom}" stroke="currentColor" '
            f'stroke-opacity="0.3" stroke-dasharray="3 5"/>'
        )
    # Rows: the arrow that reached each one, then its dot (or folded mark) and label.
    for i, r in enumerate(rows):
        y = mid[i]
        xs = [x_of(layer) for layer in r.layers]
        x = x_of(r.start)
        prev = rows[i - 1] if i else None
        px = x_of(prev.end) if prev is not None else x
        if prev is not None and r.edge != EDGE_ENTRY:
            if r.edge in styles:
                colour, dash = styles[r.edge]
                dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
                arrow = (
                    f'<line x1="{px:g}" y1="{mid[i - 1]:g}" x2="{x:g}" y2="{y:g}" stroke="{colour}" stroke-width="2"'
                    f'{dash_attr} marker-end="url(#arrow-{r.edge})" class="edge-{escape(r.edge)}"/>'
                )
                out.append(_linked(arrow, "", f"{r.edge}: thread {prev.thread} → thread {r.thread}"))
            elif px != x:
                dash = LOCAL.get(r.edge, "")
                dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
                end = x - 5 if px < x else x + 5
                out.append(
                    f'<line x1="{px:g}" y1="{y:g}" x2="{end:g}" y2="{y:g}" stroke="currentColor" stroke-width="1.3"'
                    f'{dash_attr} marker-end="url(#arrow-local)" class="edge-{escape(r.edge)}"/>'
                )
        came_from_right = prev is not None and r.edge != EDGE_ENTRY and px > x
        if r.folded:
            left, right = min(xs) - 14, max(xs) + 14
            box_h = heights[i] - 6
            mark = (
                f'<rect x="{left:g}" y="{tops[i]:g}" width="{right - left:g}" height="{box_h:g}" rx="8" '
                f'fill="currentColor" fill-opacity="0.08" stroke="currentColor" stroke-dasharray="4 3" class="folded"/>'
            )
            tx = right + 8
            out.append(_linked(mark + _text(tx, tops[i] + LINE - 1, labels[i], cls="folded-label"), r.href, r.label))
            continue
        dot = f'<circle cx="{x:g}" cy="{y:g}" r="4.5" fill="currentColor"/>'
        tx, anchor = (x - 9, "end") if came_from_right else (x + 9, "start")
        out.append(_linked(dot + _text(tx, y + 4, labels[i], anchor=anchor), r.href, r.label))
    # Joins: from a producer's dot to its user's, curving out to the left (labels sit on the right).
    for link in links:
        a, b = rows[link.producer], rows[link.user]
        x1, y1, x2, y2 = x_of(a.start), mid[link.producer], x_of(b.start), mid[link.user]
        bulge = min(x1, x2) - 40 - min(40, (y2 - y1) / 8)
        path = (
            f'<path d="M{x1 - 5:g},{y1:g} C{bulge:g},{y1:g} {bulge:g},{y2:g} {x2 - 6:g},{y2:g}" fill="none" '
            f'stroke="{JOIN_COLOUR}" stroke-width="2" stroke-dasharray="{JOIN_DASHES.get(link.kind, "1 3")}" '
            f'marker-end="url(#arrow-join)" class="join-{escape(link.kind)}"/>'
        )
        out.append(_linked(path, "", f"value ({link.kind}): {a.label} → {b.label}"))
    # Legend.
    ly = bottom + 24
    out.append(_text(MARGIN, ly, ["edges:"], weight="bold"))
    for i in range(0, len(items), per_row):
        lx = MARGIN + 54
        for name, colour, dash in items[i : i + per_row]:
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 30}" y2="{ly - 4}" stroke="{colour}" stroke-width="2"{dash_attr}/>')
            out.append(_text(lx + 36, ly, [name]))
            lx += 36 + 8 * len(name) + 24
        ly += 22
    fy = ly + 2
    out.append(
        f'<rect x="{MARGIN + 54}" y="{fy - 12}" width="30" height="14" rx="4" fill="currentColor" fill-opacity="0.08" '
        f'stroke="currentColor" stroke-dasharray="4 3"/>'
    )
    out.append(_text(MARGIN + 90, fy, ["hops folded on the page: click to open them"]))
    out.append("</svg>")
    return "\n".join(out)
