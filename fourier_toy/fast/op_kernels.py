"""Numba versions of the ops in `ops.py`: same names, signatures, shapes and results.

A model with the engine (engine.py) calls these as `model.ops`, e.g.
`model.ops.layernorm_forward(x, w, b)`, where a model without one calls nn/ops.py. Each public function here validates and normalizes its
inputs (float32 or float64, C-contiguous; mixed float inputs promote as numpy would) and hands
them to a private `@njit` kernel. Outputs keep the input dtype. The caches have the same
structure as the oracle's, so either module's backward accepts either module's cache.

These op-by-op kernels are what a model runs when hooks are attached or every position is asked
for, and what the tests compare with `ops.py` one by one. The model's training and evaluation
path calls the fused row kernels of `row_kernels.py` instead, between BLAS matmuls, on the threads
of `threads.py` (`engine.py`). The AdamW update over the flat buffer: `adamw.py`. Input checks:
`inputs.py`. Compile options and the float32 exp/tanh: `jit.py`. Where the time goes:
docs/performance.md.

Shapes use B = batch, T = sequence length, D = width, H = heads, Dh = head size, N = rows.
"""

from __future__ import annotations

import math

import numpy as np

from fourier_toy.errors import DataError
from fourier_toy.config import GELU_C, GELU_K, LN_EPS
from fourier_toy.fast.jit import FLOATS, exp, jit, masked_softmax_row, tanh
from fourier_toy.fast.inputs import as_dtype, check_shape, dtype_of, floats, indices

__all__ = [
    "attention_backward",
    "attention_forward",
    "cross_entropy_backward",
    "cross_entropy_forward",
    "embedding_backward",
    "embedding_forward",
    "gelu_backward",
    "gelu_forward",
    "layernorm_backward",
    "layernorm_forward",
    "linear_backward",
    "linear_forward",
]

_ROW_BLOCK = 64  # rows per partial sum in column reductions; the partial sums are then added in order


# ---- embedding ---------------------------------------------------------------------------------

@jit
def _embedding_fwd(tokens, wte, wpe, out):
    B, T = tokens.shape
    D = wte.shape[1]
    for bi in range(B):
        for t in range(T):
            tok = tokens[bi, t]
            for d in range(D):
                out[bi, t, d] = wte[tok, d] + wpe[t, d]


@jit
def _embedding_bwd(tokens, dx, dwte, dwpe):
    # A serial scatter: tokens repeat within a batch, so rows of dwte collide.
    B, T = tokens.shape
    D = dx.shape[2]
    for bi in range(B):
        for t in range(T):
            tok = tokens[bi, t]
            for d in range(D):
                g = dx[bi, t, d]
                dwte[tok, d] += g
                dwpe[t, d] += g


def embedding_forward(tokens, wte, wpe):
    """tokens (B, T) int, wte (V, D), wpe (n_ctx, D) -> x (B, T, D) = wte[tokens] + wpe[:T]."""
    fn = "embedding_forward"
    dt, (wte, wpe) = floats(fn, wte=wte, wpe=wpe)
    if wte.ndim != 2 or wpe.ndim != 2 or wte.shape[1] != wpe.shape[1]:
        raise DataError(f"{fn}: wte (V, D) and wpe (n_ctx, D) must be 2-D with the same D, "
                        f"got {wte.shape} and {wpe.shape}")
    tok = np.asarray(tokens)
    if tok.ndim != 2 or tok.shape[1] > wpe.shape[0]:
        raise DataError(f"{fn}: tokens must be (B, T) with T <= n_ctx = {wpe.shape[0]}, "
                        f"got shape {tok.shape}")
    tok = indices(fn, "tokens", tok, tok.shape, wte.shape[0])
    out = np.empty(tok.shape + (wte.shape[1],), dtype=dt)
    _embedding_fwd(tok, wte, wpe, out)
    return out, (tokens, wte.shape, wpe.shape)


def embedding_backward(dx, cache):
    """dx (B, T, D) -> (dwte (V, D), dwpe (n_ctx, D))."""
    fn = "embedding_backward"
    tokens, wte_shape, wpe_shape = cache
    tok = indices(fn, "tokens", tokens, np.shape(tokens), wte_shape[0])
    dx = np.asarray(dx)
    if dx.dtype not in FLOATS:
        raise DataError(f"{fn}: dx must be float32 or float64, got {dx.dtype}")
    check_shape(fn, "dx", dx, tok.shape + (wte_shape[1],))
    dx = np.ascontiguousarray(dx)
    dwte = np.zeros(wte_shape, dtype=dx.dtype)
    dwpe = np.zeros(wpe_shape, dtype=dx.dtype)
    _embedding_bwd(tok, dx, dwte, dwpe)
    return dwte, dwpe


# ---- layer norm --------------------------------------------------------------------------------

@jit
def _layernorm_fwd(x, w, b, eps, y, xhat, rstd):
    N, D = x.shape
    zero = x.dtype.type(0.0)
    one = x.dtype.type(1.0)
    inv_d = one / x.dtype.type(D)
    for i in range(N):
        s = zero
        for d in range(D):
            s += x[i, d]
        mean = s * inv_d
        v = zero
        for d in range(D):
            c = x[i, d] - mean
            v += c * c
        r = one / np.sqrt(v * inv_d + eps)
        rstd[i] = r
        for d in range(D):
            h = (x[i, d] - mean) * r
            xhat[i, d] = h
            y[i, d] = h * w[d] + b[d]


@jit
def _layernorm_bwd(dy, xhat, rstd, w, dx, dw_part, db_part):
    N, D = dy.shape
    zero = dy.dtype.type(0.0)
    inv_d = dy.dtype.type(1.0) / dy.dtype.type(D)
    nblk = dw_part.shape[0]
    for blk in range(nblk):
        for d in range(D):
            dw_part[blk, d] = zero
            db_part[blk, d] = zero
        for i in range(blk * _ROW_BLOCK, min(N, (blk + 1) * _ROW_BLOCK)):
            s1 = zero
            s2 = zero
            for d in range(D):
                g = dy[i, d]
                h = xhat[i, d]
                gw = g * w[d]
                s1 += gw
                s2 += gw * h
                dw_part[blk, d] += g * h
                db_part[blk, d] += g
            m1 = s1 * inv_d
            m2 = s2 * inv_d
            r = rstd[i]
            for d in range(D):
                dx[i, d] = r * (dy[i, d] * w[d] - m1 - xhat[i, d] * m2)


@jit
def _sum_rows(part, out):
    """out[d] = sum over blocks of part[blk, d], in block order."""
    for blk in range(part.shape[0]):
        for d in range(part.shape[1]):
            out[d] += part[blk, d]


def layernorm_forward(x, w, b, eps=LN_EPS):
    """x (..., D), w (D,), b (D,) -> y (..., D); biased variance, as GPT-2."""
    fn = "layernorm_forward"
    dt, (x, w, b) = floats(fn, x=x, w=w, b=b)
    if x.ndim < 1:
        raise DataError(f"{fn}: x must have at least one axis, got a scalar")
    D = x.shape[-1]
    check_shape(fn, "w", w, (D,))
    check_shape(fn, "b", b, (D,))
    x2 = x.reshape(-1, D)
    y = np.empty_like(x2)
    xhat = np.empty_like(x2)
    rstd = np.empty(x2.shape[0], dtype=dt)
    _layernorm_fwd(x2, w, b, dt.type(eps), y, xhat, rstd)
    lead = x.shape[:-1]
    return y.reshape(x.shape), (xhat.reshape(x.shape), rstd.reshape(lead + (1,)), w)


def layernorm_backward(dy, cache):
    """dy (..., D) -> (dx (..., D), dw (D,), db (D,))."""
    fn = "layernorm_backward"
    xhat, rstd, w = cache
    dt = dtype_of(fn, xhat)
    xhat, rstd, w = (as_dtype(fn, "cache", a, dt) for a in (xhat, rstd, w))
    dy = as_dtype(fn, "dy", dy, dt)
    check_shape(fn, "dy", dy, xhat.shape)
    D = xhat.shape[-1]
    dy2 = dy.reshape(-1, D)
    N = dy2.shape[0]
    nblk = (N + _ROW_BLOCK - 1) // _ROW_BLOCK
    dx = np.empty_like(dy2)
    dw_part = np.empty((nblk, D), dtype=dt)
    db_part = np.empty((nblk, D), dtype=dt)
    _layernorm_bwd(dy2, xhat.reshape(-1, D), rstd.reshape(-1), w, dx, dw_part, db_part)
    dw = np.zeros(D, dtype=dt)
    db = np.zeros(D, dtype=dt)
    _sum_rows(dw_part, dw)
    _sum_rows(db_part, db)
    return dx.reshape(dy.shape), dw, db


# ---- linear ------------------------------------------------------------------------------------

@jit
def _add_bias(y, b):
    N, D = y.shape
    for i in range(N):
        for d in range(D):
            y[i, d] += b[d]


@jit
def _col_sum(a, part):
    N, D = a.shape
    zero = a.dtype.type(0.0)
    for blk in range(part.shape[0]):
        for d in range(D):
            part[blk, d] = zero
        for i in range(blk * _ROW_BLOCK, min(N, (blk + 1) * _ROW_BLOCK)):
            for d in range(D):
                part[blk, d] += a[i, d]


def _column_sum(a):
    """(N, D) -> (D,): the partial sums of blocks of _ROW_BLOCK rows, then their sum in order."""
    nblk = (a.shape[0] + _ROW_BLOCK - 1) // _ROW_BLOCK
    part = np.empty((nblk, a.shape[1]), dtype=a.dtype)
    _col_sum(a, part)
    out = np.zeros(a.shape[1], dtype=a.dtype)
    _sum_rows(part, out)
    return out


def linear_forward(x, W, b):
    """x (..., Din), W (Din, Dout) used as x @ W (GPT-2 Conv1D layout), b (Dout,) -> (..., Dout)."""
    fn = "linear_forward"
    dt, (x, W, b) = floats(fn, x=x, W=W, b=b)
    if W.ndim != 2 or x.ndim < 1 or x.shape[-1] != W.shape[0]:
        raise DataError(f"{fn}: x (..., Din) and W (Din, Dout) must agree on Din, "
                        f"got {x.shape} and {W.shape}")
    check_shape(fn, "b", b, (W.shape[1],))
    # One 2-D BLAS call: numpy would run a 3-D x @ W as one small matmul per batch entry.
    y = x.reshape(-1, W.shape[0]) @ W
    _add_bias(y, b)
    return y.reshape(x.shape[:-1] + (W.shape[1],)), (x, W)


def linear_backward(dy, cache):
    """dy (..., Dout) -> (dx (..., Din), dW (Din, Dout), db (Dout,))."""
    fn = "linear_backward"
    x, W = cache
    dt = dtype_of(fn, W)
    x, W = as_dtype(fn, "cache", x, dt), as_dtype(fn, "cache", W, dt)
    dy = as_dtype(fn, "dy", dy, dt)
    check_shape(fn, "dy", dy, x.shape[:-1] + (W.shape[1],))
    dy2 = dy.reshape(-1, W.shape[1])
    x2 = x.reshape(-1, W.shape[0])
    dx = (dy2 @ W.T).reshape(x.shape)
    dW = x2.T @ dy2
    return dx, dW, _column_sum(dy2)


# ---- gelu (tanh approximation, as GPT-2) -------------------------------------------------------

@jit
def _gelu_fwd(x, y, t):
    c = x.dtype.type(GELU_C)
    k = x.dtype.type(GELU_K)
    half = x.dtype.type(0.5)
    one = x.dtype.type(1.0)
    for i in range(x.size):
        xi = x[i]
        ti = tanh(c * (xi + k * xi * xi * xi))
        t[i] = ti
        y[i] = half * xi * (one + ti)


@jit
def _gelu_bwd(dy, x, t, dx):
    c = x.dtype.type(GELU_C)
    k3 = x.dtype.type(3.0 * GELU_K)
    half = x.dtype.type(0.5)
    one = x.dtype.type(1.0)
    for i in range(x.size):
        xi = x[i]
        ti = t[i]
        du = c * (one + k3 * xi * xi)
        dx[i] = dy[i] * (half * (one + ti) + half * xi * (one - ti * ti) * du)


def gelu_forward(x):
    """Elementwise, any shape; the cache is (x, tanh(...)) as in the oracle."""
    dt, (x,) = floats("gelu_forward", x=x)
    y = np.empty_like(x)
    t = np.empty_like(x)
    # The forward pass is bound by tanh, so storing t is free and halves the backward's work.
    _gelu_fwd(x.reshape(-1), y.reshape(-1), t.reshape(-1))
    return y, (x, t)


def gelu_backward(dy, cache):
    """dy (same shape as x) -> dx."""
    fn = "gelu_backward"
    x, t = cache
    dt = dtype_of(fn, x)
    x, t = as_dtype(fn, "cache", x, dt), as_dtype(fn, "cache", t, dt)
    dy = as_dtype(fn, "dy", dy, dt)
    check_shape(fn, "dy", dy, x.shape)
    check_shape(fn, "cache", t, x.shape)
    dx = np.empty_like(x)
    _gelu_bwd(dy.reshape(-1), x.reshape(-1), t.reshape(-1), dx.reshape(-1))
    return dx


# ---- causal self-attention core -----------------------------------------------------------------
# One (batch, head) pair at a time, everything else in small inner loops. Masked keys take part
# in the sums with weight exactly 0, as in the oracle's matmuls, so a NaN or inf anywhere in a
# head spreads to exactly the same outputs.

@jit
def _attention_fwd(q, k, v, scale, z, pattern):
    B, H, Tq, Dh = q.shape
    Tk = k.shape[2]
    off = Tk - Tq
    zero = q.dtype.type(0.0)
    ninf = q.dtype.type(-np.inf)
    for bh in range(B * H):
        b = bh // H
        h = bh - b * H
        for i in range(Tq):
            last = off + i  # the last key this query may see
            m = ninf
            for j in range(last + 1):
                s = zero
                for d in range(Dh):
                    s += q[b, h, i, d] * k[b, h, j, d]
                s *= scale
                pattern[b, h, i, j] = s
                if s > m:
                    m = s
            masked_softmax_row(pattern[b, h, i], last, m)
            for d in range(Dh):
                z[b, h, i, d] = zero
            for j in range(Tk):
                p = pattern[b, h, i, j]
                for d in range(Dh):
                    z[b, h, i, d] += p * v[b, h, j, d]


@jit
def _attention_bwd(dz, q, k, v, pattern, scale, dq, dk, dv, ds):
    B, H, Tq, Dh = q.shape
    Tk = k.shape[2]
    zero = q.dtype.type(0.0)
    for bh in range(B * H):
        b = bh // H
        h = bh - b * H
        for j in range(Tk):
            for d in range(Dh):
                dk[b, h, j, d] = zero
                dv[b, h, j, d] = zero
        for i in range(Tq):
            rowdot = zero
            for j in range(Tk):
                g = zero
                for d in range(Dh):
                    g += dz[b, h, i, d] * v[b, h, j, d]
                ds[b, h, i, j] = g
                rowdot += g * pattern[b, h, i, j]
            for j in range(Tk):
                p = pattern[b, h, i, j]
                ds[b, h, i, j] = p * (ds[b, h, i, j] - rowdot) * scale
            for d in range(Dh):
                dq[b, h, i, d] = zero
            for j in range(Tk):
                s = ds[b, h, i, j]
                p = pattern[b, h, i, j]
                for d in range(Dh):
                    dq[b, h, i, d] += s * k[b, h, j, d]
                    dk[b, h, j, d] += s * q[b, h, i, d]
                    dv[b, h, j, d] += p * dz[b, h, i, d]


def attention_forward(q, k, v):
    """Causal softmax attention of the last Tq queries over Tk keys.

    q (B, H, Tq, Dh), k and v (B, H, Tk, Dh), Tq <= Tk: query i sits at position Tk - Tq + i,
    so Tq = 1 is the last position only. Returns z (B, H, Tq, Dh); the cache is
    (q, k, v, pattern) with pattern (B, H, Tq, Tk), as in the oracle. Non-contiguous q, k, v
    (e.g. transposed views of a fused qkv projection) are copied first.
    """
    fn = "attention_forward"
    dt, (q, k, v) = floats(fn, q=q, k=k, v=v)
    if q.ndim != 4 or k.ndim != 4 or k.shape != v.shape or q.shape[:2] != k.shape[:2] \
            or q.shape[3] != k.shape[3] or q.shape[2] > k.shape[2]:
        raise DataError(f"{fn}: need q (B, H, Tq, Dh) and k, v (B, H, Tk, Dh) with Tq <= Tk, "
                        f"got {q.shape}, {k.shape}, {v.shape}")
    B, H, Tq, Dh = q.shape
    Tk = k.shape[2]
    z = np.empty_like(q)
    pattern = np.empty((B, H, Tq, Tk), dtype=dt)
    if Dh:
        _attention_fwd(q, k, v, dt.type(1.0 / math.sqrt(Dh)), z, pattern)
    return z, (q, k, v, pattern)


def attention_backward(dz, cache):
    """dz (B, H, Tq, Dh) -> (dq, dk, dv) with the shapes of q, k, v."""
    fn = "attention_backward"
    q, k, v, pattern = cache
    dt = dtype_of(fn, q)
    q, k, v, pattern = (as_dtype(fn, "cache", a, dt) for a in (q, k, v, pattern))
    dz = as_dtype(fn, "dz", dz, dt)
    check_shape(fn, "dz", dz, q.shape)
    dq = np.empty_like(q)
    dk = np.empty_like(k)
    dv = np.empty_like(v)
    if q.shape[3] == 0:
        return dq, dk, dv
    ds = np.empty(pattern.shape, dtype=dt)
    _attention_bwd(dz, q, k, v, pattern, dt.type(1.0 / math.sqrt(q.shape[3])), dq, dk, dv, ds)
    return dq, dk, dv


# ---- softmax cross-entropy ----------------------------------------------------------------------

@jit
def _cross_entropy_fwd(logits, targets, probs, logp_target):
    N, C = logits.shape
    zero = logits.dtype.type(0.0)
    one = logits.dtype.type(1.0)
    ninf = logits.dtype.type(-np.inf)
    for i in range(N):
        m = ninf
        for c in range(C):
            if logits[i, c] > m:
                m = logits[i, c]
        tot = zero
        for c in range(C):
            e = exp(logits[i, c] - m)
            probs[i, c] = e
            tot += e
        inv = one / tot
        for c in range(C):
            probs[i, c] *= inv
        logp_target[i] = logits[i, targets[i]] - m - np.log(tot)


@jit
def _cross_entropy_bwd(probs, targets, scale, dlogits):
    N, C = probs.shape
    one = probs.dtype.type(1.0)
    for i in range(N):
        for c in range(C):
            dlogits[i, c] = probs[i, c] * scale
        dlogits[i, targets[i]] = (probs[i, targets[i]] - one) * scale


def cross_entropy_forward(logits, targets):
    """logits (B, C), targets (B,) int -> mean loss over the batch (a 0-d numpy scalar)."""
    fn = "cross_entropy_forward"
    dt, (logits,) = floats(fn, logits=logits)
    if logits.ndim != 2:
        raise DataError(f"{fn}: logits must be (B, C), got shape {logits.shape}")
    tg = indices(fn, "targets", targets, logits.shape[:1], logits.shape[1])
    probs = np.empty_like(logits)
    logp_target = np.empty(logits.shape[0], dtype=dt)
    _cross_entropy_fwd(logits, tg, probs, logp_target)
    return -logp_target.mean(), (probs, tg)


def cross_entropy_backward(dloss, cache):
    """dloss scalar -> dlogits (B, C), in the dtype of the logits."""
    fn = "cross_entropy_backward"
    probs, targets = cache
    dt = dtype_of(fn, probs)
    probs = as_dtype(fn, "cache", probs, dt)
    tg = indices(fn, "targets", targets, probs.shape[:1], probs.shape[1])
    if np.ndim(dloss) != 0:
        raise DataError(f"{fn}: dloss must be a scalar, got shape {np.shape(dloss)}")
    dlogits = np.empty_like(probs)
    n = max(probs.shape[0], 1)
    _cross_entropy_bwd(probs, tg, dt.type(float(dloss) / n), dlogits)
    return dlogits
