"""The second venv, at the oldest supported set (`make site` builds it: .venv-oldest): its installed
files prove that set's links by blob, and its dispel derives that set's chains again (IO shell of
dispel.review.versions)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..check.links import LinkResult, PageLink, check_permalinks, lock_file
from ..model import Lock, normalize_dist
from ..pins.forges import parse_source_url
from ..pins.installed import distributions
from .versions import SET

VENV_ENV = "DISPEL_OLDEST_VENV"  # the second venv, when it is not <checkout>/.venv-oldest


def venv(root: Path) -> Path:
    """The second venv: $DISPEL_OLDEST_VENV, or <checkout>/.venv-oldest."""
    return Path(os.environ.get(VENV_ENV) or root / ".venv-oldest")


def site_packages(env: Path) -> Path | None:
    """The venv's site-packages (a venv of this Python's minor version), or None when there is none."""
    rel = Path(sysconfig.get_paths()["purelib"]).relative_to(sysconfig.get_paths()["data"])
    site = env / rel
    return site if (env / "pyvenv.cfg").is_file() and site.is_dir() else None


def site_contents(site: Path, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], bytes | str]:
    """(distribution, installed path) -> the bytes of the file installed in ``site``, or why not."""
    out: dict[tuple[str, str], bytes | str] = {}
    for dist, installed in keys:
        if dist == "python":
            path = Path(sysconfig.get_paths()["stdlib"]) / installed.removeprefix("Lib/")
        else:
            found = distributions([dist], [site]).get(normalize_dist(dist))
            if found is None:
                out[(dist, installed)] = f"{dist} is not installed in {site}"
                continue
            path = Path(str(found.locate_file(installed)))
        try:
            out[(dist, installed)] = path.read_bytes()
        except OSError as exc:
            out[(dist, installed)] = f"{path}: {exc.strerror or exc}"
    return out


def check_links(links: Sequence[PageLink], oldest: Lock, site: Path | None) -> list[LinkResult] | None:
    """The oldest set's links proven by blob against the second venv; None when there is none to prove them."""
    if site is None:
        return None
    wanted = {}
    for link in links:
        sl = parse_source_url(link.target)
        found = lock_file(oldest, sl.repo, sl.ref, sl.path) if sl else None
        assert isinstance(found, tuple)  # only the oldest set's links come here, each a file of its lock
        wanted[(found[0].dist, found[1].installed)] = True
    return check_permalinks(links, oldest, {}, site_contents(site, wanted), f"installed in {site.parent.parent.parent.name}")


def chains_drift(traces: Path, env: Path) -> list[str] | None:
    """The oldest set's chains derived again from its traces by the second venv's dispel, against
    the committed ones (each file byte for byte); None when there is no such venv."""
    dispel = env / "bin" / "dispel"
    if not dispel.is_file():
        return None
    with tempfile.TemporaryDirectory(prefix="dispel-oldest-") as tmp:
        for path in sorted(traces.glob("*.json")):
            if not path.name.endswith(".lock.json"):
                shutil.copy(path, Path(tmp) / path.name)
        proc = subprocess.run([str(dispel), "chains", "--traces", tmp], capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode != 0:
            said = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            return [f"drift: traces/{SET}/chains cannot be derived again by {dispel}: {said}"]
        fresh = {p.name: p.read_text(encoding="utf-8") for p in sorted((Path(tmp) / "chains").glob("*.json"))}
    mine = {p.name: p.read_text(encoding="utf-8") for p in sorted((traces / "chains").glob("*.json"))}
    out = [f"drift: traces/{SET}/chains/{name} is derived from traces/{SET}/ but not committed" for name in sorted(set(fresh) - set(mine))]
    out += [f"drift: traces/{SET}/chains/{name} is committed but not derived from traces/{SET}/" for name in sorted(set(mine) - set(fresh))]
    out += [f"drift: traces/{SET}/chains/{name} differs from the chain derived again from traces/{SET}/ (`make regen-oldest`)"
            for name in sorted(set(mine) & set(fresh)) if mine[name] != fresh[name]]
    return out
