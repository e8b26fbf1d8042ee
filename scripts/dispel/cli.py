"""The `dispel` command: parses arguments, calls a stage, says what it did. Nothing else lives here."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import catalog, report
from .chains import stage as chains_stage
from .check import fetch
from .check import stage as verify
from .handin import build as handin_build
from .model import DispelError
from .pins import pinning as pins
from .pins import stage as pins_stage
from .pins.forges import RAW_BASE
from .project import Project, dump_json, write_atomic
from .record import bench, bench_live
from .record import stage as record_stage
from .render import stage as render_stage
from .review import audit
from .review import stage as review_stage
from .run import live

PROJECT = Project()


def cmd_record(args: argparse.Namespace) -> int:
    if args.live:  # the recording child of `dispel report --live` (dispel.run.live)
        lr = live.record_child(args.live, args.out, args.port, args.root, record_stage.checked_redact(args.redact))
        print("\n".join(live.said_lines(lr, report.running_line)))
        return 0
    if args.scenario:
        if record_stage.scenario_mode(args.scenario, args.root) != record_stage.modes.running_mode():  # gevent: a patched process records
            return record_stage.record_file_patched(args.scenario, args.out, args.timeout_file, args.port, tuple(args.redact), args.root)
        r = record_stage.record_file(args.scenario, args.out, args.timeout_file, args.port, tuple(args.redact), args.root)
        print(r.app)
        print(f"recorded {r.scenario}: {r.calls} calls on {r.threads} threads -> {PROJECT.shown(r.path)} (recorder core: {r.core})")
        if r.running:
            print(report.running_line(r.running))
        for line in r.app_errors:
            print(f"error in the app: {line}")
        return 0
    run = record_stage.record(PROJECT, args.scenarios, args.out, args.timeout, args.app, args.port, args.redact)
    for r in run.recorded:
        print(f"recorded {r.scenario}: {r.calls} calls on {r.threads} threads -> {PROJECT.shown(r.path)} (recorder core: {r.core})")
    return 2 if run.failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    if args.live or args.app or args.save_scenario or args.duration or args.async_mode:
        done = report.live_report(args.app, args.out, PROJECT, args.git_dir, site=not args.no_site, redact=args.redact, root=args.root,
                                  port=args.port, host=args.host, duration=args.duration, factory=args.factory, flask=args.flask or "",
                                  save_scenario=args.save_scenario, live=args.live, scenario=args.scenario, async_mode=args.async_mode or "")
    else:
        done = report.report(args.scenario, args.out, PROJECT, args.git_dir, args.timeout, site=not args.no_site, redact=args.redact, root=args.root)
    return _said(done, args.no_site)


def _said(done: report.Report, no_site: bool) -> int:
    print("\n".join(report.console_lines(done, no_site)))
    return 0


def cmd_chains(args: argparse.Namespace) -> int:
    built = chains_stage.chains(PROJECT, args.journeys, args.traces)
    for name, chain in built.items():
        threads = len({h.thread for h in chain.hops})
        print(f"chain {name}: {len(chain.hops)} hops on {threads} thread{'s' * (threads != 1)} -> {PROJECT.shown(args.traces / 'chains' / (name + '.json'))}")
    return 0


def cmd_pin(args: argparse.Namespace) -> int:
    run = pins_stage.pin(PROJECT, args.dists, args.git_dir, args.repo, args.site, args.lock, args.refresh)
    lock = run.lock
    for name, why in run.afresh.items():
        print(f"{name}: pinned afresh ({why})")
    for p in lock.dists:
        kept = ", unchanged: kept without git" if p.dist in run.kept else ""
        print(f"{p.dist} {p.version}: {p.repo} {p.tag} -> {p.commit[:12]} ({len(p.files)} files{kept})")
        if pins.unpinned(p):
            print(f"  note: not in git at {p.tag} (generated at build time), left unpinned: {', '.join(pins.unpinned(p))}")
    print(f"python {lock.python.version}: {lock.python.repo} {lock.python.tag} (tag-pinned, {len(lock.python.files)} files)")
    for note in run.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {args.lock}")
    return 0


def cmd_versions(args: argparse.Namespace) -> int:
    problems = pins_stage.version_drift(args.lock, args.site)
    for line in problems:
        print(f"warning: {line}" if args.warn else line, file=sys.stderr if args.warn else sys.stdout)
    return 1 if problems and not args.warn else 0


def cmd_diff(args: argparse.Namespace) -> int:
    text = review_stage.review(Project(args.root), args.ref)
    if args.out:
        write_atomic(args.out, text)
        print(f"{text.splitlines()[2]}\nwrote {args.out}")
    else:
        print(text, end="")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    if args.report:
        return _said(report.rerender(args.report, PROJECT, args.git_dir, site=not args.no_site), args.no_site)
    site = render_stage.build_site(PROJECT, args.chains, args.out)
    for note in site.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {len(site.files)} generated pages under {args.out}")
    return 0


def _fetcher(args: argparse.Namespace) -> fetch.Fetcher | None:
    return fetch.Fetcher(workers=args.workers, total=args.time_limit, cache_dir=args.cache_dir) if args.online else None


def cmd_check(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.handin:
        handin_build.checked_handin(args.handin)  # a wrong folder fails before the other checks run
    if report.is_report(args.root):  # a folder `dispel report` built
        result = report.check(args.root, fetcher=_fetcher(args), raw_base=args.raw_base)
    else:
        result = verify.check(Project(args.root), fetcher=_fetcher(args), raw_base=args.raw_base, rerecord=args.rerecord, drift=not args.no_regen)
    if args.handin:
        handin_build.check_into(result, args.root, args.handin, PROJECT)
    for line in result.failures:
        print(line)
    for line in result.notes:
        print(f"note: {line}", file=sys.stderr)
    phases = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in result.timings.items())
    print(f"{len(result.failures)} problem(s); {phases}; total {time.perf_counter() - started:.2f}s")
    print(result.summary.line(result.timings["links"]))
    if result.completeness:
        print(result.completeness)
    return 1 if result.failures else 0


def cmd_handin(args: argparse.Namespace) -> int:
    done = handin_build.build(PROJECT, args.out, args.report, args.require_pdf)
    for note in done.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"hand-in -> {done.out}: {', '.join(done.files)} ({done.links} links)")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    found = review_stage.audit(PROJECT, args.report, args.git_dir, args.chains, _fetcher(args), args.raw_base)
    if args.json:
        print(dump_json(audit.json_report(found.verdicts, found.coverage)), end="")
    else:
        print(audit.markdown_report(found.verdicts, found.coverage, found.chains_known), end="")
        if found.completeness:
            print(f"\n{found.completeness}")
    return 1 if found.broken else 0


def cmd_bench(args: argparse.Namespace) -> int:
    bench.bench(PROJECT, args.reps, args.skip_regen, args.skip_scale, skip_queue=args.skip_queue)
    if not args.skip_live:
        bench_live.bench_live()
    return 0


def _online_options(p: argparse.ArgumentParser, time_limit: float) -> None:
    """The options of --online, shared by check and audit."""
    p.add_argument("--raw-base", default=RAW_BASE, help=f"raw-content host for --online (default: {RAW_BASE})")
    p.add_argument("--cache-dir", type=Path, default=None, help="keep fetched files here between runs (--online)")
    p.add_argument("--workers", type=int, default=8, help="concurrent requests (--online)")
    p.add_argument("--time-limit", type=float, default=time_limit, help="seconds for all online requests together")


def _git_dirs(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--git-dir", action="append", default=[], metavar="OWNER/REPO=PATH", help=help)


def _redact(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redact", action="append", default=[], metavar="REGEX",
                   help="also replace traced values matching REGEX with <redacted> (repeatable; a scenario file's redact = [...] adds more)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dispel", description="Trace Flask-SocketIO's call chains into a pinned, verified report.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("record", help="run scenarios under the tracer; write traces/<scenario>.json")
    p.add_argument("scenarios", nargs="*", help=f"scenario names (default: {', '.join((*catalog.DEFAULT_SCENARIOS, *catalog.DEFAULT_PROCESS_SCENARIOS))})")
    p.add_argument("--timeout", type=float, default=30.0, help="deadline for a whole scenario, seconds")
    p.add_argument("--app", default="dispel.sample_app.app", help="module of the app to trace")
    p.add_argument("--out", type=Path, default=PROJECT.traces, help="folder for trace files")
    p.add_argument("--port", type=int, default=None, help="port for the app (default: a free one)")
    _redact(p)
    p.add_argument("--scenario", type=Path, default=None, metavar="FILE", help="record the app and steps of a scenario file (TOML) instead")
    p.add_argument("--timeout-file", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--live", default=None, help=argparse.SUPPRESS)  # JSON: the child of `dispel report --live` (dispel.run.live)
    p.add_argument("--root", type=Path, default=None, metavar="DIR", help="with --scenario: the project root; every module under it is the app's (default: the scenario file's folder)")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("report", help="record, chain, pin, render and build a report on your own app from a scenario file")
    p.add_argument("--scenario", type=Path, default=None, metavar="FILE", help="the scenario file (TOML; see README)")
    p.add_argument("--live", action="store_true", help="instead: serve --app under the recorder and record while you use it; Ctrl-C stops and builds")
    for flag, kind, default, help in (
        ("--app", str, None, "the app, as [app] import in a scenario file (MODULE:ATTR)"), ("--flask", str, None, "the Flask app, if the SocketIO object does not know it"), ("--port", int, None, "the port to serve on (default: a free one)"),
        ("--host", str, "127.0.0.1", "the address to serve on (default: this machine only)"), ("--duration", float, None, "stop after SECONDS (default: at Ctrl-C)"), ("--save-scenario", Path, None, "also write what the clients did as a scenario file that replays it"),
        ("--async-mode", str, None, "threading or gevent, for an app that leaves async_mode unset (default: threading)"),
    ):
        p.add_argument(flag, type=kind, default=default, help=f"with --live: {help}")
    p.add_argument("--factory", action="store_true", help="with --live: --app names a factory returning the SocketIO object or Flask app")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the report (replaced only if dispel built it)")
    _git_dirs(p, "a local git mirror for a distribution the lock does not pin at its installed version (repeatable)")
    p.add_argument("--timeout", type=float, default=None, help="deadline for the whole run, seconds (default: the file's timeout)")
    p.add_argument("--no-site", action="store_true", help="write traces, chains and pages but do not run mkdocs")
    _redact(p)
    p.add_argument("--root", type=Path, default=None, metavar="DIR", help="the project root; every module under it is the app's (default: the scenario file's folder)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("chains", help="trace files -> traces/chains/<journey>.json")
    p.add_argument("journeys", nargs="*", help="journey names (default: all)")
    p.add_argument("--traces", type=Path, default=PROJECT.traces, help="folder of trace files (chains go to its chains/)")
    p.set_defaults(func=cmd_chains)

    p = sub.add_parser("pin", help="pin distributions to upstream commits; write traces/pins.lock.json")
    p.add_argument("dists", nargs="*", help="distribution names (default: the eight the chains run through)")
    _git_dirs(p, "a local git mirror of a repository (repeatable); repositories without one are fetched"
                 " over the network (git ls-remote + a blobless partial clone)")
    p.add_argument("--repo", action="append", default=[], metavar="DIST=OWNER/REPO", help="the GitHub repository of a distribution whose metadata names none (repeatable)")
    p.add_argument("--site", action="append", type=Path, default=[], metavar="DIR", help="look for installed distributions in DIR instead of this environment (repeatable)")
    p.add_argument("--lock", type=Path, default=PROJECT.lock)
    p.add_argument("--refresh", action="store_true", help="pin every distribution afresh, even those whose installed files equal the lock's")
    p.set_defaults(func=cmd_pin)

    p = sub.add_parser("versions", help="compare installed versions with the lock (metadata only; make site runs it)")
    p.add_argument("--lock", type=Path, default=PROJECT.lock)
    p.add_argument("--warn", action="store_true", help="print mismatches as warnings on stderr and exit 0")
    p.add_argument("--site", action="append", type=Path, default=[], metavar="DIR", help="look in DIR instead of this environment (repeatable)")
    p.set_defaults(func=cmd_versions)

    p = sub.add_parser("diff", help="what changed in the chains and the lock since a git ref, for review")
    p.add_argument("ref", nargs="?", default="HEAD", help="branch, tag or commit to compare with (default: HEAD)")
    p.add_argument("--root", type=Path, default=PROJECT.root, help="the project (default: this checkout)")
    p.add_argument("--out", type=Path, default=None, help="also write the Markdown summary to FILE")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("render", help="chains + pins + annotations -> docs/")
    p.add_argument("--chains", type=Path, default=PROJECT.chains, help="folder of chain files")
    p.add_argument("--out", type=Path, default=PROJECT.docs, help="docs folder (reads its annotations/, writes its generated pages)")
    p.add_argument("--report", type=Path, default=None, metavar="DIR", help="instead: render a report `dispel report` built again from its trace (lists what is unannotated)")
    _git_dirs(p, "with --report: a local git mirror for a distribution the report's lock does not pin (repeatable)")
    p.add_argument("--no-site", action="store_true", help="with --report: do not run mkdocs")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("check", help="prove every link, annotation and generated file")
    p.add_argument("--root", type=Path, default=PROJECT.root, help="the project, or a report `dispel report` built, to check (default: this checkout)")
    p.add_argument("--online", action="store_true", help="also fetch every linked file at its pinned ref and compare the lines")
    _online_options(p, time_limit=120.0)
    p.add_argument("--rerecord", action="store_true", help="also record every scenario again and compare with traces/*.json (slow)")
    p.add_argument("--no-regen", action="store_true", help="leave out the comparison of the generated files with a regeneration")
    p.add_argument("--handin", type=Path, default=None, metavar="DIR", help="also check the hand-in `dispel handin` wrote into DIR (make handin: site/handin)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("handin", help="the hand-in on the course template: report.md, report.docx, report.pdf")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the three files (replaced only if dispel wrote it)")
    p.add_argument("--report", type=Path, default=None, metavar="REPORT", help="the hand-in of a report `dispel report` built, instead of the project's site")
    p.add_argument("--require-pdf", action="store_true", help="fail when Chromium cannot print the PDF (default: skip it with a note)")
    p.set_defaults(func=cmd_handin)

    p = sub.add_parser("audit", help="grade the GitHub source links of a hand-written report")
    p.add_argument("report", type=Path, help="the report: Markdown, HTML or plain text")
    _git_dirs(p, "a local git mirror to resolve links to REPO (repeatable)")
    p.add_argument("--online", action="store_true", help="resolve links that neither the lock nor a mirror knows by fetching them")
    _online_options(p, time_limit=60.0)
    p.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    p.add_argument("--chains", type=Path, default=PROJECT.chains, help="folder of chain files to match functions against")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("bench", help="measure tracing overhead and regeneration time")
    p.add_argument("--reps", type=int, default=5, help="repetitions of each of untraced and traced")
    p.add_argument("--skip-regen", action="store_true", help="leave out regeneration and check times")
    p.add_argument("--skip-scale", action="store_true", help="leave out the 20-client scale recording (about two minutes)")
    p.add_argument("--skip-queue", action="store_true", help="leave out the three-process Redis scenario, untraced and traced")
    p.add_argument("--skip-live", action="store_true", help="leave out the live workload (a 100 Hz background task recorded live for 60 s)")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DispelError as exc:
        print(f"dispel: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dispel: interrupted", file=sys.stderr)
        return 130
