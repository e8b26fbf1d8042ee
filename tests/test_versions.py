"""The sample's journeys at the oldest supported set against the lock's (dispel.review.versions): the
pages built from dispel diff's alignment, and the oldest set's links proven against its venv or
said unproven."""
from __future__ import annotations

import dataclasses
import re

import pytest
from dispel.chains import fold
from dispel.check import stage as verify
from dispel.check.links import PageLink, page_links
from dispel.model import Lock
from dispel.pins.permalinks import ref
from dispel.project import OLDEST_SET, Project, load_chains, load_lock, oldest_set
from dispel.review import oldest_venv, versions
from samples import EMIT

OLDEST = Project().traces / versions.SET


def committed() -> tuple[dict, Lock, dict, Lock]:
    old_chains, old_lock = oldest_set(Project())
    if not old_chains:
        pytest.skip("no chains at the oldest set (traces/oldest/chains): `make regen-oldest` records them")
    return old_chains, old_lock, load_chains(Project()), load_lock(Project().lock)


def sha_links(text: str, repo: str) -> set[str]:
    return set(re.findall(rf"https://github\.com/{re.escape(repo)}/blob/([0-9a-f]{{40}})/", text))


def test_a_page_names_every_hop_added_removed_moved_or_changed():
    """An old chain made from the sample's emit chain: its second hop gone, another hop at another line."""
    hops = list(EMIT.hops)
    old_hop = dataclasses.replace(hops[2], line=hops[2].line - 1)
    old = dataclasses.replace(EMIT, hops=(hops[0], hops[1], old_hop, *hops[3:]))
    new = dataclasses.replace(EMIT, hops=(hops[0], *hops[2:]))
    both, d = versions.pairs(old, new)
    assert [(p.old, p.new, p.kind) for p in both] == [(1, 1, "same"), (3, 2, "changed")] + [
        (n + 1, n, "same") for n in range(3, len(hops))]
    assert [c.kind for c in d.changes if c.kind != "changed"] == ["removed"]
    # every hop is on the page once: on both sides, or removed, or added
    assert {p.old for p in both} | {c.old for c in d.changes if c.kind == "removed"} == set(range(1, len(old.hops) + 1))
    assert both[1].fields == (("line", str(old_hop.line), str(hops[2].line)),)


def test_every_journey_page_links_each_side_at_its_own_commit():
    old_chains, old_lock, new_chains, new_lock = committed()
    for journey, old in old_chains.items():
        new = new_chains[journey]
        page = versions.render_journey(old, new, old_lock, new_lock)
        both, d = versions.pairs(old, new)
        rows = page.split("## Both sides", 1)[1].strip().splitlines()[2:]
        assert len(rows) == len(both), journey
        on, nn = fold.page_numbers(old), fold.page_numbers(new)  # the numbers the journey pages show
        for row, p in zip(rows, both):
            cells = [c.strip() for c in row.strip("|").split("|")]
            assert cells[0] == str(on[p.old]) and cells[1] == str(nn[p.new])
            assert cells[2] == f"`{new.hops[p.new - 1].func.key}`"
            for cell, lock in ((cells[3], old_lock), (cells[4], new_lock)):
                for repo, sha in re.findall(r"github\.com/([^/]+/[^/]+)/blob/([0-9a-f]{40})/", cell):
                    assert sha in {ref(p) for p in (lock.python, *lock.dists) if p.repo == repo}, (journey, row)
        for c in d.changes:
            if c.kind in ("added", "removed"):
                section = "## Hops added" if c.kind == "added" else "## Hops removed"
                text = page.split(section, 1)[1].split("\n## ", 1)[0]
                assert f"`{c.hop.func.key}`" in text, (journey, c)
        fsio = (old_lock.pin("flask-socketio").commit, new_lock.pin("flask-socketio").commit)
        assert sha_links(page, "miguelgrinberg/Flask-SocketIO") <= set(fsio)


def test_pages_regenerate_byte_for_byte_as_committed(tmp_path):
    old_chains, old_lock, new_chains, new_lock = committed()
    files = versions.pages(tmp_path, old_chains, new_chains, old_lock, new_lock)
    assert sorted(p.name for p in files) == sorted([f"{j}.md" for j in old_chains] + ["index.md"])
    for path, text in files.items():
        assert (Project().docs / versions.PAGES / path.name).read_text(encoding="utf-8") == text, path.name
    assert versions.pages(tmp_path, old_chains, new_chains, old_lock, new_lock) == files


def test_the_oldest_sets_journeys_are_those_of_its_scenarios():
    assert versions.SET == OLDEST_SET
    old_chains, *_ = committed()
    assert sorted(old_chains) == sorted(versions.journeys())
    assert {c.scenario for c in old_chains.values()} <= set(versions.SCENARIOS)


def test_links_of_the_oldest_set_are_told_apart():
    _, old_lock, _, new_lock = committed()
    text = (Project().docs / versions.PAGES / "on.md").read_text(encoding="utf-8")
    links = page_links("versions/on.md", text)
    mine, theirs = versions.oldest_links(links, new_lock, old_lock)
    assert theirs and all(old_lock.pin("flask-socketio").commit in l.target or "/blob/" in l.target for l in theirs)
    assert not any(new_lock.pin("flask-socketio").commit in l.target for l in theirs)
    assert len(mine) + len(theirs) == len(links)


def test_without_the_second_venv_the_oldest_links_are_unproven_and_not_counted(project, monkeypatch):
    _, old_lock, _, new_lock = committed()
    monkeypatch.setenv(oldest_venv.VENV_ENV, str(project / "no-venv"))
    notes: list[str] = []
    results = verify.check_links(Project(project), new_lock, load_chains(Project(project)), notes=notes)
    oldest = {old_lock.pin("flask-socketio").commit}
    assert not any(sha_links(r.link.target, "miguelgrinberg/Flask-SocketIO") & oldest for r in results)
    assert len(notes) == 1 and notes[0].startswith("unproven: ") and "no venv at" in notes[0]


def test_with_the_second_venv_a_wrong_oldest_link_fails(project):
    _, old_lock, _, _new_lock = committed()
    site = oldest_venv.site_packages(oldest_venv.venv(Project().root))
    if site is None:
        pytest.skip(f"no venv at {oldest_venv.venv(Project().root)} (`make site` builds it from the registry)")
    fsio = old_lock.pin("flask-socketio")
    path = next(f.path for f in fsio.files if f.installed == "flask_socketio/__init__.py")
    good = PageLink("versions/x.md", 1, f"https://github.com/{fsio.repo}/blob/{fsio.commit}/{path}#L10")
    past = PageLink("versions/x.md", 2, f"https://github.com/{fsio.repo}/blob/{fsio.commit}/{path}#L99999")
    results = oldest_venv.check_links([good, past], old_lock, site)
    assert [bool(r.problems) for r in results] == [False, True]
    # a site with another version of the file: the blob proof fails
    other = oldest_venv.check_links([good], old_lock, oldest_venv.site_packages(Project().root / ".venv"))
    assert other is None or "blob" in " ".join(other[0].problems)


def test_chains_at_other_versions_than_the_oldest_lock_are_refused():
    old_chains, old_lock, new_chains, _ = committed()
    assert versions.version_drift(old_chains.values(), old_lock) == []
    said = versions.version_drift([new_chains["on"]], old_lock)
    assert any(line.startswith("versions: traces/oldest/chains ran flask-socketio 5.6.1") for line in said), said
