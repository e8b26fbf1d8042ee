"""Rules a rendered journey page must keep (pure, over the page's Markdown text).

- ``visible_hops``: the hop entries a reader sees before opening anything, i.e. the hop headings
  outside every collapsible block. A page may show at most ``MAX_VISIBLE`` (issue #27).
- ``repeated_paragraphs``: the paragraphs of at least ``REPEAT_CHARS`` characters that a set of
  pages shows more than once (each text once, issue #31).

Both read the Markdown that `dispel render` (or `dispel report`) wrote, so they hold for every page
the project builds and for an own-app report alike, whatever made the page.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping

MAX_VISIBLE = 30
REPEAT_CHARS = 80

_HOP_HEADING = re.compile(r"^### (\d+) · ")  # a hop entry's heading at the page's top level (not indented: not folded)
_FENCE = re.compile(r"^\s*(`{3,})")


def visible_hops(markdown: str) -> list[int]:
    """The numbers of the hop entries shown in the open: headings outside any collapsible block."""
    out = []
    fence = ""
    for line in markdown.splitlines():
        m = _FENCE.match(line)
        if m and (not fence or m.group(1).startswith(fence)):
            fence = "" if fence else m.group(1)
            continue
        if fence:
            continue
        h = _HOP_HEADING.match(line)
        if h:
            out.append(int(h.group(1)))
    return out


def too_many_visible(pages: Mapping[str, str], limit: int = MAX_VISIBLE) -> list[str]:
    """One problem line per page that shows more than ``limit`` hops before anything is opened."""
    out = []
    for name, text in sorted(pages.items()):
        shown = visible_hops(text)
        if len(shown) > limit:
            out.append(
                f"{name}: {len(shown)} hops are shown before anything is opened, more than {limit}: "
                "fold more of them (dispel.chains.fold.groups) or lay the page out in parts"
            )
    return out


def paragraphs(markdown: str) -> list[str]:
    """The page's paragraphs as a reader meets them: blocks of text between blank lines, each line
    stripped of its indent. Code is no paragraph (a source excerpt, a diagram), except the box of an
    observed value, which counts as one paragraph with its title."""
    out: list[str] = []
    block: list[str] = []
    fence = ""
    keep = False  # inside the fence of an observed value's box

    def flush() -> None:
        text = "\n".join(block).strip()
        if text:
            out.append(text)
        block.clear()

    for raw in markdown.splitlines():
        line = raw.strip()
        m = _FENCE.match(raw)
        if fence:
            if m and m.group(1).startswith(fence) and not line[len(m.group(1)):].strip():
                fence = ""
                if keep:
                    block.append(line)
                    flush()
                continue
            if keep:
                block.append(line)
            continue
        if m:
            keep = bool(block) and block[0].startswith("???+ example")
            if not keep:
                flush()
            else:
                block.append(line)
            fence = m.group(1)
            continue
        if line.startswith(("<div", "<svg", "</div")):
            flush()
            continue
        if not line:
            if not (block and block[0].startswith("???+ example") and len(block) == 1):
                flush()
            continue
        block.append(line)
    flush()
    return out


def repeated_paragraphs(pages: Iterable[str], min_chars: int = REPEAT_CHARS) -> list[tuple[str, int]]:
    """Paragraphs of at least ``min_chars`` characters that occur more than once on one page
    (a text with its number of occurrences beyond the first), summed over ``pages``."""
    total: Counter[str] = Counter()
    for page in pages:
        seen = Counter(p for p in paragraphs(page) if len(p) >= min_chars)
        for text, n in seen.items():
            if n > 1:
                total[text] += n - 1
    return sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))
