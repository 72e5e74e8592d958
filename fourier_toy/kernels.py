"""Numba versions of the ops in `ops.py`: same names, signatures, shapes and results.

A model picks its backend module (`ops` or `kernels`) by a config switch and calls, e.g.,
`backend.layernorm_forward(x, w, b)`. Each public function here validates and normalizes its
inputs (float32 or float64, C-contiguous; mixed float inputs promote as numpy would) and hands
them to a private `@njit` kernel. Outputs keep the input dtype. The caches have the same
structure as the oracle's, so either module's backward accepts either module's cache.

Two layers of kernels:
- the op-by-op kernels (public, with the oracle's signatures): what a model runs when hooks are
  attached or every position is asked for, and what the tests compare with `ops.py` one by one;
- the fused row kernels (private, further down), which the model's fused path (model.py) calls
  between its matmuls with preallocated outputs: embedding + LayerNorm, residual add + LayerNorm,
  bias + GELU, attention that reads q, k, v in place from the fused projection, LayerNorm
  backward + residual + bias gradient, softmax cross-entropy with its gradient in one pass.
Matmuls stay in BLAS, always as one 2-D call. Where the time goes and what the fusions bought:
docs/performance.md. The thread policy (which threads run what) is in its own section below.

Transcendentals: float32 uses the vectorizable `exp` and `tanh` approximations below (a few ulp;
the C library's scalar calls would cost more than the whole op); float64, used for gradient
checks, calls the C library.

Shapes use B = batch, T = sequence length, D = width, H = heads, Dh = head size, N = rows.
"""

from __future__ import annotations

import math
import operator
import os
import threading

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from fourier_toy.errors import ConfigError, DataError
from fourier_toy.ops import LN_EPS

__all__ = [
    "FASTMATH",
    "JIT_OPTIONS",
    "adamw_update",
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
    "run_tasks",
    "single_threaded_blas",
    "threads",
    "warmup",
]

# ---- numba policy: the one place where kernels get their compile options ---------------------
# fastmath without 'nnan' and 'ninf': causal masks are -inf and NaN must propagate, so the
# compiler may not assume either away.
FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})
# error_model="numpy": float division by zero gives inf/NaN as in numpy rather than raising, and
# leaves loops free of the checks that block vectorization. cache=True: a second run reuses the
# compiled code from __pycache__.
JIT_OPTIONS = {"cache": True, "fastmath": set(FASTMATH), "error_model": "numpy", "nogil": True}
_jit = njit(**JIT_OPTIONS)
# parallel=True only for kernels whose prange iterations write disjoint rows or column blocks;
# reductions across rows go through per-block partial rows, summed afterwards in a fixed order,
# so results do not depend on the thread count.
_pjit = njit(parallel=True, **JIT_OPTIONS)
# Helpers inlined into kernels (the float32 exp/tanh) get the same floating-point flags.
_OVERLOAD_OPTIONS = {"fastmath": set(FASTMATH), "error_model": "numpy"}

_ROW_BLOCK = 64  # rows per partial-sum block in row reductions
_COL_BLOCK = 16  # columns per task in the embedding scatter (one cache line of float32)
_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_K = 0.044715
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


# ---- float32 transcendentals -------------------------------------------------------------------
# Written as branch-free arithmetic so loops over them vectorize. Comparisons are arranged so a
# NaN input fails every test and flows through the arithmetic to a NaN output.

@intrinsic
def _pow2_f32(typingctx, nf):
    """2.0**n as float32 for an integer-valued float32 n in [-126, 127], by building the bits."""
    if nf != types.float32:
        return None
    sig = types.float32(types.float32)

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        n = builder.fptosi(args[0], i32)
        bits = builder.shl(builder.add(n, ir.Constant(i32, 127)), ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())

    return sig, codegen


_F32 = np.float32
_LOG2E = _F32(1.4426950408889634)
_LN2_HI = _F32(0.693359375)  # Cody-Waite split of ln 2: n * _LN2_HI is exact
_LN2_LO = _F32(-2.12194440e-4)
_EXP_C = tuple(_F32(1.0 / math.factorial(i)) for i in range(10))
_F32_HALF, _F32_ZERO, _F32_ONE, _F32_INF = _F32(0.5), _F32(0.0), _F32(1.0), _F32(np.inf)
_F32_EXP_LO, _F32_EXP_HI = _F32(-104.0), _F32(89.0)
_F32_N_LO, _F32_N_HI = _F32(-150.0), _F32(127.0)


def _exp32_impl(x):
    # exp(x) = 2**n * exp(f) with n = round(x / ln 2). n stays <= 127 so that no product of the
    # powers of two overflows, whichever order 'reassoc' multiplies them in; f then reaches
    # 0.7 near the top of the range, which the degree-9 polynomial still covers.
    r = x * _LOG2E
    if r < _F32_N_LO:
        r = _F32_N_LO
    if r > _F32_N_HI:
        r = _F32_N_HI
    nf = np.floor(r + _F32_HALF)
    if nf != nf:  # NaN: keep the integer conversion defined; f stays NaN
        nf = _F32_ZERO
    f = (x - nf * _LN2_HI) - nf * _LN2_LO
    p = _EXP_C[9]
    p = p * f + _EXP_C[8]
    p = p * f + _EXP_C[7]
    p = p * f + _EXP_C[6]
    p = p * f + _EXP_C[5]
    p = p * f + _EXP_C[4]
    p = p * f + _EXP_C[3]
    p = p * f + _EXP_C[2]
    p = p * f + _EXP_C[1]
    p = p * f + _EXP_C[0]
    # Two factors keep each 2**n normal, so results down to the denormals come out right.
    h = np.floor(nf * _F32_HALF)
    res = p * _pow2_f32(h) * _pow2_f32(nf - h)
    if x < _F32_EXP_LO:
        res = _F32_ZERO
    if x > _F32_EXP_HI:
        res = _F32_INF
    return res


# Rational minimax approximation of tanh on [-7.9988, 7.9988] (the one Eigen uses for float32;
# max relative error about 3.5e-7). Beyond 9.1 float32 tanh rounds to +-1 exactly.
_TANH_A = tuple(_F32(c) for c in (
    4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
    -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16))
_TANH_B = tuple(_F32(c) for c in (
    4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06))
_TANH_CLAMP, _TANH_SAT, _TANH_TINY = _F32(7.99881172180175781), _F32(9.1), _F32(0.0004)


def _tanh32_impl(x):
    xc = x
    if xc > _TANH_CLAMP:
        xc = _TANH_CLAMP
    if xc < -_TANH_CLAMP:
        xc = -_TANH_CLAMP
    x2 = xc * xc
    p = _TANH_A[6]
    p = p * x2 + _TANH_A[5]
    p = p * x2 + _TANH_A[4]
    p = p * x2 + _TANH_A[3]
    p = p * x2 + _TANH_A[2]
    p = p * x2 + _TANH_A[1]
    p = p * x2 + _TANH_A[0]
    q = _TANH_B[3]
    q = q * x2 + _TANH_B[2]
    q = q * x2 + _TANH_B[1]
    q = q * x2 + _TANH_B[0]
    res = xc * p / q
    if abs(x) < _TANH_TINY:
        res = x
    if x > _TANH_SAT:
        res = _F32_ONE
    if x < -_TANH_SAT:
        res = -_F32_ONE
    return res


def _exp(x):
    """exp for kernels: the float32 approximation above, or the C library for float64."""
    return math.exp(x)


def _tanh(x):
    """tanh for kernels: the float32 approximation above, or the C library for float64."""
    return math.tanh(x)


@overload(_exp, jit_options=_OVERLOAD_OPTIONS)
def _exp_overload(x):
    if x == types.float32:
        return _exp32_impl
    if isinstance(x, types.Float):
        return lambda x: math.exp(x)
    return None


@overload(_tanh, jit_options=_OVERLOAD_OPTIONS)
def _tanh_overload(x):
    if x == types.float32:
        return _tanh32_impl
    if isinstance(x, types.Float):
        return lambda x: math.tanh(x)
    return None


# ---- input normalization -------------------------------------------------------------------------

def _floats(fn, **arrays):
    """Arrays of one float dtype (float32 or float64, promoted as numpy would), C-contiguous."""
    arrs = {name: np.asarray(a) for name, a in arrays.items()}
    for name, a in arrs.items():
        if a.dtype.kind != "f":
            raise DataError(f"{fn}: {name} must be a float32 or float64 array, got {a.dtype}")
    dt = np.result_type(*arrs.values())
    if dt not in _FLOATS:
        names = ", ".join(arrs)
        raise DataError(f"{fn}: {names} must be float32 or float64, got {dt}")
    return dt, [np.ascontiguousarray(a, dtype=dt) for a in arrs.values()]


def _as(fn, name, a, dt, kinds="f"):
    """An array cast to dtype dt (the forward pass's, for gradients and caches), C-contiguous."""
    a = np.asarray(a)
    if a.dtype.kind not in kinds:
        raise DataError(f"{fn}: {name} must be a float array, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=dt)


def _dtype_of(fn, a):
    """The forward pass's dtype, read from a cached array."""
    dt = np.asarray(a).dtype
    if dt not in _FLOATS:
        raise DataError(f"{fn}: cache arrays must be float32 or float64, got {dt}")
    return dt


def _check_shape(fn, name, a, shape):
    if a.shape != tuple(shape):
        raise DataError(f"{fn}: {name} must have shape {tuple(shape)}, got {a.shape}")


def _indices(fn, name, a, shape, upper):
    """Integer indices of the given shape in [0, upper), as intp."""
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise DataError(f"{fn}: {name} must be an integer array, got dtype {a.dtype}")
    _check_shape(fn, name, a, shape)
    if a.size and (a.min() < 0 or a.max() >= upper):
        raise DataError(f"{fn}: {name} must lie in [0, {upper}), got values in "
                        f"[{a.min()}, {a.max()}]")
    return np.ascontiguousarray(a, dtype=np.intp)


# ---- embedding ---------------------------------------------------------------------------------

@_pjit
def _embedding_fwd(tokens, wte, wpe, out):
    B, T = tokens.shape
    D = wte.shape[1]
    for bi in prange(B):
        for t in range(T):
            tok = tokens[bi, t]
            for d in range(D):
                out[bi, t, d] = wte[tok, d] + wpe[t, d]


@_pjit
def _embedding_bwd(tokens, dx, dwte, dwpe):
    # Tokens repeat within a batch, so rows of dwte collide; splitting the work by column block
    # keeps every thread's writes disjoint and the per-entry order the same as a serial scatter.
    B, T = tokens.shape
    D = dx.shape[2]
    nblk = (D + _COL_BLOCK - 1) // _COL_BLOCK
    for blk in prange(nblk):
        d0 = blk * _COL_BLOCK
        d1 = min(D, d0 + _COL_BLOCK)
        for bi in range(B):
            for t in range(T):
                tok = tokens[bi, t]
                for d in range(d0, d1):
                    g = dx[bi, t, d]
                    dwte[tok, d] += g
                    dwpe[t, d] += g


def embedding_forward(tokens, wte, wpe):
    """tokens (B, T) int, wte (V, D), wpe (n_ctx, D) -> x (B, T, D) = wte[tokens] + wpe[:T]."""
    fn = "embedding_forward"
    dt, (wte, wpe) = _floats(fn, wte=wte, wpe=wpe)
    if wte.ndim != 2 or wpe.ndim != 2 or wte.shape[1] != wpe.shape[1]:
        raise DataError(f"{fn}: wte (V, D) and wpe (n_ctx, D) must be 2-D with the same D, "
                        f"got {wte.shape} and {wpe.shape}")
    tok = np.asarray(tokens)
    if tok.ndim != 2 or tok.shape[1] > wpe.shape[0]:
        raise DataError(f"{fn}: tokens must be (B, T) with T <= n_ctx = {wpe.shape[0]}, "
                        f"got shape {tok.shape}")
    tok = _indices(fn, "tokens", tok, tok.shape, wte.shape[0])
    out = np.empty(tok.shape + (wte.shape[1],), dtype=dt)
    _embedding_fwd(tok, wte, wpe, out)
    return out, (tokens, wte.shape, wpe.shape)


def embedding_backward(dx, cache):
    """dx (B, T, D) -> (dwte (V, D), dwpe (n_ctx, D))."""
    fn = "embedding_backward"
    tokens, wte_shape, wpe_shape = cache
    tok = _indices(fn, "tokens", tokens, np.shape(tokens), wte_shape[0])
    dx = np.asarray(dx)
    if dx.dtype not in _FLOATS:
        raise DataError(f"{fn}: dx must be float32 or float64, got {dx.dtype}")
    _check_shape(fn, "dx", dx, tok.shape + (wte_shape[1],))
    dx = np.ascontiguousarray(dx)
    dwte = np.zeros(wte_shape, dtype=dx.dtype)
    dwpe = np.zeros(wpe_shape, dtype=dx.dtype)
    _embedding_bwd(tok, dx, dwte, dwpe)
    return dwte, dwpe


# ---- layer norm --------------------------------------------------------------------------------

@_pjit
def _layernorm_fwd(x, w, b, eps, y, xhat, rstd):
    N, D = x.shape
    zero = x.dtype.type(0.0)
    one = x.dtype.type(1.0)
    inv_d = one / x.dtype.type(D)
    for i in prange(N):
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


@_pjit
def _layernorm_bwd(dy, xhat, rstd, w, dx, dw_part, db_part):
    N, D = dy.shape
    zero = dy.dtype.type(0.0)
    inv_d = dy.dtype.type(1.0) / dy.dtype.type(D)
    nblk = dw_part.shape[0]
    for blk in prange(nblk):
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


@_jit
def _sum_rows(part, out):
    """out[d] = sum over blocks of part[blk, d], in block order."""
    for blk in range(part.shape[0]):
        for d in range(part.shape[1]):
            out[d] += part[blk, d]


def layernorm_forward(x, w, b, eps=LN_EPS):
    """x (..., D), w (D,), b (D,) -> y (..., D); biased variance, as GPT-2."""
    fn = "layernorm_forward"
    dt, (x, w, b) = _floats(fn, x=x, w=w, b=b)
    if x.ndim < 1:
        raise DataError(f"{fn}: x must have at least one axis, got a scalar")
    D = x.shape[-1]
    _check_shape(fn, "w", w, (D,))
    _check_shape(fn, "b", b, (D,))
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
    dt = _dtype_of(fn, xhat)
    xhat, rstd, w = (_as(fn, "cache", a, dt) for a in (xhat, rstd, w))
    dy = _as(fn, "dy", dy, dt)
    _check_shape(fn, "dy", dy, xhat.shape)
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

@_pjit
def _add_bias(y, b):
    N, D = y.shape
    for i in prange(N):
        for d in range(D):
            y[i, d] += b[d]


@_pjit
def _col_sum(a, part):
    N, D = a.shape
    zero = a.dtype.type(0.0)
    for blk in prange(part.shape[0]):
        for d in range(D):
            part[blk, d] = zero
        for i in range(blk * _ROW_BLOCK, min(N, (blk + 1) * _ROW_BLOCK)):
            for d in range(D):
                part[blk, d] += a[i, d]


def _column_sum(a):
    """(N, D) -> (D,): block partial sums in parallel, then the blocks in order."""
    nblk = (a.shape[0] + _ROW_BLOCK - 1) // _ROW_BLOCK
    part = np.empty((nblk, a.shape[1]), dtype=a.dtype)
    _col_sum(a, part)
    out = np.zeros(a.shape[1], dtype=a.dtype)
    _sum_rows(part, out)
    return out


def linear_forward(x, W, b):
    """x (..., Din), W (Din, Dout) used as x @ W (GPT-2 Conv1D layout), b (Dout,) -> (..., Dout)."""
    fn = "linear_forward"
    dt, (x, W, b) = _floats(fn, x=x, W=W, b=b)
    if W.ndim != 2 or x.ndim < 1 or x.shape[-1] != W.shape[0]:
        raise DataError(f"{fn}: x (..., Din) and W (Din, Dout) must agree on Din, "
                        f"got {x.shape} and {W.shape}")
    _check_shape(fn, "b", b, (W.shape[1],))
    # One 2-D BLAS call: numpy would run a 3-D x @ W as one small matmul per batch entry.
    y = x.reshape(-1, W.shape[0]) @ W
    _add_bias(y, b)
    return y.reshape(x.shape[:-1] + (W.shape[1],)), (x, W)


def linear_backward(dy, cache):
    """dy (..., Dout) -> (dx (..., Din), dW (Din, Dout), db (Dout,))."""
    fn = "linear_backward"
    x, W = cache
    dt = _dtype_of(fn, W)
    x, W = _as(fn, "cache", x, dt), _as(fn, "cache", W, dt)
    dy = _as(fn, "dy", dy, dt)
    _check_shape(fn, "dy", dy, x.shape[:-1] + (W.shape[1],))
    dy2 = dy.reshape(-1, W.shape[1])
    x2 = x.reshape(-1, W.shape[0])
    dx = (dy2 @ W.T).reshape(x.shape)
    dW = x2.T @ dy2
    return dx, dW, _column_sum(dy2)


# ---- gelu (tanh approximation, as GPT-2) -------------------------------------------------------

@_pjit
def _gelu_fwd(x, y, t):
    c = x.dtype.type(_GELU_C)
    k = x.dtype.type(_GELU_K)
    half = x.dtype.type(0.5)
    one = x.dtype.type(1.0)
    for i in prange(x.size):
        xi = x[i]
        ti = _tanh(c * (xi + k * xi * xi * xi))
        t[i] = ti
        y[i] = half * xi * (one + ti)


@_pjit
def _gelu_bwd(dy, x, t, dx):
    c = x.dtype.type(_GELU_C)
    k3 = x.dtype.type(3.0 * _GELU_K)
    half = x.dtype.type(0.5)
    one = x.dtype.type(1.0)
    for i in prange(x.size):
        xi = x[i]
        ti = t[i]
        du = c * (one + k3 * xi * xi)
        dx[i] = dy[i] * (half * (one + ti) + half * xi * (one - ti * ti) * du)


def gelu_forward(x):
    """Elementwise, any shape; the cache is (x, tanh(...)) as in the oracle."""
    dt, (x,) = _floats("gelu_forward", x=x)
    y = np.empty_like(x)
    t = np.empty_like(x)
    # The forward pass is bound by tanh, so storing t is free and halves the backward's work.
    _gelu_fwd(x.reshape(-1), y.reshape(-1), t.reshape(-1))
    return y, (x, t)


def gelu_backward(dy, cache):
    """dy (same shape as x) -> dx."""
    fn = "gelu_backward"
    x, t = cache
    dt = _dtype_of(fn, x)
    x, t = _as(fn, "cache", x, dt), _as(fn, "cache", t, dt)
    dy = _as(fn, "dy", dy, dt)
    _check_shape(fn, "dy", dy, x.shape)
    _check_shape(fn, "cache", t, x.shape)
    dx = np.empty_like(x)
    _gelu_bwd(dy.reshape(-1), x.reshape(-1), t.reshape(-1), dx.reshape(-1))
    return dx


# ---- causal self-attention core -----------------------------------------------------------------
# One (batch, head) pair per prange iteration, everything else in small inner loops. Masked keys
# take part in the sums with weight exactly 0, as in the oracle's matmuls, so a NaN or inf
# anywhere in a head spreads to exactly the same outputs.

@_pjit
def _attention_fwd(q, k, v, scale, z, pattern):
    B, H, Tq, Dh = q.shape
    Tk = k.shape[2]
    off = Tk - Tq
    zero = q.dtype.type(0.0)
    one = q.dtype.type(1.0)
    ninf = q.dtype.type(-np.inf)
    for bh in prange(B * H):
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
            tot = zero
            for j in range(last + 1):
                e = _exp(pattern[b, h, i, j] - m)
                pattern[b, h, i, j] = e
                tot += e
            inv = one / tot
            for j in range(last + 1):
                pattern[b, h, i, j] *= inv
            for j in range(last + 1, Tk):
                pattern[b, h, i, j] = zero * inv  # 0, or NaN in a NaN row as in the oracle
            for d in range(Dh):
                z[b, h, i, d] = zero
            for j in range(Tk):
                p = pattern[b, h, i, j]
                for d in range(Dh):
                    z[b, h, i, d] += p * v[b, h, j, d]


@_pjit
def _attention_bwd(dz, q, k, v, pattern, scale, dq, dk, dv, ds):
    B, H, Tq, Dh = q.shape
    Tk = k.shape[2]
    zero = q.dtype.type(0.0)
    for bh in prange(B * H):
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
    dt, (q, k, v) = _floats(fn, q=q, k=k, v=v)
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
    dt = _dtype_of(fn, q)
    q, k, v, pattern = (_as(fn, "cache", a, dt) for a in (q, k, v, pattern))
    dz = _as(fn, "dz", dz, dt)
    _check_shape(fn, "dz", dz, q.shape)
    dq = np.empty_like(q)
    dk = np.empty_like(k)
    dv = np.empty_like(v)
    if q.shape[3] == 0:
        return dq, dk, dv
    ds = np.empty(pattern.shape, dtype=dt)
    _attention_bwd(dz, q, k, v, pattern, dt.type(1.0 / math.sqrt(q.shape[3])), dq, dk, dv, ds)
    return dq, dk, dv


# ---- softmax cross-entropy ----------------------------------------------------------------------

@_pjit
def _cross_entropy_fwd(logits, targets, probs, logp_target):
    N, C = logits.shape
    zero = logits.dtype.type(0.0)
    one = logits.dtype.type(1.0)
    ninf = logits.dtype.type(-np.inf)
    for i in prange(N):
        m = ninf
        for c in range(C):
            if logits[i, c] > m:
                m = logits[i, c]
        tot = zero
        for c in range(C):
            e = _exp(logits[i, c] - m)
            probs[i, c] = e
            tot += e
        inv = one / tot
        for c in range(C):
            probs[i, c] *= inv
        logp_target[i] = logits[i, targets[i]] - m - np.log(tot)


@_pjit
def _cross_entropy_bwd(probs, targets, scale, dlogits):
    N, C = probs.shape
    one = probs.dtype.type(1.0)
    for i in prange(N):
        for c in range(C):
            dlogits[i, c] = probs[i, c] * scale
        dlogits[i, targets[i]] = (probs[i, targets[i]] - one) * scale


def cross_entropy_forward(logits, targets):
    """logits (B, C), targets (B,) int -> mean loss over the batch (a 0-d numpy scalar)."""
    fn = "cross_entropy_forward"
    dt, (logits,) = _floats(fn, logits=logits)
    if logits.ndim != 2:
        raise DataError(f"{fn}: logits must be (B, C), got shape {logits.shape}")
    tg = _indices(fn, "targets", targets, logits.shape[:1], logits.shape[1])
    probs = np.empty_like(logits)
    logp_target = np.empty(logits.shape[0], dtype=dt)
    _cross_entropy_fwd(logits, tg, probs, logp_target)
    return -logp_target.mean(), (probs, tg)


def cross_entropy_backward(dloss, cache):
    """dloss scalar -> dlogits (B, C), in the dtype of the logits."""
    fn = "cross_entropy_backward"
    probs, targets = cache
    dt = _dtype_of(fn, probs)
    probs = _as(fn, "cache", probs, dt)
    tg = _indices(fn, "targets", targets, probs.shape[:1], probs.shape[1])
    if np.ndim(dloss) != 0:
        raise DataError(f"{fn}: dloss must be a scalar, got shape {np.shape(dloss)}")
    dlogits = np.empty_like(probs)
    n = max(probs.shape[0], 1)
    _cross_entropy_bwd(probs, tg, dt.type(float(dloss) / n), dlogits)
    return dlogits


# ---- fused row kernels (the model's training and evaluation path) -------------------------------
# Serial kernels over rows of 2-D (rows, width) arrays, called by model.py with preallocated
# outputs: a batch is split into pieces that run on separate threads (see the thread policy
# below), so these kernels never start threads of their own. Each one fuses the passes that sit
# between two matmuls. Rows of a piece are example-major: row b*T + t is position t of example b.
# "step" arguments map a short array onto the last positions: with step T, row i of the short
# array belongs to row i*T + T - 1 of the long one (the last layer computes only those rows);
# with step 1 the two arrays are row-aligned.

@_jit
def _embed_ln_fwd(tokens, wte, wpe, lnw, lnb, eps, x, a, mean, rstd):
    """x[b*T + t] = wte[tokens[b, t]] + wpe[t]; a = LayerNorm(x) with (lnw, lnb); per-row
    mean and rstd kept for the backward pass."""
    B, T = tokens.shape
    D = wte.shape[1]
    zero = x.dtype.type(0.0)
    inv_d = x.dtype.type(1.0) / x.dtype.type(D)
    for bi in range(B):
        for t in range(T):
            r = bi * T + t
            tok = tokens[bi, t]
            s = zero
            for d in range(D):
                v = wte[tok, d] + wpe[t, d]
                x[r, d] = v
                s += v
            mu = s * inv_d
            var = zero
            for d in range(D):
                c = x[r, d] - mu
                var += c * c
            rs = x.dtype.type(1.0) / np.sqrt(var * inv_d + eps)
            mean[r] = mu
            rstd[r] = rs
            for d in range(D):
                a[r, d] = (x[r, d] - mu) * rs * lnw[d] + lnb[d]


@_jit
def _res_ln_fwd(base, step, y, bias, lnw, lnb, eps, out, a, mean, rstd):
    """out[i] = base[i*step + step - 1] + y[i] + bias (a residual add after a projection);
    a = LayerNorm(out) with (lnw, lnb); per-row mean and rstd kept for the backward pass."""
    M, D = y.shape
    zero = y.dtype.type(0.0)
    inv_d = y.dtype.type(1.0) / y.dtype.type(D)
    for i in range(M):
        br = i * step + step - 1
        s = zero
        for d in range(D):
            v = base[br, d] + y[i, d] + bias[d]
            out[i, d] = v
            s += v
        mu = s * inv_d
        var = zero
        for d in range(D):
            c = out[i, d] - mu
            var += c * c
        rs = y.dtype.type(1.0) / np.sqrt(var * inv_d + eps)
        mean[i] = mu
        rstd[i] = rs
        for d in range(D):
            a[i, d] = (out[i, d] - mu) * rs * lnw[d] + lnb[d]


@_jit
def _ln_res_bwd(dy, dy2, step2, x, mean, rstd, w, dres, step3, dx, dw, db, dsum):
    """The backward pass of out = LayerNorm(x) with a residual branch, for M rows of width D.

    The gradient arriving at the LayerNorm output is dy[i], plus dy2[i // step2] on rows
    i = k*step2 + step2 - 1 (dy2 may have 0 rows). dx[i] = LayerNorm'(x[i])^T g + the residual
    gradient dres[i // step3] on rows i = k*step3 + step3 - 1 (dres may have 0 rows).
    Writes dw, db (the LayerNorm's gain and bias gradients) and dsum = the column sums of dx
    (the gradient of the bias added just before x).
    """
    M, D = dy.shape
    zero = dy.dtype.type(0.0)
    inv_d = dy.dtype.type(1.0) / dy.dtype.type(D)
    n2 = dy2.shape[0]
    n3 = dres.shape[0]
    for d in range(D):
        dw[d] = zero
        db[d] = zero
        dsum[d] = zero
    for i in range(M):
        k2 = -1
        if n2 > 0 and (i + 1) % step2 == 0:
            k2 = (i + 1) // step2 - 1
        k3 = -1
        if n3 > 0 and (i + 1) % step3 == 0:
            k3 = (i + 1) // step3 - 1
        mu = mean[i]
        rs = rstd[i]
        s1 = zero
        s2 = zero
        for d in range(D):
            g = dy[i, d]
            if k2 >= 0:
                g += dy2[k2, d]
            xh = (x[i, d] - mu) * rs
            dw[d] += g * xh
            db[d] += g
            gw = g * w[d]
            dx[i, d] = gw  # kept rounded, so that g*w - mean(g*w) cancels exactly when it should
            s1 += gw
            s2 += gw * xh
        m1 = s1 * inv_d
        m2 = s2 * inv_d
        for d in range(D):
            xh = (x[i, d] - mu) * rs
            v = rs * (dx[i, d] - m1 - xh * m2)
            if k3 >= 0:
                v += dres[k3, d]
            dx[i, d] = v
            dsum[d] += v


@_jit
def _gelu_bias_fwd(h, bias, act):
    """h += bias (in place: h then holds the pre-activation the backward pass needs);
    act = gelu(h), tanh approximation."""
    M, F = h.shape
    c = h.dtype.type(_GELU_C)
    k = h.dtype.type(_GELU_K)
    half = h.dtype.type(0.5)
    one = h.dtype.type(1.0)
    for i in range(M):
        for f in range(F):
            xi = h[i, f] + bias[f]
            h[i, f] = xi
            act[i, f] = half * xi * (one + _tanh(c * (xi + k * xi * xi * xi)))


@_jit
def _gelu_bias_bwd(dact, h, dh, dbias):
    """dh = dact * gelu'(h); dbias = the column sums of dh. (dh must not be dact: an output
    that is also an input defeats vectorization, which costs several times more than a buffer.)"""
    M, F = h.shape
    c = h.dtype.type(_GELU_C)
    k = h.dtype.type(_GELU_K)
    k3 = h.dtype.type(3.0 * _GELU_K)
    half = h.dtype.type(0.5)
    one = h.dtype.type(1.0)
    for f in range(F):
        dbias[f] = h.dtype.type(0.0)
    for i in range(M):
        for f in range(F):
            xi = h[i, f]
            t = _tanh(c * (xi + k * xi * xi * xi))
            du = c * (one + k3 * xi * xi)
            g = dact[i, f] * (half * (one + t) + half * xi * (one - t * t) * du)
            dh[i, f] = g
            dbias[f] += g


@_jit
def _attn_fwd(qs, qc, kvs, kc, vc, bias, H, T, z, pattern):
    """Causal attention of the last Tq positions of each example over its T positions.

    qs (Bp*Tq, .): query projections at columns qc..qc+D; kvs (Bp*T, .): key projections at
    columns kc.., value projections at vc.. (qs may be kvs, for a fused (N, 3D) projection).
    bias (3D,) = [q | k | v] bias, added here in place, so qs and kvs hold q, k, v afterwards.
    Writes z (Bp*Tq, D) with the heads side by side (ready for the output projection) and
    pattern (Bp, H, Tq, T). Masked keys enter the sums with weight exactly 0, as in the oracle.
    """
    # Inner loops run over 1-D slices of one head's columns, so they vectorize.
    Bp = pattern.shape[0]
    Tq = pattern.shape[2]
    D = z.shape[1]
    Dh = D // H
    off = T - Tq
    zero = z.dtype.type(0.0)
    one = z.dtype.type(1.0)
    ninf = z.dtype.type(-np.inf)
    scale = one / np.sqrt(z.dtype.type(Dh))
    bq, bk, bv = bias[:D], bias[D:2 * D], bias[2 * D:3 * D]
    for b in range(Bp):
        for i in range(Tq):
            q = qs[b * Tq + i, qc:qc + D]
            for d in range(D):
                q[d] += bq[d]
        for j in range(T):
            k = kvs[b * T + j, kc:kc + D]
            v = kvs[b * T + j, vc:vc + D]
            for d in range(D):
                k[d] += bk[d]
                v[d] += bv[d]
        for hh in range(H):
            c0 = hh * Dh
            for i in range(Tq):
                q = qs[b * Tq + i, qc + c0:qc + c0 + Dh]
                last = off + i
                m = ninf
                for j in range(last + 1):
                    k = kvs[b * T + j, kc + c0:kc + c0 + Dh]
                    s = zero
                    for d in range(Dh):
                        s += q[d] * k[d]
                    s *= scale
                    pattern[b, hh, i, j] = s
                    if s > m:
                        m = s
                tot = zero
                for j in range(last + 1):
                    e = _exp(pattern[b, hh, i, j] - m)
                    pattern[b, hh, i, j] = e
                    tot += e
                inv = one / tot
                for j in range(last + 1):
                    pattern[b, hh, i, j] *= inv
                for j in range(last + 1, T):
                    pattern[b, hh, i, j] = zero * inv  # 0, or NaN in a NaN row as in the oracle
                zz = z[b * Tq + i, c0:c0 + Dh]
                for d in range(Dh):
                    zz[d] = zero
                for j in range(T):
                    p = pattern[b, hh, i, j]
                    v = kvs[b * T + j, vc + c0:vc + c0 + Dh]
                    for d in range(Dh):
                        zz[d] += p * v[d]


@_jit
def _attn_bwd(dz, qs, qc, kvs, kc, vc, pattern, H, T, dq, dqc, dkv, dkc, dvc, dbias):
    """The backward pass of _attn_fwd (whose q, k, v, with bias, are in qs and kvs).

    dz (Bp*Tq, D) -> dq written at columns dqc.. of dq (Bp*Tq, .), dk and dv at columns dkc..
    and dvc.. of dkv (Bp*T, .) (dq may be dkv, for a fused (N, 3D) gradient); dbias (3D,) =
    the column sums of [dq | dk | dv].
    """
    Bp = pattern.shape[0]
    Tq = pattern.shape[2]
    D = dz.shape[1]
    Dh = D // H
    zero = dz.dtype.type(0.0)
    scale = dz.dtype.type(1.0) / np.sqrt(dz.dtype.type(Dh))
    ds = np.empty(T, dtype=dz.dtype)
    for d in range(3 * D):
        dbias[d] = zero
    dbq, dbk, dbv = dbias[:D], dbias[D:2 * D], dbias[2 * D:3 * D]
    for b in range(Bp):
        for j in range(T):
            dk = dkv[b * T + j, dkc:dkc + D]
            dv = dkv[b * T + j, dvc:dvc + D]
            for d in range(D):
                dk[d] = zero
                dv[d] = zero
        for hh in range(H):
            c0 = hh * Dh
            for i in range(Tq):
                g = dz[b * Tq + i, c0:c0 + Dh]
                q = qs[b * Tq + i, qc + c0:qc + c0 + Dh]
                gq = dq[b * Tq + i, dqc + c0:dqc + c0 + Dh]
                rowdot = zero
                for j in range(T):
                    v = kvs[b * T + j, vc + c0:vc + c0 + Dh]
                    s = zero
                    for d in range(Dh):
                        s += g[d] * v[d]
                    ds[j] = s
                    rowdot += s * pattern[b, hh, i, j]
                for j in range(T):
                    ds[j] = pattern[b, hh, i, j] * (ds[j] - rowdot) * scale
                for d in range(Dh):
                    gq[d] = zero
                for j in range(T):
                    s = ds[j]
                    p = pattern[b, hh, i, j]
                    k = kvs[b * T + j, kc + c0:kc + c0 + Dh]
                    gk = dkv[b * T + j, dkc + c0:dkc + c0 + Dh]
                    gv = dkv[b * T + j, dvc + c0:dvc + c0 + Dh]
                    for d in range(Dh):
                        gq[d] += s * k[d]
                    for d in range(Dh):
                        gk[d] += s * q[d]
                    for d in range(Dh):
                        gv[d] += p * g[d]
        for i in range(Tq):
            gq = dq[b * Tq + i, dqc:dqc + D]
            for d in range(D):
                dbq[d] += gq[d]
        for j in range(T):
            gk = dkv[b * T + j, dkc:dkc + D]
            gv = dkv[b * T + j, dvc:dvc + D]
            for d in range(D):
                dbk[d] += gk[d]
                dbv[d] += gv[d]


@_jit
def _ce_fwd_bwd(logits, targets, scale, dlogits):
    """Softmax cross-entropy and its gradient in one pass over logits (M, C).

    Returns the sum over rows of -log softmax(logits)[target] (accumulated in float64) and writes
    dlogits = (softmax(logits) - onehot(targets)) * scale (scale = dloss / batch size).
    """
    M, C = logits.shape
    zero = logits.dtype.type(0.0)
    ninf = logits.dtype.type(-np.inf)
    total = 0.0
    for i in range(M):
        m = ninf
        for c in range(C):
            if logits[i, c] > m:
                m = logits[i, c]
        tot = zero
        for c in range(C):
            e = _exp(logits[i, c] - m)
            dlogits[i, c] = e
            tot += e
        tg = targets[i]
        total -= logits[i, tg] - m - np.log(tot)
        inv = scale / tot
        for c in range(C):
            dlogits[i, c] *= inv
        dlogits[i, tg] -= scale
    return total


@_jit
def _embed_bwd(tokens, dx, dwte, dwpe):
    """Adds dx (B*T, D) into dwte rows tokens[b, t] and dwpe rows t (serial: rows collide)."""
    B, T = tokens.shape
    D = dx.shape[1]
    for bi in range(B):
        for t in range(T):
            r = bi * T + t
            tok = tokens[bi, t]
            for d in range(D):
                dwte[tok, d] += dx[r, d]
                dwpe[t, d] += dx[r, d]


@_jit
def _add_into(dst, src):
    """dst += src over 1-D arrays (the sum of gradient pieces, one slice per thread)."""
    for i in range(dst.size):
        dst[i] += src[i]


@_jit
def _adamw(p, g, m, v, lr, b1, c1, b2, c2, eps, lr_wd, bc1, bc2, decay, trainable):
    for i in range(p.size):
        if trainable[i] != 0:
            pi = p[i]
            if decay[i] != 0:
                pi -= lr_wd * pi
            gi = g[i]
            mi = b1 * m[i] + c1 * gi
            vi = b2 * v[i] + c2 * gi * gi
            m[i] = mi
            v[i] = vi
            p[i] = pi - lr * (mi / bc1) / (np.sqrt(vi / bc2) + eps)


# ---- thread policy -------------------------------------------------------------------------------
# The model's hot path (a training step, an evaluation batch, the optimizer step) splits its work
# into pieces that run on a small pool of Python threads: the caller's thread plus
# `threads() - 1` pool threads. Inside a piece every kernel is serial and BLAS runs
# single-threaded, so the only synchronization is one blocking wait at the end of a step. Thread
# pools that spin while waiting for work (OpenMP's and OpenBLAS's) are kept out of the hot path:
# on a shared machine two such pools of 2 threads each can slow a step down by 10-40x, and even
# on an idle one they pay a wake-up per matmul. The number of pieces depends only on the batch
# size, never on the thread count, so results are bit-identical for any number of threads.
# numba's own parallel layer (prange) serves only the op-by-op kernels above, used outside the
# hot path (hooks, direct calls).

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


def adamw_update(params, grads, m, v, lr, b1, b2, eps, wd, decay_mask_f32, trainable_mask_f32, t):
    """One AdamW step (PyTorch semantics) on flat buffers, in place on params, m and v.

    params, m, v: writable C-contiguous float arrays of one shape and dtype; grads and the two
    0/1 masks have that shape. Where trainable_mask is 0 nothing changes. Where decay_mask is 1,
    p -= lr * wd * p first; then m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2 and
    p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps). t counts steps from 1.
    Runs as contiguous slices on the hot path's threads (elementwise, so the result does not
    depend on the slicing).
    """
    fn = "adamw_update"
    for name, a in (("params", params), ("m", m), ("v", v)):
        if not isinstance(a, np.ndarray) or a.dtype not in _FLOATS:
            raise DataError(f"{fn}: {name} must be a float32 or float64 numpy array")
        if not (a.flags.c_contiguous and a.flags.writeable):
            raise DataError(f"{fn}: {name} must be C-contiguous and writable (updated in place)")
        if a.dtype != params.dtype or a.shape != params.shape:
            raise DataError(f"{fn}: {name} must match params: {params.dtype} {params.shape}, "
                            f"got {a.dtype} {a.shape}")
    dt = params.dtype
    g = _as(fn, "grads", grads, dt)
    _check_shape(fn, "grads", g, params.shape)
    masks = []
    for name, a in (("decay_mask_f32", decay_mask_f32), ("trainable_mask_f32", trainable_mask_f32)):
        a = _as(fn, name, a, np.float32, kinds="biuf")
        _check_shape(fn, name, a, params.shape)
        masks.append(a.reshape(-1))
    try:
        t = operator.index(t)
    except TypeError:
        raise ConfigError(f"{fn}: t must be an integer step count >= 1, got {t!r}") from None
    if t < 1:
        raise ConfigError(f"{fn}: t must be an integer step count >= 1, got {t}")
    T = dt.type
    args = (T(lr), T(b1), T(1.0 - b1), T(b2), T(1.0 - b2), T(eps), T(lr * wd),
            T(1.0 - b1**t), T(1.0 - b2**t))
    flat = [a.reshape(-1) for a in (params, g, m, v)] + masks
    n = flat[0].size
    k = min(threads(), max(1, n // _MIN_SLICE))
    bounds = [n * j // k for j in range(k + 1)]

    def task(lo, hi):
        return lambda: _adamw(*(a[lo:hi] for a in flat[:4]), *args, flat[4][lo:hi], flat[5][lo:hi])

    run_tasks([task(bounds[j], bounds[j + 1]) for j in range(k)], k)


_MIN_SLICE = 1 << 16  # elementwise work below this many entries stays on one thread


# ---- warm-up -----------------------------------------------------------------------------------

def warmup(dtypes=_FLOATS):
    """Compile (or load from the cache) every kernel for the given dtypes (default float32 and
    float64) on tiny inputs, the fused ones through a tiny model's training step and forward
    pass. Training needs float32 only; float64 serves the gradient checks."""
    from fourier_toy.config import ModelConfig
    from fourier_toy.model import GPT

    rng = np.random.default_rng(0)
    tokens = np.array([[0, 1, 2], [2, 1, 0]])
    for dt in map(np.dtype, dtypes):
        def r(*shape):
            return rng.standard_normal(shape).astype(dt)

        x, c = embedding_forward(tokens, r(3, 4), r(3, 4))
        embedding_backward(x, c)
        y, c = layernorm_forward(r(2, 3, 4), r(4), r(4))
        layernorm_backward(y, c)
        y, c = linear_forward(r(2, 3, 4), r(4, 5), r(5))
        linear_backward(y, c)
        y, c = gelu_forward(r(2, 3, 4))
        gelu_backward(y, c)
        z, c = attention_forward(r(2, 2, 3, 4), r(2, 2, 3, 4), r(2, 2, 3, 4))
        attention_backward(z, c)
        _, c = cross_entropy_forward(r(2, 5), np.array([0, 4]))
        cross_entropy_backward(1.0, c)
        p = r(6)
        adamw_update(p, r(6), np.zeros_like(p), np.zeros_like(p), 1e-3, 0.9, 0.98, 1e-8, 0.01,
                     np.ones(6, np.float32), np.ones(6, np.float32), 1)
        model = GPT(ModelConfig(d_model=4, n_layers=2, n_heads=2, n_ctx=4, backend="numba"), 3,
                    rng=np.random.default_rng(0), dtype=dt)
        tokens4 = np.array([[0, 3, 1, 4], [2, 3, 2, 4]])
        model.loss_and_grad(tokens4, np.array([1, 2]))
        model.forward(tokens4)
