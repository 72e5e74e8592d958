"""One piece of the fused path (fused_path.py) as numba functions that hold no GIL from start to
end: the fused kernels of fused.py (called through fused_calls.py) between the matmuls of
blas.py, which calls the BLAS routines np.matmul calls, with the same arguments. The results are
bit-identical to those of the same kernels and np.matmul driven from Python.

Two pieces on two threads then run truly in parallel. Driven from Python, op by op, a piece took
the GIL back about 50 times, and every hand-off of a contended GIL woke a sleeping thread.

Weights are read from the flat parameter buffer through `table` (int64, (L + 1, 12)): row l < L
holds the offsets of block l's tensors in `LAYER_TENSORS` order, row L the offsets of wte, wpe,
ln_f.weight, ln_f.bias and the unembedding, then the vocabulary size, n_ctx and 1 for a tied
model (`weight_table`). Gradients go to a flat buffer of the same layout. Activations live in one
scratch buffer per thread, carved the same way by the forward and the backward pass
(`_carve_all`); `scratch_entries` gives its size.
"""

from __future__ import annotations

import numpy as np

from fourier_toy.fast import kernel_calls as kern
from fourier_toy.fast.blas import matmul
from fourier_toy.fast.jit import jit

__all__ = ["LAYER_TENSORS", "backward", "forward", "scratch_entries", "train", "weight_table"]

LAYER_TENSORS = ("ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
                 "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                 "mlp.c_proj.weight", "mlp.c_proj.bias")
LN1W, LN1B, WA, BA, WP, BP, LN2W, LN2B, WF, BF, WM, BM = range(12)
WTE, WPE, LNFW, LNFB, UNEMBED, VOCAB, NCTX, TIED = range(8)  # columns of the table's last row


def weight_table(model) -> np.ndarray:
    """(L + 1, 12) int64: where each tensor of `model` starts in its flat buffers (see the module doc)."""
    offsets = {name: o for name, o, _ in model.layout.entries}
    L = model.cfg.n_layers
    table = np.zeros((L + 1, 12), dtype=np.int64)
    for l in range(L):
        table[l] = [offsets[f"h.{l}.{name}"] for name in LAYER_TENSORS]
    table[L, :8] = [offsets["wte.weight"], offsets["wpe.weight"], offsets["ln_f.weight"], offsets["ln_f.bias"],
                    offsets[model.unembed_name], model.vocab_size, model.cfg.n_ctx, int(model.cfg.tied)]
    return table


def scratch_entries(B: int, T: int, D: int, H: int, L: int) -> int:
    """The scratch size (entries) one piece of B examples of T tokens needs: the buffers of
    _carve_all and _carve_backward, each preceded and followed by guard(D) free entries."""
    N, F = B * T, 4 * D
    sizes = []
    for l in range(L):
        rows, tq = (B, 1) if l == L - 1 else (N, T)
        sizes += [N * D, N * D, N, N]  # block input x, a and its LayerNorm statistics
        sizes += [N * 2 * D, B * D] if l == L - 1 else [N * 3 * D]  # k, v (and q) projections
        sizes += [rows * D, B * H * tq * T]  # z, attention pattern
        sizes += [rows * D] * 3 + [rows] * 2 + [rows * F] * 2  # y, resid_mid, LN2 output and stats, MLP
    sizes += [B * D, B * D, B, B]  # final LayerNorm input, output, statistics
    sizes += [B * D, N * F, N * F] + [N * D] * 4 + [N * 3 * D, B * D, N * 2 * D, N * D, N * D, B * D, D]  # backward
    return sum(sizes) + int(guard(D)) * (len(sizes) + 1)


# ---- scratch ------------------------------------------------------------------------------------

@jit
def guard(D):
    """Entries left free after each scratch buffer of a model of width D. The kernels check at
    run time that their outputs do not overlap their inputs before they take a vectorized loop,
    and the checked range of an optional input starts a row (up to 4D entries) before the input,
    because its row index is -1 on the rows that skip it. An input placed right after an output
    would send the kernel down its scalar loop, whose sums round differently."""
    return 4 * D + 64


@jit
def _vec(buf, pos, n, gap):
    return buf[pos:pos + n], pos + n + gap


@jit
def _mat(buf, pos, r, c, gap):
    return buf[pos:pos + r * c].reshape((r, c)), pos + r * c + gap


@jit
def _carve_block(buf, pos, B, T, D, H, last):
    """Views for block l: its input (x, a, mu, rs), then (qs, kvs, z, pat, y, rm, mm, mu2, rs2,
    hpre, act). A block before the last has one (N, 3D) projection, qs = kvs; the last keeps k, v
    for all N rows and everything else for the B last positions."""
    N, F, gap = B * T, 4 * D, guard(D)
    x, pos = _mat(buf, pos, N, D, gap)
    a, pos = _mat(buf, pos, N, D, gap)
    mu, pos = _vec(buf, pos, N, gap)
    rs, pos = _vec(buf, pos, N, gap)
    if last:
        rows, tq = B, 1
        kvs, pos = _mat(buf, pos, N, 2 * D, gap)
        qs, pos = _mat(buf, pos, B, D, gap)
    else:
        rows, tq = N, T
        kvs, pos = _mat(buf, pos, N, 3 * D, gap)
        qs = kvs
    z, pos = _mat(buf, pos, rows, D, gap)
    n_pat = B * H * tq * T
    pat = buf[pos:pos + n_pat].reshape((B, H, tq, T))
    pos += n_pat + gap
    y, pos = _mat(buf, pos, rows, D, gap)
    rm, pos = _mat(buf, pos, rows, D, gap)
    mm, pos = _mat(buf, pos, rows, D, gap)
    mu2, pos = _vec(buf, pos, rows, gap)
    rs2, pos = _vec(buf, pos, rows, gap)
    hpre, pos = _mat(buf, pos, rows, F, gap)
    act, pos = _mat(buf, pos, rows, F, gap)
    return (x, a, mu, rs, qs, kvs, z, pat, y, rm, mm, mu2, rs2, hpre, act), pos


@jit
def _carve_all(buf, B, T, D, H, L):
    """The forward pass's views, the same on every call with the same sizes; returns
    (blocks, (xf, af, muf, rsf), the first free entry)."""
    pos = guard(D)  # also a gap before the first buffer
    blocks = []
    for l in range(L):
        blk, pos = _carve_block(buf, pos, B, T, D, H, l == L - 1)
        blocks.append(blk)
    gap = guard(D)
    xf, pos = _mat(buf, pos, B, D, gap)
    af, pos = _mat(buf, pos, B, D, gap)
    muf, pos = _vec(buf, pos, B, gap)
    rsf, pos = _vec(buf, pos, B, gap)
    return blocks, (xf, af, muf, rsf), pos


@jit
def _carve_backward(buf, pos, B, T, D):
    """The backward pass's buffers, after the forward pass's; returns (views, first free entry)."""
    N, F, gap = B * T, 4 * D, guard(D)
    dhf, pos = _mat(buf, pos, B, D, gap)
    dact, pos = _mat(buf, pos, N, F, gap)
    dh, pos = _mat(buf, pos, N, F, gap)
    dm, pos = _mat(buf, pos, N, D, gap)
    drm, pos = _mat(buf, pos, N, D, gap)
    dz, pos = _mat(buf, pos, N, D, gap)
    da, pos = _mat(buf, pos, N, D, gap)
    dqkv, pos = _mat(buf, pos, N, 3 * D, gap)
    dq, pos = _mat(buf, pos, B, D, gap)  # the last block's
    dkv, pos = _mat(buf, pos, N, 2 * D, gap)
    dx_a, pos = _mat(buf, pos, N, D, gap)
    dx_b, pos = _mat(buf, pos, N, D, gap)
    daq, pos = _mat(buf, pos, B, D, gap)
    dsum, pos = _vec(buf, pos, D, gap)
    return (dhf, dact, dh, dm, drm, dz, da, dqkv, dq, dkv, dx_a, dx_b, daq, dsum), pos


@jit
def _w1(w, o, n):
    return w[o:o + n]


@jit
def _w2(w, o, r, c):
    return _w1(w, o, r * c).reshape((r, c))


# ---- forward ------------------------------------------------------------------------------------

@jit
def forward(tok, w, table, D, H, eps, buf, logits):
    """tok (B, T) intp -> logits (B, p) at the last position; activations stay in buf for
    backward. Block l < L-1 runs
        qkv = a @ W_attn; z = attention(qkv + b_attn); resid_mid = x + z @ W_proj + b; m = LN2(resid_mid)
        act = gelu(m @ W_fc + b_fc); x' = resid_mid + act @ W_mproj + b; a' = LN1'(x')
    and the last block computes k and v for all T positions, the rest at the last position only."""
    B, T = tok.shape
    L = table.shape[0] - 1
    g = table[L]
    V, n_ctx, p = g[VOCAB], g[NCTX], logits.shape[1]
    blocks, final, _ = _carve_all(buf, B, T, D, H, L)
    x, a, mu, rs = blocks[0][0], blocks[0][1], blocks[0][2], blocks[0][3]
    t0 = table[0]
    kern.embed_ln_fwd(tok, _w2(w, g[WTE], V, D), _w2(w, g[WPE], n_ctx, D), _w1(w, t0[LN1W], D),
                       _w1(w, t0[LN1B], D), eps, x, a, mu, rs)
    for l in range(L):
        t = table[l]
        x, a, mu, rs, qs, kvs, z, pat, y, rm, mm, mu2, rs2, hpre, act = blocks[l]
        Wa = _w2(w, t[WA], D, 3 * D)
        ba = _w1(w, t[BA], 3 * D)
        if l < L - 1:
            matmul(a, Wa, kvs)
            kern.attn_fwd(kvs, 0, kvs, D, 2 * D, ba, H, T, z, pat)
            step = 1
        else:
            matmul(a, Wa[:, D:], kvs)
            matmul(a.reshape((B, T, D))[:, T - 1], Wa[:, :D], qs)
            kern.attn_fwd(qs, 0, kvs, 0, D, ba, H, T, z, pat)
            step = T
        matmul(z, _w2(w, t[WP], D, D), y)
        kern.res_ln_fwd(x, step, y, _w1(w, t[BP], D), _w1(w, t[LN2W], D), _w1(w, t[LN2B], D), eps,
                         rm, mm, mu2, rs2)
        matmul(mm, _w2(w, t[WF], D, 4 * D), hpre)
        kern.gelu_bias_fwd(hpre, _w1(w, t[BF], 4 * D), act)
        matmul(act, _w2(w, t[WM], 4 * D, D), y)
        if l < L - 1:
            nx = blocks[l + 1]
            xn, an, mun, rsn = nx[0], nx[1], nx[2], nx[3]
            nw, nb = _w1(w, table[l + 1][LN1W], D), _w1(w, table[l + 1][LN1B], D)
        else:
            xn, an, mun, rsn = final
            nw, nb = _w1(w, g[LNFW], D), _w1(w, g[LNFB], D)
        kern.res_ln_fwd(rm, 1, y, _w1(w, t[BM], D), nw, nb, eps, xn, an, mun, rsn)
    matmul(final[1], _w2(w, g[UNEMBED], V, D)[:p].T, logits)


# ---- backward -----------------------------------------------------------------------------------

@jit
def backward(tok, w, table, D, H, buf, dlogits, gw):
    """Gradients into the flat buffer gw (zeroed here where nothing else writes), from dlogits
    (B, p) and the activations forward left in buf. Every bias gradient is a column sum taken
    inside the kernel that produces the gradient, every weight gradient one matmul written
    straight into gw."""
    B, T = tok.shape
    L = table.shape[0] - 1
    g = table[L]
    V, n_ctx, tied = g[VOCAB], g[NCTX], g[TIED]
    F, p = 4 * D, dlogits.shape[1]
    blocks, final, pos = _carve_all(buf, B, T, D, H, L)
    xf, hf, muf, rsf = final
    # The absent optional inputs: an empty view at the end of the gap that opens the scratch, so
    # that the kernels' overlap checks, which reach a row before it, stay inside the scratch,
    # wherever the caller's gradient buffer ends (see guard).
    empty = buf[guard(D):guard(D)].reshape((0, D))
    dhf, dact, dh, dm, drm, dz, da, dqkv, dq, dkv, dx_a, dx_b, daq, dsum = _carve_backward(buf, pos, B, T, D)[0]

    # Unembedding: its rows past the numbers get no gradient; for a tied model the embedding
    # gradient is added to these rows below.
    g_un = _w2(gw, g[UNEMBED], V, D)
    matmul(dlogits.T, hf, g_un[:p])
    g_un[p:] = 0
    W_U = _w2(w, g[UNEMBED], V, D)[:p]
    matmul(dlogits, W_U, dhf)
    dx = dx_a[:B]
    t_last = table[L - 1]
    kern.ln_res_bwd(dhf, empty, 1, xf, muf, rsf, _w1(w, g[LNFW], D), empty, 1, dx,
                     _w1(gw, g[LNFW], D), _w1(gw, g[LNFB], D), _w1(gw, t_last[BM], D))

    for l in range(L - 1, -1, -1):
        t = table[l]
        x, a, mu, rs, qs, kvs, z, pat, y, rm, mm, mu2, rs2, hpre, act = blocks[l]
        rows = z.shape[0]
        Wa = _w2(w, t[WA], D, 3 * D)
        gWa = _w2(gw, t[WA], D, 3 * D)
        # MLP
        matmul(act.T, dx, _w2(gw, t[WM], F, D))
        matmul(dx, _w2(w, t[WM], F, D).T, dact[:rows])
        kern.gelu_bias_bwd(dact[:rows], hpre, dh[:rows], _w1(gw, t[BF], F))
        matmul(mm.T, dh[:rows], _w2(gw, t[WF], D, F))
        matmul(dh[:rows], _w2(w, t[WF], D, F).T, dm[:rows])
        kern.ln_res_bwd(dm[:rows], empty, 1, rm, mu2, rs2, _w1(w, t[LN2W], D), dx, 1, drm[:rows],
                         _w1(gw, t[LN2W], D), _w1(gw, t[LN2B], D), _w1(gw, t[BP], D))
        # attention
        matmul(z.T, drm[:rows], _w2(gw, t[WP], D, D))
        matmul(drm[:rows], _w2(w, t[WP], D, D).T, dz[:rows])
        if l < L - 1:
            kern.attn_bwd(dz[:rows], qs, 0, kvs, D, 2 * D, pat, H, T, dqkv, 0, dqkv, D, 2 * D,
                           _w1(gw, t[BA], 3 * D))
            matmul(a.T, dqkv, gWa)
            matmul(dqkv, Wa.T, da)
            da_last, step = empty, 1
        else:
            kern.attn_bwd(dz[:rows], qs, 0, kvs, 0, D, pat, H, T, dq, 0, dkv, 0, D,
                           _w1(gw, t[BA], 3 * D))
            matmul(a.reshape((B, T, D))[:, T - 1].T, dq, gWa[:, :D])
            matmul(a.T, dkv, gWa[:, D:])
            matmul(dkv, Wa[:, D:].T, da)
            matmul(dq, Wa[:, :D].T, daq)
            da_last, step = daq, T
        dx_new = dx_b if l % 2 == (L - 1) % 2 else dx_a
        dbias_prev = _w1(gw, table[l - 1][BM], D) if l > 0 else dsum
        kern.ln_res_bwd(da, da_last, T, x, mu, rs, _w1(w, t[LN1W], D), drm[:rows], step, dx_new,
                         _w1(gw, t[LN1W], D), _w1(gw, t[LN1B], D), dbias_prev)
        dx = dx_new

    gwte = _w2(gw, g[WTE], V, D)
    gwpe = _w2(gw, g[WPE], n_ctx, D)
    if not tied:
        gwte[...] = 0
    gwpe[...] = 0
    kern.embed_bwd(tok, dx, gwte, gwpe)


@jit
def train(tok, targets, scale, w, table, D, H, eps, buf, logits, dlogits, gw):
    """forward, softmax cross-entropy with its gradient (scale = 1 / batch), backward; returns
    the sum of the losses."""
    forward(tok, w, table, D, H, eps, buf, logits)
    loss_sum = kern.ce_fwd_bwd(logits, targets, scale, dlogits)
    backward(tok, w, table, D, H, buf, dlogits, gw)
    return loss_sum
