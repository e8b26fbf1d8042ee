"""`dispel check` offline: site links and anchors, permalinks, annotations and drift, each broken on purpose in a copy."""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from dispel import cli
from dispel.check import drift
from dispel.check import links as check
from dispel.check import stage as verify
from dispel.project import Project, load_chains, load_lock

ROOT = Project().root


@pytest.fixture
def rendered(project: Path) -> Path:
    """The copy with no annotations and its pages rendered from its own chains: a clean baseline for drift."""
    shutil.rmtree(project / "docs" / "annotations", ignore_errors=True)
    (project / "docs" / "annotations").mkdir()
    assert cli.main(["render", "--out", str(project / "docs"), "--chains", str(project / "traces" / "chains")]) == 0
    return project


def chains_of(root: Path) -> dict:
    return load_chains(Project(root))


def lock_of(root: Path):
    return load_lock(root / "traces" / "pins.lock.json")


def problems(results) -> list[str]:
    return [p for r in results for p in r.problems]


def link_problems(project: Path, chains: dict | None = None) -> list[str]:
    """The permalink and link failures of a (broken) copy."""
    return problems(verify.check_links(Project(project), lock_of(project), chains if chains is not None else load_chains(Project(), project / "traces" / "chains")))


def emit_hop(project: Path) -> tuple[dict, int, object]:
    """The committed chains and the first emit hop with a GitHub permalink (a library function with a line text)."""
    chains = chains_of(project)
    for n, hop in enumerate(chains["emit"].hops, 1):
        if not hop.func.is_c and hop.func.source.dist != "sample_app" and hop.line_text:
            return chains, n, hop
    raise AssertionError("no library hop with a line text on the emit chain")


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} is not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


# --------------------------------------------------------------------------- internal links (pure)


def test_internal_links_anchors_and_code_are_told_apart():
    pages = {
        "index.md": "# Home\n\n## The four journeys\n\n[ok](chains/emit.md#hop-1) [slug](#the-four-journeys)\n"
        "[bad anchor](chains/emit.md#hop-9) [gone](missing.md)\n\n```text\n[in code](nowhere.md)\n```\n"
        "`[span](nowhere.md)`\n--8<-- \"versions.md\"\n",
        "chains/emit.md": "### 1 · `f` { #hop-1 }\n[app](../sample_app.md#__codelineno-sample-app-app-py-3)\n"
        "[app bad](../sample_app.md#__codelineno-sample-app-app-py-99)\n",
        "sample_app.md": '<a id="__codelineno-sample-app-app-py-3" name="__codelineno-sample-app-app-py-3"></a>\n',
    }
    results = check.check_internal(pages, set(pages) | {"stylesheets/x.css"}, {"versions.md": "[run](chains/run.md)\n"})
    found = problems(results)
    assert found == [
        "index.md:6: link 'chains/emit.md#hop-9': no anchor #hop-9 in chains/emit.md",
        "index.md:6: link 'missing.md': missing.md does not exist",
        "index.md:12: link 'chains/run.md': chains/run.md does not exist",
        "chains/emit.md:3: link '../sample_app.md#__codelineno-sample-app-app-py-99': no anchor #__codelineno-sample-app-app-py-99 in sample_app.md",
    ]
    assert len(results) == 7  # the links inside code are not links


def test_repeated_headings_get_toc_suffixes():
    assert {"notes", "notes_1", "a-b"} <= check.page_anchors("## Notes\n## Notes\n## A `b`\n")


@pytest.mark.traced_python
def test_the_committed_site_links_all_verify(rendered):
    results = verify.check_links(Project(rendered), lock_of(rendered), load_chains(Project(), rendered / "traces" / "chains"))
    assert problems(results) == []
    assert check.summarize(results).checked > 0


# --------------------------------------------------------------------------- permalinks in a broken copy


@pytest.mark.traced_python
def test_a_permalink_whose_line_no_longer_matches_the_chain(rendered):
    _chains, n, hop = emit_hop(rendered)
    path = rendered / "traces" / "chains" / "emit.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["hops"][n - 1]["line_text"] = "return something_else()"
    path.write_text(json.dumps(data), encoding="utf-8")
    found = link_problems(rendered)
    assert len(found) == 1
    assert re.fullmatch(
        rf"chains/emit\.md:\d+: https://github\.com/\S+#L{hop.line}: line {hop.line} reads {re.escape(repr(hop.line_text))}, "
        rf"the chain recorded 'return something_else\(\)' for hop {n} \({re.escape(hop.func.key)}\)",
        found[0],
    )


def test_a_permalink_moved_to_another_line(rendered):
    chains, n, hop = emit_hop(rendered)
    replace_in(rendered / "docs" / "chains" / "emit.md", f"#L{hop.line}>)", f"#L{hop.line + 1}>)")
    found = link_problems(rendered, chains)
    assert any(f"links line {hop.line + 1}, hop {n} ({hop.func.key}) ran line {hop.line}" in p for p in found), found


@pytest.mark.traced_python
def test_a_hop_file_that_differs_from_its_pinned_blob(rendered):
    chains, _, hop = emit_hop(rendered)
    lock_path = rendered / "traces" / "pins.lock.json"
    data = json.loads(lock_path.read_text(encoding="utf-8"))
    entry = next(f for f in data["dists"][hop.func.source.dist]["files"] if f["installed"] == hop.func.source.path)
    entry["blob"] = "0" * 40
    lock_path.write_text(json.dumps(data), encoding="utf-8")
    found = link_problems(rendered, chains)
    assert found, "a changed blob must fail"
    assert all(f"not the pinned blob {'0' * 40} of {hop.func.source.dist}" in p for p in found)


def test_a_permalink_to_an_unlocked_commit(rendered):
    chains, _, hop = emit_hop(rendered)
    commit = lock_of(rendered).pin(hop.func.source.dist).commit
    replace_in(rendered / "docs" / "chains" / "emit.md", commit, "f" * 40)
    found = link_problems(rendered, chains)
    assert any(f"at {'f' * 40} is not pinned: the lock pins {commit}" in p for p in found), found


# --------------------------------------------------------------------------- annotations


def test_missing_and_stale_annotations_are_failures(rendered):
    chains, _, hop = emit_hop(rendered)
    (rendered / "docs" / "annotations" / "emit.yml").write_text(f"{hop.func.key}:\n  fingerprint: 000000000000\n  text: Old prose.\n", encoding="utf-8")
    found = verify.check_annotations(Project(rendered), chains)
    assert "annotation missing: journey 'emit' has no summary" in found
    stale = [p for p in found if p.startswith("annotation stale: ")]
    assert len(stale) == 1 and f"emit.yml:1: {hop.func.key} changed since it was annotated (fingerprint 000000000000, now " in stale[0]
    assert not any(hop.func.key + " (hop" in p for p in found), "an annotated function is not missing"


# --------------------------------------------------------------------------- drift


def test_a_rendered_copy_has_no_drift(rendered):
    drift, _ = verify.check_drift(Project(rendered), chains_of(rendered), build=None)
    assert drift == []


def test_an_edited_page_is_drift_named_by_hop(rendered):
    chains, n, _hop = emit_hop(rendered)
    page = rendered / "docs" / "chains" / "emit.md"
    text = page.read_text(encoding="utf-8").replace("*No annotation has been written for this function yet.*", "Hand-edited.", n)
    page.write_text(text, encoding="utf-8")
    drift, _ = verify.check_drift(Project(rendered), chains, build=None)
    assert drift and drift[0].startswith("drift: docs/chains/emit.md: hop 1 (")
    assert "differs from a regeneration: line " in drift[0] and "'Hand-edited.'" in drift[0]


def test_a_changed_annotation_is_named_as_the_reason(rendered):
    chains, n, hop = emit_hop(rendered)
    (rendered / "docs" / "annotations" / "new.yml").write_text(f"{hop.func.key}:\n  text: Freshly written prose.\n", encoding="utf-8")
    drift, _ = verify.check_drift(Project(rendered), chains, build=None)
    assert f"drift: docs/chains/emit.md: hop {n} ({hop.func.key}) differs from a regeneration: the annotation of {hop.func.key} changed" in drift


@pytest.mark.traced_python
def test_a_regenerated_chain_that_differs_names_its_hops(rendered):
    chains, n, hop = emit_hop(rendered)
    hops = list(chains["emit"].hops)
    hops[n - 1] = dataclasses.replace(hop, line=hop.line + 1, line_text="x = 1")
    changed = dataclasses.replace(chains["emit"], hops=tuple(hops))
    drift, _ = verify.check_drift(Project(rendered), chains, build=lambda traces: chains | {"emit": changed})
    assert (
        f"drift: traces/chains/emit.json: emit: hop {n} {hop.func.key} ({hop.thread}): "
        f"line {hop.line} → {hop.line + 1}, line text {hop.line_text!r} → 'x = 1'"
    ) in drift
    assert any(d.startswith("drift: docs/chains/emit.md: hop ") for d in drift)


def test_environment_reasons_name_python_and_library_versions():
    reasons = drift.environment_reasons({"chat": ("3.11.7", [("flask", "3.1.3"), ("h11", "0.16.0")])}, "3.12.1", {"flask": "3.1.3", "h11": "0.17.0"})
    assert reasons == [
        "trace chat was recorded with Python 3.11.7, this is Python 3.12.1",
        "trace chat was recorded with h11 0.16.0, installed here: 0.17.0",
    ]


# --------------------------------------------------------------------------- the command


@pytest.mark.slow  # a whole `dispel check` of a copy of the project
def test_check_command_prints_one_line_per_failure_and_the_summary(rendered, capsys):
    chains_of(rendered)
    replace_in(rendered / "docs" / "index.md", "# ", "[broken](nowhere.md#x)\n\n# ")
    assert cli.main(["check", "--root", str(rendered)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("index.md:") and "nowhere.md does not exist" in line for line in out)
    links = [line for line in out if line.startswith("links checked: ")]
    assert len(links) == 1 and re.fullmatch(r"links checked: (\d+), verified: (\d+), failed: 1 in \d+\.\d\ds", links[0])
    checked, verified = map(int, re.findall(r"\d+", links[0])[:2])
    assert checked == verified + 1


@pytest.mark.parametrize("second, failed", [("same", False), ("other", True)])
def test_a_scenario_that_differs_beside_the_others_is_recorded_again_alone(tmp_path, monkeypatch, second, failed):
    committed = (Project(ROOT).traces / "chat.json").read_text(encoding="utf-8")
    project = Project(tmp_path)
    project.traces.mkdir()
    (project.traces / "chat.json").write_text(committed, encoding="utf-8")
    other = committed.replace('"disconnect"', '"hang-up"', 1)
    calls = []

    def fake(project, names, out, timeout, capture=False):
        calls.append(list(names))
        text = other if len(calls) == 1 or second == "other" else committed
        for name in names:
            (out / f"{name}.json").write_text(text, encoding="utf-8")
        return {name: subprocess.CompletedProcess([], 0, "", "") for name in names}

    monkeypatch.setattr(verify, "record_in_new_interpreters", fake)
    problems, notes = verify.check_rerecord(project, names=["chat"])
    assert calls == [["chat"], ["chat"]]  # side by side, then alone
    if failed:
        assert problems and all("traces/chat.json differs" in p for p in problems) and not notes
    else:
        assert not problems and len(notes) == 1 and "recorded again alone, it matched" in notes[0]


# ------------------------------------------------------------------ a browser update

BROWSER_TRACE = (
    '{\n "schema": 1,\n "scenario": "browser",\n "python": "3.11.7",\n'
    ' "versions": {"chromium": "%s", "flask": "3.1.3"},\n "steps": ["import"],\n'
    ' "funcs": [],\n "threads": [],\n "wakeups": [],\n "events": [%s]\n}\n'
)


def test_a_browser_update_alone_is_a_note_naming_both_versions():
    old, new = BROWSER_TRACE % ("156.0.8078.108", ""), BROWSER_TRACE % ("157.0.1.2", "")
    same, note = drift.browser_update(old, new)
    assert same == old
    assert note == "recorded with Chromium 157.0.1.2; the committed trace was recorded with Chromium 156.0.8078.108"
    assert drift.browser_update(old, old) == (old, None)
    assert drift.browser_version(new) == "157.0.1.2"
    assert drift.browser_version(BROWSER_TRACE.replace('"chromium": "%s", ', "") % "") is None


def test_a_browser_update_with_another_difference_still_names_that_field():
    old = BROWSER_TRACE % ("156.0.8078.108", "")
    new = BROWSER_TRACE.replace('"3.11.7"', '"3.11.6"') % ("157.0.1.2", "")
    same, note = drift.browser_update(old, new)
    assert note and same != old
    found = drift.trace_drift(old, same)
    assert found and all("chromium" not in d for d in found) and any("python" in d for d in found), found


def test_the_browser_identity_is_a_placeholder_in_values():
    from dispel.tracefiles.values import BROWSER_IDENTITY, Normalizer

    n = Normalizer(None, {}, patterns=BROWSER_IDENTITY)
    headers = ('sec-ch-ua: "Not:A-Brand";v="8", "Chromium";v="156"\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) '
               "AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36\r\nAccept: */*")
    text = n.scrub(headers)
    assert "156" not in text and "Not:A-Brand" not in text
    assert "sec-ch-ua: <chromium-brands>" in text and "HeadlessChrome/<chromium> Safari" in text and "Accept: */*" in text
    # A header's value alone, as the parser hands it on, is the same placeholder.
    assert n.scrub('"Not_A Brand";v="99", "Chromium";v="157"') == "<chromium-brands>"


# ------------------------------------------------------------------ traces of another Python


@pytest.mark.traced_python
def test_traces_of_another_python_leave_only_the_standard_library_unproven(project, capsys):
    """As if the committed traces had been recorded on another Python: everything but the
    standard-library links (and what quotes that library) is proven, and one line says so."""
    from dispel.pins.installed import PYTHON_VERSION

    other = "3.11.6" if PYTHON_VERSION != "3.11.6" else "3.11.5"
    paths = [*(project / "traces").glob("*.json"), *(project / "traces" / "chains").glob("*.json")]
    for path in paths:
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace(f'"{PYTHON_VERSION}"', f'"{other}"'), encoding="utf-8")
    result = verify.check(Project(project))
    assert result.failures == []
    unproven = [n for n in result.notes if n.startswith("unproven on")]
    assert len(unproven) == 1 and len(result.notes) == 1, result.notes
    assert f"on Python {PYTHON_VERSION}: {result.unproven} standard-library links" in unproven[0]
    assert f"recorded on Python {other}" in unproven[0] and result.unproven > 100
    assert result.summary.checked == result.summary.verified > 1000
    # ... and a broken library link is still a failure there.
    replace_in(project / "docs" / "chains" / "emit.md", "flask_socketio/__init__.py#L", "flask_socketio/__init__.py#L1")
    assert verify.check(Project(project)).failures


# ------------------------------------------------------------------ site texts that restate the catalogue


def test_the_home_page_and_how_md_agree_with_the_catalogue_and_chains():
    index, how = (ROOT / "docs" / "index.md").read_text(encoding="utf-8"), (ROOT / "docs" / "how.md").read_text(encoding="utf-8")
    from dispel import catalog

    # the edge table is a generated snippet: read the page as MkDocs shows it
    snippets = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "docs" / "snippets").glob("*.md")}
    index = check.expand_snippets(index, snippets)[0]

    scenarios = (*catalog.DEFAULT_SCENARIOS, *catalog.DEFAULT_PROCESS_SCENARIOS)
    edges = {h.edge for c in load_chains(Project()).values() for h in c.hops}
    assert check.stale_site_texts(index, how, catalog.JOURNEY_NAMES, edges, scenarios) == []
    # Each kind of staleness is named: a journey row dropped, an edge row dropped, a wrong count.
    dropped = re.sub(r"\| \[disconnect\]\(chains/disconnect\.md\)[^\n]*\n", "", index)
    assert check.stale_site_texts(dropped, how, catalog.JOURNEY_NAMES, edges, scenarios) == [
        "docs/index.md: the journey table does not link chains/disconnect.md"]
    no_edge = re.sub(r"\| `via-redis` \|[^\n]*\n", "", index)
    assert check.stale_site_texts(no_edge, how, catalog.JOURNEY_NAMES, edges | {"via-redis"}, scenarios) == [
        "docs/index.md: the edge table has no row for `via-redis`, an edge the chains use"]
    extra = index.replace("| [disconnect](chains/disconnect.md)", "| [reconnect](chains/reconnect.md)")
    assert check.stale_site_texts(extra, how, catalog.JOURNEY_NAMES, edges, scenarios) == [
        "docs/index.md: the journey table does not link chains/disconnect.md",
        "docs/index.md: the journey table links chains/reconnect.md, which is no journey of the catalogue"]
    unnamed = index.replace("and `queue`", "and the Redis one")
    assert check.stale_site_texts(unnamed, how, catalog.JOURNEY_NAMES, edges, scenarios) == [
        "docs/index.md: does not name the scenario `queue` that records its journeys"]
    three = how.replace("Six scenarios are recorded", "Three scenarios are recorded")
    assert [p.split(";")[0] for p in check.stale_site_texts(index, three, catalog.JOURNEY_NAMES, edges, scenarios)] == [
        "docs/how.md: says 'Three scenarios are recorded'"]


# ------------------------------------------------------------------ the one tolerated race: a writer's poll batches

WRITER_FUNCS = [
    ["engineio.socket", "Socket._websocket_handler.<locals>.writer", "python-engineio", "4", "engineio/socket.py", 202, 216, 0],
    ["engineio.socket", "Socket.poll", "python-engineio", "4", "engineio/socket.py", 12, 33, 0],
    ["queue", "Queue.get", "python", "3.11.7", "Lib/queue.py", 154, 181, 0],
    ["queue", "Queue.put", "python", "3.11.7", "Lib/queue.py", 122, 152, 0],
    ["queue", "Queue.task_done", "python", "3.11.7", "Lib/queue.py", 57, 76, 0],
    ["simple_websocket.ws", "Base.send", "simple-websocket", "1", "simple_websocket/ws.py", 70, 83, 0],
    ["threading", "Condition.wait", "python", "3.11.7", "Lib/threading.py", 288, 337, 0],
    ["flask_socketio", "SocketIO.emit", "flask-socketio", "5", "flask_socketio/__init__.py", 400, 450, 0],
]
WRITER, POLL, GET, PUT, TASK_DONE, SEND, WAIT, EMIT = range(len(WRITER_FUNCS))
PACKETS = {11: '\'42["welcome"]\'', 12: "'40'"}


def writer_trace(batches: list[list[int]], python: str = "3.11.7") -> str:
    """A trace of one handler thread queueing two packets and a WebSocket writer thread whose
    polls take them in ``batches`` (packet tokens), as engineio's writer loop does."""
    q = ["self", "<Queue>", 5]
    events = [[0, -1, 0, EMIT, 0, [], ["None", 0], 0, 1]]
    puts = {}
    for token in PACKETS:
        puts[token] = len(events)
        events.append([0, 0, 10, PUT, 0, [q, ["item", "<Packet>", token]], ["None", 0], 0, 152])
    root = len(events)
    events.append([1, -1, 0, WRITER, 0, [], ["None", 0], 0, 216])
    wakeups = []
    for batch in batches:
        poll = len(events)
        events.append([1, root, 206, POLL, 0, [["self", "<Socket>", 6]], [f"<list len={len(batch)}>", 0], 0, 33])
        for n, token in enumerate(batch):
            get = len(events)
            blocking = [["block", "True", 0], ["timeout", "45", 0]] if n == 0 else [["block", "False", 0], ["timeout", "None", 0]]
            events.append([1, poll, 16 if n == 0 else 25, GET, 0, [q, *blocking], ["<Packet>", token], 0, 181])
            if n == 0:
                wakeups.append([puts[token], len(events)])
                events.append([1, get, 171, WAIT, 0, [["self", "<Condition>", 7], ["timeout", "<float>", 0]], ["True", 0], 0, 337])
            events.append([1, poll, 18 if n == 0 else 26, TASK_DONE, 0, [q], ["None", 0], 0, 76])
        events.append([1, poll, 25, GET, 0, [q, ["block", "False", 0], ["timeout", "None", 0]], None, 1, 168])
        for token in batch:
            events.append([1, root, 214, SEND, 0, [["self", "<Server>", 8], ["data", PACKETS[token], 0]], ["None", 0], 0, 83])
    trace = {"schema": 1, "scenario": "chat", "python": python, "versions": {"python-engineio": "4"}, "steps": ["connect"],
             "funcs": WRITER_FUNCS, "threads": [["handler-1", -1, 0], ["eio-writer-1", -1, root]],
             "wakeups": wakeups, "events": events}
    return json.dumps(trace)  # rows on one line, as in a trace file


ONE_BY_ONE, TOGETHER = writer_trace([[11], [12]]), writer_trace([[11, 12]])


def test_a_writers_poll_taking_two_packets_instead_of_one_is_a_note():
    same, note = drift.writer_batches(ONE_BY_ONE, TOGETHER)
    assert same == ONE_BY_ONE and note and "in 1 polls, the committed trace's in 2" in note
    assert drift.writer_batches(TOGETHER, ONE_BY_ONE)[0] == TOGETHER  # either way round
    assert drift.writer_batches(ONE_BY_ONE, ONE_BY_ONE) == (ONE_BY_ONE, None)
    assert drift.trace_drift(ONE_BY_ONE, TOGETHER)  # without the normalisation they differ


def _mutated(text: str, old: str, new: str, count: int = 1) -> str:
    assert old in text, old
    return text.replace(old, new, count)


@pytest.mark.parametrize("mutate, field", [
    (lambda t: _mutated(t, "'40'", "'41'"), "events"),                                      # what the writer sent
    (lambda t: _mutated(t, '"<Packet>", 12]], ["None"', '"<Packet>", 13]], ["None"'), "events"),  # what was queued
    (lambda t: _mutated(t, '"timeout", "45"', '"timeout", "30"'), "events"),                # how a poll waits
    (lambda t: _mutated(t, '"eio-writer-1"', '"eio-writer-2"'), "threads"),                 # a thread
    (lambda t: _mutated(t, '"python": "3.11.7"', '"python": "3.11.6"'), "python"),          # the header
    (lambda t: _mutated(t, '"Lib/queue.py", 154', '"Lib/queue.py", 155'), "funcs"),         # a function's lines
    (lambda t: t.replace('"<Packet>", 11]', '"<Packet>", 99]').replace('"<Packet>", 12]', '"<Packet>", 11]')
     .replace('"<Packet>", 99]', '"<Packet>", 12]'), "events"),                             # packets taken in another order
])
def test_any_other_difference_beside_the_batches_still_fails_naming_its_field(mutate, field):
    fresh = mutate(TOGETHER)
    same, note = drift.writer_batches(ONE_BY_ONE, fresh)
    assert note is None and same == fresh != ONE_BY_ONE
    assert any(d.startswith(field) for d in drift.trace_drift(ONE_BY_ONE, same)), drift.trace_drift(ONE_BY_ONE, same)


def test_a_rerecord_that_differs_only_in_the_batches_is_a_note(tmp_path):
    project = Project(tmp_path)
    project.traces.mkdir()
    (project.traces / "chat.json").write_text(ONE_BY_ONE, encoding="utf-8")
    keep = tmp_path / "fresh"
    keep.mkdir()
    (keep / "chat.json").write_text(TOGETHER, encoding="utf-8")
    notes: list[str] = []
    assert verify._rerecord_drift(project, keep, "chat", notes) == []
    assert len(notes) == 1 and notes[0].startswith("re-record: traces/chat.json: a WebSocket writer's Socket.poll")
    (keep / "chat.json").write_text(_mutated(TOGETHER, "'40'", "'41'"), encoding="utf-8")
    drift = verify._rerecord_drift(project, keep, "chat", [])
    # named by the send that differs, not by the batches that differ too
    assert len(drift) == 1 and "differs from a fresh recording: events: 1 of 6 differ" in drift[0] and "Base.send" in drift[0], drift
