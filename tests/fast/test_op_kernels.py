"""The numba kernels against the numpy oracle (ops.py), op by op, forward and backward.

Shapes are drawn by hypothesis; array contents come from a numpy Generator seeded by hypothesis,
which keeps example generation cheap. Tolerances: fourier_toy.testing.assert_close (FLOAT_TOLERANCE).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_checks import (DTYPES, SEEDS, SETTINGS, attention_grad_scales, random_arrays, same_nans,
                           with_nan)

from fourier_toy.fast.adamw import adamw_update
from fourier_toy.fast import ENGINE
from fourier_toy.fast import jit
from fourier_toy.fast import op_kernels as K
from fourier_toy.nn import ops
from fourier_toy.errors import ConfigError, DataError
from fourier_toy.testing import assert_close


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    ENGINE.warmup()


# ---- the float32 exp and tanh the kernels use -----------------------------------------------

@numba.njit
def _apply(f_id, x):
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = jit.exp(x[i]) if f_id == 0 else jit.tanh(x[i])
    return out


def test_float32_exp_matches_float64_exp():
    x = np.concatenate([np.linspace(-110, 90, 400_001), [-np.inf, np.inf, np.nan, 0.0, -0.0]])
    x = x.astype(np.float32)
    got = _apply(0, x)
    assert got.dtype == np.float32
    with np.errstate(over="ignore"):
        want = np.exp(x.astype(np.float64))
    normal = (want >= np.finfo(np.float32).tiny) & (want <= np.finfo(np.float32).max)
    np.testing.assert_allclose(got[normal], want[normal], rtol=3e-7)
    # Denormal results to within a few of their spacings (the scaling rounds twice), then 0
    # and inf beyond the float32 range.
    sub = want < np.finfo(np.float32).tiny
    assert np.abs(got[sub] - want[sub]).max() <= 4 * np.finfo(np.float32).smallest_subnormal
    assert np.all(got[want > np.finfo(np.float32).max] == np.inf)
    assert got[-5] == 0.0 and got[-4] == np.inf and np.isnan(got[-3]) and got[-1] == 1.0


def test_float32_tanh_matches_float64_tanh():
    x = np.concatenate([np.linspace(-12, 12, 400_001), np.geomspace(1e-30, 1e-2, 1000),
                        [-np.inf, np.inf, np.nan]]).astype(np.float32)
    got = _apply(1, x)
    want = np.tanh(x.astype(np.float64))
    np.testing.assert_allclose(got[:-1], want[:-1], rtol=4e-7, atol=0)
    assert np.isnan(got[-1])


# ---- embedding ---------------------------------------------------------------------------------

@SETTINGS
@given(dtype=DTYPES, seed=SEEDS, B=st.integers(1, 8), T=st.integers(1, 6),
       extra_ctx=st.integers(0, 2), V=st.integers(1, 6), D=st.integers(1, 64))
def test_embedding_matches_oracle(dtype, seed, B, T, extra_ctx, V, D):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, V, (B, T))  # V <= 6 with B * T up to 48: tokens repeat
    wte, wpe, dx = random_arrays(seed, dtype, (V, D), (T + extra_ctx, D), (B, T, D))
    x, c = K.embedding_forward(tokens, wte, wpe)
    x_ref, c_ref = ops.embedding_forward(tokens, wte, wpe)
    assert x.dtype == dtype
    assert_close(x, x_ref, "x", scale=ops.embedding_forward(tokens, abs(wte), abs(wpe))[0])
    scales = ops.embedding_backward(abs(dx), c_ref)
    for got, ref, sc, name in zip(K.embedding_backward(dx, c), ops.embedding_backward(dx, c_ref),
                                  scales, ("dwte", "dwpe")):
        assert_close(got, ref, name, scale=sc)


def test_embedding_gradient_sums_repeated_tokens():
    tokens = np.array([[3, 1, 3], [3, 3, 0]])
    dx = np.arange(2 * 3 * 4, dtype=np.float64).reshape(2, 3, 4)
    _, c = K.embedding_forward(tokens, np.zeros((5, 4)), np.zeros((4, 4)))
    dwte, dwpe = K.embedding_backward(dx, c)
    np.testing.assert_array_equal(dwte[3], dx[0, 0] + dx[0, 2] + dx[1, 0] + dx[1, 1])
    np.testing.assert_array_equal(dwte[1], dx[0, 1])
    np.testing.assert_array_equal(dwte[0], dx[1, 2])
    np.testing.assert_array_equal(dwte[[2, 4]], 0.0)
    np.testing.assert_array_equal(dwpe[:3], dx[0] + dx[1])
    np.testing.assert_array_equal(dwpe[3], 0.0)


def test_embedding_rejects_bad_tokens():
    wte, wpe = np.zeros((5, 4)), np.zeros((3, 4))
    for bad in (np.array([[0, 5]]), np.array([[-1, 0]]), np.array([[0.0, 1.0]]),
                np.zeros((1, 4), dtype=int)):
        with pytest.raises(DataError, match="tokens"):
            K.embedding_forward(bad, wte, wpe)


# ---- layer norm --------------------------------------------------------------------------------

@SETTINGS
@given(dtype=DTYPES, seed=SEEDS,
       lead=st.lists(st.integers(1, 8), min_size=0, max_size=3), D=st.integers(1, 64),
       scale=st.sampled_from([1e-2, 1.0, 30.0]))
def test_layernorm_matches_oracle(dtype, seed, lead, D, scale):
    shape = tuple(lead) + (D,)
    x, w, b, dy = random_arrays(seed, dtype, shape, (D,), (D,), shape)
    x = x * dtype(scale) + dtype(3.0)  # an offset mean exercises the two-pass variance
    y, c = K.layernorm_forward(x, w, b)
    y_ref, c_ref = ops.layernorm_forward(x, w, b)
    assert y.dtype == dtype
    # xhat = (x - mean) * rstd loses the dtype's precision relative to |x| + |mean|, not to
    # |x - mean|: a large offset with a small spread is ill-conditioned in any implementation.
    rstd = c_ref[1]
    xt = (abs(x) + abs(x.mean(axis=-1, keepdims=True))) * rstd
    assert_close(y, y_ref, "y", scale=xt * abs(w) + abs(b))
    g = abs(dy * w)
    lead_axes = tuple(range(len(lead)))
    scales = (rstd * (g + g.mean(-1, keepdims=True) + xt * (g * xt).mean(-1, keepdims=True)),
              (abs(dy) * xt).sum(lead_axes), abs(dy).sum(lead_axes))
    for got, ref, sc, name in zip(K.layernorm_backward(dy, c), ops.layernorm_backward(dy, c_ref),
                                  scales, ("dx", "dw", "db")):
        assert_close(got, ref, name, scale=sc)


# ---- linear ------------------------------------------------------------------------------------

@SETTINGS
@given(dtype=DTYPES, seed=SEEDS,
       lead=st.lists(st.integers(1, 8), min_size=0, max_size=2),
       din=st.integers(1, 64), dout=st.integers(1, 64))
def test_linear_matches_oracle(dtype, seed, lead, din, dout):
    x, W, b, dy = random_arrays(seed, dtype, tuple(lead) + (din,), (din, dout), (dout,),
                          tuple(lead) + (dout,))
    y, c = K.linear_forward(x, W, b)
    y_ref, c_ref = ops.linear_forward(x, W, b)
    assert y.dtype == dtype
    assert_close(y, y_ref, "y", scale=ops.linear_forward(abs(x), abs(W), abs(b))[0])
    scales = ops.linear_backward(abs(dy), (abs(x), abs(W)))
    for got, ref, sc, name in zip(K.linear_backward(dy, c), ops.linear_backward(dy, c_ref),
                                  scales, ("dx", "dW", "db")):
        assert_close(got, ref, name, scale=sc)


def test_linear_rejects_mismatched_shapes():
    with pytest.raises(DataError, match="Din"):
        K.linear_forward(np.zeros((2, 3)), np.zeros((4, 5)), np.zeros(5))
    with pytest.raises(DataError, match="b must have shape"):
        K.linear_forward(np.zeros((2, 4)), np.zeros((4, 5)), np.zeros(4))
    with pytest.raises(DataError, match="float32 or float64"):
        K.linear_forward(np.zeros((2, 4), dtype=int), np.zeros((4, 5)), np.zeros(5))


# ---- gelu --------------------------------------------------------------------------------------

@SETTINGS
@given(dtype=DTYPES, seed=SEEDS, shape=st.lists(st.integers(1, 40), min_size=1, max_size=3),
       scale=st.sampled_from([0.1, 1.0, 4.0, 20.0]))
def test_gelu_matches_oracle(dtype, seed, shape, scale):
    x, dy = random_arrays(seed, dtype, tuple(shape), tuple(shape))
    x = x * dtype(scale)
    y, c = K.gelu_forward(x)
    y_ref, c_ref = ops.gelu_forward(x)
    assert y.dtype == dtype  # the kernels keep float32 as float32
    assert_close(y, y_ref, "y", scale=abs(x))
    assert_close(K.gelu_backward(dy, c), ops.gelu_backward(dy, c_ref), "dx", scale=abs(dy))


def test_gelu_float32_tanh_is_accurate_over_the_whole_range():
    # Dense grid through the polynomial, clamp and saturation regions, against float64 math.
    x = np.concatenate([np.linspace(-12.0, 12.0, 200_001), [0.0, 1e-30, -1e-30, 1e-6]])
    y, c = K.gelu_forward(x.astype(np.float32))
    x64 = x.astype(np.float32).astype(np.float64)
    t64 = np.tanh(np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64**3))
    assert np.abs(c[1] - t64).max() < 1e-6
    np.testing.assert_allclose(y, 0.5 * x64 * (1 + t64), rtol=1e-6, atol=5e-6)
    assert np.all(c[1][x64 > 6] == 1.0) and np.all(c[1][x64 < -6] == -1.0)


# ---- attention ---------------------------------------------------------------------------------

@st.composite
def attention_shapes(draw):
    T = draw(st.integers(1, 6))
    Tq = draw(st.sampled_from([1, T]))
    return draw(st.integers(1, 8)), draw(st.integers(1, 4)), Tq, T, draw(st.integers(1, 16))


@SETTINGS
@given(dtype=DTYPES, seed=SEEDS, shape=attention_shapes(),
       scale=st.sampled_from([0.3, 1.0, 3.0]), transposed=st.booleans())
def test_attention_matches_oracle(dtype, seed, shape, scale, transposed):
    B, H, Tq, Tk, Dh = shape
    if transposed:  # (B, T, H, Dh) storage seen as (B, H, T, Dh), as a fused projection gives
        q, k, v = (a.transpose(0, 2, 1, 3) for a in random_arrays(
            seed, dtype, (B, Tq, H, Dh), (B, Tk, H, Dh), (B, Tk, H, Dh), scale=scale))
    else:
        q, k, v = random_arrays(seed, dtype, (B, H, Tq, Dh), (B, H, Tk, Dh), (B, H, Tk, Dh),
                          scale=scale)
    (dz,) = random_arrays(seed + 1, dtype, (B, H, Tq, Dh))
    z, c = K.attention_forward(q, k, v)
    z_ref, c_ref = ops.attention_forward(q, k, v)
    assert z.dtype == dtype
    assert_close(z, z_ref, "z", scale=abs(v))
    assert_close(c[3], c_ref[3], "pattern", scale=1.0)
    # The causal mask leaves exact zeros: query i sits at position Tk - Tq + i.
    later = np.arange(Tk)[None, :] > np.arange(Tk - Tq, Tk)[:, None]
    assert np.all(c[3][..., later] == 0.0)
    for got, ref, sc, name in zip(K.attention_backward(dz, c), ops.attention_backward(dz, c_ref),
                                  attention_grad_scales(dz, c_ref), ("dq", "dk", "dv")):
        assert_close(got, ref, name, scale=sc)



@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_attention_with_minus_inf_scores_matches_oracle(dtype):
    # Scores overflow to -inf: for one query only some of its visible keys (weight exactly 0),
    # for another all of them (the max is -inf, the row becomes NaN, as in the oracle).
    big = dtype(1e200 if dtype == np.float64 else 1e20)
    B, H, T, Dh = 2, 2, 4, 3
    q, k, v, dz = random_arrays(7, dtype, (B, H, T, Dh), (B, H, T, Dh), (B, H, T, Dh), (B, H, T, Dh))
    q[0, 0, 2] = [big, 0, 0]
    k[0, 0, 1] = [-big, 0, 0]  # query 2 sees keys 0..2: key 1 alone scores -inf
    q[1, 1, 1] = [big, 0, 0]
    k[1, 1, :2] = [-big, 0, 0]  # query 1 sees keys 0..1: both score -inf
    with np.errstate(all="ignore"):
        z, c = K.attention_forward(q, k, v)
        z_ref, c_ref = ops.attention_forward(q, k, v)
        grads = K.attention_backward(dz, c)
        grads_ref = ops.attention_backward(dz, c_ref)
    assert c[3][0, 0, 2, 1] == 0.0 and np.isfinite(z[0, 0]).all()
    assert np.isnan(c[3][1, 1, 1]).all() and np.isnan(z[1, 1, 1]).all()
    assert_close(z, z_ref, "z", scale=abs(v))
    assert_close(c[3], c_ref[3], "pattern", scale=1.0)
    finite = [np.where(np.isfinite(a), a, 0) for a in c_ref]
    for got, ref, sc, name in zip(grads, grads_ref, attention_grad_scales(dz, finite),
                                  ("dq", "dk", "dv")):
        same_nans(got, ref, name)
        assert_close(got, ref, name, scale=sc)


# ---- cross-entropy -----------------------------------------------------------------------------

@SETTINGS
@given(dtype=DTYPES, seed=SEEDS, B=st.integers(1, 8), C=st.integers(1, 64),
       scale=st.sampled_from([0.1, 1.0, 10.0, 100.0]), dloss=st.floats(-2.0, 2.0))
def test_cross_entropy_matches_oracle(dtype, seed, B, C, scale, dloss):
    (logits,) = random_arrays(seed, dtype, (B, C), scale=scale)
    targets = np.random.default_rng(seed).integers(0, C, B)
    loss, c = K.cross_entropy_forward(logits, targets)
    loss_ref, c_ref = ops.cross_entropy_forward(logits, targets)
    assert np.shape(loss) == () and np.asarray(loss).dtype == dtype
    # log(sum of exps) near 1 limits the loss to the dtype's absolute precision.
    assert_close(loss, loss_ref, "loss", scale=1.0)
    assert_close(c[0], c_ref[0], "probs", scale=1.0)
    assert_close(K.cross_entropy_backward(dloss, c), ops.cross_entropy_backward(dloss, c_ref),
           "dlogits", scale=abs(dloss) / B)


def test_cross_entropy_rejects_bad_targets():
    with pytest.raises(DataError, match="targets"):
        K.cross_entropy_forward(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(DataError, match="targets"):
        K.cross_entropy_forward(np.zeros((2, 3)), np.array([0]))


# ---- NaN propagation -----------------------------------------------------------------------------

def _nan_cases(dtype, seed):
    """(name, forward args with one NaN, the same clean, dout) for every op."""
    B, H, T, Dh, D, V = 3, 2, 4, 5, 6, 4
    r = random_arrays(seed, dtype, (B, T, D), (D,), (D,), (D, 7), (7,), (B, T, 7), (V, D), (T, D),
                (B, H, T, Dh), (B, H, T, Dh), (B, H, T, Dh), (B, 9))
    x, w, b, W, bW, dy7, wte, wpe, q, k, v, logits = r
    tokens = np.arange(B * T).reshape(B, T) % V  # every row of wte is used
    return [
        ("embedding", (tokens, with_nan(wte, seed), wpe), x),
        ("layernorm", (with_nan(x, seed), w, b), x),
        ("linear", (with_nan(x, seed), W, bW), dy7),
        ("gelu", (with_nan(x, seed),), x),
        ("attention", (with_nan(q, seed), k, v), q),
        ("attention", (q, with_nan(k, seed), v), q),
        ("attention", (q, k, with_nan(v, seed)), q),
        ("cross_entropy", (with_nan(logits, seed), np.arange(B)), 1.0),
    ]


@settings(max_examples=20, deadline=None)
@given(dtype=DTYPES, seed=SEEDS)
def test_nan_inputs_propagate_like_the_oracle(dtype, seed):
    with np.errstate(all="ignore"):
        for name, args, dout in _nan_cases(dtype, seed):
            fwd, bwd = getattr(K, name + "_forward"), getattr(K, name + "_backward")
            fwd_ref, bwd_ref = getattr(ops, name + "_forward"), getattr(ops, name + "_backward")
            out, c = fwd(*args)
            out_ref, c_ref = fwd_ref(*args)
            assert np.isnan(out).any(), name
            same_nans(out, out_ref, name)
            grads, grads_ref = bwd(dout, c), bwd_ref(dout, c_ref)
            for g, g_ref in zip(*(t if isinstance(t, tuple) else (t,) for t in (grads, grads_ref))):
                same_nans(g, g_ref, name + " backward")


@settings(max_examples=20, deadline=None)
@given(dtype=DTYPES, seed=SEEDS)
def test_nan_gradients_propagate_like_the_oracle(dtype, seed):
    with np.errstate(all="ignore"):
        for name, args, dout in _nan_cases(dtype, seed):
            if name == "cross_entropy":
                continue  # its upstream gradient is a scalar
            clean = tuple(a if np.ndim(a) == 0 or a.dtype.kind != "f" else np.nan_to_num(a)
                          for a in args)
            _, c = getattr(K, name + "_forward")(*clean)
            _, c_ref = getattr(ops, name + "_forward")(*clean)
            out_shape = getattr(ops, name + "_forward")(*clean)[0].shape
            (d,) = random_arrays(seed, dtype, out_shape)
            d = with_nan(d, seed + 1)
            grads = getattr(K, name + "_backward")(d, c)
            grads_ref = getattr(ops, name + "_backward")(d, c_ref)
            grads = grads if isinstance(grads, tuple) else (grads,)
            grads_ref = grads_ref if isinstance(grads_ref, tuple) else (grads_ref,)
            assert any(np.isnan(g).any() for g in grads), name
            for g, g_ref in zip(grads, grads_ref):
                same_nans(g, g_ref, name)


# ---- caches are interchangeable between the two backends ---------------------------------------

def test_either_backward_accepts_either_cache():
    x, w, b, dy = random_arrays(3, np.float64, (4, 3, 8), (8,), (8,), (4, 3, 8))
    q, k, v = random_arrays(4, np.float64, (2, 2, 3, 5), (2, 2, 3, 5), (2, 2, 3, 5))
    for name, args, dout in (("layernorm", (x, w, b), dy), ("gelu", (x,), dy),
                             ("attention", (q, k, v), q)):
        _, c = getattr(K, name + "_forward")(*args)
        _, c_ref = getattr(ops, name + "_forward")(*args)
        want = getattr(ops, name + "_backward")(dout, c_ref)
        for got in (getattr(ops, name + "_backward")(dout, c),
                    getattr(K, name + "_backward")(dout, c_ref)):
            for g, g_ref in zip(*(t if isinstance(t, tuple) else (t,) for t in (got, want))):
                assert_close(g, g_ref, name)


# ---- the same bits in every process and on any number of threads ------------------------------

_OPS_DIGEST = """
import hashlib
import numpy as np
from fourier_toy.fast import op_kernels as K

rng = np.random.default_rng(0)
parts = []
for dt in (np.float32, np.float64):
    def r(*shape):
        return (2 * rng.standard_normal(shape)).astype(dt)

    x, c = K.embedding_forward(rng.integers(0, 50, (70, 4)), r(50, 32), r(4, 32))
    parts += [x, *K.embedding_backward(r(70, 4, 32), c)]
    y, c = K.layernorm_forward(r(70, 4, 32), r(32), r(32))
    parts += [y, *K.layernorm_backward(r(70, 4, 32), c)]
    y, c = K.linear_forward(r(70, 4, 32), r(32, 48), r(48))
    parts += [y, *K.linear_backward(r(70, 4, 48), c)]
    y, c = K.gelu_forward(r(70, 4, 128))
    parts += [y, K.gelu_backward(r(70, 4, 128), c)]
    z, c = K.attention_forward(r(70, 4, 3, 16), r(70, 4, 4, 16), r(70, 4, 4, 16))
    parts += [z, c[3], *K.attention_backward(r(70, 4, 3, 16), c)]
    loss, c = K.cross_entropy_forward(r(300, 121), rng.integers(0, 121, 300))
    parts += [np.asarray(loss), c[0], K.cross_entropy_backward(1.0, c)]
print(hashlib.sha256(b"".join(np.ascontiguousarray(p).tobytes() for p in parts)).hexdigest())
"""


def test_every_op_has_the_same_bits_compiled_afresh_loaded_from_the_cache_and_on_one_thread(tmp_path):
    """The first process compiles every op-by-op kernel into an empty cache; the next ones load
    them from it, one with numba's default threads and one with a single thread."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}

    def digest(**extra):
        return subprocess.run([sys.executable, "-c", _OPS_DIGEST], env={**env, **extra}, capture_output=True,
                              text=True, check=True).stdout.strip()

    fresh = digest()
    assert any(tmp_path.rglob("*.nbi")), "the first process compiled nothing into the empty cache"
    assert digest() == fresh
    assert digest(NUMBA_NUM_THREADS="1") == fresh


# ---- AdamW -------------------------------------------------------------------------------------

def adamw_reference(p, g, m, v, lr, b1, b2, eps, wd, decay, trainable, t):
    """The update written out in float64: returns new (p, m, v)."""
    p, g, m, v = (a.astype(np.float64) for a in (p, g, m, v))
    on = trainable != 0
    p_dec = np.where(decay != 0, p - lr * wd * p, p)
    m_new = b1 * m + (1 - b1) * g
    v_new = b2 * v + (1 - b2) * g * g
    p_new = p_dec - lr * (m_new / (1 - b1**t)) / (np.sqrt(v_new / (1 - b2**t)) + eps)
    return np.where(on, p_new, p), np.where(on, m_new, m), np.where(on, v_new, v)


@SETTINGS
@given(dtype=DTYPES, seed=SEEDS, n=st.integers(1, 300), steps=st.integers(1, 4),
       lr=st.sampled_from([1e-3, 1e-2]), wd=st.sampled_from([0.0, 0.01, 0.1]))
def test_adamw_matches_reference_and_leaves_frozen_entries_alone(dtype, seed, n, steps, lr, wd):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(n).astype(dtype)
    m = np.zeros(n, dtype)
    v = np.zeros(n, dtype)
    decay = (rng.random(n) < 0.7).astype(np.float32)
    trainable = (rng.random(n) < 0.8).astype(np.float32)
    p0 = p.copy()
    ref = (p.astype(np.float64), m.astype(np.float64), v.astype(np.float64))
    for t in range(1, steps + 1):
        g = rng.standard_normal(n).astype(dtype)
        adamw_update(p, g, m, v, lr, 0.9, 0.98, 1e-8, wd, decay, trainable, t)
        ref = adamw_reference(*ref[:1], g, *ref[1:], lr, 0.9, 0.98, 1e-8, wd, decay, trainable, t)
    tol = 1e-12 if dtype == np.float64 else 1e-6
    for got, want, name in zip((p, m, v), ref, ("p", "m", "v")):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=name)
    frozen = trainable == 0
    np.testing.assert_array_equal(p[frozen].view(np.uint8), p0[frozen].view(np.uint8))
    assert np.all(m[frozen] == 0) and np.all(v[frozen] == 0)
    # Every trainable entry moved, unless the exact update is within a rounding of its start (a
    # decay and a step that nearly cancel: seed 181, n 147, 4 steps, lr 1e-3, wd 0.1 has one).
    far = ~frozen & (np.abs(ref[0] - p0) > 2 * np.spacing(np.abs(p0)).astype(np.float64))
    assert far.sum() >= 0.9 * (~frozen).sum() and np.all(p[far] != p0[far])


def test_adamw_propagates_nan_gradients_only_where_trainable():
    p = np.ones(4, np.float32)
    m, v = np.zeros(4, np.float32), np.zeros(4, np.float32)
    g = np.full(4, np.nan, np.float32)
    adamw_update(p, g, m, v, 1e-3, 0.9, 0.98, 1e-8, 0.0, np.ones(4, np.float32),
                   np.array([1, 0, 1, 0], np.float32), 1)
    assert np.isnan(p[[0, 2]]).all() and np.isnan(m[[0, 2]]).all()
    np.testing.assert_array_equal(p[[1, 3]], 1.0)


def test_adamw_rejects_buffers_it_cannot_update_in_place():
    p = np.zeros(8, np.float32)
    ones = np.ones(8, np.float32)
    with pytest.raises(DataError, match="C-contiguous"):
        adamw_update(np.zeros(16, np.float32)[::2], p, p.copy(), p.copy(), 1e-3, 0.9, 0.98,
                       1e-8, 0.0, ones, ones, 1)
    with pytest.raises(DataError, match="must match params"):
        adamw_update(p, p, np.zeros(8), p.copy(), 1e-3, 0.9, 0.98, 1e-8, 0.0, ones, ones, 1)
    with pytest.raises(ConfigError, match="t must be"):
        adamw_update(p, p, p.copy(), p.copy(), 1e-3, 0.9, 0.98, 1e-8, 0.0, ones, ones, 0)
