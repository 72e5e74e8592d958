"""The reproduce report: each claim of the paper beside the toy's numbers, with its verdict.

Reads a reproduce sweep directory (sweep.json, runs/<id>/{summary,diagnostics}.json,
metrics.jsonl) and writes report.md, summary.json and figures/*.png into it, and report.html, the
same report as one self-contained page (report_html.py). The verdicts and their
criteria come from the claims registry (claims.py), the same one the tests read; this module only
gathers the tables each claim's section shows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from fourier_toy.experiments import claims
from fourier_toy.experiments import paper as ref
from fourier_toy.experiments import report_html
from fourier_toy.experiments.conditions import measured_by
from fourier_toy.errors import CheckpointError
from fourier_toy.experiments.sweep import FIGURES, RESULTS, RUNS, SWEEP
from fourier_toy.runs.layout import CONFIG, DIAGNOSTICS, SUMMARY
from fourier_toy.runs.files import atomic_write_json, atomic_write_text, read_jsonl

# What `write` adds to the reproduce (sweep) directory, besides FIGURES/*.png.
REPORT_MD, REPORT_SUMMARY = "report.md", "summary.json"
KEY_PERIODS, FEATURED = claims.KEY_PERIODS, claims.FEATURED


# ---- loading -------------------------------------------------------------------------------------

def load_runs(out: Path) -> dict[str, list[dict]]:
    """condition name -> [{"seed", "summary", "dir"}] for every finished, diagnosed run."""
    try:
        sweep = json.loads((out / SWEEP).read_text())
    except (OSError, ValueError, RecursionError):
        raise CheckpointError(f"DIR: {str(out)!r} is not a reproduce directory (no readable {SWEEP})") from None
    by_cond: dict[str, list[dict]] = {}
    for run in sweep["runs"]:
        cond = run["values"]["condition"]
        d = out / RUNS / run["id"]
        try:
            summary = json.loads((d / SUMMARY).read_text())
        except (OSError, ValueError, RecursionError):
            continue
        if "diagnostics" not in summary:
            continue
        by_cond.setdefault(cond["name"], []).append({"seed": run["values"]["seed"], "summary": summary, "dir": d,
                                                     "condition": cond})
    return by_cond


def failed_runs(out: Path) -> list[dict]:
    """The runs the sweep's results.jsonl records as failed, in grid order: id, condition, seed and
    the first line of the error."""
    try:
        records = read_jsonl(out / RESULTS)
    except CheckpointError:
        return []
    failed = []
    for rec in records:
        if rec.get("status") == "ok":
            continue
        values = rec.get("values") or {}
        cond = values.get("condition")
        error = str(rec.get("error") or rec.get("stop_reason") or "failed").strip().splitlines()
        failed.append({"id": rec.get("id"), "condition": cond.get("name") if isinstance(cond, dict) else cond,
                       "seed": values.get("seed"), "error": error[0] if error else "failed"})
    return failed


def blocked_claims(failed: list[dict]) -> dict[str, list[str]]:
    """Claim id -> the conditions it reads that have a failed run: with a seed missing, the claim
    is not measurable (its t intervals would be over other seeds than the grid's)."""
    bad = {f["condition"] for f in failed}
    return {c.id: [name for name in c.conditions if name in bad] for c in claims.CLAIMS
            if any(name in bad for name in c.conditions)}


def _vals(runs, fn) -> list[float]:
    out = []
    for r in runs:
        try:
            v = fn(r["summary"])
        except (KeyError, TypeError, IndexError):
            v = None
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            out.append(float(v))
    return out


def stat(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None, "values": []}
    a = np.array(values, dtype=float)
    return {"n": len(a), "mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
            "min": float(a.min()), "max": float(a.max()), "values": [float(x) for x in a]}


def fmt(s: dict | None, digits: int = 3) -> str:
    if not s or not s["n"]:
        return "-"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}" if s["n"] > 1 else f"{s['mean']:.{digits}f}"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ---- the tables of each claim's section ---------------------------------------------------------

D = lambda s: s["diagnostics"]  # noqa: E731


def rows_spectra(runs) -> dict:
    return {name: {"prominence": {T: stat(_vals(rs, lambda s, T=T: D(s)["embedding"]["prominence"][T]))
                                  for T in KEY_PERIODS},
                   "n_key_outliers": stat(_vals(rs, lambda s: D(s)["embedding"]["n_key_outliers"]))}
            for name, rs in runs.items()}


def rows_rescue(runs) -> dict:
    rows = {}
    for name, rs in runs.items():
        steps = [r["summary"].get("steps_to", {}).get("test_0.99") for r in rs]
        steps90 = [r["summary"].get("steps_to", {}).get("test_0.9") for r in rs]
        rows[name] = {"test_acc": stat(_vals(rs, lambda s: s["final"]["test"]["acc"])),
                      "train_acc": stat(_vals(rs, lambda s: s["final"]["train"]["acc"])),
                      "test_pm2": stat(_vals(rs, lambda s: s["final"]["test"]["acc_pm2"])),
                      "steps_to_90": stat([float(x) for x in steps90 if x is not None]),
                      "reached_90": sum(x is not None for x in steps90),
                      "steps_to_99": stat([float(x) for x in steps if x is not None]),
                      "reached_99": sum(x is not None for x in steps), "n": len(rs)}
    return rows


def rows_division(runs) -> dict:
    return {name: {"attn_high": stat(_vals(rs, lambda s: D(s)["modules"]["attn_high"])),
                   "mlp_high": stat(_vals(rs, lambda s: D(s)["modules"]["mlp_high"])),
                   "gap": stat(_vals(rs, lambda s: D(s)["modules"]["attn_high"] - D(s)["modules"]["mlp_high"]))}
            for name, rs in runs.items()}


TABLE1_KEYS = [("none", "-"), ("ATTN & MLP", "low"), ("ATTN", "low"), ("MLP", "low"),
               ("ATTN & MLP", "high"), ("ATTN", "high"), ("MLP", "high")]
_PAPER_MODULE = {"none": "none", "ATTN & MLP": "attn+mlp", "ATTN": "attn", "MLP": "mlp"}


def _abl(s, m, r, field):
    return D(s)["ablation"][f"{m}|{r}"][field]


def rows_table1(rs) -> list[dict]:
    rows = []
    for m, r in TABLE1_KEYS:
        loss, acc = ref.TABLE1[(_PAPER_MODULE[m], r)]
        rows.append({"modules": m, "removed": r, "paper_loss": loss, "paper_acc": acc,
                     **{f: stat(_vals(rs, lambda s, f=f: _abl(s, m, r, f)))
                        for f in ("acc", "loss", "dim_null", "frac_x10", "frac_below_6")}})
    return rows


def rows_parity(runs) -> dict:
    return {name: {f: stat(_vals(rs, lambda s, f=f: D(s)["single_pass"][f])) for f in ("parity_acc", "acc", "dim_null")}
            for name, rs in runs.items()}


def rows_lens(runs) -> dict:
    rows = {}
    for name, rs in runs.items():
        L = max((len(D(r["summary"])["lens"]["acc"]) for r in rs), default=0)
        rows[name] = {key: [stat(_vals(rs, lambda s, l=l, key=key: D(s)["lens"][key][l])) for l in range(L)]
                      for key in ("acc", "acc_pm2", "acc_pm10")}
    return rows


def rows_probes(runs) -> dict:
    return {name: {T: stat(_vals(rs, lambda s, T=T: D(s)["probe_kappa"][T])) for T in ("mod2", "mod5", "mod10")}
            for name, rs in runs.items()}


def _scratch_rows(runs) -> dict:
    def small(s):
        hist = s["final"]["test"]["errors"]["histogram"]
        n = sum(hist.values())
        return sum(c for e, c in hist.items() if abs(int(e)) <= 2) / n if n else None

    rs = runs.get("learned", [])
    return {"frac_errors_within_2": stat(_vals(rs, small)),
            "n_key_outliers": stat(_vals(rs, lambda s: D(s)["embedding"]["n_key_outliers"]))}


# ---- the report ----------------------------------------------------------------------------------

def build(out) -> dict:
    out = Path(out)
    runs = load_runs(out)
    failed = failed_runs(out)
    blocked = blocked_claims(failed)
    if not runs:
        if failed:  # every run failed: the report is the list of failures
            judged = {cid: {**c, "verdict": claims.NOT_MEASURABLE, "not_measurable_because": blocked.get(cid, [])}
                      for cid, c in claims.judge_all({}).items()}
            return {"dir": str(out), "conditions": [], "claims": judged, "failed_runs": failed,
                    "not_measurable": blocked, "no_runs": True}
        raise CheckpointError(f"DIR: {str(out)!r} has no finished, diagnosed runs yet")
    first = next(iter(runs.values()))[0]["summary"]["diagnostics"]["basis"]
    judged = claims.judge_all({name: [r["summary"] for r in rs] for name, rs in runs.items()})
    for cid, conds in blocked.items():
        judged[cid].update(verdict_measured=judged[cid]["verdict"], verdict=claims.NOT_MEASURABLE,
                           not_measurable_because=conds)
    tables = {
        "embedding_spectra": {"rows": rows_spectra(runs)},
        "rescue": {"rows": rows_rescue(runs)},
        "division_of_labour": {"rows": rows_division(runs)},
        "table1": {"rows": {name: rows_table1(runs[name]) for name in FEATURED if name in runs}},
        "error_types": {"rows": {name: rows_table1(runs[name]) for name in FEATURED if name in runs}},
        "single_pass_parity": {"rows": rows_parity(runs)},
        "logit_lens": {"rows": rows_lens(runs)},
        "from_scratch": {"rows": _scratch_rows(runs)},
        "mod_probes": {"rows": rows_probes(runs)},
    }
    labels = {name: rs[0]["condition"].get("name") for name, rs in runs.items()}
    cfg = json.loads((first_dir(runs) / CONFIG).read_text())
    main_t1 = next((name for name in FEATURED if name in runs), None)
    return {"dir": str(out), "conditions": list(runs), "labels": labels,
            "seeds": {name: [r["seed"] for r in rs] for name, rs in runs.items()},
            "setup": {"max_operand": cfg["task"]["max_operand"], "n_numbers": cfg["derived"]["n_numbers"],
                      "model": cfg["model"], "train": cfg["train"], "basis": first,
                      "source": next((r["condition"].get("embedding.source") for rs in runs.values() for r in rs
                                      if r["condition"].get("embedding.source")), None)},
            "claims": {cid: {**judged[cid], **tables[cid]} for cid in judged}, "main_table1": main_t1,
            "failed_runs": failed, "not_measurable": blocked}


def first_dir(runs) -> Path:
    return next(iter(runs.values()))[0]["dir"]


def _verdicts(summary: dict) -> dict:
    return {cid: c["verdict"] for cid, c in summary["claims"].items()}


def _anchor(claim: dict) -> str:
    return f"claim-{claim['number']}"


def _checks_table(claim: dict) -> list[str]:
    def interval(c):
        iv = c["interval"]
        return "-" if not iv else "[" + ", ".join("-inf" if x is None and i == 0 else "inf" if x is None else f"{x:.3f}"
                                                   for i, x in enumerate(iv)) + "]"

    def values(c):
        return ", ".join("never" if v is None else f"{v:.3g}" for v in c["values"]) or "-"

    rows = [[c["check"], values(c), interval(c), f"**{c['outcome']}**" if c["outcome"] else ""] for c in claim["checks"]]
    rows += [[c["check"] + " (construction check, not counted)", values(c), interval(c), c["outcome"]]
             for c in claim["construction"]]
    return [_table(["check", "values over seeds", f"{claims.CONFIDENCE:.0%} t interval", "outcome"], rows), ""]


def _section(claim: dict, body: list[str]) -> list[str]:
    if claim.get("not_measurable_because"):
        body = [f"Not measurable: runs of {', '.join(claim['not_measurable_because'])} failed (see Failed runs); "
                f"the runs that finished alone give: {claim.get('verdict_measured', '-')}.", "", *body]
    return [f'<a id="{_anchor(claim)}"></a>', f"## {claim['number']}. {claim['title']}", "",
            f"GPT-2: {claim['gpt2']}.", "", *body,
            f"Verdict: **{claim['verdict']}**.", "", *_checks_table(claim),
            f"Criterion: {claim['criterion']}", ""]


def _failed_section(summary: dict) -> list[str]:
    """The failed runs and the claims they leave not measurable (empty when every run finished)."""
    failed = summary.get("failed_runs") or []
    if not failed:
        return []
    c = summary["claims"]
    blocked = summary.get("not_measurable") or {}
    lines = ["## Failed runs", "", f"{len(failed)} run(s) failed; the verdicts leave them out.", "",
             _table(["condition", "seed", "run", "error"],
                    [[f["condition"], f["seed"], f"`{f['id']}`", f["error"].replace("|", "/")] for f in failed]), ""]
    if blocked:
        lines += ["Claims not measurable because of them: "
                  + "; ".join(f"{c[cid]['number']}. {c[cid]['title']} ({', '.join(conds)})"
                              for cid, conds in sorted(blocked.items(), key=lambda kv: c[kv[0]]["number"])) + ".", ""]
    return lines


def _markdown_failed_only(summary: dict) -> str:
    c = summary["claims"]
    return "\n".join(["# fourier_toy reproduce report", "", "No run finished, so no claim could be measured.", "",
                      *_failed_section(summary), "## Verdicts", "",
                      _table(["claim", "verdict"], [[f"{x['number']}. {x['title']}", f"**{x['verdict']}**"]
                                                    for x in sorted(c.values(), key=lambda x: x["number"])]), ""])


def _time_text(sweep: dict | None) -> str:
    """How long the runs took, as reproduce recorded it: ' (15 runs trained and diagnosed in 152 s)'."""
    if not sweep:
        return ""
    reused = f", {sweep['n_reused']} reused from an earlier call" if sweep.get("n_reused") else ""
    return f" ({sweep['n_ran']} runs trained and diagnosed in {sweep['seconds']:.0f} s{reused})"


def markdown(summary: dict) -> str:
    if summary.get("no_runs"):
        return _markdown_failed_only(summary)
    c, s = summary["claims"], summary["setup"]
    conds = summary["conditions"]
    m = s["model"]
    lines = [
        "# fourier_toy reproduce report", "",
        f"Task a + b with a, b <= {s['max_operand']} (p = {s['n_numbers']} number tokens); GPT-2-style model "
        f"d_model {m['d_model']}, {m['n_layers']} layers, {m['n_heads']} heads, "
        f"{'tied' if m['tied'] else 'untied'} unembedding; {s['train']['max_steps']} steps at most, batch "
        f"{s['train']['batch_size']}, AdamW lr {s['train']['lr']}. Seeds per condition: "
        f"{max(len(v) for v in summary['seeds'].values())}. Fourier analyses: {s['basis']['basis']} basis, "
        f"N = {s['basis']['N']}, tau = {s['basis']['tau']}. Pre-trained source: {s['source']}.",
        f"GPT-2 numbers: {ref.PAPER}. Values are mean ± sample std over seeds; verdicts use the seeds' "
        f"{claims.CONFIDENCE:.0%} t intervals (claims.py).", "",
        "## Verdicts", "",
        f"This report ran the `{summary.get('preset')}` preset{_time_text(summary.get('sweep'))}. The last column "
        "names the preset whose regime measures the claim (docs/regimes.md); a verdict from another preset's runs is "
        "shown, not relied on.", "",
        _table(["claim", "verdict", "measured by"],
               [[f"[{x['number']}. {x['title']}](#{_anchor(x)})", f"**{x['verdict']}**", measured_by(x["id"])]
                for x in sorted(c.values(), key=lambda x: x["number"])]), "",
        *_failed_section(summary),
    ]
    sp = c["embedding_spectra"]
    lines += _section(sp, [
        "The real pre-trained rows packaged as `whisper` (Whisper tiny.en, rows 0..519) show prominence "
        + ", ".join(f"T={T:g}: {v}" for T, v in ref.REAL_EMBEDDING_PROMINENCE.items()) + ".", "",
        _table(["condition", *[f"prominence T={T}" for T in KEY_PERIODS], "key periods among outliers (of 4)"],
               [[n, *[fmt(sp["rows"][n]["prominence"][T], 2) for T in KEY_PERIODS],
                 fmt(sp["rows"][n]["n_key_outliers"], 2)] for n in conds]), ""])
    rc = c["rescue"]["rows"]
    lines += _section(c["rescue"], [
        _table(["condition", "test acc", "test acc +-2", "train acc", "steps to 90% test (seeds reaching)",
                "steps to 99% test (seeds reaching)"],
               [[n, fmt(rc[n]["test_acc"]), fmt(rc[n]["test_pm2"]), fmt(rc[n]["train_acc"]),
                 f"{fmt(rc[n]['steps_to_90'], 0)} ({rc[n]['reached_90']}/{rc[n]['n']})",
                 f"{fmt(rc[n]['steps_to_99'], 0)} ({rc[n]['reached_99']}/{rc[n]['n']})"] for n in conds]), ""])
    dv = c["division_of_labour"]["rows"]
    lines += _section(c["division_of_labour"], [
        _table(["condition", "attention high share", "MLP high share", "attention - MLP"],
               [[n, fmt(dv[n]["attn_high"]), fmt(dv[n]["mlp_high"]), fmt(dv[n]["gap"])] for n in conds]), ""])
    t1 = []
    for name, rows in c["table1"]["rows"].items():
        t1 += [f"Filter on {name}:", "",
               _table(["filtered", "removed", "GPT-2 loss", "GPT-2 acc", "toy loss", "toy acc", "dim null(M) of d"],
                      [[r["modules"], r["removed"], f"{r['paper_loss']:.4f}", f"{r['paper_acc']:.4f}", fmt(r["loss"]),
                        fmt(r["acc"]), f"{fmt(r['dim_null'], 0)} of {m['d_model']}"] for r in rows]), ""]
    lines += _section(c["table1"], t1)
    et = []
    for name, rows in c["error_types"]["rows"].items():
        by = {(r["modules"], r["removed"]): r for r in rows}
        et += [_table([f"ablation ({name})", "GPT-2", "toy"],
                      [["MLP low removed: share of errors that are multiples of 10", "1.00 (every error)",
                        fmt(by[("MLP", "low")]["frac_x10"])],
                       ["ATTN high removed: share of errors below 6", "1.00 (every error)",
                        fmt(by[("ATTN", "high")]["frac_below_6"])]]), ""]
    lines += _section(c["error_types"], et)
    pa = c["single_pass_parity"]["rows"]
    lines += _section(c["single_pass_parity"], [
        _table(["condition", "parity accuracy", "exact accuracy", "dim null(M)"],
               [[n, fmt(pa[n]["parity_acc"]), fmt(pa[n]["acc"]), fmt(pa[n]["dim_null"], 0)] for n in conds]), ""])
    ln = c["logit_lens"]["rows"]
    L = max((len(r["acc"]) for r in ln.values()), default=0)
    lines += _section(c["logit_lens"], [
        _table(["condition", *[f"layer {l}: exact / +-2 / +-10" for l in range(L)]],
               [[n, *[f"{fmt(ln[n]['acc'][l], 2)} / {fmt(ln[n]['acc_pm2'][l], 2)} / {fmt(ln[n]['acc_pm10'][l], 2)}"
                      if l < len(ln[n]["acc"]) else "-" for l in range(L)]] for n in conds]), ""])
    fs = c["from_scratch"]["rows"]
    lines += _section(c["from_scratch"], [
        _table(["measure", "toy (learned)"],
               [["share of test errors within +-2", fmt(fs["frac_errors_within_2"])],
                ["key periods among embedding outliers (of 4)", fmt(fs["n_key_outliers"], 2)]]), ""])
    pr = c["mod_probes"]["rows"]
    lines += _section(c["mod_probes"], [
        "A linear probe reads n mod T from the number rows (held-out numbers; Cohen's kappa: 0 chance, 1 perfect). "
        "Spectral spikes can come from token statistics alone; linear readability of the residue is what a Fourier "
        "mechanism needs and a lookup table does not give.", "",
        _table(["condition", "kappa n mod 2", "kappa n mod 5", "kappa n mod 10"],
               [[n, *[fmt(pr[n][T], 2) for T in ("mod2", "mod5", "mod10")]] for n in conds]), ""])
    lines += ["## Figures", "",
              *[f"- `figures/{f}`" for f in sorted(p.name for p in (Path(summary["dir"]) / FIGURES).glob("*.png"))], ""]
    return "\n".join(lines)


def figures(summary: dict, out: Path) -> None:
    from fourier_toy.analysis import plots

    fig_dir = out / FIGURES
    fig_dir.mkdir(parents=True, exist_ok=True)
    runs = load_runs(out)
    diag = {n: json.loads((rs[0]["dir"] / DIAGNOSTICS).read_text()) for n, rs in runs.items()
            if (rs[0]["dir"] / DIAGNOSTICS).is_file()}
    plots.plot_spectra({n: d["spectrum"] for n, d in diag.items()}, fig_dir / "embedding_spectra.png")
    main = summary.get("main_table1")
    if main in diag:
        plots.plot_module_spectra(diag[main]["lens"], fig_dir / f"module_spectra_{main}.png")
        ref_rows = [{"modules": m, "removed": r, "acc": ref.TABLE1[(_PAPER_MODULE[m], r)][1]} for m, r in TABLE1_KEYS]
        plots.plot_ablation(diag[main]["ablate"], fig_dir / f"table1_{main}.png", reference=ref_rows)
        plots.plot_errors(diag[main]["ablate"], fig_dir / f"errors_{main}.png", max_abs=60)
    plots.plot_lenses({n: d["lens"] for n, d in diag.items()}, fig_dir / "lens.png")
    plots.plot_training({n: [r["dir"] for r in rs] for n, rs in runs.items() if rs}, fig_dir / "training_curves.png",
                        title="test accuracy by condition, mean over seeds (band: min-max)")


def write(out, extra: dict | None = None) -> dict:
    out = Path(out)
    summary = {**build(out), **(extra or {})}
    if summary.get("no_runs"):  # every run failed: report.md and summary.json list them, nothing else
        summary["verdicts"] = _verdicts(summary)
        atomic_write_json(out / REPORT_SUMMARY, summary)
        atomic_write_text(out / REPORT_MD, markdown(summary))
        (out / report_html.REPORT_HTML).unlink(missing_ok=True)  # an older run's page would contradict it
        return summary
    if "preset" not in summary:
        # Re-reporting a directory (report.write without reproduce's extra): its sweep.json knows the
        # preset, which the command in report.html needs.
        summary["preset"] = json.loads((out / SWEEP).read_text()).get("preset")
    figures(summary, out)
    summary["verdicts"] = _verdicts(summary)
    atomic_write_json(out / REPORT_SUMMARY, summary)
    text = markdown(summary)
    atomic_write_text(out / REPORT_MD, text)
    report_html.write(out, summary, text)
    return summary
