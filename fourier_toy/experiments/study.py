"""`fourier-toy study GRID.toml`: where in the space of toy models each of the paper's claims holds.

A study is a sweep (grid.py) with three axes:

    regime     tables of dotted config keys with a `name`: the points of the space of models
               ({ name = "d_model 192, 4 layers", "model.d_model" = 192, "model.n_layers" = 4 })
    condition  embedding conditions by their reproduce names (conditions.py: learned, fourier_frozen,
               fourier, pretrained_frozen, pretrained), as tables of the keys they set
    seed       the seeds

Every run is trained and diagnosed as `reproduce` does (conditions.train_and_diagnose), so a study
runs on local workers or a Dask cluster and resumes where it stopped. Then, regime by regime, the
claims registry (claims.py) judges the regime's runs. A study need not run every condition in every
regime: a check whose conditions a regime did not run is left out of that regime's verdict, and a
claim with no check left is "not run" there.

Study directory: the sweep's files (sweep.json, runs/, results.jsonl), then study.json (per regime:
each claim's verdict and checks, per condition the test accuracy, dim null(M) of every filter and
the wall time), study.md, and figures/study_verdicts.png, figures/study_<statistic>.png.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

from fourier_toy.errors import CheckpointError, ConfigError
from fourier_toy.experiments import claims
from fourier_toy.experiments import conditions as experiments
from fourier_toy.experiments.grid import Grid, load_grid
from fourier_toy.experiments.progress import Progress, seconds_text
from fourier_toy.experiments.study_report import NOT_RUN, STUDY_JSON, STUDY_MD, write
from fourier_toy.runs.layout import SUMMARY

AXES = ("regime", "condition", "seed")
CONDITION_NAMES = tuple(c.name for c in experiments.conditions("whisper"))
# The null space of a filter depends on the band it removes, not on the module it acts on: each
# regime reports dim null(M) of the low-band and the high-band filter (diagnostics "ablation" rows)
# and of the period-2 single pass.
FILTERS = {"low-band filter": "ATTN|low", "high-band filter": "ATTN|high"}


def check_grid(grid: Grid, where: str = "GRID") -> None:
    """A study grid has exactly the axes regime, condition and seed, with named tables as values."""
    if sorted(grid.keys) != sorted(AXES):
        raise ConfigError(f"{where}: a study's [grid] has exactly the keys {', '.join(AXES)}; got "
                          f"{', '.join(grid.keys) or 'none'}")
    for axis in ("regime", "condition"):
        values = dict(grid.axes)[axis]
        names = [v.get("name") if isinstance(v, dict) else None for v in values]
        if None in names or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(f"{where}: every [grid] {axis} value must be a table with a name, "
                              f"e.g. {{ name = \"base\" }}")
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: [grid] {axis} names must be unique; repeated: "
                              f"{sorted({n for n in names if names.count(n) > 1})[0]!r}")
    unknown = [v["name"] for v in dict(grid.axes)["condition"] if v["name"] not in CONDITION_NAMES]
    if unknown:
        raise ConfigError(f"{where}: [grid] condition {unknown[0]!r} is not a condition the claims read; "
                          f"allowed: {', '.join(CONDITION_NAMES)}")


def run_study(grid_path, out, workers: int | None = None, scheduler=None, progress: bool | None = None) -> dict:
    """Train and diagnose every point of the study grid into `out`, then judge and report it."""
    from fourier_toy.experiments import sweep

    grid = load_grid(grid_path)
    check_grid(grid, f"GRID {str(grid_path)!r}")
    out = Path(out)
    show = Progress("study", progress)
    t0 = time.perf_counter()
    with show:
        result = sweep.run_sweep(grid, out, workers=workers, scheduler=scheduler,
                                 runner=experiments.train_and_diagnose, on_start=show.start, on_result=show.result)
    for rec in result.records:
        if rec.get("reused") and rec.get("status") == "ok":
            experiments.ensure_diagnosed(out / sweep.RUNS / rec["id"])
    show.stage(f"{len(result.records)} runs done in {seconds_text(time.perf_counter() - t0)} s "
               f"({len(result.failed)} failed, {result.n_reused} already finished)")
    summary = build(out)
    write(out, summary)
    show.stage(f"study written: {out / STUDY_MD}")
    return summary


# ---- judging ---------------------------------------------------------------------------------------

def restricted(claim: claims.Claim, ran: set[str]) -> claims.Claim | None:
    """The claim with only the checks whose conditions ran; None when no check is left."""
    def runs(c: claims.Check) -> bool:
        return c.condition in ran and (c.op != "faster" or c.other in ran)

    checks = tuple(c for c in claim.checks if runs(c))
    if not checks:
        return None
    return dataclasses.replace(claim, checks=checks, construction=tuple(c for c in claim.construction if runs(c)))


def judge_regime(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """{claim id: judged claim, or {"verdict": "not run"}} on one regime's runs ({condition: [summary]})."""
    out = {}
    for claim in claims.CLAIMS:
        sub = restricted(claim, set(runs))
        out[claim.id] = {"verdict": NOT_RUN, "title": claim.title} if sub is None else claims.judge(sub, runs)
    return out


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _finite(v):
    """JSON has no infinity: a level never reached (steps_to_90 = inf) is None."""
    return v if v is None or math.isfinite(v) else None


def _condition_numbers(summaries: list[dict], seconds: list[float]) -> dict:
    diag = [s["diagnostics"] for s in summaries]
    return {
        "n_seeds": len(summaries),
        "test_acc": [s["final"]["test"]["acc"] for s in summaries],
        "train_acc": [s["final"]["train"]["acc"] for s in summaries],
        "dim_null": {**{name: _mean([d["ablation"][key]["dim_null"] for d in diag]) for name, key in FILTERS.items()},
                     "period-2 single pass": _mean([d["single_pass"]["dim_null"] for d in diag])},
        "d_model": diag[0]["basis"]["d"],
        "attn_high": _mean([d["modules"]["attn_high"] for d in diag]),
        "mlp_high": _mean([d["modules"]["mlp_high"] for d in diag]),
        "seconds": _mean(seconds),
        # every statistic of the claims registry, per seed (None where that seed cannot measure it)
        "statistics": {name: [_finite(st.value(s)) if st.measurable(s) else None for s in summaries]
                       for name, st in claims.STATISTICS.items()},
    }


def build(out) -> dict:
    """study.json's content from a study directory: regimes in grid order, each judged."""
    from fourier_toy.experiments.sweep import RUNS, SWEEP

    out = Path(out)
    try:
        sweep_json = json.loads((out / SWEEP).read_text())
    except (OSError, ValueError, RecursionError):
        raise CheckpointError(f"DIR: {str(out)!r} is not a study directory (no readable {SWEEP})") from None
    regimes: dict[str, dict] = {}
    for run in sweep_json["runs"]:
        regime, cond = run["values"]["regime"], run["values"]["condition"]["name"]
        r = regimes.setdefault(regime["name"], {"name": regime["name"],
                                                "set": {k: v for k, v in regime.items() if k != "name"},
                                                "runs": {}, "seconds": {}, "missing": 0})
        try:
            summary = json.loads((out / RUNS / run["id"] / SUMMARY).read_text())
        except (OSError, ValueError, RecursionError):
            summary = None
        if not summary or "diagnostics" not in summary:
            r["missing"] += 1
            continue
        r["runs"].setdefault(cond, []).append(summary)
        r["seconds"].setdefault(cond, []).append(summary.get("elapsed_seconds"))
    result = []
    for r in regimes.values():
        result.append({
            "name": r["name"], "set": r["set"], "missing_runs": r["missing"],
            "claims": judge_regime(r["runs"]),
            "conditions": {c: _condition_numbers(s, r["seconds"][c]) for c, s in r["runs"].items()},
        })
    return {"dir": str(out), "preset": sweep_json.get("preset"), "base": sweep_json.get("base"),
            "confidence": claims.CONFIDENCE, "regimes": result}
