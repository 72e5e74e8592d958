"""The paper's Fourier filter on module outputs (Definition A.6), Table 1 and the single-pass filter.

A module output x (d,) is replaced by the closest y with no logit energy in the removed Fourier
rows: argmin_y ||x - y||^2 s.t. M y = 0, M = B F W_U (B selects the removed rows of the number
basis F, W_U (p, d) the number rows of the unembedding). The solution is the orthogonal
projection onto null(M): y = (I - pinv(M) M) x = x P, P symmetric (d, d). It acts in hidden
space, on the outputs of the attention and/or MLP modules of every layer, at every position.

Naming follows the paper's Table 1: ``removed="low"`` removes the low band 1 <= k < tau (a
high-pass filter), ``removed="high"`` removes k >= tau (a low-pass filter). The constant row is
never removed. The single-pass filter keeps one frequency (its cos and sin rows) and removes
every other non-constant row.

Number axis: ``fourier.number_axis``. With the default exact basis on N = p - 1 points only W_U's
rows 0..p-2 are constrained; with basis "paper" all p rows are. tau defaults to
``fourier.default_tau(denominator)``. dim null(M) = d - rank(M) is reported with every result:
when it is small the filter deletes almost all of the module output whatever the band.
"""

from __future__ import annotations

import numpy as np

from fourier_toy.analysis import fourier
from fourier_toy.errors import ConfigError, DataError
from fourier_toy.training.evaluate import error_pattern, evaluate, predict, score

__all__ = ["MODULES", "TABLE1_ROWS", "remove_mask", "null_space_projector", "filter_hooks",
           "ablation_table", "single_pass"]

MODULES = {"none": (), "attn": ("hook_attn_out",), "mlp": ("hook_mlp_out",),
           "both": ("hook_attn_out", "hook_mlp_out")}

# (modules, removed band) in the order of the paper's Table 1; None: no filter.
TABLE1_ROWS = (("none", None), ("both", "low"), ("attn", "low"), ("mlp", "low"),
               ("both", "high"), ("attn", "high"), ("mlp", "high"))
MODULE_LABELS = {"none": "none", "both": "ATTN & MLP", "attn": "ATTN", "mlp": "MLP"}


def remove_mask(fb: fourier.FourierBasis, removed, tau: int | None = None) -> np.ndarray:
    """Boolean (N,) mask of the basis rows to remove.

    removed: "low" (1 <= k < tau), "high" (k >= tau), None or "none" (nothing), or ("keep", k):
    every non-constant row except frequency k's. The constant row is never in the mask.
    """
    if removed is None or removed == "none":
        return np.zeros(fb.n, dtype=bool)
    if isinstance(removed, tuple) and len(removed) == 2 and removed[0] == "keep":
        k = removed[1]
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k < fb.n_freqs:
            raise ConfigError(f"removed: ('keep', k) needs an integer k in 1..{fb.n_freqs - 1}, got {k!r}")
        return (fb.freqs != 0) & (fb.freqs != k)
    if removed in ("low", "high"):
        masks = fourier.band_masks(fb, tau)
        return masks.low.copy() if removed == "low" else masks.high.copy()
    raise ConfigError(f"removed: must be 'low', 'high', 'none' or ('keep', k), got {removed!r}")


def null_space_projector(W_U, fb: fourier.FourierBasis, mask) -> tuple[np.ndarray, dict]:
    """P = I - pinv(M) M (d, d) float64, M = (F W_U[:N])[mask]; info: rank(M), dim null(M).

    W_U (p, d) with p >= N = fb.n; its first N rows are used. P is computed from the SVD of M
    (P = I - V_r V_r^T over the r right singular vectors above the rank tolerance at W_U.s precision), which is
    pinv(M) M exactly up to rounding and keeps P symmetric and idempotent.
    """
    dtype = getattr(W_U, "dtype", np.dtype(np.float64))
    try:
        W = np.asarray(W_U, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError("W_U: must be a numeric array of shape (p, d)") from None
    if W.ndim != 2 or W.shape[0] < fb.n or W.shape[1] < 1:
        raise DataError(f"W_U: must have shape (p, d) with p >= {fb.n} (basis points), got {W.shape}")
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (fb.n,):
        raise DataError(f"mask: must be a boolean array of shape ({fb.n},), got {mask.shape}")
    d = W.shape[1]
    M = fb.matrix[mask] @ W[: fb.n]
    if M.shape[0] == 0:
        return np.eye(d), {"rank": 0, "dim_null": d, "n_removed_rows": 0, "d": d}
    _, s, Vt = np.linalg.svd(M, full_matrices=False)
    # Rank at the resolution W_U was stored in: a float32 W_U's rounding (~6e-8 of its scale) is
    # not rank, and counting it would remove directions no band of W_U reads.
    eps = max(np.finfo(np.float64).eps, np.finfo(dtype).eps if np.issubdtype(dtype, np.floating) else 0.0)
    tol = s.max(initial=0.0) * max(M.shape) * eps
    r = int(np.sum(s > tol))
    V = Vt[:r]
    P = np.eye(d) - V.T @ V
    P = 0.5 * (P + P.T)  # exact symmetry; the difference is rounding only
    return P, {"rank": r, "dim_null": d - r, "n_removed_rows": int(mask.sum()), "d": d}


def _projection_hook(P: np.ndarray):
    def hook(x, name):
        return x.astype(np.float64) @ P
    return hook


def filter_hooks(model, removed, modules: str = "both", basis: str = "exact",
                 tau: int | None = None) -> tuple[list, dict]:
    """Hooks that filter every layer's attention and/or MLP output, and the filter's info.

    removed: see ``remove_mask``; modules: "attn", "mlp", "both" or "none" (no hooks). Returns
    ([(hook name, fn)], info) where fn maps x (..., d) -> x @ P at every position and info has
    rank, dim_null, n_removed_rows, d and the basis/N/tau.
    """
    if modules not in MODULES:
        raise ConfigError(f"modules: must be one of {', '.join(MODULES)}, got {modules!r}")
    axis = fourier.number_axis(model.n_numbers, basis, tau)
    fb, info = axis.basis, axis.info
    P, pinfo = null_space_projector(model.W_U, fb, remove_mask(fb, removed, axis.tau))
    fn = _projection_hook(P)
    hooks = [(f"blocks.{l}.{h}", fn) for l in range(model.cfg.n_layers) for h in MODULES[modules]]
    return hooks, {**info, **pinfo}


def _row(model, split, modules, removed, basis, tau) -> dict:
    hooks, info = filter_hooks(model, removed, modules, basis, tau)
    result = evaluate(model, split, hooks=hooks, with_errors=True)
    return {"modules": MODULE_LABELS[modules], "removed": removed or "-", "loss": result["loss"],
            "acc": result["acc"], "acc_pm2": result["acc_pm2"], "acc_pm10": result["acc_pm10"],
            "rank": info["rank"], "dim_null": info["dim_null"], "n_removed_rows": info["n_removed_rows"],
            "errors": result["errors"]}


def ablation_table(model, split, basis: str = "exact", tau: int | None = None) -> dict:
    """The Table 1 analogue on one split.

    Rows (in the paper's order): none; ATTN & MLP, ATTN, MLP with the low band removed; the same
    with the high band removed. Each row: modules, removed, loss, acc (+ acc_pm2, acc_pm10), rank,
    dim_null, n_removed_rows, errors (evaluate.error_pattern: n_errors, frac_multiple_of_10,
    frac_below_6, histogram). Returned with the basis/N/tau and d.
    """
    axis = fourier.number_axis(model.n_numbers, basis, tau)
    rows = [_row(model, split, m, r, basis, axis.tau) for m, r in TABLE1_ROWS]
    return {**axis.info, "d": model.cfg.d_model, "n": len(split), "rows": rows}


def single_pass(model, split, period: float = 2, basis: str = "exact", modules: str = "both") -> dict:
    """Keep only the frequency of ``period`` in every module's output (all layers), remove the rest.

    Reports exact accuracy, parity accuracy (prediction parity == answer parity), loss, dim null
    and the error pattern. The period must be a component of the basis (e.g. 2, 2.5, 5, 10 when
    N is divisible by 10).
    """
    k = fourier.number_axis(model.n_numbers, basis).basis.k_for_period(period)
    hooks, info = filter_hooks(model, ("keep", k), modules, basis)
    logits = predict(model, split.tokens, hooks=hooks)
    preds = logits.argmax(axis=1)
    result = score(logits, split.targets)
    result["errors"] = error_pattern(split.targets - preds)
    parity = float(np.mean(preds % 2 == split.targets % 2))
    return {"basis": info["basis"], "N": info["N"], "denominator": info["denominator"], "period": float(period),
            "k": k, "modules": MODULE_LABELS[modules], "n": len(split), "acc": result["acc"], "parity_acc": parity,
            "loss": result["loss"], "rank": info["rank"], "dim_null": info["dim_null"], "d": info["d"],
            "n_removed_rows": info["n_removed_rows"], "errors": result["errors"]}
