"""`fourier-toy reproduce`: train every embedding condition over several seeds, diagnose each run,
and write the side-by-side report (report.md, summary.json, figures/) into one directory.

The grid runs through sweep.py, so an interrupted reproduce picks up where it stopped: finished
runs are kept, interrupted ones are trained again.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from fourier_toy.experiments import conditions as experiments
from fourier_toy.experiments import report
from fourier_toy.experiments import report_html
from fourier_toy.experiments import sweep
from fourier_toy.experiments.grid import expand
from fourier_toy.experiments.progress import Progress, seconds_text

# The report to open, best first: report.html when the report writes one, else report.md.
REPORT_FILES = ("report.html", report.REPORT_MD)


def report_file(out) -> Path:
    """The absolute path of the reproduce directory's report (see REPORT_FILES)."""
    out = Path(out).resolve()
    return next((out / name for name in REPORT_FILES if (out / name).is_file()), out / report.REPORT_MD)


def report_url(out) -> str:
    """The report as a file:// URL, which terminals and notebooks make clickable."""
    return report_file(out).as_uri()


def code_stamp() -> str:
    """The digest of the package's sources that made these numbers: with the same sources (and
    machine), the same config and seeds give the same bits, so a directory with this stamp can be
    judged again without training again."""
    from fourier_toy.fast import package_stamp

    return package_stamp().hex()


def reproduce(preset: str = "quick", seeds: int = experiments.DEFAULT_SEEDS, out=None, source: str = experiments.DEFAULT_SOURCE, workers: int | None = None,
              overrides=(), progress: bool | None = None) -> dict:
    grid = experiments.grid(preset, seeds, source, overrides)
    out = Path(out) if out else Path(f"reproduce-{preset}")
    points = expand(grid)  # validates every point before anything runs
    show = Progress("reproduce", progress)
    t0 = time.perf_counter()
    if source == "toy":
        # Pre-train (or load) the built-in source once here, so the workers find it in the cache.
        from fourier_toy.training.toy_source import toy_number_rows

        toy_number_rows(points[0].config.task.n_numbers)
        show.stage("toy source ready", time.perf_counter() - t0)
    t0 = time.perf_counter()
    with show:
        result = sweep.run_sweep(grid, out, workers=workers, runner=experiments.train_and_diagnose,
                                 on_start=show.start, on_result=show.result)
    for p, rec in zip(points, result.records):
        if rec.get("reused") and rec.get("status") == "ok":
            experiments.ensure_diagnosed(out / sweep.RUNS / p.run_id)
    kept = f", {result.n_reused} already finished" if result.n_reused else ""
    show.stage(f"{len(result.records)} runs done in {seconds_text(time.perf_counter() - t0)} s "
               f"({len(result.failed)} failed{kept})")
    if show.bars:  # in line mode each failure already had its line
        for rec in result.failed:
            print(f"failed: {rec['values']}: {rec.get('error')}", file=sys.stderr)
    summary = report.write(out, extra={"sweep": {"seconds": result.seconds, "n_ran": result.n_ran,
                                              "n_reused": result.n_reused, "n_failed": len(result.failed)},
                                       "preset": preset, "code": code_stamp(),
                                       "command": report_html.reproduce_command(preset, seeds, source, overrides)})
    show.stage(f"report written: {report_file(out)}")
    return summary
