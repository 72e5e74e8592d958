"""GPT-2 in numpy with a hand-written backward pass and TransformerLens-named hooks.

Architecture (DESIGN.md convention 3): token + learned position embedding; pre-LayerNorm blocks
with causal multi-head attention (biases, 1/sqrt(d_head) scaling) and a 4*d MLP with tanh GELU;
a final LayerNorm; logits over the p number tokens only, from the unembedding W_U (p, d) = the
number rows of `wte.weight` (tied) or `lm_head.weight` (untied).

Training reads only the last position, so unless `all_positions=True` the last block computes its
query, attention output and MLP for the last position alone: in that block the activations after
the keys/values (`hook_pattern`, `hook_z`, `hook_attn_out`, `hook_resid_mid`, the MLP hooks,
`hook_resid_post`) and `ln_final.hook_normalized` have position length 1.

Hooks: `(activation, name) -> activation or None`, run eagerly inside forward; a returned array
replaces the activation downstream. q, k, v and z are shown to hooks as (B, T, H, Dh) and the
attention pattern as (B, H, Tq, Tk), as in TransformerLens. After a forward in which a hook
replaced an activation there is no backward (the gradient would be of a different function).

Two execution paths give the same results (to float rounding):
- op by op (any backend; hooks, `all_positions`, the numpy oracle): each op of `ops.py` or its
  numba twin in turn, with the oracle's caches;
- fused (the numba backend's `loss_and_grad`, and `forward`/`backward` without hooks at the last
  position): a batch is split into pieces by its size alone, each piece runs forward and backward
  on its own thread with serial fused kernels (`fused.py`), single-threaded BLAS and
  preallocated buffers, and the pieces' gradients are summed in a fixed order, so results do not
  depend on the number of threads. A forward of this path keeps no activations; a `backward`
  after it recomputes them.
A GPT object is not meant to be used from two threads at once.
"""

from __future__ import annotations

import importlib
import math
from collections import defaultdict

import numpy as np

from . import ops
from .config import ModelConfig
from .errors import DataError
from .params import Layout, init_gpt2

HOOK_NAMES_GLOBAL = ("hook_embed", "hook_pos_embed", "ln_final.hook_normalized")
HOOK_NAMES_BLOCK = (
    "hook_resid_pre", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_pattern", "attn.hook_z",
    "hook_attn_out", "hook_resid_mid", "mlp.hook_pre", "mlp.hook_post", "hook_mlp_out", "hook_resid_post",
)


def hook_names(n_layers: int) -> list[str]:
    """Every hook point of a model with n_layers blocks, in forward order."""
    names = ["hook_embed", "hook_pos_embed"]
    for l in range(n_layers):
        names += [f"blocks.{l}.{n}" for n in HOOK_NAMES_BLOCK]
    return names + ["ln_final.hook_normalized"]


def backend_module(name: str):
    """The op implementations: the numpy oracle or the numba kernels (same signatures)."""
    return ops if name == "numpy" else importlib.import_module(".kernels", __package__)


class GPT:
    """params: one flat buffer (layout.size,) with named views `w`; grads: the same layout."""

    def __init__(self, cfg: ModelConfig, n_numbers: int, params: np.ndarray | None = None,
                 rng: np.random.Generator | None = None, dtype=np.float32):
        self.cfg = cfg
        self.p = n_numbers
        self.vocab_size = n_numbers + 2
        self.n_heads = cfg.n_heads
        self.layout = Layout.gpt2(self.vocab_size, cfg.d_model, cfg.n_layers, cfg.tied, cfg.n_ctx)
        if params is None:
            params = init_gpt2(self.layout, cfg.n_layers, rng if rng is not None else np.random.default_rng(0), dtype)
        if params.shape != (self.layout.size,):
            raise ValueError(f"params: expected shape ({self.layout.size},), got {params.shape}")
        self.params = params
        self.w = self.layout.views(params)
        self.grads = np.zeros_like(params)
        self.g = self.layout.views(self.grads)
        self.be = backend_module(cfg.backend)
        self._hooks: dict[str, list] = {}
        self._caches = None
        self._replaced = False
        self._fused_path = None

    # ---- helpers ---------------------------------------------------------------------------------

    @property
    def unembed_name(self) -> str:
        return "wte.weight" if self.cfg.tied else "lm_head.weight"

    @property
    def W_U(self) -> np.ndarray:
        """(p, d): the unembedding rows of the number tokens."""
        return self.w[self.unembed_name][: self.p]

    def _hook(self, name: str, x: np.ndarray) -> np.ndarray:
        for fn in self._hooks.get(name, ()):
            out = fn(x, name)
            if out is not None:
                out = np.asarray(out, dtype=x.dtype)
                if out.shape != x.shape:
                    raise ValueError(f"hook {name}: returned shape {out.shape}, expected {x.shape}")
                x, self._replaced = out, True
        return x

    def _heads(self, x):
        """(B, T, d) -> (B, H, T, Dh)."""
        B, T, d = x.shape
        return x.reshape(B, T, self.n_heads, d // self.n_heads).transpose(0, 2, 1, 3)

    def _hook_heads(self, name, x):
        """Hooks see (B, T, H, Dh); the model works in (B, H, T, Dh)."""
        if name not in self._hooks:
            return x
        return np.ascontiguousarray(self._hook(name, x.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3))

    def _fused(self):
        """The fused path, for the numba backend in float32/float64; None otherwise."""
        if self._fused_path is None:
            if self.cfg.backend != "numba" or self.params.dtype not in (np.float32, np.float64):
                return None
            self._fused_path = _FusedPath(self)
        return self._fused_path

    # ---- forward ---------------------------------------------------------------------------------

    def forward(self, tokens: np.ndarray, hooks=None, all_positions: bool = False) -> np.ndarray:
        """tokens (B, T) int, T <= n_ctx -> number logits (B, p) at the last position, or (B, T, p).

        hooks: a list of (name, fn) pairs or a dict name -> fn (see the module docstring).
        """
        tokens = np.asarray(tokens)
        if tokens.ndim != 2 or not 1 <= tokens.shape[1] <= self.cfg.n_ctx:
            raise ValueError(f"tokens: expected shape (batch, 1..{self.cfg.n_ctx}), got {tokens.shape}")
        self._hooks = defaultdict(list)
        for name, fn in (hooks.items() if isinstance(hooks, dict) else hooks or ()):
            self._hooks[name].append(fn)
        self._hooks = dict(self._hooks)
        self._replaced = False
        if not self._hooks and not all_positions and self._fused() is not None:
            logits = self._fused().logits(tokens)
            self._caches = _Recompute(tokens)
            return logits
        be, w, L, T = self.be, self.w, self.cfg.n_layers, tokens.shape[1]

        if "hook_embed" in self._hooks or "hook_pos_embed" in self._hooks:
            x = self._hook("hook_embed", w["wte.weight"][tokens]) + self._hook(
                "hook_pos_embed", np.broadcast_to(w["wpe.weight"][:T], (len(tokens), T, self.cfg.d_model)).copy())
            c_emb = (tokens, w["wte.weight"].shape, w["wpe.weight"].shape)
        else:
            x, c_emb = be.embedding_forward(tokens, w["wte.weight"], w["wpe.weight"])

        blocks = []
        for l in range(L):
            h, pre = f"h.{l}.", f"blocks.{l}."
            last_only = l == L - 1 and not all_positions
            x = self._hook(pre + "hook_resid_pre", x)
            a, c_ln1 = be.layernorm_forward(x, w[h + "ln_1.weight"], w[h + "ln_1.bias"])
            qkv, c_qkv = be.linear_forward(a, w[h + "attn.c_attn.weight"], w[h + "attn.c_attn.bias"])
            d = self.cfg.d_model
            q, k, v = (self._heads(qkv[..., i * d : (i + 1) * d]) for i in range(3))
            if last_only:
                q = q[:, :, -1:]
            q = self._hook_heads(pre + "attn.hook_q", np.ascontiguousarray(q))
            k = self._hook_heads(pre + "attn.hook_k", np.ascontiguousarray(k))
            v = self._hook_heads(pre + "attn.hook_v", np.ascontiguousarray(v))
            z, c_att = be.attention_forward(q, k, v)
            if pre + "attn.hook_pattern" in self._hooks:
                pattern = c_att[3]
                hooked = self._hook(pre + "attn.hook_pattern", pattern)
                if hooked is not pattern:
                    z = hooked @ v
            z = self._hook_heads(pre + "attn.hook_z", z)
            B, _, Tq, _ = z.shape
            zc = z.transpose(0, 2, 1, 3).reshape(B, Tq, d)
            attn_out, c_proj = be.linear_forward(zc, w[h + "attn.c_proj.weight"], w[h + "attn.c_proj.bias"])
            attn_out = self._hook(pre + "hook_attn_out", attn_out)
            resid_mid = self._hook(pre + "hook_resid_mid", (x[:, -1:] if last_only else x) + attn_out)
            m, c_ln2 = be.layernorm_forward(resid_mid, w[h + "ln_2.weight"], w[h + "ln_2.bias"])
            fc, c_fc = be.linear_forward(m, w[h + "mlp.c_fc.weight"], w[h + "mlp.c_fc.bias"])
            fc = self._hook(pre + "mlp.hook_pre", fc)
            act, c_gelu = be.gelu_forward(fc)
            act = self._hook(pre + "mlp.hook_post", act)
            mlp_out, c_mp = be.linear_forward(act, w[h + "mlp.c_proj.weight"], w[h + "mlp.c_proj.bias"])
            mlp_out = self._hook(pre + "hook_mlp_out", mlp_out)
            x = self._hook(pre + "hook_resid_post", resid_mid + mlp_out)
            blocks.append((last_only, T, c_ln1, c_qkv, c_att, c_proj, c_ln2, c_fc, c_gelu, c_mp))

        hf, c_lnf = be.layernorm_forward(x, w["ln_f.weight"], w["ln_f.bias"])
        hf = self._hook("ln_final.hook_normalized", hf)
        W_U = self.W_U
        if all_positions:
            logits = hf @ W_U.T
        else:
            hf = hf[:, -1]
            logits = hf @ W_U.T
        self._caches = (c_emb, blocks, c_lnf, hf, all_positions)
        return logits

    def run_with_cache(self, tokens, names=None, hooks=None, all_positions: bool = False):
        """Forward that also returns {hook name: activation copy} for `names` (default: all)."""
        wanted = hook_names(self.cfg.n_layers) if names is None else list(names)
        store: dict[str, np.ndarray] = {}

        def save(x, name):
            store[name] = x.copy()

        all_hooks = list(hooks.items() if isinstance(hooks, dict) else hooks or ())
        logits = self.forward(tokens, hooks=all_hooks + [(n, save) for n in wanted], all_positions=all_positions)
        return logits, store

    # ---- backward --------------------------------------------------------------------------------

    def backward(self, dlogits: np.ndarray) -> np.ndarray:
        """dlogits with the shape forward returned -> self.grads (the whole flat buffer).

        Gradients are written, not accumulated: calling backward twice gives the same result.
        """
        if self._caches is None:
            raise RuntimeError("backward: call forward first")
        if self._replaced:
            raise RuntimeError("backward: a hook replaced an activation in the last forward")
        if isinstance(self._caches, _Recompute):
            self._fused().backward(self._caches.tokens, dlogits)
            return self.grads
        be, g = self.be, self.g
        c_emb, blocks, c_lnf, hf, all_positions = self._caches
        dlogits = np.asarray(dlogits, dtype=self.params.dtype)
        g_unembed = g[self.unembed_name]
        g_unembed[...] = 0
        if all_positions:
            dhf = dlogits @ self.W_U
            g_unembed[: self.p] = dlogits.reshape(-1, self.p).T @ hf.reshape(-1, hf.shape[-1])
        else:
            dh_last = dlogits @ self.W_U
            g_unembed[: self.p] = dlogits.T @ hf
            dhf = dh_last[:, None, :]
        dx, g["ln_f.weight"][...], g["ln_f.bias"][...] = be.layernorm_backward(dhf, c_lnf)

        d = self.cfg.d_model
        for l in reversed(range(self.cfg.n_layers)):
            h = f"h.{l}."
            last_only, T, c_ln1, c_qkv, c_att, c_proj, c_ln2, c_fc, c_gelu, c_mp = blocks[l]
            dresid_mid = dx
            dact, g[h + "mlp.c_proj.weight"][...], g[h + "mlp.c_proj.bias"][...] = be.linear_backward(dx, c_mp)
            dfc = be.gelu_backward(dact, c_gelu)
            dm, g[h + "mlp.c_fc.weight"][...], g[h + "mlp.c_fc.bias"][...] = be.linear_backward(dfc, c_fc)
            dln2, g[h + "ln_2.weight"][...], g[h + "ln_2.bias"][...] = be.layernorm_backward(dm, c_ln2)
            dresid_mid = dresid_mid + dln2
            dzc, g[h + "attn.c_proj.weight"][...], g[h + "attn.c_proj.bias"][...] = be.linear_backward(
                dresid_mid, c_proj)
            B, Tq = dzc.shape[:2]
            dz = dzc.reshape(B, Tq, self.n_heads, d // self.n_heads).transpose(0, 2, 1, 3)
            dq, dk, dv = be.attention_backward(np.ascontiguousarray(dz), c_att)
            dqkv = np.empty((B, T, 3 * d), dtype=dx.dtype)
            merge = lambda t: t.transpose(0, 2, 1, 3).reshape(B, t.shape[2], d)  # noqa: E731
            if last_only:
                dqkv[..., :d] = 0
                dqkv[:, -1:, :d] = merge(dq)
            else:
                dqkv[..., :d] = merge(dq)
            dqkv[..., d : 2 * d] = merge(dk)
            dqkv[..., 2 * d :] = merge(dv)
            da, g[h + "attn.c_attn.weight"][...], g[h + "attn.c_attn.bias"][...] = be.linear_backward(dqkv, c_qkv)
            dx_in, g[h + "ln_1.weight"][...], g[h + "ln_1.bias"][...] = be.layernorm_backward(da, c_ln1)
            if last_only:
                dx_in[:, -1:] += dresid_mid
            else:
                dx_in += dresid_mid
            dx = dx_in

        dwte, g["wpe.weight"][...] = be.embedding_backward(dx, c_emb)
        if self.cfg.tied:
            g["wte.weight"] += dwte
        else:
            g["wte.weight"][...] = dwte
        return self.grads

    def loss_and_grad(self, tokens, targets) -> float:
        """Mean cross-entropy of the last-position number logits; fills self.grads."""
        if self._fused() is not None:
            tokens = np.asarray(tokens)
            if tokens.ndim != 2 or not 1 <= tokens.shape[1] <= self.cfg.n_ctx:
                raise ValueError(f"tokens: expected shape (batch, 1..{self.cfg.n_ctx}), got {tokens.shape}")
            self._replaced = False
            loss = self._fused().loss_and_grad(tokens, targets)
            self._caches = _Recompute(tokens)
            return loss
        logits = self.forward(tokens)
        loss, c = self.be.cross_entropy_forward(logits, targets)
        self.backward(self.be.cross_entropy_backward(1.0, c))
        return float(loss)


# ---- the fused path ------------------------------------------------------------------------------

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


class _Recompute:
    """The cache of a fused forward: only the tokens; a backward recomputes the activations."""

    def __init__(self, tokens):
        self.tokens = np.array(tokens, copy=True)


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


class _FusedPath:
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
            S = min(W, max(1, n // (1 << 16)))
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
