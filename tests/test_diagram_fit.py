"""The sequence diagrams fit the screen (issue #27): the built site (`mkdocs build`) opened in
headless Chromium at 1400x900, device scale factor 1, every page with a diagram measured as
rendered: the SVG no wider than its column (no sideways scrolling), drawn at its natural size,
every label at least 10 CSS px tall and inside the drawing, and hop labels on the diagram's
first screen (its top at the viewport's top)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from dispel.run import browser as browser_driver

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WIDTH, HEIGHT = 1400, 900
MIN_LABEL = 10  # CSS px, as rendered
FIRST_SCREEN_LABELS = 5  # hop labels (or all of a shorter diagram's) on the first screen

pytestmark = pytest.mark.slow

# Measured in the page, for every diagram: its width and its column's, the scrolling it needs,
# its scale, the smallest label line, the labels cut by its edges, and the hop labels that lie
# on its first screen (within HEIGHT px below its top, inside the window and the drawing).
MEASURE = """
const [height] = arguments;
return [...document.querySelectorAll('svg.dispel-sequence')].map(svg => {
  const column = svg.closest('.md-content__inner');
  const style = getComputedStyle(column);
  const box = svg.closest('.dispel-diagram');
  window.scrollTo(0, window.scrollY + svg.getBoundingClientRect().top);
  const s = svg.getBoundingClientRect();
  const lines = [...svg.querySelectorAll('tspan')].map(t => t.getBoundingClientRect());
  const hops = [...svg.querySelectorAll('a[href^="#hop-"] text')].map(t => t.getBoundingClientRect());
  const b = box.getBoundingClientRect();  // the scrolling box clips what lies past the column
  const inside = r => r.left >= Math.max(s.left, b.left, 0) - 0.5 && r.right <= Math.min(s.right, b.right, window.innerWidth) + 0.5;
  return {
    svg: s.width,
    natural: parseFloat(svg.getAttribute('width')),
    column: column.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight),
    scroll: Math.max(box.scrollWidth - box.clientWidth, document.documentElement.scrollWidth - window.innerWidth),
    smallest: Math.min(...lines.map(r => r.height)),
    cut: lines.filter(r => !inside(r)).length,
    hops: hops.length,
    first: hops.filter(r => r.top >= s.top && r.bottom <= s.top + height && inside(r)).length,
    firstIsShown: hops.length > 0 && hops[0].bottom <= s.top + height && inside(hops[0]),
  };
});
"""


def unavailable() -> str | None:
    absent = browser_driver.missing()
    if absent:
        return f"{' and '.join(absent)} not found: `{browser_driver.INSTALL_HINT}`"
    return browser_driver.selenium_missing()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    why = unavailable()
    if why:
        pytest.skip(f"diagram fit test skipped: {why}")
    site = tmp_path_factory.mktemp("fit") / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "--quiet", "-d", str(site)],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return site


@pytest.fixture(scope="module")
def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="dispel-fit-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(browser_driver.CHROMIUM)
    for flag in (*browser_driver.BROWSER_FLAGS, f"--window-size={WIDTH},{HEIGHT}", "--force-device-scale-factor=1", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(browser_driver.CHROMEDRIVER)), options=options)
    try:
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride", {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False}
        )
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def diagram_pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html") if "dispel-sequence" in p.read_text(encoding="utf-8"))


def test_every_diagram_fits_a_1400_window(built, chromium):
    pages = diagram_pages(built)
    journeys = {p.stem for p in (ROOT / "docs" / "chains").glob("*.md") if "dispel-sequence" in p.read_text(encoding="utf-8")}
    assert journeys and journeys <= {p.parent.name for p in pages}, "a journey page has no diagram in the built site"
    problems = []
    for page in pages:
        chromium.get(page.as_uri())
        name = page.parent.relative_to(built).as_posix()
        assert chromium.execute_script("return window.innerWidth") == WIDTH
        for m in chromium.execute_script(MEASURE, HEIGHT):
            print(f"{name}: svg {m['svg']:.0f} px in a {m['column']:.0f} px column, smallest label {m['smallest']:.1f} px, "
                  f"{m['first']} of {m['hops']} hop labels on the first screen")
            if m["svg"] > m["column"] or m["scroll"] > 0:
                problems.append(f"{name}: the diagram ({m['svg']:.0f} px) is wider than its column ({m['column']:.0f} px)")
            if abs(m["svg"] - m["natural"]) > 0.5:
                problems.append(f"{name}: the diagram is drawn at {m['svg']:.0f} px, not its natural {m['natural']:.0f} px")
            if m["smallest"] < MIN_LABEL:
                problems.append(f"{name}: a label is {m['smallest']:.1f} px tall, under {MIN_LABEL} px")
            if m["cut"]:
                problems.append(f"{name}: {m['cut']} label lines cut by the diagram's or the window's edge")
            if not m["firstIsShown"] or m["first"] < min(FIRST_SCREEN_LABELS, m["hops"]):
                problems.append(f"{name}: {m['first']} hop labels on the diagram's first screen")
    assert not problems, "\n".join(problems)
