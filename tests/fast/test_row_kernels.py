"""The fused row kernels (fused.py) against compositions of oracle ops (ops.py).

Each kernel writes preallocated outputs; the references build the same results from the ops.py
pairs, with arrays in the (rows, width) example-major layout the model uses. Shapes are drawn by
hypothesis, contents from a seeded numpy Generator; tolerances: fourier_toy.testing.assert_close.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_checks import (DTYPES, SEEDS, SETTINGS, attention_grad_scales, random_arrays, same_nans,
                           with_nan)

from fourier_toy.fast import ENGINE
from fourier_toy.fast import row_kernels as fused
from fourier_toy.fast import op_kernels as kernels
from fourier_toy.nn import ops
from fourier_toy.testing import assert_close


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    ENGINE.warmup()


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
    wte, wpe, w, b = random_arrays(seed, dtype, (V, D), (T + 1, D), (D,), (D,))
    if nan:
        wte = with_nan(wte, seed)
    x, a = np.empty((B * T, D), dtype), np.empty((B * T, D), dtype)
    mean, rstd = np.empty(B * T, dtype), np.empty(B * T, dtype)
    with np.errstate(all="ignore"):
        fused.embed_ln_fwd(tokens.astype(np.intp), wte, wpe, w, b, dtype(EPS), x, a, mean, rstd)
        x_ref = ops.embedding_forward(tokens, wte, wpe)[0].reshape(B * T, D)
        a_ref, _, mean_ref, rstd_ref = _ln_ref(x_ref, w, b)
    fin = lambda t: np.where(np.isfinite(t), t, 0)  # noqa: E731
    xs = fin(abs(wte[tokens]) + abs(wpe[:T])).reshape(B * T, D)  # the size of each entry's terms
    xt = (xs + xs.mean(-1, keepdims=True)) * fin(rstd_ref)[:, None]
    scales = (xs, xt * abs(w) + abs(b), xs.mean(-1), fin(rstd_ref) * 4)
    for got, ref, sc, name in zip((x, a, mean, rstd), (x_ref, a_ref, mean_ref, rstd_ref), scales, ("x", "a", "mean", "rstd")):
        same_nans(got, ref, name)
        assert_close(got, ref, name, scale=sc)
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
    base, y, bias, w, b = random_arrays(seed, dtype, (B * T, D), (M, D), (D,), (D,), (D,))
    out, a = np.empty((M, D), dtype), np.empty((M, D), dtype)
    mean, rstd = np.empty(M, dtype), np.empty(M, dtype)
    fused.res_ln_fwd(base, step, y, bias, w, b, dtype(EPS), out, a, mean, rstd)
    out_ref = base[step - 1::step] + y + bias
    a_ref, _, mean_ref, rstd_ref = _ln_ref(out_ref, w, b)
    terms = abs(base[step - 1::step]) + abs(y) + abs(bias)
    xt = (terms + terms.mean(-1, keepdims=True)) * rstd_ref[:, None]
    assert_close(out, out_ref, "out", scale=terms)
    assert_close(a, a_ref, "a", scale=xt * abs(w) + abs(b))
    assert_close(mean, mean_ref, "mean", scale=terms.mean(-1))
    assert_close(rstd, rstd_ref, "rstd", scale=4 * rstd_ref)


@SETTINGS
@given(dtype=DTYPES, seed=SEEDS, shape=rows_and_step(), D=st.integers(1, 40),
       extra=st.booleans(), residual=st.booleans(), nan=st.sampled_from([None, "dy", "dy2", "dres", "x"]))
def test_fused_layernorm_backward_with_residual_matches_oracle(dtype, seed, shape, D, extra, residual, nan):
    B, T, step = shape
    M = B * T
    x, w, b, dy = random_arrays(seed, dtype, (M, D), (D,), (D,), (M, D))
    x = x * dtype(3) + dtype(1)
    dy2 = random_arrays(seed + 1, dtype, (M // step, D))[0] if extra else np.zeros((0, D), dtype)
    dres = random_arrays(seed + 2, dtype, (M // step, D))[0] if residual else np.zeros((0, D), dtype)
    arrays = {"dy": dy, "dy2": dy2, "dres": dres, "x": x}
    if nan is not None and arrays[nan].size:
        arrays[nan] = with_nan(arrays[nan], seed)
    dy, dy2, dres, x = arrays["dy"], arrays["dy2"], arrays["dres"], arrays["x"]
    with np.errstate(all="ignore"):
        _, c, mean, rstd = _ln_ref(x, w, b)
        dx, dw, db, dsum = np.empty((M, D), dtype), np.empty(D, dtype), np.empty(D, dtype), np.empty(D, dtype)
        fused.ln_res_bwd(dy, dy2, step, x, mean.astype(dtype), rstd.astype(dtype), w, dres, step, dx, dw, db, dsum)
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
        same_nans(got, ref, name)
        assert_close(got, ref, name, scale=sc)
    if nan is not None and arrays[nan].size:
        assert np.isnan(dx).any() and np.isnan(dsum).any()


@SETTINGS
@given(dtype=DTYPES, seed=SEEDS, M=st.integers(1, 20), F=st.integers(1, 70),
       scale=st.sampled_from([0.1, 1.0, 5.0]), nan=st.booleans())
def test_fused_gelu_with_bias_matches_oracle(dtype, seed, M, F, scale, nan):
    h, bias, dact = random_arrays(seed, dtype, (M, F), (F,), (M, F), scale=scale)
    if nan:
        h = with_nan(h, seed)
    pre = h + bias
    act = np.empty_like(h)
    with np.errstate(all="ignore"):
        fused.gelu_bias_fwd(h, bias, act)  # h now holds the pre-activation
        act_ref, c = ops.gelu_forward(pre)
        dh, dbias = np.empty_like(h), np.empty(F, dtype)
        fused.gelu_bias_bwd(dact, h, dh, dbias)
        dh_ref = ops.gelu_backward(dact, c)
    np.testing.assert_array_equal(h, pre)
    for got, ref, name, sc in ((act, act_ref, "act", abs(pre)), (dh, dh_ref, "dh", 2 * abs(dact) * (1 + abs(pre))),
                               (dbias, dh_ref.sum(0), "dbias", (2 * abs(dact) * (1 + abs(pre))).sum(0))):
        same_nans(got, ref, name)
        assert_close(got, ref, name, scale=np.where(np.isfinite(sc), sc, 0))
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
        fused.attn_fwd(qs, 0, qs, D, 2 * D, bias, H, T, z, pat)
        dqkv = np.empty_like(qkv)
        fused.attn_bwd(dz, qs, 0, qs, D, 2 * D, pat, H, T, dqkv, 0, dqkv, D, 2 * D, dbias)
        return z, pat, dqkv, dbias
    q = qkv[T - 1::T, :D].copy()  # copies: the kernel adds the bias in place
    kv = qkv[:, D:].copy()
    z = np.empty((B, D), dt)
    fused.attn_fwd(q, 0, kv, 0, D, bias, H, T, z, pat)
    dq, dkv = np.empty((B, D), dt), np.empty((B * T, 2 * D), dt)
    fused.attn_bwd(dz, q, 0, kv, 0, D, pat, H, T, dq, 0, dkv, 0, D, dbias)
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
    gscale = merged(*attention_grad_scales(np.where(np.isfinite(dz4), dz4, 0), finite))
    zscale = np.broadcast_to(_merge(abs(finite[2])).max(0), (len(dz), D))
    return (_merge(z), c[3], grads, grads.sum(0)), (zscale, 1.0, gscale, gscale.sum(0))


def _fused_matches_oracle(qkv, bias, B, T, H, last_only, dz):
    """Both attentions on the same inputs; asserts that every output agrees (NaNs included) and
    returns the fused one's (z, pattern, dqkv, dbias)."""
    with np.errstate(all="ignore"):
        got = _fused_attention(qkv, bias, B, T, H, last_only, dz)
        ref, scales = _oracle_attention(qkv, bias, B, T, H, last_only, dz)
    for g, r, sc, name in zip(got, ref, scales, ("z", "pattern", "dqkv", "dbias")):
        same_nans(g, r, name)
        assert_close(g, r, name, scale=sc)
    return got


@SETTINGS
@given(dtype=DTYPES, seed=SEEDS, B=st.integers(1, 5), T=st.integers(1, 5), H=st.integers(1, 3),
       Dh=st.integers(1, 8), last_only=st.booleans(), scale=st.sampled_from([0.3, 1.0, 3.0]),
       nan=st.sampled_from([None, "qkv", "dz"]))
def test_fused_attention_matches_oracle(dtype, seed, B, T, H, Dh, last_only, scale, nan):
    D = H * Dh
    qkv, bias = random_arrays(seed, dtype, (B * T, 3 * D), (3 * D,), scale=scale)
    (dz,) = random_arrays(seed + 1, dtype, (B if last_only else B * T, D))
    if nan == "qkv":
        qkv = with_nan(qkv, seed)
    elif nan == "dz":
        dz = with_nan(dz, seed)
    got = _fused_matches_oracle(qkv, bias, B, T, H, last_only, dz)
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
    qkv, dz = random_arrays(7, dtype, (B * T, 3 * D), (B if last_only else B * T, D))
    bias = np.zeros(3 * D, dtype)
    qkv[T - 1, 0] = big          # example 0, last query, head 0
    qkv[1, D] = -big             # example 0, key 1, head 0: that score alone is -inf
    qkv[2 * T - 1, Dh] = big     # example 1, last query, head 1
    qkv[T:2 * T, D + Dh] = -big  # example 1, every key of head 1: the whole row is -inf
    got = _fused_matches_oracle(qkv, bias, B, T, H, last_only, dz)
    pat = got[1]
    assert pat[0, 0, -1, 1] == 0.0 and np.isfinite(got[0][T - 1 if not last_only else 0]).all()
    assert np.isnan(pat[1, 1, -1]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("last_only", [False, True])
@pytest.mark.parametrize("part,pos", [(0, 0), (0, 3), (1, 0), (1, 2), (2, 0), (2, 3)])
def test_fused_attention_nan_in_q_k_or_v_spreads_like_the_oracle(dtype, last_only, part, pos):
    # One NaN in the query (part 0), key (1) or value (2) of one position of example 0, head 0:
    # masked entries of a NaN row are NaN too, a NaN value reaches even the queries that do not
    # see it (weight 0 times NaN), as in the oracle's matmuls.
    B, T, H, Dh = 2, 4, 2, 3
    D = H * Dh
    qkv, bias, dz = random_arrays(3, dtype, (B * T, 3 * D), (3 * D,), (B if last_only else B * T, D))
    qkv[pos, part * D] = np.nan
    got = _fused_matches_oracle(qkv, bias, B, T, H, last_only, dz)
    assert np.isfinite(got[0][len(got[0]) // 2:]).all()  # example 1 is untouched


@SETTINGS
@given(dtype=DTYPES, seed=SEEDS, M=st.integers(1, 10), C=st.integers(1, 60),
       scale=st.sampled_from([0.1, 1.0, 30.0]), dloss=st.floats(-2.0, 2.0), nan=st.booleans())
def test_fused_cross_entropy_matches_oracle(dtype, seed, M, C, scale, dloss, nan):
    (logits,) = random_arrays(seed, dtype, (M, C), scale=scale)
    if nan:
        logits = with_nan(logits, seed)
    targets = np.random.default_rng(seed).integers(0, C, M)
    dlogits = np.empty_like(logits)
    with np.errstate(all="ignore"):
        total = fused.ce_fwd_bwd(logits, targets.astype(np.intp), dtype(dloss / M), dlogits)
        loss_ref, c = ops.cross_entropy_forward(logits, targets)
        d_ref = ops.cross_entropy_backward(dloss, c)
    same_nans(dlogits, d_ref, "dlogits")
    if nan:
        assert np.isnan(total)
        return
    assert_close(np.asarray(total / M, dtype=dtype), loss_ref, "loss", scale=1.0 + abs(logits).max())
    assert_close(dlogits, d_ref, "dlogits", scale=abs(dloss) / M)


@SETTINGS
@given(dtype=DTYPES, seed=SEEDS, B=st.integers(1, 8), T=st.integers(1, 5), V=st.integers(1, 6),
       D=st.integers(1, 40))
def test_fused_embedding_gradient_matches_oracle(dtype, seed, B, T, V, D):
    tokens = np.random.default_rng(seed).integers(0, V, (B, T))  # tokens repeat
    (dx,) = random_arrays(seed, dtype, (B, T, D))
    dwte, dwpe = np.zeros((V, D), dtype), np.zeros((T + 2, D), dtype)
    fused.embed_bwd(tokens.astype(np.intp), dx.reshape(B * T, D), dwte, dwpe)
    ref = ops.embedding_backward(dx, (tokens, (V, D), (T + 2, D)))
    scales = ops.embedding_backward(abs(dx), (tokens, (V, D), (T + 2, D)))
    for got, r, sc, name in zip((dwte, dwpe), ref, scales, ("dwte", "dwpe")):
        assert_close(got, r, name, scale=sc)
