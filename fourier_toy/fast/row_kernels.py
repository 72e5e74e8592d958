"""Fused row kernels: the model's training and evaluation path (fused_path.FusedPath).

Serial kernels over rows of 2-D (rows, width) arrays, called with preallocated outputs: a batch
is split into pieces that run on separate threads (threads.py), so these kernels never start
threads of their own. Each one fuses the passes that sit between two matmuls: embedding +
LayerNorm, residual add + LayerNorm, bias + GELU, attention that reads q, k, v in place from the
fused projection, LayerNorm backward + residual + bias gradient, softmax cross-entropy with its
gradient in one pass. Matmuls stay in BLAS (fused_piece.py). tests/test_fused.py checks each against
the numpy oracle (ops.py).

Rows of a piece are example-major: row b*T + t is position t of example b. "step" arguments map
a short array onto the last positions: with step T, row i of the short array belongs to row
i*T + T - 1 of the long one (the last layer computes only those rows); with step 1 the two
arrays are row-aligned.
"""

from __future__ import annotations

import numpy as np

from fourier_toy.config import GELU_C, GELU_K
from fourier_toy.fast.jit import exp, jit, masked_softmax_row, tanh


@jit
def _normalize_row(x, r, total, lnw, lnb, eps, a, mean, rstd):
    """a[r] = LayerNorm(x[r]) with (lnw, lnb), given total = sum(x[r]); keeps mean[r], rstd[r].
    A plain call, not numba's inline="always": inlined, the caller's vectorizer regroups the
    sums and the float32 results change in the last bits."""
    D = x.shape[1]
    zero = x.dtype.type(0.0)
    inv_d = x.dtype.type(1.0) / x.dtype.type(D)
    mu = total * inv_d
    var = zero
    for d in range(D):
        c = x[r, d] - mu
        var += c * c
    rs = x.dtype.type(1.0) / np.sqrt(var * inv_d + eps)
    mean[r] = mu
    rstd[r] = rs
    for d in range(D):
        a[r, d] = (x[r, d] - mu) * rs * lnw[d] + lnb[d]


@jit
def embed_ln_fwd(tokens, wte, wpe, lnw, lnb, eps, x, a, mean, rstd):
    """x[b*T + t] = wte[tokens[b, t]] + wpe[t]; a = LayerNorm(x) with (lnw, lnb); per-row
    mean and rstd kept for the backward pass."""
    B, T = tokens.shape
    D = wte.shape[1]
    for bi in range(B):
        for t in range(T):
            r = bi * T + t
            tok = tokens[bi, t]
            s = x.dtype.type(0.0)
            for d in range(D):
                v = wte[tok, d] + wpe[t, d]
                x[r, d] = v
                s += v
            _normalize_row(x, r, s, lnw, lnb, eps, a, mean, rstd)


@jit
def res_ln_fwd(base, step, y, bias, lnw, lnb, eps, out, a, mean, rstd):
    """out[i] = base[i*step + step - 1] + y[i] + bias (a residual add after a projection);
    a = LayerNorm(out) with (lnw, lnb); per-row mean and rstd kept for the backward pass."""
    M, D = y.shape
    for i in range(M):
        br = i * step + step - 1
        s = y.dtype.type(0.0)
        for d in range(D):
            v = base[br, d] + y[i, d] + bias[d]
            out[i, d] = v
            s += v
        _normalize_row(out, i, s, lnw, lnb, eps, a, mean, rstd)


@jit
def ln_res_bwd(dy, dy2, step2, x, mean, rstd, w, dres, step3, dx, dw, db, dsum):
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


@jit
def gelu_bias_fwd(h, bias, act):
    """h += bias (in place: h then holds the pre-activation the backward pass needs);
    act = gelu(h), tanh approximation."""
    M, F = h.shape
    c = h.dtype.type(GELU_C)
    k = h.dtype.type(GELU_K)
    half = h.dtype.type(0.5)
    one = h.dtype.type(1.0)
    for i in range(M):
        for f in range(F):
            xi = h[i, f] + bias[f]
            h[i, f] = xi
            act[i, f] = half * xi * (one + tanh(c * (xi + k * xi * xi * xi)))


@jit
def gelu_bias_bwd(dact, h, dh, dbias):
    """dh = dact * gelu'(h); dbias = the column sums of dh. (dh must not be dact: an output
    that is also an input defeats vectorization, which costs several times more than a buffer.)"""
    M, F = h.shape
    c = h.dtype.type(GELU_C)
    k = h.dtype.type(GELU_K)
    k3 = h.dtype.type(3.0 * GELU_K)
    half = h.dtype.type(0.5)
    one = h.dtype.type(1.0)
    for f in range(F):
        dbias[f] = h.dtype.type(0.0)
    for i in range(M):
        for f in range(F):
            xi = h[i, f]
            t = tanh(c * (xi + k * xi * xi * xi))
            du = c * (one + k3 * xi * xi)
            g = dact[i, f] * (half * (one + t) + half * xi * (one - t * t) * du)
            dh[i, f] = g
            dbias[f] += g


@jit
def attn_fwd(qs, qc, kvs, kc, vc, bias, H, T, z, pattern):
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
                masked_softmax_row(pattern[b, hh, i], last, m)
                zz = z[b * Tq + i, c0:c0 + Dh]
                for d in range(Dh):
                    zz[d] = zero
                for j in range(T):
                    p = pattern[b, hh, i, j]
                    v = kvs[b * T + j, vc + c0:vc + c0 + Dh]
                    for d in range(Dh):
                        zz[d] += p * v[d]


@jit
def attn_bwd(dz, qs, qc, kvs, kc, vc, pattern, H, T, dq, dqc, dkv, dkc, dvc, dbias):
    """The backward pass of attn_fwd (whose q, k, v, with bias, are in qs and kvs).

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


@jit
def ce_fwd_bwd(logits, targets, scale, dlogits):
    """Softmax cross-entropy and its gradient in one pass over logits (M, C).

    Returns the sum over rows of -log softmax(logits)[target] (accumulated in float64) and writes
    dlogits = (softmax(logits) - onehot(targets)) * scale (scale = dloss / batch size).
    """
    M, C = logits.shape
    zero = logits.dtype.type(0.0)
    ninf = logits.dtype.type(-np.inf)
    total = 0.0
    # The max/exp/sum loops are also in kernels._cross_entropy_fwd. A shared row helper changed
    # the float32 results of both (the loops vectorize differently when called), so they stay.
    for i in range(M):
        m = ninf
        for c in range(C):
            if logits[i, c] > m:
                m = logits[i, c]
        tot = zero
        for c in range(C):
            e = exp(logits[i, c] - m)
            dlogits[i, c] = e
            tot += e
        tg = targets[i]
        total -= logits[i, tg] - m - np.log(tot)
        inv = scale / tot
        for c in range(C):
            dlogits[i, c] *= inv
        dlogits[i, tg] -= scale
    return total


@jit
def embed_bwd(tokens, dx, dwte, dwpe):
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


@jit
def add_into(dst, src):
    """dst += src over 1-D arrays (the sum of gradient pieces, one slice per thread)."""
    for i in range(dst.size):
        dst[i] += src[i]


