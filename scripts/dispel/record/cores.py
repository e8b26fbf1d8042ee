"""The recorder's cores by name, and which one records: DISPEL_CORE=py|c|sysmon|sysmon-py,
by default the fastest this interpreter can run (sysmon on 3.12+, c on 3.11, else py)."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from types import CodeType

from ..model import DispelError
from .recorder import CRecorder, SettraceRecorder, _Recorder

CORES: dict[str, type[_Recorder]] = {"py": SettraceRecorder, "c": CRecorder}


def c_core_missing() -> str:
    """Why the C core cannot run here ("" when it can)."""
    try:
        from . import _ctracer  # noqa: F401
    except ImportError as exc:
        return f"the C recorder core is not built ({exc})"
    return ""


def available_cores() -> tuple[str, ...]:
    """The cores this interpreter can run, the default first (each kind once)."""
    out: list[str] = []
    for name in ("sysmon", "c", "sysmon-py", "py"):
        if not core_missing(name) and CORES[name] not in [CORES[n] for n in out]:
            out.append(name)
    return tuple(out)


def core_missing(name: str) -> str:
    """Why core ``name`` cannot run here ("" when it can)."""
    if name.startswith("sysmon") and not hasattr(sys, "monitoring"):
        return f"the sys.monitoring core needs Python 3.12 or later (this is {sys.version.split()[0]})"
    if name == "c":
        if sys.version_info >= (3, 12):  # its profile events come through sys.monitoring there, unwinding returns None
            return "the C core is for Python 3.11; on 3.12 and later the sys.monitoring core takes its place"
        return c_core_missing()
    return "" if name in CORES else f"no recorder core is called {name!r}"


def core_name(core: str | None = None) -> str:
    """The core that records here: ``core``, else the one DISPEL_CORE names, else the fastest
    available; DispelError when the named one is unknown or cannot run."""
    name = core or os.environ.get("DISPEL_CORE", "")
    if not name:
        return available_cores()[0]
    if name not in CORES:
        raise DispelError(f"DISPEL_CORE={name!r} is no recorder core; choose one of: {', '.join(CORES)}")
    why = core_missing(name)
    if why:
        raise DispelError(f"DISPEL_CORE={name}: {why}; choose one of: {', '.join(available_cores())}")
    return name


def recorder_for(want: Callable[[CodeType], bool], core: str | None = None) -> _Recorder:
    """A recorder with the core DISPEL_CORE names (py, c, sysmon or sysmon-py); by default the fastest available."""
    name = core_name(core)
    why = c_core_missing()
    if why and not (core or os.environ.get("DISPEL_CORE")):
        print(f"note: {why}; recording with the {CORES[name].core} core (install gcc and the Python headers, then `make .venv/.installed`)", file=sys.stderr)
    return CORES[name](want)


if sys.version_info >= (3, 12) and hasattr(sys, "monitoring"):  # (the version check tells a type checker)
    from .sysmon import (  # only where sys.monitoring exists
        CSysmonRecorder,
        SysmonRecorder,
    )

    # sysmon: its callbacks in C when the extension is built; sysmon-py: always in Python
    CORES["sysmon"] = SysmonRecorder if c_core_missing() else CSysmonRecorder
    CORES["sysmon-py"] = SysmonRecorder
