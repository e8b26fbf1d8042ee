"""`dispel check`, a function over a Project: what the other stages made, verified.

In order: installed files against the lock and every link of the pages (check_proofs,
shared with reports), annotations and prose against the chains, the generated files against
a regeneration (drift), and with ``rerecord`` the traces against fresh recordings. The
verdicts are pure (dispel.check.links, dispel.check.prose); this module gathers the facts.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from .. import catalog
from ..chains import build as chains_core
from ..chains.stage import build_chains, chain_files
from ..handin import document as handin
from ..model import Chain, DispelError, Lock, Source
from ..pins.forges import parse_source_url, raw_url
from ..pins.installed import PYTHON_VERSION, hop_sources, installed_contents
from ..pins.stage import verify_installed
from ..project import (
    HERE,
    Project,
    load_annotations,
    load_chains,
    load_traces,
    oldest_set,
    project_lock,
    read_text,
)
from ..record.stage import record_in_new_interpreters
from ..render import aids, annotation_files
from ..render.stage import build_site
from ..review import oldest_venv
from ..review import versions as versions_core
from ..review.stage import fetch_all
from ..run import multiprocess as processes
from ..run.browser import chromium_version, unavailable
from ..tracefiles.values import live_secrets
from . import completeness, drift, fetch, integrity, pagecheck, prose
from . import links as check_core


@dataclass
class CheckResult:
    """What `dispel check` found: one line per failure, notes, link counts and the time of each phase."""

    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unproven: int = 0  # standard-library links recorded on another Python than this one
    timings: dict[str, float] = field(default_factory=dict)
    summary: check_core.Summary = field(default_factory=lambda: check_core.Summary(0, 0, 0))
    completeness: str = ""  # how many wire values have their maker or reader on their chains (one line)


def check(
    project: Project, fetcher: fetch.Fetcher | None = None, raw_base: str = "", rerecord: bool = False, drift: bool = True,
) -> CheckResult:
    """Every check of `dispel check` against ``project`` (tests point it at a copy); ``drift``: False
    leaves out the comparison with a regeneration (a test that alters a chain on purpose)."""
    result = CheckResult()
    lock = project_lock(project)
    found = load_chains(project)
    check_proofs(project, lock, found, result, fetcher, raw_base)

    clock = time.perf_counter()
    notes, sources = load_annotations(project), hop_sources(found.values())  # read once, used by both checks
    result.failures += check_annotations(project, found, notes, sources)
    pages = {j: read_text(p, "page") for j in found if (p := project.docs / "chains" / f"{j}.md").is_file()}
    result.failures += prose.check_site(pages, found, sources)  # what the pages say, against the chains
    if (project.docs / "index.md").is_file() and (project.docs / "how.md").is_file():
        snippets = {p.name: read_text(p, "snippet") for p in sorted((project.docs / "snippets").glob("*.md"))}
        result.failures += check_core.stale_site_texts(
            check_core.expand_snippets(read_text(project.docs / "index.md", "page"), snippets)[0],
            read_text(project.docs / "how.md", "page"), catalog.JOURNEY_NAMES,
            (h.edge for c in found.values() for h in c.hops), (*catalog.DEFAULT_SCENARIOS, *catalog.DEFAULT_PROCESS_SCENARIOS),
        )
    if (project.root / "mkdocs.yml").is_file():
        generated = [*(f"chains/{j}.md" for j in catalog.JOURNEY_NAMES), aids.GLOSSARY_PAGE, aids.THREADS_PAGE]
        result.failures += check_core.unlisted_pages(read_text(project.root / "mkdocs.yml", "mkdocs.yml"), generated)
    result.timings["annotations"] = time.perf_counter() - clock

    clock = time.perf_counter()
    result.failures += check_integrity(project, found)  # each chain is one story of its trace
    result.timings["integrity"] = time.perf_counter() - clock

    clock = time.perf_counter()
    result.failures += check_completeness(project, found, result)  # every wire value has its maker or reader
    result.timings["completeness"] = time.perf_counter() - clock

    if drift:
        clock = time.perf_counter()
        drifted, why = check_drift(project, found, notes=notes)
        result.failures += drifted
        result.notes += [f"drift may come from: {w}" for w in why] if drifted else []
        result.timings["drift"] = time.perf_counter() - clock

    clock = time.perf_counter()
    result.failures += check_oldest_set(project, result.notes)
    result.timings["oldest set"] = time.perf_counter() - clock
    traced = lock.python.version if lock is not None else PYTHON_VERSION
    if traced != PYTHON_VERSION:
        # One line for all that only the recording's Python can prove; the rest is proven as ever.
        result.notes.append(
            f"unproven on Python {PYTHON_VERSION}: {result.unproven} standard-library links, the pages' "
            f"standard-library excerpts and the re-recording; the traces were recorded on Python {traced}: "
            f"`make test PY=python{traced.rpartition('.')[0]}` with CPython {traced} proves them"
        )
    elif rerecord:
        clock = time.perf_counter()
        names, left_out = rerecordable()
        result.notes += [left_out] if left_out else []
        missing = processes.redis_missing()
        if missing:
            result.notes.append(f"the scenarios of several processes are not re-recorded: {missing}")
        else:
            names += catalog.DEFAULT_PROCESS_SCENARIOS
        failures, rerecord_notes = check_rerecord(project, names=names)
        result.failures += failures
        result.notes += rerecord_notes
        result.timings["re-record"] = time.perf_counter() - clock
    if lock is None:
        result.notes.append(f"no lock at {project.lock}: permalinks cannot be checked")
    return result


def check_proofs(
    project: Project, lock: Lock | None, found: Mapping[str, Chain], result: CheckResult,
    fetcher: fetch.Fetcher | None = None, raw_base: str = "",
) -> None:
    """The first phases of every check, of the project or of a report: installed files against
    the lock, no live secret in a trace, chain or page, then every link and permalink of the
    pages; into ``result``."""
    clock = time.perf_counter()
    result.failures += verify_installed(lock) if lock is not None else []
    result.timings["installed"] = time.perf_counter() - clock

    clock = time.perf_counter()
    result.failures += check_secrets(project)
    result.timings["secrets"] = time.perf_counter() - clock

    clock = time.perf_counter()
    links = check_links(project, lock, found, fetcher, raw_base, result.notes)
    if lock is not None:
        result.unproven, links = check_core.fold_foreign_python(links, lock, PYTHON_VERSION)
    result.summary = check_core.summarize(links)
    if lock is not None:  # links that fail only because the chains predate the lock: one line per library
        folded, links = check_core.fold_recording_drift(links, lock, check_core.recording_drift(found.values(), lock))
        result.failures += folded
    result.failures += [p for r in links for p in r.problems]
    result.timings["links"] = time.perf_counter() - clock
    clock = time.perf_counter()
    result.failures += check_page_rules(project, found)
    result.timings["page rules"] = time.perf_counter() - clock
    if not project.annotations.is_dir():  # a report: its pages reuse this checkout's general texts
        clock = time.perf_counter()
        result.failures += check_sample_values(project, found)
        result.timings["sample values"] = time.perf_counter() - clock


def check_page_rules(project: Project, found: Mapping[str, Chain]) -> list[str]:
    """The journey pages (the project's or a report's) against the rules of a page a reader can
    take in: at most dispel.check.pagecheck.MAX_VISIBLE hops shown before anything is opened."""
    pages = {f"docs/chains/{j}.md": read_text(p, "page") for j in found if (p := project.docs / "chains" / f"{j}.md").is_file()}
    return pagecheck.too_many_visible(pages)


def check_sample_values(report: Project, found: Mapping[str, Chain], sample: Project | None = None) -> list[str]:
    """A report's journey pages against the values of the sample app (``sample``: this checkout),
    computed from the sample's committed chains: a general text that names one leaked into the report."""
    sample = Project() if sample is None else sample
    if not sample.chains.is_dir():
        return []
    vocabulary = annotation_files.sample_vocabulary(load_chains(sample).values())
    pages = {j: read_text(p, "page") for j in found if (p := report.docs / "chains" / f"{j}.md").is_file()}
    return prose.sample_values(pages, vocabulary, annotation_files.sample_vocabulary(found.values()))


def check_secrets(project: Project) -> list[str]:
    """One line per committed trace, chain or journey page and key whose value looks like a live
    secret (values.live_secrets): it names the file and the key, never the value."""
    paths = [p for p in sorted(project.traces.glob("*.json")) if not p.name.endswith(".lock.json")]
    paths += sorted(project.chains.glob("*.json")) + sorted((project.docs / "chains").glob("*.md"))
    out = []
    for path in paths:
        try:
            keys = live_secrets(read_text(path, "file"), path.suffix == ".json")
        except ValueError as exc:
            out.append(f"secrets: {project.shown(path)} cannot be read as JSON ({exc})")
            continue
        out += [f"secrets: {project.shown(path)}: the value of {key!r} is in clear; re-record it "
                "(dispel hides what it learns; add --redact REGEX for the rest)" for key in keys]
    return out


def docs_files(docs: Path) -> dict[str, Path]:
    """Every file under docs/ by its path relative to docs/ (POSIX), dot-files left out."""
    if not docs.is_dir():
        raise DispelError(f"no docs folder at {docs}")
    return {
        p.relative_to(docs).as_posix(): p
        for p in sorted(docs.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(docs).parts)
    }


def check_links(
    project: Project, lock: Lock | None, found: Mapping[str, Chain], fetcher: fetch.Fetcher | None = None, raw_base: str = "",
    notes: list[str] | None = None,
) -> list[check_core.LinkResult]:
    """Internal links and anchors of every page, then every GitHub permalink (offline, then online)."""
    files = docs_files(project.docs)
    # annotations/ and snippets/ are inputs, not pages (mkdocs.yml: exclude_docs).
    pages = {
        rel: read_text(p, "page")
        for rel, p in files.items()
        if rel.endswith(".md") and not rel.startswith(("annotations/", "snippets/"))
    }
    snippets = {rel.removeprefix("snippets/"): read_text(p, "snippet") for rel, p in files.items() if rel.startswith("snippets/")}
    results = check_core.check_internal(pages, files, snippets)
    links = [link for page, text in pages.items() for link in check_core.page_links(page, check_core.expand_snippets(text, snippets)[0])]
    links, oldest = versions_core.oldest_links(links, lock, oldest_set(project)[1])
    wanted = check_core.permalink_files(links, lock) if lock else {}
    offline = check_core.check_permalinks(links, lock, found, installed_contents(wanted))
    if fetcher is not None and lock is not None:
        online = check_core.check_permalinks(links, lock, found, online_contents(links, lock, fetcher, raw_base), f"fetched from {raw_base}")
        offline = check_core.merge_results(offline, online)
    return results + offline + check_oldest_links(project, oldest, notes)


def check_oldest_set(project: Project, notes: list[str]) -> list[str]:
    """The oldest supported set's chains (traces/oldest/): at its lock's versions, and derived again
    from its traces by its venv's dispel (without that venv, one line in ``notes``)."""
    old_chains, old_lock = oldest_set(project)
    if not old_chains or old_lock is None:
        return []
    out = versions_core.version_drift(old_chains.values(), old_lock)
    # every wire value of those chains has its maker or reader on them, as the lock's must
    per_page = completeness.site_findings(load_traces(project, project.traces / versions_core.SET), old_chains)
    out += completeness.problems([f for results in per_page.values() for f in results],
                                 f"docs/{versions_core.PAGES}/{{}}.md (traces/{versions_core.SET}/chains)")
    env = oldest_venv.venv(HERE)
    drift = oldest_venv.chains_drift(project.traces / versions_core.SET, env)
    if drift is None:  # said on the line of the unproven links when there is one: one line for the missing venv
        said = next((i for i, n in enumerate(notes) if n.startswith("unproven: ") and str(env) in n), None)
        if said is None:
            notes.append(f"not derived again: traces/{versions_core.SET}/chains (no venv at {env}; `make site` builds it)")
        else:
            notes[said] += f"; nor are traces/{versions_core.SET}/chains derived again"
    return out + (drift or [])


def check_oldest_links(project: Project, links: list, notes: list[str] | None) -> list[check_core.LinkResult]:
    """The links of the oldest supported set, proven by blob against its venv (dispel.review.versions);
    without that venv, one line in ``notes`` says they are unproven, and none is counted."""
    oldest = oldest_set(project)[1]
    if not links or oldest is None:  # (the oldest set's links come only with its lock)
        return []
    env = oldest_venv.venv(HERE)
    proven = oldest_venv.check_links(links, oldest, oldest_venv.site_packages(env))
    if proven is None:
        if notes is not None:
            notes.append(versions_core.unproven_line(len(links), env, oldest_venv.VENV_ENV))
        return []
    return proven


def online_contents(links: list, lock: Lock, fetcher: fetch.Fetcher, raw_base: str) -> dict[tuple[str, str], bytes | str]:
    """(distribution, installed path) -> the bytes at the pinned ref on the raw-content host, or why not."""
    urls: dict[tuple[str, str], str] = {}
    for link in links:
        sl = parse_source_url(link.target)
        found = check_core.lock_file(lock, sl.repo, sl.ref, sl.path) if sl else None
        if sl and isinstance(found, tuple):
            pin_, fpin = found
            urls[(pin_.dist, fpin.installed)] = raw_url(raw_base, pin_.repo, sl.ref, fpin.path)
    got = fetch_all(fetcher, urls.values(), raw_base)
    return {key: got[url].data if got[url].data is not None else f"{url}: {got[url].error}" for key, url in urls.items()}


def check_integrity(project: Project, found: Mapping[str, Chain], traces: Mapping | None = None) -> list[str]:
    """Each chain is one story of its trace (dispel.check.integrity), one line per hop that is not
    proven: ``one story: <journey>: hop N (<func>, <edge>): why``."""
    traces = load_traces(project) if traces is None else traces
    out = []
    for name, chain in sorted(found.items()):
        trace, links = chains_core.scenario_trace(traces, chain.scenario)
        if trace is None:
            out.append(f"one story: {name}: the trace of scenario {chain.scenario!r} is missing, so the chain cannot be proven; "
                       f"run `dispel record {chain.scenario}`")
            continue
        out += [f"one story: {v}" for v in integrity.verdicts(chain, trace, links)]
    return out


def check_completeness(project: Project, found: Mapping[str, Chain], result: CheckResult | None = None) -> list[str]:
    """Every wire value a page shows has its maker (sent) or reader (received) on its chain
    (dispel.completeness, found from the trace): one line per value without; the figures go to
    ``result.completeness``."""
    per_page = completeness.site_findings(load_traces(project), found)
    if result is not None:
        result.completeness = completeness.figures_line(per_page)
    return completeness.problems([f for results in per_page.values() for f in results])


def check_annotations(
    project: Project, found: Mapping[str, Chain], notes: Mapping[str, annotation_files.Annotation] | None = None,
    sources: Mapping[Source, bytes] | None = None,
) -> list[str]:
    """Missing, orphaned (once every journey is recorded) and stale annotations, one line each.
    ``notes`` and ``sources`` are read here unless the caller has read them already."""
    notes = load_annotations(project) if notes is None else notes
    sources = hop_sources(found.values()) if sources is None else sources
    every_journey = catalog.JOURNEY_NAMES if set(catalog.JOURNEY_NAMES) <= set(found) else None
    problems = annotation_files.problems(found.values(), notes, sources, journeys=every_journey)
    typed = prose.typed_lines({key: a.text for key, a in notes.items()}, found)  # facts typed instead of filled
    shorts = handin.short_problems(found, {key: a.short for key, a in notes.items() if a.short}, sources)  # the hand-in's sentences
    return [f"annotation {p.kind}: {p.message}" for p in problems] + typed + shorts


def check_drift(
    project: Project, committed: Mapping[str, Chain], build: Callable[[dict], dict] | None = build_chains,
    notes: Mapping[str, annotation_files.Annotation] | None = None,
) -> tuple[list[str], list[str]]:
    """Regenerate chains (with ``build``, from the committed traces) and pages in a temp dir and
    compare them with the committed files. Returns (differences, possible reasons from the
    environment); ``build`` None renders the committed chains as they are."""
    traces = load_traces(project)
    problems: list[str] = []
    found = dict(committed)
    if build is not None and traces:
        try:
            found = build(traces)
        except DispelError as exc:
            return [f"drift: the chains cannot be regenerated from the traces: {exc}"], []
        fresh = chain_files(found, project.chains)
        foreign = {t.scenario for t in traces.values() if t.python != PYTHON_VERSION}
        for journey in sorted(set(committed) | set(found)):
            path = project.chains / f"{journey}.json"
            if path in fresh and path.is_file() and read_text(path, "chain file") == fresh[path]:
                continue
            old, new = committed.get(journey), found.get(journey)
            if foreign and old is not None and new is not None and old.scenario in foreign:
                # recorded on another Python: its standard-library line texts cannot be read here
                old, new = check_core.without_stdlib_lines(old), check_core.without_stdlib_lines(new)
                if old == new:
                    continue
            why = drift.diff_chains(journey, old, new) or ["the file's layout differs"]
            problems += [f"drift: traces/chains/{journey}.json: {d}" for d in why]
        if foreign:
            # the pages quote the standard library of the Python that recorded the traces
            return problems, []
    notes = load_annotations(project) if notes is None else notes
    with tempfile.TemporaryDirectory(prefix="dispel-check-") as tmp:
        out, chain_dir = Path(tmp) / "docs", Path(tmp) / "chains"
        if project.annotations.is_dir():
            shutil.copytree(project.annotations, out / "annotations")
        chain_dir.mkdir()
        for path, text in chain_files(found, chain_dir).items():
            path.write_text(text, encoding="utf-8")
        try:
            build_site(project, chain_dir, out)
        except DispelError as exc:
            return problems + [f"drift: the pages cannot be regenerated: {exc}"], []
        texts = {k: a.text for k, a in notes.items()}
        for rel, path in docs_files(out).items():
            if rel.startswith("annotations/"):
                continue
            mine = project.docs / rel
            if not mine.is_file():
                problems.append(f"drift: docs/{rel} is generated but not committed")
                continue
            chain = found.get(rel.removeprefix("chains/").removesuffix(".md")) if rel.startswith("chains/") else None
            problems += [f"drift: docs/{d}" for d in drift.diff_page(rel, read_text(mine, "page"), read_text(path, "page"), chain, texts)]
    installed = {}
    for dist in {d for t in traces.values() for d, _ in t.versions}:
        try:
            installed[dist] = chromium_version() if dist == "chromium" else metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    why = drift.environment_reasons({s: (t.python, t.versions) for s, t in traces.items()}, PYTHON_VERSION, installed)
    return problems, why


def rerecordable() -> tuple[tuple[str, ...], str | None]:
    """The default scenarios this machine can record, and why the others cannot (None: all can)."""
    why = unavailable()
    names = tuple(n for n in catalog.DEFAULT_SCENARIOS if not (why and catalog.scenario(n).client == "browser"))
    return names, (f"the browser scenario is not re-recorded: {why}" if why else None)


def check_rerecord(project: Project, timeout: float = 120.0, names: Iterable[str] | None = None) -> tuple[list[str], list[str]]:
    """Record scenarios again, side by side (default: every default one), and compare each
    trace with traces/<trace>.json (a scenario of several processes has one per process);
    a differing recording is kept. A scenario that differs is recorded once more, alone: on
    a loaded machine the recordings side by side can reach a race the scenario does not
    pin down, and that is said as a note when the second recording matches. (problems, notes)."""
    problems: list[str] = []
    notes: list[str] = []
    keep = Path(tempfile.mkdtemp(prefix="dispel-rerecord-"))
    names = list(catalog.DEFAULT_SCENARIOS if names is None else names)
    runs = record_in_new_interpreters(project, names, keep, timeout, capture=True)
    for name in names:
        proc = runs[name]
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            problems.append(f"re-record: recording {name!r} failed: {tail}")
            continue
        drift = _scenario_drift(project, keep, name, notes)
        if drift:
            again = keep / f"again-{name}"
            again.mkdir()
            proc = record_in_new_interpreters(project, [name], again, timeout, capture=True)[name]
            if proc.returncode == 0 and not _scenario_drift(project, again, name):
                notes.append(f"re-record: {name!r} differed when recorded beside the others ({drift[0].split(': ', 1)[-1]}); "
                             f"recorded again alone, it matched")
                continue
            problems += drift
    if not problems:
        shutil.rmtree(keep, ignore_errors=True)
    return problems, notes


def _scenario_drift(project: Project, keep: Path, name: str, notes: list[str] | None = None) -> list[str]:
    """How a fresh recording of scenario ``name`` in ``keep`` differs from the committed traces
    (a browser update, or the writer's polls taking the same packets in other batches, is no
    difference: it is said in ``notes``)."""
    sc = catalog.PROCESS_SCENARIOS.get(name)
    return [d for stem in (sc.trace_names() if sc else (name,)) for d in _rerecord_drift(project, keep, stem, notes)]


def _rerecord_drift(project: Project, keep: Path, name: str, notes: list[str] | None = None) -> list[str]:
    """How <keep>/<name>.json, a fresh recording, differs from traces/<name>.json."""
    fresh = read_text(keep / f"{name}.json", "trace file")
    committed = project.traces / f"{name}.json"
    old = read_text(committed, "trace file") if committed.is_file() else ""
    fresh, update = drift.browser_update(old, fresh)
    if update and notes is not None and (msg := f"re-record: traces/{name}.json {update}") not in notes:
        notes.append(msg)
    fresh, batches = drift.writer_batches(old, fresh)
    if batches and notes is not None:
        notes.append(f"re-record: traces/{name}.json: {batches}")
    if fresh == old:
        return []
    return [
        f"re-record: traces/{name}.json differs from a fresh recording: {d} (the new one is {keep / (name + '.json')})"
        for d in drift.trace_drift(old, fresh)
    ]
