"""The thread policy of the hot path: a small pool of Python threads and single-threaded BLAS.

The model's hot path (a training step, an evaluation batch, the optimizer step) splits its work
into pieces that run on the caller's thread plus `threads() - 1` pool threads. Inside a piece
every kernel is serial and BLAS runs single-threaded, so the only synchronization is one
blocking wait at the end of a step. Thread pools that spin while waiting for work (OpenMP's and
OpenBLAS's) are kept out of the hot path: on a shared machine two such pools of 2 threads each can
slow a step down by 10-40x, and even on an idle one they pay a wake-up per matmul. The number of
pieces depends only on the batch size, never on the thread count, so results are bit-identical
for any number of threads. numba's own parallel layer (prange) serves only the op-by-op kernels
of kernels.py, used outside the hot path (hooks, direct calls).
"""

from __future__ import annotations

import os
import threading

__all__ = ["run_tasks", "single_threaded_blas", "threads"]

_pool = None
_pool_size = 0
_pool_pid = 0
_pool_lock = threading.Lock()
_blas = None
_blas_saved: list = []
_blas_depth = 0
_blas_lock = threading.Lock()


def threads() -> int:
    """The thread budget of the hot path: numba's thread count for the calling thread (set by
    NUMBA_NUM_THREADS or numba.set_num_threads, as the sweep executor does)."""
    import numba

    return max(1, int(numba.get_num_threads()))


def run_tasks(tasks, n_threads: int | None = None) -> list:
    """Run zero-argument callables, task k on thread k % n; returns their results in order.

    The caller's thread runs its share itself; an exception in any task is raised here after
    all tasks have finished. BLAS is limited to one thread while the tasks run.
    """
    global _pool, _pool_size, _pool_pid
    n = min(len(tasks), n_threads if n_threads is not None else threads())
    if n <= 1:
        with single_threaded_blas():
            return [t() for t in tasks]
    with _pool_lock:
        # A forked child inherits the pool object but none of its threads: it makes its own.
        if _pool is None or _pool_size < n - 1 or _pool_pid != os.getpid():
            from concurrent.futures import ThreadPoolExecutor

            # The old pool is left to finish whatever it runs; its idle threads exit with it.
            if _pool is not None and _pool_pid == os.getpid():
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=n - 1, thread_name_prefix="fourier_toy")
            _pool_size, _pool_pid = n - 1, os.getpid()
        pool = _pool

    def share(j):
        return [tasks[k]() for k in range(j, len(tasks), n)]

    with single_threaded_blas():
        futures = [pool.submit(share, j) for j in range(1, n)]
        try:
            mine = share(0)
        finally:
            done = [f.exception() for f in futures]  # waits for every thread
        errors = [e for e in done if e is not None]
        if errors:
            raise errors[0]
    shares = [mine] + [f.result() for f in futures]
    return [shares[k % n][k // n] for k in range(len(tasks))]


class single_threaded_blas:
    """Context manager: the BLAS libraries loaded at its first use (numpy's, which the fused
    path's matmuls run on) limited to one thread, restored when the last of any concurrently
    open contexts exits.

    Uses threadpoolctl when it is installed; without it BLAS keeps its threads (correct, slower
    on a busy machine)."""

    def __enter__(self):
        global _blas, _blas_saved, _blas_depth
        with _blas_lock:
            if _blas is None:
                try:
                    from threadpoolctl import ThreadpoolController

                    _blas = ThreadpoolController().select(user_api="blas").lib_controllers
                except Exception:  # threadpoolctl absent or unusable
                    _blas = []
            if _blas_depth == 0:
                _blas_saved = [(lib, lib.num_threads) for lib in _blas]
                for lib, n in _blas_saved:
                    if n != 1:
                        lib.set_num_threads(1)
            _blas_depth += 1
        return self

    def __exit__(self, *exc):
        global _blas_depth
        with _blas_lock:
            _blas_depth -= 1
            if _blas_depth == 0:
                for lib, n in _blas_saved:
                    if n != 1:
                        lib.set_num_threads(n)
        return False

