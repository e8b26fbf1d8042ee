"""The `dispel` command: the only module that reads and writes files, runs subprocesses and uses the network."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from .model import DispelError

# The project root: dispel lives in <root>/scripts/dispel/.
ROOT = Path(__file__).resolve().parents[2]
TRACES = ROOT / "traces"
DOCS = ROOT / "docs"
LOCK = TRACES / "pins.lock.json"


# --------------------------------------------------------------------------- IO helpers


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_all_atomic(files: dict[Path, str]) -> None:
    """Write several files, all or none: every temp file is complete before the first rename."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, text in sorted(files.items()):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(text)
            staged.append((tmp, path))
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


def read_json(path: Path, what: str) -> object:
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DispelError(
            f"{what} {path} is not valid JSON (line {exc.lineno}: {exc.msg}); regenerate it"
        ) from None


def dump_json(data: object) -> str:
    """The one JSON layout of every generated file: sorted keys, 1-space indent, newline at end."""
    return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------- commands


def cmd_record(args: argparse.Namespace) -> int:
    raise DispelError("`dispel record` is not implemented yet")


def cmd_chains(args: argparse.Namespace) -> int:
    raise DispelError("`dispel chains` is not implemented yet")


def cmd_pin(args: argparse.Namespace) -> int:
    raise DispelError("`dispel pin` is not implemented yet")


def cmd_render(args: argparse.Namespace) -> int:
    raise DispelError("`dispel render` is not implemented yet")


def cmd_check(args: argparse.Namespace) -> int:
    raise DispelError("`dispel check` is not implemented yet")


def cmd_bench(args: argparse.Namespace) -> int:
    raise DispelError("`dispel bench` is not implemented yet")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dispel", description="Trace Flask-SocketIO's call chains into a pinned, verified report."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("record", help="run scenarios under the tracer; write traces/<scenario>.json")
    p.add_argument("scenarios", nargs="*", help="scenario names (default: all)")
    p.add_argument("--timeout", type=float, default=30.0, help="deadline for a whole scenario, seconds")
    p.add_argument("--app", default="sample_app.app", help="module of the app to trace")
    p.add_argument("--out", type=Path, default=TRACES, help="folder for trace files")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("chains", help="trace files -> traces/chains/<journey>.json")
    p.add_argument("journeys", nargs="*", help="journey names (default: all)")
    p.set_defaults(func=cmd_chains)

    p = sub.add_parser("pin", help="pin distributions to upstream commits; write traces/pins.lock.json")
    p.add_argument(
        "--git-dir",
        action="append",
        default=[],
        metavar="OWNER/REPO=PATH",
        help="a local git mirror of a repository (repeatable)",
    )
    p.add_argument("--lock", type=Path, default=LOCK)
    p.set_defaults(func=cmd_pin)

    p = sub.add_parser("render", help="chains + pins + annotations -> docs/")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("check", help="prove every link, annotation and generated file")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("bench", help="measure tracing overhead and regeneration time")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except DispelError as exc:
        print(f"dispel: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dispel: interrupted", file=sys.stderr)
        return 130
