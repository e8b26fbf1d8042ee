"""What a reader meets on a journey page: at most 30 hops before opening anything, each text once,
bytes written one way, functions named without the trace's internal keys (issues #27 and #31)."""
from __future__ import annotations

import re
from pathlib import Path

from dispel.check import pagecheck
from dispel.check import stage as verify
from dispel.model import EDGE_CALL, EDGE_ENTRY, EDGE_RETURN, Chain, Func, Hop, Source
from dispel.project import Project
from dispel.render import markup
from dispel.render import pages as render

ROOT = Path(__file__).resolve().parents[1]
PAGES = {p.name: p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs" / "chains").glob("*.md"))}
MOST_REPEATS = 20  # repeated paragraphs of >= 80 characters, summed over the journey pages (#31)


def _hop(qualname, event, edge=EDGE_CALL, value=None, line=2, overloaded=False):
    func = Func("lib", qualname, Source("lib", "1", "lib.py"), 1, 9, overloaded)
    return Hop(func, line, "t", edge, event, value)


def test_visible_hops_are_the_headings_outside_folded_blocks_and_code():
    lines = [
        "### 1 · `a` { #hop-1 }", "", '??? note "2 calls in lib: b, c"', "", "    ### 2 · `b` { #hop-2 }",
        "```text", "### 9 · `in code` { #hop-9 }", "```", "### 3 · `d` { #hop-3 }",
    ]
    page = "\n".join(lines)
    assert pagecheck.visible_hops(page) == [1, 3]


def test_a_page_over_30_visible_hops_is_one_problem_naming_it():
    page = "\n\n".join(f"### {n} · `f{n}` {{ #hop-{n} }}" for n in range(1, 32))
    assert pagecheck.too_many_visible({"docs/chains/x.md": page[: page.index("### 31")]}) == []
    (line,) = pagecheck.too_many_visible({"docs/chains/x.md": page})
    assert line.startswith("docs/chains/x.md: 31 hops are shown before anything is opened, more than 30")


def test_dispel_check_fails_a_page_over_30(project):
    """The rule as `dispel check` (and a report's check) runs it, on a copy of the committed pages."""
    docs = project / "docs" / "chains"
    found = {p.stem: None for p in docs.glob("*.md")}
    assert verify.check_page_rules(Project(project), found) == []
    page = docs / "emit.md"
    opened = "\n\n".join(f"### {n} · `f` {{ #hop-{n} }}\n\ntext" for n in range(100, 131))
    page.write_text(page.read_text(encoding="utf-8") + "\n" + opened + "\n", encoding="utf-8")
    (line,) = verify.check_page_rules(Project(project), found)
    assert line.startswith("docs/chains/emit.md: ") and "more than 30" in line


def test_the_journey_pages_show_at_most_30_hops_before_anything_is_opened():
    assert PAGES and pagecheck.too_many_visible(PAGES) == []


def test_repeated_paragraphs_are_counted_per_page():
    long = "A paragraph long enough to count as one a reader would notice when it comes back again."
    box = '???+ example "Observed value"\n    ``` text\n    data = b\'\\x81\\x05hello there, a value long enough\'\n    ```'
    page = f"{long}\n\n{box}\n\n{long}\n\n{box}\n\nshort\n\nshort\n"
    assert pagecheck.repeated_paragraphs([page]) == sorted([(long, 1), (pagecheck.paragraphs(box)[0], 1)], key=lambda kv: kv[0])
    assert pagecheck.repeated_paragraphs([long, long]) == []  # two pages, each saying it once


def test_the_journey_pages_repeat_at_most_20_paragraphs():
    repeats = pagecheck.repeated_paragraphs(PAGES.values())
    assert sum(n for _, n in repeats) <= MOST_REPEATS, repeats[:5]


def test_a_functions_text_and_an_observed_value_are_shown_once_per_page():
    chain = Chain("j", "t", "s", (
        _hop("Lib.send", 1, EDGE_ENTRY, "data = b'\\x81\\x05'"),
        _hop("Lib.frame", 2, value="data = b'\\x81\\x05'"),
        _hop("Lib.send", 1, EDGE_RETURN, line=5),
        _hop("Lib.send", 3, value="data = b'\\x81\\x05'"),  # another call of the same function
    ))
    text = "Frames the message and hands the bytes to the socket; a sentence long enough to be counted."
    lines = {Source("lib", "1", "lib.py"): [f"line_{n} = {n}" for n in range(1, 10)]}
    page = render.render_journey(chain, lambda hop: None, lines, {"lib:Lib.send": text})
    assert page.count(text) == 1
    assert "- **About this function:** see [hop 1](#hop-1), its first entry on this page" in page
    assert page.count("data = b'\\x81\\x05'") == 1 and "- **Observed value:** the same as at [hop 1](#hop-1)" in page
    assert "when the chain came back to this call, by `return` from [hop 2](#hop-2)" in page
    assert pagecheck.repeated_paragraphs([page]) == []


def test_bytes_are_written_as_python_writes_them():
    assert markup.bytes_as_python("return = b'\\x81£7ú!=\\x03'") == "return = b'\\x81\\xa37\\xfa!=\\x03'"
    assert markup.bytes_as_python("data = 'café'") == "data = 'café'"  # text stays text
    assert eval(markup.bytes_as_python("b'\\x81£7ú'").encode("ascii")) == bytes([0x81, 0xA3, 0x37, 0xFA])
    for name, page in PAGES.items():
        for value in re.findall(r"^\s*\w+ = (b'.*)$", page, re.MULTILINE):
            assert not re.search(r"[\xa0-\xff]", value), (name, value[:60])


def test_a_function_defined_twice_in_its_file_is_named_by_its_line():
    func = _hop("PubSubCommands.publish", 1, overloaded=True).func
    assert "@" not in render.func_label(func) and "(defined at line 1)" in render.func_label(func)
    for name, page in PAGES.items():
        assert not re.search(r"`[\w.]+:[\w.<>]+@\d+`", page), name


def test_a_return_shows_a_text_of_its_own_only_when_one_is_keyed_to_its_line():
    chain = Chain("j", "t", "s", (
        _hop("Lib.send", 1, EDGE_ENTRY),
        _hop("Lib.frame", 2),
        _hop("Lib.send", 1, EDGE_RETURN, line=5),
    ))
    lines = {Source("lib", "1", "lib.py"): [f"line_{n} = {n}" for n in range(1, 10)]}
    general = {"lib:Lib.send": "Sends it; the line that ran here is {{lineno}}."}
    page = render.render_journey(chain, lambda hop: None, lines, general)
    assert "when the chain came back:" not in page  # the call's text, filled again, is no text of its own
    keyed = dict(general, **{"lib:Lib.send@j#L5": "Back from framing, it returns the bytes."})
    page = render.render_journey(chain, lambda hop: None, lines, keyed)
    assert "At line 5, when the chain came back: Back from framing, it returns the bytes." in page
