"""The record stage, over a Project: scenarios run under a recorder, each written as a trace file."""
from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .. import catalog
from ..model import (
    DispelError,
    TraceFile,
)
from ..pins.installed import (
    FlaskSecrets,
    code_roots,
)
from ..pins.stage import refuse_foreign_python
from ..project import (
    Project,
    read_json,
    read_text,
    write_atomic,
)
from ..run import modes
from ..run import multiprocess as processes
from ..run.browser import chromium_version
from ..run.launchers import ClientStarter, free_ports
from ..tracefiles import normalize
from ..tracefiles.codec import (
    trace_to_json,
)
from ..tracefiles.recording import trace_from_recording
from ..tracefiles.values import BROWSER_IDENTITY
from .cores import CORES, core_name, recorder_for
from .recorder import Tracer


def record_scenario(
    name: str, timeout: float, app: str, port: int | None = None, deny: tuple[str, ...] = (), recorder: Tracer | None = None
) -> TraceFile:
    """Run one scenario under ``recorder`` (default: the core DISPEL_CORE names) and return its normalized TraceFile."""
    from ..run import (
        runner as scenarios,  # imports the traced libraries: only a recording needs them
    )

    sc = catalog.scenario(name)  # unknown names fail before anything runs
    if sc.async_mode != modes.running_mode():
        raise DispelError(f"scenario {name!r} runs the app in {sc.async_mode} mode, and this process runs {modes.running_mode()}: "
                          f"record it with `dispel record {name}`, which starts a process in its mode")
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
    roots = code_roots(modes.traced_dists())  # gevent's too in gevent mode (its calls are left out, its files known)
    return trace_from_recording(recorder, name, port, roots, versions, secrets.settings(), deny, patterns=patterns)


def record_file(path: Path, out: Path, timeout: float | None = None, port: int | None = None, deny: tuple[str, ...] = (),
                root: Path | None = None) -> Recorded:
    """Record a scenario file's app (here: run it in a fresh interpreter) into ``out``/<file stem>.json.

    The app is every module under the project root (``root``, default the scenario file's
    folder; scenarios.AppCode), imported with that folder, the scenario file's, the working
    directory and the root's ``src/`` on sys.path; it is traced as the app (dist ``sample_app``,
    the traced app's marker), its folder shown as ``<app>``. An app file that shadows a standard
    library module, or a run in which none of the app's code ran, is an error."""
    from ..run import runner as scenarios
    from ..run.launchers import FileClientProcess

    sf, app_root = _app_on_path(path, root)
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
    roots = [*code_roots(modes.traced_dists()), *app.roots(sys.path)]
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


def _app_on_path(path: Path, root: Path | None):
    """A scenario file's app made importable: (the file, the app's root folder). Its folder, the
    root, the root's ``src/`` and the working directory go first on sys.path."""
    import os

    from ..run import runner as scenarios
    from ..run import scenario_file, scenario_values

    sf = scenario_file.one_app(scenario_file.parse(read_text(path, "scenario file"), path.name))
    unset = [name for name in scenario_values.env_names(sf) if name not in os.environ]
    if unset:
        raise DispelError(f"{path.name} reads the secret {unset[0]} from the environment, which is not set; "
                          f"export {unset[0]}=... (the value the app expects) and run it again")
    folder = str(path.resolve().parent)
    app_root = str(root.resolve()) if root else folder
    if root is not None and not Path(app_root).is_dir():
        raise DispelError(f"--root {root} is not a folder; name the folder that holds the app's code")
    scenarios.app_folders_first([folder, app_root, os.path.join(app_root, "src"), os.getcwd()])
    return sf, app_root


def probe_mode(path: str, root: str) -> None:
    """Print the async_mode a scenario file's app passes to Flask-SocketIO ("" when unset): run in a
    probe process by scenario_mode, since the import cannot be undone."""
    from ..run import runner as scenarios

    sf, _ = _app_on_path(Path(path), Path(root) if root else None)
    print(scenarios.asked_mode(sf.app))


_PROBE = "import sys; from dispel.record.stage import probe_mode; probe_mode(sys.argv[1], sys.argv[2])"


def scenario_mode(path: Path, root: Path | None = None) -> str:
    """The async mode a scenario file's app is recorded in (modes.decide): the app's own async_mode
    (read by importing it in a probe process), else the file's [app] async_mode, else threading.
    A conflict, eventlet, or gevent with a python-engineio too old for it: one error line."""
    import os

    from ..run import scenario_file

    sf = scenario_file.one_app(scenario_file.parse(read_text(path, "scenario file"), path.name))
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(path), str(root or "")], cwd=os.getcwd(),
                          capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "DISPEL_GEVENT"}, check=False)
    said = proc.stdout.strip().splitlines()
    asked = said[-1].strip() if proc.returncode == 0 and said else ""
    mode = modes.decide(asked, scenario_file.app_spec(sf).async_mode)
    if mode == "gevent":
        why = modes.gevent_supported(metadata.version("python-engineio"))
        if why:
            raise DispelError(why)
    return mode


def record_file_patched(path: Path, out: Path, timeout: float | None = None, port: int | None = None,
                        deny: tuple[str, ...] = (), root: Path | None = None) -> int:
    """`dispel record --scenario` again, in a process gevent monkey-patches before it imports the app
    (DISPEL_GEVENT=1, see __main__), saying what it says; its exit status."""
    import os

    argv = [sys.executable, "-m", "dispel", "record", "--scenario", str(path), "--out", str(out)]
    argv += [a for pattern in deny for a in ("--redact", pattern)]
    if timeout:
        argv += ["--timeout-file", str(timeout)]
    if port:
        argv += ["--port", str(port)]
    if root is not None:
        argv += ["--root", str(root)]
    return subprocess.run(argv, cwd=os.getcwd(), env={**os.environ, "DISPEL_GEVENT": "1"}, check=False).returncode


def record_in_new_interpreters(
    project: Project, names: Iterable[str], out: Path, timeout: float, app: str = "dispel.sample_app.app", redact: Iterable[str] = (), capture: bool = False
) -> dict[str, subprocess.CompletedProcess]:
    """`dispel record NAME` for each name, in new interpreters running side by side: a second
    run in the same process would find the app and its drivers imported already, and its
    trace would differ. Each gets a port of its own, and a scenario in gevent mode a process
    gevent monkey-patches first (DISPEL_GEVENT=1, see __main__). Name -> its finished process."""
    import os

    names = list(names)
    ports = free_ports(len(names))
    pipe = subprocess.PIPE if capture else None
    procs = {}
    for name, port in zip(names, ports):
        argv = [sys.executable, "-m", "dispel", "record", name, "--out", str(out), "--timeout", str(timeout), "--app", app]
        argv += ["--port", str(port)] + [a for pattern in redact for a in ("--redact", pattern)]
        env = {k: v for k, v in os.environ.items() if k not in ("DISPEL_GEVENT", "PURE_PYTHON")}
        if name in catalog.SCENARIOS and catalog.SCENARIOS[name].async_mode == "gevent":
            env["DISPEL_GEVENT"] = "1"
        procs[name] = (argv, subprocess.Popen(argv, cwd=project.root, stdout=pipe, stderr=pipe, text=True, env=env))
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
    project: Project, names: Iterable[str], out: Path, timeout: float = 30.0, app: str = "dispel.sample_app.app",
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
    other_mode = any(catalog.SCENARIOS[n].async_mode != modes.running_mode() for n in names if n in catalog.SCENARIOS)
    if len(names) > 1 or other_mode:
        # Each in a fresh interpreter; one that fails (say, no chromium for "browser")
        # has said why, and the others are still recorded.
        runs = record_in_new_interpreters(project, names, out, timeout, app, redact)
        return Recording(failed=tuple(name for name, proc in runs.items() if proc.returncode != 0))
    from ..run import runner as scenarios

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
