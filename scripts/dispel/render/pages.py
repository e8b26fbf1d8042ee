"""Chains, links, source excerpts and annotations -> Markdown pages (pure and deterministic)."""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from html import escape

import markdown

from .. import catalog
from ..chains import fold
from ..model import (
    EDGE_ENTRY,
    Chain,
    DispelError,
    Func,
    Hop,
    Relay,
    Source,
    WireLayer,
)
from ..pins.licenses import LicenseRow
from .annotation_files import KEY_MARK, SHORT_MARK, select
from .diagram import CROSS_EDGES, LAYER_ORDER, JoinArc, Row, layer_of, layered_svg
from .markup import (
    RENDER_COMMAND,
    HopLinker,
    code_block_id,
    dist_label,
    fenced,
    generated_header,
    hop_links,
    inline_code,
    language,
    md_text,
    md_title,
    render_hop,
    short_name,
)
from .pagemodel import HopLinks, HopView, JourneyPage, Return, Section
from .placeholders import fill

# --------------------------------------------------------------------------- a journey page


def lifelines(chain: Chain) -> list[str]:
    """Threads in the order the chain first visits them."""
    seen: list[str] = []
    for hop in chain.hops:
        if hop.thread not in seen:
            seen.append(hop.thread)
    return seen


def lane_kind(chain: Chain) -> str:
    """What a lane of the chain is: a greenlet for a catalogue scenario run in gevent mode, else a thread."""
    scenario = catalog.SCENARIOS.get(chain.scenario)
    return "greenlet" if scenario is not None and scenario.async_mode == "gevent" else "thread"


def diagram(chain: Chain, groups: Sequence[fold.Group]) -> str:
    """The layered sequence diagram: one row per key entry, one mark per folded run. Each row's
    arrow leaves the row and column of the hop its edge came from: the recorded caller of a call
    (the hop before it on the chain: model.EDGE_CALL), the call that returned for a return, the
    hop that handed off for a hand-off."""
    rows: list[Row] = []
    row_of: dict[int, int] = {}
    for group in groups:
        number = group.entries[0].hop
        first = chain.hops[number - 1]
        edge = first.edge
        came = number - 1  # the hop this row's edge came from (1-based; 0: none)
        source = row_of.get(came) if came >= 1 and edge != EDGE_ENTRY else None
        source_layer = layer_of(chain.hops[came - 1].func.source.dist) if source is not None else ""
        numbers = [n for e in group.entries for n in e.numbers]
        hops = tuple(sorted(numbers))
        if group.folded:
            layers = sorted({layer_of(chain.hops[n - 1].func.source.dist) for n in numbers}, key=LAYER_ORDER.index)
            span = fold.hop_ranges(group.shown)
            last = layer_of(chain.hops[group.entries[-1].hop - 1].func.source.dist)
            start = layer_of(first.func.source.dist)
            layers = [start, *(x for x in layers if x != start)]
            for n in numbers:
                row_of[n] = len(rows)
            rows.append(Row(first.thread, tuple(layers), f"{span}: {group.title}", edge, f"#hop-{group.entries[0].number}", folded=True, exit=last,
                            hops=hops, hop=number, source=source, source_layer=source_layer))
            continue
        e = group.entries[0]
        for n in e.numbers:
            row_of[n] = len(rows)
        label = f"{e.number} {short_name(first.func)}"
        rows.append(Row(first.thread, (layer_of(first.func.source.dist),), label, edge, f"#hop-{e.number}",
                        hops=hops, hop=number, source=source, source_layer=source_layer))
    links = [JoinArc(row_of[j.producer], row_of[j.user], j.kind) for j in chain.joins if j.producer in row_of and j.user in row_of]
    svg = layered_svg(rows, links, title=f"{chain.journey}: {chain.title}", lane=lane_kind(chain))
    return f'<div class="dispel-diagram" markdown="0">\n{svg}\n</div>\n'


def func_label(func: Func) -> str:
    """A function as the page names it: ``module:qualname``, and for one of several functions of
    that name in its file (a property's getter and setter …), the line its definition starts at."""
    name = inline_code(f"{func.module}:{func.qualname}")
    return f"{name} (defined at line {func.first_line})" if func.overloaded else name


def render_hop_table(chain: Chain, groups: Sequence[fold.Group]) -> str:
    """The key hops, one row each, and one row per folded run of the others."""
    rows = ["| # | Function | Thread | Reached by | Distribution |", "|---:|---|---|---|---|"]
    for group in groups:
        first = group.entries[0].number
        if group.folded:
            rows.append(f"| [{first}…](#hop-{first}) | *{md_text(group.title)}* (folded) | | | |")
            continue
        hop = chain.hops[group.entries[0].hop - 1]
        edge = f"**{hop.edge}**" if hop.edge in CROSS_EDGES else hop.edge
        rows.append(
            f"| [{first}](#hop-{first}) | {func_label(hop.func)} | {inline_code(hop.thread)} | {edge} "
            f"| {md_text(dist_label(hop.func.source))} |"
        )
    return "\n".join(rows) + "\n"


def hop_sections(
    chain: Chain,
    groups: Sequence[fold.Group],
    links: Mapping[Hop, HopLinks] | HopLinker,
    excerpts: Mapping[Source, Sequence[str]],
    annotations: Mapping[str, str],
) -> tuple[Section, ...]:
    """The page model's sections: each key entry, and each folded run of entries, as HopViews.
    A text or an observed value is shown at the first entry that has it; later entries link to it."""
    shown = fold.page_numbers(chain)
    texts: dict[str, int] = {}
    values: dict[str, int] = {}
    starts = {p.first: p for p in fold.parts(chain)}

    def view(e: fold.Entry) -> HopView:
        hop = chain.hops[e.hop - 1]
        text = hop_annotation(chain, e.hop - 1, annotations, shown)
        made: list[Return] = []
        own = _text_key(chain, e.hop - 1, annotations)
        for n in e.returns:
            # a return shows a text of its own only when one is keyed to it (its line), not the call's text filled again
            said = hop_annotation(chain, n - 1, annotations, shown) if _text_key(chain, n - 1, annotations) != own else None
            at = texts.get(said.strip()) if said and said.strip() != (text or "").strip() else None
            if said and at is None:
                texts.setdefault(said.strip(), e.number)
            made.append(Return(n, chain.hops[n - 1], chain.hops[n - 2], hop_links(chain.hops[n - 1], links), said, at))
        returns = tuple(made)
        before = dict(values)
        for h in (hop, *(r.hop for r in returns)):
            if h.value is not None:
                values.setdefault(h.value, e.number)
        text_at = texts.get(text.strip()) if text else None
        if text_at == e.number:
            text_at = None  # a text one of this call's own returns registered first
        if text and text_at is None:
            texts[text.strip()] = e.number
        onward = tuple(
            (shown[n + 1], chain.hops[n].edge, chain.hops[n].thread)
            for n in e.numbers
            if n < len(chain.hops) and chain.hops[n].edge in fold.HAND_OFFS and shown[n + 1] < e.number
        )
        return HopView(
            e.hop,
            hop,
            chain.hops[e.hop - 2] if e.hop > 1 else None,
            hop_links(hop, links),
            excerpts.get(hop.func.source),
            text,
            returns,
            tuple(chain.joins),
            hop_short(chain, e.hop - 1, annotations, shown),
            shown,
            text_at,
            before,
            onward,
        )

    return tuple(
        Section(g.folded, g.title, tuple(g.numbers), tuple(view(e) for e in g.entries), starts.get(g.entries[0].number))
        for g in groups
    )


def _text_key(chain: Chain, index: int, annotations: Mapping[str, str]) -> str | None:
    """The key of the text hop ``index`` shows (see hop_annotation), None without one."""
    hop = chain.hops[index]
    found = select(annotations, hop.func.key, chain.journey, hop.line)
    return found[0] if found else None


def emit_hop(v: HopView, indent: str = "") -> str:
    """One hop entry of the page model as MkDocs Markdown."""
    return render_hop(
        v.number, v.hop, v.previous, v.links, v.lines, v.annotation, returns=v.returns, joins=v.joins, indent=indent,
        shown=v.shown, text_at=v.text_at, values_at=v.values_at, onward=v.onward,
    )


def emit_part(part: fold.Part) -> str:
    """The heading of a part of a journey, and what caused it."""
    return f"## Part {part.number} · {part.title} {{ #part-{part.number} }}\n\n{part.cause}\n"


def emit_sections(sections: Sequence[Section]) -> list[str]:
    """Every hop entry: key entries in the open, each folded run in one collapsible block titled by
    what it holds; a journey of several parts has a heading at the start of each."""
    out = []
    several = sum(1 for s in sections if s.part) > 1
    for section in sections:
        if several and section.part:
            out.append(emit_part(section.part))
        if not section.folded:
            out.append(emit_hop(section.entries[0]))
            continue
        out.append(f'??? note "{md_title(section.title)}"\n')
        out.extend(emit_hop(v, "    ") for v in section.entries)
    return out


def render_hop_list(
    chain: Chain,
    groups: Sequence[fold.Group],
    links: Mapping[Hop, HopLinks] | HopLinker,
    excerpts: Mapping[Source, Sequence[str]],
    annotations: Mapping[str, str],
) -> list[str]:
    """Every hop entry: key entries in the open, each folded run in one collapsible block."""
    return emit_sections(hop_sections(chain, groups, links, excerpts, annotations))


def render_wire(wire: Sequence[WireLayer]) -> str:
    """The captured bytes, one content tab per protocol layer, each field decoded."""
    out = [
        "## The bytes on the wire { #wire }\n",
        ("The message as it was captured, peeled one protocol layer at a time: each tab shows the bytes "
        "of that layer and what every field means.\n"),
    ]
    for layer in wire:
        tab = [f'=== "{md_title(layer.layer)}"\n', fenced(layer.raw, "text", indent="    ")]
        if layer.fields:
            tab.append("    | Field | Value | Meaning |\n    |---|---|---|")
            for f in layer.fields:
                tab.append(f"    | {md_text(f.name)} | {inline_code(f.value)} | {md_text(f.meaning)} |")
            tab[-1] += "\n"
        out.append("\n".join(tab))
    return "\n".join(out)


REDIS_PUBSUB = "https://redis.io/docs/latest/develop/pubsub/"


def render_relays(relays: Sequence[Relay]) -> str:
    """Every message through the queue in the scenario, and what each process that read it did."""
    out = [
        "## Through Redis { #redis }\n",
        ("The Redis server is not traced: it relays each `PUBLISH` to every connection subscribed to the "
        f"channel ([Redis Pub/Sub]({REDIS_PUBSUB})). Each row is one message read by one process's listener "
        "thread, as the traces of the scenario show it: by the process that read it, then in the order of its reads.\n"),
        "| published by | event | room | read by | what the reader did |",
        "|---|---|---|---|---|",
    ]
    for r in relays:
        if not r.handled:
            did = "skipped it: its own message (same host id), handled before it was published"
        elif r.sent:
            did = f"handled it: {r.sent} packet(s) for its own clients"
        else:
            did = "handled it: no client of the room on this server, nothing sent"
        room = "every client" if r.room == "null" else inline_code(r.room)
        out.append(f"| {inline_code(r.publisher)} | {inline_code(r.event)} | {room} | {inline_code(r.reader)} | {did} |")
    readers = sorted({r.reader for r in relays})
    silent = sorted({r.publisher for r in relays} - set(readers))
    by_message: dict[tuple[str, str, str], set[str]] = {}
    for r in relays:
        by_message.setdefault((r.publisher, r.event, r.room), set()).add(r.reader)
    everywhere = sum(1 for who in by_message.values() if who == set(readers))
    text = (
        f"\n{everywhere} of the {len(by_message)} messages were read by every server ({', '.join(inline_code(x) for x in readers)}): "
        "a server's listener reads every message on the channel, whatever its room, and the server decides against its own "
        "rooms whom it concerns."
    )
    if silent:
        text += f" {', '.join(inline_code(x) for x in silent)} published and read nothing: a `write_only` manager starts no listener."
    out.append(text + "\n")
    return "\n".join(out)


def render_compared(chain: Chain, label: str, others: Sequence[tuple[str, Chain]], marked: frozenset[str] = frozenset()) -> str:
    """Content tabs with this chain and the chains it is compared with, hop by hop."""
    out = [
        "## Side by side { #side-by-side }\n",
        ("The same step, recorded another way: each tab lists a chain's hops, with the thread and the edge "
        "that reached each one. A row links to that hop on its own page.\n"),
    ]
    for title, other, page in [(label, chain, ""), *((t, c, f"{c.journey}.md") for t, c in others)]:
        rows = ["| # | Function | Thread | Reached by |", "|---:|---|---|---|"]
        key = [g.entries[0] for g in fold.groups(other, marked) if not g.folded]
        for e in key:
            i, hop = e.number, other.hops[e.hop - 1]
            edge = f"**{hop.edge}**" if hop.edge in CROSS_EDGES else hop.edge
            rows.append(f"| [{i}]({page}#hop-{i}) | {func_label(hop.func)} | {inline_code(hop.thread)} | {edge} |")
        intro = f"    Scenario {inline_code(other.scenario)}, {len(fold.entries(other))} hops; its {len(key)} key hops below."
        out.append(f'=== "{md_title(title)}"\n\n{intro}\n\n' + "\n".join("    " + r for r in rows) + "\n")
    return "\n".join(out)


def hop_short(chain: Chain, index: int, annotations: Mapping[str, str], numbers: Mapping[int, int] | None = None) -> str | None:
    """The `short:` sentence of the text hop ``index`` shows (see hop_annotation), filled; None without one."""
    hop = chain.hops[index]
    found = select(annotations, hop.func.key, chain.journey, hop.line)
    short = annotations.get(SHORT_MARK + found[0]) if found else None
    return fill(short, chain, index, found[0], inline_code, numbers) if found and short else None


def hop_annotation(chain: Chain, index: int, annotations: Mapping[str, str], numbers: Mapping[int, int] | None = None) -> str | None:
    """The most specific text for hop ``index`` (keyed to its journey and line, its journey, or general),
    its placeholders filled from the chain."""
    hop = chain.hops[index]
    found = select(annotations, hop.func.key, chain.journey, hop.line)
    return fill(found[1], chain, index, found[0], inline_code, numbers) if found else None


def journey_page(
    chain: Chain,
    links: Mapping[Hop, HopLinks] | HopLinker,
    excerpts: Mapping[Source, Sequence[str]],
    annotations: Mapping[str, str],
    others: Mapping[str, Chain] | None = None,
) -> JourneyPage:
    """The page model of one journey (see dispel.render.pagemodel): every fact its formats show.

    ``links`` maps a hop (or is called with it) to its permalinks; the sample app's hops
    link into this site instead. ``excerpts`` holds the lines (without newlines) of each
    installed source file; ``annotations`` maps ``module:qualname`` (optionally
    ``@journey`` or ``@journey#L<line>``) and ``journey:<name>`` to hand-written Markdown
    with placeholders (see placeholders.py). ``others`` holds the other journeys' chains, for the ones
    shown beside this one (see catalog.Journey.compared).
    """
    if not chain.hops:
        raise DispelError(f"chain {chain.journey!r} has no hops; regenerate it (`make chains`)")
    marked = marked_key(annotations)
    shown = fold.page_numbers(chain)
    intro = annotations.get(f"journey:{chain.journey}")
    intro = fill(intro, chain, None, f"journey:{chain.journey}", inline_code, shown) if intro else None
    position = fold.chain_positions(chain)
    cited = frozenset(position[int(n)] for n in re.findall(r"\(#hop-(\d+)\)", intro or "") if int(n) in position)
    groups = tuple(fold.groups(chain, marked, cited))
    spec = next((j for j in catalog.JOURNEYS if j.name == chain.journey), None)
    label, compared = spec.compared if spec and spec.compared else ("", ())
    beside = tuple((title, others[j]) for title, j in compared if others and j in others)
    return JourneyPage(
        chain,
        chain.title,
        intro,
        tuple(lifelines(chain)),
        groups,
        hop_sections(chain, groups, links, excerpts, annotations),
        tuple(chain.wire),
        tuple(chain.relays),
        label,
        beside,
        marked,
        tuple(fold.parts(chain)),
        cited,
    )


def render_journey(
    chain: Chain,
    links: Mapping[Hop, HopLinks] | HopLinker,
    excerpts: Mapping[Source, Sequence[str]],
    annotations: Mapping[str, str],
    others: Mapping[str, Chain] | None = None,
) -> str:
    """The Markdown page of one journey: its page model (journey_page) written for MkDocs."""
    return emit_journey(journey_page(chain, links, excerpts, annotations, others))


def emit_journey(page: JourneyPage) -> str:
    """A journey's page model as the site's MkDocs Markdown page."""
    chain = page.chain
    out = [generated_header(), f"# {md_text(page.title)}\n"]
    intro = page.summary
    out.append(intro.strip() + "\n" if intro else f'!!! warning "Summary not written yet"\n    Add `journey:{chain.journey}` to an annotations file.\n')
    out.append(
        f'!!! info "Reading this page"\n'
        f"    Recorded by scenario {inline_code(chain.scenario)}: {sum(len(s.entries) for s in page.sections)} hops (one per recorded call) across "
        f"{len(page.threads)} {lane_kind(chain)}(s){_parts_note(page)}, {page.key_count} of them key hops shown in the open. Each hop below is a function that really ran, with the line that "
        "led on to the next hop highlighted in its source. See [how to read a chain](../index.md#how-to-read-a-chain).\n"
    )
    out.append("## Sequence { #sequence }\n")
    out.append(
        "One column per layer of the stack, from the app down to the socket, and time running downwards; "
        f"each {lane_kind(chain)} is a shaded band named on the left. Every arrow leaves the hop it came from: a call runs "
        "down its caller's column and across to the function called, a return (dashed) from the call that "
        f"returned; a hand-off to another {lane_kind(chain)} is drawn by its kind; a dotted green curve joins a "
        "value's producer to the hop that used it. A dashed box stands for hops folded on this page. "
        "Click a label to jump to the hop.\n"
    )
    out.append(diagram(chain, page.groups))
    out.append("## Hops { #hops }\n")
    out.append(
        "One hop is one recorded call: when the chain comes back to a call already listed (a return, the end "
        "of a wait), that call's entry shows the line it ran then too. The key hops are shown in the open: "
        f"where a part starts, the app's own code, the first hop in each library, every hand-off between {lane_kind(chain)}s, "
        "the calls that made a value another hop used, the sinks and the hops the summary cites. The hops "
        "between them are folded into collapsible blocks, titled by what they hold.\n"
    )
    out.append(render_hop_table(chain, page.groups))
    out.extend(emit_sections(page.sections))
    if page.wire:
        out.append(render_wire(page.wire))
    if page.relays:
        out.append(render_relays(page.relays))
    if page.compared:
        out.append(render_compared(chain, page.compared_label, page.compared, page.marked))
    return "\n".join(out)


def _parts_note(page: JourneyPage) -> str:
    n = len(page.parts)
    return f" in {n} parts" if n > 1 else ""


def marked_key(annotations: Mapping[str, str]) -> frozenset[str]:
    """Function keys an annotation marks key (``key: true``; see annotations.texts)."""
    return frozenset(k[len(KEY_MARK):] for k in annotations if k.startswith(KEY_MARK))


def render_placeholder(journey: str) -> str:
    """The page of a journey whose chain has not been recorded yet."""
    title = next((j.title for j in catalog.JOURNEYS if j.name == journey), journey)
    return (
        generated_header()
        + f"# {md_text(title)}\n\n"
        + '!!! warning "Not recorded yet"\n'
        + f"    The chain for the {inline_code(journey)} journey has not been recorded yet. "
        + f"Run `make regen` to trace the sample app; this page is then rebuilt from `traces/chains/{journey}.json`.\n"
    )


# --------------------------------------------------------------------------- other generated pages


# The same highlighting options as mkdocs.yml, so the pre-rendered listing looks like every other block.
HIGHLIGHT_CONFIG = {"anchor_linenums": True, "line_spans": "__span", "pygments_lang_class": True}


def highlighted_html(text: str, info: str) -> str:
    """A fenced block turned into HTML now, by the same extensions the site uses.

    MkDocs validates anchors by reading a page's raw HTML before Markdown runs, so it never
    sees the line anchors a code fence will get. Emitting the block as HTML makes them visible
    to the link check, and the journeys' links into the sample app are checked like any other.
    """
    md = markdown.Markdown(
        extensions=["pymdownx.highlight", "pymdownx.superfences"],
        extension_configs={"pymdownx.highlight": HIGHLIGHT_CONFIG},
    )
    # A blank line would end the raw HTML block in the page; inside <pre> an entity stands in
    # for the newline that made it, so the listing keeps its empty lines.
    return md.convert(fenced(text, info)).replace("\n\n", "\n&#10;")


def render_sample_app(
    files: Sequence[tuple[str, str]], title: str = "Sample app source",
    intro: str = "The small Flask-SocketIO chat app that the journeys trace, exactly as it ran.",
    command: str = RENDER_COMMAND,
) -> str:
    """The sample app's source files (or a report's app's), each one code block with line anchors the journeys link to."""
    out = [
        generated_header(command),
        f"# {title}\n",
        f"{intro} Every line has an anchor: the journey pages link here for the hops in the app's own code.\n",
    ]
    for path, text in files:
        out.append(f"## {inline_code(path)} {{ #{code_block_id(path)}-file }}\n")
        info = f'{{ .{language(path)} #{code_block_id(path)} linenums="1" title="{escape(path)}" }}'
        out.append(highlighted_html(text.rstrip("\n"), info) + "\n")
    return "\n".join(out)


def render_versions(versions: Sequence[tuple[str, str]], python: str, recorded: Sequence[str]) -> str:
    """A snippet for the home page: the exact version set the traces were recorded with."""
    out = [
        "<!-- Generated by `dispel render` (make render). Do not edit: regenerate instead. -->",
        "",
        "| Distribution | Version |",
        "|---|---|",
        f"| Python (CPython) | {md_text(python)} |",
    ]
    out += [f"| {md_text(name)} | {md_text(version)} |" for name, version in versions]
    out.append("")
    if recorded:
        out.append("Journeys recorded: " + ", ".join(f"[{j}](chains/{j}.md)" for j in recorded) + ".")
    else:
        out.append("No journey has been recorded yet.")
    return "\n".join(out) + "\n"


def render_licensing(rows: Sequence[LicenseRow]) -> str:
    """The General Information & Licensing page: the course template's table, one row per library."""
    out = [
        generated_header(),
        "# General Information & Licensing\n",
        ("The libraries whose code runs on the journeys of this report, as installed when it was rendered. "
        "The license type is read from each distribution's own metadata (its `License-Expression`, else "
        "its `License` field, else its trove classifiers, checked against the license file it ships); "
        "the *Read from* column says which. The short descriptions are this project's own summaries, "
        "not legal advice: the license file of each library is the authority.\n"),
        "| Library | Code repository | License type | What sets it apart | Restrictions | Read from |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        repo = f"[{md_text(_repo_label(row.repository))}](<{row.repository}>)" if row.repository else "*not stated*"
        out.append(
            f"| {md_text(row.library)} {md_text(row.version)} | {repo} | **{md_text(row.spdx)}** "
            f"| {md_text(row.summary)} | {md_text(row.restrictions)} | {md_text(row.source)} |"
        )
    return "\n".join(out) + "\n"


def _repo_label(url: str) -> str:
    """``OWNER/NAME`` for a forge URL, the URL itself otherwise."""
    m = re.match(r"https://(?:github\.com|gitlab\.com|bitbucket\.org)/([^/]+/[^/#?]+)", url)
    return m.group(1) if m else url
