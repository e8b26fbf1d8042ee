"""dispel.pins.gitinfo against real git repositories built under tmp_path (no network).

The helpers ``git``, ``make_repo`` and ``hash_object`` live in conftest.py.
Expected values always come from git itself, never from the code under test.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import git, hash_object, make_repo
from dispel.model import DispelError
from dispel.pins import gitinfo


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(
        tmp_path / "up",
        {"src/pkg/__init__.py": "", "src/pkg/mod.py": "x = 1\n", "dir with space/é.txt": b"\x00\xff"},
        {"v1.0": False, "v2.0": True},
    )


def test_open_repo_accepts_work_tree_and_bare_mirror(repo: Path, tmp_path: Path) -> None:
    assert gitinfo.open_repo(repo) == repo / ".git"
    bare = tmp_path / "mirror.git"
    git(tmp_path, "clone", "-q", "--mirror", str(repo), str(bare))
    assert gitinfo.open_repo(bare) == bare


@pytest.mark.parametrize("where", ["plain", "inside-a-repo", "missing"])
def test_open_repo_rejects_non_repositories(repo: Path, tmp_path: Path, where: str) -> None:
    path = {"plain": tmp_path / "plain", "inside-a-repo": repo / "src", "missing": tmp_path / "nope"}[where]
    if where == "plain":
        path.mkdir()
    with pytest.raises(gitinfo.GitError) as err:
        gitinfo.open_repo(path)
    assert isinstance(err.value, DispelError)
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message and "not a git repository" in message and "--git-dir" in message


def test_tags_and_peeling(repo: Path) -> None:
    git_dir = gitinfo.open_repo(repo)
    head = git(repo, "rev-parse", "HEAD")
    tags = gitinfo.local_tags(git_dir)
    assert set(tags) == {"v1.0", "v2.0"}
    assert tags["v1.0"] == head
    assert tags["v2.0"] == git(repo, "rev-parse", "v2.0") != head  # the annotated tag's own object
    assert gitinfo.peel(git_dir, "v1.0") == head
    assert gitinfo.peel(git_dir, "v2.0") == head


def test_peel_unknown_tag_is_one_clear_error(repo: Path) -> None:
    with pytest.raises(gitinfo.GitError, match=r"tag v9\.9 .* does not point to a commit"):
        gitinfo.peel(gitinfo.open_repo(repo), "v9.9")


def test_tree_blobs_equal_git_hash_object(repo: Path) -> None:
    blobs = gitinfo.tree_blobs(gitinfo.open_repo(repo), git(repo, "rev-parse", "HEAD"))
    expected = {
        rel: hash_object(repo / rel) for rel in ("src/pkg/__init__.py", "src/pkg/mod.py", "dir with space/é.txt")
    }
    assert blobs == expected


def test_remote_tags_and_blobless_clone_over_a_file_url(repo: Path, tmp_path: Path) -> None:
    git(repo, "config", "uploadpack.allowFilter", "true")
    url = repo.as_uri()
    head = git(repo, "rev-parse", "HEAD")
    assert gitinfo.remote_tags(url) == {"v1.0": head, "v2.0": head}  # annotated tag peeled
    clone = gitinfo.clone_blobless(url, tmp_path / "clone.git")
    assert gitinfo.peel(clone, "v2.0") == head
    assert gitinfo.tree_blobs(clone, head)["src/pkg/mod.py"] == hash_object(repo / "src/pkg/mod.py")


def test_failed_command_is_one_line_naming_the_command(repo: Path) -> None:
    with pytest.raises(gitinfo.GitError) as err:
        gitinfo.run(["ls-tree", "-r", "no-such-rev"], gitinfo.open_repo(repo))
    assert str(err.value).startswith("`git ls-tree -r no-such-rev` failed: ")
    assert "\n" not in str(err.value)
