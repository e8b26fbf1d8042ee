"""A thin wrapper over the `git` command, for pinning, auditing and checking: one of the IO shell
modules that run a subprocess (the others start the recorder's children, the clients, the pacer,
Chromium, mkdocs, and the hand-in's `git log` for a file's date).

Every failure is a :class:`GitError` carrying one line: what failed, and what to do about it.
Nothing here decides anything; choosing tags and mapping files is :mod:`dispel.pins.pinning`' job.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ..model import DispelError

# Local commands answer in milliseconds; a network clone may take a while, a hung one must not hang us.
LOCAL_TIMEOUT = 120.0
NETWORK_TIMEOUT = 600.0


class GitError(DispelError):
    """A git command failed, or a path is not a git repository."""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # Stable, parseable output; never stop to ask for credentials.
    env.update(LC_ALL="C", GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true")
    return env


def run(args: list[str], git_dir: Path | None = None, timeout: float = LOCAL_TIMEOUT) -> str:
    """Run ``git [--git-dir=GIT_DIR] ARGS`` and return its stdout; raise GitError on failure."""
    cmd = ["git"] + ([f"--git-dir={git_dir}"] if git_dir is not None else []) + args
    shown = " ".join(["git", *args])
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, env=_env(), timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise GitError("`git` is not installed or not on PATH; install git") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"`{shown}` did not finish within {timeout:.0f}s") from None
    if done.returncode != 0:
        lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit status {done.returncode}"
        raise GitError(f"`{shown}` failed: {why}")
    return done.stdout


def open_repo(path: Path) -> Path:
    """Return the git directory of a bare mirror or a clone at ``path``; GitError if it is neither.

    ``--git-dir`` is always explicit, so git never walks up into an enclosing repository.
    """
    candidates = [path / ".git", path] if (path / ".git").exists() else [path]
    for git_dir in candidates:
        try:
            run(["rev-parse", "--git-dir"], git_dir=git_dir)
        except GitError:
            continue
        return git_dir
    raise GitError(
        f"{path} is not a git repository; give --git-dir OWNER/REPO=PATH a bare mirror or a clone"
    )


def local_tags(git_dir: Path) -> dict[str, str]:
    """Tag name -> the object it points to, for every tag of a local repository."""
    out = run(["for-each-ref", "--format=%(refname:strip=2) %(objectname)", "refs/tags"], git_dir)
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def remote_tags(url: str) -> dict[str, str]:
    """Tag name -> commit (peeled where the remote says so), from ``git ls-remote --tags URL``."""
    tags: dict[str, str] = {}
    for line in run(["ls-remote", "--tags", url], timeout=NETWORK_TIMEOUT).splitlines():
        sha, _, ref = line.partition("\t")
        name = ref.removeprefix("refs/tags/")
        if name.endswith("^{}"):
            tags[name[:-3]] = sha  # the peeled commit of an annotated tag wins
        else:
            tags.setdefault(name, sha)
    return tags


def clone_blobless(url: str, dest: Path) -> Path:
    """A bare, blobless partial clone of ``url`` at ``dest`` (trees and tags, no file contents)."""
    run(["clone", "--quiet", "--bare", "--filter=blob:none", url, str(dest)], timeout=NETWORK_TIMEOUT)
    return dest


def peel(git_dir: Path, tag: str) -> str:
    """The 40-hex commit a tag finally points to (annotated tags are peeled: ``TAG^{commit}``)."""
    try:
        return run(["rev-parse", "--verify", "--quiet", f"refs/tags/{tag}^{{commit}}"], git_dir).strip()
    except GitError:
        raise GitError(f"tag {tag} in {git_dir} does not point to a commit") from None


def tree_blobs(git_dir: Path, commit: str) -> dict[str, str]:
    """Repository path -> blob SHA-1 for every file in ``commit``'s tree (``git ls-tree -r``)."""
    out = run(["ls-tree", "-r", "-z", "--full-tree", commit], git_dir)
    blobs: dict[str, str] = {}
    for entry in out.split("\0"):
        if not entry:
            continue
        meta, _, path = entry.partition("\t")
        _mode, kind, sha = meta.split(" ")
        if kind == "blob":
            blobs[path] = sha
    return blobs


def files_at(work_tree: Path, ref: str, *paths: str) -> dict[str, str]:
    """Path -> text of every file at or under ``paths`` (relative to the work tree's top) at commit ``ref``.

    GitError naming the ref when it is not a commit of that repository; paths that did not
    exist at that commit are left out.
    """
    where = ["-C", str(work_tree)]
    try:
        commit = run([*where, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"]).strip()
    except GitError:
        raise GitError(f"{ref!r} is not a commit of the repository at {work_tree}; name a branch, tag or commit (default HEAD)") from None
    names = run([*where, "ls-tree", "-r", "-z", "--name-only", "--full-tree", commit, "--", *paths]).split("\0")
    return {name: run([*where, "show", f"{commit}:{name}"]) for name in names if name}
