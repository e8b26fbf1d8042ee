"""Run a tiny gevent program (programs.green) under the recorder in a process of its own, as a
gunicorn gevent worker runs an app: gevent's pure-Python modules (PURE_PYTHON=1), the process
monkey-patched before the program is imported. Prints the trace file (JSON).

    python tests/programs/gevent_run.py FUNCTION   (DISPEL_CORE picks the core)
"""
import os
import sys

os.environ["PURE_PYTHON"] = "1"  # before gevent is imported

from gevent import monkey

monkey.patch_all()

import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import gevent
from dispel.pins.installed import PYTHON_VERSION
from dispel.record.cores import recorder_for
from dispel.tracefiles.codec import Root, trace_to_json
from dispel.tracefiles.recording import trace_from_recording

from programs import green

GEVENT = str(Path(gevent.__file__).parent) + "/"
TRACED = tuple(GEVENT + name for name in ("queue.py", "event.py", "greenlet.py"))
PROGRAMS = str(HERE) + "/"


def want(code) -> bool:
    return code.co_filename.startswith((PROGRAMS, *TRACED)) and not code.co_filename.endswith("gevent_run.py")


ROOTS = [
    Root(PROGRAMS, str(HERE.parent), "tests", "0"),
    Root(GEVENT, str(Path(GEVENT).parent), "gevent", gevent.__version__),
    Root(sysconfig.get_paths()["stdlib"] + "/", sysconfig.get_paths()["stdlib"], "python", PYTHON_VERSION, "Lib/"),
]


def main(name: str) -> None:
    recorder = recorder_for(want)
    with recorder:
        getattr(green, name)()
    if recorder.errors:
        raise SystemExit(f"recorder: {recorder.errors}")
    trace = trace_from_recording(recorder, name, 0, ROOTS, {})
    sys.stdout.write(trace_to_json(trace))


if __name__ == "__main__":
    main(sys.argv[1])
