"""A training step of the fused path (fused_step.py, GPT.train_step) against the same step driven
from Python: each piece by fused_piece.train, the gradients summed by fused.add_into, then AdamW's
kernel over the whole buffer with float32 masks. The two must agree bit for bit, whatever the
number of pieces and threads, and also when the threads miss each other at the barrier."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fourier_toy.training.backends import update_rule
from fourier_toy.fast import adamw as adamw_kernel
from fourier_toy.training.backends import make_gpt
from fourier_toy.fast import row_kernels as fused
from fourier_toy.fast import piece as fused_piece
from fourier_toy.nn import ops
from fourier_toy.fast import threads
from fourier_toy.config import ModelConfig
from fourier_toy.errors import DataError
from fourier_toy.fast.engine import piece_bounds
from fourier_toy.nn.model import GPT
from fourier_toy.nn.optim import AdamW, clip_grad_norm
from fourier_toy.nn.params import decay_mask


def make(seed, d=16, layers=1, heads=2, tied=False, backend="numba", p=23):
    cfg = ModelConfig(d_model=d, n_layers=layers, n_heads=heads, n_ctx=4, tied=tied, backend=backend)
    m = make_gpt(cfg, p, rng=np.random.default_rng(seed))
    opt = AdamW(m.layout.size, 1e-2, (0.9, 0.98), 1e-8, 0.01, decay_mask=decay_mask(m.layout),
                update=update_rule(m))
    return m, opt


def batch(m, seed, B):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, m.vocab_size, size=(B, 4))
    return tokens, rng.integers(0, m.n_numbers, size=B)


def reference_step(m, opt, tokens, targets):
    """The step with the kernels driven from Python; returns the loss."""
    with threads.single_threaded_blas():  # as on the fused path: OpenBLAS's threads split sums
        return _reference_step(m, opt, tokens, targets)


def _reference_step(m, opt, tokens, targets):
    D, H, L = m.cfg.d_model, m.n_heads, m.cfg.n_layers
    tok, tg = np.ascontiguousarray(tokens, np.intp), np.ascontiguousarray(targets, np.intp)
    B, T = tok.shape
    dt = m.params.dtype
    table, eps, scale = fused_piece.weight_table(m), dt.type(ops.LN_EPS), dt.type(1.0 / B)
    bounds = piece_bounds(B)
    sums, grads = [], [m.grads] + [np.zeros_like(m.grads) for _ in bounds[2:]]
    for k in range(len(bounds) - 1):
        lo, hi = bounds[k], bounds[k + 1]
        scratch = np.empty(fused_piece.scratch_entries(hi - lo, T, D, H, L), dt)
        logits, dlogits = np.empty((hi - lo, m.n_numbers), dt), np.empty((hi - lo, m.n_numbers), dt)
        sums.append(fused_piece.train(tok[lo:hi], tg[lo:hi], scale, m.params, table, D, H, eps, scratch, logits,
                                      dlogits, grads[k]))
    for g in grads[1:]:
        fused.add_into(m.grads, g)
    loss = math.fsum(sums) / B
    if math.isfinite(loss):
        opt.t += 1
        s = adamw_kernel.step_of(m.params, m.grads, opt.m, opt.v, opt.lr, opt.beta1, opt.beta2, opt.eps,
                                 opt.weight_decay, opt.decay_mask, opt.trainable_mask, opt.t)
        adamw_kernel._adamw(m.params, m.grads, opt.m, opt.v, *s.scalars, opt._decay_f32, opt._trainable_f32)
    return loss


def state(m, opt):
    return [m.params.copy(), m.grads.copy(), opt.m.copy(), opt.v.copy(), opt.t]


def assert_same(a, b):
    """params, grads, m, v and the step count of two (model, optimizer) states."""
    differ = {name: int(np.sum((x != y) & ~(np.isnan(x) & np.isnan(y))))
              for name, x, y in zip(("params", "grads", "m", "v"), a, b)}
    assert not any(differ.values()) and a[4] == b[4], (differ, a[4], b[4])


def with_threads(n, fn):
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        return fn()
    finally:
        numba.set_num_threads(before)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**16), B=st.sampled_from([1, 5, 130, 300, 460, 520]),
       shape=st.sampled_from([(8, 1, 1), (16, 2, 2), (32, 1, 4)]), tied=st.booleans(), n_threads=st.sampled_from([1, 2]),
       miss=st.booleans())
def test_train_step_is_bit_identical_to_the_step_driven_from_python(seed, B, shape, tied, n_threads, miss):
    """B from 1 to 520 gives 1 to 4 pieces; miss: the threads never wait at the barrier, so the
    caller finishes the slices whose thread found the others not yet there."""
    d, layers, heads = shape
    (m, opt), (r, ropt) = make(seed, d, layers, heads, tied), make(seed, d, layers, heads, tied)
    if miss:
        m._fused().spin = 0
    for step in range(3):  # the moments and the step count carry over
        tokens, targets = batch(m, seed + step, B)
        loss = with_threads(n_threads, lambda: m.train_step(tokens, targets, opt))
        assert loss == reference_step(r, ropt, tokens, targets)
        assert_same(state(m, opt), state(r, ropt))


def test_steps_match_after_other_batch_sizes_and_evaluations_grow_the_buffers():
    """The plan of a batch size and the per-thread buffers are kept from step to step; larger
    batches and evaluations in between replace the buffers, and the steps still match."""
    (m, opt), (r, ropt) = make(8), make(8)
    for step, B in enumerate([130, 300, 130, 520, 130, 300]):
        tokens, targets = batch(m, 20 + step, B)
        assert m.train_step(tokens, targets, opt) == reference_step(r, ropt, tokens, targets)
        assert_same(state(m, opt), state(r, ropt))
        eval_tokens = batch(m, 40 + step, 700)[0]
        np.testing.assert_array_equal(m.forward(eval_tokens), r.forward(eval_tokens))


def test_loss_and_grad_alone_leaves_parameters_and_optimizer_alone():
    (m, opt), (r, _) = make(1), make(1)
    tokens, targets = batch(m, 2, 300)
    before = state(m, opt)
    assert m.loss_and_grad(tokens, targets) == r.loss_and_grad(tokens, targets)
    np.testing.assert_array_equal(m.params, before[0])
    assert opt.t == 0 and not opt.m.any()
    np.testing.assert_array_equal(m.grads, r.grads)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy on inf - inf, as intended
def test_a_non_finite_loss_applies_no_step(backend):
    m, opt = make(3, backend=backend)
    tokens, targets = batch(m, 4, 300)
    m.train_step(tokens, targets, opt)  # moments and a step count to keep
    m.weights["h.0.mlp.c_fc.weight"][0, 0] = np.inf  # inf - inf downstream: the loss is NaN
    before = state(m, opt)
    assert math.isnan(m.train_step(tokens, targets, opt))
    np.testing.assert_array_equal(m.params, before[0])
    np.testing.assert_array_equal(opt.m, before[2])
    np.testing.assert_array_equal(opt.v, before[3])
    assert opt.t == before[4] == 1


def test_train_step_with_clipping_is_the_three_calls():
    (m, opt), (r, ropt) = make(5), make(5)
    for step in range(3):
        tokens, targets = batch(m, step, 300)
        loss = m.train_step(tokens, targets, opt, lr=3e-2, grad_clip=0.05)
        assert loss == r.loss_and_grad(tokens, targets)
        assert clip_grad_norm(r.grads, 0.05) > 0.05  # the clip is active
        ropt.step(r.params, r.grads, 3e-2)
        assert_same(state(m, opt), state(r, ropt))


def test_an_uncommitted_step_is_not_counted():
    m, opt = make(6)
    step = opt.prepare_step(m.params, m.grads)
    assert np.array_equal(opt.prepare_step(m.params, m.grads).scalars, step.scalars) and opt.t == 0
    step.commit()
    assert opt.t == 1
    assert AdamW(4, 1e-3).prepare_step(np.zeros(4, np.float32), np.zeros(4, np.float32)) is None  # numpy update


def test_bool_and_float_masks_give_the_same_bits():
    rng = np.random.default_rng(7)
    n = 1000
    p, g = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    decay, trainable = rng.random(n) < 0.5, rng.random(n) < 0.9
    out = []
    for masks in ((decay, trainable), (decay.astype(np.float32), trainable.astype(np.float32))):
        pp, m, v = p.copy(), np.full(n, 0.1, np.float32), np.full(n, 0.2, np.float32)
        s = adamw_kernel.step_of(pp, g, m, v, 1e-3, 0.9, 0.98, 1e-8, 0.01, decay, trainable, 3)
        adamw_kernel._adamw(pp, g, m, v, *s.scalars, *masks)
        out.append((pp, m, v))
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), B=st.sampled_from([1, 5, 130, 300, 520]), K=st.integers(1, 4),
       shape=st.sampled_from([(8, 1, 1), (16, 2, 2)]), tied=st.booleans(), n_threads=st.sampled_from([1, 2]),
       inline=st.booleans())
def test_train_steps_are_train_step_one_after_another(seed, B, K, shape, tied, n_threads, inline):
    """K steps in one hand-off, with a learning rate each, against K calls of train_step (itself
    checked against the step driven from Python above). inline: called from a task of another
    call, so that its tasks run one after another and thread 0 takes every piece."""
    d, layers, heads = shape
    (m, opt), (r, ropt) = make(seed, d, layers, heads, tied), make(seed, d, layers, heads, tied)
    data = [batch(m, seed + s, B) for s in range(K + 1)]
    m.train_step(*data[K], opt)  # moments and a step count to carry over
    r.train_step(*data[K], ropt)
    tokens, targets = np.stack([t for t, _ in data[:K]]), np.stack([g for _, g in data[:K]])
    lrs = [1e-2 * (s + 1) for s in range(K)]

    def steps():
        return m.train_steps(tokens, targets, opt, lrs)

    if inline:
        losses = with_threads(2, lambda: threads.run_tasks([lambda: None, steps], 2))[1]
    else:
        losses = with_threads(n_threads, steps)
    assert list(losses) == [r.train_step(tokens[s], targets[s], ropt, lrs[s]) for s in range(K)]
    assert_same(state(m, opt), state(r, ropt))
    assert opt.t == K + 1


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy on inf - inf, as intended
def test_train_steps_stop_after_a_non_finite_loss_without_applying_it(backend):
    """Steps 0 and 1 are applied; step 2's batch holds a token whose embedding row is inf, so its
    loss is NaN: not applied, and step 3 never runs."""
    m, opt = make(3, backend=backend)
    r, ropt = make(3, backend=backend)
    data = [batch(m, 10 + s, 300) for s in range(4)]
    tokens, targets = np.stack([t for t, _ in data]), np.stack([g for _, g in data])
    tokens[tokens == 7] = 8
    tokens[2, :, 0] = 7
    m.weights["wte.weight"][7, 0] = r.weights["wte.weight"][7, 0] = np.inf
    losses = m.train_steps(tokens, targets, opt)
    assert len(losses) == 3 and np.isfinite(losses[:2]).all() and math.isnan(losses[2])
    expected = [r.train_step(tokens[s], targets[s], ropt) for s in range(3)]  # the third not applied
    assert list(losses[:2]) == expected[:2] and math.isnan(expected[2])
    assert_same(state(m, opt), state(r, ropt))
    assert opt.t == 2


def test_train_steps_with_clipping_are_the_clipped_steps():
    (m, opt), (r, ropt) = make(5), make(5)
    data = [batch(m, s, 300) for s in range(3)]
    tokens, targets = np.stack([t for t, _ in data]), np.stack([g for _, g in data])
    losses = m.train_steps(tokens, targets, opt, [3e-2] * 3, grad_clip=0.05)
    assert list(losses) == [r.train_step(tokens[s], targets[s], ropt, 3e-2, 0.05) for s in range(3)]
    assert_same(state(m, opt), state(r, ropt))


def test_train_steps_refuse_mismatched_shapes_and_rates():
    m, opt = make(6)
    tokens, targets = batch(m, 0, 8)
    with pytest.raises(ValueError, match="tokens: expected shape"):
        m.train_steps(tokens, targets, opt)  # one step's (B, T), not (K, B, T)
    with pytest.raises(ValueError, match="lrs: expected 2 learning rates"):
        m.train_steps(np.stack([tokens] * 2), np.stack([targets] * 2), opt, [1e-3])
    with pytest.raises(DataError, match="targets"):
        m.train_steps(np.stack([tokens] * 2), np.stack([targets] * 3), opt)
    assert opt.t == 0 and not opt.m.any()


def test_prepare_steps_has_the_rows_of_successive_steps_and_commits_k():
    m, opt = make(6)
    one = [opt.prepare_step(m.params, m.grads, lr).scalars for lr in (1e-3, 2e-3)]
    opt.prepare_step(m.params, m.grads).commit()
    steps = opt.prepare_steps(m.params, m.grads, [3e-3, None, 1e-3])
    assert steps.scalars.shape == (3, 9) and opt.t == 1
    rows = [adamw_kernel.step_of(m.params, m.grads, opt.m, opt.v, lr, 0.9, 0.98, 1e-8, 0.01, opt.decay_mask,
                                 opt.trainable_mask, t).scalars for lr, t in ((3e-3, 2), (1e-2, 3), (1e-3, 4))]
    np.testing.assert_array_equal(steps.scalars, np.stack(rows))
    assert not np.array_equal(one[0], one[1])
    steps.commit(2)
    assert opt.t == 3


# ---- the barrier ----------------------------------------------------------------------------------

def test_the_barrier_passes_when_all_have_arrived_and_says_so_when_not():
    sync = np.zeros(3, dtype=np.int64)
    assert threads.barrier(sync, 0, 1, 1, 0)  # alone: passes at once, even without spinning
    assert not threads.barrier(sync, 0, 3, 2, 1000)  # threads 1 and 2 never come
    assert list(sync) == [2, 0, 0]
    sync[1:] = 5  # later counts count as arrived
    assert threads.barrier(sync, 0, 3, 3, 0)


def test_the_barrier_orders_writes_across_threads():
    """Each of two threads writes its half, meets the other, then reads the other's half."""
    n = 1 << 16
    data, seen, sync = np.zeros(n), np.zeros(2), np.zeros(2, dtype=np.int64)
    passed = [None, None]

    @numba.njit(nogil=True)
    def share(j, data, seen, sync, count, iters):
        half = data.size // 2
        for i in range(j * half, (j + 1) * half):
            data[i] = count * (j + 1)
        ok = threads.barrier(sync, j, 2, count, iters)
        other = (1 - j) * half
        seen[j] = data[other:other + half].sum()
        return ok

    for count in range(1, 20):
        def task(j, count=count):
            passed[j] = share(j, data, seen, sync, count, threads.barrier_iterations() * 100)
        threads.run_tasks([lambda: task(0), lambda: task(1)], 2)
        assert passed == [True, True]
        assert list(seen) == [count * 2 * n / 2, count * n / 2]


def test_wait_outlasts_its_spin_for_a_late_thread():
    """Thread 1 arrives 50 ms late, long after thread 0's spin of 10 looks: thread 0 keeps
    waiting (yielding the core), and sees the write thread 1 made before arriving."""
    import time

    sync, data, seen = np.zeros(2, dtype=np.int64), np.zeros(1), np.zeros(1)

    @numba.njit(nogil=True)
    def first(sync, data, seen):
        threads.wait(sync, 0, 2, 1, 10)
        seen[0] = data[0]

    @numba.njit(nogil=True)
    def late(sync, data):
        data[0] = 42.0
        threads.wait(sync, 1, 2, 1, 10)

    t0 = time.perf_counter()
    threads.run_tasks([lambda: first(sync, data, seen), lambda: (time.sleep(0.05), late(sync, data))], 2)
    assert seen[0] == 42.0 and time.perf_counter() - t0 >= 0.05
    assert list(sync) == [1, 1]


def test_inline_is_true_only_where_tasks_run_one_after_another():
    outer = threads.run_tasks([threads.inline, lambda: threads.run_tasks([threads.inline], 2)], 2)
    assert outer[0] is False and outer[1] == [True]
    assert threads.inline() is False
