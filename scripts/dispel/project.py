"""A Project: where a dispel checkout keeps its inputs and outputs, and the only way they are read and written.

Every write is atomic (a temp file in the same folder, then a rename), so a failed run leaves
the old file or the new one, never half of either. Generated JSON has one layout: ``dump_json``.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .model import Chain, DispelError, Lock, TraceFile
from .pins import pinning as pins
from .render import annotation_files
from .tracefiles.codec import chain_from_dict, trace_from_json

PACKAGE = Path(__file__).resolve().parent
# The folder that holds the package dispel (and in it the sample app, dispel.sample_app): <root>/scripts/ in a checkout,
# site-packages/ when installed.
SCRIPTS = PACKAGE.parent
# The project's inputs that a report reads (its lock, the oldest set's lock, the annotations, the
# home page, the stylesheet, mkdocs.yml), copied into the package by setup.py when it is built:
# an installed (not editable) dispel reads them there, never from a repository.
SHIPPED = PACKAGE / "_project"


def _root() -> Path:
    """The project's root: the checkout dispel runs from (``<root>/scripts/dispel/``, also when
    installed editable), or else the copy of its inputs shipped inside the installed package."""
    checkout = PACKAGE.parents[1]
    if PACKAGE == checkout / "scripts" / "dispel" and (checkout / "pyproject.toml").is_file():
        return checkout
    return SHIPPED


HERE = _root()


@dataclass(frozen=True)
class Project:
    """A checkout of dispel (or a copy of one, in tests): its root and the paths under it."""

    root: Path = HERE

    @property
    def traces(self) -> Path:
        return self.root / "traces"

    @property
    def chains(self) -> Path:
        return self.traces / "chains"

    @property
    def lock(self) -> Path:
        return self.traces / "pins.lock.json"

    @property
    def locks(self) -> list[Path]:
        """Every committed lock: the project's, then the other version sets' (traces/*/pins.lock.json,
        the oldest supported set's among them), sorted; a report reuses their entries."""
        return [p for p in (self.lock, *sorted(self.traces.glob("*/pins.lock.json"))) if p.is_file()]

    @property
    def docs(self) -> Path:
        return self.root / "docs"

    @property
    def annotations(self) -> Path:
        return self.docs / "annotations"

    @property
    def scripts(self) -> Path:
        return self.root / "scripts"

    def shown(self, path: Path) -> str:
        """A path as messages show it: relative to the project when inside it."""
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half."""
    write_all_atomic({path: text})


def write_all_atomic(files: dict[Path, str]) -> None:
    """Write several files, all or none: every temp file is complete before the first rename."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, text in sorted(files.items()):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            staged.append((tmp, path))
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(text)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; generated files are for everyone to read
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise


def read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DispelError(f"{what} not found: {path} (run `make regen` to create it)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DispelError(f"cannot read {what} {path}: {exc}") from None


def read_json(path: Path, what: str) -> Any:  # what the JSON holds
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DispelError(f"{what} {path} is not valid JSON (line {exc.lineno}: {exc.msg}); regenerate it") from None


def dump_json(data: object) -> str:
    """The one JSON layout of every generated file: sorted keys, 1-space indent, newline at end."""
    return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def swap_folder(new: Path, out: Path) -> None:
    """``new`` (a complete folder beside ``out``) becomes ``out``; what was there before is
    removed only after the rename, so a reader sees the old folder or the new one."""
    if not out.exists():
        os.rename(new, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    os.rename(out, old / out.name)
    os.rename(new, out)
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- loaders
# The project's inputs and outputs, read back as frozen values (one line on a bad file).


def load_traces(project: Project, folder: Path | None = None) -> dict[str, TraceFile]:
    """Every trace file in ``folder`` (default: the project's traces/): scenario name -> TraceFile."""
    out = {}
    for path in sorted((folder or project.traces).glob("*.json")):
        if path.name.endswith(".lock.json"):
            continue
        out[path.stem] = trace_from_json(read_text(path, "trace file"), f"trace file {project.shown(path)}")
    return out


def load_chains(project: Project, folder: Path | None = None) -> dict[str, Chain]:
    """<folder>/*.json (default: the project's chains) -> {journey: Chain}; {} while none has been written."""
    folder = folder or project.chains
    paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
    out = {}
    for path in paths:
        chain = chain_from_dict(read_json(path, "chain file"), origin=f"chain file {project.shown(path)}")
        out[chain.journey] = chain
    return out


def load_lock(path: Path) -> Lock:
    """The committed lock, validated; DispelError (one line: what is wrong, how to fix) otherwise."""
    if not path.is_file():
        raise DispelError(f"lock file not found: {path} (create it with `make pin PIN_ARGS=...`)")
    try:
        return pins.lock_from_json(read_json(path, "lock file"))
    except DispelError as exc:
        raise DispelError(f"lock file {path} is not a valid lock: {exc}; regenerate it: `make pin`") from None


def project_lock(project: Project) -> Lock | None:
    """The project's lock, or None before the first `dispel pin`."""
    return load_lock(project.lock) if project.lock.is_file() else None

# The folder under traces/ of the oldest supported set (constraints/oldest.txt): its traces, chains/ and lock.
OLDEST_SET = "oldest"

def oldest_set(project: Project) -> tuple[dict[str, Chain], Lock | None]:
    """The chains and lock recorded at the oldest supported set (traces/oldest/), or ({}, None)."""
    folder = project.traces / OLDEST_SET
    path = folder / "pins.lock.json"
    return load_chains(project, folder / "chains"), (load_lock(path) if path.is_file() else None)

def load_annotations(project: Project, folder: Path | None = None) -> dict[str, annotation_files.Annotation]:
    folder = folder or project.annotations
    paths = sorted(folder.glob("*.yml")) if folder.is_dir() else []
    return annotation_files.merge_annotations((project.shown(p), read_text(p, "annotations file")) for p in paths)
