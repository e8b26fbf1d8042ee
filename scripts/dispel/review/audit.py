"""Grade a hand-written report's GitHub source links (pure): pinned, resolving, which function, on which chain."""
from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from urllib.parse import unquote

from ..chains import fold
from ..model import Chain
from ..pins.forges import SHA_RE, SHORT_SHA_RE

PINNED, SHORT, UNPINNED = "commit", "short commit", "branch/tag"
YES, NO, UNKNOWN = "yes", "no", "unknown"

# Where links hide in Markdown, HTML and plain text. Markdown targets may hold spaces when a
# writer got them wrong, so they run to the ")" that ends the link, not to the first space.
_ANGLE = re.compile(r"\]\(\s*<([^>\n]*)>")
_PAREN = re.compile(r"\]\(\s*(https?://[^\n]*?)\)(?=[\s.,;:!?)\]]|$)")
_HREF = re.compile(r"""\bhref\s*=\s*(["'])(.*?)\1""", re.IGNORECASE)
_BARE = re.compile(r"""https?://(?:www\.)?(?:github\.com|raw\.githubusercontent\.com)/[^\s<>"'`\]]*""", re.IGNORECASE)
_SOURCE = re.compile(
    r"https?://(?:www\.)?(?:github\.com/(?P<gh>[^/]+/[^/]+)/blob|raw\.githubusercontent\.com/(?P<raw>[^/]+/[^/]+))"
    r"/(?P<ref>[^/#?]+)(?:/(?P<path>[^#?]*))?(?:\?[^#]*)?(?:#(?P<frag>.*))?$",
    re.IGNORECASE,
)
_LINE_FRAG = re.compile(r"L(\d+)(?:C\d+)?(?:-L(\d+)(?:C\d+)?)?")
_JUNK = ")]>\"',;`"
_BROKEN_TAIL = re.compile(r" ([\w.-]*(?: ?\.py)\b[^\s<>\"'`]*)")
# A dunder file name whose underscores a PDF copy turned into spaces or halved: " init .py", "_init_.py".
_PDF_DUNDER = re.compile(r"(?:^|(?<=/))(?:[ _]{1,2})(init|main)(?:[ _]{1,2})\.py$")


@dataclass(frozen=True)
class ReportLink:
    """A GitHub source link as written in a report, with what is wrong with its spelling."""

    line: int  # line of the report
    written: str
    repo: str  # OWNER/NAME
    ref: str
    path: str  # percent-decoded, as written otherwise
    start: int = 0  # 0: no line given
    end: int = 0
    problems: tuple[str, ...] = ()  # malformations, each with its fix
    candidates: tuple[str, ...] = ()  # the path as written, then spellings that fix it
    misspelt: bool = False  # the path holds a space or a stray bracket: no server can serve it
    label: str = ""  # the link's text ([label](url), <a href=...>label</a>); "" for a bare URL

    @property
    def key(self) -> tuple[str, str]:
        return (self.repo.lower(), self.ref)


@dataclass(frozen=True)
class FileFact:
    """What is known of a file at a ref: its text (None: not there) and how that was learned."""

    via: str  # "lock", "git" or "online"
    text: str | None
    commit: str = ""  # the 40-hex commit the ref names, when known
    note: str = ""  # why the file is not there when it is not the path (a ref missing from a mirror)


# (owner/name lowercased, ref, path) -> FileFact; a missing key: nothing is known.
Facts = Mapping[tuple[str, str, str], FileFact]


@dataclass
class Verdict:
    line: int
    link: str
    pinned: str
    resolves: str
    via: str = ""
    function: str = ""
    on_chain: str = ""
    notes: list[str] = field(default_factory=list)
    mislabelled: bool = False  # its label names a function that neither holds the line nor is called on it

    @property
    def broken(self) -> bool:
        return self.resolves == NO


# --------------------------------------------------------------------------- finding links


def _trim(url: str) -> str:
    """A bare URL without the sentence punctuation that follows it, nor an unbalanced ")"."""
    while url and url[-1] in ".,;:!?)":
        if url[-1] == ")" and url.count("(") >= url.count(")"):
            break
        url = url[:-1]
    return url


def _spans(line: str) -> list[tuple[int, str]]:
    """(column, URL text) of every link-like thing in one line, each counted once."""
    found: list[tuple[int, int, str]] = []
    for rx, group in ((_ANGLE, 1), (_PAREN, 1), (_HREF, 2)):
        for m in rx.finditer(line):
            s, e = m.span(group)
            if not any(a <= s < b for a, b, _ in found):
                found.append((s, e, m.group(group).strip()))
    for m in _BARE.finditer(line):
        if not any(a <= m.start() < b for a, b, _ in found):
            url, end = _trim(m.group(0)), m.end()
            # "…/async socket.py#L3": a space broke the URL; the file name follows it.
            more = _BROKEN_TAIL.match(line, end) if "." not in url.rsplit("/", 1)[-1] else None
            if more:
                url, end = url + " " + _trim(more.group(1)), more.end()
            found.append((m.start(), end, url))
    return [(s, text) for s, _, text in sorted(found)]


def _fragment(frag: str | None) -> tuple[int, int, list[str]]:
    """(start, end, problems) of a ``#L…`` fragment."""
    if frag is None or frag == "":
        return 0, 0, ["no #L<line>: it links the whole file; add the line, e.g. #L10"]
    m = _LINE_FRAG.fullmatch(frag)
    if m:
        start = int(m.group(1))
        return start, int(m.group(2) or start), []
    m = re.fullmatch(r"[Ll]?(\d+)(?:-[Ll]?(\d+))?(.*)", frag)
    if m:
        start, end = int(m.group(1)), int(m.group(2) or m.group(1))
        fixed = f"#L{start}" + (f"-L{end}" if m.group(2) else "")
        return start, end, [f"fragment #{frag} is misspelt: write {fixed}"]
    return 0, 0, [f"fragment #{frag} is not a line: write #L<line> or #L<start>-L<end>"]


def _path_fixes(path: str) -> tuple[list[str], list[str]]:
    """(problems, fixed spellings) of a path mangled by an editor or a careless copy."""
    problems, fixes = [], []
    pdf = pdf_repair(path)
    if pdf:
        problems.append(f"{pdf[1]!r} is {pdf[2]!r} mangled by a PDF copy (its underscores lost)")
        fixes.append(pdf[0])
    if " " in path:
        problems.append("a space in the path (written as %20 or a space)")
        fixes += [path.replace(" ", "_"), path.replace(" ", "")]
    stray = sorted({c for c in path if c in _JUNK})
    if stray:
        problems.append(f"stray {' '.join(stray)} in the path {path.rsplit('/', 1)[-1]!r}")
        cleaned = "".join(c for c in path if c not in _JUNK)
        fixes += [cleaned, cleaned.replace(" ", "_")]
    if not path.startswith("src/"):
        fixes += ["src/" + f for f in [path, *fixes]]  # the src layout most projects moved to
    return problems, [f for f in dict.fromkeys(fixes) if f and f != path]


def pdf_repair(path: str) -> tuple[str, str, str] | None:
    """(repaired path, name as written, real name) when the file name is a dunder module a PDF
    mangled (`` init .py``, ``_init_.py``); None otherwise, and for a name already right."""
    m = _PDF_DUNDER.search(path)
    if not m:
        return None
    real = f"__{m.group(1)}__.py"
    written = m.group(0)
    if written == real:
        return None
    return path[: m.start()] + real, written, real


def parse_link(line: int, written: str) -> ReportLink | None:
    """A GitHub blob or raw URL -> ReportLink, its malformations noted; None for any other URL."""
    m = _SOURCE.match(written)
    if not m:
        return None
    repo = m.group("gh") or m.group("raw")
    path = unquote(m.group("path") or "")
    problems: list[str] = []
    if not path:
        problems.append("no file path after the ref")
    start, end, frag_problems = _fragment(m.group("frag"))
    path_problems, fixes = _path_fixes(path) if path else ([], [])
    problems += path_problems + frag_problems
    candidates = (path, *fixes) if path else ()
    return ReportLink(line, written, repo, m.group("ref"), path, start, end, tuple(problems), candidates, bool(path_problems))


_MD_LABEL = re.compile(r"\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?\s*$")
_HTML_LABEL = re.compile(r"""^[^>]*>(.*?)</a\s*>""", re.IGNORECASE | re.DOTALL)


def _label(line: str, column: int) -> str:
    """The text of the link whose URL starts at ``column``: Markdown's [label](url) or HTML's
    <a href="url">label</a>; "" for a bare URL."""
    m = _MD_LABEL.search(line[:column])
    if m:
        return m.group(1).strip()
    if re.search(r"""href\s*=\s*["']$""", line[:column], re.IGNORECASE):
        m = _HTML_LABEL.match(line[column:])
        return re.sub(r"<[^>]+>", "", m.group(1)).strip() if m else ""
    return ""


def find_links(text: str) -> list[ReportLink]:
    """Every GitHub source link of a report (Markdown, HTML or plain text), in reading order."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        for column, url in _spans(line):
            link = parse_link(n, url)
            if link is not None:
                out.append(replace(link, label=_label(line, column)))
    return out


# A label names a function by ``name()`` or ``Class.name`` (a capitalized class, not a file name).
_CALL_NAME = re.compile(r"(?<![\w.])((?:[A-Z]\w*\.)?[A-Za-z_]\w*)\(\)")
_CLASS_NAME = re.compile(r"(?<![\w.])([A-Z]\w*\.[A-Za-z_]\w*)\b(?!\.\w)")
_FILE_SUFFIXES = {"py", "md", "html", "js", "txt", "toml", "json", "yml", "yaml", "c", "h"}


def label_functions(label: str) -> list[str]:
    """The functions a link's label names: ``name`` for ``name()``, ``Class.name`` for
    ``Class.name`` or ``Class.name()``; in order, each once."""
    found = [m.group(1) for m in _CALL_NAME.finditer(label)]
    found += [m.group(1) for m in _CLASS_NAME.finditer(label) if m.group(1).rsplit(".", 1)[1] not in _FILE_SUFFIXES]
    return list(dict.fromkeys(found))


def _names_in(named: str, qualname: str) -> bool:
    """Does the function ``named`` (``name`` or ``Class.name``) hold code of ``qualname``?
    ``Server._handle_event`` is held by ``_handle_event`` and by ``Server._handle_event``; a
    nested ``f.<locals>.g`` by ``f`` too."""
    parts = [p for p in qualname.split(".") if p != "<locals>"]
    want = named.split(".")
    return any(parts[i:i + len(want)] == want for i in range(len(parts)))


def _is(named: str, qualname: str) -> bool:
    """Is ``qualname`` the function ``named`` (``name`` or ``Class.name``)?"""
    return qualname == named or qualname.endswith("." + named)


def called_at(chains: Iterable[Chain], module: str, qualname: str, start: int, end: int) -> list[str]:
    """The qualnames the chains recorded called from ``module:qualname`` on lines start..end: the
    hop after each hop of that function whose executed line is there."""
    out = []
    for chain in chains:
        for hop, after in zip(chain.hops, chain.hops[1:]):
            if (hop.func.module, hop.func.qualname) == (module, qualname) and start <= hop.line <= end:
                out.append(after.func.qualname)
    return list(dict.fromkeys(out))


def wanted_files(links: Iterable[ReportLink], facts: Facts | None = None) -> list[tuple[str, str, str]]:
    """The (repo, ref, path) whose facts grading needs: first each link's path as written; given
    the facts of those, the fixed spellings of the paths found missing (to suggest one)."""
    if facts is None:
        return list(dict.fromkeys((link.repo, link.ref, link.path) for link in links if link.path))
    out = []
    for link in links:
        fact = facts.get((link.repo.lower(), link.ref, link.path))
        if fact is None or (fact.text is None and not fact.note):
            out += [(link.repo, link.ref, p) for p in link.candidates[1:]]
    return list(dict.fromkeys(out))


# --------------------------------------------------------------------------- functions


def def_spans(source: str) -> list[tuple[int, int, str]]:
    """(first line incl. decorators, last line, qualname) of every def and class, outermost first.

    Qualnames follow Python's rules: methods ``Cls.meth``, nested functions ``f.<locals>.g``.
    """
    tree = ast.parse(source)
    out: list[tuple[int, int, str]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qualname = prefix + child.name
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                out.append((first, child.end_lineno or child.lineno, qualname))
                inner = qualname + (".<locals>." if not isinstance(child, ast.ClassDef) else ".")
                visit(child, inner)
            else:
                visit(child, prefix)

    visit(tree, "")
    return out


def enclosing(spans: Sequence[tuple[int, int, str]], line: int) -> str:
    """The qualname of the innermost def or class holding ``line``; "" at module level."""
    best = ""
    best_size = None
    for first, last, qualname in spans:
        if first <= line <= last and (best_size is None or last - first <= best_size):
            best, best_size = qualname, last - first
    return best


def module_names(path: str) -> list[str]:
    """Dotted module names a repository path may import as, longest first.

    ``src/engineio/socket.py`` -> ``src.engineio.socket``, ``engineio.socket``, ``socket``;
    ``Lib/email/parser.py`` -> ``Lib.email.parser``, ``email.parser``, ``parser``.
    """
    if not path.endswith(".py"):
        return []
    parts = path[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return [".".join(parts[i:]) for i in range(len(parts)) if parts[i:]]


def chain_index(chains: Iterable[Chain]) -> dict[tuple[str, str], list[str]]:
    """(module, qualname) -> ["journey#hop", …] for every hop of the chains."""
    out: dict[tuple[str, str], list[str]] = {}
    for chain in chains:
        for n, hop in enumerate(chain.hops, 1):
            out.setdefault((hop.func.module, hop.func.qualname), []).append(f"{chain.journey}#{n}")
    return out


def linkable(chain: Chain) -> list[tuple[int, tuple[str, str], str]]:
    """The hops a report can link on GitHub: (number, (module, qualname), qualname); not C nor the sample app."""
    return [
        (n, (h.func.module, h.func.qualname), h.func.qualname)
        for n, h in enumerate(chain.hops, 1)
        if not h.func.is_c and h.func.source.dist != "sample_app"
    ]


# --------------------------------------------------------------------------- grading


def _pinned(ref: str) -> str:
    return PINNED if SHA_RE.fullmatch(ref) else SHORT if SHORT_SHA_RE.fullmatch(ref) else UNPINNED


def _url_with(link: ReportLink, path: str) -> str:
    """The link rewritten with another path and a well-formed fragment."""
    m = _SOURCE.match(link.written)
    head = link.written[: m.start("path")] if m and m.group("path") is not None else link.written.split("#")[0] + "/"
    frag = f"#L{link.start}" + (f"-L{link.end}" if link.end != link.start else "") if link.start else ""
    return head + path.replace(" ", "%20") + frag


def grade(
    links: Sequence[ReportLink], facts: Facts, chains: Sequence[Chain]
) -> tuple[list[Verdict], dict[tuple[str, str], str]]:
    """One verdict per link, and the (module, qualname) of each function the report links -> the link's line."""
    index = chain_index(chains)
    spans_cache: dict[int, list[tuple[int, int, str]] | None] = {}
    linked: dict[tuple[str, str], str] = {}
    verdicts = []
    for link in links:
        v = Verdict(link.line, link.written, _pinned(link.ref), UNKNOWN)
        v.notes += link.problems
        fact = facts.get((link.repo.lower(), link.ref, link.path)) if link.path else None
        pdf = pdf_repair(link.path) if link.path else None
        repaired = facts.get((link.repo.lower(), link.ref, pdf[0])) if pdf else None
        if pdf and repaired is not None and repaired.text is not None and (fact is None or fact.text is None):
            # A PDF copy lost the underscores of a dunder file that exists at that commit: grade the repair.
            v.notes = [n for n in v.notes if "mangled by a PDF copy" not in n and "space in the path" not in n]
            v.notes.insert(0, f"repaired {pdf[1]!r} to {pdf[2]!r} (a PDF copy lost its underscores): {_url_with(link, pdf[0])}")
            link = replace(link, path=pdf[0])
            fact = repaired
        elif fact is None and link.misspelt:
            # Misspelt as written (a space, a stray bracket): GitHub cannot serve it, whatever the ref.
            fact = FileFact("", None, note=f"the path {link.path!r} is misspelt")
        if fact is not None:
            v.via = fact.via
            if fact.text is None:
                v.resolves = NO
                v.notes.append(fact.note or f"{link.path} does not exist at {link.ref}")
                fix = next(
                    (p for p in link.candidates[1:] if (f := facts.get((link.repo.lower(), link.ref, p))) and f.text is not None),
                    None,
                )
                if fix:
                    v.notes.append(f"did you mean {_url_with(link, fix)}")
            else:
                lines = fact.text.split("\n")
                count = len(lines) - (1 if fact.text.endswith("\n") else 0)
                if link.end > count or (link.start and link.start > count):
                    v.resolves = NO
                    v.notes.append(f"line {max(link.start, link.end)} is past the end of {link.path} ({count} lines)")
                else:
                    v.resolves = YES
                    _name_function(v, link, fact.text, spans_cache, index, linked)
                    _check_label(v, link, lines, chains)
            if v.pinned != PINNED and fact.commit:
                v.notes.append(f"{link.ref} moves: pin it to {fact.commit} ({_url_with_ref(link, fact.commit)})")
        elif link.path:
            v.notes.append(f"neither the lock nor a mirror knows {link.path} at {link.ref}; pass --git-dir {link.repo}=PATH or --online")
        if v.pinned == UNPINNED and not any("moves: pin it" in n for n in v.notes):
            v.notes.append(f"{link.ref!r} is a branch or tag, it moves: link a 40-hex commit instead")
        elif v.pinned == SHORT:
            v.notes.append(f"{link.ref} is a short commit id: write all 40 hex digits")
        if v.resolves == YES and not v.on_chain:
            v.on_chain = UNKNOWN if not chains else NO
        verdicts.append(v)
    return verdicts, linked


def _url_with_ref(link: ReportLink, commit: str) -> str:
    return link.written.replace(f"/{link.ref}/", f"/{commit}/", 1)


def _name_function(
    v: Verdict,
    link: ReportLink,
    text: str,
    cache: dict[int, list[tuple[int, int, str]] | None],
    index: Mapping[tuple[str, str], list[str]],
    linked: dict[tuple[str, str], str],
) -> None:
    """Fill in the function holding the linked line and where it is on the chains."""
    if not link.start or not link.path.endswith(".py"):
        return
    key = hash(text)
    if key not in cache:
        try:
            cache[key] = def_spans(text)
        except (SyntaxError, ValueError):
            cache[key] = None
    spans = cache[key]
    if spans is None:
        v.notes.append(f"{link.path} at {link.ref} does not parse as Python; no function named")
        return
    qualname = enclosing(spans, link.start)
    names = module_names(link.path)
    if not qualname:
        v.function = f"{names[-1] if names else link.path} (module level)"
        return
    module = next((m for m in names if (m, qualname) in index), None)
    if module is None:
        # Show the shortest name that is not the repository layout (src., Lib.).
        module = names[1] if len(names) > 1 and names[0].split(".")[0] in ("src", "Lib", "lib") else names[0]
        v.function = f"{module}:{qualname}"
        return
    v.function = f"{module}:{qualname}"
    v.on_chain = ", ".join(index[(module, qualname)])
    linked.setdefault((module, qualname), str(link.line))


def _check_label(v: Verdict, link: ReportLink, lines: Sequence[str], chains: Sequence[Chain]) -> None:
    """Flag a link whose label names a function that neither holds the linked line nor is called
    on it: called per the chains' recorded calls at that line, or, where no chain recorded the
    line, per its source text (``name(`` on it)."""
    named = label_functions(link.label)
    if not named or not v.function or not link.start:
        return
    module, _, qualname = v.function.partition(":")
    qualname = "" if qualname.endswith("(module level)") or not _ else qualname
    callees = called_at(chains, module, qualname, link.start, link.end) if qualname else []
    text = "\n".join(lines[link.start - 1:link.end])
    wrong = []
    for name in named:
        if qualname and _names_in(name, qualname):
            continue
        if any(_is(name, c) for c in callees):
            continue
        if not callees and re.search(rf"(?<![\w]){re.escape(name.rsplit('.', 1)[-1])}\s*\(", text):
            continue
        wrong.append(name)
    if wrong:
        v.mislabelled = True
        where = qualname or "module level"
        calls = f", which calls {', '.join(callees)} there" if callees else ""
        shown = ", ".join(f"`{n}`" for n in wrong)
        v.notes.append(f"mislabelled: the label names {shown}, but line {link.start} is in {where}{calls}: "
                       f"link a line of {shown} or of its call, or name {where} in the label")


def coverage(chains: Sequence[Chain], linked: Mapping[tuple[str, str], str]) -> list[str]:
    """Per journey, graded against its key hops (see dispel.chains.fold):
    "links 3 of 14 key hops of emit (9 of 27 hops in all); missing: #3 Queue.put, …"."""
    out = []
    for chain in chains:
        hops = linkable(chain)
        key = fold.key_numbers(chain)
        keyed = [h for h in hops if h[0] in key]
        missing: dict[str, list[str]] = {}  # a function on several hops is listed once, with its hops
        for n, k, qualname in keyed:
            if k not in linked:
                missing.setdefault(qualname, []).append(f"#{n}")
        count = sum(len(v) for v in missing.values())
        in_all = sum(1 for _, k, _ in hops if k in linked)
        line = f"links {len(keyed) - count} of {len(keyed)} key hops of {chain.journey} ({in_all} of {len(hops)} hops in all)"
        shown = ", ".join(f"{q} ({' '.join(ns)})" for q, ns in missing.items())
        out.append(line + (f"; missing: {shown}" if missing else "; none missing"))
    return out


# --------------------------------------------------------------------------- output


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ") or "—"


def markdown_report(verdicts: Sequence[Verdict], journeys: Sequence[str], chains_known: bool) -> str:
    """The verdicts as a Markdown table, then the per-journey coverage and a one-line summary."""
    out = [
        "| Line | Link | Pinned | Resolves | Function | On chain | Notes |",
        "|---:|---|---|---|---|---|---|",
    ]
    for v in verdicts:
        out.append(
            f"| {v.line} | <{_cell(v.link)}> | {v.pinned} | {v.resolves}{f' ({v.via})' if v.via else ''} "
            f"| {_cell(v.function)} | {_cell(v.on_chain)} | {_cell('; '.join(v.notes))} |"
        )
    out.append("")
    if chains_known:
        out += [f"- {j}" for j in journeys]
    else:
        out.append("- no chains are recorded yet (traces/chains/*.json): on-chain and coverage are unknown")
    out.append("")
    out.append(summary_line(verdicts))
    return "\n".join(out) + "\n"


def summary_line(verdicts: Sequence[Verdict]) -> str:
    count = len(verdicts)
    broken = sum(v.broken for v in verdicts)
    unpinned = sum(v.pinned != PINNED for v in verdicts)
    unknown = sum(v.resolves == UNKNOWN for v in verdicts)
    off = sum(v.on_chain == NO for v in verdicts)
    mislabelled = sum(v.mislabelled for v in verdicts)
    return (f"{count} source links: {broken} broken, {unpinned} unpinned, {unknown} unresolved, {off} off-chain"
            + (f", {mislabelled} mislabelled" if mislabelled else ""))


def json_report(verdicts: Sequence[Verdict], journeys: Sequence[str]) -> dict:
    return {
        "links": [asdict(v) | {"broken": v.broken} for v in verdicts],
        "coverage": list(journeys),
        "summary": summary_line(verdicts),
    }
