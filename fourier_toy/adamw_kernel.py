"""AdamW over the flat parameter buffer, in numba: the numba backend's optimizer update (the
numpy one is optim._adamw_update), sliced over the hot path's threads (threads.py)."""

from __future__ import annotations

import operator

import numpy as np

from fourier_toy.errors import ConfigError, DataError
from fourier_toy.jit import FLOATS, jit
from fourier_toy.kernel_inputs import as_dtype, check_shape
from fourier_toy.threads import MIN_SLICE, run_tasks, threads

__all__ = ["adamw_update"]


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
    for name, a in (("decay_mask_f32", decay_mask_f32), ("trainable_mask_f32", trainable_mask_f32)):
        a = as_dtype(fn, name, a, np.float32, kinds="biuf")
        check_shape(fn, name, a, params.shape)
        masks.append(a.reshape(-1))
    try:
        t = operator.index(t)
    except TypeError:
        raise ConfigError(f"{fn}: t must be an integer step count >= 1, got {t!r}") from None
    if t < 1:
        raise ConfigError(f"{fn}: t must be an integer step count >= 1, got {t}")
    T = dt.type
    args = (T(lr), T(b1), T(1.0 - b1), T(b2), T(1.0 - b2), T(eps), T(lr * wd),
            T(1.0 - b1**t), T(1.0 - b2**t))
    flat = [a.reshape(-1) for a in (params, g, m, v)] + masks
    n = flat[0].size
    k = min(threads(), max(1, n // MIN_SLICE))
    bounds = [n * j // k for j in range(k + 1)]

    def task(lo, hi):
        return lambda: _adamw(*(a[lo:hi] for a in flat[:4]), *args, flat[4][lo:hi], flat[5][lo:hi])

    run_tasks([task(bounds[j], bounds[j + 1]) for j in range(k)], k)
