"""The `dispel` command: the only module that reads and writes files, runs subprocesses and uses the network."""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
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
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; generated files are for everyone to read
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
            os.chmod(tmp, 0o644)
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


def _traced_dists() -> tuple[str, ...]:
    from .pins import DISTS

    return DISTS


# The distributions whose code is traced and pinned (one list, in pins).
TRACED_DISTS = _traced_dists()
PYTHON_VERSION = "%d.%d.%d" % sys.version_info[:3]


def code_roots() -> list:
    """Where each traced distribution's files live on this machine (facts for tracefile.locate)."""
    import sysconfig
    from importlib import metadata

    from .tracefile import Root

    roots = []
    for dist in TRACED_DISTS:
        try:
            d = metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            raise DispelError(f"distribution {dist!r} is not installed; run `make site` to install the pinned set") from None
        base = str(Path(d.locate_file("")).resolve())
        tops = sorted({f.parts[0] for f in d.files or () if f.suffix == ".py" and len(f.parts) > 1})
        for top in tops:
            roots.append(Root(os.path.join(base, top, ""), base, dist, d.version))
    stdlib = sysconfig.get_paths()["stdlib"]
    roots.append(Root(os.path.join(stdlib, ""), stdlib, "python", PYTHON_VERSION, "Lib/"))
    roots.append(Root(str(ROOT / "scripts" / "sample_app") + "/", str(ROOT / "scripts"), "sample_app", "local"))
    return roots


def resolve_funcs(codes, probe_codes: dict, roots: list) -> dict:
    """code object -> Func, reading source lines to find def lines (decorators skipped)."""
    import linecache

    from .model import Func, Source
    from .tracefile import def_line, locate

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


def qualname_counts(source: str, filename: str) -> dict[str, int]:
    """How many code objects of each qualname a file defines (compiled, not imported)."""
    counts: dict[str, int] = {}
    stack = [compile(source, filename, "exec")]
    while stack:
        code = stack.pop()
        counts[code.co_qualname] = counts.get(code.co_qualname, 0) + 1
        stack.extend(c for c in code.co_consts if hasattr(c, "co_qualname"))
    return counts


class ClientProcess:
    """The scenario client (dispel.client) in a subprocess, answering one line per step."""

    def __init__(self, port: int, pace: float | None = None) -> None:
        import selectors
        import subprocess

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dispel.client", str(port), *([] if pace is None else [str(pace)])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        # One selector for the whole run: opening one per step would take a file
        # descriptor at a random moment and shift the server's numbers.
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)

    def step(self, name: str, timeout: float, count: int = 1) -> None:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(f"{name} {timeout:.3f} {count}\n")
        self.proc.stdin.flush()
        if not self.sel.select(timeout):
            raise DispelError(f"step {name!r} did not finish within {timeout:.1f}s (raise it with --timeout)")
        answer = self.proc.stdout.readline().strip()
        if answer != f"ok {name}":
            detail = answer.split(" ", 2)[2] if answer.startswith("error ") else (answer or "the client exited")
            raise DispelError(f"step {name!r} failed in the client: {detail}")

    def close(self) -> None:
        import subprocess

        try:
            if self.proc.stdin:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.sel.close()
        if self.proc.stdout:
            self.proc.stdout.close()


# Debian's; DISPEL_CHROMIUM and DISPEL_CHROMEDRIVER point elsewhere.
CHROMIUM = Path(os.environ.get("DISPEL_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("DISPEL_CHROMEDRIVER", "/usr/bin/chromedriver"))
BROWSER_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic",
)


def chromium_version() -> str | None:
    """The installed Chromium's version ("156.0.8078.108"), or None without one."""
    import subprocess

    try:
        out = subprocess.run([str(CHROMIUM), "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"\d+(?:\.\d+)+", out)
    return found.group(0) if found else None


class BrowserClient:
    """The official Socket.IO JavaScript client on the app's /chat page, in headless Chromium
    (Debian's chromium and chromedriver, through selenium). A step is the page's
    ``window.dispelStep(name, done)``, which calls ``done("ok")`` or ``done("error: ...")``.
    The browser talks to the server through dispel.pacer, which makes what the server
    reads repeatable (see that module)."""

    def __init__(self, port: int) -> None:
        missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
        if missing:
            raise DispelError(f"{' and '.join(missing)} not found: the browser scenario needs `apt-get install chromium chromium-driver`")
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service

        import subprocess

        self.driver = None
        self.pacer = subprocess.Popen(
            [sys.executable, "-m", "dispel.pacer", str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.pacer.stdout is not None
        said = self.pacer.stdout.readline().split()
        if len(said) != 2 or said[0] != "listening":
            self._stop_pacer()
            raise DispelError("dispel.pacer did not start: run `python -m dispel.pacer PORT` to see why")
        self.profile = tempfile.mkdtemp(prefix="dispel-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (*BROWSER_FLAGS, f"--user-data-dir={self.profile}"):
            options.add_argument(flag)
        try:
            self.driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
            self.driver.get(f"http://127.0.0.1:{said[1]}/chat")
            if not self.driver.execute_script("return typeof io === 'function' && typeof window.dispelStep === 'function'"):
                raise DispelError(
                    "the app's /chat page has no Socket.IO client: install it with `npm ci --prefix scripts/sample_app`"
                )
        except WebDriverException as exc:
            self.close()
            raise DispelError(f"headless Chromium failed: {_first_line(exc)}") from None
        except BaseException:
            self.close()
            raise

    def step(self, name: str, timeout: float, count: int = 1) -> None:
        from selenium.common.exceptions import TimeoutException, WebDriverException

        assert self.driver is not None
        self.driver.set_script_timeout(timeout)
        for _ in range(count):
            try:
                answer = self.driver.execute_async_script("window.dispelStep(arguments[0], arguments[arguments.length-1])", name)
            except TimeoutException:
                raise DispelError(f"step {name!r} did not finish within {timeout:.1f}s (raise it with --timeout)") from None
            except WebDriverException as exc:
                raise DispelError(f"step {name!r} failed in the browser: {_first_line(exc)}") from None
            if answer != "ok":
                raise DispelError(f"step {name!r} failed in the browser: {str(answer).removeprefix('error: ')}")

    def close(self) -> None:
        try:
            if self.driver is not None:
                self.driver.quit()  # ends chromium, then chromedriver
        finally:
            self.driver = None
            shutil.rmtree(self.profile, ignore_errors=True)
            self._stop_pacer()

    def _stop_pacer(self) -> None:
        import subprocess

        try:
            if self.pacer.stdin:
                self.pacer.stdin.close()
            self.pacer.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.pacer.kill()
            self.pacer.wait()
        if self.pacer.stdout:
            self.pacer.stdout.close()


def _first_line(exc: Exception) -> str:
    text = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
    return text.strip().splitlines()[0]


def record_scenario(name: str, timeout: float, app: str, port: int | None = None, deny: tuple[str, ...] = ()):
    """Run one scenario under the recorder and return its normalized TraceFile."""
    from importlib import metadata

    from . import scenarios
    from .record import SettraceRecorder

    scenarios.scenario(name)  # unknown names fail before anything runs
    recorder = SettraceRecorder(scenarios.wanted_code())
    port = port or scenarios.free_port()
    sc = scenarios.scenario(name)
    start_client = BrowserClient if sc.client == "browser" else (lambda p: ClientProcess(p, sc.pace))
    module = scenarios.run(name, recorder, start_client, app_module=app, timeout=timeout, port=port)
    versions = {d: metadata.version(d) for d in TRACED_DISTS}
    if sc.client == "browser":
        # Its version shows in the requests it sends (User-Agent, client hints): kept
        # with the trace, so that a drift after a browser upgrade has its reason.
        versions["chromium"] = chromium_version() or "unknown"
    return trace_from_recording(recorder, name, port, code_roots(), versions, app_settings(module), deny)


def app_settings(module) -> dict[str, object]:
    """The config of every Flask app a module defines (where SECRET_KEY and friends live)."""
    from flask import Flask

    out: dict[str, object] = {}
    for obj in vars(module).values():
        if isinstance(obj, Flask):
            out.update(obj.config)
    return out


def trace_from_recording(
    recorder, name: str, port: int, roots: list, versions: dict[str, str], settings: dict | None = None, deny: tuple[str, ...] = ()
):
    """A recorder's rows -> normalized TraceFile: code resolved to functions, values made stable."""
    from .record import RAISED, line_at
    from .tracefile import Normalizer, RawCall, learn_secrets, normalize

    if recorder.errors:
        raise DispelError(f"the recorder disabled itself: {recorder.errors[0]}")
    raw = recorder.rows()
    funcs_by_code = resolve_funcs({c[0] for c in raw.calls}, recorder.probe_codes, roots)
    calls = []
    observed: dict[int, tuple] = {}
    for row, (code, serial, parent, offset, args) in enumerate(raw.calls):
        func = funcs_by_code[code]
        if func.key == "_socket:socket.observed":
            # the bytes recv_into wrote into its caller's buffer: they become its value
            data = args[0][1]
            observed[parent] = (raw.returns.get(parent, (0,))[0], id(data), data, 0, -1)
            continue
        line = line_at(raw.calls[parent][0], offset) if parent >= 0 else 0
        ret = raw.returns.get(row)
        if ret is not None:
            seq, value, ret_offset, size = ret
            ret = (seq, 0, "raise", line_at(code, ret_offset), -1) if value is RAISED else (
                seq, id(value), value, line_at(code, ret_offset), size
            )
        args = tuple((name, id(value), value) for name, value in args)
        calls.append(RawCall(row, func.key, serial, parent, line, args, ret))
    calls = [RawCall(c.row, c.func, c.serial, c.parent, c.line, c.args, observed.get(c.row, c.ret)) for c in calls]
    secrets: dict[str, str] = {}
    for c in calls:
        if c.func.endswith(":BaseServer.generate_id") and c.ret and isinstance(c.ret[2], str):
            secrets.setdefault(c.ret[2], f"<sid-{len(secrets) + 1}>")
    values = [v for c in calls for v in [*(a[2] for a in c.args), c.ret[2] if c.ret else None]]
    for text, label in learn_secrets(values, settings or {}).items():
        secrets.setdefault(text, label)
    funcs = {f.key: f for f in funcs_by_code.values()}
    return normalize(
        name,
        PYTHON_VERSION,
        versions,
        raw.steps,
        calls,
        funcs,
        {s: start for s, (start, _) in raw.threads.items()},
        Normalizer(port, secrets, machine_paths(), deny),
    )


def machine_paths() -> dict[str, str]:
    """This machine's folders, as they may appear in traced values -> stable placeholders."""
    import sysconfig

    paths = {
        str(ROOT): "<project>",
        sysconfig.get_paths()["purelib"]: "<site-packages>",
        sysconfig.get_paths()["stdlib"]: "<stdlib>",
        sys.prefix: "<venv>",
        sys.base_prefix: "<python>",
    }
    return {k: v for k, v in paths.items() if len(k) > 1}


def record_in_new_interpreter(
    name: str, out: Path, timeout: float, app: str = "sample_app.app", redact: Iterable[str] = (), capture: bool = False
):
    """`dispel record NAME` in a new interpreter: a second run in the same process would
    find the app and its drivers imported already, and its trace would differ."""
    import subprocess

    argv = [sys.executable, "-m", "dispel", "record", name, "--out", str(out), "--timeout", str(timeout), "--app", app]
    argv += [a for pattern in redact for a in ("--redact", pattern)]
    return subprocess.run(argv, cwd=ROOT, capture_output=capture, text=True)


def cmd_record(args: argparse.Namespace) -> int:
    from . import scenarios
    from .tracefile import trace_to_json

    names = args.scenarios or list(scenarios.DEFAULT)
    for name in names:
        scenarios.scenario(name)
    for pattern in args.redact:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise DispelError(f"--redact {pattern!r} is not a valid regular expression ({exc}); fix or quote it") from None
    if len(names) > 1:
        # Each in a fresh interpreter; one that fails (say, no chromium for "browser")
        # has said why, and the others are still recorded.
        failed = [name for name in names if record_in_new_interpreter(name, args.out, args.timeout, args.app, args.redact).returncode != 0]
        return 2 if failed else 0
    for name in names:
        trace = record_scenario(name, args.timeout, args.app, args.port, tuple(args.redact))
        out = args.out / f"{name}.json"
        write_atomic(out, trace_to_json(trace))
        print(f"recorded {name}: {len(trace.events)} calls on {len(trace.threads)} threads -> {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


def traced_stdlib_files(folder: Path = TRACES) -> set[str]:
    """The standard-library files the recorded traces ran code from (they all get pinned)."""
    try:
        traces = load_traces(folder)
    except DispelError:
        return set()
    return {f.source.path for t in traces.values() for f in t.funcs.values() if f.source.dist == "python"}


def load_traces(folder: Path = TRACES) -> dict:
    """Every trace file in ``folder`` (scenario name -> TraceFile)."""
    from .tracefile import trace_from_json

    out = {}
    for path in sorted(folder.glob("*.json")):
        if path.name.endswith(".lock.json"):
            continue
        out[path.stem] = trace_from_json(read_text(path, "trace file"), f"trace file {_rel(path)}")
    return out


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def source_lines(traces: dict) -> dict:
    """Source -> lines of the installed file, for every function a trace saw (for line texts)."""
    out = {}
    for trace in traces.values():
        for func in trace.funcs.values():
            if func.source in out:
                continue
            path = _installed_file(func.source)
            if path is not None and path.exists():
                out[func.source] = path.read_text(encoding="utf-8", errors="replace").split("\n")
    return out


def build_chains(traces: dict, only=()) -> dict:
    from . import chains

    return chains.build_all(traces, source_lines(traces), only)


def chain_files(built: dict, folder: Path = TRACES / "chains") -> dict[Path, str]:
    from .tracefile import chain_to_dict

    return {folder / f"{name}.json": dump_json(chain_to_dict(chain)) for name, chain in built.items()}


def cmd_chains(args: argparse.Namespace) -> int:
    traces = load_traces(args.traces)
    if not traces:
        raise DispelError(f"no trace files in {_rel(args.traces)}; record them first with `dispel record`")
    built = build_chains(traces, args.journeys)
    write_all_atomic(chain_files(built, args.traces / "chains"))
    for name, chain in built.items():
        threads = len({h.thread for h in chain.hops})
        print(f"chain {name}: {len(chain.hops)} hops on {threads} threads -> {_rel(args.traces / 'chains' / (name + '.json'))}")
    return 0


def cmd_pin(args: argparse.Namespace) -> int:
    """Pin each distribution to the upstream commit of its release tag; write the lock (all or nothing).

    Facts are gathered here (installed files, metadata, git); every decision is in dispel.pins.
    Any problem raises DispelError before the lock is written, so a failed run leaves it untouched.
    """
    import platform

    from . import gitinfo, pins
    from .model import Pin

    mirrors = _parse_git_dirs(args.git_dir)
    overrides = {}
    for spec in args.repo:
        dist, sep, repo = spec.partition("=")
        if not sep or not dist:
            raise DispelError(f"--repo {spec!r} is not DIST=OWNER/REPO")
        overrides[pins.normalize_dist(dist)] = pins.check_repo(repo.strip(), f"--repo {spec}")
    names = sorted({pins.normalize_dist(n) for n in (args.dists or pins.DISTS)})
    site = args.site or None
    found = _distributions(names, site)
    missing = [n for n in names if n not in found]
    if missing:
        raise DispelError(f"not installed here: {', '.join(missing)} (pip install -r requirements.lock)")

    repos: dict[str, tuple[str, str]] = {}
    for name in names:
        meta = found[name].metadata
        if name in overrides:
            forge, repo = "github", overrides[name]
        else:
            urls = meta.get_all("Project-URL") or []
            forge, repo = pins.repo_from_metadata(name, urls, meta.get("Home-page"))
        repos[name] = (forge, mirrors[repo.lower()][0] if repo.lower() in mirrors else repo)
    unknown = sorted(mirrors[k][0] for k in set(mirrors) - {r.lower() for _, r in repos.values()})
    if unknown:
        known = ", ".join(sorted({r for _, r in repos.values()}))
        raise DispelError(
            f"--git-dir names {', '.join(unknown)}, the repository of no distribution being pinned "
            f"(they are: {known}); fix the OWNER/REPO spelling or drop it"
        )

    stdlib_files = sorted(set(pins.STDLIB_FILES) | traced_stdlib_files())
    installed = installed_blobs(names, stdlib_files, site)
    absent = sorted(set(stdlib_files) - set(installed[pins.PYTHON].blobs))
    if absent:
        raise DispelError(f"standard-library files not found in this interpreter: {', '.join(absent)}")
    before = _previous_lock(args.lock)
    locked: list[Pin] = []
    kept: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="dispel-pin-") as tmp:
        for name in names:
            forge, repo = repos[name]
            old = next((p for p in before.dists if p.dist == name), None) if before else None
            why = "--refresh" if args.refresh else pins.repin_reason(old, installed[name], repo)
            if not why:  # installed version and files equal the lock's: keep the entry, no git needed
                locked.append(old)
                kept.add(name)
                continue
            mirror = mirrors.get(repo.lower(), ("", None))[1]
            try:
                git_dir, tag, commit = _resolve_tag(name, installed[name].version, forge, repo, mirror, Path(tmp))
            except DispelError as exc:
                raise DispelError(f"{name} must be pinned afresh ({why}): {exc}") from None
            version, tree = installed[name].version, gitinfo.tree_blobs(git_dir, commit)
            files = pins.map_files(name, version, tag, installed[name].blobs, tree)
            locked.append(Pin(name, version, forge, repo, tag, commit, "commit", files))
            print(f"{name}: pinned afresh ({why})")
    python = pins.stdlib_pin(platform.python_version(), installed[pins.PYTHON].blobs)
    lock = pins.Lock(python, tuple(locked))
    write_atomic(args.lock, dump_json(pins.lock_to_json(lock)))

    for p in lock.dists:
        same = ", unchanged: kept without git" if p.dist in kept else ""
        print(f"{p.dist} {p.version}: {p.repo} {p.tag} -> {p.commit[:12]} ({len(p.files)} files{same})")
        if pins.unpinned(p):
            generated = ", ".join(pins.unpinned(p))
            print(f"  note: not in git at {p.tag} (generated at build time), left unpinned: {generated}")
    print(f"python {python.version}: {python.repo} {python.tag} (tag-pinned, {len(python.files)} files)")
    print(f"wrote {args.lock}")
    return 0


def _previous_lock(path: Path) -> "pins.Lock | None":
    """The lock `dispel pin` starts from (its unchanged entries are kept); None when there is none or it is unreadable."""
    if not path.is_file():
        return None
    try:
        return load_lock(path)
    except DispelError as exc:
        print(f"note: {exc}; pinning every distribution afresh", file=sys.stderr)
        return None


def _parse_git_dirs(specs: list[str]) -> dict[str, tuple[str, Path]]:
    """``OWNER/REPO=PATH`` arguments -> {owner/repo lowercased: (OWNER/REPO, git dir)}; paths checked now."""
    from . import gitinfo, pins

    mirrors: dict[str, tuple[str, Path]] = {}
    for spec in specs:
        repo, sep, path = spec.partition("=")
        if not sep or not path:
            raise DispelError(f"--git-dir {spec!r} is not OWNER/REPO=PATH")
        pins.check_repo(repo, f"--git-dir {spec}")
        if repo.lower() in mirrors:
            raise DispelError(f"--git-dir names {repo} twice")
        mirrors[repo.lower()] = (repo, gitinfo.open_repo(Path(path)))
    return mirrors


def _resolve_tag(
    dist: str, version: str, forge: str, repo: str, mirror: Path | None, tmp: Path
) -> tuple[Path, str, str]:
    """(git dir, tag, peeled commit) of a release, from a local mirror or else the network."""
    from . import gitinfo, pins, permalinks

    if mirror is not None:
        tag = pins.choose_tag(dist, version, repo, gitinfo.local_tags(mirror))
        return mirror, tag, gitinfo.peel(mirror, tag)
    url = permalinks.forge(forge).clone.format(repo=repo)
    try:
        tags = gitinfo.remote_tags(url)
    except gitinfo.GitError as exc:
        raise gitinfo.GitError(f"{exc} (offline? pass --git-dir {repo}=PATH to a local mirror)") from None
    tag = pins.choose_tag(dist, version, repo, tags)
    git_dir = gitinfo.clone_blobless(url, tmp / repo.replace("/", "+"))
    return git_dir, tag, gitinfo.peel(git_dir, tag)


def _distributions(names: Iterable[str], site: list[Path] | None = None) -> dict[str, metadata.Distribution]:
    """Installed distributions by normalized name, from ``site`` dirs or else this environment.

    Absent ones are left out.
    """
    from importlib import metadata

    from . import pins

    found = {}
    for name in names:
        norm = pins.normalize_dist(name)
        kwargs: dict[str, object] = {"name": norm}
        if site:
            kwargs["path"] = [str(p) for p in site]
        dist = next(iter(metadata.distributions(**kwargs)), None)
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
    import platform
    import sysconfig

    from . import pins

    out: dict[str, pins.Installed] = {}
    for name, dist in _distributions(dists, site).items():
        if dist.files is None:
            raise DispelError(f"{name} {dist.version} has no file list (RECORD); reinstall it with pip")
        blobs = {}
        for f in dist.files:
            rel = f.as_posix()
            if rel.endswith(".py") and not rel.startswith("../"):
                path = Path(dist.locate_file(f))
                if path.is_file():
                    blobs[rel] = pins.blob_sha(path.read_bytes())
        out[name] = pins.Installed(name, dist.version, blobs)
    stdlib = list(stdlib)
    if stdlib:
        root = Path(sysconfig.get_paths()["stdlib"])
        blobs = {}
        for rel in stdlib:
            path = root / rel.removeprefix("Lib/")
            if path.is_file():
                blobs[rel] = pins.blob_sha(path.read_bytes())
        out[pins.PYTHON] = pins.Installed(pins.PYTHON, platform.python_version(), blobs)
    return out


def load_lock(path: Path = LOCK) -> pins.Lock:
    """The committed lock, validated; DispelError (one line: what is wrong, how to fix) otherwise."""
    from . import pins

    if not path.is_file():
        raise DispelError(f"lock file not found: {path} (create it with `make pin PIN_ARGS=...`)")
    try:
        return pins.lock_from_json(read_json(path, "lock file"))
    except DispelError as exc:
        raise DispelError(f"lock file {path} is not a valid lock: {exc}; regenerate it: `make pin`") from None


def verify_installed(lock: pins.Lock, site: list[Path] | None = None) -> list[str]:
    """Recompute every locked file's blob from this environment; the problems, [] when all match."""
    from . import pins

    stdlib = [f.installed for f in lock.python.files]
    return pins.verify(lock, installed_blobs([p.dist for p in lock.dists], stdlib, site))


def cmd_render(args: argparse.Namespace) -> int:
    """Chains + lock + annotations + installed sources -> the generated pages of docs/ (all or none).

    Facts are read here; every page is made by the pure functions of dispel.render. A journey
    whose chain file (traces/chains/<journey>.json) does not exist yet gets a placeholder page.
    """
    from . import annotations, render

    out: Path = args.out
    chains = _load_chains(args.chains)
    lock = load_lock(LOCK) if LOCK.is_file() else None
    notes = _load_annotations(out / "annotations")
    if set(render.JOURNEYS) <= set(chains):
        # Only once every journey is recorded can an annotation be known to be on no chain.
        orphans = annotations.orphaned(chains.values(), notes, render.JOURNEYS)
        if orphans:
            raise DispelError(orphans[0].message + (f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else ""))
    sources = _hop_sources(chains.values())
    excerpts = {
        src: [line.decode("utf-8", errors="replace").rstrip("\r\n") for line in annotations.source_lines(data)]
        for src, data in sources.items()
    }
    texts = annotations.texts(notes)

    files: dict[Path, str] = {}
    for journey in render.JOURNEYS:
        chain = chains.get(journey)
        page = out / "chains" / f"{journey}.md"
        if chain is None:
            files[page] = render.render_placeholder(journey)
        else:
            files[page] = render.render_journey(chain, _hop_linker(lock), excerpts, texts, chains)
    files[out / "sample_app.md"] = render.render_sample_app(_sample_app_files())
    files[out / "licensing.md"] = render.render_licensing(_license_rows(chains.values(), lock))
    versions, python = _version_set(lock)
    files[out / "snippets" / "versions.md"] = render.render_versions(versions, python, sorted(chains, key=render.JOURNEYS.index))
    write_all_atomic(files)

    for problem in annotations.missing(chains.values(), notes) + annotations.stale(chains.values(), notes, sources):
        print(f"note: {problem.message}", file=sys.stderr)
    absent = [j for j in render.JOURNEYS if j not in chains]
    if absent:
        print(f"note: not recorded yet, placeholder pages: {', '.join(absent)} (run `make regen`)", file=sys.stderr)
    print(f"wrote {len(files)} generated pages under {out}")
    return 0


def _load_chains(folder: Path) -> dict[str, "Chain"]:
    """traces/chains/*.json -> {journey: Chain}; {} while none has been written."""
    paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not paths:
        return {}
    from . import tracefile

    chains = {}
    for path in paths:
        chain = tracefile.chain_from_dict(read_json(path, "chain file"), origin=f"chain file {_shown(path)}")
        chains[chain.journey] = chain
    return chains


def _load_annotations(folder: Path) -> dict[str, "annotations.Annotation"]:
    from . import annotations

    paths = sorted(folder.glob("*.yml")) if folder.is_dir() else []
    return annotations.merge_annotations((_shown(p), read_text(p, "annotations file")) for p in paths)


def _shown(path: Path) -> str:
    """A path as error messages show it: relative to the project when inside it."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def _installed_file(source: "Source") -> Path | None:
    """Where a hop's file is installed here; None for C code or a distribution not installed."""
    import sysconfig

    from . import pins

    if source.dist == "builtin":
        return None
    if source.dist == "python":
        return Path(sysconfig.get_paths()["stdlib"]) / source.path.removeprefix("Lib/")
    if source.dist == "sample_app":
        return ROOT / "scripts" / source.path
    dist = _distributions([source.dist]).get(pins.normalize_dist(source.dist))
    return Path(dist.locate_file(source.path)) if dist is not None else None


def _hop_sources(chains: Iterable["Chain"]) -> dict["Source", bytes]:
    """The installed bytes of every file a hop lives in (the same files the lock proves)."""
    out = {}
    for chain in chains:
        for hop in chain.hops:
            src = hop.func.source
            if src in out:
                continue
            path = _installed_file(src)
            if path is None:
                continue
            try:
                out[src] = path.read_bytes()
            except OSError as exc:
                raise DispelError(f"cannot read {src.dist} {src.path} for {hop.func.key}: {exc}") from None
    return out


def _hop_linker(lock: "pins.Lock | None") -> "Callable[[Hop], render.HopLinks | None]":
    """Permalinks of a hop from the lock; no links at all while there is no lock."""
    from . import permalinks, render

    def links(hop: "Hop") -> render.HopLinks | None:
        if lock is None:
            return None
        line = permalinks.link(lock, hop.func, hop.line if hop.line > 0 else 0)
        if line is None:
            return None
        definition = line if hop.func.is_c else permalinks.link(lock, hop.func)
        return render.HopLinks(line.url, definition.url if definition else "", line.pinned)

    return links


def _sample_app_files() -> list[tuple[str, str]]:
    """The sample app's source files as (path relative to scripts/, text), sorted."""
    root = ROOT / "scripts"
    paths = sorted(
        p
        for p in (root / "sample_app").rglob("*")
        if p.is_file()
        and p.suffix in {".py", ".html", ".js", ".css"}
        # the app's own files: not installed packages or caches
        and not {"__pycache__", "node_modules"} & set(p.parts)
        and p.stat().st_size
    )
    return [(p.relative_to(root).as_posix(), read_text(p, "sample app file")) for p in paths]


def _license_rows(chains: Iterable["Chain"], lock: "pins.Lock | None") -> list["licenses.LicenseRow"]:
    """Licensing facts of every distribution on the chains (or, before any chain, of the pinned set)."""
    import platform
    import re
    import sysconfig

    from . import licenses, pins

    names = {pins.normalize_dist(h.func.source.dist) for c in chains for h in c.hops}
    names -= {"builtin", "sample_app", pins.PYTHON}
    facts = []
    for name, dist in sorted(_distributions(sorted(names) or pins.DISTS).items()):
        meta = dist.metadata
        pin = _lock_pin(lock, name)
        if pin is not None:
            repo = _repo_url(pin.forge, pin.repo, pin.commit or pin.tag)
        else:
            forge, repo_name = pins.repo_from_metadata(name, meta.get_all("Project-URL") or [], meta.get("Home-page"))
            repo = _repo_url(forge, repo_name, "")
        license_files = [f for f in dist.files or () if re.search(r"LICEN[CS]E|COPYING", f.name, re.I) and ".dist-info" in f.as_posix()]
        text = "\n".join(Path(dist.locate_file(f)).read_text(encoding="utf-8", errors="replace") for f in license_files)
        facts.append(
            licenses.DistFacts(
                meta["Name"],
                dist.version,
                repo,
                license_expression=meta.get("License-Expression") or "",
                license=meta.get("License") or "",
                classifiers=tuple(meta.get_all("Classifier") or ()),
                license_text=text,
            )
        )
    version = lock.python.version if lock else platform.python_version()
    cpython = Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"
    facts.append(
        licenses.DistFacts(
            "Python standard library (CPython)",
            version,
            _repo_url("github", pins.PYTHON_REPO, lock.python.commit or lock.python.tag if lock else f"v{version}"),
            license_text=cpython.read_text(encoding="utf-8", errors="replace") if cpython.is_file() else "",
        )
    )
    return licenses.license_rows(facts)


def _lock_pin(lock: "pins.Lock | None", name: str) -> "Pin | None":
    if lock is None:
        return None
    return next((p for p in lock.dists if p.dist == name), None)


def _repo_url(forge: str, repo: str, ref: str) -> str:
    """The code of ``repo`` at ``ref`` (its home page when there is no ref)."""
    from . import permalinks

    home = f"https://{permalinks.forge(forge).host}/{repo}"
    if ref and forge == "github":
        return f"{home}/tree/{ref}"
    return home


def _version_set(lock: "pins.Lock | None") -> tuple[list[tuple[str, str]], str]:
    """(distribution, version) pairs for the home page, and the Python version."""
    import platform

    from . import pins

    if lock is not None:
        # The lock keys distributions by normalized name; show them as their metadata spells them.
        found = _distributions([p.dist for p in lock.dists])
        names = {p.dist: found[p.dist].metadata["Name"] if p.dist in found else p.dist for p in lock.dists}
        return sorted(((names[p.dist], p.version) for p in lock.dists), key=lambda nv: nv[0].lower()), lock.python.version
    found = _distributions(pins.DISTS)
    return sorted(((d.metadata["Name"], d.version) for d in found.values()), key=lambda nv: nv[0].lower()), platform.python_version()


def cmd_check(args: argparse.Namespace) -> int:
    """Prove the site: links and anchors, permalinks (offline, and online with --online), annotations, drift.

    Facts are read here; every verdict comes from dispel.check. Each failure is printed as one line;
    the exit status is 1 when there is any.
    """
    import time

    started = time.perf_counter()
    fetcher = _fetcher(args) if args.online else None
    result = run_check(args.root, fetcher=fetcher, raw_base=args.raw_base, rerecord=args.rerecord)
    for line in result.failures:
        print(line)
    for line in result.notes:
        print(f"note: {line}", file=sys.stderr)
    phases = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in result.timings.items())
    print(f"{len(result.failures)} problem(s); {phases}; total {time.perf_counter() - started:.2f}s")
    print(result.summary.line(result.timings["links"]))
    return 1 if result.failures else 0


class CheckResult:
    """What `dispel check` found: one line per failure, notes, link counts and the time of each phase."""

    def __init__(self) -> None:
        from . import check

        self.failures: list[str] = []
        self.notes: list[str] = []
        self.timings: dict[str, float] = {}
        self.summary = check.Summary(0, 0, 0)


def run_check(root: Path, fetcher: "fetch.Fetcher | None" = None, raw_base: str = "", rerecord: bool = False) -> CheckResult:
    """Every check of `dispel check` against the project at ``root`` (tests point it at a copy)."""
    import time

    from . import check

    result = CheckResult()
    lock_path = root / "traces" / "pins.lock.json"
    lock = load_lock(lock_path) if lock_path.is_file() else None
    chains = _load_chains(root / "traces" / "chains")

    clock = time.perf_counter()
    result.failures += verify_installed(lock) if lock is not None else []
    result.timings["installed"] = time.perf_counter() - clock

    clock = time.perf_counter()
    links = check_links(root, lock, chains, fetcher, raw_base)
    result.summary = check.summarize(links)
    if lock is not None:  # links that fail only because the chains predate the lock: one line per library
        folded, links = check.fold_recording_drift(links, lock, check.recording_drift(chains.values(), lock))
        result.failures += folded
    result.failures += [p for r in links for p in r.problems]
    result.timings["links"] = time.perf_counter() - clock

    clock = time.perf_counter()
    result.failures += check_annotations(root, chains)
    result.timings["annotations"] = time.perf_counter() - clock

    clock = time.perf_counter()
    drift, why = check_drift(root, chains)
    result.failures += drift
    result.notes += [f"drift may come from: {w}" for w in why] if drift else []
    result.timings["drift"] = time.perf_counter() - clock

    if rerecord:
        clock = time.perf_counter()
        result.failures += check_rerecord(root)
        result.timings["re-record"] = time.perf_counter() - clock
    if lock is None:
        result.notes.append(f"no lock at {lock_path}: permalinks cannot be checked")
    return result


def _docs_files(docs: Path) -> dict[str, Path]:
    """Every file under docs/ by its path relative to docs/ (POSIX), dot-files left out."""
    if not docs.is_dir():
        raise DispelError(f"no docs folder at {docs}")
    return {
        p.relative_to(docs).as_posix(): p
        for p in sorted(docs.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(docs).parts)
    }


def check_links(
    root: Path, lock: "pins.Lock | None", chains: dict, fetcher: "fetch.Fetcher | None" = None, raw_base: str = ""
) -> list["check.LinkResult"]:
    """Internal links and anchors of every page, then every GitHub permalink (offline, then online)."""
    from . import check

    files = _docs_files(root / "docs")
    # annotations/ and snippets/ are inputs, not pages (mkdocs.yml: exclude_docs).
    pages = {
        rel: read_text(p, "page")
        for rel, p in files.items()
        if rel.endswith(".md") and not rel.startswith(("annotations/", "snippets/"))
    }
    snippets = {rel.removeprefix("snippets/"): read_text(p, "snippet") for rel, p in files.items() if rel.startswith("snippets/")}
    results = check.check_internal(pages, files, snippets)
    links = [link for page, text in pages.items() for link in check.page_links(page, check.expand_snippets(text, snippets)[0])]
    wanted = check.permalink_files(links, lock) if lock else {}
    offline = check.check_permalinks(links, lock, chains, _installed_contents(wanted))
    if fetcher is not None and lock is not None:
        online = check.check_permalinks(links, lock, chains, _online_contents(links, lock, fetcher, raw_base), f"fetched from {raw_base}")
        offline = check.merge_results(offline, online)
    return results + offline


def _installed_contents(keys: "Iterable[tuple[str, str]]") -> dict[tuple[str, str], bytes | str]:
    """(distribution, installed path) -> the installed file's bytes, or why it cannot be read."""
    from .model import Source

    out: dict[tuple[str, str], bytes | str] = {}
    for dist, installed in keys:
        path = _installed_file(Source(dist, "", installed))
        try:
            out[(dist, installed)] = path.read_bytes() if path is not None else f"{dist} is not installed"
        except OSError as exc:
            out[(dist, installed)] = f"{path}: {exc.strerror or exc}"
    return out


def _online_contents(links: list, lock: "pins.Lock", fetcher: "fetch.Fetcher", raw_base: str) -> dict[tuple[str, str], bytes | str]:
    """(distribution, installed path) -> the bytes at the pinned ref on the raw-content host, or why not."""
    from . import check, fetch

    urls: dict[tuple[str, str], str] = {}
    for link in links:
        sl = check.parse_source_url(link.target)
        found = check.lock_file(lock, sl.repo, sl.ref, sl.path) if sl else None
        if isinstance(found, tuple):
            pin, fpin = found
            urls[(pin.dist, fpin.installed)] = fetch.raw_url(raw_base, pin.repo, sl.ref, fpin.path)
    got = _fetch_all(fetcher, urls.values(), raw_base)
    return {key: got[url].data if got[url].data is not None else f"{url}: {got[url].error}" for key, url in urls.items()}


def _fetch_all(fetcher: "fetch.Fetcher", urls: "Iterable[str]", raw_base: str) -> dict:
    """Fetch URLs; DispelError when no answer came from the host at all (it is down or unreachable)."""
    urls = list(urls)
    got = fetcher.get_all(urls)
    if urls and all(r.unreachable for r in got.values()):
        raise DispelError(f"--online: cannot reach {raw_base}: {got[urls[0]].error} (check the address and the network)")
    return got


def _online_options(p: argparse.ArgumentParser, time_limit: float) -> None:
    """The options of --online, shared by check and audit."""
    from .fetch import RAW_BASE

    p.add_argument("--raw-base", default=RAW_BASE, help=f"raw-content host for --online (default: {RAW_BASE})")
    p.add_argument("--cache-dir", type=Path, default=None, help="keep fetched files here between runs (--online)")
    p.add_argument("--workers", type=int, default=8, help="concurrent requests (--online)")
    p.add_argument("--time-limit", type=float, default=time_limit, help="seconds for all online requests together")


def _fetcher(args: argparse.Namespace) -> "fetch.Fetcher":
    from . import fetch

    return fetch.Fetcher(workers=args.workers, total=args.time_limit, cache_dir=args.cache_dir)


def check_annotations(root: Path, chains: dict) -> list[str]:
    """Missing, orphaned (once every journey is recorded) and stale annotations, one line each."""
    from . import annotations, render

    notes = _load_annotations(root / "docs" / "annotations")
    problems = annotations.missing(chains.values(), notes)
    if set(render.JOURNEYS) <= set(chains):
        problems += annotations.orphaned(chains.values(), notes, render.JOURNEYS)
    problems += annotations.stale(chains.values(), notes, _hop_sources(chains.values()))
    return [f"annotation {p.kind}: {p.message}" for p in problems]


def check_drift(root: Path, committed: dict, build: "Callable[[dict], dict] | None" = build_chains) -> tuple[list[str], list[str]]:
    """Regenerate chains (with ``build``, from the committed traces) and pages in a temp dir and
    compare them with the committed files. Returns (differences, possible reasons from the
    environment); ``build`` None renders the committed chains as they are."""
    import contextlib
    import io
    import shutil
    from importlib import metadata

    from . import check

    traces = load_traces(root / "traces")
    problems: list[str] = []
    chains = committed
    if build is not None and traces:
        try:
            chains = build(traces)
        except DispelError as exc:
            return [f"drift: the chains cannot be regenerated from the traces: {exc}"], []
        folder = root / "traces" / "chains"
        fresh = chain_files(chains, folder)
        for journey in sorted(set(committed) | set(chains)):
            path = folder / f"{journey}.json"
            if path in fresh and path.is_file() and read_text(path, "chain file") == fresh[path]:
                continue
            why = check.diff_chains(journey, committed.get(journey), chains.get(journey)) or ["the file's layout differs"]
            problems += [f"drift: traces/chains/{journey}.json: {d}" for d in why]
    notes = _load_annotations(root / "docs" / "annotations")
    with tempfile.TemporaryDirectory(prefix="dispel-check-") as tmp:
        out, chain_dir = Path(tmp) / "docs", Path(tmp) / "chains"
        if (root / "docs" / "annotations").is_dir():
            shutil.copytree(root / "docs" / "annotations", out / "annotations")
        chain_dir.mkdir()
        for path, text in chain_files(chains, chain_dir).items():
            path.write_text(text, encoding="utf-8")
        try:
            # render's own progress lines are not check's output
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                cmd_render(argparse.Namespace(out=out, chains=chain_dir))
        except DispelError as exc:
            return problems + [f"drift: the pages cannot be regenerated: {exc}"], []
        texts = {k: a.text for k, a in notes.items()}
        for rel, path in _docs_files(out).items():
            if rel.startswith("annotations/"):
                continue
            mine = root / "docs" / rel
            if not mine.is_file():
                problems.append(f"drift: docs/{rel} is generated but not committed")
                continue
            chain = chains.get(rel.removeprefix("chains/").removesuffix(".md")) if rel.startswith("chains/") else None
            problems += [f"drift: docs/{d}" for d in check.diff_page(rel, read_text(mine, "page"), read_text(path, "page"), chain, texts)]
    installed = {}
    for dist in {d for t in traces.values() for d, _ in t.versions}:
        try:
            installed[dist] = chromium_version() if dist == "chromium" else metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    why = check.environment_reasons({s: (t.python, t.versions) for s, t in traces.items()}, PYTHON_VERSION, installed)
    return problems, why


def check_rerecord(root: Path, timeout: float = 60.0) -> list[str]:
    """Record every scenario again and compare with traces/<scenario>.json; a differing recording is kept."""
    from . import check, scenarios

    problems = []
    keep = Path(tempfile.mkdtemp(prefix="dispel-rerecord-"))
    for name in scenarios.DEFAULT:
        proc = record_in_new_interpreter(name, keep, timeout, capture=True)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            problems.append(f"re-record: recording {name!r} failed: {tail}")
            continue
        fresh = read_text(keep / f"{name}.json", "trace file")
        committed = root / "traces" / f"{name}.json"
        old = read_text(committed, "trace file") if committed.is_file() else ""
        if fresh != old:
            problems += [
                f"re-record: traces/{name}.json differs from a fresh recording: {d} (the new one is {keep / (name + '.json')})"
                for d in check.trace_drift(old, fresh)
            ]
    if not problems:
        shutil.rmtree(keep, ignore_errors=True)
    return problems


def cmd_versions(args: argparse.Namespace) -> int:
    """Installed versions against the lock, from metadata only (quick; `make site` runs it first)."""
    import platform

    from . import pins

    if not args.lock.is_file():
        return 0
    lock = load_lock(args.lock)
    found = _distributions([p.dist for p in lock.dists], args.site or None)
    installed = {name: d.version for name, d in found.items()} | {pins.PYTHON: platform.python_version()}
    problems = pins.version_mismatches(lock, installed)
    for line in problems:
        print(f"warning: {line}" if args.warn else line, file=sys.stderr if args.warn else sys.stdout)
    return 1 if problems and not args.warn else 0


def cmd_diff(args: argparse.Namespace) -> int:
    """Chains and lock of the working tree against those at a git ref, as a short Markdown review."""
    import json

    from . import annotations, diff, gitinfo, pins, render, tracefile

    root = args.root
    chains_dir, lock_rel = "traces/chains", "traces/pins.lock.json"
    then = gitinfo.files_at(root, args.ref, chains_dir, lock_rel)
    old_chains = {
        Path(name).stem: tracefile.chain_from_dict(json.loads(text), origin=f"{args.ref}:{name}")
        for name, text in then.items()
        if name.startswith(chains_dir + "/") and name.endswith(".json")
    }
    old_lock = pins.lock_from_json(json.loads(then[lock_rel])) if lock_rel in then else None
    new_chains = _load_chains(root / chains_dir)
    new_lock = load_lock(root / lock_rel) if (root / lock_rel).is_file() else None
    notes = _load_annotations(root / "docs" / "annotations")
    problems = annotations.missing(new_chains.values(), notes) + annotations.stale(new_chains.values(), notes, _hop_sources(new_chains.values()))
    text = diff.report(
        args.ref,
        old_chains,
        new_chains,
        (old_lock.python, *old_lock.dists) if old_lock else (),
        (new_lock.python, *new_lock.dists) if new_lock else (),
        [f"{p.kind}: {p.message}" for p in problems],
        {k: a.where for k, a in notes.items()},
        render.JOURNEYS,
    )
    if args.out:
        write_atomic(args.out, text)
        print(f"{text.splitlines()[2]}\nwrote {args.out}")
    else:
        print(text, end="")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Grade a hand-written report's GitHub source links; exit 1 when any is broken."""
    from . import audit, render

    try:
        text = args.report.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DispelError(f"cannot read the report {args.report}: {exc.strerror or exc}") from None
    links = audit.find_links(text)
    mirrors = _parse_git_dirs(args.git_dir)
    stray = sorted(name for key, (name, _) in mirrors.items() if key not in {link.repo.lower() for link in links})
    if stray:
        linked = ", ".join(sorted({link.repo for link in links})) or "none"
        raise DispelError(f"--git-dir names {', '.join(stray)}, which no link of {args.report} points to (it links: {linked})")
    lock = load_lock(LOCK) if LOCK.is_file() else None
    chains = _load_chains(args.chains)
    fetcher = _fetcher(args) if args.online else None
    facts = _audit_facts(audit.wanted_files(links), lock, mirrors, fetcher, args.raw_base)
    facts.update(_audit_facts(audit.wanted_files(links, facts), lock, mirrors, fetcher, args.raw_base))
    ordered = [chains[j] for j in render.JOURNEYS if j in chains] + [c for j, c in sorted(chains.items()) if j not in render.JOURNEYS]
    verdicts, linked = audit.grade(links, facts, ordered)
    coverage = audit.coverage(ordered, linked)
    if args.json:
        print(dump_json(audit.json_report(verdicts, coverage)), end="")
    else:
        print(audit.markdown_report(verdicts, coverage, bool(chains)), end="")
    return 1 if any(v.broken for v in verdicts) else 0


def _audit_facts(
    wanted: list[tuple[str, str, str]], lock: "pins.Lock | None", mirrors: dict, fetcher: "fetch.Fetcher | None", raw_base: str
) -> dict:
    """What is known of each (repo, ref, path): from the lock (installed file, blob proven), else a
    --git-dir mirror, else the raw-content host; files none of them knows are left out (unknown)."""
    from . import audit, check, fetch, gitinfo, pins

    facts: dict = {}
    commits: dict[tuple[str, str], tuple[str, dict[str, str]] | str] = {}
    online: dict[tuple[str, str, str], str] = {}
    for repo, ref, path in wanted:
        key = (repo.lower(), ref, path)
        found = check.lock_file(lock, repo, ref, path) if lock else None
        if isinstance(found, tuple):
            pin, fpin = found
            data = _installed_contents([(pin.dist, fpin.installed)])[(pin.dist, fpin.installed)]
            if isinstance(data, bytes) and pins.blob_sha(data) == fpin.blob:
                facts[key] = audit.FileFact("lock", data.decode("utf-8", errors="replace"), pin.commit)
                continue
        if repo.lower() in mirrors:
            git_dir = mirrors[repo.lower()][1]
            if (repo.lower(), ref) not in commits:
                try:
                    commit = gitinfo.run(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], git_dir).strip()
                    commits[(repo.lower(), ref)] = (commit, gitinfo.tree_blobs(git_dir, commit))
                except gitinfo.GitError:
                    commits[(repo.lower(), ref)] = f"{ref} is no commit, branch or tag of the mirror {git_dir}"
            known = commits[(repo.lower(), ref)]
            if isinstance(known, str):
                facts[key] = audit.FileFact("git", None, note=known)
            else:
                commit, tree = known
                text = gitinfo.run(["cat-file", "blob", tree[path]], git_dir) if path in tree else None
                facts[key] = audit.FileFact("git", text, commit)
            continue
        if fetcher is not None:
            online[key] = fetch.raw_url(raw_base, repo, ref, path)
    if online:
        got = _fetch_all(fetcher, online.values(), raw_base)
        for key, url in online.items():
            answer = got[url]
            commit = key[1] if audit.SHA40.fullmatch(key[1]) else ""
            if answer.data is not None:
                facts[key] = audit.FileFact("online", answer.data.decode("utf-8", errors="replace"), commit)
            elif answer.status == 404:
                facts[key] = audit.FileFact("online", None, commit)
    return facts


def cmd_bench_run(args: argparse.Namespace) -> int:
    """One run of the bench scenario, traced or not; prints its figures as JSON."""
    import resource
    import time

    from . import scenarios
    from .record import NullRecorder, SettraceRecorder

    recorder = SettraceRecorder(scenarios.wanted_code()) if args.mode == "traced" else NullRecorder()
    port = scenarios.free_port()
    steps: dict[str, float] = {}
    scenarios.run("bench", recorder, lambda p: ClientProcess(p, 0.0), timeout=args.timeout, port=port, timings=steps)
    seconds = sum(steps.values())  # the workload itself: not interpreter or server start-up
    if recorder.errors:
        raise DispelError(f"the recorder disabled itself: {recorder.errors[0]}")
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_kb": peak_kb, "calls": len(recorder.rows().calls)}))
    return 0


def _timed(argv: list[str], what: str, must_pass: bool = True) -> tuple[float, str]:
    import subprocess
    import time

    begin = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    took = time.perf_counter() - begin
    if proc.returncode != 0 and must_pass:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise DispelError(f"bench: {what} failed: {tail}")
    return took, proc.stdout


def _per_call_costs(n: int = 100_000) -> dict[str, float]:
    """Microseconds per call: untraced, under an empty local tracer, and under the recorder."""
    import time

    from .record import SettraceRecorder

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
    recorder = SettraceRecorder(lambda code: code is add.__code__)
    recorder.start()
    try:
        out["dispel recorder"] = loop()
    finally:
        recorder.stop()
    return out


def cmd_bench(args: argparse.Namespace) -> int:
    """Tracing overhead (alternating untraced/traced runs), regeneration and check times."""
    import statistics

    if args.reps < 1:
        raise DispelError("--reps must be at least 1")
    me = [sys.executable, "-m", "dispel"]
    runs: dict[str, list[dict]] = {"untraced": [], "traced": []}
    print(f"bench: {os.cpu_count()} cores, Python {PYTHON_VERSION}, scenario 'bench' (connect, 200 chat round trips, disconnect)")
    for rep in range(args.reps):
        for mode in ("untraced", "traced"):  # alternating, so drift in the machine hits both alike
            _, out = _timed(me + ["bench-run", mode], f"the {mode} run")
            runs[mode].append(json.loads(out.strip().splitlines()[-1]))
        print(f"  rep {rep + 1}: untraced {runs['untraced'][-1]['seconds']:.3f}s, traced {runs['traced'][-1]['seconds']:.3f}s")
    med = {m: statistics.median(r["seconds"] for r in runs[m]) for m in runs}
    peak = {m: max(r["peak_kb"] for r in runs[m]) for m in runs}
    print(f"median wall time: untraced {med['untraced']:.3f}s, traced {med['traced']:.3f}s ({runs['traced'][-1]['calls']} calls recorded)")
    print(f"peak memory (max RSS): untraced {peak['untraced'] / 1024:.1f} MiB, traced {peak['traced'] / 1024:.1f} MiB, ratio {peak['traced'] / peak['untraced']:.2f}")
    if not args.skip_regen:
        with tempfile.TemporaryDirectory(prefix="dispel-bench-") as tmp:
            t = Path(tmp)
            shutil.copytree(DOCS, t / "docs", ignore=shutil.ignore_patterns("chains"))
            steps = [
                ("record", me + ["record", "--out", str(t / "traces")]),
                ("chains", me + ["chains", "--traces", str(t / "traces")]),
                ("pin verification", [sys.executable, "-c", "from dispel import cli; import sys; sys.exit(bool(cli.verify_installed(cli.load_lock())))"]),
                ("render", me + ["render", "--chains", str(t / "traces" / "chains"), "--out", str(t / "docs")]),
                ("mkdocs build", [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(t / "site")]),
            ]
            total = 0.0
            for what, argv in steps:
                took, _ = _timed(argv, what)
                total += took
                print(f"  {what}: {took:.2f}s")
            print(f"full regeneration: {total:.2f}s")
        took, out = _timed(me + ["check"], "dispel check", must_pass=False)
        print(f"offline check: {took:.2f}s ({(out.strip().splitlines() or [''])[-1]})")
    if not args.skip_scale:
        import resource

        with tempfile.TemporaryDirectory(prefix="dispel-bench-scale-") as tmp:
            took, out = _timed(me + ["record", "scale", "--out", tmp, "--timeout", "600"], "the scale recording")
            size = (Path(tmp) / "scale.json").stat().st_size
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            print(f"scale (20 clients, 1,000 messages): {took:.1f}s, {out.strip().splitlines()[-1].split(': ', 1)[-1].split(' ->')[0]}, "
                  f"trace {size / 2**20:.1f} MiB, peak memory of any run so far {peak:.1f} MiB")
    # Last: the recording it makes grows this process, and children inherit its peak.
    per_call = _per_call_costs()
    print("cost per call of a two-argument function: " + ", ".join(f"{k} {v:.2f} us" for k, v in per_call.items()))
    print(f"overhead ratio: {med['traced'] / med['untraced']:.2f}")
    return 0


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
    p.add_argument("--port", type=int, default=None, help="port for the app (default: a free one)")
    p.add_argument(
        "--redact", action="append", default=[], metavar="REGEX",
        help="also replace traced values matching REGEX with <redacted> (repeatable)",
    )
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("chains", help="trace files -> traces/chains/<journey>.json")
    p.add_argument("journeys", nargs="*", help="journey names (default: all)")
    p.add_argument("--traces", type=Path, default=TRACES, help="folder of trace files (chains go to its chains/)")
    p.set_defaults(func=cmd_chains)

    p = sub.add_parser("pin", help="pin distributions to upstream commits; write traces/pins.lock.json")
    p.add_argument("dists", nargs="*", help="distribution names (default: the eight the chains run through)")
    p.add_argument(
        "--git-dir",
        action="append",
        default=[],
        metavar="OWNER/REPO=PATH",
        help="a local git mirror of a repository (repeatable); repositories without one are fetched"
        " over the network (git ls-remote + a blobless partial clone)",
    )
    p.add_argument(
        "--repo",
        action="append",
        default=[],
        metavar="DIST=OWNER/REPO",
        help="the GitHub repository of a distribution whose metadata names none (repeatable)",
    )
    p.add_argument(
        "--site",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="look for installed distributions in DIR instead of this environment (repeatable)",
    )
    p.add_argument("--lock", type=Path, default=LOCK)
    p.add_argument("--refresh", action="store_true", help="pin every distribution afresh, even those whose installed files equal the lock's")
    p.set_defaults(func=cmd_pin)

    p = sub.add_parser("versions", help="compare installed versions with the lock (metadata only)")
    p.add_argument("--lock", type=Path, default=LOCK)
    p.add_argument("--warn", action="store_true", help="print mismatches as warnings on stderr and exit 0")
    p.add_argument("--site", action="append", type=Path, default=[], metavar="DIR", help="look in DIR instead of this environment (repeatable)")
    p.set_defaults(func=cmd_versions)

    p = sub.add_parser("diff", help="what changed in the chains and the lock since a git ref, for review")
    p.add_argument("ref", nargs="?", default="HEAD", help="branch, tag or commit to compare with (default: HEAD)")
    p.add_argument("--root", type=Path, default=ROOT, help="the project (default: this checkout)")
    p.add_argument("--out", type=Path, default=None, help="also write the Markdown summary to FILE")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("render", help="chains + pins + annotations -> docs/")
    p.add_argument("--chains", type=Path, default=TRACES / "chains", help="folder of chain files")
    p.add_argument("--out", type=Path, default=DOCS, help="docs folder (reads its annotations/, writes its generated pages)")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("check", help="prove every link, annotation and generated file")
    p.add_argument("--root", type=Path, default=ROOT, help="the project to check (default: this checkout)")
    p.add_argument("--online", action="store_true", help="also fetch every linked file at its pinned ref and compare the lines")
    _online_options(p, time_limit=120.0)
    p.add_argument("--rerecord", action="store_true", help="also record every scenario again and compare with traces/*.json (slow)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("audit", help="grade the GitHub source links of a hand-written report")
    p.add_argument("report", type=Path, help="the report: Markdown, HTML or plain text")
    p.add_argument(
        "--git-dir", action="append", default=[], metavar="OWNER/REPO=PATH", help="a local git mirror to resolve links to REPO (repeatable)"
    )
    p.add_argument("--online", action="store_true", help="resolve links that neither the lock nor a mirror knows by fetching them")
    _online_options(p, time_limit=60.0)
    p.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    p.add_argument("--chains", type=Path, default=TRACES / "chains", help="folder of chain files to match functions against")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("bench", help="measure tracing overhead and regeneration time")
    p.add_argument("--reps", type=int, default=5, help="repetitions of each of untraced and traced")
    p.add_argument("--skip-regen", action="store_true", help="leave out regeneration and check times")
    p.add_argument("--skip-scale", action="store_true", help="leave out the 20-client scale recording (about two minutes)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("bench-run", help=argparse.SUPPRESS)  # one measured run, in its own process
    p.add_argument("mode", choices=("traced", "untraced"))
    p.add_argument("--timeout", type=float, default=120.0)
    p.set_defaults(func=cmd_bench_run)
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
