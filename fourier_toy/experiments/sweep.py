"""Grids of training runs, resumable, on local processes or a Dask cluster: `run_sweep`.

    grid.py       GRID.toml, its expansion into points, content-addressed run ids (the grid format)
    records.py    finished runs (what counts as finished on restart) and results.jsonl records
    workers.py    thread limits, worker start-up, the parent-death watchdog, lock files
    executors.py  in this process, a local process pool, or a Dask cluster

Sweep directory:

    sweep.json      the grid and its points (id and grid values), written before anything runs
    runs/<id>/      one training run directory each (see train.py)
    results.jsonl   one record per run: appended as runs end, rewritten in grid order at the end
    report.json, report.txt, figures/sweep_curves.png    written by sweep_report.py
    .locks/         the sweep's and each run's lock files (see workers.py)

A run is a pure function of its config and its directory is named by the config's hash, so an
unchanged run is never trained twice: a restart keeps the finished runs and trains the rest again.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fourier_toy import config as config_mod
from fourier_toy.errors import CheckpointError, ConfigError
from fourier_toy.experiments.executors import connect, run_points
from fourier_toy.experiments.grid import Grid, canonical_json, expand, load_grid
from fourier_toy.experiments.records import finished_summary, jsonable, run_record
from fourier_toy.experiments.workers import (LOCK_WAIT_SECONDS, available_cores, file_lock, limit_threads, lock_path,
                                             single_threaded_blas, threads_here)

# numpy and numba (through fast, runs, training) are imported lazily, where a function needs them: a
# spawned worker loads them as it sets its thread limits (workers.limit_threads).

SWEEP, RESULTS, RUNS, FIGURES = "sweep.json", "results.jsonl", "runs", "figures"


def run_point(config: dict, run_dir: str, threads: int | dict | None = None) -> dict:
    """Train one grid point into `run_dir` (the task shipped to a worker); never raises.

    config: `Config.to_dict()`; threads: numba/OpenMP threads for this run (an int, a mapping from
    Dask worker address to int, or None to leave them as they are); BLAS runs single-threaded in
    any case (see workers.BLAS_THREADS). Returns a plain record (see `records.run_record`).
    """
    t0 = time.perf_counter()
    try:
        limit_threads(threads_here(threads))
        from fourier_toy.training.loop import train

        cfg = config_mod.from_dict(config)
        out = Path(run_dir)
        summary = finished_summary(out, cfg)
        if summary is None:
            if out.exists():  # a retry after a worker died, or a stale partial run
                shutil.rmtree(out)
            with single_threaded_blas():
                train(cfg, out, progress=False)
            summary = finished_summary(out, cfg)
            if summary is None:
                raise CheckpointError(f"{out}: training ended without a readable summary and model")
        return run_record(summary, seconds=time.perf_counter() - t0)
    except BaseException as e:  # noqa: BLE001 - a failed run is data; the sweep goes on
        if isinstance(e, KeyboardInterrupt):
            raise
        return {"status": "failed", "error": f"{type(e).__name__}: {e}", "seconds": time.perf_counter() - t0}


@dataclass
class SweepResult:
    out: Path
    records: list[dict]  # one per point, in grid order
    n_ran: int  # trained (or attempted) by this call
    n_reused: int  # finished earlier and kept
    seconds: float

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.records if r["status"] != "ok"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary_line(self) -> str:
        n = len(self.records)
        return (f"{self.out}: {n} runs, {n - len(self.failed)} ok, {len(self.failed)} failed "
                f"({self.n_ran} trained, {self.n_reused} already finished) in {self.seconds:.1f} s")


def run_sweep(grid: Grid | str | os.PathLike, out, workers: int | None = None, scheduler=None,
              on_result: Callable[[dict], None] | None = None,
              runner: Callable[[dict, str, Any], dict] = run_point,
              on_start: Callable[[int, int], None] | None = None) -> SweepResult:
    """Train every point of `grid` into `out`, reusing finished runs.

    workers: processes on this machine (default: the number of cores); 0 trains in this process.
    scheduler: a Dask scheduler address (tcp://HOST:PORT) or a distributed.Client; overrides workers.
    on_result: called with each run's record as it ends (for progress output; see progress.py).
    on_start: called once with (runs to train, finished runs kept) before the first run starts, so
    a progress bar knows its length before minutes of training go by.
    runner: the function that trains one point, `run_point` or a module-level function with its
    signature (it must be importable by the worker processes).
    """
    t0 = time.perf_counter()
    if not isinstance(grid, Grid):
        grid = load_grid(grid)
    points = expand(grid)
    if workers is None:
        workers = available_cores()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"--workers: expected an integer >= 0, got {workers!r}")
    out = Path(out)
    client, own_client = connect(scheduler) if scheduler is not None else (None, False)
    try:
        return _sweep(grid, points, out, workers, client, on_result, runner, t0, on_start)
    finally:
        if own_client:
            client.close()


def _sweep(grid, points, out, workers, client, on_result, runner, t0, on_start=None) -> SweepResult:
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"--out: {str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / SWEEP).is_file():
        raise CheckpointError(f"--out: {str(out)!r} is not empty and holds no {SWEEP}; refusing to write a "
                              "sweep into it")
    (out / RUNS).mkdir(parents=True, exist_ok=True)
    with file_lock(lock_path(out, "sweep"), f"--out {str(out)!r}: another sweep"):
        return _sweep_locked(grid, points, out, workers, client, on_result, runner, t0, on_start)


def _sweep_locked(grid, points, out, workers, client, on_result, runner, t0, on_start) -> SweepResult:
    from fourier_toy.runs.files import append_jsonl, atomic_write_json, atomic_write_text

    atomic_write_json(out / SWEEP, {**grid.to_dict(), "keys": grid.keys,
                                    "runs": [{"id": p.run_id, "values": p.values} for p in points]})

    records: dict[str, dict] = {}
    pending = []
    for p in points:
        p.run_dir = out / RUNS / p.run_id
        # Under the run's lock: a leftover worker of a killed sweep may still be writing it.
        with file_lock(lock_path(out, p.run_id), f"run {p.run_id}", wait=LOCK_WAIT_SECONDS):
            summary = finished_summary(p.run_dir, p.config)
            if summary is not None:
                records[p.run_id] = {**run_record(summary), "reused": True}
            else:
                if p.run_dir.exists():
                    shutil.rmtree(p.run_dir)  # interrupted: start over
                pending.append(p)

    if on_start is not None:
        on_start(len(pending), len(points) - len(pending))
    stream = run_points(pending, runner, workers, client)
    done = 0
    for p, rec in stream:
        rec = {"id": p.run_id, "values": p.values, **rec, "reused": False}
        records[p.run_id] = rec
        append_jsonl(out / RESULTS, rec)
        done += 1
        if on_result is not None:
            on_result({**rec, "index": done, "total": len(pending)})

    ordered = [{"id": p.run_id, "values": p.values, **records[p.run_id]} for p in points]
    atomic_write_text(out / RESULTS, "".join(canonical_json(jsonable(r)) + "\n" for r in ordered))
    return SweepResult(out, ordered, n_ran=len(pending), n_reused=len(points) - len(pending),
                       seconds=time.perf_counter() - t0)
