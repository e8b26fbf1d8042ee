"""`dispel handin` and its check (the IO shell of dispel.handin.document): facts gathered, files written.

The site's hand-in reads the project's chains, lock and annotations; a report's reads the folder
`dispel report` built (its chains, lock, trace and app files) and makes its texts as the report's
pages have them. Both become page models (render.journey_page) and one HandIn, written by
dispel.handin.document as report.md, report.docx and, with Chromium, report.pdf, into a temporary folder
renamed to ``--out`` only when all is written.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from .. import catalog
from ..chains import fold
from ..check import drift, prose
from ..check import links as check_core
from ..model import Chain, DispelError, Lock, text_lines
from ..pins.installed import (
    PYTHON_VERSION,
    hop_sources,
    installed_contents,
    license_rows,
    lines_by_source,
    version_set,
)
from ..project import (
    Project,
    load_annotations,
    load_chains,
    load_lock,
    load_traces,
    project_lock,
    read_text,
    swap_folder,
)
from ..render import annotation_files, markup
from ..render import pages as render
from ..render.stage import browsers_recorded, hop_linker
from ..run import browser
from . import document as handin
from . import docx_format, pdf_format

SITE_COMMAND = "make handin"  # = dispel handin --out site/handin
REPORT_COMMAND = "dispel handin --report REPORT --out DIR"
PDF_TIMEOUT = 180.0


@dataclass(frozen=True)
class Built:
    """A hand-in's facts: the HandIn, and what its check needs (the lock and the chains)."""

    handin: handin.HandIn
    lock: Lock | None
    chains: dict[str, Chain]
    command: str


def _excerpts(sources) -> dict:
    return {src: text_lines(data) for src, data in sources.items()}


def _git_date(root: Path, rel: str) -> str:
    """The committer date of the last commit that changed ``rel`` (ISO 8601), "" when git does not know."""
    try:
        done = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%cI", "--", rel], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def site_handin(project: Project) -> Built:
    """The project's hand-in: every recorded journey, in the catalogue's order."""
    found = load_chains(project)
    if not found:
        raise DispelError(f"no chains in {project.shown(project.chains)}: record them first (`make regen`)")
    lock = project_lock(project)
    texts = annotation_files.texts(load_annotations(project))
    pages = tuple(render.journey_page(found[j], hop_linker(lock), {}, texts, found) for j in catalog.JOURNEY_NAMES if j in found)
    versions, python = version_set(lock)
    versions += browsers_recorded(project)
    rel = project.traces.relative_to(project.root).as_posix() if project.traces.is_relative_to(project.root) else str(project.traces)
    when = _git_date(project.root, rel)
    source = f"the date of the last commit of the traces in {rel}/: the trace files carry no date" if when else "the traces carry no date and git does not know them"
    config = yaml.safe_load(read_text(project.root / "mkdocs.yml", "mkdocs.yml")) or {}
    title = f"{config.get('site_name', 'dispel')}: the hand-in"
    intro = (
        "How Flask-SocketIO does what it does, from the sample app's own code down to the socket, traced by dispel "
        "while real clients talked to the app. Every link below points at the exact line that ran, in the library's "
        "repository at the commit its installed release was built from, and `dispel check --handin` proves each one."
    )
    made = handin.Made(tuple(versions), python, when, source, SITE_COMMAND)
    rows = tuple(license_rows(found.values(), lock))
    return Built(handin.HandIn(title, intro, rows, pages, made, "the sample app's own code, on the site's sample app page"), lock, found, SITE_COMMAND)


def report_handin(root: Path, project: Project) -> Built:
    """The hand-in of a report `dispel report` built, with the texts its pages have."""
    from .. import report, report_pages
    from ..chains import derive
    from ..render import app_notes
    from ..run import scenario_file

    root = root.resolve()
    if not root.is_dir():
        raise DispelError(f"--report {root} does not exist; build it first with `dispel report --scenario FILE --out {root}`")
    if not report.is_report(root):
        raise DispelError(f"--report {root} is not a folder `dispel report` built; build one with `dispel report --scenario FILE --out DIR`")
    rp = Project(root)
    traces = load_traces(rp)
    if len(traces) != 1:
        raise DispelError(f"--report {root}: expected one trace in traces/, found {len(traces)}; rebuild it with `dispel report`")
    (name, trace), = traces.items()
    built = load_chains(rp)
    lock = load_lock(rp.lock)
    app = root / report.APP_FOLDER
    lines = lines_by_source({trace.scenario: trace}, app)
    derived = [d for d in derive.derive(trace) if d.journey.name in built]
    texts = app_notes.library_texts(annotation_files.texts(load_annotations(project)))
    texts.update(app_notes.app_texts(trace, built, lines))
    texts.update(app_notes.summaries(derived, built))
    sources = hop_sources(built.values(), app)
    excerpts = _excerpts(sources)
    prose_lines = {src: text_lines(data) for src, data in sources.items()}
    linker = hop_linker(lock)
    pages = []
    for journey in [d.journey.name for d in derived] + sorted(set(built) - {d.journey.name for d in derived}):
        chain = built[journey]
        mine, _ = report_pages.fillable(chain, texts)
        final: list[dict] = []

        def page_of(t: dict, c: Chain = chain, final: list = final) -> str:
            final[:] = [t]
            return render.render_journey(c, linker, excerpts, t, built)

        report_pages.checked_page(chain, mine, page_of, prose_lines)  # the texts the report's page kept
        pages.append(render.journey_page(chain, linker, {}, true_shorts(chain, final[0], prose_lines), built))
    sf = scenario_file.parse(read_text(root / report.SCENARIO_COPY, "the report's scenario file"), f"{name}.toml")
    versions, python = version_set(lock)
    stat = (rp.traces / f"{name}.json").stat()
    when = datetime.fromtimestamp(int(stat.st_mtime), UTC).isoformat()
    source = f"when its trace file traces/{name}.json was written: the trace carries no date"
    made = handin.Made(tuple(versions), python, when, source, REPORT_COMMAND)
    spec = scenario_file.app_spec(sf)
    title = f"{sf.title or spec.target}: the hand-in"
    intro = (
        f"How the app {markup.inline_code(spec.target)} and the libraries under it do what they do, from the app's own "
        "code down to the socket, traced by dispel while the scenario's clients talked to it. Every library link below "
        "points at the exact line that ran, at the commit its installed release was built from, and "
        "`dispel check --root REPORT --handin DIR` proves each one."
    )
    rows = tuple(license_rows(built.values(), lock))
    return Built(handin.HandIn(title, intro, rows, tuple(pages), made), lock, built, REPORT_COMMAND)


def true_shorts(chain: Chain, texts: dict[str, str], lines) -> dict[str, str]:
    """``texts`` without the `short:` sentences that cannot be filled on ``chain`` or that the prose
    rules find untrue on it (a general sentence written for the sample's journeys): the hand-in then
    shows the full text, as the report's page does."""
    texts = dict(texts)
    for _ in range(len(chain.hops) + 1):
        drop = None
        for i, hop in enumerate(chain.hops):
            try:
                render.hop_short(chain, i, texts)
            except DispelError:
                failed = annotation_files.select(texts, hop.func.key, chain.journey, hop.line)
                assert failed is not None  # only a text that was chosen can fail to fill
                drop = failed[0]
                break
        if drop is None:
            shorts = {k[len(annotation_files.SHORT_MARK):]: v for k, v in texts.items() if k.startswith(annotation_files.SHORT_MARK)}
            found = prose.check_page(chain.journey, handin.short_page(chain, shorts), chain, lines) if shorts else []
            at = fold.chain_positions(chain).get(found[0].hop) if found and found[0].hop else None  # a page number -> its call's hop
            untrue = chain.hops[at - 1] if at else None
            if untrue is None:
                return texts
            chosen = annotation_files.select(shorts, untrue.func.key, chain.journey, untrue.line)
            if chosen is None:
                return texts
            drop = chosen[0]
        texts.pop(annotation_files.SHORT_MARK + drop, None)
    return texts


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class Written:
    out: Path
    files: tuple[str, ...]
    notes: tuple[str, ...]
    links: int


def chromium_missing() -> str | None:
    return None if browser.CHROMIUM.is_file() else f"{browser.CHROMIUM} not found (`apt-get install chromium`)"


def _checked_out(out: Path, project: Project) -> Path:
    out = out.resolve()
    if out.exists() and not (out / handin.MARKER).is_file() and (not out.is_dir() or any(out.iterdir())):
        raise DispelError(f"--out {out} exists and is not a hand-in dispel wrote; choose another folder or remove it")
    for inside in (project.traces, project.docs):
        if out == inside or out.is_relative_to(inside):
            raise DispelError(f"--out {out} is inside the project's {inside.name}/; choose a folder of its own")
    return out


def print_pdf(html: str, work: Path) -> bytes:
    """``html`` printed to PDF by headless Chromium (its text stays text, its links link annotations)."""
    page = work / "report.html"
    page.write_text(html, encoding="utf-8")
    pdf = work / "printed.pdf"
    profile = tempfile.mkdtemp(prefix="dispel-chromium-")
    argv = [str(browser.CHROMIUM), *browser.BROWSER_FLAGS, f"--user-data-dir={profile}", "--no-pdf-header-footer",
            f"--print-to-pdf={pdf}", page.as_uri()]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=PDF_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise DispelError(f"Chromium did not print the PDF within {PDF_TIMEOUT:.0f} s; run again, or pass no --require-pdf to skip it") from None
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if done.returncode != 0 or not pdf.is_file():
        said = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        raise DispelError(f"Chromium could not print the PDF: {said[-1] if said else 'no message'}")
    data = pdf.read_bytes()
    page.unlink()
    pdf.unlink()
    return data


def build(project: Project, out: Path, report: Path | None = None, require_pdf: bool = False) -> Written:
    """`dispel handin`: the output folder and Chromium checked first, then the facts, then the files."""
    _checked_out(out, project)
    if require_pdf and chromium_missing():
        raise DispelError(f"--require-pdf: {chromium_missing()}; install it, or drop --require-pdf to write the .md and .docx only")
    return write(report_handin(report, project) if report else site_handin(project), out, project, require_pdf)


def write(b: Built, out: Path, project: Project, require_pdf: bool = False) -> Written:
    """report.md, report.docx and (with Chromium) report.pdf into ``out``, all or nothing."""
    out = _checked_out(out, project)
    missing = chromium_missing()
    if missing and require_pdf:
        raise DispelError(f"--require-pdf: {missing}; install it, or drop --require-pdf to write the .md and .docx only")
    h = b.handin
    md = handin.to_markdown(h, b.command)
    html = handin.to_html(md, h.title)
    body = html[html.index("<body>") + len("<body>") : html.rindex("</body>")]
    when = docx_format.recorded_datetime(h.made.recorded)
    files = {"report.md": md.encode("utf-8"), "report.docx": docx_format.to_docx(body, h.title, when)}
    notes = []
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes 0700; the hand-in is for everyone to read
    try:
        if missing:
            notes.append(f"the PDF was skipped: {missing}; report.md and report.docx are written (--require-pdf makes this an error)")
        else:
            printed = print_pdf(html, tmp)
            try:
                files["report.pdf"] = pdf_format.normalise_pdf(printed, h.made.recorded)
            except ValueError as exc:
                files["report.pdf"] = printed
                notes.append(f"report.pdf is as Chromium printed it (dates and producer not normalised: {exc})")
        for name, data in files.items():
            (tmp / name).write_bytes(data)
            os.chmod(tmp / name, 0o644)
        (tmp / handin.MARKER).write_text("A hand-in written by `dispel handin`; it may replace this folder.\n", encoding="utf-8")
        swap_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Written(out, tuple(files), tuple(notes), len(handin.expected_links(h)))


# --------------------------------------------------------------------------- checking


def checked_handin(folder: Path) -> Path:
    """``--handin DIR``, resolved; one line when it is not a folder `dispel handin` wrote."""
    folder = folder.resolve()
    if not (folder / handin.MARKER).is_file():
        raise DispelError(f"--handin {folder} is not a folder `dispel handin` wrote; build it with `dispel handin --out {folder}`")
    return folder


def check(folder: Path, b: Built) -> tuple[list[str], list[str], int]:
    """`dispel check --handin DIR`: (failures, notes, links proven). Every link of every format
    read back and compared with the chain's; each of the chain's links proven by its blob (and a
    hop's line against the chain); report.md against a regeneration; a licensing table for every
    distribution on the chains."""
    folder = checked_handin(folder)
    h = b.handin
    failures = handin.missing_licenses(h.pages, h.licenses)
    notes = []
    found: dict[str, list[str] | None] = {}
    md_path, docx_path, pdf_path = (folder / n for n in handin.FILES)
    for path in (md_path, docx_path):
        if not path.is_file():
            failures.append(f"handin/{path.name}: missing: regenerate the hand-in (`dispel handin`)")
    if md_path.is_file():
        md = md_path.read_text(encoding="utf-8")
        fresh = handin.to_markdown(h, b.command)
        if md != fresh:
            failures.append(f"handin/report.md differs from a regeneration: {drift.first_difference(md, fresh)}")
        found["report.md"] = handin.markdown_links(md)
    if docx_path.is_file():
        try:
            found["report.docx"] = docx_format.docx_links(docx_path.read_bytes())
        except Exception as exc:  # noqa: BLE001 - python-docx cannot read it back: that is the finding
            failures.append(f"handin/report.docx: python-docx cannot read it back: {exc}")
    if pdf_path.is_file():
        found["report.pdf"] = pdf_format.pdf_links(pdf_path.read_bytes())
    else:
        notes.append("handin/report.pdf was not written (no Chromium when it was built): its links are not checked")
    expected = handin.expected_links(h)
    failures += handin.check_formats(found, expected)
    links = handin.page_links(e for e in expected if e.role or check_core.parse_source_url(e.url))
    lock = b.lock
    results = []
    if lock is not None:
        contents = installed_contents(check_core.permalink_files(links, lock))
        results = check_core.check_permalinks(links, lock, b.chains, contents)
        unproven, results = check_core.fold_foreign_python(results, lock, PYTHON_VERSION)
        if unproven:
            notes.append(f"handin: {unproven} standard-library links unproven on Python {PYTHON_VERSION} (recorded on {lock.python.version})")
    else:
        notes.append("handin: no lock, its permalinks cannot be proven")
    for r in results:
        where = f"handin ({r.link.page.removeprefix('chains/').removesuffix('.md')} hop {r.link.hop})" if r.link.hop else "handin"
        failures += [f"{where}: {p.split(': ', 1)[1] if ': ' in p else p}" for p in r.problems]
    return failures, notes, len(results)


def check_into(result, root: Path, folder: Path, project: Project) -> None:
    """`dispel check --handin DIR` (``root``: the project or a report): into a verify.CheckResult."""
    from .. import report

    clock = time.perf_counter()
    root = root.resolve()
    built = report_handin(root, project) if report.is_report(root) else site_handin(Project(root))
    failures, notes, proven = check(folder, built)
    result.failures += failures
    result.notes += notes + [f"hand-in: {proven} permalinks proven in each format"]
    result.timings["handin"] = time.perf_counter() - clock
