"""Input checks of the numba kernels' public functions (kernels.py, adamw_kernel.py): each names
the function and the argument, and returns arrays the kernels can take (one float dtype,
C-contiguous)."""

from __future__ import annotations

import numpy as np

from fourier_toy.errors import DataError
from fourier_toy.fast.jit import FLOATS

__all__ = ["as_dtype", "check_shape", "dtype_of", "floats", "indices"]


def floats(fn, **arrays):
    """Arrays of one float dtype (float32 or float64, promoted as numpy would), C-contiguous."""
    arrs = {name: np.asarray(a) for name, a in arrays.items()}
    for name, a in arrs.items():
        if a.dtype.kind != "f":
            raise DataError(f"{fn}: {name} must be a float32 or float64 array, got {a.dtype}")
    dt = np.result_type(*arrs.values())
    if dt not in FLOATS:
        names = ", ".join(arrs)
        raise DataError(f"{fn}: {names} must be float32 or float64, got {dt}")
    return dt, [np.ascontiguousarray(a, dtype=dt) for a in arrs.values()]


def as_dtype(fn, name, a, dt, kinds="f"):
    """An array cast to dtype dt (the forward pass's, for gradients and caches), C-contiguous."""
    a = np.asarray(a)
    if a.dtype.kind not in kinds:
        raise DataError(f"{fn}: {name} must be a float array, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=dt)


def dtype_of(fn, a):
    """The forward pass's dtype, read from a cached array."""
    dt = np.asarray(a).dtype
    if dt not in FLOATS:
        raise DataError(f"{fn}: cache arrays must be float32 or float64, got {dt}")
    return dt


def check_shape(fn, name, a, shape):
    if a.shape != tuple(shape):
        raise DataError(f"{fn}: {name} must have shape {tuple(shape)}, got {a.shape}")


def _in_range(ids: np.ndarray, upper: int) -> bool:
    """Whether every entry of an intp array lies in [0, upper): one pass, since a negative id
    read as unsigned is larger than any upper bound."""
    return ids.size == 0 or int(ids.view(np.uintp).max()) < upper


def indices(fn, name, a, shape, upper):
    """Integer indices of the given shape in [0, upper), as intp."""
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise DataError(f"{fn}: {name} must be an integer array, got dtype {a.dtype}")
    check_shape(fn, name, a, shape)
    ids = np.ascontiguousarray(a, dtype=np.intp)
    if not _in_range(ids, upper):
        raise DataError(f"{fn}: {name} must lie in [0, {upper}), got values in "
                        f"[{a.min()}, {a.max()}]")
    return ids
