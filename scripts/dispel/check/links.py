"""Link verification over given facts (pure): site links and anchors, source permalinks, drift of generated files."""
from __future__ import annotations

import dataclasses
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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

# A file the CLI reads for a link: (distribution, installed path) as the lock names it.
FileKey = tuple[str, str]

# --------------------------------------------------------------------------- pages

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_MD_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>\n]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
_HTML_LINK = re.compile(r"""\b(?:href|src)\s*=\s*(["'])(.*?)\1""")
_HTML_ID = re.compile(r"""\b(?:id|name)\s*=\s*(["'])(.*?)\1""")
_ATTR_ID = re.compile(r"\{[:\s]*[^{}]*?#([\w-]+)[^{}]*\}")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_SNIPPET = re.compile(r"""^\s*--8<--\s+(["'])(.+?)\1\s*$""")
HOP_HEADING = re.compile(r"\{\s*#hop-(\d+)\s*\}")
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
        m = HEADING.match(raw) if HEADING.match(line) else None
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
        m = HOP_HEADING.search(line)
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


def clipped(text: str, limit: int = 80) -> str:
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
            return [f"{at}: line {sl.start} reads {clipped(shown)}, the chain recorded {clipped(hop.line_text)} for hop {link.hop} ({func.key})"]
        return []
    span = (func.first_line, max(func.first_line, func.last_line))
    if (sl.start, sl.end) != span:
        return [f"{at}: links lines {sl.start}-{sl.end}, hop {link.hop} ({func.key}) is defined at lines {span[0]}-{span[1]}"]
    name = _def_name(func.qualname)
    if name and not re.match(rf"(async\s+def|def|class)\s+{re.escape(name)}\b", shown):
        return [f"{at}: line {sl.start} reads {clipped(shown)}, not the def of {func.qualname} (hop {link.hop})"]
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


