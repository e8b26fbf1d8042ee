"""Facts about what is installed here: the traced distributions' files and blobs, this
interpreter's standard library, the sample app's sources and every package's licensing.

A shell module: it reads installed files and metadata and hands plain values to the pure core.
"""
from __future__ import annotations

import linecache
import os
import platform
import re
import sys
import sysconfig
from collections.abc import Iterable, Mapping
from importlib import metadata
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import CodeType
from typing import Self

from ..catalog import DIST_NAMES
from ..model import (
    PYTHON,
    Chain,
    DispelError,
    Func,
    Lock,
    Pin,
    Source,
    TraceFile,
    normalize_dist,
    text_lines,
)
from ..project import HERE, PACKAGE, SCRIPTS, read_text
from ..tracefiles.codec import Root, def_line, locate
from . import licenses
from . import pinning as pins
from .forges import forge as forge_named
from .forges import repo_url

PYTHON_VERSION = "{}.{}.{}".format(*sys.version_info[:3])


def first_header(meta: metadata.PackageMetadata, name: str) -> str | None:
    """A metadata field's first value, None without one (``Message.get``, which the protocol
    of Python 3.11's typing does not name)."""
    return meta.get_all(name, [None])[0]


def code_roots(extra: tuple[str, ...] = ()) -> list:
    """Where each traced distribution's files live on this machine (facts for tracefile.locate);
    ``extra``: more distributions traced in one scenario only (redis)."""
    roots = []
    for dist in (*DIST_NAMES, *extra):
        try:
            d = metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            raise DispelError(f"distribution {dist!r} is not installed; run `make site` to install the pinned set") from None
        base = str(Path(str(d.locate_file(""))).resolve())
        tops = sorted({f.parts[0] for f in d.files or () if f.suffix == ".py" and len(f.parts) > 1})
        for top in tops:
            roots.append(Root(os.path.join(base, top, ""), base, dist, d.version))
    stdlib = sysconfig.get_paths()["stdlib"]
    roots.append(Root(os.path.join(stdlib, ""), stdlib, "python", PYTHON_VERSION, "Lib/"))
    roots.append(Root(str(PACKAGE / "sample_app") + "/", str(SCRIPTS), "sample_app", "local"))
    return roots


def resolve_funcs(codes, probe_codes: dict, roots: list) -> dict:
    """code object -> Func, reading source lines to find def lines (decorators skipped)."""
    out = {}
    qualnames: dict[str, dict[str, int]] = {}
    for code in codes:
        if code in probe_codes:
            name = probe_codes[code]
            out[code] = Func("_socket", f"socket.{name}", Source("builtin", PYTHON_VERSION, "Modules/socketmodule.c"), 0, 0)
            continue
        found = locate(roots, code.co_filename)
        if found is None:
            raise DispelError(f"traced code in {code.co_filename} belongs to no known distribution")
        source, module = found
        lines = linecache.getlines(code.co_filename)
        first = def_line(lines, code.co_firstlineno)
        last = max((ln for _, _, ln in code.co_lines() if ln), default=first)
        if code.co_filename not in qualnames:
            qualnames[code.co_filename] = qualname_counts("".join(lines), code.co_filename)
        overloaded = qualnames[code.co_filename].get(code.co_qualname, 1) > 1
        out[code] = Func(module, code.co_qualname, source, first, max(first, last), overloaded)
    return out


def module_code(source: str, filename: str) -> CodeType:
    """A source file's module code, not run: its cached bytecode when that is current (as
    the import system would read it), else compiled from ``source``."""
    try:
        code = SourceFileLoader("<dispel>", filename).get_code("<dispel>")
    except (ImportError, OSError, SyntaxError, ValueError, EOFError):
        code = None
    return code if isinstance(code, CodeType) else compile(source, filename, "exec")


def qualname_counts(source: str, filename: str) -> dict[str, int]:
    """How many code objects of each qualname a file defines (compiled, not imported)."""
    counts: dict[str, int] = {}
    stack = [module_code(source, filename)]
    while stack:
        code = stack.pop()
        counts[code.co_qualname] = counts.get(code.co_qualname, 0) + 1
        stack.extend(c for c in code.co_consts if hasattr(c, "co_qualname"))
    return counts


class FlaskSecrets:
    """Every Flask config setting whose name says secret (values.SECRET_NAME: SECRET_KEY,
    SECRET_KEY_FALLBACKS, API_TOKEN ...) that this process writes or reads while installed, in
    any app however it was made (a factory, a package, another process of the run): config is
    set after an app is created, so it is learned as it is written (``config[key] = value``,
    ``update``, ``setdefault``, ``from_mapping``, ``from_object``, ``from_pyfile``,
    ``app.secret_key = ...``) or read (``app.secret_key``, ``config[key]``, ``config.get``).
    ``settings()`` adds what every config still alive holds.

    The recording child installs it before the app is imported; the values reach the normalizer
    (values.learn_secrets) before any row is written. The hook is dispel's code, which no
    recorder traces: the traces are the same with it.
    """

    def __init__(self) -> None:
        self.seen: dict[tuple[str, object], None] = {}  # (name, value) in the order first seen
        self._saved: dict[str, object] = {}

    def _note(self, key: object, value: object) -> None:
        from ..tracefiles.values import SECRET_NAME

        if isinstance(key, str) and SECRET_NAME.search(key):
            frozen = tuple(value) if isinstance(value, list) else value
            try:
                self.seen.setdefault((key, frozen), None)
            except TypeError:  # an unhashable value: no string to learn
                pass

    def install(self) -> Self:
        from flask.config import Config

        note = self._note

        def __setitem__(config, key, value):  # Config's own item assignment
            note(key, value)
            dict.__setitem__(config, key, value)

        def __getitem__(config, key):
            value = dict.__getitem__(config, key)
            note(key, value)
            return value

        def get(config, key, default=None):
            value = dict.get(config, key, default)
            note(key, value)
            return value

        def setdefault(config, key, default=None):
            value = dict.setdefault(config, key, default)
            note(key, value)
            return value

        def update(config, *args, **kwargs):
            dict.update(config, *args, **kwargs)
            for key, value in dict(*args, **kwargs).items():
                note(key, value)

        hooks = {"__setitem__": __setitem__, "__getitem__": __getitem__, "get": get, "setdefault": setdefault, "update": update}
        for name, func in hooks.items():
            self._saved[name] = Config.__dict__.get(name)
            setattr(Config, name, func)
        return self

    def uninstall(self) -> None:
        from flask.config import Config

        for name, saved in self._saved.items():
            if saved is None:
                delattr(Config, name)
            else:
                setattr(Config, name, saved)
        self._saved.clear()

    def __enter__(self) -> Self:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    def settings(self) -> list[tuple[str, object]]:
        return app_settings(self)


def app_settings(watch: FlaskSecrets | None = None) -> list[tuple[str, object]]:
    """(name, value) of every setting named secret in every Flask config this process holds
    (every app, however it was made) and, with ``watch``, every one the run wrote or read;
    in a stable order, for values.learn_secrets."""
    import gc

    from flask.config import (
        Config,  # only a recording needs flask, and it has imported it already
    )

    from ..tracefiles.values import SECRET_NAME

    found: dict[tuple[str, object], None] = dict(watch.seen) if watch is not None else {}
    for obj in gc.get_objects():
        if isinstance(obj, Config):
            for key, value in dict.items(obj):
                if isinstance(key, str) and SECRET_NAME.search(key) and isinstance(value, (str, bytes, list, tuple)):
                    found.setdefault((key, tuple(value) if isinstance(value, list) else value), None)
    return sorted(found, key=lambda kv: (kv[0], repr(kv[1])))


def machine_paths() -> dict[str, str]:
    """This machine's folders, as they may appear in traced values -> stable placeholders."""
    paths = {
        str(HERE): "<project>",
        sysconfig.get_paths()["purelib"]: "<site-packages>",
        sysconfig.get_paths()["stdlib"]: "<stdlib>",
        sys.prefix: "<venv>",
        sys.base_prefix: "<python>",
    }
    return {k: v for k, v in paths.items() if len(k) > 1}


def distributions(names: Iterable[str], site: list[Path] | None = None) -> dict[str, metadata.Distribution]:
    """Installed distributions by normalized name, from ``site`` dirs or else this environment.

    Absent ones are left out.
    """
    found = {}
    for name in names:
        norm = normalize_dist(name)
        found_here = metadata.distributions(name=norm, path=[str(p) for p in site]) if site else metadata.distributions(name=norm)
        dist = next(iter(found_here), None)
        if dist is not None:
            found[norm] = dist
    return found


def installed_blobs(
    dists: Iterable[str] = (), stdlib: Iterable[str] = (), site: list[Path] | None = None
) -> dict[str, pins.Installed]:
    """Blob hashes of what is installed now, for ``pins.verify(lock, installed_blobs(...))``.

    ``dists``: distribution names; each installed one maps to its version and the blob of every
    ``.py`` file it installed (keyed by path inside site-packages). Absent ones are left out.
    ``stdlib``: CPython ``Lib/...`` paths, hashed from this interpreter under key ``"python"``.
    ``site``: directories to look for distributions in instead of this environment (tests).
    """


    out: dict[str, pins.Installed] = {}
    for name, dist in distributions(dists, site).items():
        if dist.files is None:
            raise DispelError(f"{name} {dist.version} has no file list (RECORD); reinstall it with pip")
        blobs = {}
        for f in dist.files:
            rel = f.as_posix()
            if rel.endswith(".py") and not rel.startswith("../"):
                path = Path(str(dist.locate_file(f)))
                if path.is_file():
                    blobs[rel] = pins.blob_sha(path.read_bytes())
        out[name] = pins.Installed(name, dist.version, blobs, license_blobs(dist))
    stdlib = list(stdlib)
    if stdlib:
        root = Path(sysconfig.get_paths()["stdlib"])
        blobs = {}
        for rel in stdlib:
            path = root / rel.removeprefix("Lib/")
            if path.is_file():
                blobs[rel] = pins.blob_sha(path.read_bytes())
        out[PYTHON] = pins.Installed(PYTHON, platform.python_version(), blobs)
    return out


def license_blobs(dist: metadata.Distribution) -> dict[str, str]:
    """The license files a distribution ships in its .dist-info (path inside site-packages -> blob)."""
    out = {}
    for f in dist.files or ():
        rel = f.as_posix()
        if ".dist-info/" in rel and re.search(r"LICEN[CS]E|COPYING", f.name, re.IGNORECASE):
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                out[rel] = pins.blob_sha(path.read_bytes())
    return out


def installed_file(source: Source, app_root: Path | None = None) -> Path | None:
    """Where a hop's file is installed here; None for C code or a distribution not installed.
    ``app_root``: the folder of a scenario file's app (default: the sample app's scripts/)."""
    if source.dist == "builtin":
        return None
    if source.dist == "python":
        # A standard-library source recorded on another Python is not this interpreter's file.
        if source.version not in ("", PYTHON_VERSION):
            return None
        return Path(sysconfig.get_paths()["stdlib"]) / source.path.removeprefix("Lib/")
    if source.dist == "sample_app":
        return (app_root or SCRIPTS) / source.path
    dist = distributions([source.dist]).get(normalize_dist(source.dist))
    return Path(str(dist.locate_file(source.path))) if dist is not None else None


def hop_sources(chains: Iterable[Chain], app_root: Path | None = None) -> dict[Source, bytes]:
    """The installed bytes of every file a hop lives in (the same files the lock proves)."""
    out = {}
    for chain in chains:
        for hop in chain.hops:
            src = hop.func.source
            if src in out:
                continue
            path = installed_file(src, app_root)
            if path is None:
                continue
            try:
                out[src] = path.read_bytes()
            except OSError as exc:
                raise DispelError(f"cannot read {src.dist} {src.path} for {hop.func.key}: {exc}") from None
    return out


def lines_by_source(traces: Mapping[str, TraceFile], app_root: Path | None = None) -> dict[Source, list[str]]:
    """Source -> lines of the installed file, for every function a trace saw (for line texts)."""
    out = {}
    for trace in traces.values():
        for func in trace.funcs.values():
            if func.source in out:
                continue
            path = installed_file(func.source, app_root)
            if path is not None and path.exists():
                out[func.source] = text_lines(path.read_bytes())
    return out


def sample_app_files() -> list[tuple[str, str]]:
    """The sample app's source files as (path relative to scripts/, text), sorted."""
    root = SCRIPTS
    paths = sorted(
        p
        for p in (PACKAGE / "sample_app").rglob("*")
        if p.is_file()
        and p.suffix in {".py", ".html", ".js", ".css"}
        # the app's own files: not installed packages or caches
        and not {"__pycache__", "node_modules"} & set(p.parts)
        and p.stat().st_size
    )
    return [(p.relative_to(root).as_posix(), read_text(p, "sample app file")) for p in paths]


def license_rows(chains: Iterable[Chain], lock: Lock | None) -> list[licenses.LicenseRow]:
    """Licensing facts of every distribution on the chains (or, before any chain, of the pinned set)."""
    names = {normalize_dist(h.func.source.dist) for c in chains for h in c.hops}
    names -= {"builtin", "sample_app", PYTHON}
    facts = []
    for name, dist in sorted(distributions(sorted(names) or DIST_NAMES).items()):
        meta = dist.metadata
        pin = _lock_pin(lock, name)
        if pin is not None:
            repo = repo_url(pin.forge, pin.repo, pin.commit or pin.tag)
        else:
            forge, repo_name = pins.repo_from_metadata(name, meta.get_all("Project-URL") or [], first_header(meta, "Home-page"))
            repo = repo_url(forge, repo_name, "")
        license_files = [f for f in dist.files or () if re.search(r"LICEN[CS]E|COPYING", f.name, re.IGNORECASE) and ".dist-info" in f.as_posix()]
        text = "\n".join(Path(str(dist.locate_file(f))).read_text(encoding="utf-8", errors="replace") for f in license_files)
        facts.append(
            licenses.DistFacts(
                meta["Name"],
                dist.version,
                repo,
                license_expression=first_header(meta, "License-Expression") or "",
                license=first_header(meta, "License") or "",
                classifiers=tuple(meta.get_all("Classifier") or ()),
                license_text=text,
                license_files=license_links(pin),
            )
        )
    version = lock.python.version if lock else platform.python_version()
    cpython = Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"
    facts.append(
        licenses.DistFacts(
            "Python standard library (CPython)",
            version,
            repo_url("github", pins.PYTHON_REPO, lock.python.commit or lock.python.tag if lock else f"v{version}"),
            license_text=cpython.read_text(encoding="utf-8", errors="replace") if cpython.is_file() else "",
        )
    )
    return licenses.license_rows(facts)


def license_links(pin: Pin | None) -> tuple[tuple[str, str], ...]:
    """(repository path, URL at the pinned commit) of each license file the lock proved in the commit's tree."""
    if pin is None or not pin.commit:
        return ()
    f = forge_named(pin.forge)
    return tuple((lic.path, f.blob.format(repo=pin.repo, ref=pin.commit, path=lic.path)) for lic in pin.licenses)


def dependency_facts(names: Iterable[str]) -> dict[str, tuple[str, str, tuple[tuple[str, str], ...]]]:
    """normalized name -> (name as its metadata spells it, installed version, its requirements that apply here
    as (normalized name, requirement text)), for ``names`` and everything they require, installed or not
    (a missing one has version ""). Requirements of extras are left out; other markers are evaluated for this
    interpreter when `packaging` is installed, else every requirement without an extra is kept."""
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:  # pragma: no cover - packaging is in requirements.lock
        Requirement = None  # type: ignore[assignment, misc]
    out: dict[str, tuple[str, str, tuple[tuple[str, str], ...]]] = {}
    todo = sorted({normalize_dist(n) for n in names})
    while todo:
        name = todo.pop(0)
        if name in out:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            out[name] = (name, "", ())
            continue
        reqs = []
        for text in dist.metadata.get_all("Requires-Dist") or ():
            req_name, _, marker = text.partition(";")
            if "extra" in marker:
                continue
            if Requirement is not None:
                try:
                    req = Requirement(text)
                except InvalidRequirement:
                    continue
                if req.marker is not None and not req.marker.evaluate():
                    continue
                req_name = req.name
            else:
                req_name = re.split(r"[\s<>=!~\[(;]", req_name.strip(), maxsplit=1)[0]
            reqs.append((normalize_dist(req_name), text.partition(";")[0].strip()))
        out[name] = (dist.metadata["Name"], dist.version, tuple(sorted(set(reqs))))
        todo += sorted({r for r, _ in reqs} - set(out))
    return out


def _lock_pin(lock: Lock | None, name: str) -> Pin | None:
    if lock is None:
        return None
    return next((p for p in lock.dists if p.dist == name), None)


def version_set(lock: Lock | None) -> tuple[list[tuple[str, str]], str]:
    """(distribution, version) pairs for the home page, and the Python version."""
    if lock is not None:
        # The lock keys distributions by normalized name; show them as their metadata spells them.
        found = distributions([p.dist for p in lock.dists])
        names = {p.dist: found[p.dist].metadata["Name"] if p.dist in found else p.dist for p in lock.dists}
        return sorted(((names[p.dist], p.version) for p in lock.dists), key=lambda nv: nv[0].lower()), lock.python.version
    found = distributions(DIST_NAMES)
    return sorted(((d.metadata["Name"], d.version) for d in found.values()), key=lambda nv: nv[0].lower()), platform.python_version()


def installed_contents(keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], bytes | str]:
    """(distribution, installed path) -> the installed file's bytes, or why it cannot be read."""
    out: dict[tuple[str, str], bytes | str] = {}
    for dist, installed in keys:
        path = installed_file(Source(dist, "", installed))
        try:
            out[(dist, installed)] = path.read_bytes() if path is not None else f"{dist} is not installed"
        except OSError as exc:
            out[(dist, installed)] = f"{path}: {exc.strerror or exc}"
    return out
