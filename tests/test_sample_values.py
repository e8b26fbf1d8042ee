"""General annotation texts hold for any app: the sample's values, computed from its committed chains,
fail a general text that names one (dispel check) and a report's page that shows one (check --root)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from dispel import wire
from dispel.check import prose
from dispel.check import stage as verify
from dispel.model import Source
from dispel.project import Project, load_annotations, load_chains
from dispel.render import annotation_files as annotations
from dispel.render import markup

ROOT = Project().root
APPS = ROOT / "tests" / "programs" / "apps"


@pytest.fixture(scope="module")
def chains():
    found = load_chains(Project(ROOT))
    if not {"on", "ack", "emit", "broadcast"} <= set(found):
        pytest.skip("the sample's chains are not committed yet")
    return found


@pytest.fixture(scope="module")
def vocabulary(chains):
    return annotations.sample_vocabulary(chains.values())


def general_text_line(path: Path) -> tuple[str, int]:
    """The key of the first general text (no @journey) of an annotations file, and the line of its text."""
    lines = path.read_text(encoding="utf-8").split("\n")
    for i, line in enumerate(lines):
        key = line.rstrip(":")
        if line.endswith(":") and not line.startswith((" ", "#")) and "@" not in key and not key.startswith("journey:"):
            text_at = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("  text: |"))
            return key, text_at + 1
    raise AssertionError(f"no general text in {path}")


def seed(path: Path, term: str) -> str:
    """Put a sentence naming ``term`` into the first general text of ``path``; returns its key."""
    key, at = general_text_line(path)
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[at] += f" The app names `{term}` here."
    path.write_text("\n".join(lines), encoding="utf-8")
    return key


# --------------------------------------------------------------------------- the vocabulary


def test_the_vocabulary_is_computed_from_the_chains(chains, vocabulary):
    handlers = {p for c in chains.values() for h in c.hops if h.func.source.dist == "sample_app" for p in h.func.qualname.split(".") if p.isidentifier()}
    events = {json.loads(f.value) for c in chains.values() for w in c.wire if w.layer == "JSON payload" for f in w.fields if f.name == "event"}
    threads = {h.thread for c in chains.values() for h in c.hops}
    assert events and handlers
    assert events <= vocabulary, "every event name on the sample's wire"
    assert handlers - threads <= vocabulary, "every handler of the sample on a chain"
    assert {"sample app", "this site"} <= vocabulary
    # The sample's ACK payload, its event sent with an ack id (only in the hops' values) and its room.
    acks = {s for c in chains.values() for w in c.wire if w.layer.startswith("Socket.IO") and w.raw[:1] == "3"
            for s in annotations._packet_terms(w.raw)}
    assert acks and acks <= vocabulary | annotations.PROTOCOL_WORDS
    rooms = {annotations._literal(h.value)[1] for c in chains.values() for h in c.hops if (h.value or "").startswith("room = ")}
    assert rooms and rooms <= vocabulary


def test_protocol_words_threads_and_placeholders_are_not_sample_values(chains, vocabulary):
    threads = {h.thread for c in chains.values() for h in c.hops}
    assert not vocabulary & (annotations.PROTOCOL_WORDS | threads)
    assert not [t for t in vocabulary if re.fullmatch(r"<[\w-]+>", t) or len(t) < 3]


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        ("The handler `on_shout` returns.", True),
        ('It sends `2["shout","hello"]`.', True),
        ("ACK with `data=[{\"upper\": \"HELLO\"}]`.", True),
        ("Not used by the Sample App.", True),
        ("Its label reads: this site.", True),
        ("It waits for a reply, then the client has joined.", False),  # words, not values
        ("The `message` event and `connect` are the protocol's.", False),
        ("Upper-case HELLO WORLD is text, not a quoted value.", False),
    ],
)
def test_a_term_is_found_as_a_value_not_as_a_word(text, flagged):
    vocabulary = {"on_shout", "shout", "hello", "HELLO", "upper", "reply", "joined", "sample app", "this site"}
    notes = {"m:f": annotations.Annotation("m:f", text, "", "x.yml", 3)}
    assert bool(annotations.sample_values(notes, [], vocabulary)) is flagged


def test_keyed_texts_summaries_and_the_samples_own_functions_are_not_read(chains, vocabulary):
    own = next(h.func.key for c in chains.values() for h in c.hops if h.func.source.dist == "sample_app")
    notes = {
        key: annotations.Annotation(key, "It answers `on_shout` with `\"HELLO\"`.", "", "x.yml", n)
        for n, key in enumerate(["m:f@ack", "m:f@ack#L12", "journey:ack", own], 1)
    }
    assert annotations.sample_values(notes, chains.values()) == []


# --------------------------------------------------------------------------- the mutation test


def test_every_committed_general_text_holds_for_any_app(chains):
    notes = load_annotations(Project(ROOT))
    assert [p.message for p in annotations.sample_values(notes, chains.values())] == []


def test_a_general_text_that_names_any_sample_value_fails_the_rule(chains, vocabulary):
    """Each value of the computed set, put into a general text, is named by the rule's own line."""
    notes = load_annotations(Project(ROOT))
    key = next(k for k, a in notes.items() if a.journey is None and not k.startswith("journey:") and "sample_app" not in k)
    for term in sorted(vocabulary):
        ann = notes[key]
        seeded = {**notes, key: annotations.Annotation(key, ann.text + f" It names `{term}`.", ann.fingerprint, ann.file, ann.line, ann.reviewed)}
        found = annotations.sample_values(seeded, chains.values())
        assert [p.key for p in found] == [key], term
        named = found[0].message.split("names the sample app's ", 1)[1].split("; a general text holds")[0]
        assert repr(term) in named.split(", ") or repr(term) in named, (term, named)


def test_dispel_check_fails_a_seeded_general_text_by_its_own_line(project, vocabulary, monkeypatch):
    """The whole `dispel check` with the regeneration comparison off: the rule's line names file, key and value."""
    term = min(t for t in vocabulary if t.isalpha())  # a drawn value, here a bare word: the hardest form
    path = project / "docs" / "annotations" / "socketio_stack.yml"
    key = seed(path, term)
    monkeypatch.setattr(verify, "check_drift", lambda *a, **k: ([], []))
    result = verify.check(Project(project))
    mine = [f for f in result.failures if f.startswith("annotation sample: ")]
    assert len(mine) == 1, result.failures
    assert "socketio_stack.yml:" in mine[0] and f" {key} is a general text but names the sample app's {term!r}" in mine[0]


# --------------------------------------------------------------------------- report pages


PAGE = """# A journey

{summary}

### 3 · `m:f` { #hop-3 }

- **Distribution:** {label}

{text}
"""


@pytest.mark.parametrize(
    ("summary", "label", "text", "own", "flagged"),
    [
        ("Summary.", "flask 3.1", 'It returns `{"upper": "HELLO"}`.', set(), {"HELLO", "upper"}),
        ("Summary.", "flask 3.1", 'It returns `{"upper": "HELLO"}`.', {"HELLO", "upper"}, set()),  # the app's own values
        ("Summary.", "the sample app (this site)", "Text.", {"sample app"}, {"sample app", "this site"}),
        ("The `shout` event.", "flask 3.1", "Text.", set(), {"shout"}),
    ],
)
def test_a_report_page_naming_a_sample_value_fails(summary, label, text, own, flagged):
    page = PAGE.replace("{summary}", summary).replace("{label}", label).replace("{text}", text)
    vocabulary = {"HELLO", "upper", "shout", "sample app", "this site"}
    found = prose.sample_values({"j": page}, vocabulary, own)
    assert all(f.startswith("prose: docs/chains/j.md: ") and "[sample-value]" in f for f in found)
    assert {t for t in vocabulary if any(repr(t) in f.split(" [sample-value]")[0] for f in found)} == flagged


def test_the_apps_distribution_label_is_not_the_samples():
    label = markup.dist_label(Source("sample_app", "local", "app.py"))
    assert "sample" not in label and "this site" not in label and "app" in label


def test_the_upgrade_header_means_a_request_or_a_switch():
    asked = wire.header_meaning("Upgrade", "websocket", "request")
    done = wire.header_meaning("Upgrade", "websocket", "response")
    assert "asks" in asked and "asks" not in done and "switches" in done
    [head] = wire.decode_http(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", "response")
    assert {f.name: f.meaning for f in head.fields}["Upgrade"] == done


@pytest.mark.slow
def test_an_own_app_report_shows_no_sample_value(tmp_path, vocabulary):
    """ns_chat's report: `dispel check --root` passes, and no page names a sample value its own chains lack."""
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "dispel", "report", "--scenario", "ns_chat.toml", "--out", str(out), "--no-site"],
                          cwd=APPS, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    found = load_chains(Project(out))
    pages = {j: (out / "docs" / "chains" / f"{j}.md").read_text(encoding="utf-8") for j in found}
    assert prose.sample_values(pages, vocabulary, annotations.sample_vocabulary(found.values())) == []
    assert not any(re.search(r"(?i)sample app|this site", p) for p in pages.values())
    assert verify.check_sample_values(Project(out), found) == []
