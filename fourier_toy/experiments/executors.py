"""A sweep's executors: the ways its pending points are trained, each yielding (point, record) as
runs end, in completion order.

Execution: in this process (workers=0), in `workers` spawned processes, or on an existing Dask
scheduler. Each run goes through workers.guarded_run (the run's lock, the parent check) with the
thread share of workers.py. The numba kernels are compiled (or loaded from the cache) once in this
process first, so the workers do not all compile them at once. A run that raises, diverges
(non-finite loss) or takes its worker process down is recorded as failed with its error, and the
other runs go on. Only plain JSON-like values (a config dict, a path string, a record dict) cross
process boundaries.

Dask: a nanny starts its workers with MALLOC_TRIM_THRESHOLD_=65536 by default, which makes glibc
return (and the next step fault in again) every large numpy temporary; training runs about twice as
slow. Unset it in the Dask config the nannies start with: `MALLOC_TRIM_THRESHOLD_: null` under
`distributed: nanny: pre-spawn-environ:` in YAML, or `dask.config.set({"distributed.nanny.
pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})` around a LocalCluster.
"""

from __future__ import annotations

import os

from fourier_toy.errors import ConfigError
from fourier_toy.experiments.grid import Point
from fourier_toy.experiments.workers import available_cores, guarded_run, init_worker, threads_per_worker


def run_points(points: list[Point], runner, workers: int, client=None):
    """(point, record) for each of `points` as its run ends: on the Dask `client` when given, in
    this process when workers == 0, else in a pool of `workers` processes."""
    if not points:
        return iter(())
    if client is not None:
        _warm_numba(points)  # helps workers that share this machine's numba cache
        return _run_dask(points, runner, client)
    if workers == 0:
        return _run_inline(points, runner)
    _warm_numba(points)
    return _run_local(points, runner, workers)


def _warm_numba(points: list[Point]) -> None:
    if any(p.config.model.backend == "numba" for p in points):
        from fourier_toy.fast import ENGINE

        ENGINE.warmup()


# ---- in this process and local processes ---------------------------------------------------------

def _run_inline(points, runner):
    for p in points:
        yield p, guarded_run(runner, p.config.to_dict(), str(p.run_dir), None)


def _pool(n: int, threads: int):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: a fresh interpreter; a forked child would start with this process's thread limits and
    # with thread pools (numba's, OpenMP's) that do not survive a fork.
    return ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"),
                               initializer=init_worker, initargs=(threads, os.getpid()))


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
        futures = {ex.submit(guarded_run, runner, p.config.to_dict(), str(p.run_dir), threads, os.getpid()): p
                   for p in points}
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
                running[ex.submit(guarded_run, runner, p.config.to_dict(), str(p.run_dir), threads,
                                  os.getpid())] = (p, ex)
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


# ---- Dask ----------------------------------------------------------------------------------------

def connect(scheduler):
    """A distributed.Client: `scheduler` is one already, or a scheduler address such as tcp://host:8786.
    Returns (client, whether the caller owns it and closes it)."""
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
    futures = {client.submit(guarded_run, runner, p.config.to_dict(), str(p.run_dir), threads, pure=False): p
               for p in points}
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
