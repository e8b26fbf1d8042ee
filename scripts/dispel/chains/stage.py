"""The chains stage, over a Project: trace files -> one chain file per journey."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from .. import catalog
from ..model import (
    Chain,
    DispelError,
    TraceFile,
)
from ..pins.installed import (
    lines_by_source,
)
from ..pins.stage import refuse_foreign_python
from ..project import (
    Project,
    dump_json,
    load_traces,
    write_all_atomic,
)
from ..tracefiles.codec import (
    chain_to_dict,
)
from . import finders


def build_chains(traces: Mapping[str, TraceFile], only: Iterable[str] = ()) -> dict[str, Chain]:
    return finders.build_all(traces, lines_by_source(traces), only)


def chain_files(built: Mapping[str, Chain], folder: Path) -> dict[Path, str]:
    return {folder / f"{name}.json": dump_json(chain_to_dict(chain)) for name, chain in built.items()}


def chains(project: Project, journeys: Iterable[str] = (), traces: Path | None = None) -> dict[str, Chain]:
    """Trace files -> <traces>/chains/<journey>.json, all or none; returns the chains built."""
    folder = traces or project.traces
    if folder.resolve() == project.traces.resolve():
        refuse_foreign_python(project, "rebuilding the project's chains")
    found = load_traces(project, folder)
    if not found:
        raise DispelError(f"no trace files in {project.shown(folder)}; record them first with `dispel record`")
    journeys = tuple(journeys)
    if not journeys and folder.resolve() != project.traces.resolve():
        # another version set's folder (traces/oldest/): the journeys of the scenarios recorded there
        recorded = {name.split(".")[0] for name in found}
        journeys = tuple(j.name for j in catalog.JOURNEYS if j.scenario in recorded)
    built = build_chains(found, journeys)
    write_all_atomic(chain_files(built, folder / "chains"))
    return built
