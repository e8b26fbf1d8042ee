"""`dispel bench`'s live workload: a long `dispel report --live` recording, whose memory must stay
bounded. An app whose background task runs at 100 Hz (each turn emits to the connected client)
is recorded live (the recording child of `dispel report --live`) for 60 s with one WebSocket
client; the child's peak memory (VmHWM) is read at 10 s and at 60 s, and the growth between
them printed, with the bound the issue sets (10%). Figures are printed, never asserted.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..model import DispelError
from ..run.live import child_settings

HZ = 100
SECONDS = 60
FIRST = 10
BOUND = 0.10  # the growth from FIRST to SECONDS the live mode allows

APP = f'''"""The live bench's app: a background task at {HZ} Hz, each turn an emit to every client."""
from flask import Flask
from flask_socketio import SocketIO

app = Flask(__name__)
socketio = SocketIO(app, async_mode="threading")


def tick():
    n = 0
    while True:
        socketio.sleep({1 / HZ})
        n += 1
        socketio.emit("tick", n)


socketio.start_background_task(tick)
'''

CLIENT = '''import socketio, sys, time
c = socketio.Client(reconnection=False)
got = []
c.on("tick", lambda n: got.append(n))
c.connect(f"http://127.0.0.1:{sys.argv[1]}", transports=["websocket"])
time.sleep(float(sys.argv[2]))
print(len(got), flush=True)
c.disconnect()
'''


def peak_kib(pid: int) -> int:
    """A process's peak resident memory so far (VmHWM), KiB."""
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"^VmHWM:\s+(\d+) kB", text, re.MULTILINE)
    if not m:
        raise DispelError("bench: the live workload needs /proc/PID/status (Linux) to read peak memory")
    return int(m.group(1))


def bench_live(say: Callable[[str], None] = print, seconds: float = SECONDS, first: float = FIRST) -> float:
    """Run the live workload; say its figures; return the growth of peak memory from ``first`` to ``seconds``."""
    with tempfile.TemporaryDirectory(prefix="dispel-bench-live-") as tmp:
        folder = Path(tmp)
        (folder / "ticker100.py").write_text(APP)
        child = subprocess.Popen(
            [sys.executable, "-m", "dispel", "record", "--out", str(folder / "traces"),
             "--live", child_settings("ticker100:socketio", folder / "session.json", duration=seconds + 600)],
            cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        client = None
        try:
            assert child.stdout is not None and child.stderr is not None  # both piped
            m = None
            for line in child.stdout:  # the task's first emits may be said before the URL
                m = re.match(r"recording http://127\.0\.0\.1:(\d+)/", line)
                if m:
                    break
            if not m:
                raise DispelError(f"bench: the live recording did not start: {(child.stderr.read().strip().splitlines() or ['(no output)'])[-1]}")
            # the console says a line per emit: read on, or the full pipe stops the task
            threading.Thread(target=child.stdout.read, daemon=True).start()
            time.sleep(0.5)
            began = time.monotonic()
            client = subprocess.Popen([sys.executable, "-c", CLIENT, m.group(1), str(seconds)], stdout=subprocess.PIPE, text=True)
            time.sleep(max(0.0, began + first - time.monotonic()))
            at_first = peak_kib(child.pid)
            time.sleep(max(0.0, began + seconds - time.monotonic()))
            at_end = peak_kib(child.pid)
            ticks = client.communicate(timeout=30)[0].strip()
        finally:
            for proc in (client, child):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait()
    growth = (at_end - at_first) / at_first
    say(f"live (a background task at {HZ} Hz for {seconds:g}s, one client, {ticks or '?'} ticks received): peak memory "
        f"{at_first / 1024:.1f} MiB at {first:g}s, {at_end / 1024:.1f} MiB at {seconds:g}s: growth {growth:.1%} "
        f"(bound {BOUND:.0%}: {'within' if growth <= BOUND else 'OVER'})")
    return growth
