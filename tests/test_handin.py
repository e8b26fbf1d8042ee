"""`dispel handin`: the course template's report as Markdown, DOCX and PDF, from the page model.

Pure parts on small values (link rewriting, the format comparison, the PDF normaliser, the DOCX
writer); then the three formats built for the project's site and for an example app's report,
their links read back out of each format and compared with the chain's, a mutated DOCX link
caught by the check's own rule, a seeded secret in none of the three, and bad input."""
from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import unicodedata
import zipfile
from pathlib import Path

import pytest
from dispel.chains import fold
from dispel.handin import build as handin_build
from dispel.handin import document as handin
from dispel.handin import docx_format, pdf_format
from dispel.project import Project
from dispel.render import markup
from dispel.render import pages as render
from dispel.run import browser

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "tests" / "programs" / "apps"
SECRET = "tok-7Q3xZ-handin-never-shown"
HAS_CHROMIUM = browser.CHROMIUM.is_file()
NO_CHROMIUM = f"{browser.CHROMIUM} not found: the PDF is not printed"


def dispel(*argv: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dispel", *argv], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def texts_of(folder: Path) -> dict[str, str]:
    """The text each format shows (NFKC: a PDF's ligatures read as their letters)."""
    out = {"report.md": (folder / "report.md").read_text(encoding="utf-8"),
           "report.docx": docx_format.docx_text((folder / "report.docx").read_bytes())}
    if (folder / "report.pdf").is_file():
        out["report.pdf"] = pdf_format.pdf_text((folder / "report.pdf").read_bytes())
    return {k: unicodedata.normalize("NFKC", v) for k, v in out.items()}


def links_of(folder: Path) -> dict[str, list[str]]:
    out = {"report.md": handin.markdown_links((folder / "report.md").read_text(encoding="utf-8")),
           "report.docx": docx_format.docx_links((folder / "report.docx").read_bytes())}
    if (folder / "report.pdf").is_file():
        out["report.pdf"] = pdf_format.pdf_links((folder / "report.pdf").read_bytes())
    return out


# --------------------------------------------------------------------------- pure


def test_a_pages_links_become_the_hand_ins():
    text = ("See [hop 3](#hop-3), [the emit journey](emit.md), [its hop 5](emit.md#hop-5), "
            "[how to read](../index.md#how-to-read-a-chain) and [RFC 6455](https://www.rfc-editor.org/rfc/rfc6455).")
    assert handin._local(text, "on", ["on", "emit"]) == (
        "See [hop 3](#on-hop-3), [the emit journey](#chain-emit), [its hop 5](#emit-hop-5), "
        "how to read and [RFC 6455](https://www.rfc-editor.org/rfc/rfc6455).")


def test_a_link_a_format_adds_or_lacks_is_named_with_its_format():
    want = [handin.Expected("https://x/a#L1", "on", 1, "line"), handin.Expected("https://x/a#L1", "emit", 2, "line"),
            handin.Expected("https://x/b#L9", "on", 3, "line")]
    ok = ["https://x/a#L1", "https://x/a#L1", "https://x/b#L9"]
    assert handin.check_formats({"report.md": ok, "report.docx": ok, "report.pdf": ok + ok}, want) == []
    bad = handin.check_formats({"report.docx": ["https://x/a#L1", "https://x/a#L1", "https://x/b#L10"]}, want)
    assert bad == [
        "handin/report.docx: link https://x/b#L10 is not on the chain (1×): regenerate the hand-in (`dispel handin`)",
        "handin/report.docx: the chain's link https://x/b#L9 is missing (1×): regenerate the hand-in (`dispel handin`)",
    ]
    # a PDF must carry each link at least once (a wrapped link is two annotations), and no other
    assert handin.check_formats({"report.pdf": ["https://x/a#L1"]}, want)[0].startswith("handin/report.pdf: the chain's link https://x/b#L9 is missing")


def _tiny_pdf(date: bytes = b"D:20990101000000+00'00'") -> bytes:
    objs = [b"<</Producer (Skia/PDF m156)/Creator (Chromium)/CreationDate (" + date + b")/ModDate (" + date + b")>>",
            b"<</Type /Catalog /Pages 3 0 R>>", b"<</Type /Pages /Kids [] /Count 0>>",
            b"<</Type /Annot /Subtype /Link /A <</S /URI /URI (https://example.org/a\\(1\\)#L2)>>>>"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1) + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<</Size %d\n/Root 2 0 R\n/Info 1 0 R>>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def _offsets_point_at_objects(pdf: bytes) -> bool:
    m = re.search(rb"\nxref\n0 (\d+)\n", pdf)
    table = pdf[m.end():]
    offsets = [int(table[i * 20: i * 20 + 10]) for i in range(1, int(m.group(1)))]
    start = int(re.search(rb"startxref\n(\d+)", pdf).group(1))
    return all(pdf[o:].startswith(b"%d 0 obj" % n) for n, o in enumerate(offsets, 1)) and pdf[start:].startswith(b"xref")


def test_the_pdf_is_normalised_dates_producer_and_id_with_a_valid_cross_reference_table():
    a = pdf_format.normalise_pdf(_tiny_pdf(), "2026-12-05T03:55:42+00:00")
    b = pdf_format.normalise_pdf(_tiny_pdf(b"D:20380101120000+00'00'"), "2026-12-05T03:55:42+00:00")
    assert a == b, "the printing time still shows"
    assert b"(D:20261205035542+00'00')" in a and b"m156" not in a and b"/ID [<" in a
    assert _offsets_point_at_objects(a)
    assert pdf_format.pdf_links(a) == ["https://example.org/a(1)#L2"]


def test_the_docx_has_real_headings_tables_and_hyperlinks_and_the_same_bytes_twice():
    md = ("# Title\n\n## Part { #p }\n\nA [link](<https://example.org/x#L3>) and `code`.\n\n"
          "| Field | Value |\n|---|---|\n| Code Repository | [repo](<https://example.org/tree/abc>) |\n\n"
          "- **Thread:** `main`\n- item with [another](https://example.org/y)\n")
    html = handin.to_html(md, "Title")
    body = html[html.index("<body>") + 6: html.rindex("</body>")]
    when = docx_format.recorded_datetime("2026-12-05T03:55:42+00:00")
    data = docx_format.to_docx(body, "Title", when)
    assert data == docx_format.to_docx(body, "Title", when)
    assert docx_format.docx_links(data) == handin.markdown_links(md) == [
        "https://example.org/x#L3", "https://example.org/tree/abc", "https://example.org/y"]
    import docx

    doc = docx.Document(io.BytesIO(data))
    assert [p.style.name for p in doc.paragraphs if p.style.name.startswith(("Title", "Heading"))] == ["Title", "Heading 1"]
    assert len(doc.tables) == 1 and doc.tables[0].cell(1, 0).text == "Code Repository"
    assert doc.core_properties.created.year == 2026
    assert {i.date_time for i in zipfile.ZipFile(io.BytesIO(data)).infolist()} == {docx_format.DOCX_EPOCH}


def test_a_distribution_on_a_chain_without_a_licensing_table_is_named():
    built = handin_build.site_handin(Project())
    h = built.handin
    assert handin.missing_licenses(h.pages, h.licenses) == []
    dists = {hop.func.source.dist for p in h.pages for hop in p.chain.hops} - set(handin.NO_LICENSE_DISTS)
    assert {"python", "flask-socketio", "python-engineio", "python-socketio", "simple-websocket", "wsproto", "h11", "werkzeug"} <= dists
    for dropped in h.licenses:
        rows = [r for r in h.licenses if r is not dropped]
        found = handin.missing_licenses(h.pages, rows)
        assert len(found) == 1 and "has no licensing table" in found[0], dropped.library
    stdlib = next(r for r in h.licenses if r.library == handin.STDLIB_LIBRARY)
    assert stdlib.spdx == "PSF-2.0"


def test_every_journey_has_its_numbered_chain_with_the_page_models_links():
    built = handin_build.site_handin(Project())
    h = built.handin
    md = handin.to_markdown(h, built.command)
    for page in h.pages:
        assert f"{{ #chain-{page.journey} }}" in md
        for i, v in enumerate(page.key_hops, 1):
            assert f"##### {i}. {markup.inline_code(v.hop.func.qualname)} (hop {v.page_number})" in md  # the page's number
    urls = [e.url for e in handin.expected_links(h)]
    assert sorted(handin.markdown_links(md)) == sorted(urls)
    html = handin.to_html(md, h.title)
    ids = set(re.findall(r'\bid="([^"]+)"', html))
    inner = set(re.findall(r'href="#([^"]+)"', html))
    assert inner and inner <= ids, f"internal links without a target: {sorted(inner - ids)[:5]}"
    data = docx_format.to_docx(html[html.index("<body>") + 6: html.rindex("</body>")], h.title, docx_format.recorded_datetime(h.made.recorded))
    xml = zipfile.ZipFile(io.BytesIO(data)).read("word/document.xml").decode()
    assert set(re.findall(r'w:anchor="([^"]+)"', xml)) == {docx_format.bookmark_name(i) for i in inner}
    assert set(re.findall(r'w:anchor="([^"]+)"', xml)) <= set(re.findall(r'w:name="([^"]+)"', xml))
    assert all(r.repository in urls for r in h.licenses)


def _sample_handin(texts: dict[str, str]) -> str:
    from samples import EMIT, HOP_LINKS

    page = render.journey_page(EMIT, HOP_LINKS, {}, texts)
    made = handin.Made((), "3.11.7", "2026-12-05T03:55:42+00:00", "a test", "dispel handin --out DIR")
    return handin.to_markdown(handin.HandIn("T", "I", (), (page,), made), "dispel handin")


def test_a_short_sentence_stands_for_the_full_text_in_the_hand_in_only():
    from dispel.render.annotation_files import parse_annotations
    from dispel.render.annotation_files import texts as texts_of_notes
    from samples import ANNOTATIONS, EMIT, EXCERPTS, HOP_LINKS

    notes = parse_annotations(
        "socketio.server:Server.emit:\n  short: Encodes the packet once, on {{thread}}.\n  text: |\n    Encodes the packet; see `Server._encode`.\n",
        "t.yml")
    assert notes["socketio.server:Server.emit"].short == "Encodes the packet once, on {{thread}}."
    texts = {**ANNOTATIONS, **texts_of_notes(notes)}
    md = _sample_handin(texts)
    assert "Encodes the packet once, on `handler-1`." in md and "see `Server._encode`" not in md
    assert "The user's handler." in md  # no short: the full text
    # the site's page is the same with or without the short sentence
    assert render.render_journey(EMIT, HOP_LINKS, EXCERPTS, texts) == render.render_journey(EMIT, HOP_LINKS, EXCERPTS, ANNOTATIONS)


def test_a_short_sentence_is_read_by_the_prose_rules():
    from samples import EMIT

    assert handin.short_problems({"emit": EMIT}, {"socketio.server:Server.emit": "Encodes the packet on {{thread}}."}, {}) == []
    found = handin.short_problems({"emit": EMIT}, {"socketio.server:Server.emit": "Encodes the packet on request-7."}, {})
    assert len(found) == 1 and "request-7" in found[0] and "short sentences on emit" in found[0]


def test_a_short_sentence_must_be_one_and_not_on_a_summary():
    from dispel.model import DispelError
    from dispel.render.annotation_files import parse_annotations

    with pytest.raises(DispelError, match="short must be one sentence"):
        parse_annotations("a.b:c:\n  short: |\n    One.\n\n    Two.\n  text: x\n", "t.yml")
    with pytest.raises(DispelError, match="a journey summary has no short sentence"):
        parse_annotations("journey:emit:\n  short: One.\n  text: x\n", "t.yml")


def test_every_hop_of_every_chain_is_in_the_hand_in_with_its_permalink():
    """The whole chain is there: each hop's permalink, made from the lock apart from the page model."""
    from dispel.project import load_chains, project_lock
    from dispel.render import stage as render_stage

    project = Project()
    built = handin_build.site_handin(project)
    linker = render_stage.hop_linker(project_lock(project))
    md = handin.to_markdown(built.handin, built.command)
    shown = set(handin.markdown_links(md))
    for journey, chain in load_chains(project).items():
        numbers = fold.page_numbers(chain)  # one anchor per recorded call, as on the page
        for n, hop in enumerate(chain.hops, 1):
            if hop.func.source.dist == "sample_app":
                assert f"{markup.inline_code(hop.func.source.path)} line {hop.line} (" in md
                continue
            links = linker(hop)
            assert links is not None and links.line in shown, f"{journey} hop {n}"
            at = numbers[n]
            assert f'<a id="{journey}-hop-{at}"></a>' in md or f"{{ #{journey}-hop-{at} }}" in md, f"{journey} hop {at} has no anchor"


# --------------------------------------------------------------------------- built


@pytest.fixture(scope="module")
def site_handin(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "handin"
    proc = dispel("handin", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.slow
def test_the_sites_hand_in_in_three_formats_carries_the_chains_links(site_handin):
    expected = sorted(e.url for e in handin.expected_links(handin_build.site_handin(Project()).handin))
    found = links_of(site_handin)
    assert sorted(found["report.md"]) == expected
    assert sorted(found["report.docx"]) == expected
    if not HAS_CHROMIUM:
        pytest.skip(NO_CHROMIUM)
    assert set(found["report.pdf"]) == set(expected)
    text = texts_of(site_handin)
    for name in ("report.md", "report.docx", "report.pdf"):
        assert "General Information & Licensing" in text[name] and "PSF-2.0" in text[name], name
    # text, never an image of text
    assert not [n for n in zipfile.ZipFile(site_handin / "report.docx").namelist() if n.startswith("word/media/")]
    assert not re.search(rb"/Subtype\s*/Image", (site_handin / "report.pdf").read_bytes())


@pytest.mark.slow
def test_the_sites_hand_in_checks_clean_and_regenerates_byte_for_byte(site_handin, tmp_path):
    failures, _notes, proven = handin_build.check(site_handin, handin_build.site_handin(Project()))
    assert failures == [] and proven > 100
    again = tmp_path / "again"
    assert dispel("handin", "--out", str(again)).returncode == 0
    for name in handin.FILES:
        if (site_handin / name).is_file():
            assert (again / name).read_bytes() == (site_handin / name).read_bytes(), name


@pytest.mark.slow
def test_a_mutated_docx_link_fails_the_check_with_the_rules_line(site_handin, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(site_handin, bad)
    docx_path = bad / "report.docx"
    with zipfile.ZipFile(docx_path) as z:
        parts = {i.filename: z.read(i.filename) for i in z.infolist()}
    rels = parts["word/_rels/document.xml.rels"].decode()
    target = re.search(r'Target="(https://github\.com/[^"]*#L(\d+))"', rels)
    mutated = target.group(1).rsplit("#L", 1)[0] + f"#L{int(target.group(2)) + 1}"
    parts["word/_rels/document.xml.rels"] = rels.replace(target.group(0), f'Target="{mutated}"', 1).encode()
    with zipfile.ZipFile(docx_path, "w") as z:
        for name, data in parts.items():
            z.writestr(name, data)
    proc = dispel("check", "--handin", str(bad))
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert f"handin/report.docx: link {mutated} is not on the chain (1×): regenerate the hand-in (`dispel handin`)" in lines
    assert any(ln.startswith(f"handin/report.docx: the chain's link {target.group(1)} is missing") for ln in lines)
    assert not any(ln.startswith(("handin/report.md", "handin/report.pdf")) for ln in lines)


@pytest.mark.slow
def test_libreoffice_converts_the_docx(site_handin, tmp_path):
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if soffice is None:
        pytest.skip("LibreOffice is not installed: the DOCX is not converted (python-docx reads it back)")
    proc = subprocess.run([soffice, "--headless", "--convert-to", "pdf", "--outdir", str(tmp_path), str(site_handin / "report.docx")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and (tmp_path / "report.pdf").is_file(), proc.stderr


@pytest.mark.slow
def test_without_chromium_the_md_and_docx_are_written_and_the_pdf_skipped_in_one_note(tmp_path):
    out = tmp_path / "handin"
    proc = dispel("handin", "--out", str(out), env={"DISPEL_CHROMIUM": "/nonexistent"})
    assert proc.returncode == 0, proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [
        "note: the PDF was skipped: /nonexistent not found (`apt-get install chromium`); report.md and report.docx are written (--require-pdf makes this an error)"]
    assert sorted(p.name for p in out.iterdir()) == [handin.MARKER, "report.docx", "report.md"]
    strict = tmp_path / "strict"
    proc = dispel("handin", "--out", str(strict), "--require-pdf", env={"DISPEL_CHROMIUM": "/nonexistent"})
    assert proc.returncode == 2 and not strict.exists()
    assert proc.stderr.strip().startswith("dispel: error: --require-pdf: /nonexistent not found") and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_bad_input_is_one_line_and_nothing_half_written(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own file\n")
    proc = dispel("handin", "--out", str(mine))
    assert proc.returncode == 2 and "is not a hand-in dispel wrote" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    proc = dispel("handin", "--report", str(tmp_path / "no-such-report"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert not (tmp_path / "out").exists()
    proc = dispel("check", "--handin", str(mine))
    assert proc.returncode == 2 and "is not a folder `dispel handin` wrote" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"], "a temporary folder was left behind"


# --------------------------------------------------------------------------- an example app's report


@pytest.fixture(scope="module")
def secret_report(tmp_path_factory) -> tuple[Path, Path]:
    """The ns_chat example with a secret in its settings and in an event's payload under `token`, reported and handed in."""
    tmp = tmp_path_factory.mktemp("secret")
    app = tmp / "app"
    app.mkdir()
    (app / "ns_chat.py").write_text((APPS / "ns_chat.py").read_text().replace('"example-not-secret"', f'"{SECRET}"'))
    scenario = (APPS / "ns_chat.toml").read_text().replace('data = "sunny"', f'data = {{ token = "{SECRET}" }}')
    assert SECRET in scenario
    (app / "ns_chat.toml").write_text(scenario)
    proc = dispel("report", "--scenario", "ns_chat.toml", "--out", str(tmp / "report"), "--no-site", cwd=app)
    assert proc.returncode == 0, proc.stderr
    proc = dispel("handin", "--report", str(tmp / "report"), "--out", str(tmp / "handin"))
    assert proc.returncode == 0, proc.stderr
    return tmp / "report", tmp / "handin"


@pytest.mark.slow
def test_an_apps_hand_in_in_three_formats_checks_clean(secret_report):
    report, out = secret_report
    expected = handin.expected_links(handin_build.report_handin(report, Project()).handin)
    found = links_of(out)
    assert sorted(found["report.md"]) == sorted(found["report.docx"]) == sorted(e.url for e in expected)
    if HAS_CHROMIUM:
        assert set(found["report.pdf"]) == {e.url for e in expected}
    text = texts_of(out)
    assert all("ns_chat" in t and "the app's own code" in t for t in text.values())
    proc = dispel("check", "--root", str(report), "--handin", str(out))
    assert proc.returncode == 0, proc.stdout


@pytest.mark.slow
def test_a_seeded_secret_reaches_none_of_the_three_formats(secret_report):
    _, out = secret_report
    text = texts_of(out)
    assert len(text) == (3 if HAS_CHROMIUM else 2)
    for name, shown in text.items():
        assert "mood" in shown or "anything_else" in shown, f"{name}: the text extraction found nothing of the app"
        assert SECRET not in shown, f"{name} shows the secret"
    for path in out.iterdir():
        assert SECRET.encode() not in path.read_bytes(), path.name
