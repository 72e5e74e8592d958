"""The thread policy of the hot path (threads.py): the task pool and single-threaded BLAS."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fourier_toy.fast.adamw import adamw_update
from fourier_toy.fast import op_kernels as kernels
from fourier_toy.fast import threads
from fourier_toy.errors import DataError


def test_run_tasks_returns_results_in_order_and_raises_task_errors():
    import threading

    names = threads.run_tasks([(lambda i=i: (i, threading.current_thread().name)) for i in range(5)], 2)
    assert [r[0] for r in names] == list(range(5))
    assert names[0][1] == names[2][1] == threading.current_thread().name  # the caller runs its share
    assert names[1][1] != names[0][1]

    def boom():
        raise DataError("boom")

    with pytest.raises(DataError, match="boom"):
        threads.run_tasks([lambda: 1, boom, lambda: 3], 2)


@settings(max_examples=40, deadline=None)
@given(n_tasks=st.integers(0, 9), n_threads=st.integers(1, 5), fail_at=st.none() | st.integers(0, 8))
def test_run_tasks_is_a_map_for_any_thread_count(n_tasks, n_threads, fail_at):
    # n_threads above the pool's size (this machine's threads) is capped, not an error.
    tasks = [(lambda i=i: i * i if i != fail_at else 1 // 0) for i in range(n_tasks)]
    if fail_at is not None and fail_at < n_tasks:
        with pytest.raises(ZeroDivisionError):
            threads.run_tasks(tasks, n_threads)
    else:
        assert threads.run_tasks(tasks, n_threads) == [i * i for i in range(n_tasks)]


def test_run_tasks_nested_and_concurrent_calls_run_inline():
    import threading

    # A task that calls run_tasks finds the pool busy and runs the inner tasks itself.
    inner = threads.run_tasks([lambda: threads.run_tasks([lambda: 1, lambda: 2], 2), lambda: 3], 2)
    assert inner == [[1, 2], 3]
    results, errors = {}, []

    def caller(c):
        try:
            results[c] = [threads.run_tasks([(lambda i=i: c * 100 + i) for i in range(4)], 2) for _ in range(200)]
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    callers = [threading.Thread(target=caller, args=(c,)) for c in range(3)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in callers)  # a lost wake-up would hang
    for c in range(3):
        assert results[c] == [[c * 100 + i for i in range(4)]] * 200


def test_a_sleeping_worker_wakes_for_the_next_call():
    import time

    assert threads.run_tasks([lambda: 1, lambda: 2], 2) == [1, 2]
    time.sleep(20 * threads.SPIN_SECONDS)  # the worker has stopped spinning and sleeps
    assert threads.run_tasks([lambda: 3, lambda: 4], 2) == [3, 4]


def test_spin_while_stops_when_the_value_changes_or_the_budget_ends():
    state = np.array([5, 7], dtype=np.int64)
    assert threads._spin_while(state, 0, 3, True, 10)  # "while state[0] == 3" ends at once
    assert threads._spin_while(state, 1, 7, False, 10)  # "while state[1] != 7" ends at once
    assert not threads._spin_while(state, 0, 5, True, 1000)  # state[0] stays 5
    assert not threads._spin_while(state, 1, 5, False, 1000)  # state[1] stays 7
    assert threads._spin_iterations() >= 1000


def test_single_threaded_blas_restores_the_thread_count():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threads.single_threaded_blas():
        pass
    # The libraries it controls: numpy's BLAS (loaded when it is first used), which the fused
    # path's matmuls run on; a BLAS loaded later by another package is not the hot path's.
    mine = {lib.filepath for lib in threads._blas}
    assert mine

    def counts():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["filepath"] in mine]

    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = counts()
        with threads.single_threaded_blas():
            with threads.single_threaded_blas():  # nested: the outer context restores
                pass
            inside = counts()
        after = counts()
    assert inside == [1] * len(before) and after == before


def test_adamw_slices_give_the_same_bits_as_one_pass():
    rng = np.random.default_rng(5)
    n = 3 * threads.MIN_SLICE + 7  # several slices
    p = rng.standard_normal(n).astype(np.float32)
    g, decay = rng.standard_normal(n).astype(np.float32), (rng.random(n) < 0.5).astype(np.float32)
    ones = np.ones(n, np.float32)
    results = []
    for n_threads in (1, 3):
        pp, m, v = p.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
        before = numba.get_num_threads()
        try:
            numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
            adamw_update(pp, g, m, v, 1e-3, 0.9, 0.98, 1e-8, 0.01, decay, ones, 1)
        finally:
            numba.set_num_threads(before)
        results.append((pp, m, v))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_run_tasks_works_in_a_forked_child():
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    threads.run_tasks([lambda: 1, lambda: 2], 2)  # the parent's pool exists before the fork
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        assert pool.apply_async(_in_child).get(timeout=60) == [0, 1, 4]  # a hang fails


def _in_child():
    return threads.run_tasks([(lambda i=i: i * i) for i in range(3)], 2)


@numba.njit(nogil=True)
def _post_from_numba(handle):
    threads.post(*handle)


@pytest.mark.parametrize("task0_posts", [True, False])
def test_first_posts_hands_the_workers_their_tasks_when_task_0_says_so(task0_posts):
    """With first_posts, the workers start when task 0 posts from numba, or, if it never does,
    once it has finished; only task 0 gets a handle that posts anything."""
    import threading

    started = threading.Event()
    _post_from_numba(threads.post_handle())  # compiled now: a worker spins for a post only briefly

    def first():
        handle = threads.post_handle()
        if task0_posts:
            _post_from_numba(handle)
        return handle[1], started.wait(5.0 if task0_posts else 0.2)

    def other():
        started.set()
        return threads.post_handle()[1]

    assert threads.run_tasks([first, other], 2, first_posts=True) == [(2, task0_posts), 0]
    assert threads.post_handle()[1] == 0  # outside a call


def test_first_posts_still_runs_the_workers_when_task_0_raises():
    ran = []

    def boom():
        raise DataError("boom")

    with pytest.raises(DataError, match="boom"):
        threads.run_tasks([boom, lambda: ran.append(1)], 2, first_posts=True)
    assert ran == [1]
    assert threads.run_tasks([lambda: 1, lambda: 2], 2, first_posts=True) == [1, 2]


def test_a_caller_asleep_on_a_slow_worker_wakes_when_it_finishes():
    import time

    def slow():
        time.sleep(30 * threads.SPIN_SECONDS)  # the caller stops spinning and sleeps meanwhile
        return 2

    for _ in range(3):
        t = time.perf_counter()
        assert threads.run_tasks([lambda: 1, slow], 2) == [1, 2]
        assert time.perf_counter() - t < 30 * threads.SPIN_SECONDS + 1.0


def test_limit_threads_sets_numba_and_blas_and_restores_them():
    """The one thread policy: numba's count (the hot path's budget) and BLAS's, set and put back."""
    import numba
    from threadpoolctl import threadpool_info

    from fourier_toy.fast import limit_threads

    def blas_counts():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before_numba, before_blas = numba.get_num_threads(), blas_counts()
    with limit_threads(1, blas=1):
        assert numba.get_num_threads() == 1 and threads.threads() == 1
        assert blas_counts() and all(n == 1 for n in blas_counts())
    assert numba.get_num_threads() == before_numba and blas_counts() == before_blas
