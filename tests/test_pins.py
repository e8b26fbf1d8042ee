"""dispel.pins.pinning (pure logic) and `dispel pin` end to end over real git repositories under tmp_path.

No network: upstreams are local repositories handed in with --git-dir; installed
distributions are a fake site directory (dist-info METADATA + RECORD). Expected blob
hashes and commits come from git itself (`git hash-object`, `git rev-parse TAG^{commit}`).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from conftest import git, hash_object, install, make_repo
from dispel import catalog, cli
from dispel.model import LOCK_SCHEMA, DispelError, FilePin, Lock
from dispel.pins import pinning as pins
from dispel.pins import stage as pins_stage
from dispel.project import Project, dump_json, load_lock

# --------------------------------------------------------------------------- pure logic


@pytest.mark.parametrize("data", [b"", b"x = 1\n", b"\x00\xff binary\r\n", "é ünïcode\n".encode()])
def test_blob_sha_equals_git_hash_object(tmp_path: Path, data: bytes) -> None:
    assert pins.blob_sha(data) == git(tmp_path, "hash-object", "--stdin", stdin=data)


def test_tag_spellings_and_choice() -> None:
    assert pins.tag_candidates("1.2.3") == ("v1.2.3", "1.2.3")
    assert pins.choose_tag("d", "1.2.3", "o/r", {"1.2.3": "", "v1.2.3": ""}) == "v1.2.3"
    assert pins.choose_tag("d", "1.2.3", "o/r", ["1.2.3", "v1.2.30"]) == "1.2.3"
    with pytest.raises(DispelError, match=r"o/r has no tag for d 1\.2\.3 \(tried v1\.2\.3, 1\.2\.3\)"):
        pins.choose_tag("d", "1.2.3", "o/r", ["v1.2", "release-1.2.3"])


@pytest.mark.parametrize(
    ("urls", "home", "expected"),
    [
        (["Homepage, https://github.com/miguelgrinberg/flask-socketio"], None, "miguelgrinberg/flask-socketio"),
        (["Source, https://github.com/python-hyper/wsproto/"], None, "python-hyper/wsproto"),
        ([], "https://github.com/python-hyper/h11", "python-hyper/h11"),
        (["Bug Tracker, https://github.com/o/r/issues"], None, "o/r"),
        (["Code, git+https://github.com/o/r.git"], None, "o/r"),
        (["Source, https://www.github.com/o/r/tree/main/src#readme"], None, "o/r"),
        (["Repository, git@github.com:o/r.git"], None, "o/r"),
        (["Donate, https://github.com/sponsors/me", "Source, https://github.com/o/r"], None, "o/r"),
        (["Changes, https://github.com/o/docs", "Source, https://github.com/o/r"], "https://github.com/o/home", "o/r"),
        (["Documentation, https://r.readthedocs.io", "Chat, https://discord.gg/x"], "https://github.com/o/r/", "o/r"),
    ],
)
def test_repository_from_metadata(urls: list[str], home: str | None, expected: str) -> None:
    assert pins.repo_from_metadata("d", urls, home) == ("github", expected)


def test_no_repository_url_is_a_clear_error() -> None:
    with pytest.raises(DispelError, match=r"distribution d names no repository .* pass --repo d=OWNER/REPO"):
        pins.repo_from_metadata("d", ["Documentation, https://d.example.org/"], "https://d.example.org")


SRC_TREE = {
    "src/pkg/__init__.py": "b0",
    "src/pkg/util/__init__.py": "b0",
    "tests/__init__.py": "b0",
    "src/pkg/core.py": "b1",
    "docs/core_copy.py": "b1",
    "README.md": "b2",
}


def test_map_files_src_layout_prefers_the_path_ending_with_the_installed_path() -> None:
    installed = {"pkg/__init__.py": "b0", "pkg/util/__init__.py": "b0", "pkg/core.py": "b1"}
    assert pins.map_files("d", "1", "v1", installed, SRC_TREE) == (
        FilePin("pkg/__init__.py", "src/pkg/__init__.py", "b0"),
        FilePin("pkg/core.py", "src/pkg/core.py", "b1"),
        FilePin("pkg/util/__init__.py", "src/pkg/util/__init__.py", "b0"),
    )


def test_map_files_ranks_several_paths_with_the_same_blob() -> None:
    tree = {"a/vendored/pkg/core.py": "b1", "src/pkg/core.py": "b1", "a/other.py": "b9", "lib/moved.py": "b9"}
    installed = {"pkg/core.py": "b1", "pkg/moved.py": "b9"}
    assert pins.map_files("d", "1", "v1", installed, tree) == (
        FilePin("pkg/core.py", "src/pkg/core.py", "b1"),  # src layout beats a vendored copy
        FilePin("pkg/moved.py", "lib/moved.py", "b9"),  # not at its path: the same file name wins
    )
    exact = {"pkg/core.py": "b1", "src/pkg/core.py": "b1"}
    assert pins.map_files("d", "1", "v1", {"pkg/core.py": "b1"}, exact)[0].path == "pkg/core.py"


def test_map_files_flat_layout_and_generated_files() -> None:
    tree = {"h11/__init__.py": "a", "h11/_util.py": "b", "setup.py": "c"}
    installed = {"h11/__init__.py": "a", "h11/_util.py": "b", "h11/_version.py": "generated"}
    files = pins.map_files("h11", "0.1", "v0.1", installed, tree)
    assert files[0] == FilePin("h11/__init__.py", "h11/__init__.py", "a")
    assert files[1] == FilePin("h11/_util.py", "h11/_util.py", "b")
    assert files[2] == FilePin("h11/_version.py", "", "generated")  # not in git: unpinned


def test_map_files_patched_file_names_the_file_and_both_blobs() -> None:
    with pytest.raises(DispelError) as err:
        pins.map_files("d", "1.0", "v1.0", {"pkg/core.py": "b0"}, SRC_TREE)  # b0 exists elsewhere: no excuse
    message = str(err.value)
    assert "pkg/core.py" in message and "src/pkg/core.py" in message and "b0" in message and "b1" in message
    assert "reinstall d==1.0" in message


# --------------------------------------------------------------------------- lock format


def small_lock() -> Lock:
    dist = Lock(
        pins.stdlib_pin("3.11.7", {"Lib/socket.py": "1" * 40}),
        (
            pins.Pin(
                "d", "1.0", "github", "o/r", "v1.0", "c" * 40, "commit",
                (FilePin("d/__init__.py", "src/d/__init__.py", "a" * 40), FilePin("d/_version.py", "", "b" * 40)),
            ),
        ),
    )
    return dist


def test_lock_round_trip_and_shape() -> None:
    data = pins.lock_to_json(small_lock())
    assert data["schema"] == LOCK_SCHEMA
    assert data["python"]["files"] == {"Lib/socket.py": "1" * 40}
    assert data["python"]["pinned"] == "tag" and data["python"]["commit"] == ""
    assert data["dists"]["d"]["unpinned"] == [{"installed": "d/_version.py", "blob": "b" * 40}]
    assert pins.lock_from_json(json.loads(json.dumps(data))) == small_lock()


def _edit(path: str, value: object):
    def apply(data: dict) -> None:
        *parents, last = path.split("/")
        node = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is KeyError:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return apply


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_edit("schema", 99), "lock schema 99, this dispel reads schema 1"),
        (_edit("dists/d/commit", "main"), r"dists\.d\.commit: 'main' is not a 40-hex SHA-1"),
        (_edit("dists/d/commit", ""), r"dists\.d\.commit: '' is not a 40-hex SHA-1"),
        (_edit("dists/d/pinned", "branch"), r"dists\.d\.pinned: 'branch' is not \"commit\" or \"tag\""),
        (_edit("dists/d/files/0/blob", "xyz"), r"dists\.d\.files\[0\]\.blob: 'xyz' is not a 40-hex blob"),
        (_edit("dists/d/files/0/path", "../../etc/passwd"), r"dists\.d\.files\[0\]\.path: .* is not a relative path"),
        (_edit("dists/d/files/0/installed", "/abs.py"), r"is not a relative path"),
        (_edit("dists/d/files", {}), r"dists\.d\.files: expected a list, found dict"),
        (_edit("dists/d/repo", "not a repo"), r"dists\.d\.repo: 'not a repo' is not OWNER/REPO"),
        (_edit("dists/d/forge", "sourceforge"), r"dists\.d\.forge: 'sourceforge' is not a known forge"),
        (_edit("dists/d/tag", KeyError), r"dists\.d: wrong keys \(missing tag\)"),
        (_edit("dists/d/when", "2024-01-01"), r"dists\.d: wrong keys \(unexpected when\)"),
        (_edit("dists/D_X", {}), r"dists key 'D_X': 'D_X' is not a normalized distribution name"),
        (_edit("python/repo", "python/cpythn"), r"python\.repo: 'python/cpythn' is not python/cpython"),
        (_edit("python/files", []), r"python\.files: expected an object, found list"),
        (_edit("dists/d/files/1", _edit), r"dists\.d\.files\[1\]: expected an object"),
    ],
)
def test_nonsense_lock_is_one_clear_error(edit, message: str) -> None:
    data = pins.lock_to_json(small_lock())
    data["dists"]["d"]["files"].append(copy.deepcopy(data["dists"]["d"]["files"][0]))
    data["dists"]["d"]["files"][1]["installed"] = "d/other.py"
    edit(data)
    with pytest.raises(DispelError, match=message) as err:
        pins.lock_from_json(json.loads(json.dumps(data, default=repr)))
    assert "\n" not in str(err.value)


def test_lock_listing_a_file_twice_is_rejected() -> None:
    data = pins.lock_to_json(small_lock())
    data["dists"]["d"]["files"].append(dict(data["dists"]["d"]["files"][0]))
    with pytest.raises(DispelError, match=r"d: d/__init__\.py is listed twice"):
        pins.lock_from_json(data)


@pytest.mark.parametrize("data", [None, [], "lock", {"schema": 1}])
def test_lock_that_is_not_a_lock_at_all(data: object) -> None:
    with pytest.raises(DispelError):
        pins.lock_from_json(data)


# --------------------------------------------------------------------------- verify


def test_verify_reports_each_kind_of_drift() -> None:
    lock = small_lock()
    good = {
        "python": pins.Installed("python", "3.11.7", {"Lib/socket.py": "1" * 40}),
        "d": pins.Installed("d", "1.0", {"d/__init__.py": "a" * 40, "d/_version.py": "b" * 40}),
    }
    assert pins.verify(lock, good) == []
    patched = dict(good, d=pins.Installed("d", "1.0", {"d/__init__.py": "e" * 40, "d/_version.py": "b" * 40}))
    [problem] = pins.verify(lock, patched)
    assert "d/__init__.py" in problem and "a" * 40 in problem and "e" * 40 in problem
    assert "locked 1.0" in problem and "installed 1.0" in problem
    assert pins.verify(lock, dict(good, d=pins.Installed("d", "1.1", {}))) == [
        "d: installed 1.1, lock 1.0: run make pin, then make regen"
    ]
    gone = dict(good, d=pins.Installed("d", "1.0", {"d/_version.py": "b" * 40, "d/new.py": "f" * 40}))
    assert pins.verify(lock, gone) == [
        "d 1.0: d/__init__.py is in the lock but not installed",
        "d 1.0: installed d/new.py is not in the lock; run `make pin`",
    ]
    assert pins.verify(lock, {"python": good["python"]}) == [
        "d: locked 1.0, not installed (pip install -r requirements.lock)"
    ]


# --------------------------------------------------------------------------- `dispel pin` end to end


SRCLIB = {"srclib/__init__.py": "from .core import run\n", "srclib/core.py": "def run():\n    return 1\n"}
FLATLIB = {"flatlib/__init__.py": "", "flatlib/sub/__init__.py": "", "flatlib/wire.py": "WIRE = b'x'\n"}


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    """Two upstreams (src layout + annotated tag, flat layout + lightweight unprefixed tag) and a site."""
    src = make_repo(
        tmp_path / "up-srclib",
        {f"src/{k}": v for k, v in SRCLIB.items()} | {"tests/test_core.py": "", "pyproject.toml": ""},
        {"v1.0.0": True},
    )
    flat = make_repo(tmp_path / "up-flatlib", FLATLIB | {"setup.py": ""}, {"2.0": False, "v1.9": False})
    site = tmp_path / "site"
    generated = {"srclib/_version.py": "v = '1.0.0'\n"}
    install(site, "srclib", "1.0.0", SRCLIB | generated, ["Source, https://github.com/acme/srclib"])
    flat_urls = ["Homepage, https://github.com/acme/flatlib/", "Issues, https://github.com/acme/flatlib/issues"]
    install(site, "flatlib", "2.0", FLATLIB, flat_urls)
    return {"src": src, "flat": flat, "site": site, "lock": tmp_path / "pins.lock.json"}


def pin_args(w: dict[str, Path], *extra: str, dists: tuple[str, ...] = ()) -> list[str]:
    return [
        "pin", "srclib", "flatlib", *dists, "--site", str(w["site"]), "--lock", str(w["lock"]),
        "--git-dir", f"acme/SrcLib={w['src']}", "--git-dir", f"acme/flatlib={w['flat']}", *extra,
    ]  # fmt: skip


def test_pin_writes_a_lock_proven_by_git(world: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(pin_args(world)) == 0
    out = capsys.readouterr().out
    assert "srclib/_version.py" in out and "unpinned" in out
    lock = load_lock(world["lock"])
    src, flat = lock.pin("srclib"), lock.pin("flatlib")
    # the --git-dir spelling of the repository wins over the metadata's lowercase one
    assert (src.repo, src.tag, src.pinned) == ("acme/SrcLib", "v1.0.0", "commit")
    tag_object = git(world["src"], "rev-parse", "v1.0.0")
    assert src.commit == git(world["src"], "rev-parse", "v1.0.0^{commit}") != tag_object
    assert (flat.repo, flat.tag, flat.commit) == ("acme/flatlib", "2.0", git(world["flat"], "rev-parse", "2.0"))
    site = world["site"]
    assert set(src.files) == {
        FilePin("srclib/__init__.py", "src/srclib/__init__.py", hash_object(site / "srclib/__init__.py")),
        FilePin("srclib/core.py", "src/srclib/core.py", hash_object(site / "srclib/core.py")),
        FilePin("srclib/_version.py", "", hash_object(site / "srclib/_version.py")),
    }
    assert {(f.installed, f.path) for f in flat.files} == {(k, k) for k in FLATLIB}
    assert pins_stage.verify_installed(lock, [site]) == []
    text = world["lock"].read_text()
    assert str(world["site"].parent) not in text and text == dump_json(json.loads(text))


def test_file_modified_after_install_is_detected(world: dict[str, Path]) -> None:
    assert cli.main(pin_args(world)) == 0
    locked = world["lock"].read_bytes()
    core = world["site"] / "srclib/core.py"
    original = hash_object(core)
    core.write_text("def run():\n    return 2  # patched\n")
    [problem] = pins_stage.verify_installed(load_lock(world["lock"]), [world["site"]])
    assert "srclib/core.py" in problem and original in problem and hash_object(core) in problem
    assert cli.main(pin_args(world)) == 2  # pinning a patched library refuses ...
    assert world["lock"].read_bytes() == locked  # ... and leaves the lock untouched


def _fail(world: dict[str, Path], argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    world["lock"].write_text("sentinel\n")
    assert cli.main(argv) == 2
    assert world["lock"].read_text() == "sentinel\n"
    err = capsys.readouterr().err
    assert err.startswith("dispel: error: ") and err.count("\n") == 1
    return err


def test_missing_tag_names_the_spellings_tried(world, capsys) -> None:
    git(world["flat"], "tag", "-d", "2.0")
    err = _fail(world, pin_args(world), capsys)
    assert "acme/flatlib has no tag for flatlib 2.0 (tried v2.0, 2.0)" in err


def test_mirror_that_is_not_a_git_repository(world, capsys, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    argv = pin_args(world)
    argv[argv.index(f"acme/flatlib={world['flat']}")] = f"acme/flatlib={tmp_path / 'empty'}"
    assert "is not a git repository" in _fail(world, argv, capsys)


def test_unknown_owner_repo_in_git_dir(world, capsys) -> None:
    err = _fail(world, pin_args(world, "--git-dir", f"acme/nosuch={world['src']}"), capsys)
    assert "--git-dir names acme/nosuch, the repository of no distribution being pinned" in err


@pytest.mark.parametrize("bad", ["acme/flatlib", "=x", "nota repo=x"])
def test_malformed_git_dir_argument(world, capsys, bad: str) -> None:
    assert "is not OWNER/REPO" in _fail(world, pin_args(world, "--git-dir", bad), capsys)


def test_distribution_without_repository_url(world, capsys, tmp_path: Path) -> None:
    install(world["site"], "nourl", "0.1", {"nourl.py": "x = 1\n"}, ["Documentation, https://nourl.example.org"])
    upstream = make_repo(tmp_path / "up-nourl", {"nourl.py": "x = 1\n"}, {"v0.1": False})
    argv = pin_args(world, "--git-dir", f"acme/nourl={upstream}", dists=("nourl",))
    err = _fail(world, argv, capsys)
    assert "nourl names no repository" in err and "--repo nourl=OWNER/REPO" in err
    assert cli.main(argv + ["--repo", "nourl=acme/nourl"]) == 0
    assert load_lock(world["lock"]).pin("nourl").files == (
        FilePin("nourl.py", "nourl.py", hash_object(world["site"] / "nourl.py")),
    )


def test_distribution_not_installed(world, capsys) -> None:
    assert "not installed here: ghost" in _fail(world, pin_args(world, dists=("ghost",)), capsys)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"schema": 1, "python": {}, "dists": []}', "is not a valid lock: python: wrong keys"),
        ('{"schema": 7}', "lock schema 7"),
    ],
)
def test_nonsense_lock_file_on_disk(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "pins.lock.json"
    path.write_text(text)
    with pytest.raises(DispelError, match=message) as err:
        load_lock(path)
    assert "\n" not in str(err.value)


def test_missing_lock_file_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(DispelError, match=r"lock file not found: .*`make pin"):
        load_lock(tmp_path / "nope.json")


# --------------------------------------------------------------------------- the committed lock


def test_committed_lock_matches_the_installed_environment() -> None:
    lock = load_lock(Project().lock)
    assert {p.dist for p in lock.dists} == set(catalog.PINNED_DIST_NAMES)
    assert all(p.pinned == "commit" and len(p.commit) == 40 for p in lock.dists)
    # the standard-library files pinned: the usual ones plus every one a trace ran code from
    assert {f.installed for f in lock.python.files} == set(catalog.STDLIB_FILES) | pins_stage.traced_stdlib_files(Project())
    assert pins_stage.verify_installed(lock) == []
