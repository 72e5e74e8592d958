"""The numba kernels against the numpy oracle (ops.py), op by op, forward and backward.

Shapes are drawn by hypothesis; array contents come from a numpy Generator seeded by hypothesis,
which keeps example generation cheap. float64 must agree to ~1e-10, float32 to ~1e-5 relative to
the size of the result.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fourier_toy import kernels as K
from fourier_toy import ops
from fourier_toy.errors import ConfigError, DataError

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
DTYPES = st.sampled_from([np.float64, np.float32])
SEEDS = st.integers(0, 2**32 - 1)
TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 2e-5}


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    K.warmup()


def _close(actual, expected, what="", scale=0.0):
    """Agree to the dtype's tolerance, relative to each entry and to a scale.

    The scale is the size of the terms that make up the result (a sum of |terms|), so that a
    result that cancels to almost nothing is judged by the rounding its terms allow; it defaults
    to the largest entry of the expected result.
    """
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, what
    tol = TOL[np.dtype(actual.dtype)]
    finite = np.isfinite(expected)
    scale = max(float(np.max(scale)), np.abs(expected[finite]).max() if finite.any() else 0.0)
    np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64),
                               rtol=tol, atol=tol * max(scale, 1e-30), equal_nan=True,
                               err_msg=what)


def _same_nans(actual, expected, what=""):
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg=what)


def _arrays(seed, dtype, *shapes, scale=1.0):
    rng = np.random.default_rng(seed)
    return [(scale * rng.standard_normal(s)).astype(dtype) for s in shapes]


def _with_nan(a, seed):
    """A copy of a with one entry set to NaN."""
    a = a.copy()
    a.reshape(-1)[np.random.default_rng(seed).integers(a.size)] = np.nan
    return a


# ---- the float32 exp and tanh the kernels use -----------------------------------------------

@numba.njit
def _apply(f_id, x):
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = K._exp(x[i]) if f_id == 0 else K._tanh(x[i])
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
    wte, wpe, dx = _arrays(seed, dtype, (V, D), (T + extra_ctx, D), (B, T, D))
    x, c = K.embedding_forward(tokens, wte, wpe)
    x_ref, c_ref = ops.embedding_forward(tokens, wte, wpe)
    assert x.dtype == dtype
    _close(x, x_ref, "x", scale=ops.embedding_forward(tokens, abs(wte), abs(wpe))[0])
    scales = ops.embedding_backward(abs(dx), c_ref)
    for got, ref, sc, name in zip(K.embedding_backward(dx, c), ops.embedding_backward(dx, c_ref),
                                  scales, ("dwte", "dwpe")):
        _close(got, ref, name, scale=sc)


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
    x, w, b, dy = _arrays(seed, dtype, shape, (D,), (D,), shape)
    x = x * dtype(scale) + dtype(3.0)  # an offset mean exercises the two-pass variance
    y, c = K.layernorm_forward(x, w, b)
    y_ref, c_ref = ops.layernorm_forward(x, w, b)
    assert y.dtype == dtype
    # xhat = (x - mean) * rstd loses the dtype's precision relative to |x| + |mean|, not to
    # |x - mean|: a large offset with a small spread is ill-conditioned in any implementation.
    rstd = c_ref[1]
    xt = (abs(x) + abs(x.mean(axis=-1, keepdims=True))) * rstd
    _close(y, y_ref, "y", scale=xt * abs(w) + abs(b))
    g = abs(dy * w)
    lead_axes = tuple(range(len(lead)))
    scales = (rstd * (g + g.mean(-1, keepdims=True) + xt * (g * xt).mean(-1, keepdims=True)),
              (abs(dy) * xt).sum(lead_axes), abs(dy).sum(lead_axes))
    for got, ref, sc, name in zip(K.layernorm_backward(dy, c), ops.layernorm_backward(dy, c_ref),
                                  scales, ("dx", "dw", "db")):
        _close(got, ref, name, scale=sc)


# ---- linear ------------------------------------------------------------------------------------

@SETTINGS
@given(dtype=DTYPES, seed=SEEDS,
       lead=st.lists(st.integers(1, 8), min_size=0, max_size=2),
       din=st.integers(1, 64), dout=st.integers(1, 64))
def test_linear_matches_oracle(dtype, seed, lead, din, dout):
    x, W, b, dy = _arrays(seed, dtype, tuple(lead) + (din,), (din, dout), (dout,),
                          tuple(lead) + (dout,))
    y, c = K.linear_forward(x, W, b)
    y_ref, c_ref = ops.linear_forward(x, W, b)
    assert y.dtype == dtype
    _close(y, y_ref, "y", scale=ops.linear_forward(abs(x), abs(W), abs(b))[0])
    scales = ops.linear_backward(abs(dy), (abs(x), abs(W)))
    for got, ref, sc, name in zip(K.linear_backward(dy, c), ops.linear_backward(dy, c_ref),
                                  scales, ("dx", "dW", "db")):
        _close(got, ref, name, scale=sc)


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
    x, dy = _arrays(seed, dtype, tuple(shape), tuple(shape))
    x = x * dtype(scale)
    y, c = K.gelu_forward(x)
    y_ref, c_ref = ops.gelu_forward(x)
    assert y.dtype == dtype  # the kernels keep float32 as float32
    _close(y, y_ref, "y", scale=abs(x))
    _close(K.gelu_backward(dy, c), ops.gelu_backward(dy, c_ref), "dx", scale=abs(dy))


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
        q, k, v = (a.transpose(0, 2, 1, 3) for a in _arrays(
            seed, dtype, (B, Tq, H, Dh), (B, Tk, H, Dh), (B, Tk, H, Dh), scale=scale))
    else:
        q, k, v = _arrays(seed, dtype, (B, H, Tq, Dh), (B, H, Tk, Dh), (B, H, Tk, Dh),
                          scale=scale)
    (dz,) = _arrays(seed + 1, dtype, (B, H, Tq, Dh))
    z, c = K.attention_forward(q, k, v)
    z_ref, c_ref = ops.attention_forward(q, k, v)
    assert z.dtype == dtype
    _close(z, z_ref, "z", scale=abs(v))
    _close(c[3], c_ref[3], "pattern", scale=1.0)
    # The causal mask leaves exact zeros: query i sits at position Tk - Tq + i.
    later = np.arange(Tk)[None, :] > np.arange(Tk - Tq, Tk)[:, None]
    assert np.all(c[3][..., later] == 0.0)
    for got, ref, sc, name in zip(K.attention_backward(dz, c), ops.attention_backward(dz, c_ref),
                                  _attention_grad_scales(dz, c_ref), ("dq", "dk", "dv")):
        _close(got, ref, name, scale=sc)


def _attention_grad_scales(dz, cache):
    """The oracle's backward with every term made non-negative: the size of what is summed."""
    q, k, v, p = (abs(a) for a in cache)
    dp = abs(dz) @ v.swapaxes(-1, -2)
    ds = p * (dp + (dp * p).sum(axis=-1, keepdims=True)) / np.sqrt(q.shape[-1])
    return ds @ k, ds.swapaxes(-1, -2) @ q, p.swapaxes(-1, -2) @ abs(dz)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_attention_with_minus_inf_scores_matches_oracle(dtype):
    # Scores overflow to -inf: for one query only some of its visible keys (weight exactly 0),
    # for another all of them (the max is -inf, the row becomes NaN, as in the oracle).
    big = dtype(1e200 if dtype == np.float64 else 1e20)
    B, H, T, Dh = 2, 2, 4, 3
    q, k, v, dz = _arrays(7, dtype, (B, H, T, Dh), (B, H, T, Dh), (B, H, T, Dh), (B, H, T, Dh))
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
    _close(z, z_ref, "z", scale=abs(v))
    _close(c[3], c_ref[3], "pattern", scale=1.0)
    finite = [np.where(np.isfinite(a), a, 0) for a in c_ref]
    for got, ref, sc, name in zip(grads, grads_ref, _attention_grad_scales(dz, finite),
                                  ("dq", "dk", "dv")):
        _same_nans(got, ref, name)
        _close(got, ref, name, scale=sc)


# ---- cross-entropy -----------------------------------------------------------------------------

@SETTINGS
@given(dtype=DTYPES, seed=SEEDS, B=st.integers(1, 8), C=st.integers(1, 64),
       scale=st.sampled_from([0.1, 1.0, 10.0, 100.0]), dloss=st.floats(-2.0, 2.0))
def test_cross_entropy_matches_oracle(dtype, seed, B, C, scale, dloss):
    (logits,) = _arrays(seed, dtype, (B, C), scale=scale)
    targets = np.random.default_rng(seed).integers(0, C, B)
    loss, c = K.cross_entropy_forward(logits, targets)
    loss_ref, c_ref = ops.cross_entropy_forward(logits, targets)
    assert np.shape(loss) == () and np.asarray(loss).dtype == dtype
    # log(sum of exps) near 1 limits the loss to the dtype's absolute precision.
    _close(loss, loss_ref, "loss", scale=1.0)
    _close(c[0], c_ref[0], "probs", scale=1.0)
    _close(K.cross_entropy_backward(dloss, c), ops.cross_entropy_backward(dloss, c_ref),
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
    r = _arrays(seed, dtype, (B, T, D), (D,), (D,), (D, 7), (7,), (B, T, 7), (V, D), (T, D),
                (B, H, T, Dh), (B, H, T, Dh), (B, H, T, Dh), (B, 9))
    x, w, b, W, bW, dy7, wte, wpe, q, k, v, logits = r
    tokens = np.arange(B * T).reshape(B, T) % V  # every row of wte is used
    return [
        ("embedding", (tokens, _with_nan(wte, seed), wpe), x),
        ("layernorm", (_with_nan(x, seed), w, b), x),
        ("linear", (_with_nan(x, seed), W, bW), dy7),
        ("gelu", (_with_nan(x, seed),), x),
        ("attention", (_with_nan(q, seed), k, v), q),
        ("attention", (q, _with_nan(k, seed), v), q),
        ("attention", (q, k, _with_nan(v, seed)), q),
        ("cross_entropy", (_with_nan(logits, seed), np.arange(B)), 1.0),
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
            _same_nans(out, out_ref, name)
            grads, grads_ref = bwd(dout, c), bwd_ref(dout, c_ref)
            for g, g_ref in zip(*(t if isinstance(t, tuple) else (t,) for t in (grads, grads_ref))):
                _same_nans(g, g_ref, name + " backward")


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
            (d,) = _arrays(seed, dtype, out_shape)
            d = _with_nan(d, seed + 1)
            grads = getattr(K, name + "_backward")(d, c)
            grads_ref = getattr(ops, name + "_backward")(d, c_ref)
            grads = grads if isinstance(grads, tuple) else (grads,)
            grads_ref = grads_ref if isinstance(grads_ref, tuple) else (grads_ref,)
            assert any(np.isnan(g).any() for g in grads), name
            for g, g_ref in zip(grads, grads_ref):
                _same_nans(g, g_ref, name)


# ---- caches are interchangeable between the two backends ---------------------------------------

def test_either_backward_accepts_either_cache():
    x, w, b, dy = _arrays(3, np.float64, (4, 3, 8), (8,), (8,), (4, 3, 8))
    q, k, v = _arrays(4, np.float64, (2, 2, 3, 5), (2, 2, 3, 5), (2, 2, 3, 5))
    for name, args, dout in (("layernorm", (x, w, b), dy), ("gelu", (x,), dy),
                             ("attention", (q, k, v), q)):
        _, c = getattr(K, name + "_forward")(*args)
        _, c_ref = getattr(ops, name + "_forward")(*args)
        want = getattr(ops, name + "_backward")(dout, c_ref)
        for got in (getattr(ops, name + "_backward")(dout, c),
                    getattr(K, name + "_backward")(dout, c_ref)):
            for g, g_ref in zip(*(t if isinstance(t, tuple) else (t,) for t in (got, want))):
                _close(g, g_ref, name)


# ---- results do not depend on the thread count -------------------------------------------------

def test_results_do_not_depend_on_thread_count():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one numba thread available")
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((300, 4, 64), (64,), (64,)))
    tokens = rng.integers(0, 5, (300, 4))

    def run():
        y, c = K.layernorm_forward(x, w, b)
        _, ce = K.embedding_forward(tokens, w.reshape(1, -1).repeat(5, 0), x[0])
        _, cl = K.linear_forward(x, x[0].T, w[:4])
        return (*K.layernorm_backward(y, c), *K.embedding_backward(x, ce),
                *K.linear_backward(x[..., :4], cl)[2:])

    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        serial = run()
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        parallel = run()
    finally:
        numba.set_num_threads(before)
    for a, b_ in zip(serial, parallel):
        np.testing.assert_array_equal(a, b_)


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
        K.adamw_update(p, g, m, v, lr, 0.9, 0.98, 1e-8, wd, decay, trainable, t)
        ref = adamw_reference(*ref[:1], g, *ref[1:], lr, 0.9, 0.98, 1e-8, wd, decay, trainable, t)
    tol = 1e-12 if dtype == np.float64 else 1e-6
    for got, want, name in zip((p, m, v), ref, ("p", "m", "v")):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=name)
    frozen = trainable == 0
    np.testing.assert_array_equal(p[frozen].view(np.uint8), p0[frozen].view(np.uint8))
    assert np.all(m[frozen] == 0) and np.all(v[frozen] == 0)
    assert np.all(p[~frozen] != p0[~frozen])  # every trainable entry moved


def test_adamw_propagates_nan_gradients_only_where_trainable():
    p = np.ones(4, np.float32)
    m, v = np.zeros(4, np.float32), np.zeros(4, np.float32)
    g = np.full(4, np.nan, np.float32)
    K.adamw_update(p, g, m, v, 1e-3, 0.9, 0.98, 1e-8, 0.0, np.ones(4, np.float32),
                   np.array([1, 0, 1, 0], np.float32), 1)
    assert np.isnan(p[[0, 2]]).all() and np.isnan(m[[0, 2]]).all()
    np.testing.assert_array_equal(p[[1, 3]], 1.0)


def test_adamw_rejects_buffers_it_cannot_update_in_place():
    p = np.zeros(8, np.float32)
    ones = np.ones(8, np.float32)
    with pytest.raises(DataError, match="C-contiguous"):
        K.adamw_update(np.zeros(16, np.float32)[::2], p, p.copy(), p.copy(), 1e-3, 0.9, 0.98,
                       1e-8, 0.0, ones, ones, 1)
    with pytest.raises(DataError, match="must match params"):
        K.adamw_update(p, p, np.zeros(8), p.copy(), 1e-3, 0.9, 0.98, 1e-8, 0.0, ones, ones, 1)
    with pytest.raises(ConfigError, match="t must be"):
        K.adamw_update(p, p, p.copy(), p.copy(), 1e-3, 0.9, 0.98, 1e-8, 0.0, ones, ones, 0)


# ---- fused row kernels (the model's fused path) against compositions of oracle ops ------------
# Each kernel writes preallocated outputs; the references below build the same results from the
# ops.py pairs, with arrays in the (rows, width) example-major layout the model uses.

EPS = LN_EPS = ops.LN_EPS


def _ln_ref(x, w, b):
    y, c = ops.layernorm_forward(x, w, b)
    mean = x.mean(-1)
    return y, c, mean, c[1][:, 0]


@SETTINGS
@given(dtype=DTYPES, seed=SEEDS, B=st.integers(1, 6), T=st.integers(1, 5), V=st.integers(1, 6),
       D=st.integers(1, 40), nan=st.booleans())
def test_fused_embedding_layernorm_matches_oracle(dtype, seed, B, T, V, D, nan):
    tokens = np.random.default_rng(seed).integers(0, V, (B, T))
    wte, wpe, w, b = _arrays(seed, dtype, (V, D), (T + 1, D), (D,), (D,))
    if nan:
        wte = _with_nan(wte, seed)
    x, a = np.empty((B * T, D), dtype), np.empty((B * T, D), dtype)
    mean, rstd = np.empty(B * T, dtype), np.empty(B * T, dtype)
    with np.errstate(all="ignore"):
        K._embed_ln_fwd(tokens.astype(np.intp), wte, wpe, w, b, dtype(EPS), x, a, mean, rstd)
        x_ref = ops.embedding_forward(tokens, wte, wpe)[0].reshape(B * T, D)
        a_ref, _, mean_ref, rstd_ref = _ln_ref(x_ref, w, b)
    fin = lambda t: np.where(np.isfinite(t), t, 0)  # noqa: E731
    xs = fin(abs(wte[tokens]) + abs(wpe[:T])).reshape(B * T, D)  # the size of each entry's terms
    xt = (xs + xs.mean(-1, keepdims=True)) * fin(rstd_ref)[:, None]
    scales = (xs, xt * abs(w) + abs(b), xs.mean(-1), fin(rstd_ref) * 4)
    for got, ref, sc, name in zip((x, a, mean, rstd), (x_ref, a_ref, mean_ref, rstd_ref), scales, ("x", "a", "mean", "rstd")):
        _same_nans(got, ref, name)
        _close(got, ref, name, scale=sc)
    assert nan == bool(np.isnan(a).any())


@st.composite
def rows_and_step(draw):
    """(B, T, step): the short array has B rows, the long one B*T; step is 1 (row-aligned) or T."""
    B, T = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    return B, T, draw(st.sampled_from([1, T]))


@SETTINGS
@given(dtype=DTYPES, seed=SEEDS, shape=rows_and_step(), D=st.integers(1, 40))
def test_fused_residual_layernorm_matches_oracle(dtype, seed, shape, D):
    B, T, step = shape
    M = B * T if step == 1 else B  # row-aligned: every row; step T: the last position of each example
    base, y, bias, w, b = _arrays(seed, dtype, (B * T, D), (M, D), (D,), (D,), (D,))
    out, a = np.empty((M, D), dtype), np.empty((M, D), dtype)
    mean, rstd = np.empty(M, dtype), np.empty(M, dtype)
    K._res_ln_fwd(base, step, y, bias, w, b, dtype(EPS), out, a, mean, rstd)
    out_ref = base[step - 1::step] + y + bias
    a_ref, _, mean_ref, rstd_ref = _ln_ref(out_ref, w, b)
    terms = abs(base[step - 1::step]) + abs(y) + abs(bias)
    xt = (terms + terms.mean(-1, keepdims=True)) * rstd_ref[:, None]
    _close(out, out_ref, "out", scale=terms)
    _close(a, a_ref, "a", scale=xt * abs(w) + abs(b))
    _close(mean, mean_ref, "mean", scale=terms.mean(-1))
    _close(rstd, rstd_ref, "rstd", scale=4 * rstd_ref)


@SETTINGS
@given(dtype=DTYPES, seed=SEEDS, shape=rows_and_step(), D=st.integers(1, 40),
       extra=st.booleans(), residual=st.booleans(), nan=st.sampled_from([None, "dy", "dy2", "dres", "x"]))
def test_fused_layernorm_backward_with_residual_matches_oracle(dtype, seed, shape, D, extra, residual, nan):
    B, T, step = shape
    M = B * T
    x, w, b, dy = _arrays(seed, dtype, (M, D), (D,), (D,), (M, D))
    x = x * dtype(3) + dtype(1)
    dy2 = _arrays(seed + 1, dtype, (M // step, D))[0] if extra else np.zeros((0, D), dtype)
    dres = _arrays(seed + 2, dtype, (M // step, D))[0] if residual else np.zeros((0, D), dtype)
    arrays = {"dy": dy, "dy2": dy2, "dres": dres, "x": x}
    if nan is not None and arrays[nan].size:
        arrays[nan] = _with_nan(arrays[nan], seed)
    dy, dy2, dres, x = arrays["dy"], arrays["dy2"], arrays["dres"], arrays["x"]
    with np.errstate(all="ignore"):
        _, c, mean, rstd = _ln_ref(x, w, b)
        dx, dw, db, dsum = np.empty((M, D), dtype), np.empty(D, dtype), np.empty(D, dtype), np.empty(D, dtype)
        K._ln_res_bwd(dy, dy2, step, x, mean.astype(dtype), rstd.astype(dtype), w, dres, step, dx, dw, db, dsum)
        g = dy.copy()
        if extra:
            g[step - 1::step] += dy2
        dx_ref, dw_ref, db_ref = ops.layernorm_backward(g, c)
        if residual:
            dx_ref[step - 1::step] += dres
        dsum_ref = dx_ref.sum(0)
    # Tolerances from the size of the summed terms, as in test_layernorm_matches_oracle.
    fin = lambda t: np.where(np.isfinite(t), t, 0)  # noqa: E731
    xt, gw = fin(abs(c[0])), fin(abs(g * w))
    r = fin(rstd)[:, None]
    dx_scale = r * (gw + gw.mean(-1, keepdims=True) + xt * (gw * xt).mean(-1, keepdims=True))
    dx_scale[step - 1::step] += fin(abs(dres)) if residual else 0
    scales = (dx_scale, (fin(abs(g)) * xt).sum(0), fin(abs(g)).sum(0), dx_scale.sum(0))
    for got, ref, sc, name in zip((dx, dw, db, dsum), (dx_ref, dw_ref, db_ref, dsum_ref), scales,
                                  ("dx", "dw", "db", "dsum")):
        _same_nans(got, ref, name)
        _close(got, ref, name, scale=sc)
    if nan is not None and arrays[nan].size:
        assert np.isnan(dx).any() and np.isnan(dsum).any()


@SETTINGS
@given(dtype=DTYPES, seed=SEEDS, M=st.integers(1, 20), F=st.integers(1, 70),
       scale=st.sampled_from([0.1, 1.0, 5.0]), nan=st.booleans())
def test_fused_gelu_with_bias_matches_oracle(dtype, seed, M, F, scale, nan):
    h, bias, dact = _arrays(seed, dtype, (M, F), (F,), (M, F), scale=scale)
    if nan:
        h = _with_nan(h, seed)
    pre = h + bias
    act = np.empty_like(h)
    with np.errstate(all="ignore"):
        K._gelu_bias_fwd(h, bias, act)  # h now holds the pre-activation
        act_ref, c = ops.gelu_forward(pre)
        dh, dbias = np.empty_like(h), np.empty(F, dtype)
        K._gelu_bias_bwd(dact, h, dh, dbias)
        dh_ref = ops.gelu_backward(dact, c)
    np.testing.assert_array_equal(h, pre)
    for got, ref, name, sc in ((act, act_ref, "act", abs(pre)), (dh, dh_ref, "dh", 2 * abs(dact) * (1 + abs(pre))),
                               (dbias, dh_ref.sum(0), "dbias", (2 * abs(dact) * (1 + abs(pre))).sum(0))):
        _same_nans(got, ref, name)
        _close(got, ref, name, scale=np.where(np.isfinite(sc), sc, 0))
    assert nan == bool(np.isnan(act).any()) == bool(np.isnan(dbias).any())


def _heads(a, B, T, H):
    """(B*T, H*Dh) -> (B, H, T, Dh)."""
    return a.reshape(B, T, H, -1).transpose(0, 2, 1, 3)


def _merge(a):
    """(B, H, T, Dh) -> (B*T, H*Dh)."""
    B, H, T, Dh = a.shape
    return a.transpose(0, 2, 1, 3).reshape(B * T, H * Dh)


def _fused_attention(qkv, bias, B, T, H, last_only, dz):
    """Run _attn_fwd/_attn_bwd on a fused (N, 3D) projection, either as in a full block (q, k, v
    in one array) or as in the last block (q of the last position apart from k, v).
    Returns z, pattern, [dq | dk | dv] (N, 3D) with zeros in dq's rows that have no query, dbias."""
    D = qkv.shape[1] // 3
    dt = qkv.dtype
    pat = np.empty((B, H, 1 if last_only else T, T), dt)
    dbias = np.empty(3 * D, dt)
    if not last_only:
        qs = qkv.copy()
        z = np.empty((B * T, D), dt)
        K._attn_fwd(qs, 0, qs, D, 2 * D, bias, H, T, z, pat)
        dqkv = np.empty_like(qkv)
        K._attn_bwd(dz, qs, 0, qs, D, 2 * D, pat, H, T, dqkv, 0, dqkv, D, 2 * D, dbias)
        return z, pat, dqkv, dbias
    q = qkv[T - 1::T, :D].copy()  # copies: the kernel adds the bias in place
    kv = qkv[:, D:].copy()
    z = np.empty((B, D), dt)
    K._attn_fwd(q, 0, kv, 0, D, bias, H, T, z, pat)
    dq, dkv = np.empty((B, D), dt), np.empty((B * T, 2 * D), dt)
    K._attn_bwd(dz, q, 0, kv, 0, D, pat, H, T, dq, 0, dkv, 0, D, dbias)
    grads = np.zeros_like(qkv)
    grads[T - 1::T, :D] = dq
    grads[:, D:] = dkv
    return z, pat, grads, dbias


def _oracle_attention(qkv, bias, B, T, H, last_only, dz):
    """The oracle's z, pattern, [dq | dk | dv] and dbias, and the size of what each sums (for
    the tolerance: the same computation with every term made non-negative)."""
    D = qkv.shape[1] // 3
    full = qkv + bias
    q, k, v = (_heads(full[:, i * D:(i + 1) * D], B, T, H) for i in range(3))
    if last_only:
        q = q[:, :, -1:]
    z, c = ops.attention_forward(q, k, v)
    Tq = q.shape[2]
    dz4 = dz.reshape(B, Tq, H, -1).transpose(0, 2, 1, 3)
    rows = slice(T - 1, None, T) if last_only else slice(None)

    def merged(dq, dk, dv):
        out = np.zeros_like(qkv)
        out[rows, :D] = _merge(dq)
        out[:, D:2 * D], out[:, 2 * D:] = _merge(dk), _merge(dv)
        return out

    grads = merged(*ops.attention_backward(dz4, c))
    finite = [np.where(np.isfinite(a), a, 0) for a in c]
    gscale = merged(*_attention_grad_scales(np.where(np.isfinite(dz4), dz4, 0), finite))
    zscale = np.broadcast_to(_merge(abs(finite[2])).max(0), (len(dz), D))
    return (_merge(z), c[3], grads, grads.sum(0)), (zscale, 1.0, gscale, gscale.sum(0))


@SETTINGS
@given(dtype=DTYPES, seed=SEEDS, B=st.integers(1, 5), T=st.integers(1, 5), H=st.integers(1, 3),
       Dh=st.integers(1, 8), last_only=st.booleans(), scale=st.sampled_from([0.3, 1.0, 3.0]),
       nan=st.sampled_from([None, "qkv", "dz"]))
def test_fused_attention_matches_oracle(dtype, seed, B, T, H, Dh, last_only, scale, nan):
    D = H * Dh
    qkv, bias = _arrays(seed, dtype, (B * T, 3 * D), (3 * D,), scale=scale)
    (dz,) = _arrays(seed + 1, dtype, (B if last_only else B * T, D))
    if nan == "qkv":
        qkv = _with_nan(qkv, seed)
    elif nan == "dz":
        dz = _with_nan(dz, seed)
    with np.errstate(all="ignore"):
        got = _fused_attention(qkv, bias, B, T, H, last_only, dz)
        ref, scales = _oracle_attention(qkv, bias, B, T, H, last_only, dz)
    for g, r, sc, name in zip(got, ref, scales, ("z", "pattern", "dqkv", "dbias")):
        _same_nans(g, r, name)
        _close(g, r, name, scale=sc)
    later = np.arange(T)[None, :] > np.arange(T - got[1].shape[2], T)[:, None]
    assert np.all(got[1][..., later] == 0.0) or nan == "qkv"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("last_only", [False, True])
def test_fused_attention_with_minus_inf_scores_matches_oracle(dtype, last_only):
    # Scores overflow to -inf for some visible keys of the last query, and for all of them in
    # another example (the max is -inf and that row becomes NaN, as in the oracle).
    big = dtype(1e200 if dtype == np.float64 else 1e20)
    B, T, H, Dh = 2, 4, 2, 3
    D = H * Dh
    qkv, dz = _arrays(7, dtype, (B * T, 3 * D), (B if last_only else B * T, D))
    bias = np.zeros(3 * D, dtype)
    qkv[T - 1, 0] = big          # example 0, last query, head 0
    qkv[1, D] = -big             # example 0, key 1, head 0: that score alone is -inf
    qkv[2 * T - 1, Dh] = big     # example 1, last query, head 1
    qkv[T:2 * T, D + Dh] = -big  # example 1, every key of head 1: the whole row is -inf
    with np.errstate(all="ignore"):
        got = _fused_attention(qkv, bias, B, T, H, last_only, dz)
        ref, scales = _oracle_attention(qkv, bias, B, T, H, last_only, dz)
    pat = got[1]
    assert pat[0, 0, -1, 1] == 0.0 and np.isfinite(got[0][T - 1 if not last_only else 0]).all()
    assert np.isnan(pat[1, 1, -1]).all()
    for g, r, sc, name in zip(got, ref, scales, ("z", "pattern", "dqkv", "dbias")):
        _same_nans(g, r, name)
        _close(g, r, name, scale=sc)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("last_only", [False, True])
@pytest.mark.parametrize("part,pos", [(0, 0), (0, 3), (1, 0), (1, 2), (2, 0), (2, 3)])
def test_fused_attention_nan_in_q_k_or_v_spreads_like_the_oracle(dtype, last_only, part, pos):
    # One NaN in the query (part 0), key (1) or value (2) of one position of example 0, head 0:
    # masked entries of a NaN row are NaN too, a NaN value reaches even the queries that do not
    # see it (weight 0 times NaN), as in the oracle's matmuls.
    B, T, H, Dh = 2, 4, 2, 3
    D = H * Dh
    qkv, bias, dz = _arrays(3, dtype, (B * T, 3 * D), (3 * D,), (B if last_only else B * T, D))
    qkv[pos, part * D] = np.nan
    with np.errstate(all="ignore"):
        got = _fused_attention(qkv, bias, B, T, H, last_only, dz)
        ref, scales = _oracle_attention(qkv, bias, B, T, H, last_only, dz)
    for g, r, sc, name in zip(got, ref, scales, ("z", "pattern", "dqkv", "dbias")):
        _same_nans(g, r, name)
        _close(g, r, name, scale=sc)
    assert np.isfinite(got[0][len(got[0]) // 2:]).all()  # example 1 is untouched


@SETTINGS
@given(dtype=DTYPES, seed=SEEDS, M=st.integers(1, 10), C=st.integers(1, 60),
       scale=st.sampled_from([0.1, 1.0, 30.0]), dloss=st.floats(-2.0, 2.0), nan=st.booleans())
def test_fused_cross_entropy_matches_oracle(dtype, seed, M, C, scale, dloss, nan):
    (logits,) = _arrays(seed, dtype, (M, C), scale=scale)
    if nan:
        logits = _with_nan(logits, seed)
    targets = np.random.default_rng(seed).integers(0, C, M)
    dlogits = np.empty_like(logits)
    with np.errstate(all="ignore"):
        total = K._ce_fwd_bwd(logits, targets.astype(np.intp), dtype(dloss / M), dlogits)
        loss_ref, c = ops.cross_entropy_forward(logits, targets)
        d_ref = ops.cross_entropy_backward(dloss, c)
    _same_nans(dlogits, d_ref, "dlogits")
    if nan:
        assert np.isnan(total)
        return
    _close(np.asarray(total / M, dtype=dtype), loss_ref, "loss", scale=1.0 + abs(logits).max())
    _close(dlogits, d_ref, "dlogits", scale=abs(dloss) / M)


@SETTINGS
@given(dtype=DTYPES, seed=SEEDS, B=st.integers(1, 8), T=st.integers(1, 5), V=st.integers(1, 6),
       D=st.integers(1, 40))
def test_fused_embedding_gradient_matches_oracle(dtype, seed, B, T, V, D):
    tokens = np.random.default_rng(seed).integers(0, V, (B, T))  # tokens repeat
    (dx,) = _arrays(seed, dtype, (B, T, D))
    dwte, dwpe = np.zeros((V, D), dtype), np.zeros((T + 2, D), dtype)
    K._embed_bwd(tokens.astype(np.intp), dx.reshape(B * T, D), dwte, dwpe)
    ref = ops.embedding_backward(dx, (tokens, (V, D), (T + 2, D)))
    scales = ops.embedding_backward(abs(dx), (tokens, (V, D), (T + 2, D)))
    for got, r, sc, name in zip((dwte, dwpe), ref, scales, ("dwte", "dwpe")):
        _close(got, r, name, scale=sc)


# ---- the thread policy ---------------------------------------------------------------------------

def test_run_tasks_returns_results_in_order_and_raises_task_errors():
    import threading

    names = K.run_tasks([(lambda i=i: (i, threading.current_thread().name)) for i in range(5)], 2)
    assert [r[0] for r in names] == list(range(5))
    assert names[0][1] == names[2][1] == threading.current_thread().name  # the caller runs its share
    assert names[1][1] != names[0][1]

    def boom():
        raise DataError("boom")

    with pytest.raises(DataError, match="boom"):
        K.run_tasks([lambda: 1, boom, lambda: 3], 2)


def test_single_threaded_blas_restores_the_thread_count():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with K.single_threaded_blas():
        pass
    # The libraries it controls: numpy's BLAS (loaded when it is first used), which the fused
    # path's matmuls run on; a BLAS loaded later by another package is not the hot path's.
    mine = {lib.filepath for lib in K._blas}
    assert mine

    def counts():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["filepath"] in mine]

    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = counts()
        with K.single_threaded_blas():
            with K.single_threaded_blas():  # nested: the outer context restores
                pass
            inside = counts()
        after = counts()
    assert inside == [1] * len(before) and after == before


def test_adamw_slices_give_the_same_bits_as_one_pass():
    rng = np.random.default_rng(5)
    n = 3 * (1 << 16) + 7  # several slices
    p = rng.standard_normal(n).astype(np.float32)
    g, decay = rng.standard_normal(n).astype(np.float32), (rng.random(n) < 0.5).astype(np.float32)
    ones = np.ones(n, np.float32)
    results = []
    for threads in (1, 3):
        pp, m, v = p.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
        before = numba.get_num_threads()
        try:
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            K.adamw_update(pp, g, m, v, 1e-3, 0.9, 0.98, 1e-8, 0.01, decay, ones, 1)
        finally:
            numba.set_num_threads(before)
        results.append((pp, m, v))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_run_tasks_works_in_a_forked_child():
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    K.run_tasks([lambda: 1, lambda: 2], 2)  # the parent's pool exists before the fork
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        assert pool.apply_async(_in_child).get(timeout=60) == [0, 1, 4]  # a hang fails


def _in_child():
    return K.run_tasks([(lambda i=i: i * i) for i in range(3)], 2)
