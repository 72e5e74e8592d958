"""Figures of the diagnostics: each function takes a dict from diagnose.py (or metrics) and a path.

Figures are drawn on a bare matplotlib Figure (Agg canvas, no pyplot global state), rendered to
PNG in memory and written atomically (runs.atomic_write_bytes), so a crash never leaves half an
image. Spectra are drawn against frequency k on the number axis of the report (its basis and N
are in the title), with periods 2, 2.5, 5, 10 marked where they fall on components.
"""

from __future__ import annotations

import io
import math
import textwrap
import warnings
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from fourier_toy.errors import DataError
from fourier_toy.analysis.fourier import KEY_PERIODS, format_period
from fourier_toy.runs.files import atomic_write_bytes, read_jsonl
from fourier_toy.runs.layout import CONFIG, DIAGNOSTICS, METRICS, MODEL, STATE, SUMMARY, is_run_dir

RUN_FILES = (CONFIG, METRICS, MODEL, STATE, SUMMARY, DIAGNOSTICS)

__all__ = ["KEY_PERIODS", "mean_band", "plot_spectrum", "plot_spectra", "plot_module_spectra", "plot_lens",
           "plot_lenses", "plot_ablation", "plot_errors", "plot_probes", "plot_training", "plot_bench",
           "plot_label_grid", "plot_grouped_bars"]

# The reference bars beside the toy's (plot_ablation) are the paper's GPT-2-XL numbers (paper.py): the
# legend names the model, so a figure shown on its own (a slide, report.html) says what it compares.
PAPER_LABEL = "GPT-2-XL (paper)"
_COLORS = {"toy": "tab:blue", PAPER_LABEL: "tab:gray"}


def _new(n_rows: int = 1, n_cols: int = 1, size=(8.0, 4.0), **kw):
    fig = Figure(figsize=(size[0] * n_cols, size[1] * n_rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False, **kw)
    return fig, axes


SOFTWARE = "fourier_toy"  # the PNG tEXt "Software" entry of every figure saved here


def _save(fig: Figure, path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": SOFTWARE})
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def is_our_png(path) -> bool:
    """Whether `path` is a PNG saved here: its tEXt chunk "Software" says fourier_toy."""
    try:
        with open(path, "rb") as f:
            if f.read(8) != b"\x89PNG\r\n\x1a\n":
                return False
            while True:
                head = f.read(8)
                if len(head) < 8:
                    return False
                length, kind = int.from_bytes(head[:4], "big"), head[4:]
                if kind in (b"IDAT", b"IEND") or length > 1 << 20:
                    return False
                data = f.read(length)
                f.read(4)  # CRC
                if kind == b"tEXt" and data.partition(b"\0")[::2] == (b"Software", SOFTWARE.encode()):
                    return True
    except OSError:
        return False


def check_plot_path(path, flag: str = "--plot") -> Path:
    """Refuse (DataError) a figure path that would overwrite something that is not ours: it must end
    in .png, may not name a run directory's own file, and may replace an existing file only if it
    is a PNG saved here."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise DataError(f"{flag}: {str(path)!r} must end in .png")
    if is_run_dir(path.parent) and path.name in RUN_FILES:
        raise DataError(f"{flag}: {str(path)!r} is a file of the run {str(path.parent)!r}; choose another path")
    if path.exists() or path.is_symlink():
        if path.is_symlink() or not path.is_file() or not is_our_png(path):
            raise DataError(f"{flag}: {str(path)!r} exists and is not a figure fourier_toy wrote; "
                            f"refusing to overwrite it (choose a new .png path)")
    return path


def _key_ks(denominator: int, n_freqs: int) -> list[tuple[float, float]]:
    """(period, k) of the key periods on this axis; k may be fractional when not a component."""
    return [(T, denominator / T) for T in KEY_PERIODS if denominator / T <= n_freqs - 1 + 1e-9]


def _mark_periods(ax, denominator: int, n_freqs: int) -> None:
    """Dashed lines at periods 2, 2.5, 5, 10 and a top axis labelled in periods T = denominator / k."""
    for T, k in _key_ks(denominator, n_freqs):
        ax.axvline(k, color="tab:red", ls="--", lw=0.8, alpha=0.7)
    top = ax.secondary_xaxis("top", functions=(lambda k: denominator / np.maximum(k, 1e-9),
                                               lambda T: denominator / np.maximum(T, 1e-9)))
    ticks = sorted({T for T in (20.0, 10.0, 5.0, 10 / 3, 2.5, 2.0) if 1 <= denominator / T <= n_freqs - 1})
    top.set_xticks(ticks)
    top.set_xticklabels([format_period(T) for T in ticks], fontsize=8)
    top.set_xlabel("period T (red: 2, 2.5, 5, 10)", fontsize=8)


def plot_spectrum(report: dict, path) -> Path:
    """diagnose.spectrum_report -> mean |DFT| against frequency k, one panel per matrix."""
    return plot_spectra({Path(str(report["source"])).name: report}, path)


def plot_spectra(reports: dict, path) -> Path:
    """{label: diagnose.spectrum_report} -> one panel per matrix of every report (e.g. per condition).

    Each panel: mean |DFT| against k, the null level of the outlier test as a dashed line (the
    critical magnitude of each scanned bin: its critical prominence times the median of its
    neighbours, so a bin is an outlier exactly where the spectrum rises above the line) and the
    outliers circled. Reports written before the permutation test (a fixed "threshold") are drawn
    without the line.
    """
    panels = [(label, m) for label, rep in reports.items() for m in rep.get("matrices") or []]
    if not panels:
        raise DataError("report: has no matrices to plot")
    fig, axes = _new(len(panels), 1, size=(9.0, 3.0))
    for ax, (label, m) in zip(axes[:, 0], panels):
        amp = np.array([np.nan if a is None else a for a in m["amplitude"]], dtype=float)
        k = np.arange(amp.size)
        ax.plot(k[1:], amp[1:], lw=0.9, color="tab:blue", label="mean |DFT| over dims")
        null = m.get("null")
        if null:
            crit = np.array([np.nan if c is None else c for c in null["critical_amplitude"]], dtype=float)
            ax.plot(k, crit, ls="--", lw=0.9, color="0.35",
                    label=f"null level (family-wise alpha {null['alpha']:g}, {null['n_permutations']} row permutations)")
            what = f"circles: outliers at family-wise alpha {null['alpha']:g}"
        else:
            what = f"circles: prominence > {m.get('threshold', 2.0):g}"
        ks = [o["k"] for o in m["outliers"]]
        if ks:
            ax.plot(ks, amp[ks], "o", ms=4, mfc="none", color="tab:orange", ls="none",
                    label=f"outliers ({len(ks)})")
        _mark_periods(ax, m["denominator"], amp.size)
        ax.set_xlabel("frequency k")
        ax.set_ylabel("mean |DFT| over dims")
        ax.set_xlim(0, amp.size)
        ax.legend(fontsize=7, loc="upper right")
        ax.set_title(f"{m['name']} of {label}: basis {m['basis']}, N = {m['N']} ({what})", fontsize=9, loc="left")
    return _save(fig, path)


def plot_module_spectra(report: dict, path) -> Path:
    """diagnose.lens_report -> heat map of mean |F L| (rows: layer and module, columns: k)."""
    spectra = report["spectra"]
    labels, rows = [], []
    for l in range(report["n_layers"]):
        for m in ("attn", "mlp"):
            labels.append(f"L{l} {m}")
            rows.append(spectra[m][l])
    Z = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=float)[:, 1:]
    K = Z.shape[1] + 1
    fig, axes = _new(1, 1, size=(10.0, 0.45 * len(labels) + 2.2))
    ax = axes[0, 0]
    positive = Z[np.isfinite(Z) & (Z > 0)]
    # A log scale needs a positive range; an all-zero map falls back to a linear one.
    spread = positive.size and positive.max() > positive.min()
    norm = LogNorm(vmin=positive.min(), vmax=positive.max()) if spread else None
    im = ax.imshow(np.where(Z > 0, Z, np.nan), aspect="auto", interpolation="nearest", norm=norm,
                   extent=(0.5, K - 0.5, len(labels) - 0.5, -0.5), cmap="viridis")
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.axvline(report["tau"] - 0.5, color="white", lw=1.2)
    _mark_periods(ax, report["denominator"], K)
    ax.set_xlabel(f"frequency k (white line: tau = {report['tau']}; right of it = high band)")
    fig.colorbar(im, ax=ax, label="mean |F L| over examples")
    ax.set_title(f"module logits, basis {report['basis']}, N = {report['N']}", fontsize=9, loc="left")
    return _save(fig, path)


def plot_lens(report: dict, path) -> Path:
    """diagnose.lens_report -> exact, +-2 and +-10 lens accuracy by layer."""
    return plot_lenses({f"{report['split']} split (n = {report['n']})": report}, path)


def plot_lenses(reports: dict, path) -> Path:
    """{label: diagnose.lens_report} -> one panel per report: exact, +-2, +-10 accuracy by layer."""
    fig, axes = _new(1, len(reports), size=(4.5, 4.0), sharey=True)
    for ax, (label, report) in zip(axes[0], reports.items()):
        lens = report["lens"]
        layers = [x["layer"] for x in lens]
        for key, name in (("acc", "exact"), ("acc_pm2", "within +-2"), ("acc_pm10", "within +-10")):
            ax.plot(layers, [np.nan if x[key] is None else x[key] for x in lens], "o-", label=name)
        ax.set_xticks(layers)
        ax.set_xlabel("layer (residual after block)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"logit lens, {label}", fontsize=9, loc="left")
    axes[0, 0].set_ylabel("accuracy")
    axes[0, 0].legend()
    return _save(fig, path)


def _row_label(row: dict) -> str:
    return row["modules"] if row["removed"] in ("-", None) else f"{row['modules']}\n{row['removed']}"


def plot_ablation(report: dict, path, reference=None) -> Path:
    """diagnose.ablate_report -> Table 1 accuracies as bars, beside ``reference`` when given.

    reference: rows like the report's, each with "modules" ("none", "ATTN & MLP", "ATTN", "MLP"),
    "removed" ("-", "low", "high") and "acc": the paper's GPT-2-XL numbers (PAPER.md section 5),
    labelled PAPER_LABEL in the legend.
    """
    rows = report["rows"]
    ref = {(r["modules"], r["removed"]): r["acc"] for r in (reference or [])}
    x = np.arange(len(rows))
    width = 0.4 if ref else 0.7
    fig, axes = _new(1, 1, size=(9.0, 4.2))
    ax = axes[0, 0]
    toy = [np.nan if r["acc"] is None else r["acc"] for r in rows]
    ax.bar(x - (width / 2 if ref else 0), toy, width, label="toy", color=_COLORS["toy"])
    if ref:
        vals = [ref.get((r["modules"], r["removed"]), np.nan) for r in rows]
        ax.bar(x + width / 2, vals, width, label=PAPER_LABEL, color=_COLORS[PAPER_LABEL])
    ax.set_xticks(x)
    ax.set_xticklabels([f"{_row_label(r)}\nnull {r['dim_null']}" for r in rows], fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper center", ncols=2, fontsize=8)
    ax.set_title(f"null-space filter (removed band; null = dim null(M)), basis {report['basis']}, N = {report['N']}, "
                 f"tau = {report['tau']}, d = {report['d']}", fontsize=9, loc="left")
    return _save(fig, path)


def plot_errors(report: dict, path, max_abs: int | None = None) -> Path:
    """diagnose.ablate_report -> histogram of (a+b) - prediction for every filtered row."""
    rows = report["rows"]
    n_cols = 2
    n_rows = math.ceil(len(rows) / n_cols)
    fig, axes = _new(n_rows, n_cols, size=(5.0, 2.4))
    for ax in axes.ravel()[len(rows):]:
        ax.set_visible(False)
    for ax, r in zip(axes.ravel(), rows):
        hist = {int(k): v for k, v in (r["errors"]["histogram"] or {}).items()}
        label = _row_label(r).replace("\n", ", removed ")
        if not hist:
            ax.text(0.5, 0.5, "no errors", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            vals = np.array(sorted(hist))
            if max_abs is not None:
                vals = vals[np.abs(vals) <= max_abs]
            counts = [hist[int(v)] for v in vals]
            colors = ["tab:red" if v % 10 == 0 else ("tab:green" if abs(v) < 6 else "tab:blue") for v in vals]
            ax.bar(vals, counts, width=0.9, color=colors)
            ax.set_xlabel("(a+b) - prediction")
        ax.set_title(f"{label}: acc {r['acc']:.3f}", fontsize=8, loc="left")
    fig.suptitle("errors under the filter (red: multiples of 10, green: |e| < 6)", fontsize=9)
    return _save(fig, path)


def plot_probes(report: dict, path) -> Path:
    """diagnose.probe_report -> Cohen's kappa of each mod-T probe, grouped by what was probed."""
    groups = [(f"{m['name']} rows", m["probes"]) for m in report["embedding"]]
    for x in (report.get("hidden") or {}).get("layers", []):
        groups.append((f"resid after block {x['layer']}", x["probes"]))
    Ts = sorted({p["T"] for _, probes in groups for p in probes})
    if not groups or not Ts:
        raise DataError("report: has no probes to plot")
    fig, axes = _new(1, 1, size=(max(6.0, 1.2 * len(groups)), 4.0))
    ax = axes[0, 0]
    width = 0.8 / len(Ts)
    x = np.arange(len(groups))
    for i, T in enumerate(Ts):
        vals = [next((np.nan if p["kappa"] is None else p["kappa"] for p in probes if p["T"] == T), np.nan)
                for _, probes in groups]
        ax.bar(x + (i - (len(Ts) - 1) / 2) * width, vals, width, label=f"n mod {T}")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(x)
    ax.set_xticklabels([g for g, _ in groups], fontsize=8, rotation=20, ha="right")
    ax.set_ylim(min(-0.1, ax.get_ylim()[0]), 1.2)
    ax.set_ylabel("Cohen's kappa (held out)")
    ax.legend(fontsize=8, loc="upper center", ncols=len(Ts))
    ax.set_title(f"linear probes, {Path(str(report['source'])).name}", fontsize=9, loc="left")
    return _save(fig, path)


def _records(source) -> list[dict]:
    if isinstance(source, (str, Path)):
        p = Path(source)
        return read_jsonl(p / METRICS if p.is_dir() else p)
    return list(source)


def _is_group(source) -> bool:
    """A list or tuple of runs (paths or record lists), as opposed to one run's list of records."""
    return isinstance(source, (list, tuple)) and bool(source) and not isinstance(source[0], dict)


def mean_band(series: list[dict]) -> tuple[list, np.ndarray, np.ndarray, np.ndarray]:
    """Runs' {step: value} -> (steps, mean, min, max) over the runs at the union of their steps.

    A run that stopped early (or was evaluated less often) keeps its last value; before its first
    value it does not count. Empty input gives empty arrays.
    """
    steps = sorted(set().union(*series)) if series else []
    table = np.full((len(series), len(steps)), np.nan)
    for i, c in enumerate(series):
        last = np.nan
        for j, s in enumerate(steps):
            last = c.get(s, last)
            table[i, j] = last
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: no run has started yet
        return steps, np.nanmean(table, axis=0), np.nanmin(table, axis=0), np.nanmax(table, axis=0)


def plot_training(curves: dict, path, split: str = "test", key: str = "acc", title: str | None = None) -> Path:
    """Training curves: {condition label: one run or a list of runs}, a run being a run directory,
    a metrics.jsonl path or a list of records.

    Plots ``split`` accuracy (``key``) against step: one line per run, or for a list of runs their
    mean (see mean_band) shaded between their min and max, labelled with the number of runs.
    """
    if not curves:
        raise DataError("curves: give at least one condition")
    fig, axes = _new(1, 1, size=(7.0, 4.2))
    ax = axes[0, 0]
    for label, src in curves.items():
        runs = list(src) if _is_group(src) else [src]
        series = [{r["step"]: r[split][key] for r in _records(run)
                   if isinstance(r.get(split), dict) and r[split].get(key) is not None} for run in runs]
        steps, mean, lo, hi = mean_band(series)
        name = f"{label} (n={len(runs)})" if _is_group(src) else str(label)
        (line,) = ax.plot(steps, mean, label=name, lw=1.2)
        if len(runs) > 1:
            ax.fill_between(steps, lo, hi, alpha=0.15, color=line.get_color(), linewidth=0)
    ax.set_xlabel("step")
    ax.set_ylabel(f"{split} {key}")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)


_BENCH_FIELDS = {"config", "d_model", "n_layers", "batch", "train_examples_per_s", "eval_examples_per_s"}


def plot_bench(records, path) -> Path:
    """Throughput of a `fourier-toy bench` run: its records (bench.run's, or a file of the JSON
    lines it printed).

    One column per configuration; the top row training examples/s, the bottom row evaluation
    examples/s. A bar per backend is the median of the rounds, its whisker their range, and every
    bar after the first is labelled with the first one's median over its own (as in the ratio
    lines of --vs-torch).
    """
    rows = [r for r in _records(records) if "backend" in r]
    if not rows:
        raise DataError("bench records: none with a 'backend' field (expected fourier-toy bench output)")
    for r in rows:
        missing = sorted(_BENCH_FIELDS - set(r))
        if missing:
            raise DataError(f"bench records: the record of {r.get('config')!r} / {r['backend']!r} lacks {missing}")
    configs = list(dict.fromkeys(r["config"] for r in rows))
    fig, axes = _new(2, len(configs), size=(3.6, 3.2))
    for col, config in enumerate(configs):
        runs = [r for r in rows if r["config"] == config]
        for row, (kind, label) in enumerate((("train", "training"), ("eval", "evaluation"))):
            ax = axes[row, col]
            median = np.array([r[f"{kind}_examples_per_s"] for r in runs], dtype=float)
            rounds = [np.asarray(r.get(f"{kind}_examples_per_s_rounds") or [m], dtype=float)
                      for r, m in zip(runs, median)]
            lo = median - np.array([x.min() for x in rounds])
            hi = np.array([x.max() for x in rounds]) - median
            x = np.arange(len(runs))
            ax.bar(x, median, yerr=np.vstack([lo, hi]), capsize=3, color=[f"C{i}" for i in x])
            for i in x[1:]:
                ratio = f"{runs[0]['backend']}/{runs[i]['backend']}\n{median[0] / median[i]:.2f}"
                ax.annotate(ratio, (i, median[i] + hi[i]), textcoords="offset points", xytext=(0, 3), ha="center",
                            fontsize=7)
            ax.set_xticks(x, [r["backend"] for r in runs], fontsize=8)
            ax.set_ylim(0, 1.2 * max(median + hi))
            ax.grid(axis="y", alpha=0.3)
            if col == 0:
                ax.set_ylabel(f"{label} examples/s")
            if row == 0:
                first = runs[0]
                ax.set_title(f"{config}: d {first['d_model']}, {first['n_layers']} layers, batch {first['batch']}",
                             fontsize=9)
    first = rows[0]
    title = (f"{first.get('bench', 'bench')}, {first.get('threads', '?')} threads, matmul peak "
             f"{first.get('peak_gflops', '?')} GFLOP/s, {first.get('blas', '?')}")
    fig.suptitle(textwrap.fill(title, 45 * len(configs)), fontsize=9)  # about 45 characters fit a column
    return _save(fig, path)


def plot_label_grid(row_labels: list[str], col_labels: list[str], cells: list[list[tuple[str, str]]], colors: dict,
                    path, title: str = "") -> Path:
    """A table of coloured cells: cells[i][j] = (category, text) for row i, column j; `colors` maps a
    category to its colour (a legend lists them). Used for a study's claim x regime verdicts."""
    n_rows, n_cols = len(row_labels), len(col_labels)
    fig, axes = _new(size=(max(6.0, 2.0 + 1.35 * n_cols), 1.6 + 0.5 * n_rows))
    ax = axes[0, 0]
    for i, row in enumerate(cells):
        for j, (category, text) in enumerate(row):
            ax.add_patch(_rect(j, n_rows - 1 - i, colors.get(category, "white")))
            ax.text(j + 0.5, n_rows - 1 - i + 0.5, text, ha="center", va="center", fontsize=7)
    ax.set_xlim(0, n_cols)
    ax.set_ylim(0, n_rows)
    ax.set_xticks([j + 0.5 for j in range(n_cols)], [textwrap.fill(c, 14) for c in col_labels], fontsize=7)
    ax.set_yticks([n_rows - 1 - i + 0.5 for i in range(n_rows)], row_labels, fontsize=8)
    ax.tick_params(length=0)
    ax.xaxis.tick_top()
    handles = [_rect(0, 0, c) for c in colors.values()]
    ax.legend(handles, list(colors), loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=min(len(colors), 3), fontsize=7,
              frameon=False)
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


def _rect(x, y, color):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), 1, 1, facecolor=color, edgecolor="white", linewidth=1.5)


def plot_grouped_bars(groups: list[str], series: dict[str, list[list[float]]], path, ylabel: str, title: str = "",
                      reference: dict[str, float] | None = None) -> Path:
    """Bars of the mean (whiskers: min and max) of series[name][g] (the values over seeds) for every
    group g, one bar per series within a group; an empty list draws no bar. `reference` draws
    labelled horizontal lines (e.g. GPT-2's value)."""
    fig, axes = _new(size=(max(6.0, 1.1 * len(groups) + 2), 3.6))
    ax = axes[0, 0]
    n = max(len(series), 1)
    width = 0.8 / n
    for s, (name, per_group) in enumerate(series.items()):
        xs, means, lo, hi = [], [], [], []
        for g, vals in enumerate(per_group):
            vals = [v for v in vals if v is not None]
            if not vals:
                continue
            xs.append(g - 0.4 + width * (s + 0.5))
            means.append(float(np.mean(vals)))
            lo.append(means[-1] - min(vals))
            hi.append(max(vals) - means[-1])
        ax.bar(xs, means, width, yerr=[lo, hi], capsize=2, label=name)
    for label, y in (reference or {}).items():
        ax.axhline(y, color="gray", linestyle="--", linewidth=0.8)
        ax.text(len(groups) - 0.5, y, label, ha="right", va="bottom", fontsize=7, color="gray")
    ax.set_xticks(range(len(groups)), [textwrap.fill(g, 14) for g in groups], fontsize=7)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)
