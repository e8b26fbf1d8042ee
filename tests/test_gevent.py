"""gevent: the async mode an app gets, and the recorder following greenlets."""
from __future__ import annotations

import subprocess
import sys

import pytest

from dispel import modes

EMITTER = """
from dispel import modes
from flask_socketio import SocketIO
ctx = modes.unset_is_threading() if {hide} else __import__("contextlib").nullcontext()
with ctx:
    s = SocketIO(message_queue="redis://127.0.0.1:1")
print(s.server.eio.async_mode)
"""


def _mode_of_unset_app(hide: bool) -> str:
    out = subprocess.run([sys.executable, "-c", EMITTER.format(hide=hide)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.slow
def test_an_app_leaving_async_mode_unset_runs_threading_in_a_threading_run():
    # gevent is installed (the lock): Flask-SocketIO alone would pick it
    assert _mode_of_unset_app(False) == "gevent"
    assert _mode_of_unset_app(True) == "threading"


def test_hiding_undoes_itself_and_leaves_an_imported_package_alone():
    before = "gevent" in sys.modules
    with modes.unset_is_threading():
        if not before:
            assert sys.modules["gevent"] is None
    assert ("gevent" in sys.modules) == before
