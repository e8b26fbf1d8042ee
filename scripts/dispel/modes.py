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
from typing import Iterator

GREEN_PACKAGES = ("eventlet", "gevent")


@contextlib.contextmanager
def unset_is_threading() -> Iterator[None]:
    """Within: importing eventlet or gevent fails (ImportError), unless one was imported already.
    Flask-SocketIO's own choice then falls to threading."""
    hidden = [name for name in GREEN_PACKAGES if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment] - the import system's "not importable"
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
