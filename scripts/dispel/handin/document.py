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

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape

import markdown

from ..chains import fold
from ..check import prose
from ..check.links import PageLink
from ..model import PYTHON, Chain, Source, normalize_dist, text_lines
from ..pins.licenses import LicenseRow
from ..render import pages as render
from ..render.markup import inline_code, md_text
from ..render.pagemodel import HopLinks, HopView, JourneyPage

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
    hop: int = 0  # the hop's number on the page (one per recorded call)
    role: str = ""  # "line" for a hop's permalink, "" for a repository link
    nth: int = 0  # the permalink's place in its entry: 0 the call's line, 1.. the lines it ran when the chain came back


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
        out.append(Expected(url, journey, v.page_number, "line" if not v.hop.func.is_c else ""))
    for k, r in enumerate(v.returns, 1):
        url = _permalink(r.links)
        if url:
            out.append(Expected(url, journey, v.page_number, "line" if not r.hop.func.is_c else "", k))
    return out


def page_links(expected: Iterable[Expected]) -> list[PageLink]:
    """The expected links as check.PageLinks of their journey's page: check_permalinks proves each
    by its blob, and a hop's line against the chain."""
    return [PageLink(f"chains/{e.journey}.md" if e.journey else "handin", 0, e.url, e.hop, e.role, e.nth) for e in expected]


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
    numbers = fold.page_numbers(chain)
    for e in fold.entries(chain):  # one section per recorded call, numbered as the page numbers it
        texts: list[str] = []
        for n in e.numbers:
            text = render.hop_annotation(chain, n - 1, shorts, numbers)
            if text and text.strip() not in texts:
                texts.append(text.strip())
        if texts:
            hop = chain.hops[e.hop - 1]
            out.append(f"### {e.number} · {inline_code(hop.func.qualname)} {{ #hop-{e.number} }}\n\n" + "\n\n".join(texts) + "\n")
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
        f"##### {index}. {inline_code(func.qualname)} (hop {v.page_number}) {{ #{_anchor(page.journey, v.page_number)} }}\n",
        f"- **Function:** {inline_code(func.module)} · {inline_code(func.qualname)}",
        f"- **Code:** {_code_cell(v.hop, v.links, app_note)}",
        f"- **Thread:** {inline_code(v.hop.thread)}",
    ]
    for r in v.returns:
        out.append(f"- **Came back:** {_code_cell(r.hop, r.links, app_note)} (the same call, thread {inline_code(r.hop.thread)})")
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
        out.append(f"**{md_text(s.title)}**\n")
        out += ["| Hop | Function | Code | Thread |", "|---:|---|---|---|"]
        for v in s.entries:  # one row per recorded call, then a row per time the chain came back to it
            rows = [(f'<a id="{_anchor(page.journey, v.page_number)}"></a>{v.page_number}', v.hop, v.links)]
            rows += [(f"{v.page_number} (came back)", r.hop, r.links) for r in v.returns]
            for n, hop, links in rows:
                out.append(f"| {n} | {render.func_label(hop.func)} | {_code_cell(hop, links, app_note)} | {inline_code(hop.thread)} |")
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
            f"Recorded by scenario {inline_code(page.chain.scenario)}: {sum(len(s.entries) for s in page.sections)} hops (one per recorded call) across "
            f"{len(page.threads)} thread(s); its {len(keys)} key hops below, the other "
            f"{sum(len(s.entries) for s in page.sections if s.folded)} in [the appendix](#appendix-{page.journey}).\n"
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


def markdown_links(md: str) -> list[str]:
    """The external links of report.md, in order (as dispel check reads a page's links)."""
    from ..check.links import is_external
    from ..check.links import page_links as md_page_links

    return [link.target for link in md_page_links("handin/report.md", md) if is_external(link.target)]
