"""`fourier-toy reproduce`: train every embedding condition over several seeds, diagnose each run,
and write the side-by-side report (report.md, summary.json, figures/) into one directory.

The grid runs through sweep.py, so an interrupted reproduce picks up where it stopped: finished
runs are kept, interrupted ones are trained again.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fourier_toy.experiments import conditions as experiments
from fourier_toy.experiments import report
from fourier_toy.experiments import sweep


def reproduce(preset: str = "quick", seeds: int = experiments.DEFAULT_SEEDS, out=None, source: str = "toy", workers: int | None = None,
              overrides=(), progress: bool | None = None) -> dict:
    grid = experiments.grid(preset, seeds, source, overrides)
    out = Path(out) if out else Path(f"reproduce-{preset}")
    points = sweep.expand(grid)  # validates every point before anything runs
    if source == "toy":
        # Pre-train (or load) the built-in source once here, so the workers find it in the cache.
        from fourier_toy.training.toy_source import toy_number_rows

        toy_number_rows(points[0].config.task.n_numbers)
    if progress is None:
        progress = sys.stderr.isatty()
    from tqdm.auto import tqdm

    bar = tqdm(total=len(points), disable=not progress, unit="run", desc="reproduce", dynamic_ncols=True)

    def on_result(rec):
        bar.update(1)
        bar.set_postfix_str(f"{rec['values']['condition']['name']} seed {rec['values']['seed']}: "
                            f"{rec.get('status')}, test acc {rec.get('test_acc') or 0:.3f}")

    result = sweep.run_sweep(grid, out, workers=workers, runner=experiments.train_and_diagnose,
                             on_result=on_result)
    bar.close()
    for p, rec in zip(points, result.records):
        if rec.get("reused") and rec.get("status") == "ok":
            experiments.ensure_diagnosed(out / sweep.RUNS / p.run_id)
    for rec in result.failed:
        print(f"failed: {rec['values']}: {rec.get('error')}", file=sys.stderr)
    return report.write(out, extra={"sweep": {"seconds": result.seconds, "n_ran": result.n_ran,
                                              "n_reused": result.n_reused, "n_failed": len(result.failed)}})
