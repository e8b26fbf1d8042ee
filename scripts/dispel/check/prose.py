"""The prose check: what the rendered pages say about a hop, read against the chain (pure).

``dispel check`` proves that each link shows the code that ran; this module checks the
hand-written sentences around it. Each rule catches a fact the trace knows and a sentence
restated by hand:

- ``thread``: a thread name (request-N, handler-N, eio-writer-N, ws-reader-N, `server`) that is
  not a thread of the page;
- ``runs-on``: "runs on … writer/reader/request/handler thread" where the hop runs on another;
- ``highlighted``: code quoted as the highlighted line (or named as what it calls) that is neither on the
  executed statement nor the next hop's function;
- ``byte``: a ``0xNN`` byte that no WebSocket frame header on the page holds;
- ``hop-ref``: "hop N" beyond the page, `` `X` (hop N) `` where hop N is not X, or `` `X` (not a hop …)``
  where X is a hop of the page;
- ``name``: a backticked ``Class.method`` that is neither on the chain nor in a source file the page links to;
- ``sample-value``: on a report's page, a value of the sample app that the report's own chains do not
  have (an event name, room, handler name, payload or ack string; see annotations.sample_vocabulary),
  or the phrases "sample app" and "this site": a general text written for the sample, leaked;
- ``typed-line``: an annotation that types the number of the line a hop showing it executed
  ("line 1094") instead of writing ``{{lineno}}`` or quoting ``{{line}}`` (read in the annotation
  files, since a page cannot tell a typed number from a filled one).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..chains import fold
from ..model import Chain, Hop, Source, text_lines
from ..render.annotation_files import SAMPLE_PHRASES, select, term_pattern
from ..render.placeholders import (
    ANY_BRACES_RE,
    SOCKET_MODULE,
    is_frame,
    printable_bytes,
    value_bytes,
)
from ..wire import frame_layout

RULES = ("thread", "runs-on", "highlighted", "byte", "hop-ref", "name", "sample-value", "typed-line")
THREAD_RE = re.compile(r"(?<![\w-])(?:request|handler|eio-writer|ws-reader|ws-writer)-\d+(?![\w-])|`server`")
RUNS_ON_RE = re.compile(r"(?i)\bruns? on\b(?:[^.;]|\.(?=\S))*?\b(writer|reader|request|handler)(?:'s)? thread")
THREAD_NAME_PREFIXES = {"writer": "writer-", "reader": "reader-", "request": "request-", "handler": "handler-"}
BYTE_RE = re.compile(r"(?<![\w\\])0x([0-9a-fA-F]{2})\b")
HOP_NUMBER_RE = re.compile(r"\bhops? (\d+)(?:\s*(?:–|-|to|and)\s*(\d+))?")
NAMED_HOP_RE = re.compile(r"`([^`]+)` \((?:\[)?hop (\d+)")
NOT_A_HOP_RE = re.compile(r"`([^`]+)`,? \(?(?:is )?not a hop")
CLASS_METHOD_RE = re.compile(r"_?[A-Z]\w*(?:\.\w+)+")
CODE_RE = re.compile(r"`([^`]+)`")
# Code said to be the highlighted line: "`x()` (highlighted)", "the highlighted `x()`", "the highlighted line, `x()`".
HIGHLIGHTED_RE = re.compile(
    r"`([^`]+)` \((?:is |are )?highlighted(?: here)?\)"
    r"|(?i:highlighted)(?: line| call| statement| lines)?(?:,| is| reads|:)? `([^`]+)`"
    # "the highlighted line opens a new session with `_handle_connect`", "… dispatches by name to `x`"
    r"|(?i:highlighted line)(?: [\w'-]+){1,8}? (?:with|to|calls?|into) `([^`]+)`"
)
# The inline code a page shows as facts and links: not prose.
LINK_RE = re.compile(r"\]\([^)]*\)")
LINE_NUMBER_RE = re.compile(r"\b[Ll]ines? (\d+)\b")
STATEMENT_LINES = 8  # an executed statement spans at most this many lines after the executed one


@dataclass(frozen=True)
class ProseProblem:
    page: str
    hop: int  # 0: the journey summary
    rule: str
    sentence: str
    why: str

    @property
    def line(self) -> str:
        where = f"hop {self.hop}" if self.hop else "summary"
        shown = self.sentence if len(self.sentence) <= 160 else self.sentence[:159] + "…"
        return f"prose: {self.page}: {where}: {self.why} [{self.rule}] in: {shown!r}"


# --------------------------------------------------------------------------- reading a page


_HEADING_RE = re.compile(r"^( {4})?#{2,3} (\d+) · .*\{ #hop-\d+ \}$")
# A hop entry shows the text of a later return to the same call after its own (render.RETURN_NOTE).
_MERGED_RE = re.compile(r'<a id="hop-(\d+)"></a>')
_RETURN_NOTE_RE = re.compile(r"^When the chain came back \(\[hop (\d+)\]\(#hop-\d+\)\): ")


def page_prose(page: str) -> dict[int, str]:
    """A journey page -> {0: the summary, n: the hand-written text of hop n}, generated facts left out.
    Hops folded into a collapsible block are read like the others, their indentation removed."""
    out: dict[int, list[str]] = {}
    current: int | None = None
    state = "skip"
    indent = ""
    for line in page.split("\n"):
        heading = _HEADING_RE.match(line)
        if heading:
            current, state = int(heading.group(2)), "facts"
            indent = heading.group(1) or ""
            out[current] = []
            continue
        if indent and line.strip():
            if not line.startswith(indent):
                state, indent = "skip", ""  # the folded block ended
                continue
            line = line[len(indent) :]
        for merged in _MERGED_RE.findall(line):  # a return shown in its call's entry is a hop of the page too
            out.setdefault(int(merged), [])
        note = _RETURN_NOTE_RE.match(line)
        if note and current is not None and state == "text":
            current = int(note.group(1))
            out.setdefault(current, [])
            line = line[note.end() :]
        if current is None:
            if line.startswith("# "):
                current, state = 0, "text"
                out[0] = []
            continue
        if line.startswith("## "):  # the page's own sections end a hop's text
            state = "skip"
            continue
        if state == "facts":
            if line.startswith(("- **", "    ")) or not line.strip():
                continue
            state = "text"
        if state == "text":
            if line.startswith(("```", "!!!", "???", "<div")):
                state = "skip"
                continue
            out[current].append(line)
    return {n: "\n".join(lines).strip() for n, lines in out.items()}


def sentences(text: str) -> list[str]:
    """Text cut into sentences (a period, ! or ? and a space before a capital, a backtick or a bracket)."""
    text = re.sub(r"\s+", " ", text).strip()
    parts = re.split(r"(?<=[.!?])\s+(?=[A-Z`*\[(])", text)
    return [p for p in parts if p]


# --------------------------------------------------------------------------- facts of a page


def _threads(chain: Chain) -> set[str]:
    """The page's threads; a thread of a scenario of several processes ("server-a/handler-1")
    also by its name within its process."""
    names = {h.thread for h in chain.hops}
    return names | {n.split("/", 1)[1] for n in names if "/" in n}


def frame_headers(chain: Chain) -> set[int]:
    """Every byte of the WebSocket frame headers the page shows (socket calls and the wire capture)."""
    frames = [value_bytes(h.value) for h in chain.hops if h.func.module == SOCKET_MODULE]
    frames += [printable_bytes(layer.raw) for layer in chain.wire if layer.layer.startswith("WebSocket frame")]
    out: set[int] = set()
    for data in frames:
        if is_frame(data):
            layout = frame_layout(data)
            out.update(data[: layout[0]] if layout else data[:2])
    return out


def _bare(name: str) -> str:
    return name.strip().removesuffix("()").replace(".<locals>", "")


def _is_hop_name(name: str, hop: Hop) -> bool:
    """``name`` (``Class.method``, ``func`` or ``module:Class.method``) names ``hop``'s function."""
    name = _bare(name)
    if ":" in name:
        return hop.func.key == name or f"{hop.func.module}:{hop.func.qualname}" == name
    qual = _bare(hop.func.qualname)
    return qual == name or qual.endswith("." + name)


def statement(hop: Hop, lines: Sequence[str] | None) -> str:
    """The executed line and the lines that continue its statement (open brackets), whitespace squeezed."""
    if lines is None or hop.func.is_c or not 1 <= hop.line <= len(lines):
        return re.sub(r"\s+", " ", hop.line_text)
    out, depth = [], 0
    for text in lines[hop.line - 1 : hop.line - 1 + STATEMENT_LINES]:
        out.append(text.strip())
        depth += sum(text.count(c) for c in "([{") - sum(text.count(c) for c in ")]}")
        if depth <= 0:
            break
    return re.sub(r"\s+", " ", " ".join(out))


def _in_source(name: str, texts: Sequence[str]) -> bool:
    """``Class.method`` in a source file: the literal name, or ``class Class`` and ``def method`` in one file."""
    name = _bare(name)
    cls, *_, attr = name.split(".")
    for text in texts:
        if name in text:
            return True
        if re.search(rf"\bclass {re.escape(cls)}\b", text) and re.search(rf"\b(?:def {re.escape(attr)}\b|{re.escape(attr)} =)", text):
            return True
    return False


# --------------------------------------------------------------------------- the rules


def _check_sentence(
    page: str, n: int, sentence: str, chain: Chain, hop: Hop | None, stmt: str | None, headers: set[int], sources: Sequence[str] | None,
    page_number: int | None = None,
) -> list[ProseProblem]:
    """``n``: the chain position of the hop the sentence is about (0: the summary); ``shown``: its
    number on the page (``page_number``). A "hop N" in the text is the page's number N (one per recorded call)."""
    nxt = chain.hops[n] if hop is not None and n < len(chain.hops) else None
    out = []
    threads = _threads(chain)
    position = fold.chain_positions(chain)
    numbers = fold.page_numbers(chain)
    count = len(position)

    def problem(rule: str, why: str) -> None:
        out.append(ProseProblem(page, n if page_number is None else page_number, rule, sentence, why))

    # The link targets hold no prose (and "#hop-3" is not "hop 3").
    text = LINK_RE.sub("]", sentence)
    for m in THREAD_RE.finditer(text):
        name = m.group(0).strip("`")
        if name not in threads:
            problem("thread", f"thread {name} is not on this page (threads: {', '.join(sorted(threads))})")
    if hop is not None:
        for m in RUNS_ON_RE.finditer(text):
            role = m.group(1).lower()
            if THREAD_NAME_PREFIXES[role] not in hop.thread:
                problem("runs-on", f"says it runs on a {role} thread; the hop runs on {hop.thread}")
        for m in HIGHLIGHTED_RE.finditer(text) if stmt is not None else ():
            code = m.group(1) or m.group(2) or m.group(3)
            quoted = re.sub(r"\s+", " ", code.strip()).removesuffix("()")
            if nxt is not None and _is_hop_name(quoted, nxt):
                continue  # the line leads to the next hop: naming it is no quote of the line
            if stmt is not None and not all(part.strip() in stmt for part in quoted.split("…")):
                problem("highlighted", f"`{code}` is quoted as highlighted; the executed line {hop.line} is `{stmt}`")
    for m in BYTE_RE.finditer(text):
        byte = int(m.group(1), 16)
        if byte not in headers:
            shown = ", ".join(f"0x{b:02x}" for b in sorted(headers)) or "none"
            problem("byte", f"0x{m.group(1)} is in no WebSocket frame header on this page (header bytes: {shown})")
    for m in HOP_NUMBER_RE.finditer(text):
        for g in (m.group(1), m.group(2)):
            if g and not 1 <= int(g) <= count:
                problem("hop-ref", f"hop {g} does not exist: the page has {count} hops")
    for m in NAMED_HOP_RE.finditer(text):
        name, number = m.group(1), int(m.group(2))
        if 1 <= number <= count and not _is_hop_name(name, chain.hops[position[number] - 1]):
            problem("hop-ref", f"hop {number} is {chain.hops[position[number] - 1].func.qualname}, not {name}")
    for m in NOT_A_HOP_RE.finditer(text):
        found = [numbers[i] for i, h in enumerate(chain.hops, 1) if _is_hop_name(m.group(1), h)]
        if found:
            problem("hop-ref", f"{m.group(1)} is said not to be a hop, but it is hop {found[0]}")
    for code in CODE_RE.findall(text):
        if not CLASS_METHOD_RE.fullmatch(_bare(code)):
            continue
        if any(_is_hop_name(code, h) for h in chain.hops) or sources is None or _in_source(code, sources):
            continue
        problem("name", f"`{code}` is neither a hop of this page nor in a source file the page links to")
    return out


def check_page(page: str, text: str, chain: Chain, sources: Mapping[Source, Sequence[str]]) -> list[ProseProblem]:
    """Every sentence of a rendered journey page against its chain; ``sources`` holds each file's lines."""
    headers = frame_headers(chain)
    # A source that cannot be read here (the standard library of another Python than the one
    # recorded) leaves the rules that read it undecided: they are skipped, never passed.
    unread = {h.func.source for h in chain.hops if not h.func.is_c and h.func.source not in sources}
    # The files the page links to: its hops' sources (a name may live beside the hop that mentions it).
    linked = None if unread else ["\n".join(sources[s]) for s in sorted({h.func.source for h in chain.hops}) if s in sources]
    # A hop entry also shows the lines of the later returns to the same call (fold.entries):
    # its text may quote any of them.
    returns = {e.hop: e.returns for e in fold.entries(chain)}
    # The page numbers its entries, one per recorded call: hop n of the page is the chain's position[n].
    position = fold.chain_positions(chain)
    out = []
    for number, prose in sorted(page_prose(text).items()):
        n = position.get(number, len(chain.hops) + 1) if number else 0
        hop = chain.hops[n - 1] if 1 <= n <= len(chain.hops) else None
        if n and hop is None:
            continue
        stmt: str | None = ""
        if hop is not None:
            shown = [hop, *(chain.hops[r - 1] for r in returns.get(n, ()))]
            stmt = None if any(h.func.source in unread for h in shown) else " ; ".join(statement(h, sources.get(h.func.source)) for h in shown)
        for sentence in sentences(prose):
            out += _check_sentence(page, n, sentence, chain, hop, stmt, headers, linked, number)
    return out


def check_site(
    pages: Mapping[str, str], chains: Mapping[str, Chain], sources: Mapping[Source, bytes | str]
) -> list[str]:
    """The prose problems of every journey page, one line each. ``pages``: journey -> rendered Markdown."""
    lines = {
        src: text_lines(data)
        for src, data in sources.items()
    }
    out = []
    for journey, text in sorted(pages.items()):
        if journey in chains:
            out += [p.line for p in check_page(f"docs/chains/{journey}.md", text, chains[journey], lines)]
    return out


def sample_values(pages: Mapping[str, str], vocabulary: Iterable[str], own: Iterable[str]) -> list[str]:
    """The sample's values on a report's journey pages (journey -> Markdown), one line each.

    ``vocabulary``: the sample's (annotations.sample_vocabulary of the project's chains); ``own``:
    the same computed from the report's chains, since the user's app may well use an event or a
    handler name of the sample. The phrases "sample app" and "this site" are never the app's: they
    are looked for on the whole page (its facts too), the values in its summary and hop texts."""
    allowed = set(own) - set(SAMPLE_PHRASES)
    terms = [(t, term_pattern(t)) for t in sorted(set(vocabulary) - allowed)]
    out = []
    for journey, text in sorted(pages.items()):
        page = f"docs/chains/{journey}.md"
        for term, pattern in terms:
            if term in SAMPLE_PHRASES and (m := pattern.search(text)):
                line = text[text.rfind("\n", 0, m.start()) + 1 : (text.find("\n", m.end()) + 1 or len(text) + 1) - 1]
                out.append(f"prose: {page}: names the sample: {term!r} [sample-value] in: {line.strip()[:160]!r}")
        for n, prose in sorted(page_prose(text).items()):
            for sentence in sentences(prose):
                named = [t for t, p in terms if t not in SAMPLE_PHRASES and p.search(sentence)]
                if named:
                    where = f"hop {n}" if n else "summary"
                    shown = sentence if len(sentence) <= 160 else sentence[:159] + "…"
                    out.append(
                        f"prose: {page}: {where}: names the sample app's {', '.join(map(repr, named))}, which this app's "
                        f"chains do not have: a general text written for the sample [sample-value] in: {shown!r}"
                    )
    return out


def typed_lines(texts: Mapping[str, str], chains: Mapping[str, Chain]) -> list[str]:
    """Annotations (key -> raw text) that type the executed line of a hop they are shown on, one line each.

    The page shows that number already, and a typed one goes stale or false when the text is shown
    on another hop: write ``line {{lineno}}``, quote ``{{line}}`` or say "the highlighted line"."""
    out: dict[tuple[str, int], str] = {}
    for journey, chain in sorted(chains.items()):
        for n, hop in enumerate(chain.hops, 1):
            if hop.func.is_c:
                continue
            found = select(texts, hop.func.key, journey, hop.line)
            if found is None:
                continue
            key, text = found
            for m in LINE_NUMBER_RE.finditer(ANY_BRACES_RE.sub("", text)):
                if int(m.group(1)) == hop.line and (key, hop.line) not in out:
                    out[(key, hop.line)] = (
                        f"prose: annotation {key}: types {m.group(0)!r}, the executed line of {journey} hop {n}: "
                        f"write line {{{{lineno}}}}, quote {{{{line}}}} or say the highlighted line [typed-line]"
                    )
    return list(out.values())
