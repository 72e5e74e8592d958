"""Diagnostics of a run directory or a number-embedding matrix, as JSON-able dicts and text tables.

Four reports, each a function returning a dict (lists, numbers, strings, None; NaN and inf become
None) and a ``format_*`` function turning that dict into a terminal table:

- ``spectrum_report(source)``: Fourier spectra of number rows (a run's wte number rows and, when
  untied, its W_U; or a .npy matrix whose row i is the number i), with prominence outliers tested
  against each matrix's row-permutation null (outliers.outlier_scan).
- ``lens_report(run)``: logit-lens accuracy per layer and the band fractions of module logits.
- ``ablate_report(run)``: the Table 1 analogue under the null-space filter, and single-pass filters.
- ``probe_report(source)``: linear probes for n mod T on number rows and (for a run) on the
  residual stream at the '=' position after each layer.

Number axis (``fourier.number_axis``): the exact basis uses N = p - 1 rows when the number of
rows p is odd (p = 2 * max_operand + 1; for the shared pre-trained matrix, 521 rows -> numbers
0..519, N = 520) and all rows when it is even; ``basis="paper"`` uses Definition A.3 on all p rows
(p odd). Every report names its basis, N and tau.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fourier_toy.analysis import fourier
from fourier_toy.analysis import outliers
from fourier_toy.config import basis_bytes, check_memory
from fourier_toy.errors import ConfigError, DataError
from fourier_toy.analysis.filters import ablation_table, single_pass
from fourier_toy.analysis.fourier import KEY_PERIODS
from fourier_toy.analysis.lens import logit_lens, module_spectra, residual_last
from fourier_toy.analysis.probes import probe_mod

__all__ = [
    "KEY_PERIODS",
    "PROBE_PERIODS",
    "open_source",
    "spectrum_report",
    "lens_report",
    "ablate_report",
    "probe_report",
    "format_spectrum",
    "format_lens",
    "format_ablate",
    "format_probe",
]

PROBE_PERIODS = (2, 5, 10)


# ---- helpers -------------------------------------------------------------------------------------

def _clean(x):
    """numpy scalars/arrays -> Python; NaN and inf -> None (strict JSON has neither)."""
    if isinstance(x, dict):
        return {(k if isinstance(k, str) else str(k)): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, (np.bool_,)):
        return bool(x)
    return x


def _load_run(run, backend: str | None = "numpy"):
    """A load.Run passes through; a path is opened (numpy backend: analysis needs no kernels)."""
    from fourier_toy.training.open_run import Run, load_run

    return run if isinstance(run, Run) else load_run(run, backend=backend)


def open_source(source) -> tuple[str, object]:
    """SOURCE -> ("run", load.Run) for a run directory, ("matrix", (rows (n, W) float64, info)) for a
    .npy/.npz matrix whose row i is the number i."""
    from fourier_toy.training.open_run import Run

    if isinstance(source, Run):
        return "run", source
    path = Path(source)
    if path.is_dir():
        return "run", _load_run(path)
    if path.suffix.lower() in (".npy", ".npz") or path.is_file():
        from fourier_toy.embeddings.pretrained import load_matrix

        _, info = load_matrix(path, 1)  # validates the file and reports its row count
        rows = info["rows_in_file"]
        # Before the whole matrix is read: the analyses build an N x N basis on its rows.
        check_memory(f"{path}: the Fourier basis of its {rows} rows", basis_bytes(rows),
                     "analyse a matrix of fewer rows", DataError)
        return "matrix", load_matrix(path, rows)
    raise DataError(f"SOURCE: {str(source)!r} is neither a run directory nor a .npy/.npz matrix")


def _source_matrices(source) -> tuple[str, list[tuple[str, np.ndarray]], object]:
    kind, obj = open_source(source)
    if kind == "run":
        model = obj.model
        wte = np.asarray(model.weights["wte.weight"][: model.n_numbers], dtype=np.float64)
        if model.cfg.tied:
            return kind, [("wte = W_U (tied)", wte)], obj
        return kind, [("wte", wte), ("W_U", np.asarray(model.W_U, dtype=np.float64))], obj
    rows, _ = obj
    return kind, [("matrix", rows)], obj


def _table(headers: list[str], rows: list[list], title: str = "") -> str:
    """A plain aligned text table; None prints as '-'."""
    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.3g}"
        return str(v)

    body = [[cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    line = lambda r: "  ".join(s.rjust(w) for s, w in zip(r, widths))  # noqa: E731
    out = [title] if title else []
    out += [line(headers), "  ".join("-" * w for w in widths)] + [line(r) for r in body]
    return "\n".join(out)


def _header(rep: dict) -> str:
    return (f"basis {rep['basis']}, N = {rep['N']} (denominator {rep['denominator']}), "
            f"tau = {rep['tau']} (high = period <= {rep['tau_period']:.3g})")


# ---- spectrum ------------------------------------------------------------------------------------

def _matrix_spectrum(name: str, W: np.ndarray, basis: str, tau, alpha: float, n_permutations: int) -> dict:
    axis = fourier.number_axis(W.shape[0], basis, tau)
    fb, info = axis.basis, axis.info
    X = W[: fb.n]
    scan = outliers.outlier_scan(X, fb, alpha=alpha, n_permutations=n_permutations)
    amp = scan.amplitude
    outlier_ks = {o.k for o in scan.outliers}
    key = []
    for T in KEY_PERIODS:
        hits = np.flatnonzero(np.isclose(fb.frequency_periods, T, rtol=1e-9, atol=0.0))
        if hits.size == 0:
            key.append({"period": T, "k": None, "amplitude": None, "prominence": None, "critical": None,
                        "p_value": None, "outlier": False, "detectable": False})
            continue
        k = int(hits[0])
        pr = outliers.prominence(amp, k) if k in scan.ks else None  # k = 1 has no neighbourhood
        key.append({"period": T, "k": k, "amplitude": float(amp[k]), "prominence": pr,
                    "critical": scan.critical_at(k), "p_value": scan.p_value_at(k), "outlier": k in outlier_ks,
                    "detectable": outliers.period_detectable(fb, T)})
    # Per frequency k = 0..K-1, NaN (None in JSON) where k is not scanned.
    critical = np.full(amp.size, np.nan)
    critical[scan.ks] = scan.critical
    critical_amp = np.full(amp.size, np.nan)
    critical_amp[scan.ks] = scan.critical_amplitude
    null = {"test": "row permutations, family-wise over the scanned bins (max-T of standardized log prominence)",
            "alpha": scan.alpha, "n_permutations": scan.n_permutations, "seed": scan.seed,
            "k_scanned": [int(scan.ks[0]), int(scan.ks[-1])] if scan.ks.size else None,
            "critical_z": scan.critical_z, "critical_prominence": critical, "critical_amplitude": critical_amp}
    bands = fourier.band_energy_fractions(X - X.mean(axis=0), fb, axis.tau)
    return {"name": name, **info, "rows_used": int(fb.n), "width": int(W.shape[1]),
            "amplitude": amp, "periods": fb.frequency_periods,
            "outliers": [{"k": o.k, "period": o.period, "prominence": o.prominence, "critical": o.critical,
                          "p_value": o.p_value} for o in scan.outliers],
            "key_periods": key, "key_periods_detectable": all(r["detectable"] for r in key),
            "low_frac": bands.low, "high_frac": bands.high, "alpha": scan.alpha, "null": null}


def spectrum_report(source, basis: str = "exact", tau: int | None = None, alpha: float = outliers.OUTLIER_ALPHA,
                    n_permutations: int = outliers.OUTLIER_PERMUTATIONS) -> dict:
    """Spectra of number rows: a run directory (wte number rows, and W_U when untied) or a matrix.

    For each matrix: ``amplitude`` (K,) = mean over dims of |DFT| along the number axis after
    subtracting the row mean (fourier.mean_dft_amplitude; index = frequency k), ``periods`` (K,),
    ``outliers`` (bins whose prominence against bins k +- 2..8 beats the row-permutation null of
    outliers.outlier_scan at family-wise rate ``alpha``, strongest first, each with its critical
    prominence and adjusted p-value), ``null`` (the test: alpha, permutations, seed, scanned range
    and the per-bin null level as ``critical_prominence`` and ``critical_amplitude``, (K,), None
    where not scanned), ``key_periods`` (amplitude, prominence, null level, p-value, whether an
    outlier and whether detectable at all, at periods 2, 2.5, 5, 10), ``key_periods_detectable``
    (all four can be found at this N: outliers.period_detectable), and the low/high share of the
    non-constant energy. The test costs 0.05 s per 120 x 128 matrix and 0.75 s per 520 x 384.
    """
    kind, mats, _ = _source_matrices(source)
    return _clean({"source": str(getattr(source, "path", source)), "kind": kind,
                   "matrices": [_matrix_spectrum(n, W, basis, tau, alpha, n_permutations) for n, W in mats]})


def _null_text(m: dict) -> str:
    nl = m["null"]
    scanned = "no bins scanned" if nl["k_scanned"] is None else f"k = {nl['k_scanned'][0]}..{nl['k_scanned'][1]}"
    return (f"prominence above its null level, family-wise alpha {nl['alpha']:g} over {scanned}, "
            f"{nl['n_permutations']} row permutations")


def format_spectrum(rep: dict, top: int = 10) -> str:
    parts = [f"spectrum of {rep['source']} ({rep['kind']})"]
    for m in rep["matrices"]:
        parts.append(f"\n[{m['name']}] width {m['width']}, {_header(m)}; "
                     f"energy low {_fmt(m['low_frac'])}, high {_fmt(m['high_frac'])}")
        parts.append(_table(["period", "k", "|DFT|", "prominence", "null level", "p (fw)", "outlier", "detectable"],
                            [[_fmt_period(r["period"]), r["k"], r["amplitude"], r["prominence"], r["critical"],
                              r["p_value"], _yes(r["outlier"]), _yes(r["detectable"])] for r in m["key_periods"]],
                            "key periods (null level: critical prominence; p (fw): family-wise p-value):"))
        if not m["key_periods_detectable"]:
            missing = ", ".join(_fmt_period(r["period"]) for r in m["key_periods"] if not r["detectable"])
            parts.append(f"not detectable at N = {m['N']}: period {missing} (not on an integer k >= 2)")
        outs = m["outliers"][:top]
        if outs:
            parts.append(_table(["period", "k", "prominence", "null level", "p (fw)"],
                                [[_fmt_period(o["period"]), o["k"], o["prominence"], o["critical"], o["p_value"]]
                                 for o in outs],
                                f"outliers ({_null_text(m)}; top {len(outs)} of {len(m['outliers'])}):"))
        else:
            parts.append(f"outliers: none ({_null_text(m)})")
    return "\n".join(parts)


def _yes(flag) -> str:
    return "yes" if flag else "no"


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def _fmt_period(T) -> str:
    return "inf" if T is None else fourier.format_period(T)


# ---- lens ----------------------------------------------------------------------------------------

def lens_report(run, split: str = "test", basis: str = "exact", tau: int | None = None) -> dict:
    """Logit lens per layer (exact, +-2, +-10 accuracy, loss) and the module-logit spectra.

    ``modules``: per layer, the low/high share of the attention and MLP logits' non-constant
    energy (lens.module_spectra: energies pooled over examples). ``spectra``: {"attn", "mlp"}
    (L, K) mean |F L| per frequency k (cos and sin merged), ``periods`` (K,).
    """
    r = _load_run(run)
    sp = _split(r, split)
    lens = logit_lens(r.model, sp)
    ms = module_spectra(r.model, sp, basis, tau)
    L = r.model.cfg.n_layers
    modules = [{"layer": l, "attn_low": ms["low"]["attn"][l], "attn_high": ms["high"]["attn"][l],
                "mlp_low": ms["low"]["mlp"][l], "mlp_high": ms["high"]["mlp"][l]} for l in range(L)]
    keep = ("basis", "N", "denominator", "tau", "tau_period")
    return _clean({"run": str(r.path), "step": r.step, "split": split, "n": len(sp), "d": r.model.cfg.d_model,
                   "n_layers": L, **{k: ms[k] for k in keep}, "lens": lens, "modules": modules,
                   "spectra": ms["freqs"], "periods": ms["periods"]})


def format_lens(rep: dict) -> str:
    head = (f"logit lens of {rep['run']} (step {rep['step']}, {rep['split']} split, n = {rep['n']}, "
            f"d = {rep['d']})")
    lens = _table(["layer", "loss", "acc", "+-2", "+-10"],
                  [[x["layer"], x["loss"], x["acc"], x["acc_pm2"], x["acc_pm10"]] for x in rep["lens"]])
    mods = _table(["layer", "attn low", "attn high", "mlp low", "mlp high"],
                  [[m["layer"], m["attn_low"], m["attn_high"], m["mlp_low"], m["mlp_high"]] for m in rep["modules"]],
                  f"module logits, share of non-constant energy ({_header(rep)}):")
    return "\n".join([head, lens, "", mods])


def _split(run, split: str):
    if split not in run.splits:
        raise ConfigError(f"split: must be one of {', '.join(run.splits)}, got {split!r}")
    sp = run.splits[split]
    if len(sp) == 0:
        raise DataError(f"split: the {split} split of {run.path} is empty")
    return sp


# ---- ablation ------------------------------------------------------------------------------------

def ablate_report(run, split: str = "test", basis: str = "exact", tau: int | None = None,
                  periods=(2,)) -> dict:
    """The Table 1 analogue (filters.ablation_table) and single-pass filters for ``periods``."""
    r = _load_run(run)
    sp = _split(r, split)
    table = ablation_table(r.model, sp, basis, tau)
    sps = [single_pass(r.model, sp, T, basis) for T in periods]
    return _clean({"run": str(r.path), "step": r.step, "split": split, **table, "single_pass": sps})


def format_ablate(rep: dict) -> str:
    head = (f"null-space filter on {rep['run']} (step {rep['step']}, {rep['split']} split, n = {rep['n']}, "
            f"d = {rep['d']}; {_header(rep)})")
    rows = [[x["modules"], x["removed"], x["loss"], x["acc"], x["dim_null"], x["errors"]["n_errors"],
             x["errors"]["frac_multiple_of_10"], x["errors"]["frac_below_6"]] for x in rep["rows"]]
    table = _table(["filtered", "removed", "loss", "acc", "dim null", "errors", "x10", "|e|<6"], rows)
    sp = _table(["kept period", "k", "acc", "parity acc", "dim null"],
                [[_fmt_period(s["period"]), s["k"], s["acc"], s["parity_acc"], s["dim_null"]]
                 for s in rep["single_pass"]], "single-pass filter (one frequency kept in every module):")
    return "\n".join([head, table, "x10: share of errors that are multiples of 10; |e|<6: share below 6",
                      "", sp])


# ---- probes --------------------------------------------------------------------------------------

def _probe_all(X, labels, periods, rng) -> list[dict]:
    out = []
    for T in periods:
        res = probe_mod(X, labels, int(T), rng)
        out.append({"T": res.T, "accuracy": res.accuracy, "chance": res.chance, "kappa": res.kappa,
                    "n_train": res.n_train, "n_test": res.n_test})
    return out


def probe_report(source, periods=PROBE_PERIODS, split: str = "test", rng: np.random.Generator | None = None,
                 basis: str = "exact") -> dict:
    """Linear probes for n mod T (probes.probe_mod, Cohen's kappa) on number rows and hidden states.

    Number rows: the first N rows of each matrix of ``spectrum_report`` (the same numbers the
    spectra analyse), label n. Hidden states (runs only): the residual stream after each block at
    the last position ('=') for the examples of ``split`` (default test), label (a + b) mod T; a
    probe there asks whether the answer's residue is linearly readable at that depth. Each probe
    draws its own 80/20 split from ``rng`` (default: numpy.random.default_rng(0)).
    """
    rng = np.random.default_rng(0) if rng is None else rng
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(f"rng: must be a numpy.random.Generator, got {type(rng).__name__}")
    kind, mats, obj = _source_matrices(source)
    rows = []
    for name, W in mats:
        fb = fourier.number_axis(W.shape[0], basis).basis
        rows.append({"name": name, "N": int(fb.n), "probes": _probe_all(W[: fb.n], np.arange(fb.n), periods, rng)})
    hidden = None
    if kind == "run":
        sp = _split(obj, split)
        resid = residual_last(obj.model, sp.tokens)
        hidden = {"split": split, "n": len(sp),
                  "layers": [{"layer": l, "probes": _probe_all(resid[l], sp.targets, periods, rng)}
                             for l in range(resid.shape[0])]}
    return _clean({"source": str(getattr(source, "path", source)), "kind": kind, "embedding": rows,
                   "hidden": hidden})


def format_probe(rep: dict) -> str:
    lines = [f"linear probes for n mod T on {rep['source']} ({rep['kind']}); kappa 0 = chance, 1 = perfect"]
    rows = [[m["name"], m["N"], p["T"], p["accuracy"], p["chance"], p["kappa"], p["n_test"]]
            for m in rep["embedding"] for p in m["probes"]]
    lines.append(_table(["rows", "N", "T", "acc", "chance", "kappa", "held out"], rows, "number rows (label n):"))
    h = rep.get("hidden")
    if h:
        rows = [[f"after block {x['layer']}", p["T"], p["accuracy"], p["chance"], p["kappa"], p["n_test"]]
                for x in h["layers"] for p in x["probes"]]
        lines += ["", _table(["residual at '='", "T", "acc", "chance", "kappa", "held out"], rows,
                             f"hidden states, {h['split']} split (n = {h['n']}, label (a+b) mod T):")]
    return "\n".join(lines)
