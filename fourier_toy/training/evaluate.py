"""Evaluation of a model on a split: loss, exact / +-2 / +-10 accuracy, and the errors' pattern."""

from __future__ import annotations

import numpy as np

from fourier_toy.nn import ops
from fourier_toy.task import Split

EVAL_BATCH = 4096


def predict(model, tokens: np.ndarray, hooks=None, batch: int = EVAL_BATCH) -> np.ndarray:
    """tokens (n, T) -> number logits (n, p) at the last position, in batches."""
    out = [model.forward(tokens[i : i + batch], hooks=hooks) for i in range(0, len(tokens), batch)]
    return np.concatenate(out) if out else np.zeros((0, model.n_numbers), dtype=model.params.dtype)


def error_pattern(errors: np.ndarray) -> dict:
    """errors = (a + b) - prediction over the wrong answers only.

    The paper's two error types: multiples of 10 (low frequencies removed) and |error| < 6
    (high frequencies removed). Fractions are of the wrong answers; None when there are none.
    """
    errors = np.asarray(errors, dtype=np.int64)
    wrong = errors[errors != 0]
    values, counts = np.unique(wrong, return_counts=True)
    n = len(wrong)
    return {
        "n_errors": int(n),
        "frac_multiple_of_10": float(np.mean(wrong % 10 == 0)) if n else None,
        "frac_below_6": float(np.mean(np.abs(wrong) < 6)) if n else None,
        "histogram": {int(v): int(c) for v, c in zip(values, counts)},
    }


def score(logits: np.ndarray, targets: np.ndarray) -> dict:
    """logits (n, p), targets (n,) -> loss and accuracies (exact, within +-2, within +-10)."""
    if len(targets) == 0:
        return {"n": 0, "loss": None, "acc": None, "acc_pm2": None, "acc_pm10": None}
    loss, _ = ops.cross_entropy_forward(logits.astype(np.float64), targets)
    dist = np.abs(logits.argmax(axis=1) - targets)
    return {
        "n": int(len(targets)),
        "loss": float(loss) if np.isfinite(loss) else None,  # a diverged model: strict JSON has no NaN
        "acc": float(np.mean(dist == 0)),
        "acc_pm2": float(np.mean(dist <= 2)),
        "acc_pm10": float(np.mean(dist <= 10)),
    }


def evaluate(model, split: Split, hooks=None, with_errors: bool = False) -> dict:
    logits = predict(model, split.tokens, hooks=hooks)
    result = score(logits, split.targets)
    if with_errors:
        result["errors"] = error_pattern(split.targets - logits.argmax(axis=1))
    return result
