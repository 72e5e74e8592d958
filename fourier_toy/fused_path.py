"""The fused path of a GPT (model.py): last-position logits, loss and gradients with the fused
kernels of fused.py between BLAS matmuls, a batch cut into pieces that run on the threads of
threads.py, each with its own reusable buffers.

The pieces depend only on the batch size (piece_bounds), never on the thread count, and their
gradients are summed in a fixed order, so results are bit-identical for any number of threads.
"""

from __future__ import annotations

import importlib
import math
from typing import TYPE_CHECKING

import numpy as np

from . import ops
from .errors import DataError

if TYPE_CHECKING:
    from .model import GPT


PIECE_EXAMPLES = 128  # a training batch is cut into pieces of about this many examples,
MAX_PIECES = 4        # at most this many (each piece's gradient is a buffer of the model's size);
EVAL_PIECE = 128      # evaluation batches into pieces of at most this many examples.


def piece_bounds(batch: int, train: bool = True) -> list[int]:
    """Where a batch is cut into pieces: a function of the batch size alone."""
    if train:
        n = min(MAX_PIECES, max(1, round(batch / PIECE_EXAMPLES)))
    else:
        n = max(1, -(-batch // EVAL_PIECE))
    return [batch * k // n for k in range(n + 1)]


class _Workspace:
    """Named scratch buffers of one thread, grown on demand and reused across steps."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.bufs: dict[str, np.ndarray] = {}
        self.views: dict[tuple, np.ndarray] = {}  # (name, *shape) -> view, valid until a buffer grows

    def get(self, name: str, *shape: int) -> np.ndarray:
        key = (name, *shape)
        view = self.views.get(key)
        if view is None:
            n = math.prod(shape)
            buf = self.bufs.get(name)
            if buf is None or buf.size < n:
                buf = self.bufs[name] = np.empty(max(n, 1), dtype=self.dtype)
                self.views = {}
            view = self.views[key] = buf[:n].reshape(shape)
        return view


_LAYER_TENSORS = ("ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
                  "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                  "mlp.c_proj.weight", "mlp.c_proj.bias")


def _per_layer(views: dict, n_layers: int) -> list[tuple]:
    return [tuple(views[f"h.{l}.{name}"] for name in _LAYER_TENSORS) for l in range(n_layers)]


class FusedPath:
    """Last-position logits, loss and gradients of a GPT with the fused kernels of fused.py.

    Per piece of B examples (N = B*T rows, example-major), block l < L-1 runs
        qkv = a @ W_attn                     a = LN1(x), fused with the previous residual add
        z = attention(qkv + b_attn)          heads read in place, z (N, D) ready for c_proj
        resid_mid = x + z @ W_proj + b; m = LN2(resid_mid)          one kernel
        act = gelu(m @ W_fc + b_fc)                                 one kernel after the matmul
        x' = resid_mid + act @ W_mproj + b; a' = LN1'(x')           one kernel
    and the last block computes k and v for all T positions but its query, projections, MLP and
    the final LayerNorm for the last position only (B rows). The backward pass mirrors it: every
    bias gradient is a column sum taken inside the kernel that produces the gradient, every
    weight gradient one matmul written straight into the gradient buffer.
    """

    def __init__(self, model: GPT):
        self.model = model
        self.fused = importlib.import_module(".fused", __package__)
        self.threads = importlib.import_module(".threads", __package__)
        self.dtype = model.params.dtype
        self.eps = self.dtype.type(ops.LN_EPS)
        self.D, self.H, self.L = model.cfg.d_model, model.n_heads, model.cfg.n_layers
        self.empty = np.zeros((0, self.D), dtype=self.dtype)
        self.workspaces: dict[int, _Workspace] = {}
        self.layers = _per_layer(model.w, self.L)
        self.piece_grads: dict[int, tuple] = {0: (model.grads, model.g, _per_layer(model.g, self.L))}

    # ---- helpers -------------------------------------------------------------------------------

    def _ws(self, j: int) -> _Workspace:
        ws = self.workspaces.get(j)
        if ws is None:
            ws = self.workspaces[j] = _Workspace(self.dtype)
        return ws

    def _grads(self, k: int) -> tuple:
        """(flat, views, per-layer views) of piece k's gradient: the model's own for piece 0."""
        m = self.model
        if k not in self.piece_grads:
            flat = np.zeros_like(m.grads)
            views = m.layout.views(flat)
            self.piece_grads[k] = (flat, views, _per_layer(views, self.L))
        return self.piece_grads[k]

    def _tokens(self, tokens) -> np.ndarray:
        tok = np.asarray(tokens)
        if tok.dtype.kind not in "iu":
            raise DataError(f"tokens: expected integer token ids, got dtype {tok.dtype}")
        V = self.model.vocab_size
        if tok.size and (tok.min() < 0 or tok.max() >= V):
            raise DataError(f"tokens: ids must lie in [0, {V}), got values in [{tok.min()}, {tok.max()}]")
        return np.ascontiguousarray(tok, dtype=np.intp)

    def _targets(self, targets, batch: int) -> np.ndarray:
        tg = np.asarray(targets)
        p = self.model.p
        if tg.dtype.kind not in "iu" or tg.shape != (batch,):
            raise DataError(f"targets: expected {batch} integer number tokens, got {tg.dtype} {tg.shape}")
        if batch and (tg.min() < 0 or tg.max() >= p):
            raise DataError(f"targets: must lie in [0, {p}), got values in [{tg.min()}, {tg.max()}]")
        return np.ascontiguousarray(tg, dtype=np.intp)

    # ---- public entry points ---------------------------------------------------------------------

    def logits(self, tokens) -> np.ndarray:
        """tokens (B, T) -> (B, p) number logits at the last position; no activations are kept."""
        tok = self._tokens(tokens)
        B = len(tok)
        out = np.empty((B, self.model.p), dtype=self.dtype)
        bounds = piece_bounds(B, train=False)
        P = len(bounds) - 1
        W = min(self.threads.threads(), P)

        def work(j):
            ws = self._ws(j)
            for k in range(j, P, W):
                lo, hi = bounds[k], bounds[k + 1]
                if hi > lo:
                    self._forward(ws, tok[lo:hi], keep=False, out=out[lo:hi])

        self.threads.run_tasks([(lambda j=j: work(j)) for j in range(W)], W)
        return out

    def loss_and_grad(self, tokens, targets) -> float:
        tok = self._tokens(tokens)
        tg = self._targets(targets, len(tok))
        scale = self.dtype.type(1.0 / max(len(tok), 1))
        sums = self._run_pieces(tok, lambda ws, k, lo, hi: self._train_piece(ws, k, tok[lo:hi], tg[lo:hi], scale))
        return float(math.fsum(sums) / max(len(tok), 1))

    def backward(self, tokens, dlogits) -> None:
        tok = self._tokens(tokens)
        dl = np.asarray(dlogits)
        if dl.shape != (len(tok), self.model.p):
            raise ValueError(f"dlogits: expected shape {(len(tok), self.model.p)}, got {dl.shape}")
        dl = np.ascontiguousarray(dl, dtype=self.dtype)
        self._run_pieces(tok, lambda ws, k, lo, hi: self._grad_piece(ws, k, tok[lo:hi], dl[lo:hi]))

    def _run_pieces(self, tok, piece_fn) -> list:
        """Run piece_fn(workspace, k, lo, hi) for every training piece k, then sum the gradients."""
        bounds = piece_bounds(len(tok))
        P = len(bounds) - 1
        W = min(self.threads.threads(), P)
        results = [0.0] * P

        def work(j):
            ws = self._ws(j)
            for k in range(j, P, W):
                results[k] = piece_fn(ws, k, bounds[k], bounds[k + 1])

        self.threads.run_tasks([(lambda j=j: work(j)) for j in range(W)], W)
        if P > 1:
            g0 = self.model.grads
            extra = [self._grads(k)[0] for k in range(1, P)]
            n = g0.size
            S = min(W, max(1, n // self.threads.MIN_SLICE))
            cuts = [n * i // S for i in range(S + 1)]

            def add(lo, hi):
                for e in extra:  # a fixed order: piece 1, 2, ...
                    self.fused.add_into(g0[lo:hi], e[lo:hi])

            self.threads.run_tasks([(lambda i=i: add(cuts[i], cuts[i + 1])) for i in range(S)], S)
        return results

    # ---- one piece -------------------------------------------------------------------------------

    def _train_piece(self, ws, k, tok, tg, scale) -> float:
        logits, cache = self._forward(ws, tok, keep=True)
        dlogits = ws.get("dlogits", *logits.shape)
        loss_sum = self.fused.ce_fwd_bwd(logits, tg, scale, dlogits)
        self._backward(ws, k, tok, dlogits, cache)
        return loss_sum

    def _grad_piece(self, ws, k, tok, dlogits) -> float:
        _, cache = self._forward(ws, tok, keep=True)
        self._backward(ws, k, tok, dlogits, cache)
        return 0.0

    def _forward(self, ws, tok, keep: bool, out=None):
        """tok (B, T) intp -> logits (B, p), and with keep=True the activations for _backward."""
        fused, m = self.fused, self.model
        D, H, L, eps = self.D, self.H, self.L, self.eps
        B, T = tok.shape
        N, F = B * T, 4 * D
        get = ws.get
        key = (lambda s, l: f"{s}{l}") if keep else (lambda s, l: s)  # evaluation reuses buffers
        w, layers = m.w, self.layers
        x, a, mu, rs = get(key("x", 0), N, D), get(key("a", 0), N, D), get(key("mu", 0), N), get(key("rs", 0), N)
        fused.embed_ln_fwd(tok, w["wte.weight"], w["wpe.weight"], layers[0][0], layers[0][1], eps, x, a, mu, rs)
        cache = []
        for l in range(L):
            _, _, Wa, ba, Wp, bp, ln2w, ln2b, Wf, bf, Wm, bm = layers[l]
            if l < L - 1:
                qkv = get(key("qkv", l), N, 3 * D)
                np.matmul(a, Wa, out=qkv)
                z, pat = get(key("z", l), N, D), get(key("pat", l), B, H, T, T)
                fused.attn_fwd(qkv, 0, qkv, D, 2 * D, ba, H, T, z, pat)
                rows, step, qs, kvs = N, 1, qkv, qkv
            else:  # the last block: keys and values everywhere, the rest at the last position
                kvs = get("kv", N, 2 * D)
                np.matmul(a, Wa[:, D:], out=kvs)
                qs = get("q", B, D)
                np.matmul(a.reshape(B, T, D)[:, T - 1], Wa[:, :D], out=qs)
                z, pat = get("zl", B, D), get("patl", B, H, 1, T)
                fused.attn_fwd(qs, 0, kvs, 0, D, ba, H, T, z, pat)
                rows, step = B, T
            y = get("y", rows, D)
            np.matmul(z, Wp, out=y)
            rm, mm = get(key("rm", l), rows, D), get(key("m", l), rows, D)
            mu2, rs2 = get(key("mu2_", l), rows), get(key("rs2_", l), rows)
            fused.res_ln_fwd(x, step, y, bp, ln2w, ln2b, eps, rm, mm, mu2, rs2)
            hpre, act = get(key("h", l), rows, F), get(key("act", l), rows, F)
            np.matmul(mm, Wf, out=hpre)
            fused.gelu_bias_fwd(hpre, bf, act)
            np.matmul(act, Wm, out=y)
            nw, nb = (layers[l + 1][0], layers[l + 1][1]) if l < L - 1 else (w["ln_f.weight"], w["ln_f.bias"])
            if keep:
                cache.append((x, a, mu, rs, qs, kvs, z, pat, rm, mm, mu2, rs2, hpre, act))
            x, a = get(key("x", l + 1), rows, D), get(key("a", l + 1), rows, D)
            mu, rs = get(key("mu", l + 1), rows), get(key("rs", l + 1), rows)
            fused.res_ln_fwd(rm, 1, y, bm, nw, nb, eps, x, a, mu, rs)
        logits = out if out is not None else get("logits", B, m.p)
        np.matmul(a, m.W_U.T, out=logits)
        cache.append((x, a, mu, rs))
        return logits, cache

    def _backward(self, ws, k, tok, dlogits, cache) -> None:
        """Gradients of piece k into its gradient buffer, from dlogits (B, p) and _forward's cache."""
        fused, m = self.fused, self.model
        D, H, L = self.D, self.H, self.L
        B, T = tok.shape
        N, F, p = B * T, 4 * D, m.p
        get, empty = ws.get, self.empty
        _, gv, gl = self._grads(k)
        layers = self.layers
        xf, hf, muf, rsf = cache[L]

        # Unembedding: its rows past the numbers get no gradient; for a tied model the embedding
        # gradient is added to these rows below.
        g_un = gv[m.unembed_name]
        np.matmul(dlogits.T, hf, out=g_un[:p])
        g_un[p:] = 0
        dx = get("dxf", B, D)
        dhf = get("dhf", B, D)
        np.matmul(dlogits, m.W_U, out=dhf)
        fused.ln_res_bwd(dhf, empty, 1, xf, muf, rsf, m.w["ln_f.weight"], empty, 1, dx,
                      gv["ln_f.weight"], gv["ln_f.bias"], gl[L - 1][11])

        for l in reversed(range(L)):
            ln1w, _, Wa, _, Wp, _, ln2w, _, Wf, _, Wm, _ = layers[l]
            g_ln1w, g_ln1b, gWa, gba, gWp, gbp, g_ln2w, g_ln2b, gWf, gbf, gWm, _ = gl[l]
            x, a, mu, rs, qs, kvs, z, pat, rm, mm, mu2, rs2, hpre, act = cache[l]
            rows = len(z)
            # MLP
            np.matmul(act.T, dx, out=gWm)
            dact = get("dact", rows, F)
            np.matmul(dx, Wm.T, out=dact)
            dh = get("dh", rows, F)
            fused.gelu_bias_bwd(dact, hpre, dh, gbf)
            np.matmul(mm.T, dh, out=gWf)
            dm = get("dm", rows, D)
            np.matmul(dh, Wf.T, out=dm)
            drm = get("drm", rows, D)
            fused.ln_res_bwd(dm, empty, 1, rm, mu2, rs2, ln2w, dx, 1, drm, g_ln2w, g_ln2b, gbp)
            # attention
            np.matmul(z.T, drm, out=gWp)
            dz = get("dz", rows, D)
            np.matmul(drm, Wp.T, out=dz)
            da = get("da", N, D)
            if l < L - 1:
                dqkv = get("dqkv", N, 3 * D)
                fused.attn_bwd(dz, qs, 0, kvs, D, 2 * D, pat, H, T, dqkv, 0, dqkv, D, 2 * D, gba)
                np.matmul(a.T, dqkv, out=gWa)
                np.matmul(dqkv, Wa.T, out=da)
                da_last, step = empty, 1
            else:
                dq, dkv = get("dq", B, D), get("dkv", N, 2 * D)
                fused.attn_bwd(dz, qs, 0, kvs, 0, D, pat, H, T, dq, 0, dkv, 0, D, gba)
                np.matmul(a.reshape(B, T, D)[:, T - 1].T, dq, out=gWa[:, :D])
                np.matmul(a.T, dkv, out=gWa[:, D:])
                np.matmul(dkv, Wa[:, D:].T, out=da)
                da_last = get("daq", B, D)
                np.matmul(dq, Wa[:, :D].T, out=da_last)
                step = T
            dx = get(f"dx{l % 2}", N, D)
            dsum = gl[l - 1][11] if l > 0 else get("dsum", D)
            fused.ln_res_bwd(da, da_last, T, x, mu, rs, ln1w, drm, step, dx, g_ln1w, g_ln1b, dsum)

        gwte, gwpe = gv["wte.weight"], gv["wpe.weight"]
        if not m.cfg.tied:
            gwte[...] = 0
        gwpe[...] = 0
        fused.embed_bwd(tok, dx, gwte, gwpe)
