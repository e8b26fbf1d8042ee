"""`dispel bench`: tracing overhead measured side by side (untraced runs, the anchors a user
would compare with, and each recorder core, alternating, each in a fresh interpreter), peak
memory, regeneration time per stage, and check time.

Figures are printed, never asserted: on a noisy machine only ratios from one run mean anything.
"""
from __future__ import annotations

import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .. import catalog
from ..model import DispelError
from ..pins.installed import PYTHON_VERSION
from ..project import Project
from ..record.recorder import Tracer
from ..run import runner as scenarios
from ..run.launchers import ClientProcess
from .cores import available_cores, core_missing, recorder_for
from .recorder import NullRecorder

# Anchors: no tracing; a global sys.settrace function that returns None (the floor of
# any settrace recorder); VizTracer (a C profiler that logs every call with a timestamp,
# a bench-only extra). Then "core:NAME" for each recorder core.
ANCHORS = ("untraced", "empty-settrace", "viztracer")
MODES = (*ANCHORS, "core:py", "core:c", "core:sysmon", "core:sysmon-py")
# The same workload in gevent mode (the sample app, which leaves async_mode unset, in an interpreter gevent
# monkey-patched first, as the `gevent` scenario runs it): untraced, and under the default core.
GEVENT_MODES = ("gevent:untraced", "gevent:core")
_PATCHED = ("import os, runpy, sys; os.environ['PURE_PYTHON'] = '1'; from gevent import monkey; monkey.patch_all(); "
            "runpy.run_module('dispel.record.bench', run_name='__main__')")


class EmptySettrace(NullRecorder):
    """A global trace function that returns None, on every thread the scenario's server starts."""

    @staticmethod
    def _nothing(frame, event, arg):
        return None

    def start(self) -> None:
        threading.settrace(self._nothing)
        sys.settrace(self._nothing)

    def stop(self) -> None:
        sys.settrace(None)
        threading.settrace(None)

    def pause(self):
        return _SettraceOff(self._nothing)


class _SettraceOff:
    def __init__(self, fn) -> None:
        self._fn = fn

    def __enter__(self) -> None:
        sys.settrace(None)

    def __exit__(self, *exc: object) -> None:
        sys.settrace(self._fn)


class VizTracerAnchor(NullRecorder):
    """VizTracer on every thread, entries kept in memory (never saved: that is after the run)."""

    def __init__(self) -> None:
        super().__init__()
        from viztracer import VizTracer

        self._tracer = VizTracer(verbose=0, tracer_entries=2_000_000)

    def start(self) -> None:
        self._tracer.start()

    def stop(self) -> None:
        self._tracer.stop()


def missing(mode: str) -> str:
    """Why ``mode`` cannot run here ("" when it can)."""
    if mode.startswith("gevent:"):
        return "" if importlib.util.find_spec("gevent") else "gevent is not installed: pip install 'dispel[gevent]'"
    if mode == "viztracer" and importlib.util.find_spec("viztracer") is None:
        return "VizTracer is not installed: pip install 'dispel[bench]' (the bench extra)"
    if mode.startswith("core:"):
        return core_missing(mode[5:]) or ("" if mode[5:] in available_cores() else "the same core as another mode here")
    return ""


def run_once(mode: str, timeout: float = 120.0) -> dict:
    """One run of the bench scenario in this interpreter under ``mode``: its figures. A gevent mode
    runs the sample app in this interpreter, which gevent has patched (_PATCHED): it picks gevent mode."""
    app_module = "dispel.sample_app.app"
    if mode.startswith("gevent:"):
        mode = mode[len("gevent:"):]
        mode = f"core:{available_cores()[0]}" if mode == "core" else mode
    if mode.startswith("core:"):
        recorder: Tracer = recorder_for(scenarios.wanted_code(), mode[5:])
    else:
        recorder = {"untraced": NullRecorder, "empty-settrace": EmptySettrace, "viztracer": VizTracerAnchor}[mode]()
    port = scenarios.free_port()
    steps: dict[str, float] = {}
    scenarios.run("bench", recorder, lambda p: ClientProcess(p, 0.0), app_module=app_module, timeout=timeout, port=port, timings=steps)
    seconds = sum(steps.values())  # the workload itself: not interpreter or server start-up
    if recorder.errors:
        raise DispelError(f"the recorder disabled itself: {recorder.errors[0]}")
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "peak_kb": peak_kb, "calls": len(recorder.rows())}


def _timed(project: Project, argv: list[str], what: str, must_pass: bool = True) -> tuple[float, str]:
    begin = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=project.root, check=False)
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
    for core in available_cores():
        recorder = recorder_for(lambda code: code is add.__code__, core)
        recorder.start()
        try:
            out[f"core {core}"] = loop()
        finally:
            recorder.stop()
    return out


def bench_queue(reps: int, say: Callable[[str], None] = print) -> None:
    """The scenario of several processes, untraced and traced (three traced processes), alternating:
    the whole run (Redis, three processes, two clients, traces written) and its steps alone."""
    from ..run import multiprocess as processes

    why = processes.redis_missing()
    if why:
        say(f"queue: left out: {why}")
        return
    sc = catalog.process_scenario("queue")
    runs: dict[str, list[tuple[float, float]]] = {"untraced": [], "traced": []}
    phases: dict[str, list[tuple[float, float]]] = {"untraced": [], "traced": []}
    for rep in range(reps):
        for mode, mode_runs in runs.items():
            with tempfile.TemporaryDirectory(prefix="dispel-bench-queue-") as tmp:
                timings: dict[str, float] = {}
                processes.run(sc, Path(tmp), 120, timings, traced=mode == "traced")
                step_time = sum(v for k, v in timings.items() if k not in processes.PHASES)
                mode_runs.append((timings["total"], step_time))
                phases[mode].append((timings["start"], timings["finish"]))
        say(f"  queue rep {rep + 1}: " + ", ".join(f"{m} {runs[m][-1][0]:.2f}s (steps {runs[m][-1][1]:.2f}s)" for m in runs))
    total = {m: statistics.median(t for t, _ in r) for m, r in runs.items()}
    steps = {m: statistics.median(s for _, s in r) for m, r in runs.items()}
    say(f"queue ({len(sc.processes)} processes, {len(sc.steps)} steps), median of {reps}: "
        f"whole run untraced {total['untraced']:.2f}s, traced {total['traced']:.2f}s (x{total['traced'] / total['untraced']:.2f}); "
        f"steps alone untraced {steps['untraced']:.2f}s, traced {steps['traced']:.2f}s (x{steps['traced'] / steps['untraced']:.2f})")
    say("queue phases, median: " + "; ".join(
        f"{m} start {statistics.median(a for a, _ in p):.2f}s, finish {statistics.median(b for _, b in p):.2f}s" for m, p in phases.items()
    ) + " (start: Redis and every process ready; finish: servers stopped, traces normalized and written)")
    say(f"queue recording time (Redis, {len(sc.processes)} traced processes, traces written): {total['traced']:.2f}s")


def bench(project: Project, reps: int = 5, skip_regen: bool = False, skip_scale: bool = False, say: Callable[[str], None] = print,
          skip_queue: bool = False) -> float:
    """Measure and ``say`` every figure as it comes; returns the overhead ratio (said last)."""
    if reps < 1:
        raise DispelError("--reps must be at least 1")
    me = [sys.executable, "-m", "dispel"]
    modes = [m for m in (*MODES, *GEVENT_MODES) if not missing(m)]
    say(f"bench: {os.cpu_count()} cores, Python {PYTHON_VERSION}, scenario 'bench' (connect, 200 chat round trips, disconnect)")
    for m in (*MODES, GEVENT_MODES[0]):
        if missing(m):
            say(f"  note: {m} left out: {missing(m)}")
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for rep in range(reps):
        for mode in modes:  # alternating, so drift in the machine hits all alike
            argv = [sys.executable, "-c", _PATCHED, mode] if mode.startswith("gevent:") else [sys.executable, "-m", "dispel.record.bench", mode]
            _, out = _timed(project, argv, f"the {mode} run")
            runs[mode].append(json.loads(out.strip().splitlines()[-1]))
        say(f"  rep {rep + 1}: " + ", ".join(f"{m} {runs[m][-1]['seconds']:.3f}s" for m in modes))
    med = {m: statistics.median(r["seconds"] for r in runs[m]) for m in modes}
    peak = {m: statistics.median(r["peak_kb"] for r in runs[m]) for m in modes}
    say(f"median of {reps} runs each (ratio to untraced; peak memory as max RSS, ratio to untraced):")
    for m in modes:
        calls = f", {runs[m][-1]['calls']} calls recorded" if m.startswith("core:") else ""
        say(f"  {m:15} {med[m]:.3f}s  x{med[m] / med['untraced']:.2f}   peak {peak[m] / 1024:.1f} MiB  x{peak[m] / peak['untraced']:.2f}{calls}")
    default = f"core:{available_cores()[0]}"
    say(f"peak memory ratio ({default}): {peak[default] / peak['untraced']:.2f}")
    if "gevent:core" in med:
        say(f"gevent mode ({default}, the same workload on the sample app in gevent mode): untraced {med['gevent:untraced']:.3f}s, "
            f"traced {med['gevent:core']:.3f}s, overhead ratio {med['gevent:core'] / med['gevent:untraced']:.2f} "
            f"(threading mode: {med[default] / med['untraced']:.2f})")
    if not skip_regen:
        with tempfile.TemporaryDirectory(prefix="dispel-bench-") as tmp:
            t = Path(tmp)
            shutil.copytree(project.docs, t / "docs", ignore=shutil.ignore_patterns("chains"))
            steps = [
                ("record", me + ["record", "--out", str(t / "traces")]),
                ("chains", me + ["chains", "--traces", str(t / "traces")]),
                ("pin verification", [sys.executable, "-c", ("import sys; from dispel.pins.stage import verify_installed; from dispel.project import Project, load_lock; "
                                      "sys.exit(bool(verify_installed(load_lock(Project().lock))))")]),
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
    if not skip_queue:
        bench_queue(reps, say)
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
    ratio = med[default] / med["untraced"]
    say(f"overhead ratio: {ratio:.2f}")
    return ratio


if __name__ == "__main__":  # one measured run in a fresh interpreter: python -m dispel.record.bench MODE
    if len(sys.argv) != 2 or sys.argv[1] not in (*MODES, *GEVENT_MODES):
        sys.exit(f"usage: python -m dispel.record.bench {{{','.join((*MODES, *GEVENT_MODES))}}}")
    try:
        print(json.dumps(run_once(sys.argv[1])))
    except DispelError as exc:
        sys.exit(f"dispel: error: {exc}")
