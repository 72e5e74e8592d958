"""report.html (fourier_toy/experiments/report_html.py): the reproduce report as one self-contained page.

- pure-function tests on a small hand-made summary: escaping, a colour per verdict, a verdict row
  and a section per claim, each figure in its claim's section, nothing fetched from elsewhere;
- on the shared quick reproduce run (conftest.summary, slow): the page beside report.md, with
  every figure and report.md's tables;
- in headless Chromium (slow): every image decodes, one verdict row per claim, no console error,
  no sideways scrolling on a phone, and screenshots at 375x800 and 1280x900 that are not blank.
  Without a browser the test is skipped, except under CI=true where it fails. Set
  FOURIER_TOY_SCREENSHOTS to a folder to keep the screenshots.
"""

from __future__ import annotations

import base64
import io
import os
import re
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import _in_ci
from fourier_toy.experiments import claims, report_html
from fourier_toy.experiments.conditions import DEFAULT_SOURCE
from fourier_toy.experiments.report_html import CLAIM_FIGURES, VERDICT_STYLES, render

from .conftest import SEEDS

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# The machine may have no network: without the background-networking flags Chromium keeps trying
# to reach its update and sync services and floods the log with refused connections.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage")
SCREENSHOTS_ENV = "FOURIER_TOY_SCREENSHOTS"
WINDOWS = ((375, 800), (1280, 900))  # a phone and a desktop, CSS pixels
# The figure each claim's section shows (claims without one show none), by claim number.
FIGURE_OF_CLAIM = {1: "embedding_spectra.png", 2: "training_curves.png", 3: "module_spectra_x.png",
                   4: "table1_x.png", 5: "errors_x.png", 7: "lens.png"}
VOID = {"meta", "img", "br", "hr", "link", "input", "source", "wbr", "col", "area", "base", "embed", "track"}


# ---- a small hand-made summary -----------------------------------------------------------------

def _summary() -> dict:
    """A summary like report.write's, one claim per registry claim, the verdicts cycling through all five."""
    cl = {}
    for i, c in enumerate(claims.CLAIMS):
        cl[c.id] = {"id": c.id, "number": c.number, "title": c.title, "gpt2": c.gpt2,
                    "verdict": claims.VERDICTS[i % len(claims.VERDICTS)], "criterion": c.criterion(),
                    "checks": [{"check": f"{c.id}: mean x >= 0.5", "values": [0.61, 0.7, None],
                                "interval": [None, 0.812], "outcome": claims.PASS}],
                    "construction": [{"check": "built: mean y >= 3", "values": [4.0], "interval": None,
                                      "outcome": claims.FAIL}]}
    return {"dir": "/nonexistent", "conditions": ["learned", "fourier_frozen"],
            "labels": {"learned": "learned", "fourier_frozen": "fourier_frozen"},
            "seeds": {"learned": [0, 1, 2], "fourier_frozen": [0, 1, 2]},
            "setup": {"max_operand": 60, "n_numbers": 121,
                      "model": {"backend": "numba", "d_model": 128, "n_ctx": 4, "n_heads": 4, "n_layers": 2,
                                "tied": False},
                      "train": {"batch_size": 256, "lr": 0.001, "max_steps": 1000, "weight_decay": 0.01,
                                "schedule": "constant", "eval_every": 100},
                      "basis": {"basis": "exact", "N": 120, "tau": 12, "d": 128}, "source": "toy"},
            "claims": cl, "main_table1": "fourier_frozen", "preset": "quick"}


def _md(summary: dict) -> str:
    """report.md-shaped text: each claim's section with a paragraph and a table in its body."""
    lines = ["# report", ""]
    for c in summary["claims"].values():
        lines += [f'<a id="claim-{c["number"]}"></a>', f"## {c['number']}. {c['title']}", "", f"GPT-2: {c['gpt2']}.", "",
                  f"Body of claim {c['number']}.", "", "| condition | toy acc |", "|---|---|",
                  f"| learned | 0.{c['number']}00 ± 0.010 |", "", f"Verdict: **{c['verdict']}**.", "", "| check |",
                  "|---|", "| x |", ""]
    return "\n".join(lines)


class _Page(HTMLParser):
    """Every start tag with its attributes, checking that the page's elements nest properly."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.stack: list[str] = []
        self.feed(text)
        self.close()
        assert not self.stack, f"unclosed elements: {self.stack}"

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()


def _sections(page: str) -> dict[int, str]:
    """Claim number -> the HTML of its section."""
    parts = re.split(r'(?=<section class="claim" id="claim-\d+">)', page)
    return {int(re.match(r'<section class="claim" id="claim-(\d+)">', p).group(1)): p.split("</section>", 1)[0]
            for p in parts if p.startswith('<section class="claim"')}


def _verdict_rows(page: str) -> list[str]:
    table = page.split('<table class="verdicts">', 1)[1].split("</table>", 1)[0]
    return re.findall(r"<tr><td>.*?</tr>", table)


def test_every_claim_has_a_verdict_row_linking_to_its_section():
    s = _summary()
    page = render(s, _md(s))
    rows, sections = _verdict_rows(page), _sections(page)
    assert len(rows) == len(claims.CLAIMS) == len(sections)
    for row, claim in zip(rows, sorted(claims.CLAIMS, key=lambda c: c.number)):
        assert f'href="#claim-{claim.number}"' in row
        assert page.count(f'id="claim-{claim.number}"') == 1
        sec = sections[claim.number]
        assert "GPT-2 (paper)" in sec and "This toy" in sec
        assert f"0.{claim.number}00 ± 0.010" in sec  # the body's table, from report.md
        assert "<th scope=\"col\">condition</th>" in sec
        assert "mean x &gt;= 0.5" in sec and "0.61, 0.7, never" in sec and "[-inf, 0.812]" in sec
        assert "construction check, not counted" in sec


def test_every_verdict_has_its_own_colour_and_word():
    s = _summary()
    page = render(s, _md(s))
    backgrounds = {}
    for verdict, (cls, bg, fg, _, _) in VERDICT_STYLES.items():
        assert f".{cls} {{ background: {bg}; color: {fg}; }}" in page
        backgrounds[verdict] = bg
        assert re.search(rf'<li><span class="verdict {cls}">.*?{re.escape(verdict)}</span>', page), "legend"
    assert set(backgrounds) == set(claims.VERDICTS)
    assert len(set(backgrounds.values())) == len(claims.VERDICTS)
    for row, claim in zip(_verdict_rows(page), sorted(s["claims"].values(), key=lambda c: c["number"])):
        cls = VERDICT_STYLES[claim["verdict"]][0]
        assert re.search(rf'<td class="verdict {cls}">.*{re.escape(claim["verdict"])}</td>', row), row


def test_every_inserted_text_is_escaped():
    s = _summary()
    evil = '<img src=x onerror="alert(1)"> & \'q\''
    first = next(iter(s["claims"].values()))
    first.update(title=evil, gpt2=evil, criterion=evil, verdict=evil)
    first["checks"][0]["check"] = evil
    s["setup"]["source"] = evil
    s["conditions"] = [evil]
    md = _md(s).replace("| learned |", "| <b>x</b> & y |")
    page = render(s, md)
    assert "<img src=x" not in page and "<b>x</b>" not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; &amp; &#x27;q&#x27;" in page
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in page
    assert re.search(r'<td class="verdict v-unknown">&lt;img', page), "an unknown verdict gets no colour"
    _Page(page)  # still well formed


def test_the_page_is_well_formed_and_fetches_nothing():
    s = _summary()
    png = b"\x89PNG\r\n\x1a\n fake"
    page = render(s, _md(s), {name: png for name in FIGURE_OF_CLAIM.values()})
    parsed = _Page(page)
    assert page.startswith("<!DOCTYPE html>")
    tags = [t for t, _ in parsed.tags]
    assert "script" not in tags and "link" not in tags and "iframe" not in tags and "object" not in tags
    assert "<script" not in page.lower() and "@import" not in page and "url(" not in page
    for tag, attrs in parsed.tags:
        for key in ("src", "href", "srcset", "action"):
            value = attrs.get(key)
            if value is not None:
                assert "http" not in value and not value.startswith("//"), (tag, key, value[:80])
                assert value.startswith(("data:image/png;base64,", "#")), (tag, key, value[:80])
    ids = [a["id"] for _, a in parsed.tags if "id" in a]
    assert len(ids) == len(set(ids))
    for _, a in parsed.tags:
        if a.get("href", "").startswith("#"):
            assert a["href"][1:] in ids, a["href"]
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "img { max-width: 100%" in page and ".table-wrap { overflow-x: auto" in page


def test_each_figure_goes_to_its_claim():
    s = _summary()
    figures = {name: name.encode() * 3 for name in [*FIGURE_OF_CLAIM.values(), "probes_extra.png"]}
    sections = _sections(render(s, _md(s), figures))
    for number, sec in sections.items():
        imgs = re.findall(r'<img src="data:image/png;base64,([^"]+)"', sec)
        want = FIGURE_OF_CLAIM.get(number)
        assert [base64.b64decode(x) for x in imgs] == ([figures[want]] if want else []), number
    assert set(CLAIM_FIGURES) <= {c.id for c in claims.CLAIMS}


def test_the_command_comes_from_the_summary():
    assert (report_html.reproduce_command("paper", 5, "my rows.npy", ["train.lr=0.01"])
            == "fourier-toy reproduce --preset paper --seeds 5 --source 'my rows.npy' --set train.lr=0.01")
    s = _summary()
    assert report_html.command(s) == "fourier-toy reproduce --preset quick --seeds 3 --source toy"
    s["command"] = "fourier-toy reproduce --preset paper --seeds 2 --source 'a&b'"
    page = render(s, "")
    assert '<code class="command">fourier-toy reproduce --preset paper --seeds 2 --source &#x27;a&amp;b&#x27;</code>' in page
    del s["preset"], s["command"]
    assert "--preset PRESET" in report_html.command(s)


# ---- the shared quick reproduce run -----------------------------------------------------------

@pytest.mark.slow
def test_report_html_is_written_beside_report_md(summary):
    """reproduce writes report.html with every figure embedded, report.md's tables and its command."""
    out = Path(summary["dir"])
    page = (out / report_html.REPORT_HTML).read_text(encoding="utf-8")
    md = (out / "report.md").read_text()
    figures = sorted((out / "figures").glob("*.png"))
    assert len(figures) >= 6
    for fig in figures:
        assert base64.b64encode(fig.read_bytes()).decode() in page, fig.name
    assert len(_verdict_rows(page)) == len(claims.CLAIMS)
    sections = _sections(page)
    for claim in claims.CLAIMS:
        verdict = summary["verdicts"][claim.id]
        assert f'<td class="verdict {VERDICT_STYLES[verdict][0]}">' in page
        n_tables = sum(line.startswith("|---") for line in report_html.section_bodies(md)[claim.number])
        assert sections[claim.number].count('<table class="data">') == n_tables > 0, claim.id
    assert "0.3589" in page  # GPT-2's MLP-low accuracy beside the toy's, as in report.md
    assert summary["command"] == f"fourier-toy reproduce --preset quick --seeds {SEEDS} --source {DEFAULT_SOURCE}"
    assert f'<code class="command">{summary["command"]}</code>' in page
    _Page(page)


# ---- in a real browser --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def browser():
    """Chromium and its driver, or a skip (a failure under CI=true) naming what is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[test]')")
    if missing:
        reason = (f"no browser to open report.html in: {', '.join(missing)} missing "
                  f"(apt-get install chromium chromium-driver)")
        if _in_ci():
            pytest.fail(f"CI=true: {reason}", pytrace=False)
        pytest.skip(reason)
    return CHROMIUM, CHROMEDRIVER


def _decode_png(png: bytes):
    import matplotlib.image

    return matplotlib.image.imread(io.BytesIO(png), format="png")


def open_in_browser(page: Path, n_claims: int, save_to: Path | None = None) -> dict:
    """Open `page` in headless Chromium at each of WINDOWS and check what a reader would see.

    Returns {(width, height): screenshot PNG bytes}; saves them into save_to when given.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    shots = {}
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        options = Options()
        options.binary_location = str(CHROMIUM)
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.add_argument("--force-device-scale-factor=1")  # screenshots in CSS pixels
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            for width, height in WINDOWS:
                # The viewport itself, not the window around it: the screenshot is exactly this size.
                driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                       {"width": width, "height": height, "deviceScaleFactor": 1,
                                        "mobile": width < 600})
                driver.get(page.resolve().as_uri())
                images = driver.execute_script(
                    "return Array.from(document.images, i => [i.complete, i.naturalWidth, i.alt]);")
                assert images and all(done and w > 0 for done, w, _ in images), images
                rows = driver.find_elements(By.CSS_SELECTOR, "table.verdicts tbody tr")
                assert len(rows) == n_claims
                targets = driver.execute_script(
                    "return Array.from(document.querySelectorAll('table.verdicts a'),"
                    " a => !!document.getElementById(a.getAttribute('href').slice(1)));")
                assert targets == [True] * n_claims
                # Wide tables scroll inside their own box: the page itself never scrolls sideways.
                page_width = driver.execute_script("return document.documentElement.scrollWidth;")
                inner = driver.execute_script("return window.innerWidth;")
                assert page_width <= inner, (width, page_width, inner)
                png = driver.get_screenshot_as_png()
                pixels = _decode_png(png)
                assert pixels.shape[:2] == (height, width), pixels.shape
                assert pixels[..., :3].std() > 0.05, "blank screenshot"
                shots[(width, height)] = png
                severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
                assert not severe, severe
        finally:
            driver.quit()
    if save_to is not None:
        save_to.mkdir(parents=True, exist_ok=True)
        for (w, h), png in shots.items():
            (save_to / f"report_{w}x{h}.png").write_bytes(png)
    return shots


@pytest.mark.slow
def test_report_html_in_a_browser(browser, summary):
    """The quick run's report.html in headless Chromium, at phone and desktop sizes."""
    save_to = os.environ.get(SCREENSHOTS_ENV, "").strip()
    shots = open_in_browser(Path(summary["dir"]) / report_html.REPORT_HTML, len(claims.CLAIMS),
                            Path(save_to) if save_to else None)
    assert set(shots) == set(WINDOWS)
