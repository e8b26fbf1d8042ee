"""`dispel report --live`: the user's app served under the recorder until Ctrl-C (or
``--duration``), used through its own front end; what happened becomes the report.

Two processes, as for a scenario file: the report (dispel.report.live_report) starts the
recording child (`dispel record --live TARGET`, record_live here) in a session of its own and
forwards the first Ctrl-C to it; the child stops recording there (threads still running are cut,
as at the end of a scenario: record.recorder.RawTrace.cut), writes the trace and what the clients did
(the observations, dispel.run.live_session), and exits. A second Ctrl-C stops the report, which
leaves nothing behind (its temporary folder goes).

The console: the child prints the URL first, then one short line per connection, event
received and emit, as they happen. It learns them from the Engine.IO and Socket.IO servers' own
loggers (their INFO lines, which the libraries write anyway), through a logging handler in
dispel's code, which no recorder traces.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from ..model import DispelError
from . import modes
from .live_session import (
    ACK,
    BINARY_ACK,
    BINARY_EVENT,
    CONNECT,
    DISCONNECT,
    EVENT,
    Packet,
    parse_packet,
    with_attachments,
)

STOP_HINT = "Ctrl-C stops the recording and builds the report"


class Repeats:
    """The console's ``say``, with identical lines in a row folded (a background task that emits at
    100 Hz would flood it): the first is passed on; the ones after it are counted, and the count is
    said before the next different line, or every ``every`` seconds while they keep coming."""

    def __init__(self, out: Callable[[str], None], every: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.out, self.every, self.clock = out, every, clock
        self.last: str | None = None
        self.more = 0
        self.since = 0.0  # when the last line about this run of lines was said
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            if line == self.last:
                self.more += 1
                if self.clock() - self.since >= self.every:
                    self._flush()
                return
            self._flush()
            self.out(line)
            self.last, self.since = line, self.clock()

    def _flush(self) -> None:
        if self.more:
            self.out(f"  … {self.more} more like it")
            self.more, self.since = 0, self.clock()


class Observer(logging.Handler):
    """What the clients do, from the servers' log lines: connections (Engine.IO's OPEN, its
    upgrade, its CLOSE), the Socket.IO packets each client sends (connect, event, disconnect;
    binary attachments read from the logging call's frame: the log line says only <binary>),
    and the server's emits. Each becomes one console line (``say``) and, for the clients' own
    packets, an observation (live_session)."""

    def __init__(self, say: Callable[[str], None]) -> None:
        super().__init__(logging.DEBUG)
        self.say = say
        self.observations: list[dict] = []
        self.clients: dict[str, int] = {}  # Engine.IO sid -> client number
        self.sids: dict[str, int] = {}  # Socket.IO sid -> client number
        self.transports: dict[int, str] = {}
        self.manager: Any = None  # the Socket.IO server's client manager (_client_of; python-socketio is untyped)
        self._asked: dict[tuple, str] = {}  # (Engine.IO sid, namespace, ack id) -> the event the server asked with
        self._pending: dict[str, tuple[Packet, list[bytes]]] = {}  # Engine.IO sid -> a binary packet waiting for attachments
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.exc_info and record.exc_info[1] is not None:  # a handler raised: said now, its traceback on stderr as before
                from .runner import describe_exception

                self.say(f"the app raised {describe_exception(record.exc_info[1])}")
                sys.stderr.write(logging.Formatter().format(record) + "\n")
                return
            with self._lock:
                self._take(record)
        except Exception:  # noqa: BLE001, S110 - the console never breaks the app
            pass

    socketio_path = "/socket.io/"  # Engine.IO's requests, which the packets say more of

    def _http(self, msg: object, args: tuple) -> None:
        """werkzeug's request line (``"POST /api/x HTTP/1.1" 201 -``): a plain HTTP request to the app,
        one that is not Engine.IO's, is said and observed (client 0: no Socket.IO client made it)."""
        if not (isinstance(msg, str) and msg.endswith('"%s" %s %s') and len(args) == 3):
            return
        line = re.sub(r"\x1b\[[0-9;]*m", "", str(args[0])).split(" ")  # werkzeug colours some of them
        if len(line) < 2 or (line[1] + "/").startswith(self.socketio_path) or not str(args[1]).isdigit():
            return
        self._note(0, do="http", method=line[0], path=line[1], status=int(args[1]))
        self.say(f"HTTP {line[0]} {line[1]} -> {args[1]}")

    def _note(self, n: int, **what) -> None:
        self.observations.append({"client": n, **what})

    def _take(self, record: logging.LogRecord) -> None:
        msg = record.msg
        args: tuple[Any, ...] = record.args if isinstance(record.args, tuple) else ()  # a log call's arguments: anything
        if record.name == "werkzeug":
            self._http(msg, args)
            return
        n: int | None  # the client a line is about
        if msg == "%s: Sending packet %s data %s" and len(args) == 3:
            sid, name, data = args
            if name == "OPEN" and isinstance(data, dict):
                n = self.clients[sid] = len(self.clients) + 1
                transport = "polling" if data.get("upgrades") else "websocket"
                self.transports[n] = transport
                self._note(n, do="open", transport=transport)
                self.say(f"client {n} connected ({'long-polling' if transport == 'polling' else 'WebSocket'})")
            elif name == "MESSAGE" and isinstance(data, str) and data[:1] in ("0", "2", "5") and sid in self.clients:
                pkt = parse_packet(data)
                if pkt.type == CONNECT and isinstance(pkt.data, dict) and isinstance(pkt.data.get("sid"), str):
                    self.sids[pkt.data["sid"]] = self.clients[sid]
                elif pkt.id is not None and isinstance(pkt.data, list) and pkt.data:  # the server asks for an ack
                    self._asked[(sid, pkt.namespace, pkt.id)] = pkt.data[0]
        elif msg == "%s: Received packet %s data %s" and len(args) == 3:
            sid, name, data = args
            n = self.clients.get(sid)
            if n is None:
                return
            if name == "CLOSE":
                self._close_client(sid, n)
            elif name == "MESSAGE":
                self._message(sid, n, data if data != "<binary>" else _logged_packet_data())
        elif msg == "%s: Client is gone, closing socket" and args and args[0] in self.clients:
            self._close_client(args[0], self.clients[args[0]])
        elif isinstance(msg, str) and msg.startswith("%s: Upgrade to websocket successful") and args and args[0] in self.clients:
            n = self.clients[args[0]]
            if self.transports.get(n) != "polling":
                return  # a WebSocket-only connection logs the same line
            self.transports[n] = "upgrade"
            self._note(n, do="upgrade")
            self.say(f"client {n} upgraded to WebSocket")
        elif msg == 'emitting event "%s" to %s [%s]' and len(args) == 3:
            event, to, namespace = args
            n = self.sids.get(to) or self._client_of(to, namespace)
            who = f"client {n}" if n else "all" if to == "all" else f"room {to!r}"
            self.say(f"emit {event!r} to {who} [{namespace}]")

    def _client_of(self, to: object, namespace: str) -> int | None:
        """The client a Socket.IO sid is, from the server's own table (its manager's rooms; a dict
        read, no traced call): an emit in the connect handler comes before the sid was sent."""
        try:
            eio_sid = self.manager.rooms.get(namespace, {}).get(None, {}).get(to)
        except Exception:  # noqa: BLE001 - the server's rooms as they are now: anything odd means no client
            return None
        return self.clients.get(eio_sid) if isinstance(eio_sid, str) else None

    def gone(self, sockets) -> None:
        """Clients whose Engine.IO socket the server dropped without a CLOSE packet (a closed tab,
        a WebSocket closed under it): ``sockets`` is the Engine.IO server's table of them (read
        from the main thread, a dict read, no traced call)."""
        with self._lock:
            for sid, n in list(self.clients.items()):
                if sid not in sockets:
                    self._close_client(sid, n)

    def _close_client(self, sid: str, n: int) -> None:
        if sid in self.clients and not any(o["client"] == n and o["do"] == "close" for o in self.observations):
            self._note(n, do="close")
            self.say(f"client {n} disconnected")

    def _message(self, sid: str, n: int, data) -> None:
        if isinstance(data, (bytes, bytearray)):
            pending = self._pending.get(sid)
            if pending is None:
                return
            pending[1].append(bytes(data))
            if len(pending[1]) < pending[0].attachments:
                return
            del self._pending[sid]
            pkt = dataclasses.replace(pending[0], data=with_attachments(pending[0].data, pending[1]))
        elif isinstance(data, str):
            pkt = parse_packet(data)
            if pkt.attachments:
                self._pending[sid] = (pkt, [])
                return
        else:
            return
        ns = pkt.namespace or "/"
        if pkt.type == CONNECT:
            self._note(n, do="connect", namespace=ns, **({"auth": _jsonable(pkt.data)} if pkt.data is not None else {}))
            self.say(f"client {n} connected to namespace {ns}")
        elif pkt.type in (EVENT, BINARY_EVENT) and isinstance(pkt.data, list) and pkt.data:
            event, rest = pkt.data[0], pkt.data[1:]
            self._note(n, do="emit", namespace=ns, event=event, args=_jsonable(rest), ack=pkt.id is not None)
            self.say(f"client {n} sent {event!r}" + (" (asks for an ack)" if pkt.id is not None else "") + f" [{ns}]")
        elif pkt.type in (ACK, BINARY_ACK) and (sid, ns, pkt.id) in self._asked:  # the client's answer to the server's call
            event = self._asked.pop((sid, ns, pkt.id))
            self._note(n, do="reply", namespace=ns, event=event, args=_jsonable(pkt.data if isinstance(pkt.data, list) else []))
            self.say(f"client {n} answered {event!r} [{ns}]")
        elif pkt.type == DISCONNECT:
            self._note(n, do="disconnect", namespace=ns)
            self.say(f"client {n} left namespace {ns}")


def _logged_packet_data():
    """The bytes of the binary packet being logged: Engine.IO's Socket.receive(pkt), up the stack."""
    frame = sys._getframe(1)
    for _ in range(16):
        if frame is None:
            return None
        pkt = frame.f_locals.get("pkt") if frame.f_code.co_name == "receive" else None
        if pkt is not None and isinstance(getattr(pkt, "data", None), (bytes, bytearray)):
            return bytes(pkt.data)
        frame = frame.f_back
    return None


def _jsonable(value):
    from .scenario_values import to_jsonable

    return to_jsonable(value)


def check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as werkzeug binds
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == 98:
                raise DispelError(f"port {port} is already in use; choose another with --port or stop what holds it") from None
            raise DispelError(f"cannot serve on {host}:{port}: {exc.strerror}; choose another --host or --port") from None


def parse_target(target: str, factory: bool = False, flask: str = ""):
    """``--app MODULE:ATTR`` -> scenario_file.AppSpec; a malformed one is one line."""
    from .scenario_values import IMPORT_RE, AppSpec

    for value, what in ((target, "--app"), *(((flask, "--flask"),) if flask else ())):
        if not IMPORT_RE.match(value or ""):
            raise DispelError(f"{what} {value!r} is not module:attribute; name the app like --app chat:socketio")
    module, _, attribute = target.partition(":")
    return AppSpec(module, attribute, factory, flask)


@dataclass(frozen=True)
class LiveRecorded:
    trace: Path
    redacted: int
    clients: int
    running: tuple = ()
    app: str = ""
    folded: tuple = ()  # (thread, iterations) kept as a count instead of rows (record.fold)


def count_redacted(text: str) -> int:
    """How many values the trace shows redacted (a secret setting's placeholder, or <redacted>)."""
    import re

    return len(re.findall(r"<redacted>|<secret:[^>]*>", text))


def record_live(spec, out: Path, session_out: Path, port: int | None = None, host: str = "127.0.0.1",
                duration: float | None = None, root: Path | None = None, deny: tuple[str, ...] = (),
                say: Callable[[str], None] = print) -> LiveRecorded:
    """The recording child: import ``spec``'s app under the recorder, serve it on ``host``:``port``
    until SIGINT or ``duration`` seconds, then write the trace (``out``/live.json) and the
    observations (``session_out``, JSON). No Socket.IO traffic at all is an error, and nothing is written."""
    from .. import catalog
    from ..pins.installed import FlaskSecrets, code_roots
    from ..project import write_atomic
    from ..record.cores import recorder_for
    from ..tracefiles import normalize
    from ..tracefiles.codec import trace_to_json
    from ..tracefiles.recording import trace_from_recording
    from ..tracefiles.values import BROWSER_IDENTITY
    from . import runner as scenarios

    app_root = _app_on_path(root)
    port = port or scenarios.free_port()
    check_port(host, port)
    stop = {"why": ""}

    def on_sigint(signum, frame) -> None:
        stop["why"] = stop["why"] or "Ctrl-C"

    signal.signal(signal.SIGINT, on_sigint)
    signal.signal(signal.SIGTERM, on_sigint)
    app = scenarios.AppCode(app_root)
    recorder = recorder_for(scenarios.wanted_code(app=app))
    logging.logThreads = False  # a log record would call threading.current_thread(), which is traced
    logging.logProcesses = False
    logging.logMultiprocessing = False
    observer = Observer(Repeats(lambda line: print(line, flush=True) if say is print else say(line)))
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(5.0)  # as a scenario records (scenarios.drive)
    for lib in (*(d.package for d in catalog.DISTS), "werkzeug.serving"):
        __import__(lib)
    server_errors: list[BaseException] = []
    thread = None
    loggers: list[tuple[logging.Logger, int, bool, list]] = []
    hook = threading.excepthook

    def said_and_printed(args) -> None:  # a thread of the app let an exception escape: said now, printed as before
        if args.exc_value is not None and not isinstance(args.exc_value, SystemExit):
            observer.say(f"the app raised {scenarios.describe_exception(args.exc_value)}")
        hook(args)

    threading.excepthook = said_and_printed
    with FlaskSecrets() as secrets:
        try:
            recorder.start()
            with recorder.mark("import"):
                try:
                    # an app that leaves async_mode unset runs in the mode this process runs (as a scenario's does)
                    with modes.unset_is_threading() if modes.running_mode() == "threading" else contextlib.nullcontext():
                        _, sio, flask_app = scenarios.load_socketio(spec)
                except DispelError as exc:  # its hints name a scenario file's [app]; here they are options
                    raise DispelError(str(exc).replace("set factory = true", "pass --factory").replace(
                        "name it with [app] flask = ", "name it with --flask ").replace("check [app] import = ", "check --app ")) from None
            observer.manager = sio.server.manager
            observer.socketio_path = getattr(getattr(sio, "sockio_mw", None), "engineio_path", None) or observer.socketio_path
            # werkzeug's request lines: the app's plain HTTP requests (gevent's server logs none)
            for logger in {sio.server.logger, sio.server.eio.logger, logging.getLogger("werkzeug")}:
                loggers.append((logger, logger.level, logger.propagate, logger.handlers))
                logger.handlers = [observer]  # their own handlers (a StreamHandler) would print every packet
                logger.setLevel(logging.INFO)
                logger.propagate = False

            def serve() -> None:
                try:
                    sio.run(flask_app, host=host, port=port, **modes.run_options())
                except BaseException as exc:  # noqa: BLE001 - reported by the caller, which names it
                    server_errors.append(exc)

            with recorder.pause():
                shown = "127.0.0.1" if host in ("127.0.0.1", "localhost") else host
                observer.say(f"recording http://{shown}:{port}/ ({STOP_HINT}"
                             + (f", or it stops after {duration:g}s" if duration else "") + ")")
                if host not in ("127.0.0.1", "localhost"):
                    observer.say(f"warning: --host {host} serves the app, under the tracer, to other machines on the network too")
            with recorder.mark("start"):
                thread = threading.Thread(target=serve, name="dispel-server", daemon=True)
                thread.start()
            with recorder.pause():
                end = time.monotonic() + duration if duration else None
                with recorder.mark("live"):
                    while not stop["why"] and not server_errors and (end is None or time.monotonic() < end):
                        time.sleep(0.05)
                        observer.gone(sio.server.eio.sockets)
                if server_errors:
                    failed = server_errors[0]
                    if isinstance(failed, OSError) and failed.errno == 98:
                        raise DispelError(f"port {port} is already in use; choose another with --port or stop what holds it")
                    raise DispelError(f"start: the app failed to start: {type(failed).__name__}: {failed}")
                observer.say(f"stopped ({stop['why'] or f'after {duration:g}s'}): {len(observer.clients)} client"
                             f"{'s' if len(observer.clients) != 1 else ''} seen; writing the trace")
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the report forwards a second Ctrl-C as its own stop
                server = scenarios.find_server(port, listening=False)
                if server is not None and thread is not None and thread.is_alive():
                    server.shutdown()
                if thread is not None:
                    thread.join(timeout=5)
        finally:
            try:
                recorder.stop()
            finally:
                threading.excepthook = hook
                sys.setswitchinterval(old_interval)
                for logger, level, propagate, handlers in loggers:
                    logger.handlers = handlers
                    logger.setLevel(level)
                    logger.propagate = propagate
    if not observer.clients:
        raise DispelError(f"no Socket.IO traffic: no client connected to port {port} while recording; open the app's page "
                          "(or start its client) against that URL, use it, then press Ctrl-C; nothing was built")
    versions = {d: metadata.version(d) for d in catalog.DIST_NAMES}
    roots = [*code_roots(modes.traced_dists()), *app.roots(sys.path)]
    running: list[normalize.Running] = []
    # a browser's version (User-Agent, client hints) is no fact of the app: placeholders, as in the browser scenario
    trace = trace_from_recording(recorder, "live", port, roots, versions, secrets.settings(), deny,
                                 paths={app_root: "<app>"}, running=running, patterns=BROWSER_IDENTITY)
    text = trace_to_json(trace)
    target = out / "live.json"
    write_atomic(target, text)
    write_atomic(session_out, json.dumps(observer.observations, indent=1, sort_keys=True) + "\n")
    modules = app.modules()
    said = f"app: root {app_root}, {len(modules)} app module{'s' if len(modules) != 1 else ''} ({', '.join(modules[:6])}{', …' if len(modules) > 6 else ''})"
    return LiveRecorded(target, count_redacted(text), len(observer.clients), tuple(running), said, trace.folded)


def _app_on_path(root: Path | None) -> str:
    """Put the app's folders first on sys.path (the root, its ``src/``, the working directory) after
    checking that no app file there shadows the standard library; the root, resolved."""
    from . import runner as scenarios

    app_root = str((root or Path.cwd()).resolve())
    if not Path(app_root).is_dir():
        raise DispelError(f"--root {root} is not a folder; name the folder that holds the app's code")
    scenarios.app_folders_first([app_root, os.path.join(app_root, "src"), os.getcwd()])
    return app_root


def probe_mode(settings: str, root: str) -> None:
    """Print the async_mode the live app passes to Flask-SocketIO ("" when it leaves it unset): run in
    a probe process by live_mode, since the import cannot be undone."""
    from . import runner as scenarios

    s = json.loads(settings)
    _app_on_path(Path(root) if root else None)
    print(scenarios.asked_mode(parse_target(s["target"], s["factory"], s["flask"])))


_PROBE = "import sys; from dispel.run.live import probe_mode; probe_mode(sys.argv[1], sys.argv[2])"


def live_mode(settings: str, root: Path | None, wanted: str = "") -> str:
    """The async mode the live app is recorded in (modes.decide): the app's own async_mode (read by
    importing it in a probe process), else ``wanted`` (--async-mode), else threading. A conflict,
    eventlet, or gevent with a python-engineio too old for it: one error line."""
    import subprocess

    proc = subprocess.run([sys.executable, "-c", _PROBE, settings, str(root or "")], cwd=os.getcwd(), capture_output=True,
                          text=True, env={k: v for k, v in os.environ.items() if k != "DISPEL_GEVENT"}, check=False)
    said = proc.stdout.strip().splitlines()
    mode = modes.decide(said[-1].strip() if proc.returncode == 0 and said else "", wanted)
    if mode == "gevent":
        why = modes.gevent_supported(metadata.version("python-engineio"))
        if why:
            raise DispelError(why)
    return mode


def child_settings(target: str, session: Path, factory: bool = False, flask: str = "", host: str = "127.0.0.1",
                   duration: float | None = None) -> str:
    """The recording child's settings, as one argument (`dispel record --live JSON`)."""
    return json.dumps({"target": target, "session": str(session), "factory": factory, "flask": flask, "host": host, "duration": duration})


def record_child(settings: str, out: Path, port: int | None, root: Path | None, deny: tuple[str, ...]) -> LiveRecorded:
    """`dispel record --live JSON` (child_settings): record_live with those settings."""
    s = json.loads(settings)
    return record_live(parse_target(s["target"], s["factory"], s["flask"]), out, Path(s["session"]), port, s["host"], s["duration"], root, deny)


def said_lines(r: LiveRecorded, running_line: Callable) -> list[str]:
    """What the recording child says once it wrote the trace (the report passes them on)."""
    out = [f"redacted {r.redacted} value{'s' if r.redacted != 1 else ''} (secret settings and credentials; the trace keeps none of them)", r.app]
    if r.folded:
        out.append(folded_line(r.folded))
    return out + ([running_line(r.running)] if r.running else [])


def folded_line(folded) -> str:
    """The console's line for the iterations the recorder kept a count of instead of rows (record.fold)."""
    return "kept a count instead of rows for repeated iterations (memory stays bounded): " + ", ".join(
        f"{thread} ({n} iterations)" for thread, n in folded)
