"""The package's layout, as data: every module's kind and what it holds. docs/how.md's module
table is written from it (``dispel render``), and tests/test_layout.py holds the package to it:
a module missing here fails, and so does a pure module that imports an IO one."""
from __future__ import annotations

PURE = "pure core"  # functions over frozen values: no files, processes, sockets or clocks
SHELL = "IO shell"  # files, subprocesses, sockets, the network, installed packages
GLUE = "stage glue"  # one stage over a Project: gathers facts (shell), calls the pure core, writes
ENTRY = "entry point"  # parses a command line or runs as a process of its own
RECORDER = "recorder"  # traces a live program (the only code that does)
DATA = "data"  # values only, but read once at import from files that ship with dispel
SAMPLE = "traced sample"  # the sample app: traced as the app (never as dispel), driven by the scenarios

KINDS = (PURE, DATA, SHELL, GLUE, ENTRY, RECORDER, SAMPLE)
# A pure module may import only these kinds.
PURE_MAY_IMPORT = frozenset({PURE, DATA})

# dotted name under dispel -> (kind, what it holds). Subpackages (their folder is the stage):
# record, tracefiles, run, chains, pins, render, check, review, handin; and sample_app, the traced sample.
MODULES: dict[str, tuple[str, str]] = {
    "__main__": (ENTRY, "`python -m dispel`"),
    "cli": (ENTRY, "the `dispel` command: parses arguments, calls a stage, says what it did"),
    "model": (PURE, "frozen values that flow between the stages (events, hops, chains, pins), and a source's lines"),
    "catalog": (DATA, "the one catalogue: scenarios, journeys, traced distributions, standard-library files, thread roles (the queue scenario read from its file beside the sample app)"),
    "layout": (PURE, "this table"),
    "wire": (PURE, "wire bytes decoded layer by layer: HTTP, WebSocket frames, Engine.IO and Socket.IO packets"),
    "project": (SHELL, "a Project: its paths, atomic reads and writes, and the loaders of its traces, chains, lock and annotations"),
    "report_pages": (GLUE, "a report's chains and pages from its trace: journeys built, texts filled and proven, home page, mkdocs config"),
    "report": (GLUE, "`dispel report`: the stages over a Project rooted at a temporary folder, renamed to `--out`"),
    # record/
    "record.recorder": (RECORDER, "the `sys.settrace` core (the reference), the C core's driver, and the Tracer protocol"),
    "record.sysmon": (RECORDER, "the `sys.monitoring` core (Python 3.12 and later)"),
    "record.fold": (RECORDER, "bounded memory: a repeated call's rows taken out and counted while recording (the Python cores')"),
    "record.cores": (SHELL, "the cores by name, and which one records (`DISPEL_CORE`)"),
    "record.stage": (GLUE, "`dispel record`: scenarios run under a recorder, each written as a trace file"),
    "record.bench": (ENTRY, "`dispel bench`: tracing overhead, memory and stage times side by side"),
    "record.bench_live": (ENTRY, "`dispel bench`'s live workload: a 100 Hz task recorded live, peak memory at 10 s and 60 s"),
    # tracefiles/
    "tracefiles.normalize": (PURE, "raw rows -> a deterministic TraceFile, in named steps"),
    "tracefiles.values": (PURE, "values as a trace keeps them: stable text, secrets redacted, text -> bytes"),
    "tracefiles.codec": (PURE, "TraceFile and Chain <-> JSON"),
    "tracefiles.recording": (GLUE, "a stopped recorder's rows and the installed code -> a TraceFile (normalize does the rest)"),
    # run/
    "run.runner": (SHELL, "run an app in-process under a recorder and drive it, step by step, with a deadline"),
    "run.deadline": (PURE, "the deadline the steps of one run share"),
    "run.modes": (PURE, "Flask-SocketIO's async modes as a run has them: which one, what an app leaving it unset gets, gevent's server and greenlets"),
    "run.launchers": (SHELL, "the step clients' processes (the sample's, a scenario file's, the browser) and free ports"),
    "run.browser": (SHELL, "the official JavaScript client in headless Chromium"),
    "run.pacer": (ENTRY, "a pacing proxy process: whole requests and frames, one at a time"),
    "run.sample_client": (ENTRY, "the sample scenarios' Socket.IO client process, one step per stdin line"),
    "run.file_client": (ENTRY, "a scenario file's Socket.IO client process"),
    "run.scenario_file": (PURE, "a scenario file (TOML) -> frozen values, each wrong value one line naming its place"),
    "run.scenario_values": (PURE, "a scenario file's frozen values, the format's constants, bytes and environment references"),
    "run.live": (SHELL, "`dispel report --live`'s recording child: the app served under a recorder until Ctrl-C, the console read from the servers' log calls"),
    "run.live_session": (PURE, "what a live recording's clients did -> the report's list, and a scenario file that replays it"),
    "run.multiprocess": (SHELL, "scenarios of several processes: a Redis server, traced servers and an emitter, real clients"),
    "run.multiprocess_child": (ENTRY, "one traced process of a scenario of several"),
    # chains/
    "chains.build": (PURE, "a trace -> one chain per journey: the finders' waypoints walked, makers and readers inserted, values shown"),
    "chains.graph": (PURE, "a trace as a graph: events, children, ancestors, the waits each wake-up ended"),
    "chains.routes": (PURE, "routes between waypoints: the call tree, happens-before edges across threads, the data passed on"),
    "chains.makers": (PURE, "where a passed-on value was made, where a received one was parsed, the hand-offs that carried them"),
    "chains.hand_written": (PURE, "the hand-written finders (polling, upgrade, handshake, across processes) and the wire bytes pages decode"),
    "chains.across": (PURE, "the traces of several processes as one, joined by the bytes they published"),
    "chains.derive": (PURE, "the journeys of any app, derived from what Flask-SocketIO called: what happened, and which journey shows it"),
    "chains.derive_finders": (PURE, "where each derived journey of any app starts and ends: run, connect, on, emit, ack, disconnect"),
    "chains.derive_packets": (PURE, "derived journeys beyond an event and its ack: refused connects, binary, HTTP routes, calls, server disconnects"),
    "chains.finders": (PURE, "how each catalogued journey is found, and the catalogue's chains"),
    "chains.fold": (PURE, "key hops and folded detail"),
    "chains.stage": (GLUE, "`dispel chains`: trace files -> chain files"),
    # pins/
    "pins.pinning": (PURE, "blob hashes, tag spellings, file mapping, the lock format, verification"),
    "pins.permalinks": (PURE, "a pin and a line -> a URL that cannot drift"),
    "pins.forges": (PURE, "code hosts as a table of URL templates, and the SHA patterns"),
    "pins.licenses": (PURE, "distribution metadata -> SPDX id, repository and short texts"),
    "pins.gitinfo": (SHELL, "a thin wrapper over the `git` command"),
    "pins.installed": (SHELL, "what is installed here: the traced distributions' files, blobs, sources and metadata"),
    "pins.stage": (GLUE, "`dispel pin` and `dispel versions`: the lock from installed files, git and tags"),
    # render/
    "render.pages": (PURE, "chains, links, excerpts and annotations -> Markdown pages"),
    "render.markup": (PURE, "Markdown pieces: escaping, fences, links to hops and lines, one hop's entry"),
    "render.pagemodel": (PURE, "what a journey page says, computed once from the chain"),
    "render.diagram": (PURE, "layered sequence diagrams as inline SVG"),
    "render.placeholders": (PURE, "facts the trace knows, put into hand-written prose"),
    "render.annotation_files": (PURE, "hand-written annotations: parsed, fingerprinted, checked for missing, orphaned and stale texts"),
    "render.aids": (PURE, "the reader's aids: glossary, threads page, layer tables, chains to copy, the edge table, footer and citation"),
    "render.app_notes": (PURE, "generated texts for an unknown app's hops and journeys"),
    "render.stage": (GLUE, "`dispel render`: chains, lock, annotations and sources -> the generated pages"),
    # check/
    "check.links": (PURE, "link verdicts: site links and anchors, permalinks, stale site texts"),
    "check.drift": (PURE, "what differs between committed generated files and a regeneration, and what the environment explains"),
    "check.integrity": (PURE, "each chain is one story, proven against its trace"),
    "check.pagecheck": (PURE, "what a page shows before anything is opened (at most 30 hops)"),
    "check.prose": (PURE, "what the pages say about a hop, read against the chain"),
    "check.completeness": (PURE, "every wire value a page shows has its maker or reader on the chain, found from the trace"),
    "check.fetch": (SHELL, "HTTP fetches for the online check: bounded, cached, retried"),
    "check.stage": (GLUE, "`dispel check`: what the other stages made, verified"),
    # review/
    "review.audit": (PURE, "a hand-written report's source links graded against the chains"),
    "review.diff": (PURE, "what changed between two versions of the chains and the lock"),
    "review.stage": (GLUE, "`dispel diff` and `dispel audit` over a Project"),
    "review.versions": (PURE, "the sample's journeys at the oldest supported set against the lock's: a page per journey from diff's alignment"),
    "review.beside": (PURE, "a gevent journey's chain set beside its threading one: where they depart, lines moved, hand-offs between lanes"),
    "review.oldest_venv": (SHELL, "the oldest supported set's venv (.venv-oldest): its files prove that set's links, its dispel derives that set's chains again"),
    # handin/
    "handin.document": (PURE, "the course template's report from the page model, as Markdown and HTML; the links each format must hold"),
    "handin.docx_format": (PURE, "that report as a Word document (python-docx), its links and text read back"),
    "handin.pdf_format": (PURE, "Chromium's PDF of it normalised, its links and text read back"),
    "handin.build": (GLUE, "`dispel handin` and `dispel check --handin`: facts gathered, files written, links read back"),
    # sample_app/ (with its templates, its scenario files and the npm client's package.json)
    "sample_app.app": (SAMPLE, "the chat app the catalogue's scenarios trace: a Flask app, a SocketIO, its handlers and `main(port)`"),
    "sample_app.cluster": (SAMPLE, "the same app as one of several servers joined by a message queue (the `queue` scenario)"),
    "sample_app.emitter": (SAMPLE, "a process that is no server, emitting through the message queue (the `queue` scenario)"),
}

# What each subpackage is, for the table's headings.
PACKAGES: dict[str, str] = {
    "": "the top: the command, the frozen values, the catalogue, the project",
    "record": "record: trace a live program",
    "tracefiles": "raw rows -> trace files",
    "run": "run the app and drive it with real clients",
    "chains": "trace -> chains",
    "pins": "pins: installed files, git, locks, permalinks",
    "render": "chains -> pages",
    "check": "everything made, verified",
    "review": "side commands: diff and audit; the two ends of the supported range compared",
    "handin": "the hand-in",
    "sample_app": "the sample app: what the project's own scenarios trace",
}


def package_of(name: str) -> str:
    return name.rpartition(".")[0]


def markdown_table() -> str:
    """docs/how.md's module table (written to docs/snippets/modules.md by ``dispel render``):
    one row per module, grouped by subpackage, with its kind."""
    out = [
        "<!-- Generated by `dispel render` from scripts/dispel/layout.py; do not edit. -->",
        "",
        "| module | what it holds | kind |",
        "|---|---|---|",
    ]
    for package, title in PACKAGES.items():
        names = [n for n in MODULES if package_of(n) == package]
        if not names:
            continue
        out.append(f"| **{package + '/' if package else 'dispel/'}** | *{title}* | |")
        for name in names:
            kind, what = MODULES[name]
            shown = name.rpartition(".")[2]
            out.append(f"| `{shown}` | {what} | {kind} |")
    return "\n".join(out) + "\n"
