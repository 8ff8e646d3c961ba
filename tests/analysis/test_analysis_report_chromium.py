"""The report as a reader sees it: rendered by a real headless Chromium, checked in the page.

A report can pass every data test and still be useless on screen: a figure that failed to
encode shows as a broken image, a blank PNG looks like a missing plot, a wide table runs off
the page, raw column names and unformatted byte counts leave the reader guessing. The page
itself is asked (JavaScript over the DevTools protocol): every figure decodes and carries
ink, nothing overflows the window, every header is human and no number is left raw. A
screenshot is kept beside the test's files for a person to look at. The checker is shown to
fail on a report with a blank and a broken figure, so a pass means something.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
import trio
from cdp import Chromium, Page, chromium_or_skip, open_page
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from procs import patience
from typer.testing import CliRunner

from swarm_tune.runtime.cli import app

pytestmark = [pytest.mark.slow, pytest.mark.timeout(patience(180))]

# Per figure: [plot key, share of pixels that are not near-white], or [key, "broken"].
FIGURE_INK = """(() => [...document.querySelectorAll('figure')].map(fig => {
  const img = fig.querySelector('img');
  if (!img || !img.complete || img.naturalWidth === 0) return [fig.dataset.plot, 'broken'];
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let ink = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] < 200 || d[i+1] < 200 || d[i+2] < 200) ink++;
  return [fig.dataset.plot, ink / (d.length / 4)];
}))()"""

PAGE_FACTS = """(() => ({
  overflow: document.documentElement.scrollWidth - window.innerWidth,
  headers: [...document.querySelectorAll('th')].map(th => th.textContent.trim()),
  cells: [...document.querySelectorAll('td')].map(td => td.textContent.trim()),
  meanings: document.querySelectorAll('dl.meanings dt').length,
}))()"""

MIN_INK = 0.005  # an axes frame with ticks and a title alone is ~2%; a blank PNG is 0


def _blank_png() -> str:
    fig = Figure(figsize=(4, 3), dpi=50)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _bad_figures(ink: list[list[Any]]) -> list[str]:
    return [str(k) for k, v in ink if v == "broken" or float(v) < MIN_INK]


def test_report_renders_in_chromium(runs: tuple[Path, Path], tmp_path: Path) -> None:
    exe = chromium_or_skip()
    run, base = runs
    res = CliRunner().invoke(
        app, ["report", str(run), "--baseline", str(base), "--out", str(tmp_path)]
    )
    assert res.exit_code == 0, res.output
    report = tmp_path / "report.html"
    # The same report with its first figure blanked and its second one broken.
    text = report.read_text(encoding="utf-8")
    srcs = text.split('src="data:image/png;base64,')
    assert len(srcs) > 3
    first_end = srcs[1].index('"')
    second_end = srcs[2].index('"')
    srcs[1] = _blank_png() + srcs[1][first_end:]
    srcs[2] = "AAAA" + srcs[2][second_end:]
    damaged = tmp_path / "damaged.html"
    damaged.write_text('src="data:image/png;base64,'.join(srcs), encoding="utf-8")

    browser = Chromium(exe, tmp_path / "profile", report.as_uri())
    shot = tmp_path / "report.png"

    async def drive() -> tuple[list[list[Any]], dict[str, Any], list[list[Any]]]:
        async with open_page(browser.page_ws_url()) as ws:
            page = Page(ws)
            # The first target may still be about:blank: wait for the report itself.
            await page.wait_for(
                "document.readyState === 'complete' && location.href.endsWith('report.html')"
                " && document.querySelectorAll('figure img').length > 0",
                60,
                "the report to load",
            )
            ink = await page.eval(FIGURE_INK)
            facts = await page.eval(PAGE_FACTS)
            await page.screenshot(shot)
            await page.call("Page.navigate", url=damaged.as_uri())
            await page.wait_for(
                "document.readyState === 'complete' && location.href.endsWith('damaged.html')",
                60,
                "the damaged report to load",
            )
            damaged_ink = await page.eval(FIGURE_INK)
            return ink, facts, damaged_ink

    try:
        ink, facts, damaged_ink = trio.run(drive)
    finally:
        browser.close()

    print("figure ink:", {k: v for k, v in ink})
    assert len(ink) >= 5
    assert _bad_figures(ink) == [], ink
    # The checker sees a blank and a broken figure for what they are.
    assert _bad_figures(damaged_ink) == [ink[0][0], ink[1][0]], damaged_ink
    assert facts["overflow"] <= 0, f"the page is {facts['overflow']} px wider than the window"
    assert not [h for h in facts["headers"] if "_" in h], facts["headers"]
    raw_numbers = [c for c in facts["cells"] if c.isdigit() and len(c) >= 5]
    assert raw_numbers == [], f"numbers left raw: {raw_numbers}"
    assert any(c.endswith(("kB", "MB", "GB")) for c in facts["cells"]), facts["cells"]
    assert facts["meanings"] >= 10  # every metric in the runs table is explained
    assert shot.stat().st_size > 20_000
