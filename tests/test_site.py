"""The built site: `mkdocs build --strict` and Zensical on the real tree, and every page opened in headless Chromium."""
from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from functools import partial
from pathlib import Path
from urllib.parse import urldefrag, urljoin

import pytest
from dispel.render import pages as render
from dispel.run import browser as browser_driver
from samples import ANNOTATIONS, EMIT, EXCERPTS, HOP_LINKS, PAYLOAD

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OUTPUT = ROOT / "test-output"
CHROMIUM = str(browser_driver.CHROMIUM)
CHROMEDRIVER = str(browser_driver.CHROMEDRIVER)
PLACEHOLDER = "Not recorded yet"


def copy_project(dest: Path) -> Path:
    """mkdocs.yml and docs/ copied, so a test can add pages without touching the tree."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "mkdocs.yml", dest / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", dest / "docs")
    return dest


def with_synthetic_emit(project: Path) -> Path:
    """While the emit journey is not recorded, its page is the synthetic chain, so the site
    still carries a diagram, hops, wire tabs and the hostile payload to check. Once a real
    chain exists, the real page is kept (and must show the payload by itself)."""
    page = project / "docs" / "chains" / "emit.md"
    if PLACEHOLDER in page.read_text(encoding="utf-8"):
        page.write_text(render.render_journey(EMIT, HOP_LINKS, EXCERPTS, ANNOTATIONS), encoding="utf-8")
    return project


def mkdocs_build(project: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """`mkdocs build --strict` of a project folder into ``site`` (the tree's own site/ untouched)."""
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    return subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "-f", "mkdocs.yml", "-d", str(site)],
        cwd=project,  # pymdownx.snippets resolves its base_path from here
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_mkdocs_build_strict_on_the_real_tree(tmp_path):
    result = mkdocs_build(ROOT, tmp_path / "site")
    assert result.returncode == 0, result.stderr
    for page in ("index.html", "licensing/index.html", "sample_app/index.html", "how/index.html", "chains/emit/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    assert not (tmp_path / "site" / "annotations").exists(), "annotations are inputs, not pages"
    assert "fonts.googleapis.com" not in (tmp_path / "site" / "index.html").read_text(encoding="utf-8")


def test_strict_build_fails_on_a_broken_anchor(tmp_path):
    project = copy_project(tmp_path / "p")
    with (project / "docs" / "how.md").open("a", encoding="utf-8") as fh:
        fh.write("\n[broken](index.md#no-such-anchor)\n")
    result = mkdocs_build(project, tmp_path / "site")
    assert result.returncode != 0 and "no-such-anchor" in result.stderr


def find_zensical() -> str | None:
    for candidate in (os.environ.get("DISPEL_ZENSICAL"), str(BIN / "zensical"), shutil.which("zensical")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def test_zensical_builds_the_same_config(tmp_path):
    zensical = find_zensical()
    if zensical is None:
        pytest.skip("zensical is not installed (pip install zensical, or set DISPEL_ZENSICAL)")
    project = with_synthetic_emit(copy_project(tmp_path / "p"))
    result = subprocess.run(
        [zensical, "build", "--strict", "-f", "mkdocs.yml"], cwd=project, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    site = project / "site"
    assert (site / "chains" / "emit" / "index.html").is_file()
    emit = (site / "chains" / "emit" / "index.html").read_text(encoding="utf-8")
    assert "<svg" in emit and "<b>hi</b>" not in emit


# --------------------------------------------------------------------------- browser


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def served_site(tmp_path_factory):
    """The site built with mkdocs and served on 127.0.0.1 on a free port, for the module."""
    tmp = tmp_path_factory.mktemp("site")
    project = with_synthetic_emit(copy_project(tmp / "p"))
    site = tmp / "site"
    result = mkdocs_build(project, site)
    assert result.returncode == 0, result.stderr
    handler = partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/", site
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Debian's headless Chromium through its chromedriver; nothing is downloaded."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.skip(f"no {CHROMIUM} / {CHROMEDRIVER}: apt-get install -y chromium chromium-driver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        "--window-size=1280,2000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def page_urls(base: str, site: Path) -> list[str]:
    return sorted(
        urljoin(base, p.parent.relative_to(site).as_posix() + "/" if p.parent != site else "")
        for p in site.rglob("index.html")
        if "assets" not in p.parts
    )


@pytest.mark.browser
def test_every_page_in_headless_chromium(served_site, browser):
    base, site = served_site
    pages = page_urls(base, site)
    assert len(pages) >= 8, pages
    links: dict[str, set[str]] = {}
    for url in pages:
        browser.get(url)
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, f"{url}: console errors: {errors}"
        # Nothing may come from the network: every resource the page loaded is ours.
        resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        foreign = [r for r in resources if not r.startswith(base)]
        assert not foreign, f"{url} loaded from elsewhere: {foreign}"
        # getAttribute + URL: SVG links have no string .href, and the diagram's links count too.
        hrefs = browser.execute_script(
            "return Array.from(document.querySelectorAll('a[href]'))"
            ".map(a => new URL(a.getAttribute('href'), document.baseURI).href)"
        )
        for href in hrefs:
            if href.startswith(base):
                target, fragment = urldefrag(href)
                links.setdefault(target, set()).add(fragment)
    # Every internal link resolves, and so does its anchor, in the live DOM: some targets
    # (code annotations' tooltips) are made by the theme's script when the page loads.
    for target, fragments in sorted(links.items()):
        with urllib.request.urlopen(target, timeout=30) as response:
            assert response.status == 200, target
        wanted = sorted(f for f in fragments if f)
        if wanted and (target.endswith(("/", ".html"))):
            browser.get(target)
            missing = browser.execute_script(
                "return arguments[0].filter(f => !document.getElementById(f) && !document.getElementsByName(f).length)",
                wanted,
            )
            assert not missing, f"{target}: no anchors {missing}"


@pytest.mark.browser
def test_emit_page_diagram_and_payload(served_site, browser):
    base, _ = served_site
    browser.get(urljoin(base, "chains/emit/"))
    svg = browser.execute_script(
        "const s = document.querySelector('.dispel-diagram svg');"
        "if (!s) return null; const r = s.getBoundingClientRect();"
        "return {svg: s instanceof SVGSVGElement, width: r.width, height: r.height, texts: s.querySelectorAll('text').length}"
    )
    assert svg and svg["svg"] and svg["width"] > 100 and svg["height"] > 100 and svg["texts"] > 3, svg
    # textContent, not innerText: the wire tabs that are not selected are hidden, yet on the page.
    text = browser.execute_script("return document.querySelector('article').textContent")
    # Shown verbatim, or inside a JSON string (quotes escaped) as the encoded packet carries it.
    assert PAYLOAD in text or json.dumps(PAYLOAD)[1:-1] in text, "the payload must be shown as text"
    bold = browser.execute_script(
        "return Array.from(document.querySelectorAll('article b')).filter(b => b.textContent === 'hi').length"
    )
    assert bold == 0, "the payload became markup"
    OUTPUT.mkdir(exist_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, min(max(height, 800), 16000))
    assert browser.save_screenshot(str(OUTPUT / "emit.png"))
    browser.set_window_size(1280, 2000)


@pytest.mark.browser
def test_polling_page_shows_the_websocket_chains_in_tabs(served_site, browser):
    base, _ = served_site
    browser.get(urljoin(base, "chains/polling/"))
    # The last tab set is "Side by side": this chain, then the WebSocket chains it is compared
    # with. Its second label is clicked, and its second block must then show.
    shown = browser.execute_script(
        "const sets = document.querySelectorAll('.tabbed-set'); const last = sets[sets.length - 1];"
        "const labels = Array.from(last.querySelectorAll('.tabbed-labels label'));"
        "labels[1].click(); const block = last.querySelectorAll('.tabbed-block')[1];"
        "return {labels: labels.map(l => l.textContent.trim()), visible: block.offsetHeight > 0, text: block.innerText,"
        " links: Array.from(block.querySelectorAll('a')).map(a => a.getAttribute('href'))}"
    )
    labels = shown["labels"]
    assert labels[0].startswith("Long-polling") and any(l.startswith("WebSocket") for l in labels[1:]), labels
    assert shown["visible"] and "ws-reader" in shown["text"], shown["text"][:200]
    assert shown["links"] and all(h.startswith("../on/#hop-") for h in shown["links"]), shown["links"][:3]
