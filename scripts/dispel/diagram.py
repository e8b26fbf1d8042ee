"""Sequence diagrams as inline SVG text, drawn in pure Python at build time (no JS, no CDN)."""
from __future__ import annotations

from dataclasses import dataclass
from html import escape

from .model import EDGE_DATA, EDGE_THREAD_START, EDGE_WAKE, DispelError

# Geometry, in SVG user units. The SVG scales to the page width through its viewBox.
COLUMN = 240  # distance between two lifelines
MARGIN = 20
HEAD = 44  # height of a lifeline's name box
ROW = 30  # vertical distance between two messages
LEGEND = 34
MIN_WIDTH = 480
LABEL_OVERHANG = 120  # room right of the last column for the labels of its steps
LABEL_CHARS = 34  # longer labels are cut (the full text stays in a <title> tooltip)

# How each kind of edge looks. Cross-thread edges must stand out from the calls within a
# thread, and from each other, even when printed in black and white: hence dash patterns
# and not only colours.
STYLES: dict[str, tuple[str, str]] = {  # edge -> (stroke colour, dash pattern)
    EDGE_THREAD_START: ("#d81b60", ""),
    EDGE_WAKE: ("#1e88e5", "7 4"),
    EDGE_DATA: ("#f4511e", "2 3"),
}
CROSS_EDGES = tuple(STYLES)


@dataclass(frozen=True)
class Message:
    """One step of the diagram: ``label`` drawn on ``target``; an arrow when it crosses lifelines."""

    source: str  # lifeline the step comes from
    target: str  # lifeline the step happens on
    label: str
    edge: str  # a model.EDGES name
    href: str = ""  # where the step's label links to (an anchor on the same page)


def _cut(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text(x: float, y: float, text: str, *, anchor: str = "start", cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<text x="{x:g}" y="{y:g}" text-anchor="{anchor}"{klass}>{escape(text)}</text>'


def _linked(inner: str, href: str, title: str) -> str:
    """Wrap an element in a link (when there is one) with a tooltip carrying the full label."""
    tip = f"<title>{escape(title)}</title>"
    if not href:
        return f"<g>{tip}{inner}</g>"
    return f'<a href="{escape(href)}">{tip}{inner}</a>'


def sequence_svg(lifelines: list[str] | tuple[str, ...], messages: list[Message] | tuple[Message, ...], *, title: str = "") -> str:
    """An SVG sequence diagram: one column per lifeline, one row per message, top to bottom.

    Steps that stay on a lifeline are dots with a label; steps that cross to another
    lifeline are arrows styled by their edge (see ``STYLES``). The output depends only on
    the arguments and contains no blank line, so Markdown keeps it as one raw HTML block.
    """
    if not lifelines:
        raise DispelError("a sequence diagram needs at least one lifeline")
    column = {name: i for i, name in enumerate(lifelines)}
    for m in messages:
        for end in (m.source, m.target):
            if end not in column:
                raise DispelError(f"diagram message {m.label!r} names unknown lifeline {end!r}")
    # Never narrower than the legend, which is one row of fixed width.
    width = max(MARGIN * 2 + COLUMN * len(lifelines) + LABEL_OVERHANG, MIN_WIDTH)
    top = MARGIN + HEAD + ROW
    bottom = top + ROW * max(len(messages), 1)
    height = bottom + LEGEND + MARGIN

    def x_of(name: str) -> float:
        return MARGIN + COLUMN * column[name] + COLUMN / 2

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="dispel-sequence" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title or "sequence diagram")}" '
        f'font-family="sans-serif" font-size="12">',
        "<defs>",
    ]
    for edge, (colour, _) in sorted(STYLES.items()):
        out.append(
            f'<marker id="arrow-{edge}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
            f'markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>'
        )
    out.append("</defs>")
    if title:
        out.append(f"<title>{escape(title)}</title>")
    for name in lifelines:
        x = x_of(name)
        out.append(
            f'<rect x="{x - COLUMN / 2 + 10:g}" y="{MARGIN}" width="{COLUMN - 20}" height="{HEAD}" rx="6" '
            f'fill="none" stroke="currentColor"/>'
        )
        out.append(_text(x, MARGIN + HEAD / 2 + 4, _cut(f"thread {name}", 30), anchor="middle", cls="lifeline"))
        out.append(
            f'<line x1="{x:g}" y1="{MARGIN + HEAD}" x2="{x:g}" y2="{bottom}" stroke="currentColor" '
            f'stroke-opacity="0.4" stroke-dasharray="4 4"/>'
        )
    for i, m in enumerate(messages):
        y = top + ROW * i
        x1, x2 = x_of(m.source), x_of(m.target)
        label = _cut(m.label)
        if x1 != x2:
            colour, dash = STYLES.get(m.edge, ("currentColor", ""))
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            marker = f' marker-end="url(#arrow-{m.edge})"' if m.edge in STYLES else ""
            arrow = (
                f'<line x1="{x1:g}" y1="{y - ROW / 2:g}" x2="{x2:g}" y2="{y:g}" stroke="{colour}" '
                f'stroke-width="2"{dash_attr}{marker} class="edge-{escape(m.edge)}"/>'
            )
            out.append(_linked(arrow, "", f"{m.edge}: {m.source} → {m.target}"))
        dot = f'<circle cx="{x2:g}" cy="{y:g}" r="4" fill="currentColor"/>'
        # A label sits on the side of its dot that no arrow comes from: right, unless the arrow
        # arrives from the right.
        tx, anchor = (x2 - 8, "end") if x1 > x2 else (x2 + 8, "start")
        out.append(_linked(dot + _text(tx, y + 4, label, anchor=anchor), m.href, m.label))
    ly = bottom + LEGEND / 2 + 6
    out.append(_text(MARGIN, ly, "edges:"))
    lx = MARGIN + 50
    for edge, (colour, dash) in STYLES.items():
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 30}" y2="{ly - 4}" stroke="{colour}" stroke-width="2"{dash_attr}/>')
        out.append(_text(lx + 36, ly, edge))
        lx += 130
    out.append("</svg>")
    return "\n".join(out)
