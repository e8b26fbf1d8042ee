"""The stages of dispel, each a function over a Project: record, chains, pin, build_site, audit
(check, which reads what they made, is dispel.check.stage).

Data flows one way: record -> chains -> pin -> build_site -> check. Each stage gathers facts
(installed files, git, the network, a recording), hands them to the pure core (chains, pins,
render, check, audit) and writes what it made atomically. None of them prints: they return
what happened, and the CLI says it.
"""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from . import catalog
from .chains import finders
from .check import fetch
from .check import links as check_core
from .model import PYTHON, Chain, DispelError, Hop, Lock, Pin, TraceFile, normalize_dist
from .pins import gitinfo, permalinks
from .pins import pinning as pins
from .pins.forges import SHA_RE, check_repo, forge, raw_url
from .pins.installed import (
    PYTHON_VERSION,
    FlaskSecrets,
    code_roots,
    distributions,
    first_header,
    hop_sources,
    installed_blobs,
    installed_contents,
    license_rows,
    machine_paths,
    resolve_funcs,
    sample_app_files,
    source_lines,
    version_set,
)
from .project import (
    Project,
    dump_json,
    read_json,
    read_text,
    write_all_atomic,
    write_atomic,
)
from .record.cores import CORES, core_name, recorder_for
from .record.recorder import RAISED, Tracer, line_at
from .render import annotation_files
from .render import pages as render
from .review import audit as audit_core
from .review import diff
from .run import multiprocess as processes
from .run.browser import chromium_version
from .run.launchers import ClientStarter, free_ports
from .tracefiles import normalize
from .tracefiles.codec import (
    chain_from_dict,
    chain_to_dict,
    trace_from_json,
    trace_to_json,
)
from .tracefiles.normalize import RawCall
from .tracefiles.values import BROWSER_IDENTITY, Normalizer, learn_secrets

# --------------------------------------------------------------------------- record


def record_scenario(
    name: str, timeout: float, app: str, port: int | None = None, deny: tuple[str, ...] = (), recorder: Tracer | None = None
) -> TraceFile:
    """Run one scenario under ``recorder`` (default: the core DISPEL_CORE names) and return its normalized TraceFile."""
    from .run import (
        runner as scenarios,  # imports the traced libraries: only a recording needs them
    )

    sc = catalog.scenario(name)  # unknown names fail before anything runs
    recorder = recorder or recorder_for(scenarios.wanted_code())
    port = port or scenarios.free_port()
    starter = ClientStarter(sc, port)  # the clients start now, beside the app's import
    try:
        with FlaskSecrets() as secrets:  # every Flask app's secrets, however it was made
            scenarios.run(name, recorder, starter, app_module=app, timeout=timeout, port=port)
    finally:
        starter.close()
    versions = {d: metadata.version(d) for d in catalog.DIST_NAMES}
    if sc.client == "browser":
        # Its version, kept as the trace's metadata: the requests it sends show it (User-Agent,
        # client hints) only as placeholders (values.BROWSER_IDENTITY).
        versions["chromium"] = chromium_version() or "unknown"
    patterns = BROWSER_IDENTITY if sc.client == "browser" else ()
    return trace_from_recording(recorder, name, port, code_roots(), versions, secrets.settings(), deny, patterns=patterns)


def recorded_calls(recorder: Tracer, roots: list) -> tuple[list[RawCall], dict]:
    """A recorder's rows -> RawCalls (code resolved to functions) and the functions by key."""
    if recorder.errors:
        raise DispelError(f"the recorder disabled itself: {recorder.errors[0]}")
    raw = recorder.rows()
    funcs_by_code = resolve_funcs(set(raw.codes), raw.probe_codes, roots)
    calls = normalize.raw_calls(raw.call_rows(), raw.codes, raw.return_map(), funcs_by_code.__getitem__, line_at, RAISED)
    return calls, {f.key: f for f in funcs_by_code.values()}


def random_ids(calls: list[RawCall], suffix: str = "") -> dict[str, str]:
    """Random ids the program made -> placeholders, in the order they were made: session ids
    (normalize.session_ids) and redis-py's connection pool ids (<redis-pool-N>). ``suffix``
    (``@server-b``) names the process, where the ids of several show in one trace."""
    ids = {k: f"{v[:-1]}{suffix}>" for k, v in normalize.session_ids(calls).items()}
    pools = 0
    for c in calls:
        if c.func.endswith(":get_pool_name") and c.ret and isinstance(c.ret.value, str) and "_" in c.ret.value:
            # redis-py names each connection pool "host:port_" + a random hex id
            pool = c.ret.value.rpartition("_")[2]
            if pool not in ids:
                pools += 1
                ids[pool] = f"<redis-pool-{pools}{suffix}>"
    return ids


def trace_from_recording(
    recorder: Tracer, name: str, port: int | None, roots: list, versions: dict[str, str], settings: Iterable | None = None, deny: tuple[str, ...] = (),
    process: str = "", ports: dict[int, str] | None = None, ids: dict[str, str] | None = None,
    recorded: tuple[list[RawCall], dict] | None = None, patterns: tuple[tuple[str, str], ...] = (),
    paths: Mapping[str, str] | None = None, running: list | None = None,
) -> TraceFile:
    """A recorder's rows -> normalized TraceFile: code resolved to functions, values made stable.
    ``settings``: (name, value) of the run's Flask settings (installed.app_settings), whose
    secrets are hidden; ``ids``: the random ids to replace (default: this recording's, by random_ids);
    ``running``: extended with the threads still running when the recording ended (normalize.Running)."""
    calls, funcs = recorded or recorded_calls(recorder, roots)
    secrets = dict(random_ids(calls) if ids is None else ids)
    for text, label in learn_secrets(normalize.values_seen(calls), settings or ()).items():
        secrets.setdefault(text, label)
    raw = recorder.rows()
    trace = normalize.normalize(
        name,
        PYTHON_VERSION,
        versions,
        raw.steps,
        calls,
        funcs,
        {s: start for s, (start, _) in raw.threads.items()},
        Normalizer(port, secrets, {**machine_paths(), **(paths or {})}, deny, ports, patterns),
        running,
    )
    return dataclasses.replace(trace, process=process) if process else trace


def record_file(path: Path, out: Path, timeout: float | None = None, port: int | None = None, deny: tuple[str, ...] = (),
                root: Path | None = None) -> Recorded:
    """Record a scenario file's app (here: run it in a fresh interpreter) into ``out``/<file stem>.json.

    The app is every module under the project root (``root``, default the scenario file's
    folder; scenarios.AppCode), imported with that folder, the scenario file's, the working
    directory and the root's ``src/`` on sys.path; it is traced as the app (dist ``sample_app``,
    the traced app's marker), its folder shown as ``<app>``. An app file that shadows a standard
    library module, or a run in which none of the app's code ran, is an error."""
    import os

    from .run import runner as scenarios
    from .run import scenario_file
    from .run.launchers import FileClientProcess

    sf = scenario_file.one_app(scenario_file.parse(read_text(path, "scenario file"), path.name))
    folder = str(path.resolve().parent)
    app_root = str(root.resolve()) if root else folder
    if root is not None and not Path(app_root).is_dir():
        raise DispelError(f"--root {root} is not a folder; name the folder that holds the app's code")
    src = os.path.join(app_root, "src")
    folders = [d for d in dict.fromkeys((folder, app_root, src, os.getcwd())) if os.path.isdir(d)]
    why = scenarios.shadowing(folders)
    if why:
        raise DispelError(f"import: {why}")
    for d in reversed(folders):
        if d not in sys.path:
            sys.path.insert(0, d)
    app = scenarios.AppCode(app_root)
    recorder = recorder_for(scenarios.wanted_code(app=app))
    port = port or scenarios.free_port()

    def start(who: str, port: int) -> FileClientProcess:
        c = sf.client(who)
        return FileClientProcess(port, c.spec())

    app_errors = scenarios.AppErrors()
    with FlaskSecrets() as secrets:  # every Flask app's secrets: a factory's, a package's
        _module, _, _flask_app = scenarios.run_file(sf, recorder, start, timeout or sf.timeout, port, app_errors)
    modules = app.modules()
    versions = {d: metadata.version(d) for d in catalog.DIST_NAMES}
    roots = [*code_roots(), *app.roots(sys.path)]
    running: list[normalize.Running] = []
    deny = (*deny, *sf.redact)  # the file's own redact = [...] patterns too
    trace = trace_from_recording(recorder, path.stem, port, roots, versions, secrets.settings(), deny, paths={app_root: "<app>"}, running=running)
    if not any(f.source.dist == "sample_app" for f in trace.funcs.values()):
        traced = sorted({f.source.dist for f in trace.funcs.values()} - {"builtin"})
        raise DispelError(
            f"no code of the app was traced: nothing under the project root {app_root} ran (the trace holds only "
            f"{', '.join(traced) or 'nothing'}); put the app's code under that folder, or name its folder with --root"
        )
    target = out / f"{path.stem}.json"
    write_atomic(target, trace_to_json(trace))
    shown = ", ".join(modules[:6]) + (", …" if len(modules) > 6 else "")
    said = f"app: root {app_root}, {len(modules)} app module{'s' if len(modules) != 1 else ''} ({shown})"
    return Recorded(path.stem, target, len(trace.events), len(trace.threads), recorder.rows().core, tuple(running), said,
                    tuple(app_errors.found))


def record_in_new_interpreters(
    project: Project, names: Iterable[str], out: Path, timeout: float, app: str = "sample_app.app", redact: Iterable[str] = (), capture: bool = False
) -> dict[str, subprocess.CompletedProcess]:
    """`dispel record NAME` for each name, in new interpreters running side by side: a second
    run in the same process would find the app and its drivers imported already, and its
    trace would differ. Each gets a port of its own. Name -> its finished process."""
    names = list(names)
    ports = free_ports(len(names))
    pipe = subprocess.PIPE if capture else None
    procs = {}
    for name, port in zip(names, ports):
        argv = [sys.executable, "-m", "dispel", "record", name, "--out", str(out), "--timeout", str(timeout), "--app", app]
        argv += ["--port", str(port)] + [a for pattern in redact for a in ("--redact", pattern)]
        procs[name] = (argv, subprocess.Popen(argv, cwd=project.root, stdout=pipe, stderr=pipe, text=True))
    done = {}
    for name, (argv, proc) in procs.items():
        stdout, stderr = proc.communicate()
        done[name] = subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)
    return done


@dataclass(frozen=True)
class Recorded:
    scenario: str
    path: Path
    calls: int
    threads: int
    core: str = ""  # the recorder core that ran (not in the trace file: every core writes the same bytes)
    running: tuple = ()  # the threads still running when the recording ended (normalize.Running)
    app: str = ""  # a scenario file's app: its root and modules, for the console
    app_errors: tuple[str, ...] = ()  # "STEP: Type: message (raised at file:line in function)", the app's exceptions


@dataclass(frozen=True)
class Recording:
    """What `record` did: the traces it wrote itself, and the scenarios whose child failed."""

    recorded: tuple[Recorded, ...] = ()
    failed: tuple[str, ...] = ()


def checked_redact(patterns: Iterable[str]) -> tuple[str, ...]:
    """``--redact`` patterns, each compiled once here: a bad one is one line naming it, before anything runs."""
    patterns = tuple(patterns)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise DispelError(f"--redact {pattern!r} is not a valid regular expression ({exc}); fix or quote it") from None
    return patterns


def record(
    project: Project, names: Iterable[str], out: Path, timeout: float = 30.0, app: str = "sample_app.app",
    port: int | None = None, redact: Iterable[str] = (),
) -> Recording:
    """Record scenarios into ``out``/<scenario>.json. One scenario runs here; several run each
    in a fresh interpreter, which says what it recorded or why it failed."""
    names = list(names) or [*catalog.DEFAULT_SCENARIOS, *catalog.DEFAULT_PROCESS_SCENARIOS]
    if out.resolve() == project.traces.resolve():
        refuse_foreign_python(project, "re-recording the project's scenarios")
    for name in names:
        if name not in catalog.PROCESS_SCENARIOS:
            catalog.scenario(name)
    redact = checked_redact(redact)
    if len(names) > 1:
        # Each in a fresh interpreter; one that fails (say, no chromium for "browser")
        # has said why, and the others are still recorded.
        runs = record_in_new_interpreters(project, names, out, timeout, app, redact)
        return Recording(failed=tuple(name for name, proc in runs.items() if proc.returncode != 0))
    from .run import runner as scenarios

    done = []
    for name in names:
        if name in catalog.PROCESS_SCENARIOS:
            for stem, path in processes.run(catalog.PROCESS_SCENARIOS[name], out, timeout, redact=redact).items():
                data = read_json(path, "trace file")  # only counted: each process normalized its own
                done.append(Recorded(stem, path, len(data["events"]), len(data["threads"]), CORES[core_name()].core))
            continue
        recorder = recorder_for(scenarios.wanted_code())
        trace = record_scenario(name, timeout, app, port, redact, recorder)
        path = out / f"{name}.json"
        write_atomic(path, trace_to_json(trace))
        done.append(Recorded(name, path, len(trace.events), len(trace.threads), recorder.rows().core))
    return Recording(tuple(done))


def load_traces(project: Project, folder: Path | None = None) -> dict[str, TraceFile]:
    """Every trace file in ``folder`` (default: the project's traces/): scenario name -> TraceFile."""
    out = {}
    for path in sorted((folder or project.traces).glob("*.json")):
        if path.name.endswith(".lock.json"):
            continue
        out[path.stem] = trace_from_json(read_text(path, "trace file"), f"trace file {project.shown(path)}")
    return out


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


def traced_stdlib_files(project: Project) -> set[str]:
    """The standard-library files the recorded traces ran code from (they all get pinned)."""
    try:
        traces = load_traces(project)
    except DispelError:
        return set()
    return {f.source.path for t in traces.values() for f in t.funcs.values() if f.source.dist == PYTHON}


# --------------------------------------------------------------------------- chains


def build_chains(traces: Mapping[str, TraceFile], only: Iterable[str] = ()) -> dict[str, Chain]:
    return finders.build_all(traces, source_lines(traces), only)


def chain_files(built: Mapping[str, Chain], folder: Path) -> dict[Path, str]:
    return {folder / f"{name}.json": dump_json(chain_to_dict(chain)) for name, chain in built.items()}


def chains(project: Project, journeys: Iterable[str] = (), traces: Path | None = None) -> dict[str, Chain]:
    """Trace files -> <traces>/chains/<journey>.json, all or none; returns the chains built."""
    folder = traces or project.traces
    if folder.resolve() == project.traces.resolve():
        refuse_foreign_python(project, "rebuilding the project's chains")
    found = load_traces(project, folder)
    if not found:
        raise DispelError(f"no trace files in {project.shown(folder)}; record them first with `dispel record`")
    built = build_chains(found, tuple(journeys))
    write_all_atomic(chain_files(built, folder / "chains"))
    return built


def load_chains(project: Project, folder: Path | None = None) -> dict[str, Chain]:
    """<folder>/*.json (default: the project's chains) -> {journey: Chain}; {} while none has been written."""
    folder = folder or project.chains
    paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
    out = {}
    for path in paths:
        chain = chain_from_dict(read_json(path, "chain file"), origin=f"chain file {project.shown(path)}")
        out[chain.journey] = chain
    return out


# --------------------------------------------------------------------------- pin


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
    overrides = {}
    for spec in repos:
        dist, sep, repo = spec.partition("=")
        if not sep or not dist:
            raise DispelError(f"--repo {spec!r} is not DIST=OWNER/REPO")
        overrides[normalize_dist(dist)] = check_repo(repo.strip(), f"--repo {spec}")
    names = sorted({normalize_dist(n) for n in (list(dists) or catalog.PINNED_DIST_NAMES)})
    site = site or None
    found = distributions(names, site)
    missing = [n for n in names if n not in found]
    if missing:
        extra = "pip install 'dispel[queue]', or name the distributions to pin" if set(missing) <= {d.name for d in catalog.QUEUE_DISTS} else "pip install -r requirements.lock"
        raise DispelError(f"not installed here: {', '.join(missing)} ({extra})")

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

    stdlib_files = sorted(set(catalog.STDLIB_FILES) | traced_stdlib_files(project))
    installed = installed_blobs(names, stdlib_files, site)
    absent = sorted(set(stdlib_files) - set(installed[PYTHON].blobs))
    if absent:
        raise DispelError(f"standard-library files not found in this interpreter: {', '.join(absent)}")
    lock_path = lock_path or project.lock
    before, note = _previous_lock(lock_path)
    locked: list[Pin] = []
    afresh: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="dispel-pin-") as tmp:
        for name in names:
            forge_name, repo = located[name]
            old = next((p for p in before.dists if p.dist == name), None) if before else None
            why = "--refresh" if refresh else pins.repin_reason(old, installed[name], repo)
            if not why and old is not None:  # (repin_reason gives a reason when old is None)
                locked.append(old)
                continue
            mirror = mirrors.get(repo.lower(), ("", None))[1]
            try:
                git_dir, tag, commit = _resolve_tag(name, installed[name].version, forge_name, repo, mirror, Path(tmp))
            except DispelError as exc:
                raise DispelError(f"{name} must be pinned afresh ({why}): {exc}") from None
            version, tree = installed[name].version, gitinfo.tree_blobs(git_dir, commit)
            files = pins.map_files(name, version, tag, installed[name].blobs, tree)
            locked.append(Pin(name, version, forge_name, repo, tag, commit, "commit", files))
            afresh[name] = why
    python = pins.stdlib_pin(installed[PYTHON].version, installed[PYTHON].blobs)
    lock = Lock(python, tuple(locked))
    write_atomic(lock_path, dump_json(pins.lock_to_json(lock)))
    return PinRun(lock, frozenset(set(names) - set(afresh)), afresh, (note,) if note else ())


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


def load_lock(path: Path) -> Lock:
    """The committed lock, validated; DispelError (one line: what is wrong, how to fix) otherwise."""
    if not path.is_file():
        raise DispelError(f"lock file not found: {path} (create it with `make pin PIN_ARGS=...`)")
    try:
        return pins.lock_from_json(read_json(path, "lock file"))
    except DispelError as exc:
        raise DispelError(f"lock file {path} is not a valid lock: {exc}; regenerate it: `make pin`") from None


def project_lock(project: Project) -> Lock | None:
    """The project's lock, or None before the first `dispel pin`."""
    return load_lock(project.lock) if project.lock.is_file() else None


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


# --------------------------------------------------------------------------- review an upgrade


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
    problems = annotation_files.missing(new_chains.values(), notes) + annotation_files.stale(new_chains.values(), notes, hop_sources(new_chains.values()))
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


# --------------------------------------------------------------------------- build the site


def load_annotations(project: Project, folder: Path | None = None) -> dict[str, annotation_files.Annotation]:
    folder = folder or project.annotations
    paths = sorted(folder.glob("*.yml")) if folder.is_dir() else []
    return annotation_files.merge_annotations((project.shown(p), read_text(p, "annotations file")) for p in paths)


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
        orphans = annotation_files.orphaned(found.values(), notes, catalog.JOURNEY_NAMES)
        if orphans:
            raise DispelError(orphans[0].message + (f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else ""))
    sources = hop_sources(found.values())
    excerpts = {
        src: [line.decode("utf-8", errors="replace").rstrip("\r\n") for line in annotation_files.source_lines(data)]
        for src, data in sources.items()
    }
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
    files[out / "snippets" / "versions.md"] = render.render_versions(versions, python, sorted(found, key=catalog.JOURNEY_NAMES.index))
    write_all_atomic(files)

    said = [p.message for p in annotation_files.missing(found.values(), notes) + annotation_files.stale(found.values(), notes, sources)
            + annotation_files.unreviewed(found.values(), notes) + annotation_files.sample_values(notes, found.values())]
    absent = [j for j in catalog.JOURNEY_NAMES if j not in found]
    if absent:
        said.append(f"not recorded yet, placeholder pages: {', '.join(absent)} (run `make regen`)")
    return Site(tuple(files), tuple(said))


# --------------------------------------------------------------------------- fetching


def fetch_all(fetcher: fetch.Fetcher, urls: Iterable[str], raw_base: str) -> dict:
    """Fetch URLs; DispelError when no answer came from the host at all (it is down or unreachable)."""
    urls = list(urls)
    got = fetcher.get_all(urls)
    if urls and all(r.unreachable for r in got.values()):
        raise DispelError(f"--online: cannot reach {raw_base}: {got[urls[0]].error} (check the address and the network)")
    return got


# --------------------------------------------------------------------------- audit


@dataclass(frozen=True)
class Audit:
    verdicts: list
    coverage: list[str]
    chains_known: bool

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
    return Audit(verdicts, audit_core.coverage(ordered, linked), bool(found))


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
