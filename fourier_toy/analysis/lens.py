"""Logit lens and module logits (PAPER.md section 3), and the Fourier spectra of module logits.

Logit lens: the prediction of layer l is argmax over the number tokens of
W_U LN_f(h^(l)), where h^(l) is the residual stream after block l at the last position ('=') and
LN_f is the final LayerNorm with its statistics recomputed for h^(l) itself. Reusing the
statistics of the last layer's residual for every layer (a known logit-lens mistake) would give a
different, wrong lens; with recomputation the last layer's lens equals the model's logits exactly.

Module logits: L_attn^(l) = W_U attn_out^(l) and L_mlp^(l) = W_U mlp_out^(l) at the last position,
with no LayerNorm, as in the paper. They are additive: W_U h^(L-1) = W_U (embed + pos) +
sum_l L_attn^(l) + sum_l L_mlp^(l) at the last position.

Number axis. The task has p = 2 * max_operand + 1 number tokens; every Fourier analysis takes its
basis, N and tau from ``fourier.number_axis(p, kind, tau)`` (its docstring gives the rule: by
default the exact basis on N = p - 1 points, tau = ``fourier.default_tau(N)``). A logit vector or
W_U is restricted to the first N number rows before projection. Every result names the basis, N
and tau.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fourier_toy.analysis import fourier
from fourier_toy.errors import DataError
from fourier_toy.training.evaluate import EVAL_BATCH, score

__all__ = [
    "residual_last",
    "logit_lens",
    "ModuleLogits",
    "module_logits",
    "module_spectra",
]


def _check_split(split) -> None:
    tokens = getattr(split, "tokens", None)
    targets = getattr(split, "targets", None)
    if tokens is None or targets is None:
        raise DataError("split: expected a task.Split with tokens (n, 4) and targets (n,)")
    if len(targets) == 0:
        raise DataError("split: has no examples")


def _batches(n: int, batch: int):
    for lo in range(0, n, batch):
        yield slice(lo, min(n, lo + batch))


def residual_last(model, tokens: np.ndarray) -> np.ndarray:
    """tokens (n, T) -> the residual stream after every block at the last position, (L, n, d)."""
    L = model.cfg.n_layers
    names = [f"blocks.{l}.hook_resid_post" for l in range(L)]
    _, cache = model.run_with_cache(tokens, names=names)
    return np.stack([cache[n][:, -1] for n in names])


def _lens_logits(model, resid: np.ndarray) -> np.ndarray:
    """resid (n, d) -> (n, p): final LayerNorm recomputed for these vectors, then W_U.

    The (n, 1, d) shape and the model's own backend op reproduce the model's last step exactly,
    so the lens at the last layer equals the model's logits bit for bit.
    """
    w = model.weights
    hf, _ = model.ops.layernorm_forward(np.ascontiguousarray(resid[:, None, :]), w["ln_f.weight"], w["ln_f.bias"])
    return hf[:, -1] @ model.W_U.T


def logit_lens(model, split, batch: int = EVAL_BATCH) -> list[dict]:
    """Per layer l = 0..L-1: evaluate.score of the lens logits (loss, exact, +-2, +-10 accuracy).

    The lens reads the residual after block l at the last position through the final LayerNorm
    (statistics recomputed per vector) and W_U (number rows). Returns a list of L dicts with key
    "layer" added.
    """
    _check_split(split)
    L = model.cfg.n_layers
    per_layer = [[] for _ in range(L)]
    for sl in _batches(len(split), batch):
        resid = residual_last(model, split.tokens[sl])
        for l in range(L):
            per_layer[l].append(_lens_logits(model, resid[l]))
    return [{"layer": l, **score(np.concatenate(per_layer[l]), split.targets)} for l in range(L)]


class ModuleLogits(NamedTuple):
    """Direct logits at the last position, each over all p number tokens (no LayerNorm).

    attn, mlp: (L, n, p) = module output @ W_U.T per layer; embed: (n, p) = (token + position
    embedding) @ W_U.T. embed + attn.sum(0) + mlp.sum(0) = resid_post[L-1] @ W_U.T.
    """

    attn: np.ndarray
    mlp: np.ndarray
    embed: np.ndarray


def module_logits(model, tokens: np.ndarray) -> ModuleLogits:
    """tokens (n, T) -> ModuleLogits (attn (L, n, p), mlp (L, n, p), embed (n, p))."""
    tokens = np.asarray(tokens)
    L = model.cfg.n_layers
    attn_names = [f"blocks.{l}.hook_attn_out" for l in range(L)]
    mlp_names = [f"blocks.{l}.hook_mlp_out" for l in range(L)]
    _, cache = model.run_with_cache(tokens, names=["hook_embed", "hook_pos_embed", *attn_names, *mlp_names])
    W_U = model.W_U
    attn = np.stack([cache[n][:, -1] @ W_U.T for n in attn_names])
    mlp = np.stack([cache[n][:, -1] @ W_U.T for n in mlp_names])
    embed = (cache["hook_embed"][:, -1] + cache["hook_pos_embed"][:, -1]) @ W_U.T
    return ModuleLogits(attn, mlp, embed)


def module_spectra(model, split, basis: str = "exact", tau: int | None = None,
                   batch: int = EVAL_BATCH) -> dict:
    """Fourier spectra of every layer's attention and MLP logits over a split.

    For each module m in ("attn", "mlp") and layer l, with F the number basis (N rows) and
    c_i = F L_m^(l)[i, :N] the components of example i:
    - ``rows[m]`` (L, N): mean over examples of |c_i| per basis row (the paper's |F L| averaged
      over test examples);
    - ``freqs[m]`` (L, K): the same with each frequency's cos and sin merged per example,
      sqrt(c_sin^2 + c_cos^2), then averaged (K = denominator // 2 + 1, index = k);
    - ``low[m]``, ``high[m]`` (L,): fraction of the non-constant energy in the band, computed as
      sum_i E_band,i / sum_i E_nonconst,i with E the squared components of each example. Energy
      is taken per example before averaging because the logit vectors themselves would cancel
      when averaged (their components' phases follow the answer); pooling the energies weights
      each example by its energy.
    Plus ``periods`` (K,) and ``component_names`` (N,), and the basis/N/tau of ``NumberAxis.info``.
    """
    _check_split(split)
    axis = fourier.number_axis(model.n_numbers, basis, tau)
    fb, info = axis.basis, axis.info
    masks = fourier.band_masks(fb, axis.tau)
    F = fb.matrix
    L, K = model.cfg.n_layers, fb.n_freqs
    onehot = np.zeros((fb.n, K))
    onehot[np.arange(fb.n), fb.freqs] = 1.0
    acc = {m: {"rows": np.zeros((L, fb.n)), "freqs": np.zeros((L, K)), "low": np.zeros(L), "high": np.zeros(L)}
           for m in ("attn", "mlp")}
    for sl in _batches(len(split), batch):
        ml = module_logits(model, split.tokens[sl])
        for m, logits in (("attn", ml.attn), ("mlp", ml.mlp)):
            comps = logits[:, :, : fb.n].astype(np.float64) @ F.T  # (L, n, N)
            energy = comps**2
            per_freq = energy @ onehot  # (L, n, K): cos^2 + sin^2 of each frequency
            acc[m]["rows"] += np.abs(comps).sum(axis=1)
            acc[m]["freqs"] += np.sqrt(per_freq).sum(axis=1)
            acc[m]["low"] += energy[:, :, masks.low].sum(axis=(1, 2))
            acc[m]["high"] += energy[:, :, masks.high].sum(axis=(1, 2))
    n = len(split)
    out = {**info, "n": n, "periods": fb.frequency_periods.tolist(), "component_names": list(fb.names),
           "rows": {}, "freqs": {}, "low": {}, "high": {}}
    for m, a in acc.items():
        total = a["low"] + a["high"]
        with np.errstate(invalid="ignore", divide="ignore"):
            out["low"][m] = np.where(total > 0, a["low"] / total, np.nan)
            out["high"][m] = np.where(total > 0, a["high"] / total, np.nan)
        out["rows"][m] = a["rows"] / n
        out["freqs"][m] = a["freqs"] / n
    return out
