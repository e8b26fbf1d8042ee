"""`dispel bench`: tracing overhead measured side by side (untraced and traced runs alternating,
each in a fresh interpreter), peak memory, regeneration time per stage, and check time.

Figures are printed, never asserted: on a noisy machine only ratios from one run mean anything.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from . import scenarios
from .drivers import ClientProcess
from .installed import PYTHON_VERSION
from .model import DispelError
from .project import Project
from .record import NullRecorder, SettraceRecorder

MODES = ("untraced", "traced")


def run_once(mode: str, timeout: float = 120.0) -> dict:
    """One run of the bench scenario in this interpreter, traced or not: its figures."""
    recorder = SettraceRecorder(scenarios.wanted_code()) if mode == "traced" else NullRecorder()
    port = scenarios.free_port()
    steps: dict[str, float] = {}
    scenarios.run("bench", recorder, lambda p: ClientProcess(p, 0.0), timeout=timeout, port=port, timings=steps)
    seconds = sum(steps.values())  # the workload itself: not interpreter or server start-up
    if recorder.errors:
        raise DispelError(f"the recorder disabled itself: {recorder.errors[0]}")
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "peak_kb": peak_kb, "calls": len(recorder.rows().calls)}


def _timed(project: Project, argv: list[str], what: str, must_pass: bool = True) -> tuple[float, str]:
    begin = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=project.root)
    took = time.perf_counter() - begin
    if proc.returncode != 0 and must_pass:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise DispelError(f"bench: {what} failed: {tail}")
    return took, proc.stdout


def per_call_costs(n: int = 100_000) -> dict[str, float]:
    """Microseconds per call: untraced, under an empty local tracer, and under the recorder."""

    def add(a, b):
        return a + b

    def loop() -> float:
        begin = time.perf_counter()
        total = 0
        for i in range(n):
            total = add(total, i)
        return (time.perf_counter() - begin) / n * 1e6

    def empty(frame, event, arg):
        return empty

    out = {"untraced": loop()}
    sys.settrace(empty)
    try:
        out["empty tracer"] = loop()
    finally:
        sys.settrace(None)
    recorder = SettraceRecorder(lambda code: code is add.__code__)
    recorder.start()
    try:
        out["dispel recorder"] = loop()
    finally:
        recorder.stop()
    return out


def bench(project: Project, reps: int = 5, skip_regen: bool = False, skip_scale: bool = False, say: Callable[[str], None] = print) -> float:
    """Measure and ``say`` every figure as it comes; returns the overhead ratio (said last)."""
    if reps < 1:
        raise DispelError("--reps must be at least 1")
    me = [sys.executable, "-m", "dispel"]
    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    say(f"bench: {os.cpu_count()} cores, Python {PYTHON_VERSION}, scenario 'bench' (connect, 200 chat round trips, disconnect)")
    for rep in range(reps):
        for mode in MODES:  # alternating, so drift in the machine hits both alike
            _, out = _timed(project, [sys.executable, "-m", "dispel.bench", mode], f"the {mode} run")
            runs[mode].append(json.loads(out.strip().splitlines()[-1]))
        say(f"  rep {rep + 1}: untraced {runs['untraced'][-1]['seconds']:.3f}s, traced {runs['traced'][-1]['seconds']:.3f}s")
    med = {m: statistics.median(r["seconds"] for r in runs[m]) for m in runs}
    peak = {m: max(r["peak_kb"] for r in runs[m]) for m in runs}
    say(f"median wall time: untraced {med['untraced']:.3f}s, traced {med['traced']:.3f}s ({runs['traced'][-1]['calls']} calls recorded)")
    say(f"peak memory (max RSS): untraced {peak['untraced'] / 1024:.1f} MiB, traced {peak['traced'] / 1024:.1f} MiB, ratio {peak['traced'] / peak['untraced']:.2f}")
    if not skip_regen:
        with tempfile.TemporaryDirectory(prefix="dispel-bench-") as tmp:
            t = Path(tmp)
            shutil.copytree(project.docs, t / "docs", ignore=shutil.ignore_patterns("chains"))
            steps = [
                ("record", me + ["record", "--out", str(t / "traces")]),
                ("chains", me + ["chains", "--traces", str(t / "traces")]),
                ("pin verification", [sys.executable, "-c", "import sys; from dispel import stages; from dispel.project import Project; "
                                      "sys.exit(bool(stages.verify_installed(stages.load_lock(Project().lock))))"]),
                ("render", me + ["render", "--chains", str(t / "traces" / "chains"), "--out", str(t / "docs")]),
                ("mkdocs build", [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(t / "site")]),
            ]
            total = 0.0
            for what, argv in steps:
                took, _ = _timed(project, argv, what)
                total += took
                say(f"  {what}: {took:.2f}s")
            say(f"full regeneration: {total:.2f}s")
        took, out = _timed(project, me + ["check"], "dispel check", must_pass=False)
        say(f"offline check: {took:.2f}s ({(out.strip().splitlines() or [''])[-1]})")
    if not skip_scale:
        with tempfile.TemporaryDirectory(prefix="dispel-bench-scale-") as tmp:
            took, out = _timed(project, me + ["record", "scale", "--out", tmp, "--timeout", "600"], "the scale recording")
            size = (Path(tmp) / "scale.json").stat().st_size
            peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            say(f"scale (20 clients, 1,000 messages): {took:.1f}s, {out.strip().splitlines()[-1].split(': ', 1)[-1].split(' ->')[0]}, "
                f"trace {size / 2**20:.1f} MiB, peak memory of any run so far {peak_mib:.1f} MiB")
    # Last: the recording it makes grows this process, and children inherit its peak.
    per_call = per_call_costs()
    say("cost per call of a two-argument function: " + ", ".join(f"{k} {v:.2f} us" for k, v in per_call.items()))
    ratio = med["traced"] / med["untraced"]
    say(f"overhead ratio: {ratio:.2f}")
    return ratio


if __name__ == "__main__":  # one measured run in a fresh interpreter: python -m dispel.bench MODE
    if len(sys.argv) != 2 or sys.argv[1] not in MODES:
        sys.exit(f"usage: python -m dispel.bench {{{','.join(MODES)}}}")
    try:
        print(json.dumps(run_once(sys.argv[1])))
    except DispelError as exc:
        sys.exit(f"dispel: error: {exc}")
