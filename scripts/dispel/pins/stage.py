"""The pin stage, over a Project: the lock written from installed files, git and tags; installed files checked against it."""
from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .. import catalog
from ..model import (
    PYTHON,
    DispelError,
    Lock,
    Pin,
    normalize_dist,
)
from ..pins.installed import first_header
from ..project import (
    Project,
    dump_json,
    load_lock,
    load_traces,
    project_lock,
    write_atomic,
)
from . import gitinfo
from . import pinning as pins
from .forges import check_repo, forge
from .installed import (
    PYTHON_VERSION,
    distributions,
    installed_blobs,
)


def parse_git_dirs(specs: Iterable[str]) -> dict[str, tuple[str, Path]]:
    """``OWNER/REPO=PATH`` arguments -> {owner/repo lowercased: (OWNER/REPO, git dir)}; paths checked now."""
    mirrors: dict[str, tuple[str, Path]] = {}
    for spec in specs:
        repo, sep, path = spec.partition("=")
        if not sep or not path:
            raise DispelError(f"--git-dir {spec!r} is not OWNER/REPO=PATH")
        check_repo(repo, f"--git-dir {spec}")
        if repo.lower() in mirrors:
            raise DispelError(f"--git-dir names {repo} twice")
        mirrors[repo.lower()] = (repo, gitinfo.open_repo(Path(path)))
    return mirrors


def _resolve_tag(dist: str, version: str, forge_name: str, repo: str, mirror: Path | None, tmp: Path) -> tuple[Path, str, str]:
    """(git dir, tag, peeled commit) of a release, from a local mirror or else the network."""
    if mirror is not None:
        tag = pins.choose_tag(dist, version, repo, gitinfo.local_tags(mirror))
        return mirror, tag, gitinfo.peel(mirror, tag)
    url = forge(forge_name).clone.format(repo=repo)
    try:
        tags = gitinfo.remote_tags(url)
    except gitinfo.GitError as exc:
        raise gitinfo.GitError(f"{exc} (offline? pass --git-dir {repo}=PATH to a local mirror)") from None
    tag = pins.choose_tag(dist, version, repo, tags)
    git_dir = gitinfo.clone_blobless(url, tmp / repo.replace("/", "+"))
    return git_dir, tag, gitinfo.peel(git_dir, tag)


@dataclass(frozen=True)
class PinRun:
    """What `dispel pin` wrote: the lock, which entries it kept as they were, why it pinned the others afresh."""

    lock: Lock
    kept: frozenset[str]
    afresh: dict[str, str]  # dist -> why
    notes: tuple[str, ...] = ()


def _previous_lock(path: Path) -> tuple[Lock | None, str | None]:
    """The lock `dispel pin` starts from, or None and why (there is none, or it is unreadable)."""
    if not path.is_file():
        return None, None
    try:
        return load_lock(path), None
    except DispelError as exc:
        return None, f"{exc}; every distribution was pinned afresh"


def pin(
    project: Project, dists: Iterable[str] = (), git_dirs: Iterable[str] = (), repos: Iterable[str] = (),
    site: list[Path] | None = None, lock_path: Path | None = None, refresh: bool = False,
) -> PinRun:
    """Pin each distribution to the upstream commit of its release tag; write the lock (all or nothing).

    Incremental: an entry of the existing lock whose installed version, repository and files are
    unchanged is kept as it is, without git (so offline, only changed distributions need a mirror);
    ``refresh`` pins every one afresh. Facts are gathered here (installed files, metadata, git);
    every decision is in dispel.pins.pinning. Any problem raises DispelError before the lock is written,
    so a failed run leaves it untouched.
    """
    mirrors = parse_git_dirs(git_dirs)
    overrides = _repo_overrides(repos)
    names = sorted({normalize_dist(n) for n in (list(dists) or catalog.PINNED_DIST_NAMES)})
    site = site or None
    found = _installed(names, site)
    located = _locate(names, found, overrides, mirrors)

    stdlib_files = sorted(set(catalog.STDLIB_FILES) | traced_stdlib_files(project))
    installed = installed_blobs(names, stdlib_files, site)
    absent = sorted(set(stdlib_files) - set(installed[PYTHON].blobs))
    if absent:
        raise DispelError(f"standard-library files not found in this interpreter: {', '.join(absent)}")
    lock_path = lock_path or project.lock
    before, note = _previous_lock(lock_path)
    locked, afresh = _pin_each(names, located, installed, before, mirrors, refresh)
    python = pins.stdlib_pin(installed[PYTHON].version, installed[PYTHON].blobs)
    lock = Lock(python, tuple(locked))
    write_atomic(lock_path, dump_json(pins.lock_to_json(lock)))
    return PinRun(lock, frozenset(set(names) - set(afresh)), afresh, (note,) if note else ())


def _repo_overrides(repos: Iterable[str]) -> dict[str, str]:
    """``--repo DIST=OWNER/REPO`` arguments -> {dist: OWNER/REPO}."""
    overrides = {}
    for spec in repos:
        dist, sep, repo = spec.partition("=")
        if not sep or not dist:
            raise DispelError(f"--repo {spec!r} is not DIST=OWNER/REPO")
        overrides[normalize_dist(dist)] = check_repo(repo.strip(), f"--repo {spec}")
    return overrides


def _installed(names: list[str], site: list[Path] | None) -> dict:
    """The installed distributions to pin; one line naming those that are not installed."""
    found = distributions(names, site)
    missing = [n for n in names if n not in found]
    if missing:
        extra = "pip install 'dispel[queue]', or name the distributions to pin" if set(missing) <= {d.name for d in catalog.QUEUE_DISTS} else "pip install -r requirements.lock"
        raise DispelError(f"not installed here: {', '.join(missing)} ({extra})")
    return found


def _locate(names: list[str], found: Mapping, overrides: Mapping[str, str], mirrors: Mapping[str, tuple[str, Path]]) -> dict[str, tuple[str, str]]:
    """Each distribution's (forge, OWNER/REPO): from --repo, else its metadata; a --git-dir that
    names no distribution's repository is one line."""
    located: dict[str, tuple[str, str]] = {}
    for name in names:
        meta = found[name].metadata
        if name in overrides:
            forge_name, repo = "github", overrides[name]
        else:
            urls = meta.get_all("Project-URL") or []
            forge_name, repo = pins.repo_from_metadata(name, urls, first_header(meta, "Home-page"))
        located[name] = (forge_name, mirrors[repo.lower()][0] if repo.lower() in mirrors else repo)
    unknown = sorted(mirrors[k][0] for k in set(mirrors) - {r.lower() for _, r in located.values()})
    if unknown:
        known = ", ".join(sorted({r for _, r in located.values()}))
        raise DispelError(
            f"--git-dir names {', '.join(unknown)}, the repository of no distribution being pinned "
            f"(they are: {known}); fix the OWNER/REPO spelling or drop it"
        )
    return located


def _pin_each(
    names: list[str], located: Mapping[str, tuple[str, str]], installed: Mapping, before: Lock | None,
    mirrors: Mapping[str, tuple[str, Path]], refresh: bool,
) -> tuple[list[Pin], dict[str, str]]:
    """Each distribution's pin: the previous lock's entry when nothing changed, else afresh from
    its release tag (a mirror, or the network); with why each was pinned afresh."""
    locked: list[Pin] = []
    afresh: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="dispel-pin-") as tmp:
        for name in names:
            forge_name, repo = located[name]
            old = next((p for p in before.dists if p.dist == name), None) if before else None
            why = "--refresh" if refresh else pins.repin_reason(old, installed[name], repo)
            mirror = mirrors.get(repo.lower(), ("", None))[1]
            if not why and old is not None:  # (repin_reason gives a reason when old is None)
                if not old.licenses and mirror is not None and old.commit:
                    # a kept entry learns its license files' paths from a mirror that has its commit
                    tree = gitinfo.tree_blobs(mirror, old.commit)
                    old = dataclasses.replace(old, licenses=pins.map_licenses(installed[name].licenses, tree))
                locked.append(old)
                continue
            try:
                git_dir, tag, commit = _resolve_tag(name, installed[name].version, forge_name, repo, mirror, Path(tmp))
            except DispelError as exc:
                raise DispelError(f"{name} must be pinned afresh ({why}): {exc}") from None
            version, tree = installed[name].version, gitinfo.tree_blobs(git_dir, commit)
            files = pins.map_files(name, version, tag, installed[name].blobs, tree)
            licensed = pins.map_licenses(installed[name].licenses, tree)
            locked.append(Pin(name, version, forge_name, repo, tag, commit, "commit", files, licensed))
            afresh[name] = why
    return locked, afresh


def foreign_python(project: Project) -> str | None:
    """The Python that recorded the project's traces (its lock pins that standard library), when
    it is not this one; None when it is. Their chains and pages read that standard library."""
    lock = project_lock(project)
    return lock.python.version if lock is not None and lock.python.version != PYTHON_VERSION else None


def refuse_foreign_python(project: Project, what: str) -> None:
    """One line, when ``what`` would rewrite the project's committed files from another Python's standard library."""
    traced = foreign_python(project)
    if traced:
        raise DispelError(
            f"{what} needs Python {traced}, which recorded the project's traces; this is Python {PYTHON_VERSION}: "
            f"run it with CPython {traced} (`make regen PY=python{traced.rpartition('.')[0]}`), or report on your own app with `dispel report`"
        )


def verify_installed(lock: Lock, site: list[Path] | None = None) -> list[str]:
    """Recompute every locked file's blob from this environment; the problems, [] when all match.
    On another Python than the lock's, the standard library is left out (check says so)."""
    foreign = lock.python.version != PYTHON_VERSION
    stdlib = [] if foreign else [f.installed for f in lock.python.files]
    return pins.verify(lock, installed_blobs([p.dist for p in lock.dists], stdlib, site), with_python=not foreign)


def version_drift(lock_path: Path, site: list[Path] | None = None) -> list[str]:
    """Installed versions against the lock, from metadata only (quick: `make site` asks first); [] without a lock."""
    if not lock_path.is_file():
        return []
    lock = load_lock(lock_path)
    found = distributions([p.dist for p in lock.dists], site or None)
    out = pins.version_mismatches(lock, {name: d.version for name, d in found.items()} | {PYTHON: lock.python.version})
    if lock.python.version != PYTHON_VERSION:
        out.append(f"python: this is {PYTHON_VERSION}, the traces were recorded on {lock.python.version}: the committed "
                   f"pages are kept, and `dispel check` proves all but their standard-library links")
    return out


def traced_stdlib_files(project: Project) -> set[str]:
    """The standard-library files the recorded traces ran code from (they all get pinned)."""
    try:
        traces = load_traces(project)
    except DispelError:
        return set()
    return {f.source.path for t in traces.values() for f in t.funcs.values() if f.source.dist == PYTHON}
