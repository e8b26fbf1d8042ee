"""The render stage, over a Project: chains, lock, annotations and installed sources -> the generated pages."""
from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .. import catalog, layout
from ..check import drift
from ..model import (
    Chain,
    DispelError,
    Hop,
    Lock,
    normalize_dist,
    text_lines,
)
from ..pins import permalinks
from ..pins.installed import (
    PYTHON_VERSION,
    dependency_facts,
    hop_sources,
    license_rows,
    sample_app_files,
    version_set,
)
from ..pins.stage import foreign_python
from ..project import (
    Project,
    load_annotations,
    load_chains,
    load_traces,
    oldest_set,
    project_lock,
    read_text,
    write_all_atomic,
)
from ..review import beside
from ..review import versions as versions_core
from . import aids, annotation_files
from . import pages as render


def browsers_recorded(project: Project) -> list[tuple[str, str]]:
    """The browser each trace was recorded with, from its header, for the home page's versions
    (its requests show it only as placeholders)."""
    out = []
    for path in sorted(project.traces.glob("*.json")):
        with path.open(encoding="utf-8") as f:
            version = drift.browser_version(f.read(4096))
        if version:
            out.append((f"Chromium ({path.stem} scenario)", version))
    return out


def hop_linker(lock: Lock | None) -> Callable[[Hop], render.HopLinks | None]:
    """Permalinks of a hop from the lock; no links at all while there is no lock."""

    def links(hop: Hop) -> render.HopLinks | None:
        if lock is None:
            return None
        line = permalinks.link(lock, hop.func, max(0, hop.line))
        if line is None:
            return None
        definition = line if hop.func.is_c else permalinks.link(lock, hop.func)
        return render.HopLinks(line.url, definition.url if definition else "", line.pinned)

    return links


def line_url(lock: Lock | None) -> Callable[[Hop], str]:
    """A hop's executed line at the lock's commit ("" without one), for the side-by-side sections."""
    links = hop_linker(lock)

    def url(hop: Hop) -> str:
        found = links(hop)
        return found.line if found else ""

    return url


@dataclass(frozen=True)
class Site:
    """What build_site wrote, and the notes for its author."""

    files: tuple[Path, ...]
    notes: tuple[str, ...]


def build_site(project: Project, chains_dir: Path | None = None, docs: Path | None = None) -> Site:
    """Chains + lock + annotations + installed sources -> the generated pages of docs/ (all or none).

    Facts are read here; every page is made by the pure functions of dispel.render.pages. A journey
    whose chain file does not exist yet gets a placeholder page.
    """
    out = docs or project.docs
    traced = foreign_python(project)
    if traced and out.resolve() == project.docs.resolve():
        return Site((), (
            (f"kept the committed pages: they quote the standard library of Python {traced}, which recorded "
            f"the traces, and this is Python {PYTHON_VERSION} (render them with CPython {traced})"),
        ))
    found = load_chains(project, chains_dir)
    lock = project_lock(project)
    notes = load_annotations(project, out / "annotations")
    if set(catalog.JOURNEY_NAMES) <= set(found):
        # Only once every journey is recorded can an annotation be known to be on no chain.
        orphans = annotation_files.problems(found.values(), notes, journeys=catalog.JOURNEY_NAMES, only=("orphaned",))
        if orphans:
            raise DispelError(orphans[0].message + (f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else ""))
    sources = hop_sources(found.values())
    excerpts = {src: text_lines(data) for src, data in sources.items()}
    texts = annotation_files.texts(notes)

    files: dict[Path, str] = {}
    for journey in catalog.JOURNEY_NAMES:
        chain = found.get(journey)
        page = out / "chains" / f"{journey}.md"
        if chain is None:
            files[page] = render.render_placeholder(journey)
        else:
            view = render.journey_page(chain, hop_linker(lock), excerpts, texts, found)
            files[page] = aids.with_journey_aids(render.emit_journey(view), view)
            beside_mode = catalog.journey(journey).beside
            if beside_mode and beside_mode in found:
                files[page] = beside.with_section(files[page], beside.section(found[beside_mode], chain, line_url(lock)))
    files.update(aid_pages(project, out, found))
    files[out / "sample_app.md"] = render.render_sample_app(sample_app_files())
    rows = license_rows(found.values(), lock)
    dists = [normalize_dist(d) for d in {h.func.source.dist for c in found.values() for h in c.hops} - {"builtin", "sample_app", "python"}]
    files[out / "licensing.md"] = (render.render_licensing(rows) + "\n" + aids.license_files_section(rows) + "\n"
                                   + aids.dependency_tree(dependency_facts(dists), dists))
    versions, python = version_set(lock)
    versions += browsers_recorded(project)
    files[out / "snippets" / "modules.md"] = layout.markdown_table()
    files[out / "snippets" / "versions.md"] = render.render_versions(versions, python, sorted(found, key=catalog.JOURNEY_NAMES.index))
    old_chains, old_lock = oldest_set(project)  # docs/versions/: the oldest supported set against the lock's
    files.update(versions_core.pages(out, old_chains, found, old_lock, lock))
    write_all_atomic(files)

    said = [p.message for p in annotation_files.problems(found.values(), notes, sources, only=("missing", "stale", "unreviewed", "sample_values"))]
    absent = [j for j in catalog.JOURNEY_NAMES if j not in found]
    if absent:
        said.append(f"not recorded yet, placeholder pages: {', '.join(absent)} (run `make regen`)")
    return Site(tuple(files), tuple(said))


def aid_pages(project: Project, out: Path, found: Mapping[str, Chain]) -> dict[Path, str]:
    """The reader's aids (render/aids): glossary, threads, the edge table and cite snippets, the footer."""
    facts = aids.thread_facts(load_traces(project))
    chains = [found[j] for j in catalog.JOURNEY_NAMES if j in found]
    files = {
        out / aids.GLOSSARY_PAGE: aids.glossary_page(facts),
        out / aids.THREADS_PAGE: aids.threads_page(facts, chains),
        out / "snippets" / aids.EDGES_SNIPPET: aids.edges_snippet(),
    }
    about = colophon(project)
    dated = {out / "snippets" / aids.CITE_SNIPPET: aids.cite_snippet(about), out / aids.FOOTER_PARTIAL: aids.footer_html(about)}
    for path, text in dated.items():
        committed = project.docs / path.relative_to(out)
        # A copy without git history (a test's, a tarball's) cannot date its traces: it keeps the committed colophon.
        files[path] = read_text(committed, "page") if not about.traces_date and committed.is_file() else text
    return files


def traces_commit(project: Project) -> tuple[str, str]:
    """(committer date ISO 8601, SHA) of the last commit that changed the project's traces/; ("", "") when git does not know."""
    rel = project.traces.relative_to(project.root).as_posix() if project.traces.is_relative_to(project.root) else str(project.traces)
    try:
        done = subprocess.run(["git", "-C", str(project.root), "log", "-1", "--format=%cI %H", "--", rel],
                              capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "", ""
    date, _, sha = done.stdout.strip().partition(" ") if done.returncode == 0 else ("", "", "")
    return date, sha


def colophon(project: Project) -> aids.Colophon:
    """The site's name (mkdocs.yml), dispel's version and the date and commit of the traces, for the footer and the cite snippet."""
    config = project.root / "mkdocs.yml"
    name = "dispel"
    if config.is_file():
        m = re.search(r'^site_name:\s*"?(.*?)"?\s*$', read_text(config, "mkdocs.yml"), re.MULTILINE)
        name = m.group(1) if m else name
    try:
        version = metadata.version("dispel")
    except metadata.PackageNotFoundError:
        version = "unknown"
    date, sha = traces_commit(project)
    return aids.Colophon(name, version, date, sha)
