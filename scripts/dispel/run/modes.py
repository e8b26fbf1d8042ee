"""Flask-SocketIO's async modes as dispel runs them: which one a run is in, and what an app that
leaves ``async_mode`` unset gets.

Flask-SocketIO (python-engineio) picks the first mode whose packages import: eventlet, then
gevent, then threading. dispel's environment has gevent installed (the gevent scenarios), so a
run in the threading mode hides the greenlet packages from the app: an app that leaves
``async_mode`` unset gets threading there, as it did before gevent was installed, and the
failed imports on the way are the ones it always made.
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

GREEN_PACKAGES = ("eventlet", "gevent")


@contextlib.contextmanager
def unset_is_threading() -> Iterator[None]:
    """Within: importing eventlet or gevent fails (ImportError), unless one was imported already.
    Flask-SocketIO's own choice then falls to threading."""
    hidden = [name for name in GREEN_PACKAGES if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # the import system's "not importable"
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


def run_options() -> dict[str, bool]:
    """What ``SocketIO.run`` is also given in this process's mode: werkzeug's ``allow_unsafe_werkzeug``
    in threading mode, nothing in gevent mode (Flask-SocketIO before 5.3.5 passes it on to gevent's server)."""
    return {} if running_mode() == "gevent" else {"allow_unsafe_werkzeug": True}


def running_mode() -> str:
    """The async mode this process runs apps in: "gevent" when gevent has monkey-patched it
    (`DISPEL_GEVENT=1 python -m dispel`, see __main__), else "threading"."""
    monkey = sys.modules.get("gevent.monkey")
    return "gevent" if monkey is not None and monkey.is_module_patched("threading") else "threading"


class GreenServer:
    """gevent's WSGI server with the werkzeug server's handle: ``shutdown()`` stops it."""

    def __init__(self, server) -> None:
        self.server = server

    def shutdown(self) -> None:
        self.server.stop(timeout=1)


def green_server(port: int, listening: bool = True) -> GreenServer | None:
    """gevent's WSGI server on ``port`` (Flask-SocketIO's run keeps it as ``wsgi_server``); with
    ``listening``, only once it has started (bound and listening)."""
    import gc

    from gevent.pywsgi import WSGIServer

    for obj in gc.get_objects():
        if isinstance(obj, WSGIServer) and getattr(obj, "socket", None) is not None and obj.server_port == port:
            return GreenServer(obj) if not listening or obj.started else None
    return None


def green_tasks() -> list[str]:
    """What each live greenlet runs, as a thread's name says it (function qualnames): the
    handlers, each connection's reader, writer and request greenlets."""
    import gc

    import greenlet

    out = []
    for obj in gc.get_objects():
        if isinstance(obj, greenlet.greenlet) and not obj.dead and obj:
            run = getattr(obj, "_run", None) or getattr(obj, "run", None)
            name = getattr(run, "__qualname__", "") or getattr(getattr(run, "__func__", None), "__qualname__", "")
            out.append(f"{getattr(run, '__module__', '')}.{name}")
    return out


# gevent's pure-Python modules a gevent-mode recording traces: its greenlets and hub, its Queue
# and Event (the wake-ups), and its WSGI server (the server's side of each connection).
GEVENT_TRACED = ("greenlet.py", "hub.py", "queue.py", "event.py", "pywsgi.py", "baseserver.py", "server.py")


def traced_files() -> tuple[str, ...]:
    """The files a recording in this process traces beyond the catalogue's packages: gevent's
    (GEVENT_TRACED) in gevent mode, none in threading mode."""
    if running_mode() != "gevent":
        return ()
    import os

    import gevent

    folder = os.path.dirname(os.path.abspath(gevent.__file__))
    return tuple(os.path.join(folder, name) for name in GEVENT_TRACED)


def traced_dists() -> tuple[str, ...]:
    """The distributions beyond the catalogue's DISTS whose code a recording in this process traces."""
    from ..catalog import GEVENT_DISTS

    return tuple(d.name for d in GEVENT_DISTS) if running_mode() == "gevent" else ()


# python-engineio's gevent driver serves WebSocket through simple-websocket from this version on
# (before it, only with gevent-websocket installed, which dispel does not trace).
GEVENT_ENGINEIO = (4, 8, 0)
EVENTLET = ("async_mode='eventlet': dispel does not trace eventlet, whose maintainers discourage new use and "
            "plan its retirement; run the app with async_mode=\"gevent\" (as a gunicorn gevent worker does) or \"threading\"")


def decide(app_mode: str, file_mode: str) -> str:
    """The mode a recording runs an app in: the app's own ``async_mode`` (``app_mode``, "" when it
    leaves it unset), else the scenario file's (``file_mode``), else threading. A conflict,
    eventlet or a mode dispel does not trace is a DispelError of one line."""
    from ..model import DispelError

    if app_mode and file_mode and app_mode != file_mode:
        raise DispelError(f"async_mode: the app asks for {app_mode!r}, the scenario file for {file_mode!r}; "
                          f"the file's applies only when the app leaves it unset: remove [app] async_mode or make them agree")
    mode = app_mode or file_mode or "threading"
    if mode == "eventlet":
        raise DispelError(EVENTLET)
    if mode not in ("threading", "gevent"):
        raise DispelError(f"async_mode={mode!r}: dispel traces 'threading' and 'gevent'; run the app with one of them")
    return mode


def gevent_supported(engineio_version: str) -> str:
    """Why gevent mode cannot be traced with this python-engineio ("" when it can): one line."""
    parts = tuple(int(p) for p in engineio_version.split(".")[:3] if p.isdigit())
    if parts >= GEVENT_ENGINEIO:
        return ""
    lowest = ".".join(map(str, GEVENT_ENGINEIO))
    return (f"async_mode='gevent' needs python-engineio {lowest} or later (its gevent driver serves WebSocket through "
            f"simple-websocket); this is {engineio_version}: upgrade it, or run the app with async_mode=\"threading\"")
