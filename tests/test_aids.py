"""The reader's aids (dispel.aids): glossary, threads, layer table, copy block, licensing extras, colophon."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import trace_of
from dispel import catalog
from dispel.check import links as check
from dispel.check import stage as verify
from dispel.model import EDGES, FilePin, Pin
from dispel.pins import pinning as pins
from dispel.pins import stage as pins_stage
from dispel.project import (
    Project,
    load_annotations,
    load_chains,
    load_lock,
    project_lock,
)
from dispel.render import aids, annotation_files
from dispel.render import pages as render
from dispel.render import stage as render_stage
from programs import threads as threads_program
from samples import EMIT, EXCERPTS, HOP_LINKS

ROOT = Path(__file__).resolve().parents[1]


def committed_pages() -> dict:
    """The committed chains' page models, as `dispel render` makes them."""
    project = Project()
    found = load_chains(project)
    texts = annotation_files.texts(load_annotations(project))
    lock = project_lock(project)
    return {j: render.journey_page(c, render_stage.hop_linker(lock), {}, texts, found) for j, c in found.items()}


# --------------------------------------------------------------------------- edges


def test_the_edge_table_names_every_edge_of_the_model():
    table = aids.edge_table()
    assert [m.group(1) for m in re.finditer(r"^\| `([^`]+)` \|", table, re.MULTILINE)] == list(EDGES)
    with pytest.raises(ValueError, match="no meaning for the edge"):
        aids.edge_table((*EDGES, "teleport"))


def test_the_home_page_shows_the_generated_edge_table():
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    assert f'--8<-- "{aids.EDGES_SNIPPET}"' in index
    assert (ROOT / "docs" / "snippets" / aids.EDGES_SNIPPET).read_text(encoding="utf-8") == aids.edges_snippet()


# --------------------------------------------------------------------------- threads


def test_thread_facts_of_a_real_trace_name_the_starter_the_wait_and_the_waker():
    trace = trace_of(threads_program.producer_consumer)
    facts = aids.thread_facts({"t": trace})
    assert set(facts) == {"main", "thread"}
    worker, main = facts["thread"], facts["main"]
    assert worker.threads == 1 and [k.rpartition(":")[2] for k in worker.first] == ["produce_later"]
    assert [(k.rpartition(":")[2], role) for k, role in worker.started_by] == [("producer_consumer", "main")]
    assert [(k.rpartition(":")[2], sync) for k, sync in main.waits] == [("producer_consumer", "queue:Queue.get")]
    assert [(k.rpartition(":")[2], role) for k, role in main.woken_by] == [("produce", "thread")]


def test_the_threads_page_lists_every_role_of_every_chain_and_links_its_journeys():
    found = load_chains(Project())
    page = (ROOT / "docs" / aids.THREADS_PAGE).read_text(encoding="utf-8")
    for chain in found.values():
        for role in {aids.role_of(h.thread) for h in chain.hops}:
            row = next((line for line in page.split("\n") if line.startswith(f"| [`{role}`](#{role}) |")), None)
            assert row is not None, f"the threads page has no row for {role}"
            assert f"[{chain.journey}](chains/{chain.journey}.md)" in row, (role, chain.journey)


def test_role_of_strips_the_process_and_the_number():
    assert aids.role_of("server-a/eio-writer-1") == "eio-writer"
    assert aids.role_of("request-12") == "request"
    assert aids.role_of("main") == "main"


def test_the_glossary_names_every_thread_role_and_edge():
    page = (ROOT / "docs" / aids.GLOSSARY_PAGE).read_text(encoding="utf-8")
    for _, role in catalog.THREAD_ROLES:
        assert f"`{role}`\n:   " in page, role
    for edge in EDGES:
        assert f"| `{edge}` |" in page, edge


def test_the_navigation_lists_the_aids_and_every_journey():
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    wanted = [*(f"chains/{j}.md" for j in catalog.JOURNEY_NAMES), aids.GLOSSARY_PAGE, aids.THREADS_PAGE]
    assert check.unlisted_pages(config, wanted) == []
    dropped = config.replace("      - Threads: threads.md\n", "")
    assert check.unlisted_pages(dropped, wanted) == ["mkdocs.yml: the navigation does not list threads.md"]


# --------------------------------------------------------------------------- a journey's layer table and copy block


def test_the_layer_table_lists_exactly_the_codec_hops_of_each_journey():
    codecs = {c.key: c for c in catalog.CODECS}
    for journey, page in committed_pages().items():
        table = aids.layer_table(page)
        on_chain = {k for h in page.chain.hops if (k := f"{h.func.module}:{h.func.qualname}") in codecs}
        listed = {lh.codec.key for lh in aids.layer_hops(page)}
        assert listed == on_chain, journey
        for lh in aids.layer_hops(page):
            n = aids.page_number(lh.view)
            assert f"[hop {n}](#hop-{n})" in table
            assert lh.view.links is None or lh.view.links.definition in table
    # the handshake's 101 is turned into bytes by h11, whose Connection.send is an overloaded name
    assert "h11._connection:Connection.send" in {lh.codec.key for lh in aids.layer_hops(committed_pages()["handshake"])}
    # the emit page encodes every layer it sends, and parses nothing
    emit = aids.layer_hops(committed_pages()["emit"])
    assert {lh.codec.layer for lh in emit} == {"Socket.IO packet", "Engine.IO packet", "WebSocket frame"}
    assert {lh.codec.direction for lh in emit} == {catalog.SENT}


def test_a_page_without_codec_hops_says_so():
    page = render.journey_page(EMIT, HOP_LINKS, EXCERPTS, {})
    assert "*No hop of this journey parses or encodes a protocol layer.*" in aids.layer_table(page)


def test_the_copy_block_has_one_line_per_key_hop_with_its_pinned_line():
    page = render.journey_page(EMIT, HOP_LINKS, EXCERPTS, {})
    key = [v for s in page.sections if not s.folded for v in s.entries]
    lines = aids.copy_lines(page)
    assert len(lines) == len(key)
    for line, view in zip(lines, key):
        url = view.links.line if view.links else ""
        assert line.startswith(f"- [{aids.page_number(view)}. {view.hop.func.qualname} ") and line.endswith(f"({url})" if url else ")")
    block = aids.copy_block(page)
    assert "``` markdown\n**emit**:" in block


def test_every_journey_page_carries_its_aids_before_the_hops():
    for journey in catalog.JOURNEY_NAMES:
        text = (ROOT / "docs" / "chains" / f"{journey}.md").read_text(encoding="utf-8")
        assert text.index("{ #layers }") < text.index("{ #copy }") < text.index(aids.HOPS_HEADING), journey


def test_a_copy_block_link_to_an_unlocked_commit_fails_the_check(project):
    page = project / "docs" / "chains" / "emit.md"
    text = page.read_text(encoding="utf-8")
    block = text[text.index("{ #copy }"):text.index(aids.HOPS_HEADING)]
    m = re.search(r"/blob/([0-9a-f]{40})/", block)
    assert m, "the copy block has no pinned link"
    page.write_text(text.replace(block, block.replace(m.group(1), "f" * 40)), encoding="utf-8")
    lock = load_lock(project / "traces" / "pins.lock.json")
    results = verify.check_links(Project(project), lock, load_chains(Project(project)))
    assert any(f"at {'f' * 40} is not pinned" in p for r in results for p in r.problems)


# --------------------------------------------------------------------------- licensing


def test_license_files_are_mapped_by_blob_nearest_the_top():
    tree = {"LICENSE": "a" * 40, "docs/LICENSE": "a" * 40, "src/x.py": "b" * 40}
    installed = {"x-1.dist-info/licenses/LICENSE": "a" * 40, "x-1.dist-info/COPYING": "c" * 40}
    assert pins.map_licenses(installed, tree) == (FilePin("x-1.dist-info/licenses/LICENSE", "LICENSE", "a" * 40),)


def test_the_lock_keeps_license_files_and_old_locks_stay_as_they_were():
    base = Pin("x", "1", "github", "o/x", "v1", "1" * 40, "commit", (FilePin("x/__init__.py", "src/x/__init__.py", "2" * 40),))
    python = pins.stdlib_pin("3.11.7", {"Lib/queue.py": "3" * 40})
    plain = pins.lock_to_json(pins.Lock(python, (base,)))
    assert "licenses" not in plain["dists"]["x"]
    assert pins.lock_from_json(json.loads(json.dumps(plain))).dists[0].licenses == ()
    licensed = pins.dataclasses.replace(base, licenses=(FilePin("x-1.dist-info/LICENSE", "LICENSE", "4" * 40),))
    data = json.loads(json.dumps(pins.lock_to_json(pins.Lock(python, (licensed,)))))
    assert pins.lock_from_json(data).dists[0] == licensed
    now = pins.Installed("x", "1", {"x/__init__.py": "2" * 40}, {"x-1.dist-info/LICENSE": "5" * 40})
    assert any("the license file x-1.dist-info/LICENSE differs" in p for p in pins.verify(pins.Lock(python, (licensed,)), {"x": now}, with_python=False))


def test_the_licensing_page_links_every_pinned_license_file():
    page = (ROOT / "docs" / "licensing.md").read_text(encoding="utf-8")
    lock = project_lock(Project())
    for pin in lock.dists:
        for lic in pin.licenses:
            assert f"https://github.com/{pin.repo}/blob/{pin.commit}/{lic.path}" in page, pin.dist


def test_the_dependency_tree_expands_each_distribution_once():
    deps = {
        "a": ("A", "1", (("b", "b>=1"), ("c", "c"))),
        "b": ("B", "2", (("c", "c<3"),)),
        "c": ("C", "2.5", ()),
        "d": ("D", "", ()),
    }
    assert aids.dependency_roots(deps, ["a", "b", "d"]) == ["a", "d"]
    tree = aids.dependency_tree(deps, ["a", "b", "d"])
    lines = tree.split("\n\n", 2)[2].strip().split("\n")
    assert lines == [
        "- **A** 1",
        "    - **B** 2 — required as `b>=1`",
        "        - C 2.5 — required as `c<3`",
        "    - C 2.5 — required as `c`",
        "- **D** *(not installed)*",
    ]


# --------------------------------------------------------------------------- footer and citation


def test_the_colophon_names_the_version_and_the_date_of_the_traces():
    c = aids.Colophon("Site", "1.2.3", "2026-01-02T03:04:05+00:00", "ab" * 20)
    footer, cite = aids.footer_html(c), aids.cite_snippet(c)
    for text in (footer, cite):
        assert "1.2.3" in text and "2026-01-02" in text and "abababababab" in text
    assert "year = {2026}" in cite
    undated = aids.cite_snippet(aids.Colophon("Site", "1.2.3", ""))
    assert "an unknown date" in undated and "year = {n.d.}" in undated


def test_the_committed_footer_dates_the_last_commit_of_the_traces():
    date, sha = render_stage.traces_commit(Project())
    if not date:
        pytest.skip("not a git checkout")
    footer = (ROOT / "docs" / aids.FOOTER_PARTIAL).read_text(encoding="utf-8")
    assert f"traces of {date[:10]}" in footer and sha[:12] in footer


def test_pin_proves_the_license_files_and_a_kept_entry_learns_them_from_a_mirror(tmp_path):
    from conftest import install, make_repo
    from dispel import cli

    license_text = "MIT License\n\nPermission is hereby granted, free of charge...\n"
    repo = make_repo(tmp_path / "up", {"LICENSE": license_text, "docs/LICENSE": license_text, "src/lib/__init__.py": "x = 1\n"}, {"v1.0": True})
    site = tmp_path / "site"
    install(site, "lib", "1.0", {"lib/__init__.py": "x = 1\n"}, ["Source, https://github.com/acme/lib"])
    info = site / "lib-1.0.dist-info"
    (info / "licenses").mkdir()
    (info / "licenses" / "LICENSE").write_text(license_text)
    (info / "RECORD").write_text((info / "RECORD").read_text() + f"{info.name}/licenses/LICENSE,,\n")
    lock_path = tmp_path / "pins.lock.json"
    args = ["pin", "lib", "--site", str(site), "--lock", str(lock_path)]
    assert cli.main([*args, "--git-dir", f"acme/lib={repo}"]) == 0
    pin = load_lock(lock_path).pin("lib")
    assert [(f.installed, f.path) for f in pin.licenses] == [("lib-1.0.dist-info/licenses/LICENSE", "LICENSE")]
    assert pins_stage.verify_installed(load_lock(lock_path), [site]) == []
    # a lock without them (an older dispel's) keeps its entry without git, and learns them from a mirror
    data = json.loads(lock_path.read_text())
    del data["dists"]["lib"]["licenses"]
    lock_path.write_text(json.dumps(data))
    assert cli.main([*args, "--git-dir", f"acme/lib={repo}"]) == 0
    assert load_lock(lock_path).pin("lib").licenses == pin.licenses
    # a changed license file is a failure of the installed check
    (info / "licenses" / "LICENSE").write_text(license_text + "changed\n")
    assert any("license file lib-1.0.dist-info/licenses/LICENSE differs" in p for p in pins_stage.verify_installed(load_lock(lock_path), [site]))
