"""Link verification over given facts (pure): site links and anchors, source permalinks, drift of generated files."""
from __future__ import annotations

import difflib
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

from markdown.extensions.toc import slugify

from .annotations import source_lines
from .model import PINNED_COMMIT, Chain, FilePin, Hop, Lock, Pin
from .forges import parse_source_url
from .permalinks import ref as pin_ref
from .pins import blob_sha

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
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)
# The bullets of a hop in a journey page (dispel.render.render_hop) that carry its permalinks.
LINE_LABEL = "**Executed line:**"
DEF_LABEL = "**Definition:**"


@dataclass(frozen=True)
class PageLink:
    """A link found in a page: where it stands, and for a journey page the hop section it belongs to."""

    page: str  # path relative to docs/
    line: int
    target: str
    hop: int = 0  # the hop section it sits in (0: outside any)
    role: str = ""  # "line" (executed line), "definition", or ""

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


@dataclass
class LinkResult:
    link: PageLink
    problems: list[str] = field(default_factory=list)


def prose_lines(text: str) -> list[str]:
    """The page's lines with fenced blocks and code spans blanked: links and ids in code are not links."""
    out = []
    fence = ""
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip()[len(m.group(1)) :].strip():
                fence = ""
            out.append("")
        elif m:
            fence = m.group(1)
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
    out = []
    hop = 0
    for n, line in enumerate(prose_lines(text), 1):
        m = _HOP_HEADING.search(line)
        if m and line.startswith("#"):
            hop = int(m.group(1))
        role = "line" if LINE_LABEL in line else "definition" if DEF_LABEL in line else ""
        targets = [m.group(1).strip("<>") for m in _MD_LINK.finditer(line)]
        targets += [m.group(2) for m in _HTML_LINK.finditer(line)]
        out.extend(PageLink(page, n, t, hop, role) for t in targets)
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
    found = next((f for f in pin.files if f.path == path), None)
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
    if chain is None or not 1 <= link.hop <= len(chain.hops):
        return None
    return chain.hops[link.hop - 1]


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


def _hop_sig(hop: Hop) -> tuple:
    return (hop.func.key, hop.line, hop.thread, hop.edge)


def _hop_name(n: int, hop: Hop) -> str:
    return f"hop {n} {hop.func.key} line {hop.line}"


def diff_chains(journey: str, old: Chain | None, new: Chain | None) -> list[str]:
    """How the committed chain of a journey differs from the regenerated one, hop by hop."""
    if old is None and new is None:
        return []
    if old is None:
        return [f"{journey}: the regeneration has a chain of {len(new.hops)} hops; none is committed"]
    if new is None:
        return [f"{journey}: a chain is committed, the regeneration has none"]
    out = []
    if old.title != new.title or old.scenario != new.scenario:
        out.append(f"{journey}: title or scenario changed: {old.title!r} ({old.scenario}) -> {new.title!r} ({new.scenario})")
    a, b = [_hop_sig(h) for h in old.hops], [_hop_sig(h) for h in new.hops]
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            for i, j in zip(range(i1, i2), range(j1, j2)):
                o, n = old.hops[i], new.hops[j]
                changed = [f for f in ("line_text", "value", "event") if getattr(o, f) != getattr(n, f)]
                if o.func != n.func:
                    changed.append("function lines")
                if changed:
                    out.append(f"{journey}: {_hop_name(j + 1, n)}: {', '.join(changed)} changed")
            continue
        gone = [_hop_name(i + 1, old.hops[i]) for i in range(i1, i2)]
        came = [_hop_name(j + 1, new.hops[j]) for j in range(j1, j2)]
        if gone and came:
            out.append(f"{journey}: {'; '.join(gone)} became {'; '.join(came)}")
        elif gone:
            out.append(f"{journey}: no longer on the chain: {'; '.join(gone)}")
        else:
            out.append(f"{journey}: new on the chain: {'; '.join(came)}")
    if old.wire != new.wire:
        out.append(f"{journey}: the bytes on the wire changed")
    return out


def hop_sections(page: str) -> dict[int, str]:
    """A journey page cut at its hop headings: {0: everything before hop 1, n: hop n's section}."""
    out: dict[int, list[str]] = {0: []}
    current = 0
    for line in page.split("\n"):
        m = _HOP_HEADING.search(line)
        if m and line.startswith("#"):
            current = int(m.group(1))
            out[current] = []
        out.setdefault(current, []).append(line)
    return {n: "\n".join(lines) for n, lines in out.items()}


def first_difference(old: str, new: str) -> str:
    """``line N: 'old' -> 'new'`` for the first line two texts differ in."""
    a, b = old.split("\n"), new.split("\n")
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"line {i + 1}: {_shown(x)} -> {_shown(y)}"
    return f"line {min(len(a), len(b)) + 1}: {len(a)} lines -> {len(b)} lines"


def diff_page(path: str, old: str, new: str, chain: Chain | None, notes: Mapping[str, str]) -> list[str]:
    """Why a committed generated page differs from its regeneration, per hop when it is a journey page.

    ``chain``: the regenerated chain of the page (None for other pages); ``notes``: annotation
    key -> current text, to tell a changed annotation from other changes.
    """
    if old == new:
        return []
    if chain is None:
        return [f"{path} differs from a regeneration at {first_difference(old, new)}"]
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


def environment_reasons(
    traces: Mapping[str, tuple[str, Sequence[tuple[str, str]]]], python: str, installed: Mapping[str, str]
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
