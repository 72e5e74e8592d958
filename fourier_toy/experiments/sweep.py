"""Grids of training runs: expansion, content-addressed run directories, execution, aggregation.

A grid file (GRID.toml) is a base config plus lists of values:

    preset = "quick"                      # optional, default "quick"
    [base]                                # config-file form: [base.task], [base.model], ..., seed
    train = { max_steps = 1500 }
    [grid]                                # dotted config keys -> lists of values
    "embedding.kind" = ["learned", "fourier"]
    "model.d_model" = [64, 128]
    seed = [0, 1, 2]

It expands to the Cartesian product of the lists, in file order with the last key varying fastest.
Each point is a resolved config, and its run directory is OUT/runs/<id>, id = the first 12 hex digits
of the SHA-256 of the config's canonical JSON (`run_id`). A run is a pure function of its config, so
the directory name says everything about what is inside and an unchanged run is never trained twice.
For the same reason a time budget (train.max_seconds) is refused: use max_steps or max_epochs.

Sweep directory:

    sweep.json      the grid and its points (id and grid values), written before anything runs
    runs/<id>/      one training run directory each (see train.py)
    results.jsonl   one record per run: appended as runs end, rewritten in grid order at the end
    report.json, report.txt, figures/sweep_curves.png    written by sweep_report.py

Restart: a run counts as finished when its summary.json parses, its config.json is the expected
config and its model.safetensors loads at the summary's step; finished runs are kept as they are
(including runs that diverged: training them again would diverge again). Anything else in a run
directory is the trace of an interrupted run and is deleted and trained again.

Execution: in this process (workers=0), in `workers` spawned processes, or on an existing Dask
scheduler. Each worker gets max(1, cores // workers) numba threads and single-threaded BLAS, so the
machine is not oversubscribed and a run's numbers do not depend on the worker count. The numba
kernels are compiled (or loaded from the cache) once in this process first, so the workers do not
all compile them at once. A run that raises, diverges (non-finite loss) or takes its worker process
down is recorded as failed with its error, and the other runs go on. Only plain JSON-like values
(a config dict, a path string, a record dict) cross process boundaries.

Dask: a nanny starts its workers with MALLOC_TRIM_THRESHOLD_=65536 by default, which makes glibc
return (and the next step fault in again) every large numpy temporary; training runs about twice as
slow. Unset it in the Dask config the nannies start with: `MALLOC_TRIM_THRESHOLD_: null` under
`distributed: nanny: pre-spawn-environ:` in YAML, or `dask.config.set({"distributed.nanny.
pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})` around a LocalCluster.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fourier_toy import config as config_mod
from fourier_toy.config import Config
from fourier_toy.errors import CheckpointError, ConfigError

# numpy and numba (through fast, runs, training) are imported lazily, where a function needs them: a
# spawned worker loads them as it sets its thread limits (_limit_threads).

SWEEP, RESULTS, RUNS, FIGURES = "sweep.json", "results.jsonl", "runs", "figures"
# BLAS runs single-threaded in every run, whatever the number of workers. A multi-threaded BLAS may
# split a matrix product's reductions differently by thread count: with the numpy backend at the
# quick preset's sizes, 1 and 2 OpenBLAS threads give weights that differ after 10 steps, so a run
# would depend on how many workers shared its machine. (One thread was also 3-4x faster per run on
# a busy 2-core machine.) The thread budget max(1, cores // workers) goes to numba and OpenMP: the
# numba backend splits work by batch size only, so its results do not depend on its thread count.
BLAS_THREADS = 1
ID_LEN = 12


# ---- grid and expansion --------------------------------------------------------------------------

@dataclass
class Grid:
    preset: str
    base: dict  # config-file form: {"task": {...}, ..., "seed": int}
    axes: list[tuple[str, list]]  # (dotted key, values) in file order

    @property
    def keys(self) -> list[str]:
        return [k for k, _ in self.axes]

    def to_dict(self) -> dict:
        return {"preset": self.preset, "base": self.base, "grid": {k: v for k, v in self.axes}}


@dataclass
class Point:
    run_id: str
    values: dict  # grid key -> value at this point
    config: Config
    run_dir: Path | None = None  # set by run_sweep: OUT/runs/<run_id>


def run_id(cfg: Config) -> str:
    """12 hex digits of the SHA-256 of the resolved config's canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(canonical_json(cfg.to_dict()).encode("utf-8")).hexdigest()[:ID_LEN]


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def grid_from_dict(data: Any, where: str = "GRID") -> Grid:
    """Check the top level of a grid (types only; values are checked by `expand`)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table, got {type(data).__name__}")
    unknown = set(data) - {"preset", "base", "grid"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}; allowed: preset, base, grid")
    preset = data.get("preset", "quick")
    if not isinstance(preset, str) or preset not in config_mod.PRESETS:
        raise ConfigError(f"{where}: preset must be one of {', '.join(config_mod.PRESETS)}, got {preset!r}")
    base = data.get("base", {})
    if not isinstance(base, dict):
        raise ConfigError(f"{where}: [base] must be a table of config sections, got {type(base).__name__}")
    grid = data.get("grid", {})
    if not isinstance(grid, dict):
        raise ConfigError(f"{where}: [grid] must be a table of dotted keys to lists, got {type(grid).__name__}")
    axes = []
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"[grid] {key}: expected a non-empty list of values, got {values!r}")
        axes.append((key, list(values)))
    return Grid(preset, base, axes)


def load_grid(path) -> Grid:
    return grid_from_dict(config_mod.read_toml(path, "GRID"), f"GRID {str(path)!r}")


def expand(grid: Grid) -> list[Point]:
    """Every point of the grid, validated, in a stable order (file order, last key fastest)."""
    try:
        base = config_mod.from_dict(grid.base, config_mod.from_preset(grid.preset))
    except ConfigError as e:
        raise ConfigError(f"[base] {e}") from None
    points, seen = [], {}
    for combo in itertools.product(*(values for _, values in grid.axes)):
        values = dict(zip(grid.keys, combo))
        cfg = config_mod.from_dict({}, base)  # a copy
        for key, value in values.items():
            for k, v in _assignments(key, value):
                try:
                    config_mod.set_value(cfg, k, v)
                except ConfigError as e:
                    raise ConfigError(f"[grid] {key} = {value!r}: {e}") from None
        try:
            config_mod.validate(cfg)
        except ConfigError as e:
            raise ConfigError(f"[grid] point {describe_values(values)}: {e}") from None
        if cfg.train.max_seconds:
            # A time budget makes the weights depend on the machine's load, and a directory named by
            # the config would then not say what is inside.
            raise ConfigError(f"train.max_seconds: must be 0 in a sweep (a run must be a pure function of "
                              f"its config; use train.max_steps or train.max_epochs), got {cfg.train.max_seconds}")
        rid = run_id(cfg)
        if rid in seen:
            raise ConfigError(f"[grid] points {describe_values(seen[rid])} and {describe_values(values)} resolve to the "
                              "same config; remove the duplicate value")
        seen[rid] = values
        points.append(Point(rid, values, cfg))
    return points


def _assignments(key: str, value: Any) -> list[tuple[str, Any]]:
    """A grid value is one config value, or a table of dotted keys set together (a named
    condition such as {name = "fourier_frozen", "embedding.kind" = "fourier", ...}; "name" only
    labels it)."""
    if isinstance(value, dict):
        return [(k, v) for k, v in value.items() if k != "name"]
    return [(key, value)]


def describe_values(values: dict) -> str:
    return " ".join(f"{k}={show_value(v)}" for k, v in values.items()) or "(base)"


def show_value(value: Any) -> str:
    """A grid value as written in GRID.toml (strings bare, a condition table by its name)."""
    if isinstance(value, dict) and "name" in value:
        return str(value["name"])
    return value if isinstance(value, str) else json.dumps(value)


# ---- run directories -----------------------------------------------------------------------------

def finished_summary(run_dir: Path, cfg: Config | None = None) -> dict | None:
    """The run's summary if the run finished intact, else None (absent, interrupted or damaged).

    Raises CheckpointError when a finished run holds a different config than `cfg`: that directory
    was not written by this sweep and is not deleted.
    """
    from fourier_toy.runs.layout import CONFIG, MODEL, SUMMARY
    from fourier_toy.runs.tensors import load_tensors

    try:
        summary = json.loads((run_dir / SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or "stop_reason" not in summary or "step" not in summary:
        return None
    try:
        saved = json.loads((run_dir / CONFIG).read_text())
        _, meta = load_tensors(run_dir / MODEL)
    except (OSError, ValueError, CheckpointError):
        return None
    if not isinstance(saved, dict) or meta.get("step") != str(summary["step"]):
        return None
    if cfg is not None:
        saved.pop("derived", None)
        if canonical_json(saved) != canonical_json(cfg.to_dict()):
            raise CheckpointError(f"{run_dir}: holds a finished run of a different config; "
                                  "move it away or use another --out")
    return summary


def run_point(config: dict, run_dir: str, threads: int | dict | None = None) -> dict:
    """Train one grid point into `run_dir` (the task shipped to a worker); never raises.

    config: `Config.to_dict()`; threads: numba/OpenMP threads for this run (an int, a mapping from
    Dask worker address to int, or None to leave them as they are); BLAS runs single-threaded in
    any case (see BLAS_THREADS). Returns a plain record (see `run_record`).
    """
    t0 = time.perf_counter()
    try:
        _limit_threads(_threads_here(threads))
        from fourier_toy.training.loop import train

        cfg = config_mod.from_dict(config)
        out = Path(run_dir)
        summary = finished_summary(out, cfg)
        if summary is None:
            if out.exists():  # a retry after a worker died, or a stale partial run
                shutil.rmtree(out)
            with _single_threaded_blas():
                train(cfg, out, progress=False)
            summary = finished_summary(out, cfg)
            if summary is None:
                raise CheckpointError(f"{out}: training ended without a readable summary and model")
        return run_record(summary, seconds=time.perf_counter() - t0)
    except BaseException as e:  # noqa: BLE001 - a failed run is data; the sweep goes on
        if isinstance(e, KeyboardInterrupt):
            raise
        return {"status": "failed", "error": f"{type(e).__name__}: {e}", "seconds": time.perf_counter() - t0}


def run_record(summary: dict, seconds: float | None = None) -> dict:
    """The results.jsonl fields of a finished run's summary."""
    final = summary.get("final") or {}
    stop = summary.get("stop_reason")
    rec = {"status": "failed" if stop == "diverged" else "ok", "stop_reason": stop, "step": summary.get("step"),
           "error": f"diverged: non-finite loss at step {summary.get('step')}" if stop == "diverged" else None,
           "steps_to": summary.get("steps_to") or {}}
    for split in ("train", "val", "test"):
        rec[f"{split}_acc"] = (final.get(split) or {}).get("acc")
    if seconds is not None:
        rec["seconds"] = seconds
    return rec


# ---- threads -------------------------------------------------------------------------------------

def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    return max(1, (cores or available_cores()) // max(1, workers))


def _threads_here(threads: int | dict | None) -> int | None:
    if isinstance(threads, dict):  # per Dask worker address
        try:
            from distributed import get_worker

            return threads.get(get_worker().address, 1)
        except (ImportError, ValueError):
            return None
    return threads


def _limit_threads(n: int | None) -> None:
    """Give this process `n` numba/OpenMP threads and single-threaded BLAS (fast.limit_threads):
    the environment variables for libraries not loaded yet, threadpoolctl and numba.set_num_threads
    (per calling thread) for those already running (numpy's BLAS and numba, which the import of
    fourier_toy.fast loads, and a Dask worker's)."""
    if not n:
        return
    from fourier_toy.fast import limit_threads

    limit_threads(n, blas=BLAS_THREADS, environ=True)


@contextlib.contextmanager
def _single_threaded_blas():
    """BLAS at BLAS_THREADS for the duration (restored after): runs trained in this process give
    the same weights as runs trained in worker processes."""
    from fourier_toy.fast import limit_threads

    with limit_threads(blas=BLAS_THREADS):
        yield


def _init_worker(threads: int) -> None:
    # Ctrl-C reaches the whole process group. Only the parent acts on it (it drops the queue and
    # terminates the workers); a worker that caught it would report its run as failed and go on
    # to the next one.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _limit_threads(threads)


def _warm_numba(points: list[Point]) -> None:
    if any(p.config.model.backend == "numba" for p in points):
        from fourier_toy.fast import ENGINE

        ENGINE.warmup()


# ---- executors -----------------------------------------------------------------------------------
# Each yields (point, record) as runs end, in completion order.

def _run_inline(points, runner):
    for p in points:
        yield p, runner(p.config.to_dict(), str(p.run_dir), None)


def _pool(n: int, threads: int):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: a fresh interpreter; a forked child would start with this process's thread limits and
    # with thread pools (numba's, OpenMP's) that do not survive a fork.
    return ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(threads,))


def _run_local(points, runner, workers: int):
    """A pool of `workers` processes. When a process dies, the pool breaks and every run still in it
    fails with BrokenProcessPool; those runs are then tried again each in a process of its own, so
    only the run that takes its process down is recorded as failed. On Ctrl-C (or any other way
    out) the queue is dropped and the workers are terminated; their half-written runs are redone
    on restart."""
    from concurrent.futures import FIRST_COMPLETED, as_completed, wait
    from concurrent.futures.process import BrokenProcessPool

    n = min(workers, len(points))
    threads = threads_per_worker(n)
    died = {"status": "failed", "error": "worker process died (crashed or was killed) while training this run"}
    suspects = []
    ex = _pool(n, threads)
    try:
        futures = {ex.submit(runner, p.config.to_dict(), str(p.run_dir), threads): p for p in points}
        for fut in as_completed(futures):
            try:
                rec = fut.result()
            except BrokenProcessPool:
                suspects.append(futures[fut])
                continue
            yield futures[fut], rec
    except BaseException:
        _stop(ex)
        raise
    ex.shutdown(wait=True)
    running = {}
    try:
        while suspects or running:
            while suspects and len(running) < n:
                p = suspects.pop(0)
                ex = _pool(1, threads)
                running[ex.submit(runner, p.config.to_dict(), str(p.run_dir), threads)] = (p, ex)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                p, ex = running.pop(fut)
                try:
                    rec = fut.result()
                except BrokenProcessPool:
                    rec = dict(died)
                ex.shutdown(wait=True)
                yield p, rec
    finally:
        for _, ex in running.values():
            _stop(ex)


def _stop(ex) -> None:
    """Shut a process pool down now: queued runs are cancelled and running ones terminated."""
    # concurrent.futures before Python 3.14 has no public way to end running workers.
    procs = list((getattr(ex, "_processes", None) or {}).values())
    ex.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(timeout=10)
    ex.shutdown(wait=True)  # the pool's manager thread sees the dead workers and releases its queues


def _connect(scheduler):
    """A distributed.Client: `scheduler` is one already, or a scheduler address such as tcp://host:8786."""
    if hasattr(scheduler, "submit"):
        return scheduler, False
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError("--scheduler: needs the optional 'distributed' package "
                          "(pip install 'fourier_toy[dask]')") from None
    if not isinstance(scheduler, str) or "://" not in scheduler:
        raise ConfigError(f"--scheduler: expected an address like tcp://HOST:PORT, got {scheduler!r}")
    try:
        return Client(scheduler, timeout="15s"), True
    except (OSError, TimeoutError) as e:
        raise ConfigError(f"--scheduler: cannot connect to {scheduler} ({e})") from None


def _dask_threads(client) -> dict:
    """Worker address -> threads per run: the host's cores over the task slots on that host."""
    import inspect

    # Newer clients list only the first few workers unless asked for all.
    kw = {"n_workers": -1} if "n_workers" in inspect.signature(client.scheduler_info).parameters else {}
    info = client.scheduler_info(**kw)["workers"]
    cores = client.run(available_cores)
    slots: dict[str, int] = {}
    for w in info.values():
        slots[w["host"]] = slots.get(w["host"], 0) + w.get("nthreads", 1)
    return {addr: threads_per_worker(slots[w["host"]], cores.get(addr)) for addr, w in info.items()}


def _run_dask(points, runner, client):
    from distributed import as_completed

    threads = _dask_threads(client)
    futures = {client.submit(runner, p.config.to_dict(), str(p.run_dir), threads, pure=False): p for p in points}
    try:
        for fut in as_completed(futures):
            p = futures[fut]
            if fut.status == "finished":
                yield p, fut.result()
            else:  # e.g. KilledWorker: the run took down every worker it was tried on
                exc = fut.exception()
                yield p, {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    finally:
        for fut in futures:
            fut.release()


# ---- the sweep -----------------------------------------------------------------------------------

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
    client, own_client = _connect(scheduler) if scheduler is not None else (None, False)
    try:
        return _sweep(grid, points, out, workers, client, on_result, runner, t0, on_start)
    finally:
        if own_client:
            client.close()


def _sweep(grid, points, out, workers, client, on_result, runner, t0, on_start=None) -> SweepResult:
    from fourier_toy.runs.files import append_jsonl, atomic_write_json, atomic_write_text

    if out.exists() and not out.is_dir():
        raise CheckpointError(f"--out: {str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / SWEEP).is_file():
        raise CheckpointError(f"--out: {str(out)!r} is not empty and holds no {SWEEP}; refusing to write a "
                              "sweep into it")
    (out / RUNS).mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / SWEEP, {**grid.to_dict(), "keys": grid.keys,
                                    "runs": [{"id": p.run_id, "values": p.values} for p in points]})

    records: dict[str, dict] = {}
    pending = []
    for p in points:
        p.run_dir = out / RUNS / p.run_id
        summary = finished_summary(p.run_dir, p.config)
        if summary is not None:
            records[p.run_id] = {**run_record(summary), "reused": True}
        else:
            if p.run_dir.exists():
                shutil.rmtree(p.run_dir)  # interrupted: start over
            pending.append(p)

    if on_start is not None:
        on_start(len(pending), len(points) - len(pending))
    if not pending:
        stream = iter(())
    elif client is not None:
        _warm_numba(pending)  # helps workers that share this machine's numba cache
        stream = _run_dask(pending, runner, client)
    elif workers == 0:
        stream = _run_inline(pending, runner)
    else:
        _warm_numba(pending)
        stream = _run_local(pending, runner, workers)
    done = 0
    for p, rec in stream:
        rec = {"id": p.run_id, "values": p.values, **rec, "reused": False}
        records[p.run_id] = rec
        append_jsonl(out / RESULTS, rec)
        done += 1
        if on_result is not None:
            on_result({**rec, "index": done, "total": len(pending)})

    ordered = [{"id": p.run_id, "values": p.values, **records[p.run_id]} for p in points]
    atomic_write_text(out / RESULTS, "".join(canonical_json(_jsonable(r)) + "\n" for r in ordered))
    return SweepResult(out, ordered, n_ran=len(pending), n_reused=len(points) - len(pending),
                       seconds=time.perf_counter() - t0)


def _jsonable(rec: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()}


def format_record(rec: dict) -> str:
    """One progress line for a run's record."""
    head = f"[{rec.get('index', '?')}/{rec.get('total', '?')}] {rec['id']} {describe_values(rec.get('values', {}))}"
    if rec["status"] != "ok":
        return f"{head}: FAILED {rec.get('error')}"
    line = f"{head}: {rec.get('stop_reason')} at step {rec.get('step')}"
    if rec.get("test_acc") is not None:
        line += f", test acc {rec['test_acc']:.4f}"
    if rec.get("seconds") is not None:
        line += f" ({rec['seconds']:.1f} s)"
    return line
