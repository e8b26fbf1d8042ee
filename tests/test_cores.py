"""The recorder cores against each other, as coverage.py tests its tracers: on one interpreter,
every core writes byte-identical trace files for every default scenario; without the C core
(no compiler), the install step still succeeds and the Python core records."""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dispel.check import drift
from dispel.check import stage as verify
from dispel.project import Project
from dispel.record.cores import available_cores

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def record_all(core: str, out: Path) -> subprocess.CompletedProcess:
    """Every default scenario with ``core``, one after the other: recorded side by side, they
    load a small machine enough to reach races that one recording does not (docs/how.md)."""
    names, _ = verify.rerecordable()
    env = {**os.environ, "DISPEL_CORE": core}
    runs = [subprocess.run([sys.executable, "-m", "dispel", "record", name, "--out", str(out)],
                           cwd=ROOT, env=env, capture_output=True, text=True) for name in names]
    failed = [r for r in runs if r.returncode != 0]
    return subprocess.CompletedProcess([], failed[0].returncode if failed else 0,
                                       "".join(r.stdout for r in runs), "".join(r.stderr for r in runs))


@pytest.mark.skipif(len(available_cores()) < 2, reason="only the Python core runs on this interpreter")
def test_every_core_writes_the_same_bytes_for_every_default_scenario(tmp_path):
    names, _ = verify.rerecordable()
    written = {}
    for core in available_cores():
        proc = record_all(core, tmp_path / core)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count(f"(recorder core: {core})") == len(names), proc.stdout
        written[core] = {n: (tmp_path / core / f"{n}.json").read_bytes() for n in names}
    reference = written.pop("py")
    for core, traces in written.items():
        for name in names:
            # the one tolerated race (docs/how.md): which queued packets a writer's poll takes together
            same, _ = drift.writer_batches(reference[name].decode(), traces[name].decode())
            assert same.encode() == reference[name], f"core {core} and the Python core differ on {name}"


def test_without_a_compiler_the_install_builds_and_the_python_core_records(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copytree(ROOT / "scripts", src / "scripts", ignore=shutil.ignore_patterns("*.so", "__pycache__", "*.egg-info"))
    env = {**os.environ, "CC": str(tmp_path / "no-such-cc")}
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wheel"), str(src)],
                           env=env, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "wheel").glob("dispel-*.whl")
    listing = subprocess.run([sys.executable, "-m", "zipfile", "-l", str(wheel)], capture_output=True, text=True).stdout
    assert not re.search(r"_ctracer\.[^ ]*(\.so|\.pyd)", listing), "a compiled C core in a wheel built without a compiler"

    # This checkout without its C core: the import fails as it does when it was never built.
    blocked = "import sys; sys.modules['dispel.record._ctracer'] = None; from dispel.cli import main; sys.exit(main())"
    env = {k: v for k, v in os.environ.items() if k != "DISPEL_CORE"}
    proc = subprocess.run([sys.executable, "-c", blocked, "record", "chat", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"(recorder core: {'sysmon-py' if hasattr(sys, 'monitoring') else 'py'})" in proc.stdout
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "C recorder core is not built" in notes[0]
    committed = (Project(ROOT).traces / "chat.json").read_bytes()
    if f'"python": "{platform.python_version()}"'.encode() in committed:  # recorded on this interpreter
        same, _ = drift.writer_batches(committed.decode(), (tmp_path / "chat.json").read_text())
        assert same.encode() == committed

    proc = subprocess.run([sys.executable, "-c", blocked, "record", "chat", "--out", str(tmp_path)],
                          cwd=ROOT, env={**env, "DISPEL_CORE": "c"}, capture_output=True, text=True)
    assert proc.returncode != 0 and "DISPEL_CORE=c" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.skipif(len(available_cores()) < 2, reason="only the Python core runs on this interpreter")
def test_every_core_cuts_a_task_that_never_ends_alike(tmp_path):
    # forever.py's background task is still turning when the scenario ends: every core cuts it
    # where it is, and writes the same trace as the Python core.
    apps = ROOT / "tests" / "programs" / "apps"
    written = {}
    for core in available_cores():
        env = {**os.environ, "DISPEL_CORE": core}
        proc = subprocess.run([sys.executable, "-m", "dispel", "record", "--scenario", "forever.toml", "--out", str(tmp_path / core)],
                              cwd=apps, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert "thread-2 (forever:push_scores, " in proc.stdout and f"(recorder core: {core})" in proc.stdout
        written[core] = (tmp_path / core / "forever.json").read_text(encoding="utf-8")
    # How many turns the task made before the cut is the machine's timing (README: the trace
    # of such an app may differ from run to run, and so from core to core under load): the
    # cores must agree on what the pages show, the chains, hop for hop.
    reference = journeys_of(written.pop("py"), apps)
    for core, text in written.items():
        assert journeys_of(text, apps) == reference, f"core {core} and the Python core derive other chains from forever.toml"


def journeys_of(text: str, app: Path) -> dict[str, list[tuple]]:
    """The report's journeys of a trace: per journey, each hop's function, line, thread and edge."""
    from dispel import report_pages
    from dispel.pins.installed import lines_by_source
    from dispel.tracefiles.codec import trace_from_json

    trace = trace_from_json(text, "forever.json")
    _, built, _ = report_pages.build_chains(trace, lines_by_source({trace.scenario: trace}, app))
    return {name: [(h.func.key, h.line, h.thread, h.edge) for h in chain.hops] for name, chain in sorted(built.items())}


@pytest.mark.skipif(len(available_cores()) < 2, reason="only the Python core runs on this interpreter")
@pytest.mark.parametrize("program", ["loop", "nested"])
def test_every_core_folds_repeated_iterations_alike(program):
    # record.fold on tiny programs: every core keeps the same K iterations of each shape and
    # counts the same rest, so they write the same bytes.
    from conftest import ROOTS, want
    from dispel.record.cores import recorder_for
    from dispel.tracefiles.codec import trace_to_json
    from dispel.tracefiles.recording import trace_from_recording
    from programs import threads as prog

    run = {"loop": lambda: prog.loop(5000), "nested": lambda: prog.nested(400)}[program]
    written = {}
    for core in available_cores():
        recorder = recorder_for(want, core)
        recorder.fold_after = 3
        with recorder:
            run()
        assert recorder.rows().folded, f"core {core} folded nothing"
        written[core] = trace_to_json(trace_from_recording(recorder, program, 0, ROOTS, {}))
    reference = written.pop("py")
    assert '"folded": {"main": ' in reference
    for core, text in written.items():
        assert text == reference, f"core {core} and the Python core fold {program} differently"
