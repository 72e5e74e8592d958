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
- op by op (hooks, `all_positions`, and any model without an engine): each op of `ops.py` in turn,
  or the engine's numba twin of it, with the oracle's caches;
- fused (a model with an engine, `fourier_toy.fast.ENGINE`: `loss_and_grad`, `train_step`,
  `train_steps`, and `forward`/`backward` without hooks at the last position): the engine's
  `fused_path(model)` runs a batch in pieces on its threads (see fourier_toy/fast/). A forward of
  this path keeps no activations; a `backward` after it recomputes them.
This module never imports the engine: `training.make_gpt` attaches the one `cfg.backend` names.
A GPT object is not meant to be used from two threads at once.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from fourier_toy.nn import ops
from fourier_toy.config import ModelConfig
from fourier_toy.nn.optim import Optimizer, clip_grad_norm
from fourier_toy.nn.params import Layout, init_gpt2

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


class GPT:
    """GPT-2 over `n_numbers` number tokens plus '+' and '='.

    Attributes: `params` (layout.size,) the flat weight buffer and `weights` its named views (GPT-2
    names, see params.py); `grads` and `grad_views` the same for the gradient; `ops` the op pairs
    in use (this package's numpy `ops`, or the engine's kernels with the same signatures);
    `engine` the accelerator or None.
    """

    def __init__(self, cfg: ModelConfig, n_numbers: int, params: np.ndarray | None = None,
                 rng: np.random.Generator | None = None, dtype=np.float32, engine=None):
        self.cfg = cfg
        self.n_numbers = n_numbers
        self.vocab_size = n_numbers + 2
        self.n_heads = cfg.n_heads
        self.layout = Layout.gpt2(self.vocab_size, cfg.d_model, cfg.n_layers, cfg.tied, cfg.n_ctx)
        if params is None:
            params = init_gpt2(self.layout, cfg.n_layers, rng if rng is not None else np.random.default_rng(0), dtype)
        if params.shape != (self.layout.size,):
            raise ValueError(f"params: expected shape ({self.layout.size},), got {params.shape}")
        self.params = params
        self.weights = self.layout.views(params)
        self.grads = np.zeros_like(params)
        self.grad_views = self.layout.views(self.grads)
        self.engine = engine
        self.ops = ops if engine is None else engine.ops
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
        return self.weights[self.unembed_name][: self.n_numbers]

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
        """The engine's fused path for this model in float32/float64; None otherwise."""
        if self._fused_path is None:
            if self.engine is None or self.params.dtype not in (np.float32, np.float64):
                return None
            self._fused_path = self.engine.fused_path(self)
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
        be, w, L, T = self.ops, self.weights, self.cfg.n_layers, tokens.shape[1]

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
        be, g = self.ops, self.grad_views
        c_emb, blocks, c_lnf, hf, all_positions = self._caches
        dlogits = np.asarray(dlogits, dtype=self.params.dtype)
        g_unembed = g[self.unembed_name]
        g_unembed[...] = 0
        if all_positions:
            dhf = dlogits @ self.W_U
            g_unembed[: self.n_numbers] = dlogits.reshape(-1, self.n_numbers).T @ hf.reshape(-1, hf.shape[-1])
        else:
            dh_last = dlogits @ self.W_U
            g_unembed[: self.n_numbers] = dlogits.T @ hf
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
        return self._loss_and_grad(tokens, targets, None)

    def train_step(self, tokens, targets, opt: Optimizer, lr=None, grad_clip=None) -> float:
        """One training step: loss_and_grad; global-norm clipping of self.grads at grad_clip
        (None or 0: none); opt.step(self.params, self.grads, lr) unless the loss is not finite
        (the parameters then stay as they were). Returns the loss.

        On the fused path without clipping, the gradient sum and the optimizer's slices run in
        the same hand-off as the pieces, which saves the threads a round trip through the caller.
        """
        if not grad_clip and self._fused() is not None:
            update = opt.prepare_step(self.params, self.grads, lr)
            if update is not None:
                return self._loss_and_grad(tokens, targets, update)
        loss = self.loss_and_grad(tokens, targets)
        if grad_clip:
            clip_grad_norm(self.grads, grad_clip)
        if math.isfinite(loss):
            opt.step(self.params, self.grads, lr)
        return loss

    def train_steps(self, tokens, targets, opt: Optimizer, lrs=None, grad_clip=None) -> np.ndarray:
        """train_step for each s of tokens (K, B, T) and targets (K, B), with learning rates lrs
        (K values; None: the optimizer's own), in order, stopping after the first non-finite loss.
        Returns the losses of the steps taken, (<= K,) float64: the last is non-finite if they
        stopped early, and that step was not applied.

        The results are those of K calls of train_step, to the bit. On the fused path without
        clipping, all K steps are one hand-off: the threads meet at barriers between the steps
        instead of returning to Python, which saves the Python around a step (about 0.3 ms).
        """
        tokens, targets = np.asarray(tokens), np.asarray(targets)
        if tokens.ndim != 3 or len(tokens) < 1 or not 1 <= tokens.shape[2] <= self.cfg.n_ctx:
            raise ValueError(f"tokens: expected shape (steps >= 1, batch, 1..{self.cfg.n_ctx}), got {tokens.shape}")
        K = len(tokens)
        lrs = [None] * K if lrs is None else list(lrs)
        if len(lrs) != K:
            raise ValueError(f"lrs: expected {K} learning rates, one per step, got {len(lrs)}")
        if not grad_clip and self._fused() is not None:
            update = opt.prepare_steps(self.params, self.grads, lrs)
            if update is not None:
                self._replaced = False
                losses = self._fused().train_steps(tokens, targets, update)
                self._caches = _Recompute(tokens[len(losses) - 1])
                return losses
        losses = []
        for s in range(K):
            losses.append(self.train_step(tokens[s], targets[s], opt, lrs[s], grad_clip))
            if not math.isfinite(losses[-1]):
                break
        return np.array(losses)

    def _loss_and_grad(self, tokens, targets, update) -> float:
        if self._fused() is not None:
            tokens = np.asarray(tokens)
            if tokens.ndim != 2 or not 1 <= tokens.shape[1] <= self.cfg.n_ctx:
                raise ValueError(f"tokens: expected shape (batch, 1..{self.cfg.n_ctx}), got {tokens.shape}")
            self._replaced = False
            loss = self._fused().loss_and_grad(tokens, targets, update)
            self._caches = _Recompute(tokens)
            return loss
        logits = self.forward(tokens)
        loss, c = self.ops.cross_entropy_forward(logits, targets)
        self.backward(self.ops.cross_entropy_backward(1.0, c))
        return float(loss)


class _Recompute:
    """The cache of a fused forward: only the tokens; a backward recomputes the activations."""

    def __init__(self, tokens):
        self.tokens = np.array(tokens, copy=True)
