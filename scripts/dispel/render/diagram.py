"""Layered sequence diagrams as inline SVG text, drawn in pure Python at build time (no JS, no CDN).

One column per layer of the stack that the page uses (the app, Flask-SocketIO, python-socketio,
python-engineio, simple-websocket, wsproto/h11, Flask/Werkzeug, the standard library, the socket),
time running downwards, each thread a horizontal band. Every arrow leaves the row and column of
the hop it came from (a call from its caller, a return from the call that returned, a hand-off
from the hop that made it), down that hop's column and across; a folded run of hops is one
labelled mark; a value's producer is joined to its user by a dotted curve. The columns narrow so
that the diagram fits ``FIT`` pixels (a journey page's content column) at its natural size, with
12 px labels that are wrapped, never cut, on the side of their dot with room. Text and strokes use
``currentColor``, so the page's light or dark scheme colours them.
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

# Geometry, in SVG user units, drawn at natural size (one unit one CSS pixel: never scaled down).
FIT = 920  # the width to fit: a journey page's content column at a 1400 px window (its table of contents hidden)
BAND_LABEL = 112  # room left of the first column for the thread names
COLUMN = 150  # the widest a column gets
MIN_COLUMN = 78  # the narrowest: its head still fits, in two lines
SPARE = 84  # room right of the last column, for the labels of its hops
MARGIN = 16
HEAD = 46
LINE = 14  # height of one line of label text
ROW_PAD = 10
WRAP = 28  # characters per label line, at most
FOLDED_WRAP = 20  # the same for a folded run's (longer) title
MIN_WRAP = 12  # a side of the dot with room for fewer characters than this is not used when the other has more
CHAR = 7.3  # the width of one character of a 12 px label, a little above DejaVu Sans's average
BOLD_CHAR = 8.0
HEAD_SIZE = 11  # the column heads' font size

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
    exit: str = ""  # a folded run: the layer of its last hop, where the next arrow starts (when no source is given)
    hops: tuple[int, ...] = ()  # the chain's hop numbers the row stands for (written as data-hops)
    hop: int = 0  # the chain's hop number that the edge reached (written on the arrow as data-hop)
    source: int | None = None  # the row of the hop the edge came from (None: the previous row, at its exit)
    source_layer: str = ""  # the layer of that hop: the column the arrow leaves

    @property
    def start(self) -> str:
        return self.layers[0]

    @property
    def end(self) -> str:
        return self.exit or self.layers[0]


@dataclass(frozen=True)
class JoinArc:
    """A value's producer (row index) joined to the row that used it."""

    producer: int
    user: int
    kind: str


def layer_of(dist: str) -> str:
    for title, dists in LAYERS:
        if dist in dists:
            return title
    return OTHER_LAYER


def wrap(text: str, width: int = WRAP, breaks: str = ". >") -> list[str]:
    """Lines of at most ``width`` characters where possible, broken after one of ``breaks``
    (by default '.', ' ' or '>'); a longer unbreakable piece is split, never cut."""
    cls = re.escape(breaks)
    pieces = re.findall(rf"[^{cls}]*[{cls}]?", text)
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


def _text(x: float, y: float, lines: list[str], *, anchor: str = "start", cls: str = "", weight: str = "", size: int = 0) -> str:
    klass = f' class="{cls}"' if cls else ""
    bold = f' font-weight="{weight}"' if weight else ""
    font = f' font-size="{size}"' if size else ""
    spans = "".join(f'<tspan x="{x:g}" dy="{0 if i == 0 else LINE}">{escape(t)}</tspan>' for i, t in enumerate(lines))
    return f'<text x="{x:g}" y="{y:g}" text-anchor="{anchor}" fill="currentColor"{klass}{bold}{font}>{spans}</text>'


def _linked(inner: str, href: str, title: str, data: str = "") -> str:
    tip = f"<title>{escape(title)}</title>"
    if not href:
        return f"<g{data}>{tip}{inner}</g>"
    return f'<a href="{escape(href)}"{data}>{tip}{inner}</a>'


def _chars(room: float) -> int:
    """How many label characters fit in ``room`` pixels."""
    return int(room // CHAR)


@dataclass(frozen=True)
class _Place:
    """Where a row's label goes: its anchor x, text-anchor, and its wrapped lines."""

    x: float
    anchor: str
    lines: list[str]
    below: bool = False  # on the side the arrow comes in: set a line lower, under the arrow


def _side(label: str, rooms: list[tuple[float, str, float, bool]], enough: int = MIN_WRAP) -> _Place:
    """The label on the first of ``rooms`` (x, anchor, pixels, whether the arrow comes in on that
    side) with room for ``enough`` characters, else on the roomiest; wrapped to the room it has
    (WRAP characters at most)."""
    chosen = next((r for r in rooms if _chars(r[2]) >= enough), max(rooms, key=lambda r: r[2]))
    x, anchor, room, clash = chosen
    return _Place(x, anchor, wrap(label, max(6, min(WRAP, _chars(room)))), clash)


def _check_rows(rows: list[Row] | tuple[Row, ...]) -> None:
    if not rows:
        raise DispelError("a sequence diagram needs at least one row")
    known = set(LAYER_ORDER)
    for i, r in enumerate(rows):
        for layer in (*r.layers, *((r.source_layer,) if r.source_layer else ())):
            if layer not in known:
                raise DispelError(f"diagram row {r.label!r} names unknown layer {layer!r}")
        if r.source is not None and not 0 <= r.source < i:
            raise DispelError(f"diagram row {r.label!r} comes from row {r.source}, which is not an earlier row")


@dataclass(frozen=True)
class _Layout:
    """Where everything of one diagram goes, computed once (layered_svg draws from it)."""

    rows: tuple[Row, ...]
    columns: tuple[str, ...]
    column: float  # one column's width
    spare: float
    width: float
    styles: dict[str, tuple[str, str]]  # the edge kinds drawn as styled arrows (the others are local calls)
    legend: tuple[tuple[tuple[str, str, str], ...], ...]  # rows of (name, colour, dash)
    sources: tuple[tuple[int, float] | None, ...]  # each row's arrow: from (row, x), or none
    places: tuple[_Place, ...]  # each row's label
    heights: tuple[float, ...]
    tops: tuple[float, ...]
    bottom: float
    height: float

    def x_of(self, layer: str) -> float:
        return BAND_LABEL + self.column * self.columns.index(layer) + self.column / 2

    @property
    def mid(self) -> list[float]:
        """Where a row's dot and arrows sit."""
        return [t + LINE for t in self.tops]


def _layout(rows: tuple[Row, ...], fit: int) -> _Layout:
    used = {layer for r in rows for layer in r.layers}
    columns = tuple(t for t in LAYER_ORDER if t in used)
    spare = SPARE
    if (fit - BAND_LABEL - spare - MARGIN) // len(columns) < MIN_COLUMN:
        spare = 0  # the last column's labels go on the left of their dots
    column = max(MIN_COLUMN, min(COLUMN, (fit - BAND_LABEL - spare - MARGIN) // len(columns)))
    items = [(EDGE_CALL, "currentColor", LOCAL[EDGE_CALL]), (EDGE_RETURN, "currentColor", LOCAL[EDGE_RETURN])]
    styles = {**STYLES, **{e: v for e, v in OPTIONAL_STYLES.items() if any(r.edge == e for r in rows)}}
    items += [(e, c, d) for e, (c, d) in styles.items()]
    items += [(f"value: {kind}", JOIN_COLOUR, dash) for kind, dash in JOIN_DASHES.items()]
    width = BAND_LABEL + column * len(columns) + spare + MARGIN

    def x_of(layer: str) -> float:
        return BAND_LABEL + column * columns.index(layer) + column / 2

    # Where each arrow starts: the hop it came from (its row and column), or the previous row.
    sources: list[tuple[int, float] | None] = []
    for i, r in enumerate(rows):
        if i == 0 or r.edge == EDGE_ENTRY:
            sources.append(None)
        elif r.source is not None:
            came = rows[r.source]
            sources.append((r.source, x_of(r.source_layer or came.end)))
        else:
            sources.append((i - 1, x_of(rows[i - 1].end)))
    right_edge = width - MARGIN
    places = [_label_place(r, sources[i], x_of, right_edge, styles) for i, r in enumerate(rows)]
    heights = [max(2, len(p.lines) + p.below) * LINE + ROW_PAD for p in places]
    tops = []
    y = MARGIN + HEAD + 16
    for h in heights:
        tops.append(y)
        y += h
    bottom = y + 8
    # The legend, wrapped to the width.
    legend_rows: list[list[tuple[str, str, str]]] = [[]]
    lx: float = MARGIN + 54
    for item in items:
        step = 36 + CHAR * len(item[0]) + 20
        if legend_rows[-1] and lx + step > right_edge:
            legend_rows.append([])
            lx = MARGIN + 54
        legend_rows[-1].append(item)
        lx += step
    height = bottom + 24 + 22 * len(legend_rows) + 14
    return _Layout(rows, columns, column, spare, width, styles, tuple(tuple(r) for r in legend_rows), tuple(sources),
                   tuple(places), tuple(heights), tuple(tops), bottom, height)


def _label_place(r: Row, src: tuple[int, float] | None, x_of, right_edge: float, styles: dict) -> _Place:
    """Each label on the side of its dot (or folded mark) with room, away from the arrow that reaches it."""
    x = x_of(r.start)
    local = src is not None and r.edge not in styles and src[1] != x
    from_right = local and src is not None and src[1] > x
    if r.folded:
        xs = [x_of(layer) for layer in r.layers]
        left, right = min(xs) - 14, max(xs) + 14
        rooms = [
            (right + 8, "start", right_edge - right - 8, from_right),
            (left - 8, "end", left - 8 - BAND_LABEL, local and not from_right),
            (left + 8, "start", right - left - 16, local),
        ]
        return _side(r.label, rooms, enough=FOLDED_WRAP)
    rights = (x + 9, "start", right_edge - x - 9, from_right)
    lefts = (x - 9, "end", x - 9 - BAND_LABEL, local and not from_right)
    return _side(r.label, [lefts, rights] if from_right else [rights, lefts])


def _head(lay: _Layout, title: str) -> list[str]:
    out = [
        (f'<svg xmlns="http://www.w3.org/2000/svg" class="dispel-sequence" viewBox="0 0 {lay.width:g} {lay.height:g}" '
        f'width="{lay.width:g}" height="{lay.height:g}" role="img" aria-label="{escape(title or "sequence diagram")}" '
        f'font-family="sans-serif" font-size="12">'),
        "<defs>",
    ]
    markers = [(f"arrow-{e}", c) for e, (c, _) in sorted(lay.styles.items())]
    markers += [("arrow-local", "currentColor"), ("arrow-join", JOIN_COLOUR)]
    for name, colour in markers:
        out.append(
            f'<marker id="{name}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
            f'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>'
        )
    out.append("</defs>")
    if title:
        out.append(f"<title>{escape(title)}</title>")
    return out


def _bands(lay: _Layout, lane: str = "thread") -> list[str]:
    """Thread bands: consecutive rows on one thread (``lane``: or greenlet), shaded in turn, named on the left."""
    rows, tops, out = lay.rows, lay.tops, []
    band_start = 0
    shade = 0
    name_chars = max(8, int((BAND_LABEL - 12) // BOLD_CHAR))
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i].thread != rows[band_start].thread:
            top = tops[band_start] - 4
            bot = tops[i] - 4 if i < len(rows) else lay.bottom
            opacity = "0.07" if shade % 2 == 0 else "0.02"
            out.append(
                f'<rect x="0" y="{top:g}" width="{lay.width:g}" height="{bot - top:g}" fill="currentColor" '
                f'fill-opacity="{opacity}" class="band"/>'
            )
            process, _, name = rows[band_start].thread.rpartition("/")
            if process and (band_start == 0 or rows[band_start - 1].thread.rpartition("/")[0] != process):
                # a process swimlane begins: a rule across, and the process named above the thread
                out.append(f'<line x1="0" y1="{top:g}" x2="{lay.width:g}" y2="{top:g}" stroke="currentColor" stroke-width="2" class="process"/>')
            head = [*wrap("process " + process, name_chars, " -"), lane] if process else [lane]
            out.append(_text(8, top + LINE + 2, [*head, *wrap(name, name_chars, " -")], cls="thread", weight="bold"))
            shade += 1
            band_start = i
    return out


def _lifelines(lay: _Layout) -> list[str]:
    """Column heads and lifelines."""
    out = []
    column = lay.column
    head_chars = max(6, int((column - 10) // (BOLD_CHAR * HEAD_SIZE / 12)))
    for name in lay.columns:
        x = lay.x_of(name)
        out.append(
            f'<rect x="{x - column / 2 + 3:g}" y="{MARGIN}" width="{column - 6:g}" height="{HEAD}" rx="6" '
            f'fill="none" stroke="currentColor"/>'
        )
        head = wrap(name, head_chars, " -/")
        out.append(_text(x, MARGIN + HEAD / 2 + 4 - (len(head) - 1) * LINE / 2, head, anchor="middle", cls="layer", weight="bold", size=HEAD_SIZE))
        out.append(
            f'<line x1="{x:g}" y1="{MARGIN + HEAD}" x2="{x:g}" y2="{lay.bottom}" stroke="currentColor" '
            f'stroke-opacity="0.3" stroke-dasharray="3 5"/>'
        )
    return out


def _joins(lay: _Layout, links: list[JoinArc] | tuple[JoinArc, ...]) -> list[str]:
    """Joins: from a producer's dot to its user's, curving out to the left."""
    out, mid = [], lay.mid
    for link in links:
        a, b = lay.rows[link.producer], lay.rows[link.user]
        x1, y1, x2, y2 = lay.x_of(a.start), mid[link.producer], lay.x_of(b.start), mid[link.user]
        bulge = max(MARGIN, min(x1, x2) - 40 - min(40, (y2 - y1) / 8))
        path = (
            f'<path d="M{x1 - 5:g},{y1:g} C{bulge:g},{y1:g} {bulge:g},{y2:g} {x2 - 6:g},{y2:g}" fill="none" '
            f'stroke="{JOIN_COLOUR}" stroke-width="2" stroke-dasharray="{JOIN_DASHES.get(link.kind, "1 3")}" '
            f'marker-end="url(#arrow-join)" class="join-{escape(link.kind)}"/>'
        )
        out.append(_linked(path, "", f"value ({link.kind}): {a.label} → {b.label}"))
    return out


def _arrows(lay: _Layout) -> list[str]:
    """The arrow that reached each row, from the row and column of the hop it came from (drawn
    before the dots and labels, so that they lie on top)."""
    out, mid, rows, styles = [], lay.mid, lay.rows, lay.styles
    for i, r in enumerate(rows):
        src = lay.sources[i]
        if src is None:
            continue
        y, x = mid[i], lay.x_of(r.start)
        hop_attr = f' data-hop="{r.hop}"' if r.hop else ""
        row, sx = src
        sy = mid[row]
        if r.edge in styles:
            colour, dash = styles[r.edge]
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            arrow = (
                f'<path d="M{sx:g},{sy:g} L{x:g},{y:g}" fill="none" stroke="{colour}" stroke-width="2"'
                f'{dash_attr} marker-end="url(#arrow-{r.edge})" class="edge-{escape(r.edge)}"{hop_attr}/>'
            )
            out.append(_linked(arrow, "", f"{r.edge}: thread {rows[row].thread} → thread {r.thread}"))
            continue
        dash = LOCAL.get(r.edge, "")
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        if sx != x:  # down the source's column, then across to this hop
            end = x - 5 if sx < x else x + 5
            d = f"M{sx:g},{sy:g} V{y:g} H{end:g}"
        else:  # the same column: straight down to this hop
            d = f"M{sx:g},{sy:g} V{y - 6:g}"
        out.append(
            f'<path d="{d}" fill="none" stroke="currentColor" stroke-width="1.3"'
            f'{dash_attr} marker-end="url(#arrow-local)" class="edge-{escape(r.edge)}"{hop_attr}/>'
        )
    return out


def _marks(lay: _Layout) -> list[str]:
    """Each row's dot (or folded mark) and label."""
    out, mid, tops = [], lay.mid, lay.tops
    for i, r in enumerate(lay.rows):
        y, x, place = mid[i], lay.x_of(r.start), lay.places[i]
        data = f' data-mid="{y:g}"' + (f' data-hops="{" ".join(map(str, r.hops))}"' if r.hops else "")
        if r.folded:
            xs = [lay.x_of(layer) for layer in r.layers]
            left, right = min(xs) - 14, max(xs) + 14
            box_h = lay.heights[i] - 6
            mark = (
                f'<rect x="{left:g}" y="{tops[i]:g}" width="{right - left:g}" height="{box_h:g}" rx="8" '
                f'fill="currentColor" fill-opacity="0.08" stroke="currentColor" stroke-dasharray="4 3" class="folded"/>'
            )
            label = _text(place.x, tops[i] + LINE - 1 + (LINE if place.below else 0), place.lines, anchor=place.anchor, cls="folded-label")
            out.append(_linked(mark + label, r.href, r.label, data))
            continue
        dot = f'<circle cx="{x:g}" cy="{y:g}" r="4.5" fill="currentColor"/>'
        text_y = y + 4 + (LINE if place.below else 0)
        out.append(_linked(dot + _text(place.x, text_y, place.lines, anchor=place.anchor, cls="hop"), r.href, r.label, data))
    return out


def _legend(lay: _Layout) -> list[str]:
    ly = lay.bottom + 24
    out = [_text(MARGIN, ly, ["edges:"], weight="bold")]
    for line in lay.legend:
        lx: float = MARGIN + 54
        for name, colour, dash in line:
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(f'<line x1="{lx:g}" y1="{ly - 4}" x2="{lx + 30:g}" y2="{ly - 4}" stroke="{colour}" stroke-width="2"{dash_attr}/>')
            out.append(_text(lx + 36, ly, [name]))
            lx += 36 + CHAR * len(name) + 20
        ly += 22
    fy = ly + 2
    out.append(
        f'<rect x="{MARGIN + 54}" y="{fy - 12}" width="30" height="14" rx="4" fill="currentColor" fill-opacity="0.08" '
        f'stroke="currentColor" stroke-dasharray="4 3"/>'
    )
    out.append(_text(MARGIN + 90, fy, ["hops folded on the page: click to open them"]))
    return out


def layered_svg(
    rows: list[Row] | tuple[Row, ...], links: list[JoinArc] | tuple[JoinArc, ...] = (), *, title: str = "", fit: int = FIT,
    lane: str = "thread",
) -> str:
    """The SVG text of a layered sequence diagram, at most ``fit`` pixels wide when its columns
    can narrow that far (MIN_COLUMN). Deterministic, and without blank lines, so Markdown keeps
    it as one raw HTML block."""
    _check_rows(rows)
    lay = _layout(tuple(rows), fit)
    out = _head(lay, title) + _bands(lay, lane) + _lifelines(lay) + _joins(lay, links) + _arrows(lay) + _marks(lay) + _legend(lay)
    return "\n".join([*out, "</svg>"])
