"""AdamW over the flat parameter buffer, in numba, sliced over the hot path's threads (threads.py):
`RULE`, the nn.optim.UpdateRule an AdamW uses on the numba backend (the reference is
nn.optim.NUMPY_UPDATE)."""

from __future__ import annotations

import operator

import numpy as np

from fourier_toy.errors import ConfigError, DataError
from fourier_toy.fast.jit import FLOATS, jit
from fourier_toy.fast.inputs import as_dtype, check_shape
from fourier_toy.fast.threads import run_sliced
from fourier_toy.nn.optim import UpdateRule

__all__ = ["RULE", "Step", "adamw_update", "prepare", "step_of"]


@jit
def _adamw(p, g, m, v, lr, b1, c1, b2, c2, eps, lr_wd, bc1, bc2, decay, trainable):
    for i in range(p.size):
        if trainable[i] != 0:
            pi = p[i]
            if decay[i] != 0:
                pi -= lr_wd * pi
            gi = g[i]
            mi = b1 * m[i] + c1 * gi
            vi = b2 * v[i] + c2 * gi * gi
            m[i] = mi
            v[i] = vi
            p[i] = pi - lr * (mi / bc1) / (np.sqrt(vi / bc2) + eps)


def adamw_update(params, grads, m, v, lr, b1, b2, eps, wd, decay_mask_f32, trainable_mask_f32, t):
    """One AdamW step (PyTorch semantics) on flat buffers, in place on params, m and v.

    params, m, v: writable C-contiguous float arrays of one shape and dtype; grads and the two
    0/1 masks have that shape. Where trainable_mask is 0 nothing changes. Where decay_mask is 1,
    p -= lr * wd * p first; then m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2 and
    p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps). t counts steps from 1.
    Runs as contiguous slices on the hot path's threads (elementwise, so the result does not
    depend on the slicing).
    """
    step = prepare(params, grads, m, v, lr, b1, b2, eps, wd, decay_mask_f32, trainable_mask_f32, t)
    run_sliced(step, step.size)


class Step:
    """One AdamW step on flat buffers, checked and ready to apply in slices: step(lo, hi) updates
    entries lo:hi (any slicing, on any threads). p, g, m, v: the flattened buffers; scalars: the
    kernel's 9 scalars, an array of the buffers' dtype; decay, trainable: bool masks; size: the entries.
    nn.optim.AdamW.prepare_step adds commit(), which counts the step once it has been applied."""

    def __init__(self, p, g, m, v, scalars, decay, trainable):
        self.p, self.g, self.m, self.v = p, g, m, v
        self.scalars = scalars
        self.decay, self.trainable = decay, trainable
        self.size = p.size

    def __call__(self, lo: int, hi: int) -> None:
        _adamw(self.p[lo:hi], self.g[lo:hi], self.m[lo:hi], self.v[lo:hi], *self.scalars, self.decay[lo:hi],
               self.trainable[lo:hi])


def prepare(params, grads, m, v, lr, b1, b2, eps, wd, decay_mask, trainable_mask, t) -> Step:
    """adamw_update's checks and constants, as a Step. The masks may be bool (used as they are:
    a quarter of a float32 mask's bytes) or any 0/1 numbers."""
    fn = "adamw_update"
    for name, a in (("params", params), ("m", m), ("v", v)):
        if not isinstance(a, np.ndarray) or a.dtype not in FLOATS:
            raise DataError(f"{fn}: {name} must be a float32 or float64 numpy array")
        if not (a.flags.c_contiguous and a.flags.writeable):
            raise DataError(f"{fn}: {name} must be C-contiguous and writable (updated in place)")
        if a.dtype != params.dtype or a.shape != params.shape:
            raise DataError(f"{fn}: {name} must match params: {params.dtype} {params.shape}, "
                            f"got {a.dtype} {a.shape}")
    dt = params.dtype
    g = as_dtype(fn, "grads", grads, dt)
    check_shape(fn, "grads", g, params.shape)
    masks = []
    for name, a in (("decay_mask", decay_mask), ("trainable_mask", trainable_mask)):
        a = np.asarray(a)
        if a.dtype != np.bool_:
            a = as_dtype(fn, name, a, np.float32, kinds="biuf") != 0  # what the kernel tests
        check_shape(fn, name, a, params.shape)
        masks.append(np.ascontiguousarray(a).reshape(-1))
    try:
        t = operator.index(t)
    except TypeError:
        raise ConfigError(f"{fn}: t must be an integer step count >= 1, got {t!r}") from None
    if t < 1:
        raise ConfigError(f"{fn}: t must be an integer step count >= 1, got {t}")
    return step_of(*(a.reshape(-1) for a in (params, g, m, v)), lr, b1, b2, eps, wd, *masks, t)


def step_of(p, g, m, v, lr, b1, b2, eps, wd, decay, trainable, t) -> Step:
    """A Step without prepare's checks, for a caller that has made them: p, g, m, v flat
    C-contiguous arrays of one float dtype (p, m, v writable), decay and trainable bool arrays of
    their size, t >= 1."""
    scalars = np.array([lr, b1, 1.0 - b1, b2, 1.0 - b2, eps, lr * wd, 1.0 - b1**t, 1.0 - b2**t], dtype=p.dtype)
    return Step(p, g, m, v, scalars, decay, trainable)


# nn.optim.AdamW makes its own checks, so it slices the step itself (step_of, not prepare).
RULE = UpdateRule(apply=adamw_update, slice_step=step_of, run_slices=run_sliced)
