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
    EDGE_QUEUE,
    EDGE_RETURN,
    EDGE_THREAD_START,
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
    assert 9 in fold.key_numbers(CHAIN, cited={9})  # the summary cites it


def test_one_recorded_call_is_one_entry_numbered_by_calls():
    entries = fold.entries(CHAIN)
    assert [e.numbers for e in entries if e.hop == 2] == [(2, 4, 6)]
    assert [e.number for e in entries] == list(range(1, 11)), "numbers count calls only"
    numbers = fold.page_numbers(CHAIN)
    assert numbers[4] == numbers[6] == numbers[2] == 2 and numbers[5] == 4 and numbers[12] == 10
    assert fold.chain_positions(CHAIN)[4] == 5
    groups = fold.groups(CHAIN)
    folded = [g for g in groups if g.folded]
    assert [g.numbers for g in folded] == [[3], [7, 8, 9]]
    assert [g.shown for g in folded] == [[3], [5, 6, 7]]
    assert folded[0].title == "1 call in lib: Lib.inner"  # titled by what it holds, not by numbers
    assert folded[1].title == "3 calls in lib: Lib.use, Lib.deep, Lib.deeper"
    # Nothing is lost: every hop is in exactly one entry.
    assert sorted(n for g in groups for n in g.numbers) == list(range(1, 13))


def test_a_key_return_still_joins_its_call_and_makes_it_key():
    hops = list(CHAIN.hops)
    hops.insert(10, hop("Lib.outer", "lib", EDGE_RETURN, 11))  # the call hands off after it came back
    chain = Chain("j", "t", "s", tuple(hops), joins=CHAIN.joins)
    entries = fold.entries(chain)
    outer = next(e for e in entries if e.hop == 2)
    assert outer.returns == (4, 6, 11) and outer.key
    assert len(entries) == 10


def test_the_same_call_resumed_as_a_new_part_is_one_entry():
    chain = Chain("j", "t", "s", (
        hop("App.handler", "sample_app", EDGE_ENTRY, 10),
        hop("Lib.join", "lib", EDGE_CALL, 11),
        hop("App.handler", "sample_app", EDGE_ENTRY, 10),  # the chain starts again at the same frame
        hop("Lib.emit", "lib", EDGE_CALL, 12),
    ))
    assert [e.numbers for e in fold.entries(chain)] == [(1, 3), (2,), (4,)]
    assert [p.number for p in fold.parts(chain)] == [1]


def test_parts_are_named_with_what_caused_them():
    chain = Chain("j", "t", "s", (
        hop("App.handler", "sample_app", EDGE_ENTRY, 10, "a/main"),
        hop("Thread.start", "python", EDGE_CALL, 11, "a/main"),
        hop("Thread.run", "python", EDGE_THREAD_START, 20, "a/worker"),
        hop("Redis.publish", "redis", EDGE_CALL, 21, "a/worker"),
        hop("socket.recv", "builtin", EDGE_QUEUE, 30, "b/listener"),
        hop("Lib.handle", "lib", EDGE_CALL, 31, "b/listener"),
        hop("socket.recv", "builtin", EDGE_ENTRY, 40, "b/reader"),
    ))
    parts = fold.parts(chain)
    assert [(p.number, p.first) for p in parts] == [(1, 1), (2, 3), (3, 5), (4, 7)]
    assert "thread `a/worker` starts" == parts[1].title and "[hop 2](#hop-2)" in parts[1].cause
    assert "across Redis, in `b`" == parts[2].title and "published a message to Redis ([hop 4](#hop-4))" in parts[2].cause
    assert "read at the socket (a read like [hop 5](#hop-5))" in parts[3].cause


def test_too_many_key_entries_fold_whole_parts_from_the_last():
    hops = [hop("App.a", "sample_app", EDGE_ENTRY, 1, "m")]
    hops += [hop(f"App.f{i}", "sample_app", EDGE_CALL, 10 + i, "m") for i in range(5)]  # the app's hops: all key
    hops += [hop("Sock.recv", "builtin", EDGE_ENTRY, 50, "r")]
    hops += [hop(f"App.g{i}", "sample_app", EDGE_CALL, 60 + i, "r") for i in range(5)]
    chain = Chain("j", "t", "s", tuple(hops))
    assert sum(not g.folded for g in fold.groups(chain)) == 12
    groups = fold.groups(chain, limit=8)
    assert sum(not g.folded for g in groups) == 6
    last = groups[-1]
    assert last.folded and last.title.startswith("Part 2, Sock.recv on r: 6 calls in the C socket and the app")
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
    assert not re.search(r'<a id="hop-', page), "a hop is an entry of its own, never an anchor inside another"
    anchors = [int(n) for n in open_headings + folded_headings]
    assert sorted(anchors) == list(range(1, len(fold.entries(chain)) + 1)), "one entry per recorded call, each with its anchor"
    numbers = fold.page_numbers(chain)
    assert set(numbers) == set(range(1, len(chain.hops) + 1)), "every hop of the chain is shown by an entry"
    opened = {int(n) for n in open_headings}
    assert {numbers[j.producer] for j in chain.joins} <= opened, "producers are key hops"
    assert {numbers[n] for n, h in enumerate(chain.hops, 1) if h.func.source.dist == "sample_app"} <= opened, "the app's hops are key"
    assert not re.search(r'^\s*\?\?\? note ".*hops? \d', page, re.MULTILINE), "folded blocks are titled by what they hold, not by numbers"


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
    assert '??? note "3 calls in lib: Lib.use, Lib.deep, Lib.deeper"' in text
    assert "    ### 6 · `Lib.deep` { #hop-6 }" in text  # chain position 8, the sixth call
    assert '<a id="hop-' not in text
    assert text.count("when the chain came back to this call, by `return` from [hop 3](#hop-3)") == 1
    assert "**Uses a value from:** [hop 4](#hop-4)" in text and "**Its value is used by:** [hop 5](#hop-5)" in text


@pytest.mark.parametrize("journey", JOURNEYS)
def test_every_hop_keeps_its_linked_executed_line(chains, journey):
    from dispel.check import links as check

    page = (ROOT / "docs" / "chains" / f"{journey}.md").read_text()
    chain = chains[journey]
    linked = {check._hop_of(link, {journey: chain}) for link in check.page_links(f"chains/{journey}.md", page) if link.role == "line"}
    linked = {n for n, h in enumerate(chain.hops, 1) if h in linked}
    wanted = {n for n, h in enumerate(chain.hops, 1) if not h.func.is_c}
    assert wanted <= linked, f"hops without their executed-line link: {sorted(wanted - linked)[:10]}"


def test_a_run_of_one_call_is_named_by_its_function():
    (single,) = [g for g in fold.groups(CHAIN) if g.folded and len(g.entries) == 1]
    assert single.title == "1 call in lib: Lib.inner"
