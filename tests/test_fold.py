"""Key hops and folding: which hops a page shows in the open, how returns join their calls, and
that nothing is lost (every hop keeps its anchor, link and annotation one click away)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from dispel.chains import fold
from dispel.model import (
    EDGE_CALL,
    EDGE_ENTRY,
    EDGE_RETURN,
    EDGE_WAKE,
    Chain,
    Func,
    Hop,
    Join,
    Source,
)
from dispel.render import pages as render
from dispel.tracefiles.codec import chain_from_dict

ROOT = Path(__file__).resolve().parents[1]
JOURNEYS = sorted(p.stem for p in (ROOT / "traces" / "chains").glob("*.json"))
MOST_KEY_HOPS = 30


def hop(qualname, dist, edge, event, thread="t"):
    return Hop(Func(qualname.split(".")[0].lower(), qualname, Source(dist, "1", "x.py"), 1, 9), 2, thread, edge, event)


CHAIN = Chain(
    "j", "t", "s",
    (
        hop("App.handler", "sample_app", EDGE_ENTRY, 10),  # 1 entry
        hop("Lib.outer", "lib", EDGE_CALL, 11),  # 2 first in lib
        hop("Lib.inner", "lib", EDGE_CALL, 12),  # 3
        hop("Lib.outer", "lib", EDGE_RETURN, 11),  # 4 back in 2: merged into its entry
        hop("Lib.make", "lib", EDGE_CALL, 13),  # 5 producer
        hop("Lib.outer", "lib", EDGE_RETURN, 11),  # 6 merged
        hop("Lib.use", "lib", EDGE_CALL, 14),  # 7 user
        hop("Lib.deep", "lib", EDGE_CALL, 15),  # 8
        hop("Lib.deeper", "lib", EDGE_CALL, 16),  # 9
        hop("Cond.notify", "python", EDGE_CALL, 17),  # 10 hands off, first in python
        hop("Cond.wait", "python", EDGE_WAKE, 30, "u"),  # 11 wake-up
        hop("Sock.send", "builtin", EDGE_CALL, 31, "u"),  # 12 sink
    ),
    joins=(Join(5, 7, "result"),),
)


def test_key_hops_by_rule():
    assert fold.key_numbers(CHAIN) == {1, 2, 5, 10, 11, 12}  # 5 is a producer; its user 7 is not key
    assert 8 in fold.key_numbers(CHAIN, {"lib:Lib.deep"})  # an annotation marks it key


def test_a_return_joins_the_entry_of_its_call_and_runs_fold():
    entries = fold.entries(CHAIN)
    assert [e.numbers for e in entries if e.hop == 2] == [(2, 4, 6)]
    groups = fold.groups(CHAIN)
    folded = [g for g in groups if g.folded]
    assert [g.numbers for g in folded] == [[3], [7, 8, 9]]
    assert folded[1].title == "3 calls in lib"
    # Nothing is lost: every hop is in exactly one entry.
    assert sorted(n for g in groups for n in g.numbers) == list(range(1, 13))


def test_hop_ranges():
    assert fold.hop_ranges([3, 4, 5, 9]) == "hops 3–5, 9"
    assert fold.hop_ranges([7]) == "hop 7"


@pytest.fixture(scope="module")
def chains():
    return {j: chain_from_dict(json.loads((ROOT / "traces" / "chains" / f"{j}.json").read_text())) for j in JOURNEYS}


@pytest.mark.parametrize("journey", JOURNEYS)
def test_committed_pages_show_at_most_30_key_hops_and_keep_every_anchor(chains, journey):
    page = (ROOT / "docs" / "chains" / f"{journey}.md").read_text()
    chain = chains[journey]
    open_headings = re.findall(r"^### (\d+) · .*\{ #hop-\1 \}$", page, re.MULTILINE)
    folded_headings = re.findall(r"^    ### (\d+) · .*\{ #hop-\1 \}$", page, re.MULTILINE)
    assert 0 < len(open_headings) <= MOST_KEY_HOPS
    anchors = {int(n) for n in open_headings + folded_headings} | {int(n) for n in re.findall(r'<a id="hop-(\d+)"></a>', page)}
    assert anchors == set(range(1, len(chain.hops) + 1)), "every hop keeps its anchor"
    shown = {g.entries[0].hop for g in fold.groups(chain) if not g.folded}
    assert {int(n) for n in open_headings} == shown
    assert {j.producer for j in chain.joins} <= shown, "producers are key hops"


@pytest.mark.slow
def test_built_html_shows_at_most_30_key_hops_outside_details(tmp_path):
    """Build the committed docs and read the HTML: hop headings outside <details> are the key ones."""
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(tmp_path / "site")], cwd=ROOT, check=True, capture_output=True)
    site = tmp_path / "site" / "chains"

    class Count(HTMLParser):
        def __init__(self):
            super().__init__()
            self.inside = 0
            self.open = 0

        def handle_starttag(self, tag, attrs):
            self.inside += tag == "details"
            if tag == "h3" and dict(attrs).get("id", "").startswith("hop-") and not self.inside:
                self.open += 1

        def handle_endtag(self, tag):
            self.inside -= tag == "details"

    for journey in JOURNEYS:
        counter = Count()
        counter.feed((site / journey / "index.html").read_text())
        assert 0 < counter.open <= MOST_KEY_HOPS, (journey, counter.open)


def test_folded_blocks_render_as_collapsible_notes():
    md = render.render_hop_list(CHAIN, fold.groups(CHAIN), {}, {}, {})
    text = "\n".join(md)
    assert '??? note "3 calls in lib: hops 7–9"' in text
    assert "    ### 8 · `Lib.deep` { #hop-8 }" in text
    assert '<a id="hop-4"></a>' in text and '<a id="hop-6"></a>' in text
    assert "**Uses a value from:** [hop 5](#hop-5)" in text and "**Its value is used by:** [hop 7](#hop-7)" in text


@pytest.mark.parametrize("journey", JOURNEYS)
def test_every_hop_keeps_its_linked_executed_line(chains, journey):
    from dispel.check import links as check

    page = (ROOT / "docs" / "chains" / f"{journey}.md").read_text()
    linked = {link.hop for link in check.page_links(f"chains/{journey}.md", page) if link.role == "line"}
    chain = chains[journey]
    wanted = {n for n, h in enumerate(chain.hops, 1) if not h.func.is_c}
    assert wanted <= linked, f"hops without their executed-line link: {sorted(wanted - linked)[:10]}"


def test_a_run_of_one_call_is_named_by_its_function():
    (single,) = [g for g in fold.groups(CHAIN) if g.folded and len(g.entries) == 1]
    assert single.title == "1 call in lib: Lib.inner"
