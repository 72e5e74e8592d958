"""fused_piece.py against the same computation driven from Python: the fused kernels of fused.py
called one by one, with np.matmul in between. The two must agree bit for bit, in float32 too,
whatever the process has run before: that is what keeps every result of the training path the
same as before the piece moved into numba (test_model_backends.py checks both against the
numpy oracle to rounding)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit
from numba.core.errors import TypingError

from fourier_toy.fast import row_kernels as fused
from fourier_toy.training.backends import make_gpt
from fourier_toy.fast import kernel_calls as fused_calls
from fourier_toy.fast import piece as fused_piece
from fourier_toy.nn import ops
from fourier_toy.config import ModelConfig
from fourier_toy.nn.model import GPT


class _Buffers:
    """Separate arrays, each with free space around it like the piece's scratch (see
    fused_piece.guard), so that the kernels take the same loops in both drivers."""

    def __init__(self, dtype, gap):
        self.dtype, self.gap = dtype, gap

    def __call__(self, *shape):
        n = int(np.prod(shape))
        return np.empty(n + 2 * self.gap, self.dtype)[self.gap:self.gap + n].reshape(shape)


def reference_train(m: GPT, tok, tg):
    """(loss sum, logits, flat gradient) of one piece, the kernels driven from Python."""
    D, H, L, p = m.cfg.d_model, m.n_heads, m.cfg.n_layers, m.n_numbers
    B, T = tok.shape
    N, F = B * T, 4 * D
    dt = m.params.dtype
    eps, buf, empty = dt.type(ops.LN_EPS), _Buffers(dt, int(fused_piece.guard(D))), np.zeros((0, D), dt)
    w, gw = m.weights, m.layout.views(np.zeros_like(m.params))
    lay = [[w[f"h.{l}.{n}"] for n in fused_piece.LAYER_TENSORS] for l in range(L)]
    glay = [[gw[f"h.{l}.{n}"] for n in fused_piece.LAYER_TENSORS] for l in range(L)]
    x, a, mu, rs = buf(N, D), buf(N, D), buf(N), buf(N)
    fused.embed_ln_fwd(tok, w["wte.weight"], w["wpe.weight"], lay[0][0], lay[0][1], eps, x, a, mu, rs)
    cache = []
    for l in range(L):
        _, _, Wa, ba, Wp, bp, ln2w, ln2b, Wf, bf, Wm, bm = lay[l]
        if l < L - 1:
            qs = kvs = np.matmul(a, Wa, out=buf(N, 3 * D))
            z, pat = buf(N, D), buf(B, H, T, T)
            fused.attn_fwd(qs, 0, kvs, D, 2 * D, ba, H, T, z, pat)
            rows, step = N, 1
        else:
            kvs, qs = buf(N, 2 * D), buf(B, D)
            np.matmul(a, Wa[:, D:], out=kvs)
            np.matmul(a.reshape(B, T, D)[:, T - 1], Wa[:, :D], out=qs)
            z, pat = buf(B, D), buf(B, H, 1, T)
            fused.attn_fwd(qs, 0, kvs, 0, D, ba, H, T, z, pat)
            rows, step = B, T
        rm, mm, mu2, rs2, hpre, act = buf(rows, D), buf(rows, D), buf(rows), buf(rows), buf(rows, F), buf(rows, F)
        fused.res_ln_fwd(x, step, np.matmul(z, Wp, out=buf(rows, D)), bp, ln2w, ln2b, eps, rm, mm, mu2, rs2)
        np.matmul(mm, Wf, out=hpre)
        fused.gelu_bias_fwd(hpre, bf, act)
        nw, nb = (lay[l + 1][0], lay[l + 1][1]) if l < L - 1 else (w["ln_f.weight"], w["ln_f.bias"])
        cache.append((x, a, mu, rs, qs, kvs, z, pat, rm, mm, mu2, rs2, hpre, act))
        x, a, mu, rs = buf(rows, D), buf(rows, D), buf(rows), buf(rows)
        fused.res_ln_fwd(rm, 1, np.matmul(act, Wm, out=buf(rows, D)), bm, nw, nb, eps, x, a, mu, rs)
    logits = np.matmul(a, m.W_U.T, out=buf(B, p))
    dlogits = buf(B, p)
    loss_sum = fused.ce_fwd_bwd(logits, tg, dt.type(1.0 / B), dlogits)

    g_un = gw[m.unembed_name]
    np.matmul(dlogits.T, a, out=g_un[:p])
    g_un[p:] = 0
    dx = buf(B, D)
    fused.ln_res_bwd(np.matmul(dlogits, m.W_U, out=buf(B, D)), empty, 1, x, mu, rs, w["ln_f.weight"], empty, 1,
                     dx, gw["ln_f.weight"], gw["ln_f.bias"], glay[L - 1][11])
    for l in reversed(range(L)):
        ln1w, _, Wa, _, Wp, _, ln2w, _, Wf, _, Wm, _ = lay[l]
        g_ln1w, g_ln1b, gWa, gba, gWp, gbp, g_ln2w, g_ln2b, gWf, gbf, gWm, _ = glay[l]
        x, a, mu, rs, qs, kvs, z, pat, rm, mm, mu2, rs2, hpre, act = cache[l]
        rows = len(z)
        np.matmul(act.T, dx, out=gWm)
        dh, drm = buf(rows, F), buf(rows, D)
        fused.gelu_bias_bwd(np.matmul(dx, Wm.T, out=buf(rows, F)), hpre, dh, gbf)
        np.matmul(mm.T, dh, out=gWf)
        fused.ln_res_bwd(np.matmul(dh, Wf.T, out=buf(rows, D)), empty, 1, rm, mu2, rs2, ln2w, dx, 1, drm, g_ln2w,
                         g_ln2b, gbp)
        np.matmul(z.T, drm, out=gWp)
        dz, da = np.matmul(drm, Wp.T, out=buf(rows, D)), buf(N, D)
        if l < L - 1:
            dqkv = buf(N, 3 * D)
            fused.attn_bwd(dz, qs, 0, kvs, D, 2 * D, pat, H, T, dqkv, 0, dqkv, D, 2 * D, gba)
            np.matmul(a.T, dqkv, out=gWa)
            np.matmul(dqkv, Wa.T, out=da)
            da_last, step = empty, 1
        else:
            dq, dkv = buf(B, D), buf(N, 2 * D)
            fused.attn_bwd(dz, qs, 0, kvs, 0, D, pat, H, T, dq, 0, dkv, 0, D, gba)
            np.matmul(a.reshape(B, T, D)[:, T - 1].T, dq, out=gWa[:, :D])
            np.matmul(a.T, dkv, out=gWa[:, D:])
            np.matmul(dkv, Wa[:, D:].T, out=da)
            da_last, step = np.matmul(dq, Wa[:, :D].T, out=buf(B, D)), T
        dx = buf(N, D)
        fused.ln_res_bwd(da, da_last, T, x, mu, rs, ln1w, drm, step, dx, g_ln1w, g_ln1b,
                         glay[l - 1][11] if l > 0 else buf(D))
    if not m.cfg.tied:
        gw["wte.weight"][...] = 0
    gw["wpe.weight"][...] = 0
    fused.embed_bwd(tok, dx, gw["wte.weight"], gw["wpe.weight"])
    return loss_sum, logits, np.concatenate([gw[n].ravel() for n in m.layout.names])


def piece_train(m: GPT, tok, tg):
    """The same through fused_piece.train, in one scratch buffer of scratch_entries entries."""
    D, H, L = m.cfg.d_model, m.n_heads, m.cfg.n_layers
    B, T = tok.shape
    dt = m.params.dtype
    scratch = np.empty(fused_piece.scratch_entries(B, T, D, H, L), dt)
    logits, dlogits, grads = np.empty((B, m.n_numbers), dt), np.empty((B, m.n_numbers), dt), np.zeros_like(m.params)
    loss_sum = fused_piece.train(tok, tg, dt.type(1.0 / B), m.params, fused_piece.weight_table(m), D, H,
                                 dt.type(ops.LN_EPS), scratch, logits, dlogits, grads)
    return loss_sum, logits, grads


def model_and_batch(n_layers, n_heads, d_head, batch, seq_len, tied, dtype, n_numbers, seed):
    cfg = ModelConfig(d_model=n_heads * d_head, n_layers=n_layers, n_heads=n_heads, tied=tied, n_ctx=5)
    rng = np.random.default_rng(seed)
    m = make_gpt(cfg, n_numbers, rng=rng, dtype=dtype)
    m.params[:] = rng.normal(0, 0.3, size=m.params.shape)
    tok = rng.integers(0, m.vocab_size, (batch, seq_len)).astype(np.intp)
    return m, tok, rng.integers(0, n_numbers, batch).astype(np.intp)


def _bits(x):
    return np.ascontiguousarray(x).view(np.uint8)


@settings(max_examples=25, deadline=None)
@given(n_layers=st.integers(1, 3), n_heads=st.integers(1, 4), d_head=st.sampled_from([1, 3, 16, 32]),
       batch=st.sampled_from([1, 2, 5, 64, 128]), seq_len=st.integers(1, 5), tied=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]), n_numbers=st.sampled_from([3, 21, 121]),
       seed=st.integers(0, 2**16))
def test_piece_is_the_python_driven_kernels_bit_for_bit(n_layers, n_heads, d_head, batch, seq_len, tied, dtype,
                                                         n_numbers, seed):
    m, tok, tg = model_and_batch(n_layers, n_heads, d_head, batch, seq_len, tied, dtype, n_numbers, seed)
    loss_ref, logits_ref, grads_ref = reference_train(m, tok, tg)
    loss, logits, grads = piece_train(m, tok, tg)
    assert loss == loss_ref
    np.testing.assert_array_equal(_bits(logits), _bits(logits_ref))
    np.testing.assert_array_equal(_bits(grads), _bits(grads_ref))
    out = np.empty_like(logits)  # the evaluation entry point computes the same logits
    D, H, L = m.cfg.d_model, m.n_heads, m.cfg.n_layers
    fused_piece.forward(tok, m.params, fused_piece.weight_table(m), D, H, m.params.dtype.type(ops.LN_EPS),
                        np.empty(fused_piece.scratch_entries(*tok.shape, D, H, L), dtype), out)
    np.testing.assert_array_equal(_bits(out), _bits(logits_ref))


@settings(max_examples=40, deadline=None)
@given(B=st.integers(1, 40), T=st.integers(1, 6), n_heads=st.integers(1, 4), d_head=st.integers(1, 9),
       L=st.integers(1, 4))
def test_scratch_entries_is_exactly_what_the_piece_carves(B, T, n_heads, d_head, L):
    D = n_heads * d_head
    n = fused_piece.scratch_entries(B, T, D, n_heads, L)
    buf = np.empty(n, np.float32)
    _, _, pos = fused_piece._carve_all(buf, B, T, D, n_heads, L)
    _, end = fused_piece._carve_backward(buf, pos, B, T, D)
    assert end == n


@pytest.mark.parametrize("shape", [(1, 4, 8, True), (2, 2, 16, False), (2, 4, 32, True)])
def test_piece_bits_do_not_depend_on_where_its_buffers_lie(shape):
    """The piece's five buffers (weights, gradient, scratch, logits, dlogits) in one arena, in every
    order, back to back or apart. The kernels' run-time overlap checks must find no overlap in any
    of them: the gradient buffer ending right before the scratch once sent the final LayerNorm's
    backward down its scalar loop (the absent optional inputs sat at the scratch's first entry)."""
    import itertools

    n_layers, n_heads, d_head, tied = shape
    m, tok, tg = model_and_batch(n_layers, n_heads, d_head, 37, 4, tied, np.float32, 21, 3)
    D, B, T = m.cfg.d_model, *tok.shape
    sizes = {"params": m.params.size, "grads": m.params.size, "scratch": fused_piece.scratch_entries(B, T, D, n_heads,
             n_layers), "logits": B * m.n_numbers, "dlogits": B * m.n_numbers}

    def run(order, gap):
        arena, pos, buf = np.zeros(sum(sizes.values()) + 5 * gap + 16, np.float32), 16, {}
        for name in order:
            buf[name], pos = arena[pos:pos + sizes[name]], pos + sizes[name] + gap
        buf["params"][:] = m.params
        loss = fused_piece.train(tok, tg, np.float32(1 / B), buf["params"], fused_piece.weight_table(m), D, n_heads,
                                 np.float32(ops.LN_EPS), buf["scratch"], buf["logits"].reshape(B, m.n_numbers),
                                 buf["dlogits"].reshape(B, m.n_numbers), buf["grads"])
        return loss, _bits(buf["grads"]).copy()

    loss, grads = run(list(sizes), 4096)
    for order in itertools.permutations(sizes):
        for gap in (0, 4):
            other = run(order, gap)
            assert other[0] == loss and np.array_equal(other[1], grads), (order, gap)


def test_piece_bits_do_not_depend_on_what_ran_before():
    """A fresh process that runs the piece first gets the bits of one that ran the kernels from
    Python first (numba merges same-named compiled functions across a process; fused_calls.py)."""
    script = textwrap.dedent("""
        import hashlib, sys
        import numpy as np
        sys.path.insert(0, {tests!r})
        import test_piece as t
        m, tok, tg = t.model_and_batch(2, 4, 16, 64, 4, False, np.float32, 121, 5)
        if sys.argv[1] == "kernels-first":
            t.reference_train(m, tok, tg)
        print(hashlib.sha256(t.piece_train(m, tok, tg)[2].tobytes()).hexdigest())
    """).format(tests=str(Path(__file__).parent))
    hashes = {order: subprocess.run([sys.executable, "-c", script, order], capture_output=True, text=True,
                                    check=True).stdout.strip() for order in ("piece-first", "kernels-first")}
    m, tok, tg = model_and_batch(2, 4, 16, 64, 4, False, np.float32, 121, 5)
    expected = hashlib.sha256(reference_train(m, tok, tg)[2].tobytes()).hexdigest()
    assert hashes == {"piece-first": expected, "kernels-first": expected}


def test_kernel_calls_with_other_argument_types_do_not_compile():
    @njit
    def strided_gelu(h, bias, act):
        fused_calls.gelu_bias_fwd(h[:, ::2], bias, act)

    with pytest.raises(TypingError):
        strided_gelu(np.zeros((2, 4), np.float32), np.zeros(2, np.float32), np.zeros((2, 2), np.float32))
