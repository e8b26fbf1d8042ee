"""Link verification over given facts (pure): site links and anchors, source permalinks, drift of generated files."""
from __future__ import annotations

import dataclasses
import difflib
import json
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from markdown.extensions.toc import slugify

from ..chains import fold
from ..model import (
    PINNED_COMMIT,
    PYTHON,
    Chain,
    DispelError,
    FilePin,
    Hop,
    Lock,
    Pin,
    source_lines,
)
from ..pins.forges import parse_source_url
from ..pins.permalinks import ref as pin_ref
from ..pins.pinning import blob_sha
from ..review.diff import compare_chains
from ..review.diff import describe as describe_chain_diff

# A file the CLI reads for a link: (distribution, installed path) as the lock names it.
FileKey = tuple[str, str]

# --------------------------------------------------------------------------- pages

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_MD_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>\n]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
_HTML_LINK = re.compile(r"""\b(?:href|src)\s*=\s*(["'])(.*?)\1""")
_HTML_ID = re.compile(r"""\b(?:id|name)\s*=\s*(["'])(.*?)\1""")
_ATTR_ID = re.compile(r"\{[:\s]*[^{}]*?#([\w-]+)[^{}]*\}")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_SNIPPET = re.compile(r"""^\s*--8<--\s+(["'])(.+?)\1\s*$""")
_HOP_HEADING = re.compile(r"\{\s*#hop-(\d+)\s*\}")
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)
# The bullets of a hop in a journey page (dispel.render.pages.render_hop) that carry its permalinks.
LINE_LABEL = "**Executed line:**"
DEF_LABEL = "**Definition:**"


@dataclass(frozen=True)
class PageLink:
    """A link found in a page: where it stands, and for a journey page the hop section it belongs to."""

    page: str  # path relative to docs/
    line: int
    target: str
    hop: int = 0  # the hop section it sits in (0: outside any): the page's number of the entry
    role: str = ""  # "line" (executed line), "definition", or ""
    nth: int = 0  # an executed line's place in its entry: 0 the call's, 1.. the lines the call ran when it resumed

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


@dataclass
class LinkResult:
    link: PageLink
    problems: list[str] = field(default_factory=list)


def prose_lines(text: str, markdown_fences: bool = False) -> list[str]:
    """The page's lines with fenced blocks and code spans blanked: links and ids in code are not links.
    ``markdown_fences``: a block fenced as ``markdown`` (a chain to copy) keeps its lines, whose links are real."""
    out = []
    fence = ""
    kept = False
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip()[len(m.group(1)) :].strip():
                fence = ""
                out.append("")
            else:
                out.append(_CODE_SPAN.sub(lambda s: " " * len(s.group(0)), line) if kept else "")
        elif m:
            fence = m.group(1)
            kept = markdown_fences and line.strip()[len(fence):].strip() == "markdown"
            out.append("")
        else:
            out.append(_CODE_SPAN.sub(lambda s: " " * len(s.group(0)), line))
    return out


def expand_snippets(text: str, snippets: Mapping[str, str]) -> tuple[str, list[str]]:
    """``--8<-- "name"`` lines replaced by the snippet (as pymdownx.snippets does); the missing ones."""
    out, missing = [], []
    for line in text.split("\n"):
        m = _SNIPPET.match(line)
        if m and m.group(2) in snippets:
            out.append(snippets[m.group(2)].rstrip("\n"))
        else:
            if m:
                missing.append(m.group(2))
            out.append(line)
    return "\n".join(out), missing


def _heading_text(raw: str) -> str:
    """Heading Markdown -> the plain text toc slugifies: links, code ticks, emphasis and tags dropped."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", raw)
    text = re.sub(r"<[^>]+>", "", text)
    return re.sub(r"[`*_]", "", text).strip()


def page_anchors(text: str) -> set[str]:
    """Every id a page defines: explicit ``{ #id }``, slugs of other headings, HTML id/name attributes."""
    ids: set[str] = set()
    slugs: set[str] = set()
    for line, raw in zip(prose_lines(text), text.split("\n")):
        ids.update(m.group(2) for m in _HTML_ID.finditer(line))
        explicit = [m.group(1) for m in _ATTR_ID.finditer(line)]
        ids.update(explicit)
        # A heading's code spans are part of its slug: read it from the raw line.
        m = _HEADING.match(raw) if _HEADING.match(line) else None
        if m and not explicit:
            slug = base = slugify(_heading_text(m.group(2)), "-")
            n = 0
            while slug in slugs:  # toc makes repeated headings unique with _1, _2 …
                n += 1
                slug = f"{base}_{n}"
            slugs.add(slug)
    return ids | slugs


def page_links(page: str, text: str) -> list[PageLink]:
    """Every Markdown and HTML link of a page, outside code, with its hop section and role."""
    out: list[PageLink] = []
    hop = 0
    nth = -1
    for n, line in enumerate(prose_lines(text, markdown_fences=True), 1):
        m = _HOP_HEADING.search(line)
        if m and line.lstrip().startswith("#"):
            hop, nth = int(m.group(1)), -1
        role = "line" if LINE_LABEL in line else "definition" if DEF_LABEL in line else ""
        nth += role == "line"
        targets = [m.group(1).strip("<>") for m in _MD_LINK.finditer(line)]
        targets += [m.group(2) for m in _HTML_LINK.finditer(line)]
        out.extend(PageLink(page, n, t, hop, role, max(nth, 0) if role == "line" else 0) for t in targets)
    return out


def is_external(target: str) -> bool:
    return bool(_EXTERNAL.match(target))


def check_internal(pages: Mapping[str, str], files: Iterable[str], snippets: Mapping[str, str] = {}) -> list[LinkResult]:
    """Internal links of the site's pages: the target file exists and is a page, the anchor is in it.

    ``pages``: path relative to docs/ -> Markdown; ``files``: every file under docs/ (for
    stylesheets and images); ``snippets``: docs/snippets/ name -> text, expanded into pages first.
    """
    files = set(files)
    expanded = {}
    results: list[LinkResult] = []
    for page, text in pages.items():
        expanded[page], missing = expand_snippets(text, snippets)
        for name in missing:
            results.append(LinkResult(PageLink(page, 0, f"--8<-- {name}"), [f"{page}: snippet {name!r} does not exist in docs/snippets/"]))
    anchors = {page: page_anchors(text) for page, text in expanded.items()}
    for page, text in expanded.items():
        for link in page_links(page, text):
            if is_external(link.target):
                continue
            path, _, anchor = link.target.partition("#")
            path = unquote(path)
            target = posixpath.normpath(posixpath.join(posixpath.dirname(page), path)) if path else page
            result = LinkResult(link)
            results.append(result)
            if target not in files:
                result.problems.append(f"{link.where}: link {link.target!r}: {target} does not exist")
            elif anchor and target not in anchors:
                result.problems.append(f"{link.where}: link {link.target!r}: {target} is not a page, it has no anchors")
            elif anchor and unquote(anchor) not in anchors[target]:
                result.problems.append(f"{link.where}: link {link.target!r}: no anchor #{anchor} in {target}")
    return results


# --------------------------------------------------------------------------- source permalinks

def lock_file(lock: Lock, repo: str, ref: str, path: str) -> tuple[Pin, FilePin] | str:
    """The lock's pin and file behind REPO@REF:PATH, or why there is none (one line)."""
    pins = [p for p in (lock.python, *lock.dists) if p.repo.lower() == repo.lower()]
    if not pins:
        return f"{repo} is not a repository in the lock"
    pin = next((p for p in pins if pin_ref(p) == ref), None)
    if pin is None:
        return f"{repo} at {ref} is not pinned: the lock pins {', '.join(sorted({pin_ref(p) for p in pins}))}"
    found = next((f for f in (*pin.files, *pin.licenses) if f.path == path), None)
    if found is None:
        return f"{path} is not among the files the lock pins for {repo} at {ref[:12]}"
    return pin, found


def permalink_files(links: Iterable[PageLink], lock: Lock) -> dict[FileKey, str]:
    """The installed files behind the permalinks (the CLI reads these) -> their locked blob."""
    out = {}
    for link in links:
        sl = parse_source_url(link.target)
        found = lock_file(lock, sl.repo, sl.ref, sl.path) if sl else None
        if isinstance(found, tuple):
            out[(found[0].dist, found[1].installed)] = found[1].blob
    return out


def _def_name(qualname: str) -> str | None:
    """The name a ``def``/``class`` line carries for a qualname; None for <lambda>, <genexpr> …"""
    last = qualname.rsplit(".", 1)[-1]
    return None if last.startswith("<") else last


def _hop_of(link: PageLink, chains: Mapping[str, Chain]) -> Hop | None:
    journey = posixpath.splitext(posixpath.basename(link.page))[0]
    chain = chains.get(journey) if link.page.startswith("chains/") else None
    if chain is None:
        return None
    # A page numbers its entries, one per recorded call (dispel.chains.fold.entries); an entry's
    # executed lines are its call's, then the lines it ran each time the chain came back to it.
    entry = next((e for e in fold.entries(chain) if e.number == link.hop), None)
    if entry is None or link.nth >= len(entry.numbers):
        return None
    return chain.hops[entry.numbers[link.nth] - 1]


def _shown(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


@dataclass(frozen=True)
class FileText:
    """A file's blob, recomputed from its bytes (never taken on trust), and its stripped lines."""

    blob: str
    lines: tuple[str, ...]

    @classmethod
    def of(cls, data: bytes) -> FileText:
        return cls(blob_sha(data), tuple(ln.decode("utf-8", errors="replace").strip() for ln in source_lines(data)))


def check_permalink(
    link: PageLink, lock: Lock | None, chains: Mapping[str, Chain], contents: Mapping[FileKey, FileText | str], origin: str
) -> list[str]:
    """The problems of one permalink: pinned by the lock, file proven by its blob, lines inside and
    showing what the chain recorded. ``contents`` holds the file from ``origin`` ("installed"
    offline, the raw host online), or why it could not be read."""
    sl = parse_source_url(link.target)
    if sl is None:
        return []
    at = f"{link.where}: {link.target}"
    if lock is None:
        return [f"{at}: there is no lock to pin it (run `make pin`)"]
    found = lock_file(lock, sl.repo, sl.ref, sl.path)
    if isinstance(found, str):
        return [f"{at}: {found}"]
    pin, fpin = found
    if pin.pinned != PINNED_COMMIT and pin.tag != sl.ref:
        return [f"{at}: names {sl.ref}, the lock pins tag {pin.tag}"]
    data = contents.get((pin.dist, fpin.installed))
    if not isinstance(data, FileText):
        why = f": {data}" if data else ""
        return [f"{at}: {pin.dist} {fpin.installed} could not be read ({origin}){why}"]
    if data.blob != fpin.blob:
        return [f"{at}: the {origin} file {fpin.installed} has blob {data.blob}, not the pinned blob {fpin.blob} of {pin.dist} {pin.version}"]
    lines = data.lines
    if fpin in pin.licenses and not sl.start and not sl.end:
        return []  # a license file is linked whole: proven by its blob
    if sl.start < 1 or sl.end < sl.start or sl.end > len(lines):
        return [f"{at}: lines {sl.start}-{sl.end} are not inside {sl.path} ({len(lines)} lines)"]
    hop = _hop_of(link, chains)
    if hop is None or not link.role:
        return []
    func = hop.func
    if func.source.path != fpin.installed:
        return [f"{at}: hop {link.hop} ({func.key}) runs in {func.source.path}, the link shows {fpin.installed}"]
    shown = lines[sl.start - 1]
    if link.role == "line":
        if sl.start != hop.line:
            return [f"{at}: links line {sl.start}, hop {link.hop} ({func.key}) ran line {hop.line}"]
        if hop.line_text and shown != hop.line_text:
            return [f"{at}: line {sl.start} reads {_shown(shown)}, the chain recorded {_shown(hop.line_text)} for hop {link.hop} ({func.key})"]
        return []
    span = (func.first_line, max(func.first_line, func.last_line))
    if (sl.start, sl.end) != span:
        return [f"{at}: links lines {sl.start}-{sl.end}, hop {link.hop} ({func.key}) is defined at lines {span[0]}-{span[1]}"]
    name = _def_name(func.qualname)
    if name and not re.match(rf"(async\s+def|def|class)\s+{re.escape(name)}\b", shown):
        return [f"{at}: line {sl.start} reads {_shown(shown)}, not the def of {func.qualname} (hop {link.hop})"]
    return []


def check_permalinks(
    links: Sequence[PageLink],
    lock: Lock | None,
    chains: Mapping[str, Chain],
    contents: Mapping[FileKey, bytes | str],
    origin: str = "installed",
) -> list[LinkResult]:
    """One result per GitHub source link among ``links``; ``contents``: a file's bytes or why it is unreadable."""
    # Each file is hashed and split once, however many links point into it.
    texts = {key: FileText.of(data) if isinstance(data, bytes) else data for key, data in contents.items()}
    return [
        LinkResult(link, check_permalink(link, lock, chains, texts, origin))
        for link in links
        if parse_source_url(link.target)
    ]


def recording_drift(chains: Iterable[Chain], lock: Lock) -> dict[str, tuple[str, str]]:
    """Distributions whose hops ran another version than the lock pins: dist -> (recorded, locked)."""
    out = {}
    for chain in chains:
        for hop in chain.hops:
            src = hop.func.source
            if src.dist in ("builtin", "sample_app") or src.dist in out:
                continue
            try:
                pin = lock.pin(src.dist)
            except DispelError:
                continue
            if src.version != pin.version:
                out[src.dist] = (src.version, pin.version)
    return dict(sorted(out.items()))


def fold_recording_drift(results: Sequence[LinkResult], lock: Lock, drift: Mapping[str, tuple[str, str]]) -> tuple[list[str], list[LinkResult]]:
    """One line per distribution recorded at another version than the lock's, counting the links
    into its repository that fail for that reason alone; the other results unchanged."""
    repos = {lock.pin(d).repo.lower(): d for d in drift}
    folded: dict[str, int] = {}
    kept = []
    for r in results:
        sl = parse_source_url(r.link.target)
        dist = repos.get(sl.repo.lower()) if sl and r.problems else None
        if dist is None:
            kept.append(r)
        else:
            folded[dist] = folded.get(dist, 0) + 1
    lines = []
    for dist, (recorded, locked) in drift.items():
        n = folded.get(dist, 0)
        links = f" ({n} link{'s' if n != 1 else ''} into its repository fail{'' if n != 1 else 's'} until then)" if n else ""
        lines.append(f"{dist}: chains recorded with {recorded}, lock {locked}: run make pin, then make regen{links}")
    return lines, kept


def fold_foreign_python(results: Sequence[LinkResult], lock: Lock, python: str) -> tuple[int, list[LinkResult]]:
    """On a Python other than the one the lock pins (the traces were recorded on it), the
    standard-library links cannot be proven: this interpreter's files are not those. Returns
    how many links go to CPython's repository (unproven: never counted as verified) and the others."""
    if lock.python.version == python:
        return 0, list(results)
    repo = lock.python.repo.lower()
    kept = [r for r in results if not ((sl := parse_source_url(r.link.target)) and sl.repo.lower() == repo)]
    return len(results) - len(kept), kept


def without_stdlib_lines(chain: Chain) -> Chain:
    """A chain whose standard-library hops show no line text (their texts are read from the
    installed standard library, which only the Python that recorded them has)."""
    hops = tuple(dataclasses.replace(h, line_text="") if h.func.source.dist == PYTHON else h for h in chain.hops)
    return dataclasses.replace(chain, hops=hops)


_NUMBERS = {w: n for n, w in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"])}
_SCENARIO_COUNT = re.compile(rf"\b({'|'.join(_NUMBERS)}|\d+) scenarios are recorded", re.IGNORECASE)


def stale_site_texts(
    index: str, how: str, journeys: Sequence[str], edges: Iterable[str], scenarios: Sequence[str]
) -> list[str]:
    """Hand-written site texts that state what the catalogue and the chains know, checked
    against them: the home page's journey table links every journey page and no other, its edge
    table names every edge the chains use, it names every scenario recorded, and how.md counts and
    names every scenario recorded."""
    out = []
    table = index.partition("## The journeys")[2].partition("\n## ")[0]
    out += [f"docs/index.md: the journey table does not link chains/{j}.md" for j in journeys if f"(chains/{j}.md)" not in table]
    linked = dict.fromkeys(re.findall(r"\(chains/([^)#]+)\.md[)#]", table))
    out += [f"docs/index.md: the journey table links chains/{j}.md, which is no journey of the catalogue" for j in linked if j not in journeys]
    out += [f"docs/index.md: does not name the scenario `{s}` that records its journeys" for s in scenarios if f"`{s}`" not in index]
    out += [f"docs/index.md: the edge table has no row for `{e}`, an edge the chains use" for e in sorted(set(edges)) if f"| `{e}` |" not in index]
    for m in _SCENARIO_COUNT.finditer(how):
        said = _NUMBERS.get(m.group(1).lower(), int(m.group(1)) if m.group(1).isdigit() else None)
        if said != len(scenarios):
            out.append(f"docs/how.md: says {m.group(0)!r}; the catalogue records {len(scenarios)}: {', '.join(scenarios)}")
    out += [f"docs/how.md: does not name the scenario `{s}`" for s in scenarios if f"`{s}`" not in how]
    return out


def unlisted_pages(mkdocs_config: str, pages: Iterable[str]) -> list[str]:
    """Generated pages (paths relative to docs/) the mkdocs.yml navigation does not list."""
    return [f"mkdocs.yml: the navigation does not list {p}" for p in pages if not re.search(rf":\s*{re.escape(p)}\s*$", mkdocs_config, re.MULTILINE)]


@dataclass(frozen=True)
class Summary:
    checked: int
    verified: int
    failed: int

    def line(self, seconds: float) -> str:
        return f"links checked: {self.checked}, verified: {self.verified}, failed: {self.failed} in {seconds:.2f}s"


def summarize(results: Iterable[LinkResult]) -> Summary:
    results = list(results)
    failed = sum(1 for r in results if r.problems)
    return Summary(len(results), len(results) - failed, failed)


def merge_results(first: Sequence[LinkResult], second: Sequence[LinkResult]) -> list[LinkResult]:
    """Two passes over the same links (offline, online) -> one result per link with both passes' problems."""
    extra: dict[PageLink, list[str]] = {}
    for r in second:
        extra.setdefault(r.link, []).extend(r.problems)
    merged = [LinkResult(r.link, r.problems + extra.pop(r.link, [])) for r in first]
    return merged + [LinkResult(link, p) for link, p in extra.items()]


# --------------------------------------------------------------------------- drift


def diff_chains(journey: str, old: Chain | None, new: Chain | None) -> list[str]:
    """How the committed chain of a journey differs from the regenerated one: per hop, the field that changed."""
    return [f"{journey}: {line}" for line in describe_chain_diff(compare_chains(journey, old, new))]


def hop_sections(page: str) -> dict[int, str]:
    """A journey page cut at its hop headings: {0: everything before hop 1, n: hop n's section}."""
    out: dict[int, list[str]] = {0: []}
    current = 0
    for line in page.split("\n"):
        m = _HOP_HEADING.search(line)
        if m and line.lstrip().startswith("#"):
            current = int(m.group(1))
            out[current] = []
        out.setdefault(current, []).append(line)
    return {n: "\n".join(lines) for n, lines in out.items()}


_TOKEN = re.compile(r"\s+|\||[^\s|]+")


def changed_words(old: str, new: str) -> str:
    """``'old words' → 'new words'``: the first run of words that differs between two lines."""
    a, b = _TOKEN.findall(old), _TOKEN.findall(new)
    ops = [op for op in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes() if op[0] != "equal"]
    if not ops:
        return f"{_shown(old)} → {_shown(new)}"
    _, i1, i2, j1, j2 = ops[0]
    more = f" (and {len(ops) - 1} more change{'s' if len(ops) > 2 else ''} on the line)" if len(ops) > 1 else ""
    return f"{_shown(''.join(a[i1:i2]).strip())} → {_shown(''.join(b[j1:j2]).strip())}{more}"


def first_difference(old: str, new: str) -> str:
    """``line N: 'old words' → 'new words'`` for the first line two texts differ in."""
    a, b = old.split("\n"), new.split("\n")
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"line {i + 1}: {changed_words(x, y)}"
    if len(a) == len(b):
        return "none: the texts are equal"
    longer, what = (b, "added") if len(b) > len(a) else (a, "removed")
    return f"line {min(len(a), len(b)) + 1}: {len(a)} lines → {len(b)} lines, {what} {_shown(longer[min(len(a), len(b))])}"


def _section_of(text: str, line: int) -> str:
    """The heading (without #s and attributes) of the section a 1-based line stands in; "" before any."""
    heading = ""
    for n, ln in enumerate(prose_lines(text)[:line], 1):
        m = _HEADING.match(ln)
        if m:
            heading = re.sub(r"\s*\{[^{}]*\}\s*$", "", m.group(2))
    return heading


def diff_page(path: str, old: str, new: str, chain: Chain | None, notes: Mapping[str, str]) -> list[str]:
    """Why a committed generated page differs from its regeneration, named by hop or by section.

    ``chain``: the regenerated chain of the page (None for other pages); ``notes``: annotation
    key -> current text, to tell a changed annotation from other changes.
    """
    if old == new:
        return []
    if chain is None:
        why = first_difference(old, new)
        line = int(why.split(":", 1)[0].removeprefix("line "))
        section = _section_of(new, line) or _section_of(old, line)
        where = f"section {section!r}" if section else "the page head"
        return [f"{path}: {where} differs from a regeneration: {why}"]
    out = []
    before, after = hop_sections(old), hop_sections(new)
    for n in sorted(set(before) | set(after)):
        a, b = before.get(n, ""), after.get(n, "")
        if a == b:
            continue
        hop = chain.hops[n - 1] if 1 <= n <= len(chain.hops) else None
        where = f"hop {n} ({hop.func.key})" if hop else "the page head" if n == 0 else f"hop {n}"
        why = first_difference(a, b)
        key = hop.func.key if hop else f"journey:{chain.journey}"
        note = notes.get(key)
        if note and note.strip() in b and note.strip() not in a:
            why = f"the annotation of {key} changed"
        out.append(f"{path}: {where} differs from a regeneration: {why}")
    return out


# A trace file's rows (traces/README.md, schema 1), column by column.
TRACE_ROWS = {
    "funcs": ("module", "qualname", "dist", "version", "path", "first_line", "last_line", "overloaded"),
    "threads": ("name", "started_by", "root"),
    "wakeups": ("notify", "wait"),
    "events": ("thread", "parent", "call_line", "func", "step", "args", "ret", "raised", "return_line"),
}


def _func_key(row: Sequence[object]) -> str:
    module, qualname, first, overloaded = row[0], row[1], row[5], row[7]
    return f"{module}:{qualname}" + (f"@{first}" if overloaded else "")


def _rows(data: Mapping[str, object], name: str) -> list[list[Any]]:
    """The rows of one table of a parsed trace (JSON: their cells are whatever the file holds)."""
    rows = data.get(name)
    return [r for r in rows if isinstance(r, list)] if isinstance(rows, list) else []


def _versions(data: Mapping[str, object]) -> dict[str, object]:
    versions = data.get("versions")
    return versions if isinstance(versions, dict) else {}


def _names(items: Iterable[str], limit: int = 3) -> str:
    items = list(items)
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def diff_traces(old: Mapping[str, object], new: Mapping[str, object]) -> list[str]:
    """How a fresh recording differs from the committed trace, field by field (parsed JSON of both).

    Versions are named per distribution (``versions: python-engineio 4.13.3 → 4.13.2``); functions
    by key and the column that changed; events by index, thread, function and the column. A
    function whose only change is the version a changed ``versions`` entry explains is not repeated.
    """
    out = []
    for key in ("schema", "scenario", "python"):
        if old.get(key) != new.get(key):
            out.append(f"{key}: {old.get(key)} → {new.get(key)}")
    va, vb = _versions(old), _versions(new)
    versions = [f"{d} {va.get(d, '(none)')} → {vb.get(d, '(none)')}" for d in sorted(set(va) | set(vb)) if va.get(d) != vb.get(d)]
    if versions:
        out.append(f"versions: {', '.join(versions)}")
    if old.get("steps") != new.get("steps"):
        out.append(f"steps: {old.get('steps')} → {new.get('steps')}")
    fa = {_func_key(r): r for r in _rows(old, "funcs") if len(r) >= 8}
    fb = {_func_key(r): r for r in _rows(new, "funcs") if len(r) >= 8}
    if set(fa) - set(fb):
        out.append(f"funcs: no longer called: {_names(sorted(set(fa) - set(fb)))}")
    if set(fb) - set(fa):
        out.append(f"funcs: newly called: {_names(sorted(set(fb) - set(fa)))}")
    for key in sorted(set(fa) & set(fb)):
        a, b = fa[key], fb[key]
        cols = [c for c, x, y in zip(TRACE_ROWS["funcs"], a, b) if x != y]
        if cols == ["version"] and va.get(a[2]) == a[3] and vb.get(b[2]) == b[3]:
            continue  # explained by the versions line
        if "first_line" in cols or "last_line" in cols:
            out.append(f"funcs: {key} lines {a[5]}-{a[6]} → {b[5]}-{b[6]}")
            cols = [c for c in cols if c not in ("first_line", "last_line")]
        out += [f"funcs: {key} {c} {x} → {y}" for c, x, y in zip(TRACE_ROWS["funcs"], a, b) if c in cols]
    for name in ("threads", "wakeups"):
        ra, rb = _rows(old, name), _rows(new, name)
        if ra != rb:
            i = next((i for i, (x, y) in enumerate(zip(ra, rb)) if x != y), min(len(ra), len(rb)))
            at = f"first at row {i + 1}: {ra[i] if i < len(ra) else '(none)'} → {rb[i] if i < len(rb) else '(none)'}"
            out.append(f"{name}: {len(ra)} → {len(rb)} rows, {at}" if len(ra) != len(rb) else f"{name}: {at}")
    out += _diff_events(old, new)
    known = {"schema", "scenario", "python", "versions", "steps", *TRACE_ROWS}
    out += [f"{k}: changed" for k in sorted((set(old) | set(new)) - known) if old.get(k) != new.get(k)]
    return out


# The browser's version, in a trace file's header (its identity in the requests is a placeholder).
_BROWSER_VERSION = re.compile(r'^ "versions": \{[^\n]*?"chromium": "([^"]*)"', re.MULTILINE)


def browser_version(trace_text: str) -> str | None:
    """The browser version a trace file's header names (None for a trace made without one)."""
    found = _BROWSER_VERSION.search(trace_text, 0, 4096)
    return found.group(1) if found else None


def browser_update(old: str, new: str) -> tuple[str, str | None]:
    """A browser update, the one named normalisation of a fresh trace: ``new`` with the committed
    trace's browser version put back, and a note naming both versions (None when they agree,
    or when either trace has none). Any other difference is left for trace_drift to name."""
    a, b = _BROWSER_VERSION.search(old, 0, 4096), _BROWSER_VERSION.search(new, 0, 4096)
    if not (a and b) or a.group(1) == b.group(1):
        return new, None
    note = f"recorded with Chromium {b.group(1)}; the committed trace was recorded with Chromium {a.group(1)}"
    return new[:b.start(1)] + a.group(1) + new[b.end(1):], note


# The one race between the server's threads a recording does not pin down: which of the packets
# queued for a WebSocket the writer thread's Socket.poll takes together (a handler that queues two
# packets, with a blocking call between them, may or may not have been overtaken by the writer).
_WRITER = "engineio.socket:Socket._websocket_handler.<locals>.writer"
_POLL = "engineio.socket:Socket.poll"
_GET = "queue:Queue.get"


def _without_writer_polls(data: Mapping[str, object]) -> tuple[dict, dict, frozenset, int] | None:
    """A parsed trace without the WebSocket writers' Socket.poll calls and everything under them,
    indices renumbered: (the rest, the packets each writer thread's polls took in order, the
    calls under the polls as (thread, function, arguments), how many polls); None
    when the rows do not have the schema's shape."""
    try:
        funcs = [_func_key(r) for r in _rows(data, "funcs")]
        threads = _rows(data, "threads")
        events = _rows(data, "events")
        removed: set[int] = set()
        taken: dict[str, list[object]] = {}
        shapes: set[tuple] = set()
        polls = 0
        for i, row in enumerate(events):
            parent = row[1]
            if funcs[row[3]] != _POLL or not (0 <= parent < len(events)) or funcs[events[parent][3]] != _WRITER:
                continue
            polls += 1
            thread = threads[row[0]][0]
            members, j = {i}, i + 1
            while j < len(events) and events[j][1] in members:
                members.add(j)
                j += 1
            for k in sorted(members):
                e = events[k]
                shapes.add((thread, funcs[e[3]], tuple((a[0], a[1]) for a in e[5])))
                if e[1] == i and funcs[e[3]] == _GET and not e[7] and e[6] and e[6][0] != "None":
                    taken.setdefault(thread, []).append(e[6][1])
            removed |= members
    except (IndexError, TypeError, KeyError):
        return None
    index: dict[int, int] = {-1: -1}
    kept: list[list[Any]] = []
    for i, row in enumerate(events):
        if i not in removed:
            index[i] = len(kept)
            kept.append(row)
    rest = dict(data)
    rest["events"] = [[r[0], index[r[1]], *r[2:]] for r in kept]
    rest["wakeups"] = [[index[n], index[w]] for n, w in _rows(data, "wakeups") if n not in removed and w not in removed]
    rest["threads"] = [[r[0], index.get(r[1], r[1]), index.get(r[2], r[2])] for r in threads]
    return rest, taken, frozenset(shapes), polls


def writer_batches(old: str, new: str) -> tuple[str, str | None]:
    """The server's one tolerated race, a named normalisation of a fresh trace: which queued
    packets a WebSocket writer's ``Socket.poll`` takes together. When ``new`` differs from
    ``old`` only in the writers' polls (how many there were and what is under them), and the
    polls took the same packets in the same order with calls of the same functions and
    arguments, it is ``old`` and a note; otherwise ``new`` as it is (None: no note), for
    trace_drift to name the difference. What the writer sent is outside the polls and compared
    as it is."""
    if old == new:
        return new, None
    try:
        a, b = json.loads(old), json.loads(new)
    except json.JSONDecodeError:
        return new, None
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return new, None
    ra, rb = _without_writer_polls(a), _without_writer_polls(b)
    if ra is None or rb is None or ra[:3] != rb[:3]:
        return new, None
    note = (f"a WebSocket writer's Socket.poll took the same packets in {rb[3]} polls, the committed trace's in {ra[3]} "
            f"(which queued packets a poll takes together is a race between the server's threads)")
    return old, note


def trace_drift(old: str, new: str) -> list[str]:
    """The differences of two trace files' texts, named by field (diff_traces); the first differing
    line only when a side is not JSON or the difference is in layout alone."""
    try:
        a, b = json.loads(old), json.loads(new)
    except json.JSONDecodeError:
        a = b = None
    found = diff_traces(a, b) if isinstance(a, dict) and isinstance(b, dict) else []
    ra, rb = (_without_writer_polls(a), _without_writer_polls(b)) if found else (None, None)
    if ra and rb and ra[3] != rb[3] and ra[0] != rb[0]:
        # The writers' polls took their packets in other batches too (writer_batches): name
        # what differs beside them, not the batches that come first.
        rows = ("threads", "wakeups", "events")
        found = [f"{d} (rows counted without the WebSocket writers' polls, whose batches differ too)" if d.startswith(rows) else d
                 for d in diff_traces(ra[0], rb[0])]
    return found or [f"layout at {first_difference(old, new)}"]


def _diff_events(old: Mapping[str, object], new: Mapping[str, object]) -> list[str]:
    """The first event that differs, by index, thread and function, naming the columns that changed."""
    def resolve(data: Mapping[str, object]) -> list[tuple[object, ...]]:
        funcs = [_func_key(r) if len(r) >= 8 else "?" for r in _rows(data, "funcs")]
        threads = [r[0] if r else "?" for r in _rows(data, "threads")]
        steps = data.get("steps")
        steps = steps if isinstance(steps, list) else []

        def name(seq: list, i: object) -> object:
            return seq[i] if isinstance(i, int) and 0 <= i < len(seq) else i

        out = []
        for r in _rows(data, "events"):
            r = list(r) + [None] * (len(TRACE_ROWS["events"]) - len(r))
            out.append((name(threads, r[0]), r[1], r[2], name(funcs, r[3]), name(steps, r[4]), *r[5:]))
        return out

    ea, eb = resolve(old), resolve(new)
    if ea == eb:
        return []
    i = next((i for i, (x, y) in enumerate(zip(ea, eb)) if x != y), min(len(ea), len(eb)))
    differ = sum(1 for x, y in zip(ea, eb) if x != y)
    count = f"{len(ea)} → {len(eb)} calls, " if len(ea) != len(eb) else f"{differ} of {len(ea)} differ, "
    if i >= len(ea) or i >= len(eb):
        extra = (eb if len(eb) > len(ea) else ea)[i]
        return [f"events: {count}from event {i}: {extra[0]} {extra[3]}"]
    a, b = ea[i], eb[i]
    cols = [f"{c} {_shown(str(x), 40)} → {_shown(str(y), 40)}" for c, x, y in zip(TRACE_ROWS["events"], a, b) if x != y]
    return [f"events: {count}first at event {i} ({b[0]}, {b[3]}): {', '.join(cols)}"]


def environment_reasons(
    traces: Mapping[str, tuple[str, Sequence[tuple[str, str]]]], python: str, installed: Mapping[str, str | None]
) -> list[str]:
    """Why a regeneration can differ: traces recorded on another Python or other library versions.

    ``traces``: scenario -> (python, [(distribution, version)]) from the trace headers.
    """
    out = []
    for scenario, (traced_python, versions) in sorted(traces.items()):
        if traced_python != python:
            out.append(f"trace {scenario} was recorded with Python {traced_python}, this is Python {python}")
        for dist, version in versions:
            now = installed.get(dist)
            if now != version:
                out.append(f"trace {scenario} was recorded with {dist} {version}, installed here: {now or 'none'}")
    return out
