"""report.html in a real browser (headless Chromium): every figure loads and is visible, every table is laid out,
nothing runs off the page sideways, and a screenshot shows each figure's pixels where the page says it is.

The page gets a small script that measures its own layout after loading and writes the numbers into the DOM,
which Chromium's `--dump-dom` prints. Skipped, with the reason, where no Chromium is installed (`.ci/run`
installs Debian's `chromium`)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_reports import report_manifest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WIDTHS = (1280, 900)  # a desktop window and half of a laptop screen

MEASURE = """<script>
addEventListener('load', () => {
  const root = document.documentElement;
  const box = el => { const r = el.getBoundingClientRect();
    return {left: r.left, top: r.top + scrollY, width: r.width, height: r.height, right: r.right}; };
  const shown = el => { const s = getComputedStyle(el); return s.display !== 'none' && s.visibility !== 'hidden'; };
  const out = {viewport: root.clientWidth, scrollWidth: root.scrollWidth, height: root.scrollHeight,
    images: [...document.images].map(img => ({alt: img.alt, loaded: img.complete && img.naturalWidth > 0,
      shown: shown(img), ...box(img)})),
    tables: [...document.querySelectorAll('table')].map(t => ({rows: t.rows.length, shown: shown(t),
      overflow: t.scrollWidth - t.clientWidth, ...box(t)}))};
  const pre = document.createElement('pre'); pre.id = 'layout'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def browser() -> str | None:
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def run_browser(*args: str) -> str:
    exe = browser()
    if exe is None:
        pytest.skip(f"no headless browser installed ({', '.join(BROWSERS)}); .ci/run installs Debian's chromium")
    command = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=10000"]
    proc = subprocess.run([*command, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def layout(page: Path, width: int, tmp_path: Path) -> dict:
    probe = tmp_path / f"probe-{width}.html"
    probe.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    dom = run_browser(f"--window-size={width},1000", "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="layout">(.*?)</pre>', dom, re.S)
    assert found, "the page's layout probe did not run"
    return json.loads(html.unescape(found.group(1)))


def check_page(page: Path, tmp_path: Path, min_images: int) -> None:
    for width in WIDTHS:
        measured = layout(page, width, tmp_path)
        assert measured["scrollWidth"] <= measured["viewport"], f"the page scrolls sideways at {width}px"
        assert len(measured["images"]) >= min_images
        for img in measured["images"]:
            assert img["loaded"] and img["shown"], img["alt"]
            assert img["width"] > 100 and img["height"] > 80, img["alt"]
            assert img["left"] >= 0 and img["right"] <= measured["viewport"] + 0.5, f"{img['alt']} at {width}px"
        for table in measured["tables"]:
            assert table["shown"] and table["rows"] >= 2 and table["height"] > 0
            assert table["right"] <= measured["viewport"] + 0.5 and table["overflow"] <= 0, f"a table at {width}px"
    # A full-page screenshot: each figure's area must hold a picture (many colours), not blank page.
    from PIL import Image

    shot = tmp_path / "page.png"
    run_browser(f"--window-size=1280,{int(measured['height']) + 20}", f"--screenshot={shot}", page.as_uri())
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    measured = layout(page, 1280, tmp_path)
    for img in measured["images"]:
        top, left = int(img["top"]), int(img["left"])
        area = pixels[top : top + int(img["height"]), left : left + int(img["width"])]
        assert area.size and area.std() > 10, f"{img['alt']}: blank in the screenshot"


def test_report_with_every_section_renders_in_a_browser(tmp_path):
    from imgpipe.pipeline.reports.html import write_html_report

    page = tmp_path / "report.html"
    write_html_report(page, report_manifest())
    check_page(page, tmp_path, min_images=7)  # 2 trade-offs, sizes, per-class, confusion, training, prune, qat


@pytest.mark.slow
@pytest.mark.e2e
def test_the_real_builds_report_renders_in_a_browser(cli_build, tmp_path):
    check_page(cli_build[1] / "report.html", tmp_path, min_images=6)
