"""Symmetries of a GPT: the same function with its units relabelled.

``permute_units(model, mlp=..., heads=..., resid=...)`` -> a new GPT (same config, backend and
dtype, its own parameter buffer) whose MLP hidden units, attention heads and/or residual
coordinates are permuted consistently in every weight that reads or writes them. The function the
model computes is unchanged (to float rounding: sums run in another order); a diagnostic that
depends only on the function (lens, filters, spectra of logits) must give the same answer.

Permutations (each an int array, a permutation of 0..n-1, or None to leave that kind alone):
- ``mlp`` (4d,): hidden unit j of every layer's MLP becomes unit mlp[j]' s old unit, i.e. new
  c_fc columns = old c_fc[:, mlp], c_proj rows = old c_proj[mlp].
- ``heads`` (H,): head h of every layer takes old head heads[h]: its q, k and v columns in
  c_attn (and biases) and its rows of attn.c_proj.
- ``resid`` (d,): residual coordinate i becomes old coordinate resid[i] in every tensor indexed
  by the residual (embeddings, LayerNorm gains and biases, the projections' inputs and outputs,
  the unembedding). LayerNorm's mean and variance are symmetric in the coordinates, so this too
  keeps the function; a null-space filter built from the permuted W_U is the old one conjugated,
  P' = P[resid][:, resid].
"""

from __future__ import annotations

import numpy as np

from fourier_toy.testing._args import ArgumentError

__all__ = ["permute_units"]


def _perm(name: str, value, n: int):
    if value is None:
        return None
    p = np.asarray(value)
    if p.shape != (n,) or p.dtype.kind not in "iu" or not np.array_equal(np.sort(p), np.arange(n)):
        raise ArgumentError(f"{name}: expected a permutation of 0..{n - 1}, got {value!r}")
    return p.astype(np.int64)


def permute_units(model, *, mlp=None, heads=None, resid=None):
    """A copy of ``model`` with MLP units, heads and/or residual coordinates permuted (module docstring)."""
    from fourier_toy.nn.model import GPT

    if not isinstance(model, GPT):
        raise ArgumentError(f"model: expected a fourier_toy GPT, got {type(model).__name__}")
    cfg = model.cfg
    d, H, L = cfg.d_model, cfg.n_heads, cfg.n_layers
    Dh = d // H
    mlp = _perm("mlp", mlp, 4 * d)
    heads = _perm("heads", heads, H)
    resid = _perm("resid", resid, d)
    new = GPT(cfg, model.n_numbers, params=model.params.copy(), engine=model.engine)
    w = new.weights
    if heads is not None:
        cols = (heads[:, None] * Dh + np.arange(Dh)[None, :]).reshape(-1)  # (d,) in head-major order
    for l in range(L):
        h = f"h.{l}."
        if mlp is not None:
            w[h + "mlp.c_fc.weight"][...] = w[h + "mlp.c_fc.weight"][:, mlp]
            w[h + "mlp.c_fc.bias"][...] = w[h + "mlp.c_fc.bias"][mlp]
            w[h + "mlp.c_proj.weight"][...] = w[h + "mlp.c_proj.weight"][mlp]
        if heads is not None:
            qkv = np.concatenate([cols + i * d for i in range(3)])
            w[h + "attn.c_attn.weight"][...] = w[h + "attn.c_attn.weight"][:, qkv]
            w[h + "attn.c_attn.bias"][...] = w[h + "attn.c_attn.bias"][qkv]
            w[h + "attn.c_proj.weight"][...] = w[h + "attn.c_proj.weight"][cols]
        if resid is not None:
            for name in ("ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias", "attn.c_proj.bias", "mlp.c_proj.bias"):
                w[h + name][...] = w[h + name][resid]
            for name in ("attn.c_attn.weight", "mlp.c_fc.weight"):  # read the residual: rows
                w[h + name][...] = w[h + name][resid]
            for name in ("attn.c_proj.weight", "mlp.c_proj.weight"):  # write the residual: columns
                w[h + name][...] = w[h + name][:, resid]
    if resid is not None:
        for name in ("wte.weight", "wpe.weight", "lm_head.weight"):
            if name in w:
                w[name][...] = w[name][:, resid]
        for name in ("ln_f.weight", "ln_f.bias"):
            w[name][...] = w[name][resid]
    return new
