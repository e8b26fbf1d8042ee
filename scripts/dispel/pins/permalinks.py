"""Permalinks: pure functions from a pin and a line to a URL that cannot drift.

A link names a commit (40-hex) whenever the pin has one; only a tag-pinned pin (the
standard library when no commit is known) links to its tag, and says so. C functions of
the socket module link to their Python documentation entry, since CPython's C sources
are not part of the lock.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..model import PINNED_COMMIT, PINNED_DOCS, PINNED_TAG, DispelError, Func, Lock, Pin
from .forges import SHA_RE, forge

# C-level functions of the socket module -> the documented name (the anchor on docs.python.org).
PY_DOCS = "https://docs.python.org/{minor}/library/{page}.html#{anchor}"
C_DOCS: dict[str, str] = {
    "socket.socket.send": "socket.socket.send",
    "socket.socket.sendall": "socket.socket.sendall",
    "socket.socket.recv": "socket.socket.recv",
    "socket.socket.recv_into": "socket.socket.recv_into",
    "socket.socket.accept": "socket.socket.accept",
    "socket.socket._accept": "socket.socket.accept",  # the C half of socket.socket.accept
    "socket.socket.bind": "socket.socket.bind",
    "socket.socket.listen": "socket.socket.listen",
}


@dataclass(frozen=True)
class Permalink:
    url: str
    pinned: str  # PINNED_COMMIT, PINNED_TAG (mark it on the page) or PINNED_DOCS


def ref(pin: Pin) -> str:
    """The revision a pin's links name: its commit, or its tag for a tag-pinned pin."""
    if pin.pinned == PINNED_COMMIT:
        if not SHA_RE.fullmatch(pin.commit):
            raise DispelError(f"{pin.dist} is pinned to commit {pin.commit!r}, which is not a 40-hex SHA-1")
        return pin.commit
    if pin.pinned == PINNED_TAG and pin.tag:
        return pin.tag
    raise DispelError(f"{pin.dist} has no usable pin ({pin.pinned!r}); run `dispel pin`")


def repo_path(pin: Pin, installed_path: str) -> str:
    """The repository path of an installed file, as proven in the lock."""
    for f in pin.files:
        if f.installed == installed_path:
            if not f.path:
                raise DispelError(
                    f"{pin.dist} {pin.version}: {installed_path} is not in git at {pin.tag} (unpinned); "
                    "it has no permalink"
                )
            return f.path
    raise DispelError(
        f"{pin.dist} {pin.version}: {installed_path} is not in the lock; add it and run `dispel pin`"
    )


def file_url(pin: Pin, installed_path: str) -> str:
    return forge(pin.forge).blob.format(repo=pin.repo, ref=ref(pin), path=repo_path(pin, installed_path))


def permalink(pin: Pin, installed_path: str, line: int) -> str:
    """``https://github.com/OWNER/REPO/blob/<sha>/<repo path>#L<line>``."""
    if line < 1:
        raise DispelError(f"{pin.dist}: {installed_path}: line {line} is not a line number")
    return file_url(pin, installed_path) + forge(pin.forge).line.format(line=line)


def permalink_range(pin: Pin, installed_path: str, start: int, end: int) -> str:
    """``…#L<start>-L<end>`` (a single line when ``start == end``)."""
    if start < 1 or end < start:
        raise DispelError(f"{pin.dist}: {installed_path}: lines {start}-{end} are not a range")
    if start == end:
        return permalink(pin, installed_path, start)
    return file_url(pin, installed_path) + forge(pin.forge).range.format(start=start, end=end)


def c_doc_link(module: str, qualname: str, python_version: str) -> str | None:
    """The docs.python.org entry of a C-level socket function; None when none is known.

    ``module`` may be ``socket`` or ``_socket``; ``qualname`` is e.g. ``socket.send``.
    """
    name = C_DOCS.get(f"{module.lstrip('_')}.{qualname}")
    if name is None:
        return None
    minor = ".".join(python_version.split(".")[:2])
    return PY_DOCS.format(minor=minor, page=name.split(".")[0], anchor=name)


def link(lock: Lock, func: Func, line: int = 0) -> Permalink | None:
    """The link of a hop: ``line`` when given, else the function's definition range.

    None for the sample app (its pages live in the site) and for C functions with no docs entry.
    """
    if func.is_c:
        url = c_doc_link(func.module, func.qualname, lock.python.version)
        return Permalink(url, PINNED_DOCS) if url else None
    if func.source.dist == "sample_app":
        return None
    pin = lock.pin_for(func.source)
    if line:
        url = permalink(pin, func.source.path, line)
    else:
        url = permalink_range(pin, func.source.path, func.first_line, max(func.first_line, func.last_line))
    return Permalink(url, pin.pinned)
