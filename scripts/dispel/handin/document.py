"""The hand-in (pure): the course template's report, from the page model, as Markdown, DOCX and PDF.

For each technology the chains run through, the template's *General Information & Licensing*
table; then *Dispel the magic*: how it works (the journeys' summaries) and the chain of calls
(each journey's key hops, numbered: function, permalink to the executed line at the pinned
commit, thread, its text), the folded hops in an appendix per journey, and how it was made.

One HandIn value is written three ways: ``to_markdown`` (report.md), then that Markdown as HTML
(``to_html``, which Chromium prints to report.pdf) and as a Word document (``to_docx``, python-docx).
The links of every format are read back (``docx_links``, ``pdf_links``, ``markdown_links``) and
compared with the links the chain gives (``expected_links``) by ``check_formats``. Gathering the
facts, printing and writing are in dispel.handin.build.
"""
from __future__ import annotations

import hashlib
import io
import re
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import ClassVar

import markdown

from ..chains import fold
from ..check import prose
from ..check.links import PageLink
from ..model import PYTHON, Chain, Source, normalize_dist, text_lines
from ..pins.licenses import LicenseRow
from ..render import pages as render
from ..render.pagemodel import HopLinks, HopView, JourneyPage
from ..render.pages import inline_code, md_text

FILES = ("report.md", "report.docx", "report.pdf")
MARKER = ".dispel-handin"  # in a folder dispel handin wrote (it may replace only such a folder)
STDLIB_LIBRARY = "Python standard library (CPython)"  # installed.license_rows's row for CPython
NO_LICENSE_DISTS = ("builtin", "sample_app")  # the C socket is CPython's (the stdlib row); the app is yours


@dataclass(frozen=True)
class Made:
    """How the hand-in was made: versions, the recording's date and where it came from, the command."""

    versions: tuple[tuple[str, str], ...]
    python: str
    recorded: str  # "2026-12-05T03:55:42+00:00" (ISO 8601), or "" when nothing dates the recording
    recorded_from: str  # where the date was read, in words
    command: str


@dataclass(frozen=True)
class HandIn:
    title: str
    intro: str  # Markdown
    licenses: tuple[LicenseRow, ...]
    pages: tuple[JourneyPage, ...]
    made: Made
    app_note: str = "the app's own code"  # shown for a hop in the app (it has no permalink)


# --------------------------------------------------------------------------- rules


def missing_licenses(pages: Iterable[JourneyPage], rows: Iterable[LicenseRow]) -> list[str]:
    """Distributions with a hop on the chains but no licensing table (one line each)."""
    have = {normalize_dist(r.library) for r in rows}
    if any(r.library == STDLIB_LIBRARY for r in rows):
        have.add(PYTHON)
    out: dict[str, str] = {}
    for page in pages:
        for hop in page.chain.hops:
            dist = hop.func.source.dist
            if dist not in NO_LICENSE_DISTS and normalize_dist(dist) not in have:
                out.setdefault(dist, f"{dist}: its code runs on the {page.journey} journey (hop {page.chain.hops.index(hop) + 1}) but the hand-in has no licensing table for it")
    return list(out.values())


def _permalink(links: HopLinks | None) -> str | None:
    """The hop's permalink for the hand-in: none for the app's own code (its site link is not portable)."""
    if links is None or links.pinned == "site" or not links.line:
        return None
    return links.line


@dataclass(frozen=True)
class Expected:
    """A link the hand-in must carry, and what it stands for on the chain."""

    url: str
    journey: str = ""
    hop: int = 0
    role: str = ""  # "line" for a hop's permalink, "" for a repository link


def expected_links(h: HandIn) -> list[Expected]:
    """Every external link the hand-in carries, in document order: the repositories, then each
    journey's key hops (and their returns), then the appendix's folded hops."""
    out = [Expected(r.repository) for r in h.licenses if r.repository]
    for page in h.pages:
        for v in page.key_hops:
            out += _hop_expected(page.journey, v)
    for page in h.pages:
        for _, v in page.folded_hops:
            out += _hop_expected(page.journey, v)
    # links the texts themselves carry (a summary or a hop's text may cite a specification)
    texts = [p.summary or "" for p in h.pages] + [v.short or v.annotation or "" for p in h.pages for v in p.key_hops]
    out += [Expected(url) for text in texts for url in markdown_links(text)]
    return out


def _hop_expected(journey: str, v: HopView) -> list[Expected]:
    out = []
    url = _permalink(v.links)
    if url:
        out.append(Expected(url, journey, v.number, "line" if not v.hop.func.is_c else ""))
    for r in v.returns:
        url = _permalink(r.links)
        if url:
            out.append(Expected(url, journey, r.number, "line" if not r.hop.func.is_c else ""))
    return out


def page_links(expected: Iterable[Expected]) -> list[PageLink]:
    """The expected links as check.PageLinks of their journey's page: check_permalinks proves each
    by its blob, and a hop's line against the chain."""
    return [PageLink(f"chains/{e.journey}.md" if e.journey else "handin", 0, e.url, e.hop, e.role) for e in expected]


def check_formats(found: Mapping[str, Sequence[str] | None], expected: Sequence[Expected]) -> list[str]:
    """One line per link a format carries that the chain does not give, or lacks that it does.
    ``found``: format file name -> the external links read back from it (None: not written)."""
    out = []
    for name, links in found.items():
        if links is None:
            continue
        # A PDF link that wraps onto a second line is a second annotation with the same target:
        # in a PDF, each of the chain's links must be there, and none other.
        once = name.endswith(".pdf")
        want = Counter({e.url for e in expected}) if once else Counter(e.url for e in expected)
        got = Counter(set(links)) if once else Counter(links)
        for url, n in sorted((got - want).items()):
            out.append(f"handin/{name}: link {url} is not on the chain ({n}×): regenerate the hand-in (`dispel handin`)")
        for url, n in sorted((want - got).items()):
            out.append(f"handin/{name}: the chain's link {url} is missing ({n}×): regenerate the hand-in (`dispel handin`)")
    return out


def short_page(chain: Chain, shorts: Mapping[str, str]) -> str:
    """The `short:` sentences a chain's hops would show, as a journey page's hop sections (for dispel.check.prose)."""
    out = [f"# {chain.journey}\n"]
    for i, hop in enumerate(chain.hops):
        text = render.hop_annotation(chain, i, shorts)
        if text:
            out.append(f"### {i + 1} · {inline_code(hop.func.qualname)} {{ #hop-{i + 1} }}\n\n{text.strip()}\n")
    return "\n".join(out)


def short_problems(chains: Mapping[str, Chain], shorts: Mapping[str, str], sources: Mapping[Source, bytes | str]) -> list[str]:
    """The `short:` sentences (annotation key -> short) read by the prose rules the pages' texts are, one line each."""
    if not shorts:
        return []
    lines = {src: text_lines(d) for src, d in sources.items()}
    out = []
    for journey, chain in sorted(chains.items()):
        out += [p.line for p in prose.check_page(f"short sentences on {journey}", short_page(chain, shorts), chain, lines)]
    return out + [ln.replace("prose: annotation", "prose: short sentence of", 1) for ln in prose.typed_lines(shorts, chains)]


# --------------------------------------------------------------------------- Markdown


def _anchor(journey: str, n: int) -> str:
    return f"{journey}-hop-{n}"


_LINK = re.compile(r"\[((?:[^\[\]]|\[[^\]]*\])*)\]\(<?([^)\s>]*)>?\)")
_PAGE = re.compile(r"(?:\.\./chains/|chains/)?([a-z0-9-]+)\.md(?:#hop-(\d+)|#.*)?")


def _local(text: str, journey: str, journeys: Iterable[str] = ()) -> str:
    """A page's text with its links made the hand-in's: ``#hop-N`` to the hop's anchor here, another
    journey's page (or hop) to its section (or hop) here; a link to another page of the site keeps
    only its text; external links stay."""
    journeys = set(journeys)

    def one(m: re.Match) -> str:
        label, target = m.group(1), m.group(2)
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            return m.group(0)
        if target.startswith("#hop-") and target[5:].isdigit():
            return f"[{label}](#{_anchor(journey, int(target[5:]))})"
        page = _PAGE.fullmatch(target)
        if page and page.group(1) in journeys:
            return f"[{label}](#{_anchor(page.group(1), int(page.group(2)))})" if page.group(2) else f"[{label}](#chain-{page.group(1)})"
        return label

    return _LINK.sub(one, text.strip())


def _repo_label(url: str) -> str:
    m = re.match(r"https://[^/]+/([^/]+/[^/]+)(?:/tree/([0-9a-f]{40}|[^/]+))?", url)
    if not m:
        return url
    return f"{m.group(1)} at {m.group(2)[:12]}" if m.group(2) else m.group(1)


def _code_cell(v_hop, links: HopLinks | None, app_note: str) -> str:
    func = v_hop.func
    url = _permalink(links)
    if func.is_c:
        return f"[documentation](<{url}>) (C code)" if url else "C code, no source"
    where = f"{inline_code(func.source.path)} line {v_hop.line}"
    if url:
        return f"[{where}](<{url}>)"
    return f"{where} ({app_note})" if links is not None and links.pinned == "site" else f"{where} (not pinned)"


def _license_md(r: LicenseRow) -> list[str]:
    repo = f"[{md_text(_repo_label(r.repository))}](<{r.repository}>)" if r.repository else "*not stated*"
    slug = re.sub(r"[^a-z0-9]+", "-", r.library.lower()).strip("-")
    return [
        f"### {md_text(r.library)} {md_text(r.version)} {{ #license-{slug} }}\n",
        "| Field | Value |",
        "|---|---|",
        f"| Code Repository | {repo} |",
        f"| License Type | **{md_text(r.spdx)}** |",
        f"| License Description | {md_text(r.summary)} |",
        f"| License Restrictions | {md_text(r.restrictions)} |",
        "",
        f"*License type read from: {md_text(r.source)}.*\n",
    ]


def _hop_md(page: JourneyPage, index: int, v: HopView, app_note: str, journeys: Sequence[str]) -> list[str]:
    func = v.hop.func
    out = [
        f"##### {index}. {inline_code(func.qualname)} (hop {v.number}) {{ #{_anchor(page.journey, v.number)} }}\n",
        f"- **Function:** {inline_code(func.module)} · {inline_code(func.qualname)}",
        f"- **Code:** {_code_cell(v.hop, v.links, app_note)}",
        f"- **Thread:** {inline_code(v.hop.thread)}",
    ]
    for r in v.returns:
        out.append(f'- **Came back:** <a id="{_anchor(page.journey, r.number)}"></a>{_code_cell(r.hop, r.links, app_note)} (hop {r.number}, thread {inline_code(r.hop.thread)})')
    out.append("")
    text = v.short or v.annotation  # one sentence where the text has one, else the full text
    out.append((_local(text, page.journey, journeys) if text else "*No text has been written for this function yet.*") + "\n")
    return out


def _appendix_md(page: JourneyPage, app_note: str) -> list[str]:
    out = [f"### {md_text(page.title)} {{ #appendix-{page.journey} }}\n"]
    folded = [s for s in page.sections if s.folded]
    if not folded:
        return out + ["Every hop of this journey is a key hop.\n"]
    for s in folded:
        out.append(f"**{md_text(s.title)}: {fold.hop_ranges(s.numbers)}**\n")
        out += ["| Hop | Function | Code | Thread |", "|---:|---|---|---|"]
        rows = [(v.number, v.hop, v.links) for v in s.entries] + [(r.number, r.hop, r.links) for v in s.entries for r in v.returns]
        for n, hop, links in sorted(rows, key=lambda row: row[0]):  # in the order they ran
            out.append(
                f'| <a id="{_anchor(page.journey, n)}"></a>{n} | {inline_code(hop.func.key)} '
                f"| {_code_cell(hop, links, app_note)} | {inline_code(hop.thread)} |"
            )
        out.append("")
    return out


def to_markdown(h: HandIn, command: str) -> str:
    """The hand-in as one Markdown document (Python-Markdown with tables and attr_list reads it)."""
    out = [
        f"<!-- Generated by `{command}`. Do not edit: regenerate instead. -->\n",
        f"# {md_text(h.title)}\n",
        h.intro.strip() + "\n",
        "## General Information & Licensing { #licensing }\n",
        ("One table for each technology whose code runs on the chains below, read from its installed "
        "metadata and license file; the code repository is linked at the commit the links below are pinned to. "
        "The descriptions are short summaries, not legal advice: each library's license file is the authority.\n"),
    ]
    journeys = [p.journey for p in h.pages]
    for r in h.licenses:
        out += _license_md(r)
    out.append("## Dispel the magic { #dispel-the-magic }\n")
    out.append("### How it works { #how-it-works }\n")
    for page in h.pages:
        out.append(f"#### {md_text(page.title)} {{ #how-{page.journey} }}\n")
        out.append((_local(page.summary, page.journey, journeys) if page.summary else "*No summary has been written for this journey yet.*") + "\n")
    out.append("### The chain of calls { #the-chain-of-calls }\n")
    out.append(
        "For each journey, its key hops in the order they ran, numbered: the function, a permalink to the "
        "line that ran at the pinned commit, the thread, and what it does. The hops between key hops are "
        "listed in the appendix, so the whole chain is here.\n"
    )
    for page in h.pages:
        keys = page.key_hops
        out.append(f"#### {md_text(page.title)} {{ #chain-{page.journey} }}\n")
        out.append(
            f"Recorded by scenario {inline_code(page.chain.scenario)}: {len(page.chain.hops)} hops across "
            f"{len(page.threads)} thread(s); its {len(keys)} key hops below, the other "
            f"{len(page.chain.hops) - sum(len(v.numbers) for v in keys)} in [the appendix](#appendix-{page.journey}).\n"
        )
        for i, v in enumerate(keys, 1):
            out += _hop_md(page, i, v, h.app_note, journeys)
    out.append("## Appendix: the folded hops { #appendix }\n")
    out.append("The hops between the key hops of each journey, in the order they ran, grouped as the site folds them.\n")
    for page in h.pages:
        out += _appendix_md(page, h.app_note)
    m = h.made
    out.append("## How it was made { #how-it-was-made }\n")
    when = f"{m.recorded[:10]} ({md_text(m.recorded_from)})" if m.recorded else f"not dated ({md_text(m.recorded_from)})"
    out += [
        f"- **Recorded:** {when}",
        f"- **Regenerate with:** {inline_code(m.command)}",
        "",
        "| Distribution | Version |",
        "|---|---|",
        f"| Python (CPython) | {md_text(m.python)} |",
        *(f"| {md_text(n)} | {md_text(v)} |" for n, v in m.versions),
        "",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------- HTML (printed to PDF)

CSS = """
@page { size: A4; margin: 18mm 16mm; }
body { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; font-size: 10pt; line-height: 1.4; color: #111; }
h1 { font-size: 20pt; } h2 { font-size: 15pt; margin-top: 1.6em; } h3 { font-size: 12.5pt; } h4 { font-size: 11pt; }
h2, h3, h4 { page-break-after: avoid; }
code { font-family: "DejaVu Sans Mono", "Liberation Mono", monospace; font-size: 8.8pt; overflow-wrap: anywhere; }
a { color: #0b57d0; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; margin: 0.6em 0; }
th, td { border: 1px solid #999; padding: 3px 5px; text-align: left; vertical-align: top; }
tr { page-break-inside: avoid; }
"""


def to_html(md: str, title: str) -> str:
    """report.md as a standalone HTML page (the PDF's source): real text and links, no image."""
    body = markdown.markdown(md, extensions=["tables", "attr_list"])
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


# --------------------------------------------------------------------------- DOCX

DOCX_EPOCH = (1980, 1, 1, 0, 0, 0)  # every zip entry's time: the bytes do not depend on the clock


def recorded_datetime(iso: str) -> datetime:
    """The recording's time (UTC) for document properties; the zip epoch when it is not dated."""
    if iso:
        return datetime.fromisoformat(iso).astimezone(UTC).replace(tzinfo=None)
    return datetime(*DOCX_EPOCH)


def to_docx(html_body: str, title: str, when: datetime) -> bytes:
    """The HTML of report.md as a Word document with real headings, lists, tables and hyperlinks;
    the same bytes for the same input (fixed zip times and core properties)."""
    import docx  # python-docx, only where a DOCX is written
    import lxml.html

    doc = docx.Document()
    props = doc.core_properties
    props.title, props.author, props.last_modified_by = title, "dispel", "dispel"
    props.created = props.modified = props.last_printed = when
    props.revision, props.comments, props.subject, props.keywords, props.category = 1, "", "", "", ""
    root = lxml.html.fragment_fromstring(html_body, create_parent="div")
    _DocxWriter(doc).blocks(root)
    buf = io.BytesIO()
    doc.save(buf)
    return _fixed_zip(buf.getvalue())


def _fixed_zip(data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            fixed = zipfile.ZipInfo(info.filename, DOCX_EPOCH)
            fixed.compress_type = zipfile.ZIP_DEFLATED
            fixed.external_attr = 0o644 << 16
            zout.writestr(fixed, zin.read(info.filename))
    return out.getvalue()


class _DocxWriter:
    """Walks the HTML Python-Markdown made and writes python-docx paragraphs, runs, tables and hyperlinks."""

    HEADINGS: ClassVar[dict[str, int]] = {"h1": 0, "h2": 1, "h3": 2, "h4": 3, "h5": 4, "h6": 5}

    def __init__(self, doc) -> None:
        from docx.opc.constants import RELATIONSHIP_TYPE
        from docx.oxml import OxmlElement
        from docx.oxml.ns import qn

        self.doc, self.el, self.qn, self.rt = doc, OxmlElement, qn, RELATIONSHIP_TYPE

    def blocks(self, parent, list_level: int = 0, ordered: bool = False) -> None:
        for node in parent:
            tag = node.tag if isinstance(node.tag, str) else ""
            if tag in self.HEADINGS:
                heading = self.doc.add_heading("", self.HEADINGS[tag])
                if node.get("id"):
                    self._bookmark(heading._p, node.get("id"))
                self.inline(heading, node)
            elif tag == "p":
                self.inline(self.doc.add_paragraph(), node)
            elif tag in ("ul", "ol"):
                self.list(node, list_level + 1, tag == "ol")
            elif tag == "table":
                self.table(node)
            elif tag == "pre":
                p = self.doc.add_paragraph()
                self._run(p._p, node.text_content(), code=True)
            elif tag in ("div", "blockquote"):
                self.blocks(node, list_level, ordered)

    def list(self, node, level: int, ordered: bool) -> None:
        style = ("List Number" if ordered else "List Bullet") + (f" {min(level, 3)}" if level > 1 else "")
        for li in node:
            if not isinstance(li.tag, str) or li.tag != "li":
                continue
            p = self.doc.add_paragraph(style=style)
            inline_done = False
            if li.text and li.text.strip():
                self._text(p._p, li.text, {})
                inline_done = True
            for child in li:
                if child.tag in ("ul", "ol"):
                    self.list(child, level + 1, child.tag == "ol")
                elif child.tag == "p":
                    target = p if not inline_done else self.doc.add_paragraph(style=style)
                    self.inline(target, child)
                    inline_done = True
                else:
                    self._node(p._p, child, {})
                    inline_done = True
                if child.tail and child.tail.strip():
                    self._text(p._p, child.tail, {})

    def table(self, node) -> None:
        rows = [tr for tr in node.iter("tr")]
        cols = max(len([c for c in tr if c.tag in ("td", "th")]) for tr in rows)
        table = self.doc.add_table(rows=len(rows), cols=cols)
        table.style = "Table Grid"
        for r, tr in enumerate(rows):
            for c, cell in enumerate([c for c in tr if c.tag in ("td", "th")]):
                para = table.cell(r, c).paragraphs[0]
                self.inline(para, cell, {"bold": True} if cell.tag == "th" else {})

    def inline(self, para, node, fmt: dict | None = None) -> None:
        fmt = fmt or {}
        if node.text:
            self._text(para._p, node.text, fmt)
        for child in node:
            self._node(para._p, child, fmt)
            if child.tail:
                self._text(para._p, child.tail, fmt)

    def _node(self, parent, node, fmt: dict) -> None:
        tag = node.tag if isinstance(node.tag, str) else ""
        if tag == "br":
            r = self.el("w:r")
            r.append(self.el("w:br"))
            parent.append(r)
            return
        inner = dict(fmt)
        if tag in ("strong", "b"):
            inner["bold"] = True
        elif tag in ("em", "i"):
            inner["italic"] = True
        elif tag == "code":
            inner["code"] = True
        href = node.get("href", "") if tag == "a" else ""
        if tag == "a" and node.get("id"):
            self._bookmark(parent, node.get("id"))
        if href.startswith(("http://", "https://")):
            link = self.el("w:hyperlink")
            link.set(self.qn("r:id"), self.doc.part.relate_to(href, self.rt.HYPERLINK, is_external=True))
            parent.append(link)
            parent, inner = link, {**inner, "link": True}
        elif href.startswith("#") and len(href) > 1:  # a place in the document: a bookmark
            link = self.el("w:hyperlink")
            link.set(self.qn("w:anchor"), bookmark_name(href[1:]))
            parent.append(link)
            parent, inner = link, {**inner, "link": True}
        if not tag:  # a comment
            return
        if node.text:
            self._text(parent, node.text, inner)
        for child in node:
            self._node(parent, child, inner)
            if child.tail:
                self._text(parent, child.tail, inner)

    def _bookmark(self, parent, name: str) -> None:
        """A bookmark (an empty one, where the id stands) that internal links lead to."""
        self.bookmarks = getattr(self, "bookmarks", 0) + 1
        for what in ("w:bookmarkStart", "w:bookmarkEnd"):
            mark = self.el(what)
            mark.set(self.qn("w:id"), str(self.bookmarks))
            if what == "w:bookmarkStart":
                mark.set(self.qn("w:name"), bookmark_name(name))
            parent.append(mark)

    def _text(self, parent, text: str, fmt: dict) -> None:
        text = re.sub(r"\s*\n\s*", " ", text)
        if text:
            self._run(parent, text, **fmt)

    def _run(self, parent, text: str, bold: bool = False, italic: bool = False, code: bool = False, link: bool = False) -> None:
        r = self.el("w:r")
        props = self.el("w:rPr")
        if code:
            fonts = self.el("w:rFonts")
            for attr in ("w:ascii", "w:hAnsi", "w:cs"):
                fonts.set(self.qn(attr), "Courier New")
            props.append(fonts)
        for flag, name in ((bold, "w:b"), (italic, "w:i")):
            if flag:
                props.append(self.el(name))
        if link:
            color = self.el("w:color")
            color.set(self.qn("w:val"), "0B57D0")
            props.append(color)
            underline = self.el("w:u")
            underline.set(self.qn("w:val"), "single")
            props.append(underline)
        if len(props):
            r.append(props)
        t = self.el("w:t")
        t.set(self.qn("xml:space"), "preserve")
        t.text = text
        r.append(t)
        parent.append(r)


def bookmark_name(anchor: str) -> str:
    """A Word bookmark name for an HTML id: letters, digits and underscores, at most 40 characters."""
    name = "h_" + re.sub(r"[^A-Za-z0-9]", "_", anchor)
    return name if len(name) <= 40 else name[:31] + "_" + hashlib.sha1(anchor.encode()).hexdigest()[:8]


def docx_links(data: bytes) -> list[str]:
    """The external hyperlinks of a DOCX, in document order, read from its relationships."""
    import docx
    from docx.oxml.ns import qn

    doc = docx.Document(io.BytesIO(data))
    rels = {rid: rel.target_ref for rid, rel in doc.part.rels.items() if rel.is_external}
    return [rels[h.get(qn("r:id"))] for h in doc.element.body.iter(qn("w:hyperlink")) if h.get(qn("r:id")) in rels]


def docx_text(data: bytes) -> str:
    """Every paragraph's and table cell's text of a DOCX (hyperlinks' text included)."""
    import docx
    from docx.oxml.ns import qn

    doc = docx.Document(io.BytesIO(data))
    return "\n".join("".join(t.text or "" for t in p.iter(qn("w:t"))) for p in doc.element.body.iter(qn("w:p")))


# --------------------------------------------------------------------------- PDF

_URI = re.compile(rb"/URI\s*(\((?:\\.|[^\\)])*\)|<[0-9A-Fa-f\s]*>)", re.DOTALL)
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}


def pdf_string(token: bytes) -> bytes:
    """A PDF literal ``(…)`` or hex ``<…>`` string token -> its bytes."""
    if token.startswith(b"<"):
        digits = re.sub(rb"\s", b"", token[1:-1])
        return bytes.fromhex((digits + b"0" * (len(digits) % 2)).decode())
    body, out, i = token[1:-1], bytearray(), 0
    while i < len(body):
        c = body[i : i + 1]
        if c == b"\\" and i + 1 < len(body):
            n = body[i + 1 : i + 2]
            octal = re.match(rb"[0-7]{1,3}", body[i + 1 : i + 4])
            if octal:
                out.append(int(octal.group(0), 8) & 0xFF)
                i += 1 + len(octal.group(0))
                continue
            out += _ESCAPES.get(n, n if n not in b"\r\n" else b"")
            i += 2
            continue
        out += c
        i += 1
    return bytes(out)


def pdf_links(data: bytes) -> list[str]:
    """The URI link annotations of a PDF (their targets, in the file's order)."""
    return [pdf_string(m.group(1)).decode("utf-8", errors="replace") for m in _URI.finditer(data)]


def pdf_date(iso: str) -> bytes:
    """A PDF date ``D:YYYYMMDDHHmmSS+00'00'`` for an ISO time (UTC); the zip epoch when undated."""
    t = recorded_datetime(iso)
    return f"D:{t:%Y%m%d%H%M%S}+00'00'".encode()


_XREF = re.compile(rb"\nxref\r?\n0 (\d+)\r?\n")
_TRAILER = re.compile(rb"trailer\s*<<(.*?)>>\s*startxref\s*(\d+)\s*%%EOF\s*$", re.DOTALL)


def normalise_pdf(data: bytes, iso: str, producer: str = "Skia/PDF (Chromium), normalised by dispel") -> bytes:
    """Chromium's PDF with the clock and the browser's version taken out: creation and modification
    dates from the recording, a producer without a version, and a fixed ID (a hash of the rest).
    The Info dictionary is rewritten and the cross-reference table recomputed around it.
    Raises ValueError when the file is not laid out as Chromium (Skia) writes PDFs."""
    xref = _XREF.search(data)
    trailer = _TRAILER.search(data)
    if not xref or not trailer:
        raise ValueError("no classic cross-reference table and trailer")
    info_ref = re.search(rb"/Info\s+(\d+)\s+0\s+R", trailer.group(1))
    if not info_ref:
        raise ValueError("the trailer names no Info dictionary")
    count = int(xref.group(1))
    table = data[xref.end() : xref.end() + 20 * count]
    offsets = [int(table[i * 20 : i * 20 + 10]) for i in range(count)]
    num = int(info_ref.group(1))
    start = offsets[num]
    end = data.index(b"endobj", start) + len(b"endobj")
    old = data[start:end]
    date = b"(" + pdf_date(iso) + b")"
    new = re.sub(rb"/(CreationDate|ModDate)\s*\([^)]*\)", lambda m: b"/" + m.group(1) + b" " + date, old)
    new = re.sub(rb"/Producer\s*\((?:\\.|[^\\)])*\)", b"/Producer (" + producer.encode() + b")", new)
    new = re.sub(rb"/Creator\s*\((?:\\.|[^\\)])*\)", b"/Creator (dispel handin)", new)
    delta = len(new) - len(old)
    body = data[:start] + new + data[end : xref.start() + 1]
    shifted = [o + delta if o > start else o for o in offsets]
    lines = [b"0000000000 65535 f \n"] + [b"%010d 00000 n \n" % o for o in shifted[1:]]
    fixed_id = hashlib.md5(body).hexdigest().encode()
    trailer_dict = re.sub(rb"\s*/ID\s*\[[^\]]*\]", b"", trailer.group(1))
    trailer_dict = trailer_dict.rstrip() + b"\n/ID [<" + fixed_id + b"> <" + fixed_id + b">]"
    return (
        body + b"xref\n0 %d\n" % count + b"".join(lines)
        + b"trailer\n<<" + trailer_dict + b">>\nstartxref\n%d\n%%%%EOF\n" % (len(body))
    )


def pdf_objects(data: bytes) -> dict[int, tuple[bytes, bytes | None]]:
    """Object number -> (its dictionary text, its stream's bytes inflated when FlateDecode)."""
    out: dict[int, tuple[bytes, bytes | None]] = {}
    for m in re.finditer(rb"(?m)^(\d+) 0 obj\s*", data):
        start = m.end()
        end = data.find(b"endobj", start)
        head_end = data.find(b"stream", start, end)
        if head_end < 0:
            out[int(m.group(1))] = (data[start:end], None)
            continue
        head = data[start:head_end]
        length = re.search(rb"/Length\s+(\d+)(?!\s+\d+\s+R)", head)
        s = head_end + len(b"stream")
        s += 2 if data[s : s + 2] == b"\r\n" else 1
        raw = data[s : s + int(length.group(1))] if length else data[s : data.find(b"endstream", s)]
        if b"/FlateDecode" in head:
            try:
                raw = zlib.decompress(raw)
            except zlib.error:
                pass
        out[int(m.group(1))] = (head, raw)
    return out


def _cmap(data: bytes) -> dict[bytes, str]:
    """A ToUnicode CMap's bfchar and bfrange entries: glyph code bytes -> text."""
    out: dict[bytes, str] = {}
    for block in re.findall(rb"beginbfchar(.*?)endbfchar", data, re.DOTALL):
        for src, dst in re.findall(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
            out[bytes.fromhex(src.decode())] = bytes.fromhex(dst.decode()).decode("utf-16-be", errors="replace")
    for block in re.findall(rb"beginbfrange(.*?)endbfrange", data, re.DOTALL):
        for lo, hi, dst in re.findall(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
            a, b, width = int(lo, 16), int(hi, 16), len(lo) // 2
            first = int(dst, 16)
            for i in range(b - a + 1):
                out[(a + i).to_bytes(width, "big")] = chr(first + i)
    return out


def _show(stream: bytes, fonts: Mapping[bytes, Mapping[bytes, str]]) -> str:
    """The text a content stream shows: its Tj/TJ strings through the current font's ToUnicode map."""
    out = []
    current: Mapping[bytes, str] = {}
    for m in re.finditer(rb"/(\S+)\s+[\d.]+\s+Tf|\[((?:[^\]\\]|\\.)*)\]\s*TJ|(<[0-9A-Fa-f]*>|\((?:\\.|[^\\)])*\))\s*Tj|(ET)", stream, re.DOTALL):
        if m.group(1):
            current = fonts.get(m.group(1), {})
        elif m.group(4):
            out.append("\n")
        else:
            width = max((len(k) for k in current), default=1)
            for part in re.findall(rb"<[0-9A-Fa-f]*>|\((?:\\.|[^\\)])*\)", m.group(2) or m.group(3)):
                raw = pdf_string(part)
                out.append("".join(current.get(raw[i : i + width], "") for i in range(0, len(raw), width)))
    return "".join(out)


def pdf_page_texts(data: bytes) -> list[str]:
    """The text of each page of a PDF, in page order, decoded through its fonts' ToUnicode maps
    (enough for Chromium's PDFs: classic objects, each page's fonts in its own resources)."""
    objs = pdf_objects(data)

    def ref(head: bytes, name: bytes) -> int | None:
        m = re.search(rb"/" + name + rb"\s+(\d+)\s+0\s+R", head)
        return int(m.group(1)) if m else None

    def unicode_map(font: int) -> dict[bytes, str]:
        tu = ref(objs.get(font, (b"", None))[0], b"ToUnicode")
        stream = objs[tu][1] if tu is not None and tu in objs else None
        return _cmap(stream) if stream is not None else {}

    catalog = next((h for h, _ in objs.values() if re.search(rb"/Type\s*/Catalog\b", h)), b"")
    pages: list[int] = []

    def walk(n: int | None) -> None:
        head = objs.get(n, (b"", None))[0] if n is not None else b""
        if re.search(rb"/Type\s*/Pages\b", head):
            kids = re.search(rb"/Kids\s*\[([^\]]*)\]", head)
            for kid in re.findall(rb"(\d+)\s+0\s+R", kids.group(1) if kids else b""):
                walk(int(kid))
        elif n is not None and re.search(rb"/Type\s*/Page\b", head):  # (head is b"" when n is None)
            pages.append(n)

    walk(ref(catalog, b"Pages"))
    out = []
    for n in pages:
        head = objs[n][0]
        font_dict = re.search(rb"/Font\s*<<(.*?)>>", head, re.DOTALL)
        fonts = {name: unicode_map(int(num)) for name, num in re.findall(rb"/(\S+?)\s+(\d+)\s+0\s+R", font_dict.group(1) if font_dict else b"")}
        contents = re.search(rb"/Contents\s*(\[[^\]]*\]|\d+\s+0\s+R)", head)
        streams = [int(c) for c in re.findall(rb"(\d+)\s+0\s+R", contents.group(1))] if contents else []
        out.append("".join(_show(objs[c][1] or b"", fonts) for c in streams if c in objs))
    return out


def pdf_text(data: bytes) -> str:
    """The text a PDF shows, page after page."""
    return "\n".join(pdf_page_texts(data))


def markdown_links(md: str) -> list[str]:
    """The external links of report.md, in order (as dispel check reads a page's links)."""
    from ..check.links import is_external
    from ..check.links import page_links as md_page_links

    return [link.target for link in md_page_links("handin/report.md", md) if is_external(link.target)]
