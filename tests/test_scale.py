"""Twenty clients at once and 1,000 messages give the same chains as one client, from a trace that stays small."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from dispel import catalog
from dispel.chains import finders
from dispel.tracefiles.codec import trace_from_json

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.scale]
SHARED = ("run", "handshake", "on", "emit")


def shape(chain):
    """A chain as the reader sees it: functions, edges, and threads by role (not by number)."""
    return [(h.func.key, h.edge, h.thread.rstrip("0123456789")) for h in chain.hops]


@pytest.fixture(scope="module")
def scale_trace(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale")
    proc = subprocess.run(
        [sys.executable, "-m", "dispel", "record", "scale", "--out", str(out), "--timeout", "400"],
        capture_output=True, text=True, cwd=ROOT, timeout=500,
    )
    assert proc.returncode == 0, proc.stderr
    path = out / "scale.json"
    return trace_from_json(path.read_text(), "scale.json"), path.stat().st_size


@pytest.mark.traced_python
@pytest.mark.parametrize("journey", SHARED)
def test_same_chains_as_one_client(scale_trace, journey):
    small = trace_from_json((ROOT / "traces" / "chat.json").read_text(), "chat.json")
    spec = catalog.journey(journey)
    assert shape(finders.build(scale_trace[0], spec)) == shape(finders.build(small, spec))


def test_the_trace_stays_small(scale_trace):
    trace, size = scale_trace
    # 20 connections, 1,000 handled messages: the repeated ones are folded, so the
    # trace holds a few handler threads per client, not a thousand.
    handlers = [t for t in trace.threads if t.name.startswith("handler-")]
    assert len(handlers) <= 3 * 20, len(handlers)
    assert size < 20 * 2**20, f"{size} bytes"
