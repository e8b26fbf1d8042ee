"""Scenarios: run the sample app in-process under a recorder and drive it with a real Socket.IO client, step by step, each with a deadline."""
from __future__ import annotations

import gc
import importlib
import importlib.machinery
import importlib.util
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import CodeType
from typing import Any, Protocol, Self, TypeVar

from ..catalog import (
    DISTS,
    HANDLER_THREADS,
    PER_CONNECTION_THREADS,
    STDLIB_TRACED,
    scenario,
    split_step,
)
from ..model import DispelError
from ..record.recorder import Tracer
from . import modes
from .deadline import Deadline
from .launchers import free_ports


def free_port() -> int:
    return free_ports(1)[0]


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as werkzeug binds
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise DispelError(f"port {port} is already in use; choose another with --port or stop what holds it") from None


def find_server(port: int, listening: bool = True):
    """The werkzeug server on ``port`` (it offers no handle of its own); with ``listening``,
    only once it listens: werkzeug sets the port before it binds, and a client let in then is refused.
    In gevent mode, gevent's WSGI server (modes.GreenServer: the same handle)."""
    from werkzeug.serving import BaseWSGIServer

    if modes.running_mode() == "gevent":
        return modes.green_server(port, listening)
    for obj in gc.get_objects():
        if isinstance(obj, BaseWSGIServer) and obj.port == port:
            return obj if not listening or _listening(obj) else None
    return None


def _listening(server) -> bool:
    sock = getattr(server, "socket", None)
    try:
        return sock is not None and sock.fileno() >= 0 and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    except OSError:
        return False


class StepClient(Protocol):
    """A real Socket.IO client in another process, driven one named step at a time."""

    def step(self, name: str, timeout: float, count: int = 1) -> None: ...

    def close(self) -> None: ...


class AppErrors(logging.Handler):
    """The exceptions the app raised while a scenario ran, each with the step it ran in: what
    Engine.IO logs when a handler raises (``... handler error``, then carries on), and what a
    thread of the app let escape. A context: attached to those loggers and threading.excepthook."""

    LOGGERS = ("engineio.server", "socketio.server", "flask_socketio")

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.step = "import"
        self.found: list[str] = []
        self._hook = threading.excepthook  # the hook in force when entered, put back on exit

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.found.append(f"{self.step}: {describe_exception(record.exc_info[1])}")

    def before(self, step: str) -> list[str]:
        """What was raised in the steps before ``step`` (each with the step it ran in)."""
        mine = [f for f in self.found if f.startswith(f"{step}: ")]
        return [f for f in self.found if f not in mine]

    def _excepthook(self, args) -> None:
        if args.exc_value is not None and not isinstance(args.exc_value, SystemExit):
            self.found.append(f"{self.step}: {describe_exception(args.exc_value)}")

    def in_step(self, step: str) -> list[str]:
        return [f.split(": ", 1)[1] for f in self.found if f.startswith(f"{step}: ")]

    def __enter__(self) -> Self:
        for name in self.LOGGERS:
            logging.getLogger(name).addHandler(self)
        self._hook, threading.excepthook = threading.excepthook, self._excepthook
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self)
        threading.excepthook = self._hook


App = TypeVar("App")  # what load_app returns (the app's module, say) and serve_app takes


def describe_exception(exc: BaseException) -> str:
    """``ValueError: cannot handle 'x' (raised at raising.py:10 in on_boom)``."""
    import os
    import traceback

    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    at = f" (raised at {os.path.basename(where[0].filename)}:{where[0].lineno} in {where[0].name})" if where else ""
    return f"{type(exc).__name__}: {exc}{at}"


@dataclass(frozen=True)
class DriveStep:
    """One step of a drive: which client does it, its mark in the trace, how it is done."""

    who: str
    mark: str
    perform: Callable[[StepClient, float], None]  # (the client, seconds left) -> None
    connects: bool = False
    disconnects: bool = False
    label: str = ""  # how errors name it (default: the mark)


def run(
    name: str,
    recorder: Tracer,
    start_client: Callable[[int], StepClient],
    app_module: str = "dispel.sample_app.app",
    timeout: float = 30.0,
    port: int | None = None,
    timings: dict[str, float] | None = None,
):
    """Run catalogue scenario ``name`` with ``recorder`` tracing the server side only; returns the app module.

    ``start_client(port)`` starts the client (the CLI runs it as a subprocess);
    this thread drives it with tracing paused. Raises DispelError naming the
    step that failed or ran past the deadline. Leaves no thread or socket behind.
    """
    sc = scenario(name)
    steps = []
    for spec in sc.steps:
        # "b:join*2": client b (default a) does step join twice; each client is
        # started before its first step, so its connection comes when the step says.
        who, step, count = split_step(spec)

        def perform(client: StepClient, left: float, step: str = step, n: int = count) -> None:
            client.step(step, left, n)

        steps.append(DriveStep(who, step, perform, step.startswith("connect"), step == "disconnect"))
    return drive(
        name, recorder, lambda who, port: start_client(port), lambda: importlib.import_module(app_module),
        lambda module, port: module.main(port), steps, app_module, timeout, port, timings,
    )


def drive(
    name: str,
    recorder: Tracer,
    start_client: Callable[[str, int], StepClient],
    load_app: Callable[[], App],
    serve_app: Callable[[App, int], None],
    steps: list[DriveStep],
    app_module: str,
    timeout: float = 30.0,
    port: int | None = None,
    timings: dict[str, float] | None = None,
    app_errors: AppErrors | None = None,
) -> App:
    """Import the app (``load_app``, traced under the mark "import"), serve it on a thread
    (``serve_app(app, port)``, mark "start"), then do ``steps`` one by one, each client
    started before its first step; returns what ``load_app`` returned. ``app_errors``
    collects the exceptions the app raised, by step; a step that fails says them too."""
    deadline = Deadline(timeout, name)
    errors = app_errors if app_errors is not None else AppErrors()
    # werkzeug stays quiet: before 3.0 it logs an error at the end of every WebSocket request, and a
    # log record would call threading.current_thread(), which is traced
    logging.getLogger("werkzeug").setLevel(logging.CRITICAL)
    # With a long switch interval a thread keeps the GIL until it blocks, so each
    # thread's sequence of calls no longer depends on preemption: traces repeat.
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(5.0)
    port = port or free_port()
    _check_port_free(port)
    server_errors: list[BaseException] = []
    clients: dict[str, StepClient] = {}
    connected: set[str] = set()
    server = None
    thread = None
    # The libraries are imported before tracing starts: their module bodies are
    # not part of any journey, while the app's own import (the decorators that
    # register its handlers) is.
    for lib in (*(d.package for d in DISTS), "werkzeug.serving"):
        importlib.import_module(lib)
    sys.modules.pop(app_module, None)
    try:
        errors.__enter__()
        recorder.start()
        with recorder.mark("import"):
            try:
                with modes.unset_is_threading():  # every catalogue and scenario-file run is in threading mode
                    module = load_app()
            except DispelError:
                raise
            except Exception as exc:  # noqa: BLE001 - the app's own code raises anything: reported as the app's error
                raise DispelError(
                    f"import: cannot import app module {app_module!r}: {type(exc).__name__}: {exc}"
                ) from None

        def serve() -> None:
            try:
                serve_app(module, port)
            except BaseException as exc:  # noqa: BLE001 - reported by the driver, which names the step
                server_errors.append(exc)

        errors.step = "start"
        with recorder.mark("start"):
            thread = threading.Thread(target=serve, name="dispel-server", daemon=True)
            thread.start()
        with recorder.pause():
            deadline.wait_for("start", lambda: bool(server_errors) or find_server(port) is not None)
            if server_errors:
                failed = server_errors[0]
                if isinstance(failed, OSError) and failed.errno == 98:
                    raise DispelError(
                        f"port {port} is already in use; choose another with --port or stop what holds it"
                    )
                raise DispelError(f"start: the app failed to start: {type(failed).__name__}: {failed}")
            server = find_server(port)
            for st in steps:
                if st.who not in clients:
                    clients[st.who] = start_client(st.who, port)
                client = clients[st.who]
                began = time.perf_counter()
                label = st.label or st.mark
                errors.step = label
                with recorder.mark(st.mark):
                    try:
                        st.perform(client, deadline.left(label))
                    except Exception as exc:  # noqa: BLE001 - any failure of a step becomes one error line naming it
                        text = str(exc)
                        if text.rstrip().endswith("Error:"):  # an exception without a message
                            text = f"{text.rstrip()} no answer within the step's deadline"
                        raised = errors.in_step(label)
                        if raised:
                            text += f"; in this step the app raised {'; '.join(raised)}"
                        elif errors.before(label):  # what an earlier step broke may be why this one waited in vain
                            text += f"; earlier, the app raised {'; '.join(f'in {e}' for e in errors.before(label))}"
                        raise DispelError(f"scenario {name!r}: {text}") from None
                    # The server may still be finishing what the step caused.
                    if st.connects:
                        connected.add(st.who)
                    elif st.disconnects:
                        connected.discard(st.who)
                    deadline.wait_for(label, lambda: server_settled(len(connected)))
                if timings is not None:
                    timings[st.mark] = time.perf_counter() - began
    finally:
        try:
            with recorder.pause():
                for client in clients.values():
                    client.close()
                if server is None and not server_errors:
                    server = find_server(port, listening=False)
                # shutdown() waits for serve_forever to end: only a running server has one.
                if server is not None and thread is not None and thread.is_alive():
                    server.shutdown()
                if thread is not None:
                    thread.join(timeout=5)
        finally:
            recorder.stop()
            sys.setswitchinterval(old_interval)
            errors.__exit__(None, None, None)
    return module


class AppCode:
    """The app's code: every ``.py`` file under the project root, wherever it lives (a package, a
    src layout, a wrapper module), but never a virtual environment, installed packages, the
    interpreter's own files or dispel itself, even inside that folder; dispel's sample app
    (``dispel.sample_app``, wherever dispel is installed) is an app like any other. Called with a
    code object's file name (once per code object, by the recorder's filter)."""

    SKIP = frozenset({"site-packages", "dist-packages", "__pycache__", "node_modules", "__pypackages__", ".git", ".tox", ".nox"})

    def __init__(self, root: str) -> None:
        import os
        import sysconfig

        self.root = os.path.join(os.path.abspath(root), "")
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # dispel's own package
        paths = sysconfig.get_paths()
        not_app = {sys.prefix, sys.base_prefix, sys.exec_prefix, paths["stdlib"], paths["purelib"], paths["platlib"], here}
        self._not_app = tuple(os.path.join(os.path.abspath(p), "") for p in not_app)
        self._sample = os.path.join(here, "sample_app", "")
        self._venvs: dict[str, bool] = {}

    def __call__(self, filename: str) -> bool:
        import os

        if not filename.endswith(".py") or not filename.startswith(self.root):
            return False
        if filename.startswith(self._not_app) and not filename.startswith(self._sample):
            return False
        parts = filename[len(self.root):].split("/")[:-1]
        folder = self.root
        for part in parts:
            if part in self.SKIP:
                return False
            folder = os.path.join(folder, part)
            if folder not in self._venvs:
                self._venvs[folder] = os.path.isfile(os.path.join(folder, "pyvenv.cfg"))
            if self._venvs[folder]:
                return False
        return True

    def roots(self, path_entries):
        """Where the app's files are found (tracefile.Root): the project root, and each import
        folder inside it (``src/``), whose modules are named from there: ``src/shop/events.py``
        is the module ``shop.events``, its path ``src/shop/events.py``."""
        import os

        from ..tracefiles.codec import Root

        out = [Root(self.root, self.root.rstrip("/"), "sample_app", "local")]
        for entry in dict.fromkeys(os.path.join(os.path.abspath(e or "."), "") for e in path_entries):
            if entry != self.root and entry.startswith(self.root):
                out.append(Root(entry, entry.rstrip("/"), "sample_app", "local", entry[len(self.root):]))
        return out

    def modules(self) -> list[str]:
        """The app's modules imported now."""
        import os

        return sorted(name for name, m in list(sys.modules.items())
                      if isinstance(file := getattr(m, "__file__", None), str) and self(os.path.abspath(file)))


def load_socketio(spec, any_mode: bool = False):
    """Import the app of a scenario file's [app] (an AppSpec) -> (module, SocketIO object, Flask app).

    ``import`` names the SocketIO object, or the Flask app (its SocketIO is the one
    ``socketio.init_app(app)`` registered in ``app.extensions["socketio"]``); with ``factory``,
    a function returning either (``create_app()``)."""
    import gc
    import weakref

    from flask import Flask
    from flask_socketio import SocketIO

    try:
        module = importlib.import_module(spec.module)
    except Exception as exc:  # noqa: BLE001 - the app's own code raises anything: reported as the app's error
        mode = _asked_async_mode(exc)
        if mode:
            raise _async_mode_error(mode, spec.target) from None
        raise DispelError(f"import: cannot import app module {spec.module!r}: {type(exc).__name__}: {exc}") from None
    obj: Any = module  # whatever the app's module holds under the attribute named
    for part in spec.attribute.split("."):
        if not hasattr(obj, part):
            raise DispelError(f"import: app module {spec.module!r} has no attribute {spec.attribute!r}; check [app] import = {spec.target!r}")
        obj = getattr(obj, part)
    if spec.factory:
        try:
            obj = obj()
        except Exception as exc:  # noqa: BLE001 - the app's own code raises anything: reported as the app's error
            mode = _asked_async_mode(exc)
            if mode:
                raise _async_mode_error(mode, spec.target) from None
            raise DispelError(f"import: the factory {spec.target} raised {type(exc).__name__}: {exc}") from None
    flask_app: Flask | None = None
    if isinstance(obj, Flask):
        flask_app, obj = obj, obj.extensions.get("socketio")
        if not isinstance(obj, SocketIO):
            made = "the factory " + spec.target + " returned" if spec.factory else spec.target + " is"
            raise DispelError(f"import: {made} a Flask app without Flask-SocketIO; call socketio.init_app(app) in it, or point [app] import at the SocketIO object")
    if not isinstance(obj, SocketIO):
        hint = ("set factory = true to call it" if callable(obj) and not spec.factory
                else "point [app] import at the SocketIO object, the Flask app or a factory returning either")
        raise DispelError(f"import: {spec.target} is a {type(obj).__name__}, not a flask_socketio.SocketIO; {hint}")
    if not any_mode and getattr(obj, "async_mode", "threading") != modes.running_mode():
        raise _async_mode_error(obj.async_mode, spec.target)
    if flask_app is None and spec.flask:
        mod, _, attr = spec.flask.partition(":")
        flask_app = getattr(importlib.import_module(mod), attr, None)
    elif flask_app is None:
        # a weak proxy to the app passes isinstance too: the app itself is wanted
        flask_app = next(
            (o for o in gc.get_objects() if isinstance(o, Flask) and type(o) not in weakref.ProxyTypes
             and getattr(o, "extensions", {}).get("socketio") is obj), None
        )
    if not isinstance(flask_app, Flask):
        raise DispelError(f"import: no Flask app uses {spec.target}; name it with [app] flask = \"module:attribute\"")
    return module, obj, flask_app


def _asked_async_mode(exc: BaseException) -> str:
    """The async_mode an app asked for when Flask-SocketIO refused it ("Invalid async_mode
    specified": its package is not installed), read from the frames it was refused in; "" else."""
    if "async_mode" not in str(exc):
        return ""
    tb = exc.__traceback__
    mode = ""
    while tb is not None:
        value = tb.tb_frame.f_locals.get("async_mode")
        if isinstance(value, str) and value:
            mode = value
        tb = tb.tb_next
    return mode


class AskedMode(DispelError):
    """An app that asks Flask-SocketIO for another async mode than this process runs: ``mode``."""

    def __init__(self, message: str, mode: str) -> None:
        super().__init__(message)
        self.mode = mode


def _async_mode_error(mode: str, target: str) -> AskedMode:
    running = modes.running_mode()
    return AskedMode(f"import: {target} runs Flask-SocketIO with async_mode={mode!r}, but this process runs {running!r} "
                     f"(`dispel record --scenario` picks the app's mode itself); pass async_mode=\"{running}\" to SocketIO()", mode)


def asked_mode(spec) -> str:
    """The async_mode the app of a scenario file's [app] passes to Flask-SocketIO ("" when it leaves it
    unset): its import, with the greenlet packages hidden (a probe process: the import is thrown away).
    An app that cannot be imported says "" (the recording names the error)."""
    with modes.unset_is_threading():
        try:
            _, obj, _ = load_socketio(spec, any_mode=True)
        except AskedMode as exc:
            return exc.mode
        except DispelError:
            return ""
    return (getattr(obj, "server_options", None) or {}).get("async_mode") or ""


def app_folders_first(folders: Sequence[str]) -> None:
    """Put the app's ``folders`` first on sys.path (in that order), once no app file there shadows
    the standard library (shadowing: an error of one line)."""
    import os

    folders = [d for d in dict.fromkeys(folders) if os.path.isdir(d)]
    why = shadowing(folders)
    if why:
        raise DispelError(f"import: {why}")
    for d in reversed(folders):
        if d not in sys.path:
            sys.path.insert(0, d)


def shadowing(folders) -> str:
    """An error naming an app file in ``folders`` (the folders put first on sys.path) whose name
    is a standard-library module's: Python would import it instead of the library's; "" if none."""
    import os

    frozen = getattr(importlib.machinery, "FrozenImporter", None)
    for folder in dict.fromkeys(folders):
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for name in names:
            path = os.path.join(folder, name)
            if name.endswith(".py") and os.path.isfile(path):
                mod = name[:-3]
            elif os.path.isfile(os.path.join(path, "__init__.py")):
                mod = name
            else:
                continue
            if mod not in sys.stdlib_module_names or mod in sys.builtin_module_names:
                continue
            if frozen is not None and frozen.find_spec(mod) is not None:
                continue  # a frozen module is found before any file
            return (f"the app's {path} shadows the standard library's module {mod!r}: Python would import it "
                    f"instead of the library's (and so would Flask-SocketIO); rename it (say {mod}_app{'.py' if name.endswith('.py') else ''}) "
                    f"and update its imports")
    return ""


def run_file(sf, recorder: Tracer, start_client: Callable[[str, int], StepClient], timeout: float, port: int | None = None,
             app_errors: AppErrors | None = None):
    """Run scenario file ``sf`` (a dispel.run.scenario_file.ScenarioFile) with ``recorder`` tracing the
    app; returns (the app's module, its SocketIO object, its Flask app). Each step's error names the step (steps[3] (emit 'chat', client a))."""
    steps = []
    for s in sf.steps:
        def perform(client, left: float, s=s) -> None:
            client.run_step(s, s.label, left)

        steps.append(DriveStep(s.client, s.mark, perform, s.connects, s.disconnects, s.label))
    loaded: list = []

    def load():
        loaded.extend(load_socketio(sf.app))
        return tuple(loaded)

    def serve(module, port: int) -> None:
        _, sio, flask_app = loaded
        sio.run(flask_app, host="127.0.0.1", port=port, **modes.run_options())

    return drive(sf.source, recorder, start_client, load, serve, steps, sf.app.module, timeout, port, app_errors=app_errors)


def server_settled(connected: int) -> bool:
    """Every event handler has finished, and the server holds no more connections than
    clients are connected (threads, or in gevent mode greenlets, by what they run)."""
    alive = modes.green_tasks() if modes.running_mode() == "gevent" else [t.name for t in threading.enumerate() if t.is_alive()]
    handlers = [n for n in alive if any(w in n for w in HANDLER_THREADS)]
    per_connection = [n for n in alive if any(w in n for w in PER_CONNECTION_THREADS)]
    return not handlers and len(per_connection) <= len(PER_CONNECTION_THREADS) * connected


def package_dirs(packages) -> list[str]:
    """The folders of import packages (to trace more code than the catalogue's DISTS)."""
    import os

    dirs: list[str] = []
    for pkg in packages:
        dirs.extend(os.path.join(loc, "") for loc in (_spec(pkg).submodule_search_locations or ()))
    return dirs


def _spec(pkg: str) -> importlib.machinery.ModuleSpec:
    spec = importlib.util.find_spec(pkg)
    if spec is None:
        raise DispelError(f"package {pkg!r} is not installed; run `make site` to install the pinned set")
    return spec


def wanted_code(extra: tuple[str, ...] = (), app: Callable[[str], bool] | None = None) -> Callable[[CodeType], bool]:
    """The filter for the recorder: the Socket.IO stack, werkzeug, flask, the app, and the stdlib on the path;
    ``extra``: more files, or folders ending in "/"; ``app``: which other files are the app's (AppCode)."""
    import os
    import sysconfig

    roots: list[str] = []
    for pkg in (d.package for d in DISTS):
        for loc in _spec(pkg).submodule_search_locations or ():
            roots.append(os.path.join(loc, ""))
    origin = _spec("dispel.sample_app").origin
    assert origin is not None  # a regular package: its __init__.py
    here = os.path.dirname(os.path.abspath(origin))
    roots.append(os.path.join(here, ""))
    roots.extend(extra)
    roots.extend(modes.traced_files())  # gevent's own modules, in gevent mode
    stdlib = sysconfig.get_paths()["stdlib"]
    for rel in STDLIB_TRACED:
        roots.append(os.path.join(stdlib, rel))
    prefixes = tuple(roots)

    def want(code: CodeType) -> bool:
        # .py only: the app's Jinja templates compile to code named after the .html file
        name = code.co_filename
        return (name.startswith(prefixes) and name.endswith(".py")) or (app is not None and app(name))

    return want
