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

import yaml

from . import catalog
from .chains import build as chains_core
from .chains import derive, derive_finders, fold
from .chains.graph import JourneyError
from .chains.stage import chain_files
from .check import completeness, fetch, integrity, prose
from .check.stage import CheckResult, check_completeness, check_integrity, check_proofs
from .model import Chain, DispelError, Lock, TraceFile, normalize_dist, text_lines
from .pins import pinning as pins
from .pins.forges import repo_url
from .pins.installed import (
    dependency_facts,
    distributions,
    hop_sources,
    license_rows,
    lines_by_source,
)
from .pins.stage import pin
from .project import (
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
from .run import live_session, scenario_file, scenario_values

MARKER = ".dispel-report"
APP_FOLDER = "app"  # the app's traced files as they ran, kept with the report (its pages and check read them)  # in a folder dispel report built (it may replace only such a folder)
COMMAND = "dispel report"
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
    out += [f"journey {name}: {hops} hops on {threads} threads" for name, hops, threads in done.journeys]
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
    """The folder the app's files (trace paths) are found in: the first of ``folders`` holding them all."""
    paths = {f.source.path for f in trace.funcs.values() if f.source.dist == derive_finders.APP_DIST}
    for folder in folders:
        if paths and all((folder / p).is_file() for p in paths):
            return folder
    return None


def build_chains(trace: TraceFile, lines: Mapping) -> tuple[list[derive.Derived], dict[str, Chain], list[str]]:
    """The derived journeys and their chains; a journey that cannot be followed is left out, with why."""
    found, notes = derive.derive_all(trace)
    built: dict[str, Chain] = {}
    skipped = []
    for d in found:
        at = f" ({d.site})" if d.site else ""
        try:
            chain = chains_core.build(trace, d.journey, lines, d.find)
        except JourneyError as exc:
            skipped.append(f"{d.journey.name}{at}: {exc}")
            continue
        broken = integrity.verdicts(chain, trace)  # a chain that is not one story is not shown
        if broken:
            skipped.append(f"{d.journey.name}{at}: its chain is not one story: {broken[0]}")
            continue
        built[d.journey.name] = chain
    skipped += notes + derive.unshown(trace, built)
    return [d for d in found if d.journey.name in built], built, skipped


def fillable(chain: Chain, texts: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The texts that fill on ``chain``: a general text whose placeholder names what this app's
    journey does not have (a hop that is not there) is left out for it, with why."""
    mine = dict(texts)
    dropped = []
    for i, hop in enumerate(chain.hops):
        while True:
            try:
                render.hop_annotation(chain, i, mine)
                break
            except DispelError as exc:
                chosen = annotation_files.select(mine, hop.func.key, chain.journey, hop.line)
                assert chosen is not None  # only a text that was chosen can fail to fill
                key = chosen[0]
                dropped.append(f"{key} on {chain.journey}: {exc}")
                del mine[key]
    return mine, dropped


def checked_page(chain: Chain, texts: dict[str, str], render_page, lines: Mapping) -> tuple[str, list[str]]:
    """The page of ``chain`` with only texts whose sentences hold on it (dispel.check.prose): a general
    text written for the sample's journeys that names what this journey does not have is left
    out for it, with why. ``render_page(texts)`` renders the page."""
    texts = dict(texts)
    left_out: list[str] = []
    returns = {e.number: e.numbers for e in fold.entries(chain)}  # a page's hop number -> the chain positions it shows
    for _ in range(len(chain.hops) + 1):
        page = render_page(texts)
        problems = prose.check_page(f"docs/chains/{chain.journey}.md", page, chain, lines)
        if not problems:
            return page, left_out
        for p in problems:
            for n in returns.get(p.hop, ()) if p.hop else ():
                hop = chain.hops[n - 1]
                found = annotation_files.select(texts, hop.func.key, chain.journey, hop.line)
                if found:
                    left_out.append(f"{found[0]} on {chain.journey}: {p.why}")
                    del texts[found[0]]
                    break
            else:
                raise DispelError(f"the page of {chain.journey} says what its chain does not: {p.line}")
    raise DispelError(f"the page of {chain.journey} could not be made true to its chain")


def unannotated(chains: Iterable[Chain], texts: Mapping[str, Mapping[str, str]]) -> list[str]:
    """``module:qualname (journey#hop, ...)`` for every function no text covers (``texts`` per journey)."""
    where: dict[str, list[str]] = {}
    for c in chains:
        for i, hop in enumerate(c.hops, 1):
            if annotation_files.select(texts[c.journey], hop.func.key, c.journey, hop.line) is None:
                where.setdefault(hop.func.key, []).append(f"{c.journey}#{i}")
    return [f"{k} ({', '.join(v[:3])}{', …' if len(v) > 3 else ''})" for k, v in sorted(where.items())]


def report_dists(trace: TraceFile) -> list[str]:
    """The distributions a report pins: the traced libraries, and a queue's (redis) only when the
    app's trace ran its code, so that a report needs no extra it does not trace."""
    ran = {f.source.dist for f in trace.funcs.values()}
    return sorted({*catalog.DIST_NAMES, *(d.name for d in catalog.QUEUE_DISTS if d.name in ran)})


def committed_lock(project: Project, names: Iterable[str]) -> Lock | None:
    """The lock a report starts pinning from: per distribution, the first entry of the committed
    locks (dispel.project.Project.locks: the project's, then the oldest supported set's) at the
    installed version. `dispel pin` keeps an entry whose installed blobs match without git or the
    network; only a version no committed lock pins needs ``--git-dir`` or the network."""
    locks = [load_lock(p) for p in project.locks]
    if not locks:
        return None
    installed = {name: d.version for name, d in distributions(names).items()}
    chosen = []
    for name in sorted(installed):
        found = next((p for lock in locks for p in lock.dists if p.dist == name and p.version == installed[name]), None)
        if found is not None:
            chosen.append(found)
    return Lock(locks[0].python, tuple(chosen))


def versions_section(lock: Lock) -> str:
    """The versions the report traced, each with the commit its links are pinned to (from its lock)."""
    out = ["## The versions traced { #versions }\n",
           ("The app ran on these versions; every link of the journeys points into the commit of the installed version's tag, "
           "proven by the installed files' git blobs.\n"),
           "| Library | Version | Pinned to |", "|---|---|---|"]
    for p in sorted(lock.dists, key=lambda p: p.dist):
        ref = p.commit or p.tag
        out.append(f"| {p.dist} | {p.version} | [{p.repo} {p.tag} ({ref[:12]})](<{repo_url(p.forge, p.repo, ref)}>) |")
    out.append(f"| Python | {lock.python.version} | {lock.python.repo} {lock.python.tag} |")
    return "\n".join(out) + "\n"


def _journey_page(chain: Chain, links, excerpts, texts: Mapping[str, str], built: Mapping[str, Chain]) -> str:
    """A journey's page with the reader's aids (dispel.aids): the layer table and the chain to copy."""
    view = render.journey_page(chain, links, excerpts, texts, built)
    return aids.with_journey_aids(render.emit_journey(view), view)


def _reading_guide(project_index: str) -> str:
    """The project's "How to read a chain" section, without its paragraph about the sample's scenarios."""
    m = re.search(r"^## How to read a chain.*?(?=^## |\Z)", project_index, re.DOTALL | re.MULTILINE)
    text = m.group(0) if m else "## How to read a chain { #how-to-read-a-chain }\n"
    return re.sub(r"\*\*The summary\*\*.*?\n\n", "", text, count=1, flags=re.DOTALL)


def render_index(sf: scenario_values.ScenarioFile, scenario_text: str, derived: Sequence[derive.Derived], built: Mapping[str, Chain],
                 skipped: Sequence[str], missing: Sequence[str], guide: str, trace: TraceFile | None = None,
                 running: Sequence[tuple[str, str]] = (), live: Sequence[str] | None = None) -> str:
    """The report's home page; ``live``: what the clients of a live recording did (live_session.home_lines)."""
    app = scenario_file.app_spec(sf)
    title = sf.title or f"{app.target}, traced"
    who = ("its own clients (a live recording: `dispel report --live`) talked to it" if live is not None else
           f"the clients of the scenario file {markup.inline_code(sf.source)} talked to it")
    out = [markup.generated_header(COMMAND), f"# {markup.md_text(title)}\n",
           (f"dispel ran {markup.inline_code(app.target)} under its tracer while {who}, and derived one chain of calls per journey from the trace: "
           "from the socket or the app's own line to the library code that did the work. The app's source as it ran "
           "is [on its own page](sample_app.md).\n")]
    if live is not None:
        out.append("## What the clients did\n")
        out.append("Each client, its transport and its events, in the order the app received them (the scenario below replays them):\n")
        out += [f"- {markup.md_text(line)}" for line in live] + [""]
    out += ["## The journeys\n", "| Journey | Hops | Threads | What |", "|---|---|---|---|"]
    for d in derived:
        c = built[d.journey.name]
        out.append(f"| [{d.journey.name}](chains/{d.journey.name}.md) | {len(c.hops)} | {len(render.lifelines(c))} | {markup.md_text(c.title)} |")
    out.append("")
    raised = derive.raised_sites(trace) if trace is not None else []
    if raised:
        out.append("## Where the app raised\n")
        out.append("An exception left the app's code here (its type and message are in the run's output):\n")
        for site in raised:
            shown = derive.shown_by(built, site)
            where = f"[{shown}](chains/{shown}.md) shows where it was caught" if shown else "no journey shows it"
            out.append(f"- {markup.inline_code(f'{site[0]}:{site[1]}')} in {markup.inline_code(site[2])}: {where}")
        out.append("")
    if running:
        threads = ", ".join(f"{markup.inline_code(t)} (in {markup.inline_code(f)})" for t, f in running)
        out.append(f"Still running when the scenario ended, and cut there: {threads}. A journey through a loop "
                   "shows one of its turns, the same on every run; how many turns a loop made varies from run to run, and is not shown.\n")
    if skipped:
        out.append("## Journeys not derived\n")
        out.append("What ran and is on no journey, with why (the console printed the same lines):\n")
        out += [f"- not derived: {markup.md_text(s)}" for s in skipped] + [""]
    out.append("## Not annotated\n")
    if missing:
        out.append("No text covers these functions yet (a general text in an annotations file would):\n")
        out += [f"- {markup.inline_code(m)}" for m in missing] + [""]
    else:
        out.append("Every hop has a text.\n")
    out.append("## The scenario\n")
    out.append(markup.fenced(scenario_text.rstrip("\n"), "toml"))
    out.append("")
    out.append(guide.rstrip("\n") + "\n")
    return "\n".join(out)


def mkdocs_config(project_config: str, title: str, journeys: Sequence[str]) -> str:
    cfg = yaml.safe_load(project_config)
    cfg["site_name"] = title
    cfg["site_description"] = "A Flask-SocketIO app's call chains, traced by dispel."
    cfg["nav"] = [{"Home": "index.md"}, {"Journeys": [{j: f"chains/{j}.md"} for j in journeys]},
                  {"Reader's aids": [{"Glossary": aids.GLOSSARY_PAGE}, {"Threads": aids.THREADS_PAGE}]},
                  {"The app's source": "sample_app.md"}, {"Licensing": "licensing.md"}]
    cfg.get("theme", {}).pop("custom_dir", None)  # the project's footer names the project's traces, not the report's
    return "# Generated by `dispel report`. Do not edit: regenerate instead.\n" + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)


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
        page, left_out = checked_page(chain, per_journey[name], lambda t, c=chain: _journey_page(c, hop_linker(lock), excerpts, t, built), prose_lines)
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
    guide = _reading_guide(read_text(project.docs / "index.md", "the project's index page"))
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
                scenario: Path | None = None) -> Report:
    """`dispel report --live`: the recording child (dispel.run.live.record_live) serves the app until
    the first Ctrl-C (forwarded to it) or ``duration``; then the report is built as for a scenario
    file, from the trace and a scenario written from what the clients did (live_session), which
    ``save_scenario`` also keeps. A second Ctrl-C, or any failure, leaves nothing behind."""
    from .run.live import child_settings, parse_target

    if not live:
        raise DispelError("--app, --save-scenario and --duration go with --live; add --live to record while you use the app")
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
        argv = [sys.executable, "-m", "dispel", "record", "--out", str(rp.traces),
                "--live", child_settings(spec.target, session_file, factory, flask, host, duration)]
        argv += [a for pattern in redact for a in ("--redact", pattern)]
        argv += ["--port", str(port)] if port else []
        argv += ["--root", str(root)] if root else []
        said = _record_live(argv, tmp / ".live-stderr")
        observations = json.loads(read_text(session_file, "the live session"))
        stderr = (tmp / ".live-stderr").read_text(errors="replace")
        session_file.unlink()
        (tmp / ".live-stderr").unlink()
        trace = load_traces(rp)["live"]
        root = app_root(trace, [root or Path.cwd()])
        text, left = live_session.scenario_text(live_session.session(observations), spec.target, factory, flask)
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


def _record_live(argv: list[str], stderr_path: Path) -> list[str]:
    """Run the live recording child, its console passed through as it happens; the first Ctrl-C
    here is forwarded to it (it stops recording and writes its trace), a second one stops this
    run (KeyboardInterrupt: the caller removes what it wrote). Returns the lines it said for the
    console after it stopped (SAID_PREFIXES); its error, as a DispelError."""
    with open(stderr_path, "w") as err:
        proc = subprocess.Popen(argv, cwd=os.getcwd(), stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1,
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
