"""Aggregation of a sweep directory: per-condition statistics over seeds, a text table, a figure.

    report.json, report.txt, figures/sweep_curves.png    written by `write_report`

One group per condition (every grid key but the seed), with statistics over its seeds, plus the
runs that failed or have not run yet; the directory layout is sweep.py's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fourier_toy.errors import CheckpointError
from fourier_toy.experiments.grid import canonical_json, describe_values, show_value
from fourier_toy.experiments.records import finished_summary, run_record, summary_problem
from fourier_toy.experiments.sweep import FIGURES, RESULTS, RUNS, SWEEP

REPORT_JSON, REPORT_TXT, CURVES = "report.json", "report.txt", "sweep_curves.png"


def _stats(values: list) -> dict:
    import numpy as np

    xs = np.array([v for v in values if v is not None], dtype=np.float64)
    if not len(xs):
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    return {"n": int(len(xs)), "mean": float(xs.mean()), "std": float(xs.std(ddof=1)) if len(xs) > 1 else 0.0,
            "min": float(xs.min()), "max": float(xs.max())}


def _flatten_numbers(d: Any, prefix: str) -> dict:
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten_numbers(v, f"{prefix}.{k}"))
    elif isinstance(d, (int, float)) and not isinstance(d, bool) and math.isfinite(d):
        out[prefix] = float(d)
    return out


def _run_metrics(summary: dict) -> dict:
    """The numbers aggregated per condition: final accuracies, steps to test accuracy levels, and
    every finite number under the summary's "diagnostics" (dotted names)."""
    rec = run_record(summary)
    m = {f"{s}_acc": rec[f"{s}_acc"] for s in ("test", "val", "train")}
    for level, step in sorted((rec.get("steps_to") or {}).items()):
        m[f"steps_to_{level}"] = step
    m.update(_flatten_numbers(summary.get("diagnostics") or {}, "diagnostics"))
    return m


def _read_sweep(out: Path) -> tuple[list, list]:
    """(keys, runs) of OUT/sweep.json, checked: keys a list of strings, runs a list of
    {"id": a plain directory name, "values": an object holding every key}."""
    path = out / SWEEP
    try:
        sweep = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        raise CheckpointError(f"DIR: {str(out)!r} is not a sweep directory (no readable {SWEEP})") from None
    if not isinstance(sweep, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(sweep).__name__}")
    keys, runs = sweep.get("keys"), sweep.get("runs")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise CheckpointError(f"{path}: 'keys' must be a list of strings, got {keys!r}")
    if not isinstance(runs, list):
        raise CheckpointError(f"{path}: 'runs' must be a list, got {type(runs).__name__}")
    for i, run in enumerate(runs):
        if not isinstance(run, dict):
            raise CheckpointError(f"{path}: runs[{i}] must be an object, got {type(run).__name__}")
        rid, values = run.get("id"), run.get("values")
        if not isinstance(rid, str) or rid in ("", ".", "..") or Path(rid).name != rid or "\\" in rid:
            raise CheckpointError(f"{path}: runs[{i}].id must be a run directory name, got {rid!r}")
        if not isinstance(values, dict):
            raise CheckpointError(f"{path}: runs[{i}].values must be an object, got {type(values).__name__}")
        missing = [k for k in keys if k not in values]
        if missing:
            raise CheckpointError(f"{path}: runs[{i}].values has no {missing[0]!r} (one of the keys)")
    return keys, runs


def _result_problem(record: dict) -> str | None:
    """What is wrong with one results.jsonl record, or None."""
    if not isinstance(record.get("id"), str):
        return f"'id' must be a string, got {record.get('id')!r}"
    if not isinstance(record.get("status"), str):
        return f"'status' must be a string, got {record.get('status')!r}"
    if record.get("error") is not None and not isinstance(record["error"], str):
        return f"'error' must be a string or null, got {record['error']!r}"
    return None


def _checked_summary(run_dir: Path) -> dict | None:
    """finished_summary, except that a summary.json holding a JSON object of the wrong shape is
    an error naming the file rather than a run that has not finished."""
    from fourier_toy.runs.layout import SUMMARY

    path = run_dir / SUMMARY
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        summary = None
    if isinstance(summary, dict):
        problem = summary_problem(summary)
        if problem is not None:
            raise CheckpointError(f"{path}: {problem}")
    return finished_summary(run_dir)


def report(out) -> dict:
    """Aggregate every run of the sweep in `out`: one group per condition (every grid key but seed),
    with mean, sample std, min and max over its finished, non-diverged runs of each metric."""
    out = Path(out)
    keys, runs = _read_sweep(out)
    from fourier_toy.runs.files import read_jsonl
    from fourier_toy.runs.read_run import read_metrics

    errors = {}
    if (out / RESULTS).is_file():
        for r in read_jsonl(out / RESULTS, check=_result_problem):
            if r.get("status") == "failed":
                errors[r.get("id")] = r.get("error")
    cond_keys = [k for k in keys if k != "seed"]
    groups: dict[str, dict] = {}
    failed, missing = [], []
    for run in runs:
        rid, values = run["id"], run["values"]
        cond = {k: values[k] for k in cond_keys}
        g = groups.setdefault(canonical_json(cond), {"condition": cond, "runs": [], "failed": [], "metrics": {}})
        summary = _checked_summary(out / RUNS / rid)
        if summary is None:
            if rid in errors:
                failed.append({"id": rid, "values": values, "error": errors[rid]})
                g["failed"].append(rid)
            else:
                missing.append({"id": rid, "values": values})
            continue
        if summary.get("stop_reason") == "diverged":
            failed.append({"id": rid, "values": values, "error": run_record(summary)["error"]})
            g["failed"].append(rid)
            continue
        read_metrics(out / RUNS / rid)  # checked before the figure plots it
        g["runs"].append(rid)
        for name, v in _run_metrics(summary).items():
            g["metrics"].setdefault(name, []).append(v)
    out_groups = []
    for g in groups.values():
        metrics = {name: {**_stats(vs), "of": len(vs)} for name, vs in g["metrics"].items()}
        out_groups.append({"condition": g["condition"], "n": len(g["runs"]), "n_failed": len(g["failed"]),
                           "runs": g["runs"], "failed": g["failed"], "metrics": metrics})
    return {"dir": str(out), "keys": keys, "condition_keys": cond_keys, "n_runs": len(runs),
            "n_finished": sum(g["n"] for g in out_groups), "failed": failed, "missing": missing,
            "groups": out_groups}


def _fmt_stat(s: dict | None, digits: int = 4, integer: bool = False) -> str:
    if not s or not s["n"]:
        return "-"
    f = (lambda x: f"{x:.0f}") if integer else (lambda x: f"{x:.{digits}f}")
    text = f"{f(s['mean'])} ± {f(s['std'])} [{f(s['min'])}, {f(s['max'])}]"
    if integer and s["n"] < s["of"]:
        text += f" ({s['n']}/{s['of']} reached)"
    return text


def format_report(rep: dict) -> str:
    """A text table: one row per condition; mean ± std [min, max] over seeds."""
    cols = ["test_acc", "train_acc", "steps_to_test_0.99"]
    extra = sorted({n for g in rep["groups"] for n in g["metrics"] if n.startswith("diagnostics.")})
    cols += extra
    header = [*rep["condition_keys"], "n", *cols]
    rows = []
    for g in rep["groups"]:
        row = [show_value(g["condition"][k]) for k in rep["condition_keys"]]
        row.append(f"{g['n']}" + (f" (+{g['n_failed']} failed)" if g["n_failed"] else ""))
        for c in cols:
            row.append(_fmt_stat(g["metrics"].get(c), integer=c.startswith("steps_to")))
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(f"{rep['n_finished']} of {rep['n_runs']} runs finished; mean ± sample std [min, max] over "
                 "seeds; steps_to: first evaluated step at that test accuracy")
    for f in rep["failed"]:
        lines.append(f"failed {f['id']} {describe_values(f['values'])}: {f['error']}")
    for m in rep["missing"]:
        lines.append(f"not run yet {m['id']} {describe_values(m['values'])}")
    return "\n".join(lines)


def plot_curves(rep: dict, path) -> None:
    """Test accuracy against step per condition: the mean over its seeds, shaded between their
    min and max (plots.plot_training); written atomically as PNG."""
    from fourier_toy.analysis.plots import plot_training

    runs = Path(rep["dir"]) / RUNS
    curves = {(describe_values(g["condition"]) if g["condition"] else "all runs"): [runs / rid for rid in g["runs"]]
              for g in rep["groups"] if g["runs"]}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    plot_training(curves or {"no runs yet": []}, path, title="test accuracy, mean over seeds (band: min-max)")


def write_report(out) -> dict:
    """report() written as OUT/report.json and OUT/report.txt, plus OUT/figures/sweep_curves.png."""
    from fourier_toy.runs.files import atomic_write_json, atomic_write_text

    out = Path(out)
    rep = report(out)
    atomic_write_json(out / REPORT_JSON, rep)
    atomic_write_text(out / REPORT_TXT, format_report(rep) + "\n")
    plot_curves(rep, out / FIGURES / CURVES)
    return rep
