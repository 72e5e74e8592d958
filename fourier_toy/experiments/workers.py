"""A sweep's workers: thread limits, worker start-up, the parent-death watchdog, and the lock files
that keep a run (and a sweep directory) to one process at a time.

Each worker gets max(1, cores // workers) numba threads and single-threaded BLAS, so the machine is
not oversubscribed and a run's numbers do not depend on the worker count.

Worker lifecycle and locks: a pool worker whose sweep process is killed (SIGKILL, OOM) would
otherwise live on: it still holds both ends of the task queue, so it trains the run queued next into
the sweep directory and then waits for work forever (and keeps multiprocessing's resource tracker
alive). Each worker runs a watchdog thread that ends the process within WATCH_SECONDS of its
parent's death (the parent pid, given at start, is no longer its parent: it was re-parented to init
or a subreaper), and checks again before each run. The training kernels release the GIL, so the
thread gets to run. Every run is trained under an exclusive lock (fcntl.flock on OUT/.locks/<id>,
which the kernel drops when its holder dies), and a sweep under OUT/.locks/sweep, holding its pid: a
rerun never trains or deletes a run that a leftover worker is still writing, and two sweeps never
share an OUT. Without fcntl (Windows) there are no locks; the watchdog still ends orphaned workers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from fourier_toy.errors import CheckpointError

# numpy and numba (through fast) are imported lazily, where a function needs them: a spawned worker
# loads them as it sets its thread limits (limit_threads).

# BLAS runs single-threaded in every run, whatever the number of workers. A multi-threaded BLAS may
# split a matrix product's reductions differently by thread count: with the numpy backend at the
# quick preset's sizes, 1 and 2 OpenBLAS threads give weights that differ after 10 steps, so a run
# would depend on how many workers shared its machine. (One thread was also 3-4x faster per run on
# a busy 2-core machine.) The thread budget max(1, cores // workers) goes to numba and OpenMP: the
# numba backend splits work by batch size only, so its results do not depend on its thread count.
BLAS_THREADS = 1
WATCH_SECONDS = 0.2
LOCKS = ".locks"
LOCK_WAIT_SECONDS = 30.0  # how long a run waits for another process's lock on it (a dying orphan)


# ---- threads -------------------------------------------------------------------------------------

def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    return max(1, (cores or available_cores()) // max(1, workers))


def threads_here(threads: int | dict | None) -> int | None:
    """This worker's share of `threads`: an int, or a mapping from Dask worker address to int."""
    if isinstance(threads, dict):  # per Dask worker address
        try:
            from distributed import get_worker

            return threads.get(get_worker().address, 1)
        except (ImportError, ValueError):
            return None
    return threads


def limit_threads(n: int | None) -> None:
    """Give this process `n` numba/OpenMP threads and single-threaded BLAS (fast.limit_threads):
    the environment variables for libraries not loaded yet, threadpoolctl and numba.set_num_threads
    (per calling thread) for those already running (numpy's BLAS and numba, which the import of
    fourier_toy.fast loads, and a Dask worker's)."""
    if not n:
        return
    from fourier_toy.fast import limit_threads as fast_limit_threads

    fast_limit_threads(n, blas=BLAS_THREADS, environ=True)


@contextlib.contextmanager
def single_threaded_blas():
    """BLAS at BLAS_THREADS for the duration (restored after): runs trained in this process give
    the same weights as runs trained in worker processes."""
    from fourier_toy.fast import limit_threads as fast_limit_threads

    with fast_limit_threads(blas=BLAS_THREADS):
        yield


# ---- worker lifecycle ----------------------------------------------------------------------------

def init_worker(threads: int, parent: int | None = None) -> None:
    """A pool worker's start-up: ignore Ctrl-C, watch the parent `parent`, limit the threads."""
    # Ctrl-C reaches the whole process group. Only the parent acts on it (it drops the queue and
    # terminates the workers); a worker that caught it would report its run as failed and go on
    # to the next one.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None:
        _watch_parent(parent)
    limit_threads(threads)


def _parent_gone(parent: int | None) -> bool:
    return parent is not None and os.getppid() != parent


def _watch_parent(parent: int) -> None:
    import threading

    def watch():
        while not _parent_gone(parent):
            time.sleep(WATCH_SECONDS)
        os._exit(1)  # mid-run: the half-written run is redone on restart

    if _parent_gone(parent):
        os._exit(1)
    threading.Thread(target=watch, name="sweep-parent-watchdog", daemon=True).start()


def guarded_run(runner, config: dict, run_dir: str, threads=None, parent: int | None = None) -> dict:
    """The task a worker runs: `runner` under the run's lock, never after the sweep process died."""
    if _parent_gone(parent):
        os._exit(1)
    d = Path(run_dir)
    lock = file_lock(lock_path(d.parent.parent, d.name), f"run {d.name}", wait=LOCK_WAIT_SECONDS)
    try:
        lock.__enter__()
    except (CheckpointError, OSError) as e:  # recorded as the run's failure, like any other
        return {"status": "failed", "error": f"{type(e).__name__}: {e}"}
    try:
        return runner(config, run_dir, threads)
    finally:
        lock.__exit__(None, None, None)


# ---- locks ---------------------------------------------------------------------------------------

def lock_path(out: Path, name: str) -> Path:
    """OUT/.locks/<name> (the directory is created): `name` is a run id, or "sweep"."""
    (out / LOCKS).mkdir(parents=True, exist_ok=True)
    return out / LOCKS / name


@contextlib.contextmanager
def file_lock(path: Path, what: str, wait: float = 0.0):
    """Hold an exclusive lock on `path` (writing this pid into it) for the duration. Waits up to
    `wait` seconds for another holder, then raises CheckpointError naming its pid."""
    try:
        import fcntl
    except ImportError:  # no flock: no locking
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
                    raise CheckpointError(f"{what}: in use by process {holder} (still running); "
                                          "wait for it to end or stop it") from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
