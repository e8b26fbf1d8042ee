"""`dispel audit`: synthetic reports (good, stale, unpinned, malformed, off-chain) against local git repositories."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import MODULE, RepoServer, commit_files, git, make_repo
from dispel import cli
from dispel.model import Chain, Func, Hop, Source
from dispel.review import audit
from dispel.tracefiles import codec as tracefile

# The next release moved Server.emit down by three lines and replaced encode() by send().
MODULE_V2 = (
    '"""A module."""\nimport sys\n\nVERSION = 2\n\n\nclass Server:\n    def emit(self, event):\n'
    "        packet = encode(event)\n        return send(packet)\n\n\ndef send(packet):\n    sys.stdout.write(packet)\n"
)
SRC = Source("pkg", "2.0", "pkg/mod.py")
CHAIN = Chain(
    "emit",
    "emit",
    "chat",
    (
        Hop(Func("pkg.mod", "Server.emit", SRC, 8, 10), 9, "main", "entry", 0, line_text="packet = encode(event)"),
        Hop(Func("pkg.mod", "send", SRC, 13, 14), 13, "main", "call", 1),
        Hop(Func("_socket", "socket.send", Source("builtin", "3.11.7", ""), 0, 0), 0, "main", "call", 2),
    ),
)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """o/r with two commits: v1 (MODULE) and, on main, v2 (MODULE_V2)."""
    root = make_repo(tmp_path / "repo", {"src/pkg/mod.py": MODULE})
    git(root, "tag", "v1")
    (root / "src/pkg/mod.py").write_text(MODULE_V2, encoding="utf-8")
    git(root, "commit", "-q", "-am", "v2")
    return root


@pytest.fixture
def chains_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "chains"
    folder.mkdir()
    (folder / "emit.json").write_text(json.dumps(tracefile.chain_to_dict(CHAIN)), encoding="utf-8")
    return folder


def run_audit(capsys, report: Path, *args: str) -> tuple[int, str, str]:
    code = cli.main(["audit", str(report), *args])
    out, err = capsys.readouterr()
    return code, out, err


def write_report(tmp_path: Path, text: str, name: str = "report.md") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def verdicts(capsys, report: Path, *args: str) -> tuple[int, dict]:
    code, out, _ = run_audit(capsys, report, "--json", *args)
    return code, json.loads(out)


# --------------------------------------------------------------------------- finding links (pure)


def test_links_are_found_in_markdown_html_and_plain_text():
    text = (
        "[a](https://github.com/o/r/blob/abc/src/x.py#L3) and <https://github.com/o/r/blob/main/y.py#L1-L2>.\n"
        '<a href="https://raw.githubusercontent.com/o/r/v1/z.py#L9">z</a> (see https://github.com/o/r/blob/v1/w.py#L4)\n'
        "not source: https://github.com/o/r/tree/main/src and https://example.com/x.py#L1\n"
    )
    found = [(link.line, link.path, link.start, link.end) for link in audit.find_links(text)]
    assert found == [(1, "src/x.py", 3, 3), (1, "y.py", 1, 2), (2, "z.py", 9, 9), (2, "w.py", 4, 4)]


@pytest.mark.parametrize(
    "url, problem",
    [
        ("https://github.com/o/r/blob/main/engineio/async socket.py#L3", "a space in the path"),
        ("https://github.com/o/r/blob/main/engineio/async%20socket.py#L3", "a space in the path"),
        ("https://github.com/o/r/blob/main/socket.py)#L3", "stray ) in the path 'socket.py)'"),
        ("https://github.com/o/r/blob/main/socket.py", "no #L<line>"),
        ("https://github.com/o/r/blob/main/socket.py#l3-9", "fragment #l3-9 is misspelt: write #L3-L9"),
        ("https://github.com/o/r/blob/main/socket.py#top", "fragment #top is not a line"),
    ],
)
def test_malformed_links_are_named_never_fatal(url, problem):
    (link,) = audit.find_links(f"see ({url}) here\n")
    assert any(problem in p for p in link.problems), link.problems


def test_functions_and_qualnames_follow_python():
    spans = audit.def_spans("class A:\n    @staticmethod\n    def f():\n        def g():\n            pass\n        return g\n")
    assert audit.enclosing(spans, 2) == "A.f"  # a decorator line belongs to its function
    assert audit.enclosing(spans, 5) == "A.f.<locals>.g"
    assert audit.enclosing(spans, 1) == "A"
    assert audit.module_names("src/pkg/__init__.py") == ["src.pkg", "pkg"]


# --------------------------------------------------------------------------- reports against a mirror


def test_a_good_pinned_report_links_the_chain(tmp_path, capsys, repo, chains_dir):
    sha = git(repo, "rev-parse", "HEAD")
    report = write_report(tmp_path, f"Emit: [here](https://github.com/o/r/blob/{sha}/src/pkg/mod.py#L9).\n")
    code, data = verdicts(capsys, report, "--git-dir", f"o/r={repo}", "--chains", str(chains_dir))
    assert code == 0
    (v,) = data["links"]
    assert (v["pinned"], v["resolves"], v["via"], v["function"], v["on_chain"], v["broken"]) == ("commit", "yes", "git", "pkg.mod:Server.emit", "emit#1", False)
    # the C hop cannot be linked on GitHub, so two hops count
    # graded against the key hops: the entry and the sink (C, not linkable); send is detail
    assert data["coverage"] == ["links 1 of 1 key hops of emit (1 of 2 hops in all); none missing"]


def test_an_older_release_still_matches_by_qualname(tmp_path, capsys, repo, chains_dir):
    old = git(repo, "rev-parse", "v1")
    report = write_report(tmp_path, f"https://github.com/o/r/blob/{old}/src/pkg/mod.py#L6\n")
    code, data = verdicts(capsys, report, "--git-dir", f"o/r={repo}", "--chains", str(chains_dir))
    assert code == 0 and data["links"][0]["on_chain"] == "emit#1"


def test_a_stale_link_points_past_the_end_or_elsewhere(tmp_path, capsys, repo, chains_dir):
    sha = git(repo, "rev-parse", "HEAD")
    old = git(repo, "rev-parse", "v1")
    report = write_report(
        tmp_path,
        # encode() is gone in v2: its old line 11 is now the last line of the file or past it
        f"https://github.com/o/r/blob/{sha}/src/pkg/mod.py#L40\nhttps://github.com/o/r/blob/{old}/src/pkg/mod.py#L11\n",
    )
    code, data = verdicts(capsys, report, "--git-dir", f"o/r={repo}", "--chains", str(chains_dir))
    assert code == 1
    past, off = data["links"]
    assert past["broken"] and "line 40 is past the end of src/pkg/mod.py" in " ".join(past["notes"])
    assert (off["function"], off["on_chain"], off["broken"]) == ("pkg.mod:encode", "no", False)


def test_an_unpinned_link_gets_the_commit_to_pin_to(tmp_path, capsys, repo, chains_dir):
    sha = git(repo, "rev-parse", "HEAD")
    report = write_report(tmp_path, "<https://github.com/o/r/blob/main/src/pkg/mod.py#L9>\n")
    code, data = verdicts(capsys, report, "--git-dir", f"o/r={repo}", "--chains", str(chains_dir))
    (v,) = data["links"]
    assert code == 0 and v["pinned"] == "branch/tag" and v["resolves"] == "yes"
    assert f"main moves: pin it to {sha} (https://github.com/o/r/blob/{sha}/src/pkg/mod.py#L9)" in v["notes"]


def test_malformed_links_get_a_suggested_fix(tmp_path, capsys, repo, chains_dir):
    sha = git(repo, "rev-parse", "HEAD")
    report = write_report(
        tmp_path,
        f"(https://github.com/o/r/blob/{sha}/src/pkg/m od.py#L9)\n"
        f"[x](https://github.com/o/r/blob/{sha}/pkg/mod.py)#L9)\n"
        f"https://github.com/o/r/blob/{sha}/src/pkg/mod.py\n",
    )
    code, data = verdicts(capsys, report, "--git-dir", f"o/r={repo}", "--chains", str(chains_dir))
    space, paren, whole = data["links"]
    fixed = f"did you mean https://github.com/o/r/blob/{sha}/src/pkg/mod.py#L9"
    assert code == 1 and space["broken"] and paren["broken"]
    assert fixed in space["notes"] and fixed in paren["notes"]
    assert not whole["broken"] and whole["resolves"] == "yes" and any("no #L<line>" in n for n in whole["notes"])


def test_markdown_table_has_a_row_per_link_and_coverage(tmp_path, capsys, repo, chains_dir):
    sha = git(repo, "rev-parse", "HEAD")
    report = write_report(tmp_path, f"<p><a href='https://github.com/o/r/blob/{sha}/src/pkg/mod.py#L14'>send</a></p>\n", "r.html")
    code, out, _ = run_audit(capsys, report, "--git-dir", f"o/r={repo}", "--chains", str(chains_dir))
    assert code == 0
    assert out.splitlines()[0] == "| Line | Link | Pinned | Resolves | Function | On chain | Notes |"
    assert f"| 1 | <https://github.com/o/r/blob/{sha}/src/pkg/mod.py#L14> | commit | yes (git) | pkg.mod:send | emit#2 | — |" in out
    assert "- links 0 of 1 key hops of emit (1 of 2 hops in all); missing: Server.emit (#1)" in out
    assert out.rstrip().endswith("1 source links: 0 broken, 0 unpinned, 0 unresolved, 0 off-chain")


def test_online_resolution_from_a_local_raw_host(tmp_path, capsys, repo, chains_dir):
    sha = git(repo, "rev-parse", "HEAD")
    server = RepoServer(commit_files(repo))
    try:
        report = write_report(tmp_path, f"https://github.com/o/r/blob/{sha}/src/pkg/mod.py#L9\nhttps://github.com/o/r/blob/{sha}/gone.py#L1\n")
        code, data = verdicts(capsys, report, "--online", "--raw-base", server.base(), "--chains", str(chains_dir))
    finally:
        server.close()
    good, gone = data["links"]
    assert code == 1 and (good["resolves"], good["via"], good["on_chain"]) == ("yes", "online", "emit#1")
    assert gone["broken"] and "gone.py does not exist" in gone["notes"][0]


def test_without_a_source_a_link_is_unknown_not_broken(tmp_path, capsys, chains_dir):
    report = write_report(tmp_path, "https://github.com/o/r/blob/" + "a" * 40 + "/x.py#L1\n")
    code, data = verdicts(capsys, report, "--chains", str(chains_dir))
    assert code == 0 and data["links"][0]["resolves"] == "unknown"


# --------------------------------------------------------------------------- bad input


def test_an_unreadable_report_is_one_error_line(tmp_path, capsys):
    code, out, err = run_audit(capsys, tmp_path / "missing.md")
    assert code == 2 and out == ""
    assert err.strip() == f"dispel: error: cannot read the report {tmp_path / 'missing.md'}: No such file or directory"


def test_a_git_dir_for_a_repository_the_report_never_links(tmp_path, capsys, repo):
    report = write_report(tmp_path, "https://github.com/o/r/blob/main/x.py#L1\n")
    code, _, err = run_audit(capsys, report, "--git-dir", f"other/repo={repo}")
    assert code == 2 and "--git-dir names other/repo, which no link of" in err and "(it links: o/r)" in err


def test_a_git_dir_that_is_not_a_repository(tmp_path, capsys):
    report = write_report(tmp_path, "https://github.com/o/r/blob/main/x.py#L1\n")
    code, _, err = run_audit(capsys, report, "--git-dir", f"o/r={tmp_path}")
    assert code == 2 and "is not a git repository" in err


def test_an_unreachable_online_host(tmp_path, capsys):
    report = write_report(tmp_path, "https://github.com/o/r/blob/main/x.py#L1\n")
    code, _, err = run_audit(capsys, report, "--online", "--raw-base", "http://127.0.0.1:9", "--time-limit", "2")
    assert code == 2 and err.startswith("dispel: error: --online: cannot reach http://127.0.0.1:9")


# --------------------------------------------------------------------------- PDF-mangled paths

INIT = '"""A package."""\n\n\ndef start(app):\n    return app.run()\n'
INIT_CHAIN = Chain(
    "run",
    "run",
    "chat",
    (
        Hop(Func("dispel.sample_app.app", "main", Source("sample_app", "0", "dispel/sample_app/app.py"), 1, 2), 1, "main", "entry", 0),
        Hop(Func("pkg", "start", Source("pkg", "2.0", "pkg/__init__.py"), 4, 5), 5, "main", "call", 1),
        Hop(Func("_socket", "socket.bind", Source("builtin", "3.11.7", ""), 0, 0), 0, "main", "call", 2),
    ),
)


@pytest.mark.parametrize("mangled", ["%20init%20.py", "_init_.py", "init .py"])
def test_a_pdf_mangled_init_is_repaired_and_named(tmp_path, capsys, mangled):
    repo = make_repo(tmp_path / "repo", {"src/pkg/__init__.py": INIT})
    sha = git(repo, "rev-parse", "HEAD")
    folder = tmp_path / "chains"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps(tracefile.chain_to_dict(INIT_CHAIN)), encoding="utf-8")
    sep = "/ " if mangled == "init .py" else "/"  # copied from a PDF: "pkg/ init .py"
    report = write_report(tmp_path, f"Start: https://github.com/o/r/blob/{sha}/src/pkg{sep}{mangled}#L5 in the text.\n")
    code, data = verdicts(capsys, report, "--git-dir", f"o/r={repo}", "--chains", str(folder))
    (v,) = data["links"]
    assert code == 0 and v["resolves"] == "yes" and not v["broken"], v
    assert (v["function"], v["on_chain"]) == ("pkg:start", "run#2")
    assert v["notes"][0].startswith("repaired ") and "'__init__.py'" in v["notes"][0]
    assert f"https://github.com/o/r/blob/{sha}/src/pkg/__init__.py#L5" in v["notes"][0]


def test_a_mangled_name_is_not_repaired_into_a_file_that_is_not_there(tmp_path, capsys, repo, chains_dir):
    sha = git(repo, "rev-parse", "HEAD")
    report = write_report(tmp_path, f"https://github.com/o/r/blob/{sha}/src/pkg/_init_.py#L1\n")
    code, data = verdicts(capsys, report, "--git-dir", f"o/r={repo}", "--chains", str(chains_dir))
    (v,) = data["links"]
    assert code == 1 and v["broken"] and not any(n.startswith("repaired") for n in v["notes"])
    assert any("mangled by a PDF copy" in n for n in v["notes"])


def test_pdf_repair_only_touches_mangled_dunders():
    assert audit.pdf_repair("src/pkg/ init .py") == ("src/pkg/__init__.py", " init .py", "__init__.py")
    assert audit.pdf_repair("pkg/_init_.py")[0] == "pkg/__init__.py"
    assert audit.pdf_repair("pkg/__init__.py") is None and audit.pdf_repair("pkg/init.py") is None


# --------------------------------------------------------------------------- labels that name another function

SERVER = (
    "class Server:\n"
    "    def handle_request(self, environ):\n"
    "        return self._handle_event(environ, [])\n"
    "\n"
    "    def _handle_event(self, sid, data):\n"
    "        return self._trigger_event(data[0], sid)\n"
    "\n"
    "    def _trigger_event(self, event, sid):\n"
    "        return event\n"
)
SERVER_SRC = Source("pkg", "2.0", "pkg/server.py")
EVENT_CHAIN = Chain("on-chat", "on", "chat", (
    Hop(Func("pkg.server", "Server._handle_event", SERVER_SRC, 5, 6), 6, "main", "entry", 0),
    Hop(Func("pkg.server", "Server._trigger_event", SERVER_SRC, 8, 9), 8, "main", "call", 1),
))


@pytest.mark.parametrize("label, flagged", [
    ("`_trigger_event()` is called", False),  # the call on that line, as the chain recorded it
    ("`Server._trigger_event` runs the handler", False),
    ("in `Server._handle_event`", False),  # the function that holds the line
    ("`_handle_event()` calls `_trigger_event()`", False),
    ("`handle_request()` is called", True),  # neither holds line 6 nor is called on it
    ("`Server.handle_request` dispatches", True),
    ("the event is dispatched", False),  # names no function
])
def test_a_label_naming_another_function_is_flagged(tmp_path, capsys, label, flagged):
    repo = make_repo(tmp_path / "repo", {"src/pkg/server.py": SERVER})
    sha = git(repo, "rev-parse", "HEAD")
    folder = tmp_path / "chains"
    folder.mkdir()
    (folder / "on-chat.json").write_text(json.dumps(tracefile.chain_to_dict(EVENT_CHAIN)), encoding="utf-8")
    report = write_report(tmp_path, f"See [{label}](https://github.com/o/r/blob/{sha}/src/pkg/server.py#L6).\n")
    _code, data = verdicts(capsys, report, "--git-dir", f"o/r={repo}", "--chains", str(folder))
    (v,) = data["links"]
    assert (v["function"], v["on_chain"]) == ("pkg.server:Server._handle_event", "on-chat#1")
    assert v["mislabelled"] is flagged, v["notes"]
    if flagged:
        note = next(n for n in v["notes"] if n.startswith("mislabelled"))
        assert "line 6 is in Server._handle_event, which calls Server._trigger_event there" in note
        assert data["summary"].endswith(", 1 mislabelled")
    else:
        assert not any(n.startswith("mislabelled") for n in v["notes"])


def test_labels_are_read_from_markdown_and_html_and_name_functions():
    text = ('[`SocketIO.run()` starts](https://github.com/o/r/blob/a/x.py#L1) '
            '<a href="https://github.com/o/r/blob/a/y.py#L2">calls <code>emit()</code></a> https://github.com/o/r/blob/a/z.py#L3\n')
    assert [link.label for link in audit.find_links(text)] == ["`SocketIO.run()` starts", "calls emit()", ""]
    assert audit.label_functions("`SocketIO.run()` starts `serve_forever()` in socket.py") == ["SocketIO.run", "serve_forever"]
    assert audit.label_functions("see README.md and Server.emit") == ["Server.emit"]
