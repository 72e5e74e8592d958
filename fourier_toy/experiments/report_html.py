"""report.html: the reproduce report as one page a teacher can open in class.

The page holds the same content as report.md (report.py) for a reader without a Markdown viewer:
the verdict table first, each verdict coloured and spelled out; then one section per claim with
GPT-2's number beside the toy's table, the checks behind the verdict, the criterion and the
claim's figure; then the run's setup and the command that reproduces it.

It is one self-contained file: the figures are embedded as base64 PNG data URIs, the CSS is inline,
there is no script and no font or stylesheet to fetch, so it opens offline, from a USB stick or an
e-mail attachment, on a phone as on a projector.

Nothing is recomputed here: the verdicts and checks come from summary["claims"] (the claims
registry's judgement, claims.py) and each claim's table is the one report.md shows, read from the
report.md text that report.py writes from summary["claims"][id]["rows"].
"""

from __future__ import annotations

import base64
import fnmatch
import html
import re
import shlex
from pathlib import Path

from fourier_toy.experiments import claims
from fourier_toy.experiments import paper as ref
from fourier_toy.experiments.conditions import measured_by
from fourier_toy.experiments.sweep import FIGURES
from fourier_toy.runs.files import atomic_write_text

REPORT_HTML = "report.html"

# Verdict -> (CSS class, background, text colour, symbol, meaning). The backgrounds are from the
# Okabe-Ito palette, which stays distinguishable under the common colour-vision deficiencies; the
# verdict's word is always printed in the cell as well, and a symbol keeps it apart in greyscale.
# Every text colour has a contrast ratio of at least 4.5 on its background.
VERDICT_STYLES = {
    claims.REPRODUCED: ("v-reproduced", "#009E73", "#000000", "\u2713", "every check passes"),
    claims.PARTLY: ("v-partly", "#56B4E9", "#000000", "\u25D0", "some checks pass, none is inconclusive"),
    claims.NOT_REPRODUCED: ("v-not-reproduced", "#D55E00", "#000000", "\u2717", "no check passes"),
    claims.INCONCLUSIVE: ("v-inconclusive", "#F0E442", "#000000", "?",
                          "a check's interval straddles its threshold: more seeds could decide"),
    claims.NOT_MEASURABLE: ("v-not-measurable", "#BBBBBB", "#000000", "\u2013",
                            "no check can be measured on these runs"),
}
UNKNOWN_CLASS = "v-unknown"
# A check's outcome is coloured like the verdict it would give on its own.
OUTCOME_VERDICT = {claims.PASS: claims.REPRODUCED, claims.FAIL: claims.NOT_REPRODUCED,
                   claims.INCONCLUSIVE: claims.INCONCLUSIVE, claims.NOT_MEASURABLE: claims.NOT_MEASURABLE}

# Claim id -> the figures (names in FIGURES, glob patterns) that belong in its section, each with
# the caption a reader needs to know what to look at. Claims not listed have no figure.
CLAIM_FIGURES = {
    "embedding_spectra": [("embedding_spectra.png", "Fourier spectrum of each condition's number embeddings: "
                           "spikes at periods 2, 2.5, 5 and 10 are the Fourier features.")],
    "rescue": [("training_curves.png", "Test accuracy during training, mean over seeds (band: min to max).")],
    "division_of_labour": [("module_spectra_*.png", "What each attention and MLP module writes, by frequency "
                            "(logit lens): right of the white line is the high band.")],
    "table1": [("table1_*.png", "Accuracy with low or high frequencies filtered out of the modules' outputs, "
                "the toy beside GPT-2-XL (paper).")],
    "error_types": [("errors_*.png", "The errors each filter causes: (a + b) minus the prediction.")],
    "logit_lens": [("lens.png", "Logit lens: accuracy read from the residual stream after each layer.")],
}


# ---- the command --------------------------------------------------------------------------------

def reproduce_command(preset: str, seeds: int, source: str, overrides=()) -> str:
    """The `fourier-toy reproduce` command line for these arguments, quoted for a POSIX shell."""
    args = ["fourier-toy", "reproduce", "--preset", str(preset), "--seeds", str(seeds), "--source", str(source)]
    for o in overrides:
        args += ["--set", str(o)]
    return shlex.join(args)


def command(summary: dict) -> str:
    """The command that reproduces the summary's run: as recorded by reproduce, else rebuilt from the
    preset, the seeds per condition and the source it records (PRESET when the preset is unknown)."""
    if summary.get("command"):
        return summary["command"]
    seeds = max((len(v) for v in summary.get("seeds", {}).values()), default=0)
    return reproduce_command(summary.get("preset") or "PRESET", seeds, summary["setup"].get("source") or "toy")


# ---- report.md's section bodies -----------------------------------------------------------------

def section_bodies(report_md: str) -> dict[int, list[str]]:
    """Claim number -> the Markdown lines of its section between GPT-2's line and the verdict line
    (the paragraphs and tables report.py writes from the claim's rows)."""
    lines = report_md.splitlines()
    bodies: dict[int, list[str]] = {}
    for i, line in enumerate(lines):
        m = re.fullmatch(r'<a id="claim-(\d+)"></a>', line.strip())
        if not m:
            continue
        start = next((j + 1 for j in range(i + 1, len(lines)) if lines[j].startswith("GPT-2: ")), None)
        if start is None:
            continue
        end = next((j for j in range(start, len(lines)) if lines[j].startswith("Verdict: ")), len(lines))
        bodies[int(m.group(1))] = lines[start:end]
    return bodies


def _inline(text: str) -> str:
    """Escaped text with Markdown's **bold** and `code` as HTML (the only inline marks report.md uses)."""
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_blocks(lines: list[str]) -> str:
    """The paragraphs and pipe tables of report.md lines as HTML."""
    blocks, block = [], []
    for line in [*lines, ""]:
        if line.strip():
            block.append(line)
            continue
        if not block:
            continue
        if block[0].lstrip().startswith("|"):
            header, rows = _cells(block[0]), [_cells(b) for b in block[1:]
                                              if not re.fullmatch(r"\|?(\s*:?-+:?\s*\|)+\s*", b.strip())]
            blocks.append(_table(header, rows, raw=False))
        else:
            blocks.append(f"<p>{_inline(' '.join(b.strip() for b in block))}</p>")
        block = []
    return "\n".join(blocks)


# ---- building blocks ----------------------------------------------------------------------------

def _table(header: list[str], rows: list[list[str]], raw: bool, cls: str = "data") -> str:
    """A table in its own horizontally scrolling box. Cells are Markdown-inline text, or HTML already
    escaped when raw (only this module's own markup)."""
    cell = (lambda c: c) if raw else _inline
    head = "".join(f'<th scope="col">{cell(h)}</th>' for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>\n" for row in rows)
    return (f'<div class="table-wrap"><table class="{cls}"><thead><tr>{head}</tr></thead>\n'
            f"<tbody>\n{body}</tbody></table></div>")


def verdict_badge(verdict: str, tag: str = "span") -> str:
    """The verdict's word, with its symbol, in its colour class."""
    cls, _, _, symbol, _ = VERDICT_STYLES.get(verdict, (UNKNOWN_CLASS, "", "", "", ""))
    mark = f'<span class="sym" aria-hidden="true">{html.escape(symbol)}</span> ' if symbol else ""
    return f'<{tag} class="verdict {cls}">{mark}{html.escape(verdict)}</{tag}>'


def _css() -> str:
    colours = "\n".join(f".{cls} {{ background: {bg}; color: {fg}; }}"
                        for cls, bg, fg, _, _ in VERDICT_STYLES.values())
    return _CSS + colours + "\n"


_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #fafafa; color: #1a1a1a; line-height: 1.5;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans",
    "Liberation Sans", "DejaVu Sans", sans-serif; font-size: 1rem; }
main { max-width: 72rem; margin: 0 auto; padding: 0.75rem; }
h1 { font-size: 1.6rem; line-height: 1.25; margin: 0.5rem 0 0.75rem; }
h2 { font-size: 1.3rem; line-height: 1.3; margin: 0 0 0.75rem; }
h3 { font-size: 1.05rem; margin: 1rem 0 0.5rem; }
section { background: #fff; border: 1px solid #ddd; border-radius: 0.5rem; padding: 0.75rem; margin: 1rem 0; }
a { color: #0b57a4; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace; }
pre { background: #f1f1f1; padding: 0.75rem; border-radius: 0.375rem; overflow-x: auto; white-space: pre; }
.table-wrap { overflow-x: auto; max-width: 100%; margin: 0.5rem 0; border: 1px solid #e4e4e4; border-radius: 0.375rem; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
th, td { padding: 0.35rem 0.55rem; border-bottom: 1px solid #e4e4e4; text-align: left; vertical-align: top; }
thead th { background: #f3f3f3; }
table.data td + td { white-space: nowrap; font-variant-numeric: tabular-nums; }
table.checks td:first-child { min-width: 14rem; }
table.checks td:nth-child(2), table.checks td:nth-child(3) { white-space: nowrap; font-variant-numeric: tabular-nums; }
tr.construction td:not(.verdict) { color: #555; font-style: italic; }
.verdict { display: inline-block; padding: 0.1rem 0.5rem; border-radius: 0.25rem; font-weight: 600;
  white-space: nowrap; border: 1px solid rgba(0, 0, 0, 0.35); }
td.verdict { display: table-cell; border-radius: 0; }
.v-unknown { background: #fff; color: #000; }
h2 .verdict { font-size: 0.9rem; vertical-align: middle; margin-left: 0.25rem; }
.legend { list-style: none; padding: 0; margin: 0.75rem 0 0; display: flex; flex-wrap: wrap; gap: 0.4rem 1rem; }
.legend li { font-size: 0.9rem; }
.compare { display: grid; grid-template-columns: 1fr; gap: 0.75rem; align-items: start; }
.card { border: 1px solid #e4e4e4; border-radius: 0.375rem; padding: 0.75rem; min-width: 0; }
.card h3 { margin-top: 0; }
.card.gpt2 { background: #f4f4f4; }
figure { margin: 1rem 0 0; }
img { max-width: 100%; height: auto; display: block; border: 1px solid #eee; }
figcaption { font-size: 0.85rem; color: #444; margin-top: 0.3rem; }
.criterion { font-size: 0.9rem; color: #333; }
dl.setup { display: grid; grid-template-columns: 1fr; gap: 0.2rem 1rem; margin: 0; }
dl.setup dt { font-weight: 600; }
dl.setup dd { margin: 0 0 0.5rem; overflow-wrap: anywhere; }
.back { font-size: 0.85rem; margin: 0.75rem 0 0; }
@media (min-width: 48rem) {
  main { padding: 1.5rem 2rem; }
  section { padding: 1rem; }
  h1 { font-size: 2rem; }
  .compare { grid-template-columns: minmax(12rem, 1fr) 3fr; }
  dl.setup { grid-template-columns: 10rem 1fr; }
  dl.setup dd { margin: 0; }
}
@media print { section { break-inside: avoid-page; border: none; } }
"""


def _interval(c: dict) -> str:
    iv = c.get("interval")
    if not iv:
        return "-"
    ends = ["-inf" if x is None and i == 0 else "inf" if x is None else f"{x:.3f}" for i, x in enumerate(iv)]
    return "[" + ", ".join(ends) + "]"


def _values(c: dict) -> str:
    return ", ".join("never" if v is None else f"{v:.3g}" for v in c.get("values") or []) or "-"


def checks_table(claim: dict) -> str:
    """The claim's checks (and construction checks, shown but not counted) with their outcomes."""
    def row(c, construction):
        name = html.escape(c["check"]) + (" <em>(construction check, not counted)</em>" if construction else "")
        outcome = c.get("outcome") or ""
        cls = VERDICT_STYLES.get(OUTCOME_VERDICT.get(outcome, ""), (UNKNOWN_CLASS,))[0]
        tr = '<tr class="construction">' if construction else "<tr>"
        return (f"{tr}<td>{name}</td><td>{html.escape(_values(c))}</td><td>{html.escape(_interval(c))}</td>"
                f'<td class="verdict {cls}">{html.escape(outcome)}</td></tr>\n')

    rows = [row(c, False) for c in claim.get("checks", [])] + [row(c, True) for c in claim.get("construction", [])]
    head = "".join(f'<th scope="col">{html.escape(h)}</th>' for h in
                   ("check", "values over seeds", f"{claims.CONFIDENCE:.0%} t interval", "outcome"))
    return (f'<div class="table-wrap"><table class="checks"><thead><tr>{head}</tr></thead>\n'
            f"<tbody>\n{''.join(rows)}</tbody></table></div>")


def claim_figures(claim_id: str, figures: dict[str, bytes]) -> list[tuple[str, str, bytes]]:
    """(file name, caption, PNG bytes) of the figures that belong to the claim, in name order."""
    out = []
    for pattern, caption in CLAIM_FIGURES.get(claim_id, []):
        out += [(name, caption, figures[name]) for name in sorted(figures) if fnmatch.fnmatchcase(name, pattern)]
    return out


def _figure(name: str, caption: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)} <code>{html.escape(FIGURES)}/{html.escape(name)}</code>"
            f"</figcaption></figure>")


def _anchor(claim: dict) -> str:
    return f"claim-{int(claim['number'])}"


def _ordered(summary: dict) -> list[tuple[str, dict]]:
    return sorted(summary["claims"].items(), key=lambda kv: kv[1]["number"])


# ---- the page -----------------------------------------------------------------------------------

def _intro(summary: dict) -> str:
    s = summary["setup"]
    m = s["model"]
    n_seeds = max((len(v) for v in summary.get("seeds", {}).values()), default=0)
    conds = ", ".join(summary.get("conditions", []))
    return (f"Can a small GPT-2-style model (d_model {m['d_model']}, {m['n_layers']} layers) learn to add "
            f"a + b with a, b \u2264 {s['max_operand']} the way the paper says GPT-2 does, with Fourier features "
            f"of the numbers? Each embedding condition ({conds}) was trained on {n_seeds} seeds and diagnosed; "
            f"each claim of {ref.PAPER} is checked on the toy's numbers with "
            f"{claims.CONFIDENCE:.0%} t intervals over the seeds. The table below gives every claim's verdict; "
            f"each claim's section puts GPT-2's number beside the toy's, lists the checks behind the verdict, "
            f"and shows the figure to look at.")


def _setup(summary: dict) -> str:
    s = summary["setup"]
    m, t, b = s["model"], s["train"], s["basis"]
    seeds = summary.get("seeds", {})
    items = [
        ("Model", f"GPT-2-style, d_model {m['d_model']}, {m['n_layers']} layers, {m['n_heads']} heads, context "
                  f"{m.get('n_ctx', '?')}, {'tied' if m['tied'] else 'untied'} unembedding, {m.get('backend', '?')} "
                  f"backend"),
        ("Task", f"a + b with a, b \u2264 {s['max_operand']}; every number 0..{s['n_numbers'] - 1} is one token "
                 f"(p = {s['n_numbers']})"),
        ("Training", f"at most {t['max_steps']} steps, batch {t['batch_size']}, AdamW lr {t['lr']}, weight decay "
                     f"{t.get('weight_decay', '?')}, {t.get('schedule', '?')} schedule; evaluated every "
                     f"{t.get('eval_every', '?')} steps"),
        ("Seeds", "; ".join(f"{name}: {', '.join(str(x) for x in v)}" for name, v in seeds.items()) or "-"),
        ("Conditions", ", ".join(summary.get("conditions", [])) or "-"),
        ("Fourier basis", f"{b.get('basis')} basis, N = {b.get('N')}, tau = {b.get('tau')} (high band: k \u2265 tau)"),
        ("Pre-trained source", str(s.get("source"))),
        ("Preset", str(summary.get("preset") or "not recorded")),
        ("GPT-2 numbers", ref.PAPER),
    ]
    if summary.get("sweep"):
        sw = summary["sweep"]
        items.append(("Runs", f"{sw.get('n_ran')} trained, {sw.get('n_reused')} reused, {sw.get('n_failed')} failed, "
                              f"{sw.get('seconds', 0):.0f} s"))
    dl = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in items)
    return (f'<section id="setup"><h2>Run setup</h2><dl class="setup">{dl}</dl>'
            f"<h3>Reproduce it</h3><p>In the project's folder, after <code>pip install -e .</code>:</p>"
            f'<pre><code class="command">{html.escape(command(summary))}</code></pre></section>')


def _verdict_table(summary: dict) -> str:
    rows = "".join(f'<tr><td>{int(c["number"])}</td><td><a href="#{_anchor(c)}">{html.escape(c["title"])}</a></td>'
                   f"{verdict_badge(c['verdict'], 'td')}<td>{html.escape(measured_by(c.get('id')))}</td></tr>\n"
                   for _, c in _ordered(summary))
    legend = "".join(f"<li>{verdict_badge(v)} {html.escape(meaning)}</li>"
                     for v, (_, _, _, _, meaning) in VERDICT_STYLES.items())
    return ('<section id="verdicts"><h2>Verdicts</h2>'
            '<div class="table-wrap"><table class="verdicts"><thead><tr><th scope="col">#</th>'
            '<th scope="col">claim</th><th scope="col">verdict</th><th scope="col">measured by</th></tr></thead>\n'
            f'<tbody>\n{rows}</tbody></table></div><ul class="legend">{legend}</ul></section>')


def _claim_section(cid: str, claim: dict, body: list[str], figures: dict[str, bytes]) -> str:
    toy = markdown_blocks(body) or "<p>No table for this claim.</p>"
    figs = "".join(_figure(*f) for f in claim_figures(cid, figures))
    return (f'<section class="claim" id="{_anchor(claim)}">'
            f"<h2>{int(claim['number'])}. {html.escape(claim['title'])} {verdict_badge(claim['verdict'])}</h2>"
            f'<div class="compare"><div class="card gpt2"><h3>GPT-2 (paper)</h3>'
            f"<p>{html.escape(claim['gpt2'])}.</p></div>"
            f'<div class="card toy"><h3>This toy</h3>{toy}</div></div>'
            f"<h3>Checks</h3>{checks_table(claim)}"
            f'<p class="criterion"><strong>Criterion.</strong> {html.escape(claim["criterion"])}</p>'
            f'{figs}<p class="back"><a href="#verdicts">Back to the verdicts</a></p></section>')


def render(summary: dict, report_md: str = "", figures: dict[str, bytes] | None = None) -> str:
    """The page for a report summary (report.build's, plus what write adds), the report.md text it
    came with (for each claim's table) and the figures ({file name in FIGURES: PNG bytes})."""
    figures = figures or {}
    bodies = section_bodies(report_md)
    sections = "\n".join(_claim_section(cid, c, bodies.get(int(c["number"]), []), figures)
                         for cid, c in _ordered(summary))
    title = "Fourier features for addition: the paper's claims on a toy GPT-2"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_css()}</style>
</head>
<body>
<main>
<header><h1>{html.escape(title)}</h1>
<p class="intro">{html.escape(_intro(summary))}</p></header>
{_verdict_table(summary)}
{sections}
{_setup(summary)}
</main>
</body>
</html>
"""


def write(out, summary: dict, report_md: str) -> Path:
    """Write REPORT_HTML into the reproduce directory `out`, with the PNGs of out/FIGURES embedded."""
    out = Path(out)
    figures = {p.name: p.read_bytes() for p in sorted((out / FIGURES).glob("*.png"))}
    path = out / REPORT_HTML
    atomic_write_text(path, render(summary, report_md, figures))
    return path
