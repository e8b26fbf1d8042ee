"""The render stage, over a Project: chains, lock, annotations and installed sources -> the generated pages."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import catalog, layout
from ..check import links as check_core
from ..model import (
    DispelError,
    Hop,
    Lock,
    text_lines,
)
from ..pins import permalinks
from ..pins.installed import (
    PYTHON_VERSION,
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
    oldest_set,
    project_lock,
    write_all_atomic,
)
from ..review import versions as versions_core
from . import annotation_files
from . import pages as render


def browsers_recorded(project: Project) -> list[tuple[str, str]]:
    """The browser each trace was recorded with, from its header, for the home page's versions
    (its requests show it only as placeholders)."""
    out = []
    for path in sorted(project.traces.glob("*.json")):
        with path.open(encoding="utf-8") as f:
            version = check_core.browser_version(f.read(4096))
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
            files[page] = render.render_journey(chain, hop_linker(lock), excerpts, texts, found)
    files[out / "sample_app.md"] = render.render_sample_app(sample_app_files())
    files[out / "licensing.md"] = render.render_licensing(license_rows(found.values(), lock))
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

