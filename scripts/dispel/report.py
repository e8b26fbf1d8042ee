"""`dispel report`: a scenario file -> a report on the user's own app, built into a folder of its own.

The stages of the project, over a Project rooted at a temporary folder next to ``--out``:
record (in a child interpreter, in the user's working directory), derived chains
(dispel.chains.derive), pins (the project's lock, re-pinned incrementally: only versions it does not
pin need ``--git-dir`` mirrors or the network), pages (dispel.render.pages, with the libraries'
annotations and generated texts for the app, dispel.render.app_notes) and the MkDocs site. Only when
everything is built is the folder renamed to ``--out``: a failed run leaves nothing half-written,
and the project's own traces/ and docs/ are only read.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .chains import derive, derive_finders
from .chains.stage import chain_files
from .check import completeness, fetch, prose
from .check.stage import CheckResult, check_completeness, check_integrity, check_proofs
from .model import Chain, DispelError, TraceFile, normalize_dist, text_lines
from .pins import pinning as pins
from .pins.installed import (
    dependency_facts,
    hop_sources,
    license_rows,
    lines_by_source,
)
from .pins.stage import pin
from .project import (
    SCRIPTS,
    Project,
    dump_json,
    load_annotations,
    load_chains,
    load_lock,
    load_traces,
    read_text,
    swap_folder,
    write_all_atomic,
    write_atomic,
)
from .record.stage import checked_redact
from .render import aids, annotation_files, app_notes, markup
from .render import pages as render
from .render.stage import hop_linker
from .report_pages import (
    COMMAND,
    build_chains,
    checked_page,
    committed_lock,
    fillable,
    mkdocs_config,
    reading_guide,
    render_index,
    report_dists,
    report_journey_page,
    unannotated,
    versions_section,
)
from .run import live_session, scenario_file

MARKER = ".dispel-report"  # in a folder dispel report built (it may replace only such a folder)
APP_FOLDER = "app"  # the app's traced files as they ran, kept with the report (its pages and check read them)
SITE_EPOCH = "0"  # SOURCE_DATE_EPOCH for mkdocs: the sitemap's dates do not change between builds


@dataclass(frozen=True)
class Report:
    """What `dispel report` built: its folder, the journeys (name, hops, threads), what it left out and why."""

    out: Path
    journeys: tuple[tuple[str, int, int], ...]
    skipped: tuple[str, ...]
    unannotated: tuple[str, ...]
    raised: tuple[str, ...] = ()  # what the app raised, as the run printed it, and which journey shows it
    said: tuple[str, ...] = ()  # what the recording said (the app's root, threads still running at the end)
    completeness: str = ""  # how many of the pages' wire values have their maker or reader on the chain


def console_lines(done: Report, no_site: bool) -> list[str]:
    """What `dispel report` prints about what it built, a line each."""
    out = list(done.said)
    out += [f"journey {name}: {hops} hops on {threads} thread{'s' * (threads != 1)}" for name, hops, threads in done.journeys]
    out += [f"not derived: {line}" for line in done.skipped]
    out += [f"the app raised: {line}" for line in done.raised]
    if done.unannotated:
        out.append(f"not annotated: {len(done.unannotated)} functions (listed on the report's home page)")
    if done.completeness:
        out.append(done.completeness)
    out.append(f"report -> {done.out}" + ("" if no_site else f" (site: {done.out / 'site'})"))
    return out


RUNNING = "still running when the scenario ended (cut there): "


def running_line(running) -> str:
    """The console's line for the threads still running at the end (normalize.Running): each
    with the function it was in and, for a loop, how many turns it made (pages leave counts out)."""
    alike: dict[tuple[str, str], list] = {}  # threads that did the same are folded into one name
    for r in running:
        alike.setdefault((r.thread, r.task), []).append(r)

    def one(rs: list) -> str:
        r = rs[0]
        turns = f", {max(x.iterations for x in rs)} iterations" if max(x.iterations for x in rs) > 1 else ""
        folded = f", {len(rs)} threads alike, shown as one" if len(rs) > 1 else ""
        return f"{r.thread} ({r.task}{turns}{folded})"

    return RUNNING + ", ".join(one(rs) for rs in alike.values())


def unfinished(trace: TraceFile) -> list[tuple[str, str]]:
    """(thread, function) of each thread still running when the recording was cut: its first
    event never returned; the function is its outermost unfinished call of the app's code, else
    the one its run() was in."""
    out = []
    for t in trace.threads[1:]:
        e = trace.events[t.root]
        if e.ret is not None or e.raised:
            continue
        path = [e]
        while True:
            kids = [x for x in trace.events[path[-1].index + 1:path[-1].end + 1] if x.parent == path[-1].index]
            if not kids or kids[-1].ret is not None or kids[-1].raised:
                break
            path.append(kids[-1])
        task = next((x for x in path if trace.funcs[x.func].source.dist == derive_finders.APP_DIST), path[min(1, len(path) - 1)])
        out.append((t.name, task.func))
    return out


def _record(scenario: Path, traces: Path, timeout: float | None, root: Path | None = None,
            redact: Iterable[str] = ()) -> tuple[list[str], str]:
    """`dispel record --scenario` in a fresh interpreter in the working directory: the app is
    imported there with that folder (and the scenario's) on sys.path. Returns the lines it
    said for the console (SAID_PREFIXES)."""
    argv = [sys.executable, "-m", "dispel", "record", "--scenario", str(scenario), "--out", str(traces)]
    argv += [a for pattern in redact for a in ("--redact", pattern)]
    if timeout:
        argv += ["--timeout-file", str(timeout)]
    if root is not None:
        argv += ["--root", str(root)]
    proc = subprocess.run(argv, cwd=os.getcwd(), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        said = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        error = next((ln for ln in reversed(said) if ln.startswith("dispel: error: ")), said[-1] if said else "no message")
        raise DispelError(error.removeprefix("dispel: error: "))
    return [ln for ln in proc.stdout.splitlines() if ln.startswith(SAID_PREFIXES)], proc.stderr


SAID_PREFIXES = (RUNNING, "app: ", "error in the app: ")
STOPPED = "stopped ("  # the live recording child's line once it stopped recording (dispel.run.live)
SERVER_BANNER = (" * Serving Flask app", " * Debug mode", "WARNING: This is a development server", " * Running on")


def shown_in(line: str, built: Mapping[str, Chain], sites: Sequence[tuple[str, int, str]]) -> tuple[str, tuple | None]:
    """An ``error in the app:`` line with the journey that shows where it was raised
    (derive.shown_by), and the raise site of the trace it names (derive.raised_sites); other lines as they are."""
    m = re.search(r"\(raised at ([^:]+):(\d+) in ([^)]+)\)$", line)
    if not line.startswith("error in the app: ") or not m:
        return line, None
    name, number, func = m.group(1), int(m.group(2)), m.group(3)
    site = next((s for s in sites if s[0].rsplit("/", 1)[-1] == name and s[1] == number and s[2].split(".")[-1] == func), None)
    shown = derive.shown_by(built, site) if site else None
    return (f"{line}; shown by journey {shown}" if shown else f"{line}; no journey shows it"), site


def app_root(trace: TraceFile, folders: Sequence[Path]) -> Path | None:
    """The folder the app's files (trace paths) are found in: the first of ``folders`` holding them all,
    else the folder dispel is installed in, where the sample app's paths start (``dispel/sample_app/app.py``:
    its scenario files run from any folder, in a checkout or installed)."""
    paths = {f.source.path for f in trace.funcs.values() if f.source.dist == derive_finders.APP_DIST}
    for folder in (*folders, SCRIPTS):
        if paths and all((folder / p).is_file() for p in paths):
            return folder
    return None


SCENARIO_COPY = "scenario.toml"  # the scenario file, kept with the report (its home page shows it)
LIVE_COPY = "live-session.json"  # a live recording's observations (live_session), kept with its report


def _checked_out(out: Path, project: Project) -> Path:
    out = out.resolve()
    if out.exists() and not (out / MARKER).is_file() and (not out.is_dir() or any(out.iterdir())):
        raise DispelError(f"--out {out} exists and is not a report dispel built; choose another folder or remove it")
    for inside in (project.traces, project.docs):
        if out == inside or out.is_relative_to(inside):
            raise DispelError(f"--out {out} is inside the project's {inside.name}/; choose a folder of its own")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def report(scenario: Path | None, out: Path, project: Project, git_dirs: Iterable[str] = (), timeout: float | None = None, site: bool = True,
           redact: Iterable[str] = (), root: Path | None = None) -> Report:
    """Build the report of ``scenario`` into ``out`` (replacing a report built there before);
    ``redact``: regexes whose matches the trace hides (`--redact`); ``root``: the project root,
    whose every module is the app's (default: the scenario's folder)."""
    if scenario is None:
        raise DispelError("give the scenario: --scenario FILE (or --live --app MODULE:ATTR to record while you use the app)")
    redact = checked_redact(redact)
    text = read_text(scenario, "scenario file")
    scenario_file.one_app(scenario_file.parse(text, scenario.name))  # a bad file fails before anything runs
    scenario = scenario.resolve()
    root = root.resolve() if root is not None else None
    if root is not None and not root.is_dir():
        raise DispelError(f"--root {root} is not a folder; name the folder that holds the app's code")
    out = _checked_out(out, project)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        rp = Project(tmp)
        said, stderr = _record(scenario, rp.traces, timeout, root, redact)
        trace = load_traces(rp)[scenario.stem]
        root = app_root(trace, [root or scenario.parent, Path.cwd()])
        seed = committed_lock(project, report_dists(trace))
        if seed is not None:
            write_atomic(rp.lock, dump_json(pins.lock_to_json(seed)))
        done = _build(rp, project, text, scenario.name, trace, root, git_dirs, site)
        sites = derive.raised_sites(trace)
        named = [shown_in(line, done[3], sites) for line in said]
        said = [line for line, _ in named]
        swap_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # an exception the run's own line names (with its step) is not said again from its traceback
    raised = raised_lines(stderr, trace, done[3], {site for _, site in named if site})
    return Report(out, *done[:3], raised=tuple(raised), said=tuple(said), completeness=completed(trace, done[3]))


def completed(trace: TraceFile, built: Mapping[str, Chain]) -> str:
    """The line that says how many of the pages' wire values have their maker or reader on the chain."""
    return completeness.figures_line({name: completeness.findings(trace, chain, name) for name, chain in built.items()})


def raised_lines(stderr: str, trace: TraceFile, built: Mapping[str, Chain], said: set | frozenset = frozenset()) -> list[str]:
    """``Type: message (path:line, in func): journey X shows it`` for each exception the app's
    code raised that the run printed (the thread's traceback), or that a recorded frame caught
    (what the trace tells); where no journey shows it, says so. Sites in ``said`` are left out."""
    out = []
    sites = [s for s in derive.raised_sites(trace) if s not in said]
    printed = set()
    for message, file, line, func in app_notes.exceptions(stderr):
        site = next((s for s in sites if file.endswith("/" + s[0]) and s[1] == line and s[2].endswith(func)), None)
        if site is None:
            continue  # not the app's own code (a library's exception the app did not raise)
        printed.add(site)
        shown = derive.shown_by(built, site)
        out.append(f"{message} ({site[0]}:{line}, in {site[2]}): " + (f"journey {shown} shows it" if shown else "no journey shows it"))
    for site in sites:  # caught without a traceback (an error handler): what the trace tells
        how = derive.caught_by(trace, site) if site not in printed else None
        if how:
            shown = derive.shown_by(built, site)
            out.append(f"{how} ({site[0]}:{site[1]}, in {site[2]}; its message is not in the trace): "
                       + (f"journey {shown} shows it" if shown else "no journey shows it"))
    return out


def rerender(out: Path, project: Project, git_dirs: Iterable[str] = (), site: bool = True) -> Report:
    """`dispel render --report DIR`: a report's chains, pages and site again from its own trace,
    scenario, app files and lock (after the annotations changed, say), without running the app."""
    out = out.resolve()
    if not is_report(out):
        raise DispelError(f"--report {out} is not a folder `dispel report` built")
    copy = Project(out)
    text = read_text(out / SCENARIO_COPY, "the report's scenario file")
    traces = load_traces(copy)
    if len(traces) != 1:
        raise DispelError(f"--report {out}: expected one trace in traces/, found {len(traces)}; rebuild it with `dispel report`")
    (name, trace), = traces.items()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        rp = Project(tmp)
        rp.traces.mkdir(parents=True)
        shutil.copyfile(copy.traces / f"{name}.json", rp.traces / f"{name}.json")
        shutil.copyfile(copy.lock, rp.lock)
        shutil.copytree(out / APP_FOLDER, tmp / APP_FOLDER)
        live = json.loads(read_text(out / LIVE_COPY, "the live session")) if (out / LIVE_COPY).is_file() else None
        done = _build(rp, project, text, f"{name}.toml", trace, tmp / APP_FOLDER, git_dirs, site, live)
        swap_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Report(out, *done[:3], completeness=completed(trace, done[3]))


def _build(rp: Project, project: Project, text: str, source: str, trace: TraceFile, root: Path | None, git_dirs: Iterable[str], site: bool,
           live: Sequence[Mapping] | None = None) -> tuple[tuple[tuple[str, int, int], ...], tuple[str, ...], tuple[str, ...], dict[str, Chain]]:
    """Everything after the recording, into ``rp`` (a temporary folder): chains, pins, pages, site.
    Returns (journeys, skipped, unannotated) for a Report."""
    sf = scenario_file.parse(text, source)
    tmp = rp.root
    lines = lines_by_source({trace.scenario: trace}, root)
    derived, built, skipped = build_chains(trace, lines)
    if not built:
        raise DispelError(f"no journey could be derived from the trace of {'the live recording' if live is not None else source}: {'; '.join(skipped) or 'nothing happened'}")
    write_all_atomic(chain_files(built, rp.chains))
    pin(rp, dists=report_dists(trace), git_dirs=git_dirs)
    lock = load_lock(rp.lock)
    texts = app_notes.library_texts(annotation_files.texts(load_annotations(project)))
    texts.update(app_notes.app_texts(trace, built, lines))
    texts.update(app_notes.summaries(derived, built))
    sources = hop_sources(built.values(), root)
    excerpts = {
        src: text_lines(data)
        for src, data in sources.items()
    }
    per_journey, dropped = {}, []
    for name, chain in built.items():
        per_journey[name], left_out = fillable(chain, texts)
        dropped += left_out
    missing = unannotated(built.values(), per_journey) + [f"left out: {d}" for d in dropped]
    header = markup.generated_header(COMMAND)
    files: dict[Path, str] = {}
    prose_lines = {src: text_lines(data) for src, data in sources.items()}
    for name, chain in built.items():
        page, left_out = checked_page(chain, per_journey[name], lambda t, c=chain: report_journey_page(c, hop_linker(lock), excerpts, t, built), prose_lines)
        missing += [f"left out: {d}" for d in left_out]
        files[rp.docs / "chains" / f"{name}.md"] = header + page.split("\n", 1)[1]
    app_files = sorted({(f.source.path, (root / f.source.path).read_text(encoding="utf-8")) for f in trace.funcs.values()
                        if f.source.dist == derive_finders.APP_DIST and root is not None})
    files[rp.docs / "sample_app.md"] = render.render_sample_app(
        app_files, "The app's source", f"The app {markup.inline_code(scenario_file.app_spec(sf).target)} that the journeys trace, exactly as it ran.", COMMAND)
    rows = license_rows(built.values(), lock)
    traced = sorted({normalize_dist(h.func.source.dist) for c in built.values() for h in c.hops} - {"builtin", derive_finders.APP_DIST, "python"})
    files[rp.docs / "licensing.md"] = (header + render.render_licensing(rows).split("\n", 1)[1] + "\n" + aids.license_files_section(rows)
                                       + "\n" + aids.dependency_tree(dependency_facts(traced), traced))
    guide = reading_guide(read_text(project.docs / "index.md", "the project's index page"))
    guide = guide.replace(f'--8<-- "{aids.EDGES_SNIPPET}"', aids.edge_table().rstrip("\n"))  # the report has no snippets
    facts = aids.thread_facts({trace.scenario: trace})
    files[rp.docs / aids.GLOSSARY_PAGE] = header + aids.glossary_page(facts).split("\n", 1)[1]
    files[rp.docs / aids.THREADS_PAGE] = header + aids.threads_page(facts, list(built.values())).split("\n", 1)[1]
    files[rp.docs / "index.md"] = render_index(sf, text, derived, built, skipped, missing, guide, trace, unfinished(trace),
        None if live is None else live_session.home_lines(live_session.session(live))) + "\n" + versions_section(lock)
    files[rp.docs / "stylesheets" / "dispel.css"] = read_text(project.docs / "stylesheets" / "dispel.css", "the site's stylesheet")
    files[tmp / "mkdocs.yml"] = mkdocs_config(read_text(project.root / "mkdocs.yml", "mkdocs.yml"), sf.title or scenario_file.app_spec(sf).target, list(built))
    files.update({tmp / APP_FOLDER / path: body for path, body in app_files})
    files[tmp / SCENARIO_COPY] = text
    if live is not None:
        files[tmp / LIVE_COPY] = json.dumps(list(live), indent=1, sort_keys=True) + "\n"
    files[tmp / MARKER] = "A report built by `dispel report`; it may replace this folder.\n"
    write_all_atomic(files)
    if site:
        _mkdocs(tmp)
    hops = tuple((n, len(c.hops), len(render.lifelines(c))) for n, c in built.items())
    return hops, tuple(skipped), tuple(missing), built


def _mkdocs(root: Path) -> None:
    env = {**os.environ, "SOURCE_DATE_EPOCH": SITE_EPOCH}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--quiet", "--strict", "-f", str(root / "mkdocs.yml"), "-d", str(root / "site")],
        cwd=root, capture_output=True, text=True, env=env, check=False,
    )
    if proc.returncode != 0:
        said = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        raise DispelError(f"mkdocs could not build the report's site: {said[-1] if said else 'no message'}")


def is_report(root: Path) -> bool:
    return (root / MARKER).is_file()


def check(root: Path, fetcher: fetch.Fetcher | None = None, raw_base: str = "") -> CheckResult:
    """`dispel check --root DIR` on a report: installed files against its lock, every internal link
    and permalink of its pages, and what its pages say against its chains. (Its annotations are
    generated, and it is regenerated by `dispel report`, not compared with a re-recording.)"""
    project = Project(root)
    result = CheckResult()
    lock = load_lock(project.lock)
    found = load_chains(project)
    check_proofs(project, lock, found, result, fetcher, raw_base)
    clock = time.perf_counter()
    pages = {j: read_text(p, "page") for j in found if (p := project.docs / "chains" / f"{j}.md").is_file()}
    result.failures += [f"{j}: page missing" for j in found if j not in pages]
    result.failures += prose.check_site(pages, found, hop_sources(found.values(), root / APP_FOLDER))
    result.timings["pages"] = time.perf_counter() - clock
    clock = time.perf_counter()
    result.failures += check_integrity(project, found)  # each chain is one story of the report's trace
    result.timings["integrity"] = time.perf_counter() - clock
    clock = time.perf_counter()
    result.failures += check_completeness(project, found, result)  # every wire value has its maker or reader
    result.timings["completeness"] = time.perf_counter() - clock
    clock = time.perf_counter()
    result.failures += derived_again(project, found, root / APP_FOLDER)
    result.timings["chains"] = time.perf_counter() - clock
    return result


def derived_again(project: Project, found: Mapping[str, Chain], app: Path) -> list[str]:
    """The report's chains against the chains derived again from its trace. A report compares
    chains and pages, not the trace: an app whose thread was still running at the end (a
    ``while True`` task) records more or fewer turns from run to run, the same chains."""
    traces = load_traces(project)
    if len(traces) != 1:
        return [f"traces/: expected the report's one trace, found {len(traces)}; rebuild it with `dispel report`"]
    (trace,) = traces.values()
    _, built, _ = build_chains(trace, lines_by_source({trace.scenario: trace}, app))
    out = []
    for j in sorted(set(built) | set(found)):
        if j not in found:
            out.append(f"{j}: derived from the report's trace, but it has no chain file; rebuild with `dispel render --report`")
        elif j not in built:
            out.append(f"{j}: its chain is not derived from the report's trace; rebuild with `dispel render --report`")
        elif built[j] != found[j]:
            out.append(f"{j}: its chain differs from the one derived from the report's trace; rebuild with `dispel render --report`")
    return out


def live_report(app: str, out: Path, project: Project, git_dirs: Iterable[str] = (), site: bool = True, redact: Iterable[str] = (),
                root: Path | None = None, port: int | None = None, host: str = "127.0.0.1", duration: float | None = None,
                factory: bool = False, flask: str = "", save_scenario: Path | None = None, live: bool = True,
                scenario: Path | None = None, async_mode: str = "") -> Report:
    """`dispel report --live`: the recording child (dispel.run.live.record_live) serves the app until
    the first Ctrl-C (forwarded to it) or ``duration``; then the report is built as for a scenario
    file, from the trace and a scenario written from what the clients did (live_session), which
    ``save_scenario`` also keeps. A second Ctrl-C, or any failure, leaves nothing behind."""
    from .run.live import child_settings, live_mode, parse_target

    if not live:
        raise DispelError("--app, --save-scenario, --duration and --async-mode go with --live; add --live to record while you use the app")
    if scenario is not None:
        raise DispelError("give --live --app MODULE:ATTR or --scenario FILE, not both")
    if not app:
        raise DispelError("--live needs the app: --app MODULE:ATTR (its SocketIO object, Flask app or, with --factory, a factory)")
    redact = checked_redact(redact)
    spec = parse_target(app, factory, flask)
    root = root.resolve() if root is not None else None
    if root is not None and not root.is_dir():
        raise DispelError(f"--root {root} is not a folder; name the folder that holds the app's code")
    if duration is not None and duration <= 0:
        raise DispelError(f"--duration {duration:g} is not a number of seconds above 0")
    if save_scenario is not None and save_scenario.resolve().is_dir():
        raise DispelError(f"--save-scenario {save_scenario} is a folder; name a file, like session.toml")
    out = _checked_out(out, project)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        rp = Project(tmp)
        session_file = tmp / ".live-observations.json"
        settings = child_settings(spec.target, session_file, factory, flask, host, duration)
        mode = live_mode(settings, root, async_mode)
        argv = [sys.executable, "-m", "dispel", "record", "--out", str(rp.traces), "--live", settings]
        argv += [a for pattern in redact for a in ("--redact", pattern)]
        argv += ["--port", str(port)] if port else []
        argv += ["--root", str(root)] if root else []
        said = _record_live(argv, tmp / ".live-stderr", gevent=mode == "gevent")
        observations = json.loads(read_text(session_file, "the live session"))
        stderr = (tmp / ".live-stderr").read_text(errors="replace")
        session_file.unlink()
        (tmp / ".live-stderr").unlink()
        trace = load_traces(rp)["live"]
        root = app_root(trace, [root or Path.cwd()])
        text, left = live_session.scenario_text(live_session.session(observations), spec.target, factory, flask, async_mode=async_mode)
        said += [f"not in the saved scenario: {line}" for line in left]
        seed = committed_lock(project, report_dists(trace))
        if seed is not None:
            write_atomic(rp.lock, dump_json(pins.lock_to_json(seed)))
        done = _build(rp, project, text, "live.toml", trace, root, git_dirs, site, observations)
        sites = derive.raised_sites(trace)
        said = [shown_in(line, done[3], sites)[0] for line in said]
        if save_scenario is not None:
            write_atomic(save_scenario, text)
            said.append(f"scenario -> {save_scenario} (replay: dispel report --scenario {save_scenario} --out DIR)")
        swap_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Report(out, *done[:3], raised=tuple(raised_lines(stderr, trace, done[3])), said=tuple(said))


def _record_live(argv: list[str], stderr_path: Path, gevent: bool = False) -> list[str]:
    """Run the live recording child, its console passed through as it happens; the first Ctrl-C
    here is forwarded to it (it stops recording and writes its trace), a second one stops this
    run (KeyboardInterrupt: the caller removes what it wrote). Returns the lines it said for the
    console after it stopped (SAID_PREFIXES); its error, as a DispelError."""
    with open(stderr_path, "w") as err:
        env = {k: v for k, v in os.environ.items() if k != "DISPEL_GEVENT"} | ({"DISPEL_GEVENT": "1"} if gevent else {})
        proc = subprocess.Popen(argv, cwd=os.getcwd(), env=env, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1,
                                start_new_session=True)  # a terminal's Ctrl-C reaches only this process, which forwards it
        stopped: list[int] = []  # the child said it stopped recording: a Ctrl-C from now on stops this run

        def on_sigint(signum, frame) -> None:
            if not stopped and proc.poll() is None:
                stopped.append(signum)
                proc.send_signal(signal.SIGINT)
                return
            raise KeyboardInterrupt

        old = signal.signal(signal.SIGINT, on_sigint)
        said: list[str] = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                if line.startswith(STOPPED):
                    stopped.append(0)
                if line.startswith(SERVER_BANNER):
                    continue  # werkzeug's and Flask's start-up lines: the URL line says where it serves
                if line.startswith(SAID_PREFIXES) or line.startswith("redacted "):
                    said.append(line) if not line.startswith("redacted ") else print(line, flush=True)
                else:
                    print(line, flush=True)
            proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            signal.signal(signal.SIGINT, old)
    if proc.returncode != 0:
        lines = [ln for ln in stderr_path.read_text(errors="replace").splitlines() if ln.strip()]
        error = next((ln for ln in reversed(lines) if ln.startswith("dispel: error: ")), lines[-1] if lines else "no message")
        raise DispelError(error.removeprefix("dispel: error: "))
    return said
