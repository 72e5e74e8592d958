"""Shared by the kernel tests: hypothesis settings, random inputs and the oracle's term sizes.

Comparisons with the numpy oracle use the public ``fourier_toy.testing.assert_close``: float64 must
agree to 1e-10, float32 to 2e-5, relative to the size of the terms that make up the result
(``FLOAT_TOLERANCE``, calibrated in its docstring).
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
DTYPES = st.sampled_from([np.float64, np.float32])
SEEDS = st.integers(0, 2**32 - 1)


def same_nans(actual, expected, what=""):
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg=what)


def random_arrays(seed, dtype, *shapes, scale=1.0):
    rng = np.random.default_rng(seed)
    return [(scale * rng.standard_normal(s)).astype(dtype) for s in shapes]


def with_nan(a, seed):
    """A copy of a with one entry set to NaN."""
    a = a.copy()
    a.reshape(-1)[np.random.default_rng(seed).integers(a.size)] = np.nan
    return a


def attention_grad_scales(dz, cache):
    """The oracle's backward with every term made non-negative: the size of what is summed."""
    q, k, v, p = (abs(a) for a in cache)
    dp = abs(dz) @ v.swapaxes(-1, -2)
    ds = p * (dp + (dp * p).sum(axis=-1, keepdims=True)) / np.sqrt(q.shape[-1])
    return ds @ k, ds.swapaxes(-1, -2) @ q, p.swapaxes(-1, -2) @ abs(dz)
