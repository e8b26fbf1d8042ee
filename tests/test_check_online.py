"""`--online` against a local HTTP server serving a git repository made in the test: retries, cache, time limit.

The local server (``RepoServer``) lives in conftest.py. Nothing here reaches the internet.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import MODULE, RepoServer, commit_files, git, make_repo
from dispel.check import fetch
from dispel.check import links as check
from dispel.check import stage as verify
from dispel.model import Chain, DispelError, FilePin, Func, Hop, Lock, Pin, Source
from dispel.pins.forges import raw_url
from dispel.pins.pinning import blob_sha
from dispel.review import stage as review_stage


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"src/pkg/mod.py": MODULE, "README.md": "hi\n"})


@pytest.fixture
def server(repo: Path):
    srv = RepoServer(commit_files(repo))
    yield srv
    srv.close()


def quick(**kw) -> fetch.Fetcher:
    return fetch.Fetcher(backoff=0.01, **kw)


# --------------------------------------------------------------------------- the fetcher


def test_fetches_files_and_404s(server, repo):
    sha = git(repo, "rev-parse", "HEAD")
    f = quick()
    ok, missing = raw_url(server.base(), "o/r", sha, "src/pkg/mod.py"), raw_url(server.base(), "o/r", sha, "nope.py")
    got = f.get_all([ok, missing])
    assert got[ok].data == MODULE.encode() and got[ok].status == 200
    assert got[missing].data is None and got[missing].status == 404 and not got[missing].unreachable


def test_429_is_retried_with_backoff(server, repo):
    sha = git(repo, "rev-parse", "HEAD")
    slept = []
    f = fetch.Fetcher(backoff=0.05, sleep=slept.append)
    url = raw_url(server.base("flaky"), "o/r", sha, "src/pkg/mod.py")
    assert f.get_all([url])[url].data == MODULE.encode()
    assert f.requests == 2 and slept == [0.05]


def test_a_hanging_host_is_cut_by_the_time_limit(server):
    import time

    f = quick(total=0.5)
    url = server.base("hang") + "/o/r/x/y.py"
    started = time.monotonic()
    got = f.get_all([url])[url]
    assert time.monotonic() - started < 3
    assert got.data is None and "time limit" in got.error


def test_answers_are_cached_in_memory_and_on_disk(server, repo, tmp_path):
    sha = git(repo, "rev-parse", "HEAD")
    url = raw_url(server.base(), "o/r", sha, "src/pkg/mod.py")
    f = quick(cache_dir=tmp_path / "cache")
    f.get_all([url])
    f.get_all([url])
    assert server.hits == {f"/repo/o/r/{sha}/src/pkg/mod.py": 1}
    again = quick(cache_dir=tmp_path / "cache")
    assert again.get_all([url])[url].data == MODULE.encode() and again.requests == 0


def test_an_unreachable_host_is_one_clear_error():
    with pytest.raises(DispelError, match=r"--online: cannot reach http://127\.0\.0\.1:9: .*refused"):
        review_stage.fetch_all(quick(retries=1), ["http://127.0.0.1:9/o/r/x/y.py"], "http://127.0.0.1:9")


# --------------------------------------------------------------------------- permalinks checked online


def pinned_setup(repo: Path, served_sha: str | None = None):
    """A lock pinning o/r at HEAD, a chain with one hop in src/pkg/mod.py, and its journey page's link."""
    sha = git(repo, "rev-parse", "HEAD")
    src = Source("pkg", "1.0", "pkg/mod.py")
    lock = Lock(
        Pin("python", "3.11.7", "github", "python/cpython", "v3.11.7", "", "tag", ()),
        (Pin("pkg", "1.0", "github", "o/r", "v1.0", sha, "commit", (FilePin("pkg/mod.py", "src/pkg/mod.py", blob_sha(MODULE.encode())),)),),
    )
    hop = Hop(Func("pkg.mod", "Server.emit", src, 5, 7), 6, "main", "entry", 0, line_text="packet = encode(event)")
    chain = Chain("emit", "t", "chat", (hop,))
    url = f"https://github.com/o/r/blob/{sha}/src/pkg/mod.py"
    page = f"### 1 · x {{ #hop-1 }}\n- **Executed line:** [l](<{url}#L6>)\n- **Definition:** [d](<{url}#L5-L7>)\n"
    return lock, {"emit": chain}, check.page_links("chains/emit.md", page)


def test_online_pass_verifies_the_served_file_and_its_lines(server, repo):
    lock, chains, links = pinned_setup(repo)
    contents = verify.online_contents(links, lock, quick(), server.base())
    results = check.check_permalinks(links, lock, chains, contents, "fetched")
    assert [r.problems for r in results] == [[], []]


def test_online_pass_fails_when_the_host_serves_other_bytes(server, repo):
    lock, chains, links = pinned_setup(repo)
    sha = git(repo, "rev-parse", "HEAD")
    server.files[(sha, "src/pkg/mod.py")] = MODULE.replace("encode(event)", "encode(event, 2)").encode()
    contents = verify.online_contents(links, lock, quick(), server.base())
    found = [p for r in check.check_permalinks(links, lock, chains, contents, "fetched") for p in r.problems]
    assert len(found) == 2 and all("the fetched file pkg/mod.py has blob" in p and "not the pinned blob" in p for p in found)


def test_online_and_offline_results_merge_per_link(repo):
    lock, chains, links = pinned_setup(repo)
    offline = check.check_permalinks(links, lock, chains, {("pkg", "pkg/mod.py"): MODULE.encode()})
    online = check.check_permalinks(links, lock, chains, {("pkg", "pkg/mod.py"): "HTTP 404 Not Found"}, "fetched")
    merged = check.merge_results(offline, online)
    assert check.summarize(merged) == check.Summary(2, 0, 2)
    assert "could not be read (fetched): HTTP 404 Not Found" in merged[0].problems[0]
