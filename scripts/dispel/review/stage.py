"""The review side commands over a Project: `dispel diff` against a git ref, and `dispel audit` of a report's links."""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .. import catalog
from ..check import completeness, fetch
from ..check import links as check_core
from ..model import (
    Chain,
    DispelError,
    Lock,
)
from ..pins import gitinfo
from ..pins import pinning as pins
from ..pins.forges import SHA_RE, raw_url
from ..pins.installed import (
    hop_sources,
    installed_contents,
)
from ..pins.stage import parse_git_dirs
from ..project import (
    Project,
    load_annotations,
    load_chains,
    load_lock,
    load_traces,
    project_lock,
)
from ..render import annotation_files
from ..tracefiles.codec import (
    chain_from_dict,
)
from . import audit as audit_core
from . import diff


def review(project: Project, ref: str = "HEAD") -> str:
    """The chains and lock of the working tree against those at git ``ref``, as `dispel diff`'s Markdown."""
    chains_rel, lock_rel = (p.relative_to(project.root).as_posix() for p in (project.chains, project.lock))
    then = gitinfo.files_at(project.root, ref, chains_rel, lock_rel)
    old_chains = {}
    for name, text in then.items():
        if name.startswith(chains_rel + "/") and name.endswith(".json"):
            chain = chain_from_dict(json.loads(text), origin=f"{ref}:{name}")
            old_chains[chain.journey] = chain
    old_lock = pins.lock_from_json(json.loads(then[lock_rel])) if lock_rel in then else None
    new_chains = load_chains(project)
    new_lock = project_lock(project)
    notes = load_annotations(project)
    problems = annotation_files.problems(new_chains.values(), notes, hop_sources(new_chains.values()), only=("missing", "stale"))
    return diff.report(
        ref,
        old_chains,
        new_chains,
        (old_lock.python, *old_lock.dists) if old_lock else (),
        (new_lock.python, *new_lock.dists) if new_lock else (),
        [f"{p.kind}: {p.message}" for p in problems],
        {k: a.where for k, a in notes.items()},
        catalog.JOURNEY_NAMES,
    )


def fetch_all(fetcher: fetch.Fetcher, urls: Iterable[str], raw_base: str) -> dict:
    """Fetch URLs; DispelError when no answer came from the host at all (it is down or unreachable)."""
    urls = list(urls)
    got = fetcher.get_all(urls)
    if urls and all(r.unreachable for r in got.values()):
        raise DispelError(f"--online: cannot reach {raw_base}: {got[urls[0]].error} (check the address and the network)")
    return got


@dataclass(frozen=True)
class Audit:
    verdicts: list
    coverage: list[str]
    chains_known: bool
    completeness: str = ""  # how many wire values of the chains have their maker or reader on them

    @property
    def broken(self) -> bool:
        return any(v.broken for v in self.verdicts)


def audit(
    project: Project, report: Path, git_dirs: Iterable[str] = (), chains_dir: Path | None = None,
    fetcher: fetch.Fetcher | None = None, raw_base: str = "",
) -> Audit:
    """Grade a hand-written report's GitHub source links against the lock, mirrors or the network."""
    try:
        text = report.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DispelError(f"cannot read the report {report}: {exc.strerror or exc}") from None
    links = audit_core.find_links(text)
    mirrors = parse_git_dirs(git_dirs)
    stray = sorted(name for key, (name, _) in mirrors.items() if key not in {link.repo.lower() for link in links})
    if stray:
        repos = ", ".join(sorted({link.repo for link in links})) or "none"
        raise DispelError(f"--git-dir names {', '.join(stray)}, which no link of {report} points to (it links: {repos})")
    locks = audit_locks(project, chains_dir)
    found = load_chains(project, chains_dir)
    facts = _audit_facts(audit_core.wanted_files(links), locks, mirrors, fetcher, raw_base)
    facts.update(_audit_facts(audit_core.wanted_files(links, facts), locks, mirrors, fetcher, raw_base))
    names = catalog.JOURNEY_NAMES
    ordered = [found[j] for j in names if j in found] + [c for j, c in sorted(found.items()) if j not in names]
    verdicts, linked = audit_core.grade(links, facts, ordered)
    return Audit(verdicts, audit_core.coverage(ordered, linked), bool(found), chains_completeness(project, found, chains_dir))


def chains_completeness(project: Project, found: Mapping[str, Chain], chains_dir: Path | None) -> str:
    """The completeness line of the chains an audit matched against, from the traces beside them
    (a report's, or the project's); "" when those traces are not there."""
    folder = chains_dir.parent if chains_dir is not None else project.traces
    try:
        traces = load_traces(project, folder)
    except DispelError:
        return ""
    per_page = completeness.site_findings(traces, found)
    return completeness.figures_line(per_page) if per_page else ""


def audit_locks(project: Project, chains_dir: Path | None) -> list[Lock]:
    """The locks whose installed files an audit may read: the one beside ``--chains`` (a report's
    traces/pins.lock.json: a student's own versions), then the committed ones (Project.locks)."""
    paths = [chains_dir.parent / "pins.lock.json"] if chains_dir is not None else []
    paths += [p for p in project.locks if p not in paths]
    return [load_lock(p) for p in dict.fromkeys(paths) if p.is_file()]


def _audit_facts(
    wanted: list[tuple[str, str, str]], locks: list[Lock], mirrors: dict, fetcher: fetch.Fetcher | None, raw_base: str
) -> dict:
    """What is known of each (repo, ref, path): from a lock (installed file, blob proven), else a
    --git-dir mirror, else the raw-content host; files none of them knows are left out (unknown)."""
    facts: dict = {}
    commits: dict[tuple[str, str], tuple[str, dict[str, str]] | str] = {}
    online: dict[tuple[str, str, str], str] = {}
    for repo, ref, path in wanted:
        key = (repo.lower(), ref, path)
        found = next((f for lock in locks if isinstance(f := check_core.lock_file(lock, repo, ref, path), tuple)), None)
        if isinstance(found, tuple):
            pin_, fpin = found
            data = installed_contents([(pin_.dist, fpin.installed)])[(pin_.dist, fpin.installed)]
            if isinstance(data, bytes) and pins.blob_sha(data) == fpin.blob:
                facts[key] = audit_core.FileFact("lock", data.decode("utf-8", errors="replace"), pin_.commit)
                continue
        if repo.lower() in mirrors:
            git_dir = mirrors[repo.lower()][1]
            if (repo.lower(), ref) not in commits:
                try:
                    commit = gitinfo.run(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], git_dir).strip()
                    commits[(repo.lower(), ref)] = (commit, gitinfo.tree_blobs(git_dir, commit))
                except gitinfo.GitError:
                    commits[(repo.lower(), ref)] = f"{ref} is no commit, branch or tag of the mirror {git_dir}"
            known = commits[(repo.lower(), ref)]
            if isinstance(known, str):
                facts[key] = audit_core.FileFact("git", None, note=known)
            else:
                commit, tree = known
                text = gitinfo.run(["cat-file", "blob", tree[path]], git_dir) if path in tree else None
                facts[key] = audit_core.FileFact("git", text, commit)
            continue
        if fetcher is not None:
            online[key] = raw_url(raw_base, repo, ref, path)
    if online and fetcher is not None:  # (only a fetcher puts URLs in online)
        got = fetch_all(fetcher, online.values(), raw_base)
        for key, url in online.items():
            answer = got[url]
            commit = key[1] if SHA_RE.fullmatch(key[1]) else ""
            if answer.data is not None:
                facts[key] = audit_core.FileFact("online", answer.data.decode("utf-8", errors="replace"), commit)
            elif answer.status == 404:
                facts[key] = audit_core.FileFact("online", None, commit)
    return facts
