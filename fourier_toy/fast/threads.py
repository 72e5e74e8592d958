"""The thread policy of the hot path: a small pool of Python threads and single-threaded BLAS.

The model's hot path (a training step, an evaluation batch, the optimizer step) splits its work
into pieces that run on the caller's thread plus `threads() - 1` pool threads. Inside a piece
every kernel is serial and BLAS runs single-threaded, so the only synchronization is one wait at
the end of each hand-off, and in a training step one `barrier` between the pieces and the
gradient sum (fused_step.py). Thread pools that spin long while waiting for work (OpenMP's and
OpenBLAS's) are kept out of the hot path: on a shared machine two such pools of 2 threads each can
slow a step down by 10-40x, and even on an idle one they pay a wake-up per matmul. Our own pool
spins for at most SPIN_SECONDS per wait (see _SpinPool), then sleeps. The number of
pieces depends only on the batch size, never on the thread count, so results are bit-identical
for any number of threads. numba's own parallel layer (prange) is not used (see jit.py).

`limit_threads` is the one place where thread counts are set: BLAS's, OpenMP's and numba's (the
hot path's budget), for the hot path's single-threaded BLAS, the sweep's workers and the benchmark.
"""

from __future__ import annotations

import os
import threading

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from fourier_toy.fast.jit import jit

__all__ = ["BLAS_ENV", "MIN_SLICE", "OPENMP_ENV", "SPIN_SECONDS", "ThreadLimits", "barrier", "barrier_iterations",
           "inline", "limit_threads", "post", "post_handle", "run_sliced", "run_tasks", "slice_bounds",
           "single_threaded_blas", "threads", "wait"]

_pool = None
_pool_lock = threading.Lock()
_inline = threading.local()
_calls = threading.local()  # .handle: the post a caller's first task makes (run_tasks' first_posts)
_NO_POST = (np.zeros(0, dtype=np.int64), 0, 0)
_blas = None
_blas_limits = None
_blas_depth = 0
_blas_lock = threading.Lock()
SPIN_SECONDS = 1e-3  # how long a waiting thread spins before it sleeps
# Elementwise work (the gradient sum, AdamW) is cut into slices of at least this many entries,
# one per thread. That work streams buffers the pieces have pushed out of cache, so two cores'
# bandwidth beats one even for S's 167k parameters (by 1-5%, against a hand-off of about 30 us).
MIN_SLICE = 1 << 15


def threads() -> int:
    """The thread budget of the hot path: numba's thread count for the calling thread (set by
    NUMBA_NUM_THREADS or numba.set_num_threads, as the sweep executor does)."""
    import numba

    return max(1, int(numba.get_num_threads()))


def run_tasks(tasks, n_threads: int | None = None, first_posts: bool = False) -> list:
    """Run zero-argument callables, task k on thread k % n; returns their results in order.

    The caller's thread runs its share itself; an exception in any task is raised here after
    all tasks have finished. BLAS is limited to one thread while the tasks run. A call made while
    the pool serves another one (from another thread, or from inside a task) runs its tasks on
    the calling thread, in order: a task's result does not depend on where it runs.

    first_posts: task 0 hands the other tasks to the workers itself, from numba code that has let
    go of the GIL, with post(*post_handle()) (post_handle() read by task 0, on the caller's
    thread). A worker that sees its task posted then finds the GIL free: posted from Python, it
    would wait for the caller to let go of the GIL, and be woken by the system (tens of us).
    Without that call the workers start when task 0 has finished.
    """
    n = min(len(tasks), n_threads if n_threads is not None else threads())
    pool = _get_pool(n - 1) if n > 1 else None
    if pool is not None:
        n = min(n, pool.workers + 1)
    if pool is None or not pool.lock.acquire(blocking=False):
        with single_threaded_blas():
            depth = getattr(_inline, "depth", 0)
            _inline.depth = depth + 1
            try:
                return [t() for t in tasks]
            finally:
                _inline.depth = depth
    try:
        with single_threaded_blas():
            shares = pool.run(tasks, n, first_posts)
    finally:
        pool.lock.release()
    errors = [s for s in shares if isinstance(s, _Failed)]
    if errors:
        raise errors[0].error
    return [shares[k % n][k // n] for k in range(len(tasks))]


def slice_bounds(size: int) -> list[int]:
    """Where elementwise work over `size` entries (the gradient sum, AdamW) is cut: one slice per
    thread, each of at least MIN_SLICE entries, and at least one slice."""
    k = min(threads(), max(1, size // MIN_SLICE))
    return [size * j // k for j in range(k + 1)]


def run_sliced(fn, size: int) -> None:
    """fn(lo, hi) for the slices of slice_bounds(size), one per thread."""
    cuts = slice_bounds(size)
    run_tasks([(lambda j=j: fn(cuts[j], cuts[j + 1])) for j in range(len(cuts) - 1)], len(cuts) - 1)


def post_handle() -> tuple:
    """(state, n, epoch) for post(), to task 0 of a run_tasks(..., first_posts=True) call; a
    handle that posts nothing to any other caller."""
    return getattr(_calls, "handle", None) or _NO_POST


@jit
def post(state, n, epoch):
    """Posts call number `epoch` to workers 1..n-1 (see run_tasks' first_posts)."""
    for j in range(1, n):
        _store_release(state, j, epoch)


def inline() -> bool:
    """Whether the calling thread is running a call's tasks one after another (a task of one
    may not wait for another's: that one has not started)."""
    return getattr(_inline, "depth", 0) > 0


def barrier_iterations() -> int:
    """How many iterations of barrier()'s spin on two threads last about SPIN_SECONDS."""
    return _get_pool(0).barrier_spin


def _get_pool(workers: int) -> _SpinPool:
    global _pool
    with _pool_lock:
        # A forked child inherits the pool object but none of its threads: it makes its own.
        if _pool is None or _pool.pid != os.getpid():
            _pool = _SpinPool()
        _pool.grow(workers)
        return _pool


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def _share(tasks, j: int, n: int):
    try:
        return [tasks[k]() for k in range(j, len(tasks), n)]
    except BaseException as e:  # re-raised by the caller of run_tasks
        return _Failed(e)


class _SpinPool:
    """Daemon worker threads 1, 2, ... that each take a share of a call's tasks.

    Hand-offs go through one int64 array: for worker j, state[j] is the number of the last call
    (its epoch) posted to it and state[size + j] the last one it finished. Whoever waits (a worker
    for its next call, the caller for the workers) first spins on that number without the GIL for
    SPIN_SECONDS, then sleeps on a condition. A sleeping thread on a virtual machine takes 50-400
    us to wake up, a few times per training step; spinning briefly keeps the threads awake across
    the back-to-back calls of a training loop, and the short limit keeps an idle pool from holding
    a core (unlike OpenMP's and OpenBLAS's pools, see the module doc). Only the workers a call
    uses are woken.

    A worker publishes a finished call from numba, after it has let go of the GIL, so that the
    caller spinning on it does not then wait for the GIL; it notifies only a caller that sleeps.
    A caller asleep on `finished` looks again every SPIN_SECONDS in any case: a worker may have
    published just as the caller fell asleep, unseen. A post made from numba (run_tasks'
    first_posts) notifies no one either: before task 0 starts, the caller wakes the workers and
    marks the post pending, and until task 0 has finished no worker goes to sleep.
    """

    def __init__(self):
        import numba

        self.pid = os.getpid()
        # threads() never exceeds NUMBA_NUM_THREADS; a call asking for more threads gets this many.
        self.size = max(2, int(numba.config.NUMBA_NUM_THREADS), os.cpu_count() or 1)
        self.state = np.zeros(2 * self.size, dtype=np.int64)
        self.workers = 0
        self.epoch = 0
        self.lock = threading.Lock()  # held by the caller being served
        self.posted = threading.Condition()
        self.finished = threading.Condition()
        self.caller_sleeping = False  # the caller waits on `finished`
        self.pending = False  # task 0 is to post from numba: the workers do not sleep (under `posted`)
        self.jobs: list = [None] * self.size
        self.shares: list = [None] * self.size
        self.spin = _spin_iterations()
        self.barrier_spin = _barrier_iterations()

    def grow(self, workers: int) -> None:
        for j in range(self.workers + 1, min(workers, self.size - 1) + 1):
            threading.Thread(target=self._work, args=(j,), daemon=True, name=f"fourier_toy_{j}").start()
            self.workers = j

    def run(self, tasks, n: int, first_posts: bool = False) -> list:
        state, spin, done = self.state, self.spin, self.size
        self.epoch += 1
        epoch = self.epoch
        for j in range(1, n):
            self.jobs[j] = (tasks, n)
        if first_posts:
            _calls.handle = (state, n, epoch)
            with self.posted:  # the workers spin, and do not sleep, until the post comes
                self.pending = True
                self.posted.notify_all()
        else:
            self._post(n, epoch)
        try:
            self.shares[0] = _share(tasks, 0, n)
        finally:  # every worker has finished this call before the caller goes on
            if first_posts:
                _calls.handle = None
                with self.posted:
                    self.pending = False
                self._post(n, epoch)  # the same epoch again, in case task 0 raised before posting
            for j in range(1, n):
                if not _spin_while(state, done + j, epoch, False, spin):
                    with self.finished:
                        self.caller_sleeping = True
                        while state[done + j] != epoch:
                            self.finished.wait(SPIN_SECONDS)
                        self.caller_sleeping = False
        shares = self.shares[:n]
        self.jobs[1:n] = [None] * (n - 1)  # let go of the tasks and their results
        self.shares[:n] = [None] * n
        return shares

    def _post(self, n: int, epoch: int) -> None:
        for j in range(1, n):
            self.state[j] = epoch
        with self.posted:
            self.posted.notify_all()

    def _work(self, j: int) -> None:
        state, spin, done = self.state, self.spin, self.size
        seen = 0
        while True:
            posted = _publish_and_spin(state, done + j, seen, j, spin)
            while not posted:  # woken up, it spins again: a post may come from numba, unnotified
                with self.posted:
                    if state[j] == seen and not self.pending:
                        self.posted.wait()
                posted = _spin_while(state, j, seen, True, spin)
            seen = int(state[j])
            tasks, n = self.jobs[j]
            self.shares[j] = _share(tasks, j, n)
            if self.caller_sleeping:
                state[done + j] = seen
                with self.finished:
                    self.finished.notify_all()


@intrinsic
def _load_acquire(typingctx, arr, i):
    """arr[i] of a 1-D int64 array, read with an atomic acquire load: the compiler may neither
    hoist it out of a loop nor move later reads before it."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64 and arr.ndim == 1):
        return None
    sig = types.int64(arr, types.intp)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, signature.args[0], ary, [args[1]])
        return builder.load_atomic(ptr, "acquire", 8)

    return sig, codegen


@intrinsic
def _store_release(typingctx, arr, i, value):
    """arr[i] = value for a 1-D int64 array, as an atomic release store: every write made before
    it is visible to a thread that reads the value with _load_acquire."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64 and arr.ndim == 1):
        return None
    sig = types.void(arr, types.intp, types.int64)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, signature.args[0], ary, [args[1]])
        builder.store_atomic(args[2], ptr, "release", 8)
        return context.get_dummy_value()

    return sig, codegen


@jit
def barrier(sync, j, n, count, iters):
    """Thread j of n reaches barrier number `count` (counts only grow): sets sync[j] = count, then
    looks whether sync[0:n] have all reached it, again up to iters times (spinning, without the
    GIL). Returns whether they have; a caller that gets False must not rely on the other threads'
    work, nor they on its work after the barrier."""
    _store_release(sync, j, count)
    spun = 0
    while True:
        lowest = count
        for i in range(n):
            lowest = min(lowest, _load_acquire(sync, i))
        if lowest >= count:
            return True
        if spun >= iters:
            return False
        spun += 1


@jit
def wait(sync, j, n, count, iters):
    """barrier() that never gives up: after each spin of iters looks it lets the system run another
    thread (sched_yield), so that a thread that waits for one not running (more threads than
    cores) gives it the core. For threads that are all running this call's tasks, never for a
    call run inline (run_tasks), where the others start only when this one has returned."""
    while not barrier(sync, j, n, count, iters):
        _sched_yield()


@intrinsic
def _sched_yield(typingctx):
    """POSIX sched_yield(), called from numba code without the GIL."""
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        return builder.call(fn, [])

    return types.int32(), codegen


@jit
def _spin_while(state, i, value, equal, iters):
    """Spins while (state[i] == value) == equal, at most iters times (without the GIL);
    returns whether the condition ended."""
    for _ in range(iters):
        if (_load_acquire(state, i) == value) != equal:
            return True
    return False


@jit
def _publish_and_spin(state, at, seen, i, iters):
    """state[at] = seen (a release store: the call `seen` is finished), then _spin_while(state, i,
    seen, True, iters): waits for the next call."""
    _store_release(state, at, seen)
    return _spin_while(state, i, seen, True, iters)


def _iterations(spin) -> int:
    """How many iterations of a spin loop last SPIN_SECONDS on this machine; spin(n) runs one
    that never ends early for n iterations."""
    import time

    spin(1000)  # compiled (or loaded from the cache) first
    n = 1 << 16
    t = time.perf_counter()
    spin(n)
    dt = max(time.perf_counter() - t, 1e-9)
    return max(1000, int(n * SPIN_SECONDS / dt))


def _spin_iterations() -> int:
    """For _spin_while: state[0] stays 0."""
    probe = np.zeros(1, dtype=np.int64)
    return _iterations(lambda n: _spin_while(probe, 0, 0, True, n))


def _barrier_iterations() -> int:
    """For barrier() on two threads: sync[1] stays 0."""
    sync = np.zeros(2, dtype=np.int64)
    return _iterations(lambda n: barrier(sync, 0, 2, 1, n))


class single_threaded_blas:
    """Context manager: the BLAS libraries loaded at its first use (numpy's, which the fused
    path's matmuls run on) limited to one thread, restored when the last of any concurrently
    open contexts exits.

    Uses threadpoolctl when it is installed; without it BLAS keeps its threads (correct, slower
    on a busy machine)."""

    def __enter__(self):
        global _blas, _blas_limits, _blas_depth
        with _blas_lock:
            if _blas is None:
                # Looked up once: a lookup costs about 0.2 ms, and this runs at every hand-off.
                _blas = _thread_pools("blas")
            if _blas_depth == 0:
                _blas_limits = limit_threads(blas=1, pools=_blas)
            _blas_depth += 1
        return self

    def __exit__(self, *exc):
        global _blas_depth
        with _blas_lock:
            _blas_depth -= 1
            if _blas_depth == 0:
                _blas_limits.restore()
        return False


# ---- thread limits ------------------------------------------------------------------------------
# Read by each library when it loads, so they reach the libraries not loaded yet: the BLAS
# libraries (OpenBLAS, MKL, BLIS, Accelerate), then the OpenMP runtimes. NUMBA_NUM_THREADS is not
# among them: numba, which this module imports, has read it already, and once its threads have
# started it fails its next compilation if the variable has changed. numba.set_num_threads sets its
# count instead.
BLAS_ENV = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
OPENMP_ENV = ("OMP_NUM_THREADS",)


def limit_threads(n: int | None = None, blas: int | None = None, environ: bool = False,
                  pools: list | None = None) -> ThreadLimits:
    """Limit this process's threads: `n` for numba, whose count on the calling thread is the hot
    path's budget (threads()), and for the OpenMP runtimes; `blas` for the BLAS libraries. None
    leaves that part as it is. Returns the counts it changed, as a ThreadLimits that restores them.

    Loaded libraries are limited through threadpoolctl (without it, only the environment acts):
    those of `pools` (threadpoolctl's library controllers, as _thread_pools gives them), by default
    every one loaded now. environ: also set the environment variables that libraries read when
    they load (BLAS_ENV, OPENMP_ENV), for those not loaded yet, in this process and the ones it
    starts; they are not restored.
    """
    if environ:
        os.environ.update({**{v: str(blas) for v in BLAS_ENV if blas is not None},
                           **{v: str(n) for v in OPENMP_ENV if n is not None}})
    changed = []
    for lib in _thread_pools() if pools is None else pools:
        limit = {"blas": blas, "openmp": n}.get(lib.user_api)
        if limit is not None:
            before = lib.num_threads
            if before != limit:
                lib.set_num_threads(limit)
                changed.append((lib, before))
    numba_before = None
    if n is not None:
        import numba

        numba_before = numba.get_num_threads()
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    return ThreadLimits(changed, numba_before)


class ThreadLimits:
    """What limit_threads changed, as it was: restore() sets it back, as does the end of a `with`
    block. pools: (threadpoolctl library controller, its thread count before); numba_threads:
    numba's count on the calling thread before, or None."""

    def __init__(self, pools: list, numba_threads: int | None):
        self.pools, self.numba_threads = pools, numba_threads

    def restore(self) -> None:
        for lib, n in self.pools:
            lib.set_num_threads(n)
        if self.numba_threads is not None:
            import numba

            numba.set_num_threads(self.numba_threads)

    def __enter__(self) -> ThreadLimits:
        return self

    def __exit__(self, *exc) -> bool:
        self.restore()
        return False


def _thread_pools(user_api: str | None = None) -> list:
    """threadpoolctl's controllers of the thread-pool libraries loaded now, those of one user_api
    ("blas", "openmp") if given; none when threadpoolctl is absent or unusable."""
    try:
        from threadpoolctl import ThreadpoolController

        found = ThreadpoolController()
        return (found.select(user_api=user_api) if user_api else found).lib_controllers
    except Exception:  # threadpoolctl absent or unusable
        return []

