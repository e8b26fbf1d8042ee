"""Pinning, as pure logic: blob hashes, tag spellings, file mapping, the lock format, verification.

Nothing here opens a file or runs a process: the CLI gathers the facts (installed files'
bytes, distribution metadata, git tags and trees) and hands them in as plain values.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..model import (
    LOCK_SCHEMA,
    PINNED_COMMIT,
    PINNED_TAG,
    PYTHON,
    DispelError,
    FilePin,
    Lock,
    Pin,
)
from .forges import FORGES, REPO_RE, SHA_RE, repo_from_url

PYTHON_REPO = "python/cpython"

# Project-URL labels, most trustworthy first; anything else on the forge comes after them.
_URL_LABELS = ("source", "source code", "repository", "code", "github", "homepage", "home")


def blob_sha(data: bytes) -> str:
    """The git blob SHA-1 of a file's bytes: sha1(b"blob <size>\\0" + data)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# --------------------------------------------------------------------------- repository URL


def repo_from_metadata(dist: str, project_urls: Iterable[str], home_page: str | None) -> tuple[str, str]:
    """``(forge, OWNER/REPO)`` from a distribution's ``Project-URL: label, url`` entries and Home-page."""
    ranked: list[tuple[int, str]] = []
    for entry in project_urls:
        label, _, url = entry.partition(",")
        label = label.strip().lower()
        rank = _URL_LABELS.index(label) if label in _URL_LABELS else len(_URL_LABELS) + 1
        ranked.append((rank, url.strip()))
    if home_page:
        ranked.append((len(_URL_LABELS), home_page.strip()))
    for _, url in sorted(ranked, key=lambda r: r[0]):
        found = repo_from_url(url)
        if found:
            return found
    raise DispelError(
        f"distribution {dist} names no repository on {', '.join(f.host for f in FORGES.values())} "
        f"in its Project-URL / Home-page metadata; pass --repo {dist}=OWNER/REPO"
    )


# --------------------------------------------------------------------------- tags


def tag_candidates(version: str) -> tuple[str, ...]:
    """The spellings projects give a release tag, in the order tried."""
    return (f"v{version}", version)


def choose_tag(dist: str, version: str, repo: str, tags: Mapping[str, str] | Iterable[str]) -> str:
    """The existing tag of ``version`` among ``tags``; DispelError naming the spellings tried."""
    names = set(tags)
    for tag in tag_candidates(version):
        if tag in names:
            return tag
    tried = ", ".join(tag_candidates(version))
    raise DispelError(
        f"{repo} has no tag for {dist} {version} (tried {tried}); "
        f"fetch the tags into the mirror (git fetch --tags) or pass --git-dir for the right repository"
    )


# --------------------------------------------------------------------------- files


def _rank(repo_path: str, installed: str) -> tuple[int, int, str]:
    if repo_path == installed:
        where = 0
    elif repo_path.endswith("/" + installed):
        where = 1 if repo_path == "src/" + installed else 2
    elif repo_path.rsplit("/", 1)[-1] == installed.rsplit("/", 1)[-1]:
        where = 3
    else:
        where = 4
    return (where, len(repo_path), repo_path)


def _same_name(tree: Mapping[str, str], installed: str) -> list[str]:
    return sorted(p for p in tree if p == installed or p.endswith("/" + installed))


def map_files(
    dist: str, version: str, tag: str, installed: Mapping[str, str], tree: Mapping[str, str]
) -> tuple[FilePin, ...]:
    """Map installed files (path -> blob) to repository paths (tree: path -> blob) by blob hash.

    When a blob sits at several paths, the path ending with the installed path wins (src or
    flat layout). A file whose blob is nowhere in the tree but whose path is there was changed
    after release: DispelError. A file that is not in git at all (a generated ``_version.py``)
    is kept with ``path=""`` (unpinned).
    """
    by_blob: dict[str, list[str]] = {}
    for path, blob in tree.items():
        by_blob.setdefault(blob, []).append(path)
    pins = []
    for name, blob in sorted(installed.items()):
        same = _same_name(tree, name)
        hits = [p for p in same if tree[p] == blob] or ([] if same else by_blob.get(blob, []))
        if hits:
            pins.append(FilePin(name, min(hits, key=lambda p: _rank(p, name)), blob))
        elif same:
            raise DispelError(
                f"{dist} {version}: installed {name} (blob {blob}) differs from {same[0]} at tag {tag} "
                f"(blob {tree[same[0]]}): patched locally or another version; reinstall {dist}=={version}"
            )
        else:
            pins.append(FilePin(name, "", blob))
    return tuple(pins)


def map_licenses(installed: Mapping[str, str], tree: Mapping[str, str]) -> tuple[FilePin, ...]:
    """The installed license files (path in the .dist-info -> blob) found in the tree by equal blob:
    the path of the same name nearest the top wins; a file whose bytes are nowhere in the tree is left out."""
    out = []
    for name, blob in sorted(installed.items()):
        hits = [p for p, b in tree.items() if b == blob]
        if hits:
            base = name.rsplit("/", 1)[-1]
            best = min(hits, key=lambda p: (p.rsplit("/", 1)[-1] != base, p.count("/"), p))
            out.append(FilePin(name, best, blob))
    return tuple(out)


def unpinned(pin: Pin) -> tuple[str, ...]:
    """Installed files of a pin that are not in git (generated at build time)."""
    return tuple(f.installed for f in pin.files if not f.path)


def stdlib_pin(version: str, blobs: Mapping[str, str]) -> Pin:
    """CPython at the interpreter's release tag; pinned to the tag (no commit is known offline)."""
    files = tuple(FilePin(path, path, blob) for path, blob in sorted(blobs.items()))
    return Pin(PYTHON, version, "github", PYTHON_REPO, f"v{version}", "", PINNED_TAG, files)


# --------------------------------------------------------------------------- the lock


def _by_installed(f: FilePin) -> str:
    return f.installed


def _pin_json(p: Pin) -> dict[str, object]:
    return {
        "version": p.version,
        "forge": p.forge,
        "repo": p.repo,
        "tag": p.tag,
        "commit": p.commit,
        "pinned": p.pinned,
    }


def lock_to_json(lock: Lock) -> dict[str, object]:
    """The lock as JSON-ready data (write it with cli.dump_json: sorted keys, stable)."""
    python = _pin_json(lock.python) | {"files": {f.path: f.blob for f in lock.python.files}}
    dists = {}
    for p in lock.dists:
        files = sorted(p.files, key=_by_installed)
        dists[p.dist] = _pin_json(p) | {
            "files": [{"installed": f.installed, "path": f.path, "blob": f.blob} for f in files if f.path],
            "unpinned": [{"installed": f.installed, "blob": f.blob} for f in files if not f.path],
        }
        if p.licenses:  # written only when known, so locks pinned without a tree stay as they were
            dists[p.dist]["licenses"] = [{"installed": f.installed, "path": f.path, "blob": f.blob} for f in sorted(p.licenses, key=_by_installed)]
    return {"schema": LOCK_SCHEMA, "python": python, "dists": dists}


class _Reader:
    """Typed access into untrusted JSON; every complaint names where in the lock it is."""

    def __init__(self, value: object, where: str) -> None:
        self.value = value
        self.where = where

    def fail(self, problem: str) -> DispelError:
        return DispelError(f"{self.where or 'top level'}: {problem}")

    def obj(self, keys: set[str]) -> dict[str, _Reader]:
        if not isinstance(self.value, dict):
            raise self.fail(f"expected an object, found {type(self.value).__name__}")
        if set(self.value) != keys:
            extra, missing = set(self.value) - keys, keys - set(self.value)
            detail = "; ".join(
                s
                for s in (
                    f"unexpected {', '.join(sorted(map(str, extra)))}" if extra else "",
                    f"missing {', '.join(sorted(missing))}" if missing else "",
                )
                if s
            )
            raise self.fail(f"wrong keys ({detail})")
        return {k: _Reader(v, f"{self.where}.{k}".lstrip(".")) for k, v in self.value.items()}

    def items(self) -> list[tuple[str, _Reader]]:
        if not isinstance(self.value, dict):
            raise self.fail(f"expected an object, found {type(self.value).__name__}")
        return [(k, _Reader(v, f"{self.where}.{k}")) for k, v in self.value.items()]

    def list(self) -> list[_Reader]:
        if not isinstance(self.value, list):
            raise self.fail(f"expected a list, found {type(self.value).__name__}")
        return [_Reader(v, f"{self.where}[{i}]") for i, v in enumerate(self.value)]

    def str(self, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
        if not isinstance(self.value, str) or (pattern is not None and not pattern.fullmatch(self.value)):
            raise self.fail(f"{self.value!r} is not {what or 'a string'}")
        return self.value


_NONEMPTY = re.compile(r"\S+")
_RELPATH = re.compile(r"(?!/)(?!.*(?:^|/)\.\.(?:/|$))[^\0\\]+")
_DIST = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def _pin_from(name: str, r: dict[str, _Reader], files: tuple[FilePin, ...]) -> Pin:
    pinned = r["pinned"].str(re.compile(f"{PINNED_COMMIT}|{PINNED_TAG}"), '"commit" or "tag"')
    commit_re = SHA_RE if pinned == PINNED_COMMIT else re.compile("")
    pin = Pin(
        dist=name,
        version=r["version"].str(_NONEMPTY, "a version"),
        forge=r["forge"].str(re.compile("|".join(FORGES)), f"a known forge ({', '.join(FORGES)})"),
        repo=r["repo"].str(REPO_RE, "OWNER/REPO"),
        tag=r["tag"].str(_NONEMPTY, "a tag"),
        commit=r["commit"].str(commit_re, "a 40-hex SHA-1" if pinned == PINNED_COMMIT else '"" (tag-pinned)'),
        pinned=pinned,
        files=files,
    )
    seen = set()
    for f in files:
        if f.installed in seen:
            raise DispelError(f"{name}: {f.installed} is listed twice")
        seen.add(f.installed)
    return pin


def _file_pin(r: _Reader, pinned: bool) -> FilePin:
    """One entry of ``files`` ({installed, path, blob}) or of ``unpinned`` ({installed, blob})."""
    f = r.obj({"installed", "path", "blob"} if pinned else {"installed", "blob"})
    path = f["path"].str(_RELPATH, "a relative path") if pinned else ""
    installed = f["installed"].str(_RELPATH, "a relative path")
    return FilePin(installed, path, f["blob"].str(SHA_RE, "a 40-hex blob SHA-1"))


_PIN_KEYS = {"version", "forge", "repo", "tag", "commit", "pinned", "files"}


def lock_from_json(data: object) -> Lock:
    """Validate and load lock data; DispelError naming the first thing that is wrong."""
    top = _Reader(data, "")
    if isinstance(data, dict) and "schema" in data and data["schema"] != LOCK_SCHEMA:
        raise DispelError(f"lock schema {data['schema']!r}, this dispel reads schema {LOCK_SCHEMA}")
    t = top.obj({"schema", "python", "dists"})
    py = t["python"].obj(_PIN_KEYS)
    py_files = []
    for path, r in py["files"].items():
        _Reader(path, f"python.files key {path!r}").str(_RELPATH, "a relative path")
        py_files.append(FilePin(path, path, r.str(SHA_RE, "a 40-hex blob SHA-1")))
    python = _pin_from(PYTHON, py, tuple(sorted(py_files, key=_by_installed)))
    if python.repo != PYTHON_REPO:
        raise py["repo"].fail(f"{python.repo!r} is not {PYTHON_REPO}")
    dists = []
    for name, entry in t["dists"].items():
        _Reader(name, f"dists key {name!r}").str(_DIST, "a normalized distribution name")
        optional = {"licenses"} & set(entry.value) if isinstance(entry.value, dict) else set()
        d = entry.obj(_PIN_KEYS | {"unpinned"} | optional)
        files = [_file_pin(fr, pinned=True) for fr in d["files"].list()]
        files += [_file_pin(fr, pinned=False) for fr in d["unpinned"].list()]
        licensed = tuple(sorted((_file_pin(fr, pinned=True) for fr in d["licenses"].list()), key=_by_installed)) if optional else ()
        dists.append(dataclasses.replace(_pin_from(name, d, tuple(sorted(files, key=_by_installed))), licenses=licensed))
    return Lock(python, tuple(sorted(dists, key=lambda p: p.dist)))


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class Installed:
    """What is installed now: a distribution's version and its files' blob hashes."""

    dist: str
    version: str
    blobs: Mapping[str, str] = field(hash=False)  # installed path (or Lib/ path) -> blob
    licenses: Mapping[str, str] = field(default_factory=dict, hash=False)  # license files in the .dist-info -> blob


def version_mismatch(dist: str, installed: str, locked: str) -> str:
    """The one line for a distribution whose installed version is not the lock's, and what to do."""
    return f"{dist}: installed {installed}, lock {locked}: run make pin, then make regen"


def version_mismatches(lock: Lock, installed: Mapping[str, str | None]) -> list[str]:
    """Versions only (no file is read): ``installed`` maps each pinned name to its version or None."""
    out = []
    for pin in (lock.python, *lock.dists):
        now = installed.get(pin.dist)
        if now is None:
            out.append(f"{pin.dist}: not installed, lock {pin.version}: run make site (pip install -r requirements.lock)")
        elif now != pin.version:
            out.append(version_mismatch(pin.dist, now, pin.version))
    return out


def repin_reason(old: Pin | None, now: Installed, repo: str) -> str:
    """Why a distribution must be pinned afresh, or "" when its lock entry still holds as it is.

    An entry holds when the installed version, the repository and every installed file's blob
    equal the lock's: then the commit the lock names is still the one those files came from,
    and no git repository (mirror or network) is needed to keep it.
    """
    if old is None:
        return "not in the lock"
    if old.version != now.version:
        return f"installed {now.version}, lock {old.version}"
    if old.repo.lower() != repo.lower():
        return f"repository {repo}, lock {old.repo}"
    if old.pinned != PINNED_COMMIT:
        return "tag-pinned in the lock"
    locked = {f.installed: f.blob for f in old.files}
    changed = sorted(k for k in set(locked) | set(now.blobs) if locked.get(k) != now.blobs.get(k))
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        return f"{len(changed)} installed file(s) differ from the lock: {shown}"
    return ""


def verify(lock: Lock, installed_blobs: Mapping[str, Installed], with_python: bool = True) -> list[str]:
    """Compare recomputed blob hashes to the lock; one line per problem, [] when all is proven.
    ``with_python`` False: the standard library's pin is not verified (another Python runs)."""
    problems: list[str] = []
    for pin in (lock.python, *lock.dists) if with_python else lock.dists:
        now = installed_blobs.get(pin.dist)
        if now is None:
            problems.append(
                f"{pin.dist}: locked {pin.version}, not installed (pip install -r requirements.lock)"
            )
            continue
        if now.version != pin.version:
            problems.append(version_mismatch(pin.dist, now.version, pin.version))
            continue
        for f in pin.files:
            blob = now.blobs.get(f.installed)
            if blob is None:
                problems.append(f"{pin.dist} {pin.version}: {f.installed} is in the lock but not installed")
            elif blob != f.blob:
                problems.append(
                    f"{pin.dist}: {f.installed} differs: locked {pin.version} blob {f.blob}, "
                    f"installed {now.version} blob {blob} "
                    f"(patched locally? reinstall {pin.dist}=={pin.version})"
                )
        for f in pin.licenses:
            if now.licenses.get(f.installed) != f.blob:
                problems.append(
                    f"{pin.dist} {pin.version}: the license file {f.installed} differs from the lock or is not installed "
                    f"(reinstall {pin.dist}=={pin.version}, or run `make pin`)"
                )
        if pin.dist != PYTHON:
            locked = {f.installed for f in pin.files}
            for extra in sorted(set(now.blobs) - locked):
                problems.append(
                    f"{pin.dist} {pin.version}: installed {extra} is not in the lock; run `make pin`"
                )
    return problems
