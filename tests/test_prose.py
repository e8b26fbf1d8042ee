"""The prose check: each rule fails on the committed docs with one false claim seeded, and the clean docs pass."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ON_TRACED_PYTHON, TRACED_PYTHON
from dispel import wire
from dispel.chains import fold
from dispel.check import prose
from dispel.check import stage as verify
from dispel.pins.installed import hop_sources
from dispel.project import Project, load_annotations, load_chains

ROOT = Project().root


@pytest.fixture(scope="module")
def site():
    """The committed journey pages, their chains and the lines of the files they link to."""
    chains = load_chains(Project(ROOT))
    if not {"polling", "upgrade", "broadcast"} <= set(chains):
        pytest.skip("the chains of polling, upgrade and broadcast are not committed yet")
    pages = {j: (ROOT / "docs" / "chains" / f"{j}.md").read_text(encoding="utf-8") for j in chains}
    sources = {src: data.decode("utf-8", "replace").split("\n") for src, data in hop_sources(chains.values()).items()}
    return pages, chains, sources


def seeded(page: str, hop: int, sentence: str) -> str:
    """``page`` with ``sentence`` put before the hand-written text of hop ``hop`` (0: the summary)."""
    first = prose.page_prose(page)[hop].split("\n")[0]
    start = page.index("# ") if hop == 0 else page.index(f"{{ #hop-{hop} }}")
    at = page.index(first, start)
    return page[:at] + sentence + " " + page[at:]


def test_the_committed_pages_have_no_prose_problem(site):
    pages, chains, sources = site
    assert prose.check_site(pages, chains, {s: "\n".join(lines) for s, lines in sources.items()}) == []


# (journey, hop, seeded sentence, rule, what the problem says)
MUTATIONS = [
    ("upgrade", 24, "It then wakes `request-2`.", "thread", "thread request-2 is not on this page"),
    ("upgrade", 0, "The GET waits on `handler-7`.", "thread", "thread handler-7 is not on this page"),
    ("polling", 10, "The `server` thread accepted it.", "thread", "thread server is not on this page"),
    ("upgrade", 24, "Runs on Engine.IO's writer thread.", "runs-on", "says it runs on a writer thread; the hop runs on request-5"),
    ("broadcast", 20, "This runs on the request thread.", "runs-on", "says it runs on a request thread; the hop runs on eio-writer-1"),
    ("polling", 10, "The highlighted line opens a new session with `_handle_connect`.", "highlighted", "`_handle_connect` is quoted as highlighted"),
    ("polling", 42, "Here the highlighted line is `packets = self.poll()`.", "highlighted", "`packets = self.poll()` is quoted as highlighted"),
    ("upgrade", 40, "It calls `self.poll()` (highlighted).", "highlighted", "`self.poll()` is quoted as highlighted"),
    ("upgrade", 28, "The first byte is `0x81`, a final text frame.", "byte", "0x81 is in no WebSocket frame header on this page"),
    ("upgrade", 12, "The second byte, `0xA3`, holds the length.", "byte", "0xA3 is in no WebSocket frame header"),
    ("upgrade", 12, "It calls `FrameDecoder.process_buffer()` (not a hop: it has returned).", "hop-ref", "FrameDecoder.process_buffer() is said not to be a hop, but it is hop 13"),
    ("broadcast", 10, "The writer, `SimpleWebSocketWSGI.send` (hop 22), sends it.", "hop-ref", "hop 22 is Socket._websocket_handler.<locals>.writer, not SimpleWebSocketWSGI.send"),
    ("broadcast", 0, "See hop 99.", "hop-ref", "hop 99 does not exist: the page has 47 hops"),
    ("polling", 11, "It then calls `Socket.frobnicate`.", "name", "`Socket.frobnicate` is neither a hop of this page nor in a source file the page links to"),
    # hop 3 of emit is folded into a collapsible block: its text is read all the same
    ("emit", 3, "The `server` thread runs it.", "thread", "thread server is not on this page"),
]


@pytest.mark.parametrize(("journey", "hop", "sentence", "rule", "why"), MUTATIONS, ids=[f"{m[3]}-{m[0]}-{m[1]}" for m in MUTATIONS])
def test_each_rule_fails_on_a_seeded_false_claim(site, journey, hop, sentence, rule, why):
    pages, chains, sources = site
    page = f"docs/chains/{journey}.md"
    if TRACED_PYTHON and rule == "name":
        pytest.skip(ON_TRACED_PYTHON)  # the rule reads the standard library the page links to
    assert prose.check_page(page, pages[journey], chains[journey], sources) == []
    found = prose.check_page(page, seeded(pages[journey], hop, sentence), chains[journey], sources)
    assert [(p.rule, p.hop) for p in found] == [(rule, hop)], [p.line for p in found]
    assert why in found[0].why and sentence in found[0].sentence
    assert found[0].line.startswith(f"prose: {page}: {'hop ' + str(hop) if hop else 'summary'}: ")


@pytest.mark.parametrize(
    "sentence",
    [
        "It wakes `request-5`, the GET's thread.",  # a thread of the page
        "The highlighted line calls `FrameDecoder.process_buffer`.",  # the next hop's function
        "It returns `0xc1` and `0x88`.",  # bytes of the page's frames
        "`FrameDecoder.process_buffer` (hop 13) parses it.",
        "`Base.close` closes it.",  # in a file the page links to
    ],
)
def test_true_claims_pass(site, sentence):
    pages, chains, sources = site
    assert prose.check_page("upgrade.md", seeded(pages["upgrade"], 17, sentence), chains["upgrade"], sources) == []


def test_page_prose_keeps_hand_written_text_only(site):
    pages, chains, _ = site
    parts = prose.page_prose(pages["upgrade"])
    assert set(parts) == set(range(len(fold.entries(chains["upgrade"])) + 1))  # one per recorded call
    assert not any(re.search(r"\*\*(Thread|Executed line):\*\*", text) for text in parts.values())
    assert parts[0].startswith("The official JavaScript client")


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("One. Two `x`. (Three.) four.", ["One.", "Two `x`.", "(Three.) four."]),
        ("Calls `a.b()`, e.g. here.\n\nNext.", ["Calls `a.b()`, e.g. here.", "Next."]),
    ],
)
def test_sentences(text, parts):
    assert prose.sentences(text) == parts


def test_an_annotation_that_types_the_executed_line_fails(site):
    """Rule typed-line: a general or keyed text that types the number of a line its hop executed."""
    _, chains, _ = site
    texts = {key: a.text for key, a in load_annotations(Project(ROOT)).items()}
    assert prose.typed_lines(texts, chains) == []
    key = "engineio.socket:Socket.send"  # executes line 77 wherever it runs
    found = prose.typed_lines(dict(texts, **{key: texts[key] + " Line 77 queues it."}), chains)
    hop = next(n for n, h in enumerate(chains["ack"].hops, 1) if h.func.key == key)
    assert found == [
        (f"prose: annotation {key}: types 'Line 77', the executed line of ack hop {hop}: "
        "write line {{lineno}}, quote {{line}} or say the highlighted line [typed-line]")
    ]
    keyed = "threading:Thread.run@upgrade"
    run = next(n for n, h in enumerate(chains["upgrade"].hops, 1) if h.func.key == "threading:Thread.run")
    assert prose.typed_lines(dict(texts, **{keyed: "At line 982 it runs the target."}), chains) == [
        (f"prose: annotation {keyed}: types 'line 982', the executed line of upgrade hop {run}: "
        "write line {{lineno}}, quote {{line}} or say the highlighted line [typed-line]")
    ]
    # the placeholder, and a line the hop did not execute, pass
    assert prose.typed_lines(dict(texts, **{key: texts[key] + " Line {{lineno}} queues it; line 76 logs."}), chains) == []


@pytest.mark.slow  # a whole `dispel check` of a copy of the project
def test_the_prose_check_runs_in_dispel_check(tmp_path: Path):
    """A copy of the project whose upgrade page says a false thread: `dispel check` names page, hop and sentence."""
    import shutil

    if not (ROOT / "traces" / "chains" / "upgrade.json").is_file():
        pytest.skip("no upgrade chain committed")
    copy = tmp_path / "project"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copytree(ROOT / "traces", copy / "traces")
    page = copy / "docs" / "chains" / "upgrade.md"
    page.write_text(seeded(page.read_text(encoding="utf-8"), 36, "Runs on Engine.IO's writer thread."), encoding="utf-8")
    notes = copy / "docs" / "annotations" / "socketio_stack.yml"
    text = notes.read_text(encoding="utf-8")
    notes.write_text(text.replace("with {{line}}, and logs it.", "with line 77, and logs it."), encoding="utf-8")
    failures = verify.check(Project(copy)).failures
    assert any(f.startswith("prose: docs/chains/upgrade.md: hop 36: says it runs on a writer thread") for f in failures), failures
    assert any(f.startswith("prose: annotation engineio.socket:Socket.send: types 'line 77'") for f in failures), failures


@pytest.mark.parametrize(
    ("value", "meaning"),
    [
        ("Upgrade", "Upgrade: this connection is to change protocol"),
        ("keep-alive", "the sender would keep the connection open for further requests"),
        ("close", "the sender closes the connection after this message"),
        ("keep-alive, Upgrade", "the sender would keep the connection open for further requests; Upgrade: this connection is to change protocol"),
    ],
)
def test_the_connection_header_means_what_its_value_says(value, meaning):
    assert wire.header_meaning("Connection", value) == meaning


@pytest.mark.parametrize(
    ("packet", "meaning"),
    [
        ('21["shout","hello"]', "the sender waits for an ACK packet with this id"),
        ('31[{"upper":"HELLO"}]', "the id of the event this ACK answers"),
    ],
)
def test_an_ack_id_means_a_question_on_an_event_and_an_answer_on_an_ack(packet, meaning):
    fields = {f.name: f.meaning for f in wire.decode_socketio(packet)[0].fields}
    assert fields["ack id"] == meaning
