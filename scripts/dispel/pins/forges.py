"""Code hosts, as a table of URL templates: building and parsing source URLs, and the SHA patterns.

A leaf module (like griffe's table of forges): it imports nothing of dispel but DispelError,
and every other module that builds or reads a host's URL goes through it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from ..model import DispelError

SHA_RE = re.compile(r"[0-9a-f]{40}")  # a full commit or blob SHA-1
SHORT_SHA_RE = re.compile(r"[0-9a-f]{7,39}")
REPO_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?/[A-Za-z0-9._-]+")
RAW_BASE = "https://raw.githubusercontent.com"
# Path segments after the host that are not an owner.
_NOT_OWNERS = {"sponsors", "orgs", "users", "apps", "marketplace", "settings"}


@dataclass(frozen=True)
class Forge:
    """URL templates of one code host."""

    host: str
    file: str  # after https://HOST: {repo} {ref} {path}
    line: str  # {line}
    range: str  # {start} {end}
    tree: str = ""  # after https://HOST: {repo} {ref}; "" when links to a tree are not made

    @property
    def home(self) -> str:  # {repo}
        return f"https://{self.host}/{{repo}}"

    @property
    def clone(self) -> str:  # {repo}
        return f"https://{self.host}/{{repo}}.git"

    @property
    def blob(self) -> str:  # {repo} {ref} {path}
        return f"https://{self.host}{self.file}"


FORGES: dict[str, Forge] = {
    "github": Forge("github.com", "/{repo}/blob/{ref}/{path}", "#L{line}", "#L{start}-L{end}", "/{repo}/tree/{ref}"),
    "gitlab": Forge("gitlab.com", "/{repo}/-/blob/{ref}/{path}", "#L{line}", "#L{start}-{end}"),
    "bitbucket": Forge("bitbucket.org", "/{repo}/src/{ref}/{path}", "#lines-{line}", "#lines-{start}:{end}"),
}


def forge(name: str) -> Forge:
    try:
        return FORGES[name]
    except KeyError:
        raise DispelError(f"unknown forge {name!r}; known: {', '.join(sorted(FORGES))}") from None


def check_repo(repo: str, what: str) -> str:
    """``repo`` when it is OWNER/REPO; DispelError naming ``what`` otherwise."""
    if not REPO_RE.fullmatch(repo) or repo.endswith((".git", ".")):
        raise DispelError(f"{what}: {repo!r} is not OWNER/REPO")
    return repo


def repo_url(forge_name: str, repo: str, ref: str) -> str:
    """The code of ``repo`` at ``ref`` (its home page when there is no ref or no tree template)."""
    f = forge(forge_name)
    if ref and f.tree:
        return f"https://{f.host}" + f.tree.format(repo=repo, ref=ref)
    return f.home.format(repo=repo)


def repo_from_url(url: str) -> tuple[str, str] | None:
    """``(forge, OWNER/REPO)`` of a URL on a known forge; None when it names no repository."""
    for name, f in FORGES.items():
        m = re.match(
            rf"^(?:git\+)?(?:https?://|ssh://git@|git@)(?:www\.)?{re.escape(f.host)}[/:]([^/?#]+)/([^/?#]+)",
            url.strip(),
        )
        if not m:
            continue
        owner, repo = m.group(1), m.group(2).removesuffix(".git")
        if owner.lower() in _NOT_OWNERS or not REPO_RE.fullmatch(f"{owner}/{repo}"):
            return None
        return name, f"{owner}/{repo}"
    return None


_BLOB_URL = re.compile(r"https://github\.com/([^/\s]+/[^/\s]+)/blob/([^/\s]+)/([^#?\s]+)(?:\?[^#\s]*)?(?:#L(\d+)(?:-L(\d+))?)?$")
_RAW_URL = re.compile(r"https://raw\.githubusercontent\.com/([^/\s]+/[^/\s]+)/([^/\s]+)/([^#?\s]+)(?:#L(\d+)(?:-L(\d+))?)?$")


@dataclass(frozen=True)
class SourceLink:
    """A well-formed GitHub link to a file at a ref, optionally to a line or a range of lines."""

    url: str
    repo: str  # OWNER/NAME as written
    ref: str
    path: str
    start: int = 0  # 0: no line
    end: int = 0

    @property
    def raw_path(self) -> str:
        """The path under a raw-content host: OWNER/NAME/REF/PATH."""
        return f"{self.repo}/{self.ref}/{self.path}"


def parse_source_url(url: str) -> SourceLink | None:
    """A github.com blob or raw.githubusercontent.com URL -> SourceLink; None for anything else."""
    m = _BLOB_URL.match(url) or _RAW_URL.match(url)
    if not m:
        return None
    start = int(m.group(4) or 0)
    return SourceLink(url, m.group(1), m.group(2), unquote(m.group(3)), start, int(m.group(5) or start))


def raw_url(base: str, repo: str, ref: str, path: str) -> str:
    """``BASE/OWNER/NAME/REF/PATH``, the raw-content address of a file at a ref."""
    return f"{base.rstrip('/')}/{repo}/{ref}/{quote(path)}"
