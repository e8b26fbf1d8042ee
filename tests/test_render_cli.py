"""`dispel render` end to end: placeholders before any chain, real pages from chain files, all or nothing."""
from __future__ import annotations

import dataclasses
import json

from dispel import catalog, cli
from dispel.tracefiles.codec import chain_to_dict
from samples import EMIT, PAYLOAD

GENERATED = sorted([f"chains/{j}.md" for j in catalog.JOURNEY_NAMES] + ["licensing.md", "sample_app.md", "snippets/versions.md",
                                                                       "glossary.md", "threads.md", "snippets/edges.md", "snippets/cite.md", "snippets/modules.md"])


def run_render(tmp_path, chains_dir=None):
    docs = tmp_path / "docs"
    docs.mkdir(exist_ok=True)
    return cli.main(["render", "--out", str(docs), "--chains", str(chains_dir or tmp_path / "no-chains")])


def written(tmp_path):
    return sorted(p.relative_to(tmp_path / "docs").as_posix() for p in (tmp_path / "docs").rglob("*.md"))


def write_chains(folder, chains):
    folder.mkdir()
    for chain in chains:
        (folder / f"{chain.journey}.json").write_text(json.dumps(chain_to_dict(chain)), encoding="utf-8")


def test_without_chains_every_journey_is_a_placeholder(tmp_path, capsys):
    assert run_render(tmp_path) == 0
    assert written(tmp_path) == GENERATED
    for path in GENERATED:
        first = (tmp_path / "docs" / path).read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("<!--") and "dispel render" in first
    assert "Not recorded yet" in (tmp_path / "docs" / "chains" / "on.md").read_text(encoding="utf-8")
    assert f"placeholder pages: {', '.join(catalog.JOURNEY_NAMES)}" in capsys.readouterr().err


def test_a_chain_file_becomes_its_page(tmp_path):
    write_chains(tmp_path / "chains", [EMIT])
    assert run_render(tmp_path, tmp_path / "chains") == 0
    page = (tmp_path / "docs" / "chains" / "emit.md").read_text(encoding="utf-8")
    assert PAYLOAD in page and "## The bytes on the wire" in page
    # Library hops link to a 40-hex commit from the lock; the app's hops into the site.
    assert "https://github.com/miguelgrinberg/python-socketio/blob/" in page
    assert "../sample_app.md#__codelineno-dispel-sample-app-app-py-" in page
    assert "Not recorded yet" in (tmp_path / "docs" / "chains" / "run.md").read_text(encoding="utf-8")


def test_bad_annotations_file_names_file_and_line_and_writes_nothing(tmp_path, capsys):
    notes = tmp_path / "docs" / "annotations"
    notes.mkdir(parents=True)
    (notes / "emit.yml").write_text("m:f:\n  text: ok\nm:f:\n  text: twice\n", encoding="utf-8")
    assert run_render(tmp_path) == 2
    assert "emit.yml:3: 'm:f' is annotated twice" in capsys.readouterr().err
    assert written(tmp_path) == []


def test_annotation_on_no_chain_is_an_error_once_all_journeys_exist(tmp_path, capsys):
    write_chains(tmp_path / "chains", [dataclasses.replace(EMIT, journey=j) for j in catalog.JOURNEY_NAMES])
    notes = tmp_path / "docs" / "annotations"
    notes.mkdir(parents=True)
    (notes / "old.yml").write_text("gone.module:Old.func:\n  text: x\n", encoding="utf-8")
    assert run_render(tmp_path, tmp_path / "chains") == 2
    assert "old.yml:1: gone.module:Old.func is not on any chain" in capsys.readouterr().err
    assert written(tmp_path) == []
