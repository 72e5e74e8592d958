"""blas.matmul against np.matmul: the same BLAS routine with the same arguments, so the same bits.

Operands and outputs are drawn in every layout numpy hands to BLAS directly (C order, transposed,
a column block of a wider array, every k-th row), plus layouts it does not (reversed or strided
columns), where only closeness is promised. The adapters over scipy's BLAS, used where numpy's
own BLAS exports no cblas routines, are checked against numpy to rounding.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_checks import DTYPES, SEEDS, SETTINGS

from fourier_toy.fast import blas
from fourier_toy.testing import assert_close
from fourier_toy.training.backends import make_gpt

BLASABLE = ("C", "T", "cols", "rows")  # layouts np.matmul passes to BLAS as they are
OTHER = ("reversed", "strided")  # layouts it copies first


def _layout(rng, dtype, shape, kind):
    """An array of `shape` with entries from rng, laid out in memory as `kind` says."""
    r, c = shape
    if kind == "C":
        return rng.standard_normal((r, c)).astype(dtype)
    if kind == "T":
        return rng.standard_normal((c, r)).astype(dtype).T
    if kind == "cols":
        return rng.standard_normal((r, c + 5)).astype(dtype)[:, 2:2 + c]
    if kind == "rows":
        return rng.standard_normal((2 * r, c)).astype(dtype)[::2]
    if kind == "reversed":
        return rng.standard_normal((r, c)).astype(dtype)[::-1]
    return rng.standard_normal((r, 2 * c)).astype(dtype)[:, ::2]


def _output(dtype, shape, transposed):
    return np.full(shape[::-1], np.nan, dtype).T if transposed else np.full(shape, np.nan, dtype)


def _bits(x):
    return np.ascontiguousarray(x).view(np.uint8)


@SETTINGS
@given(dtype=DTYPES, seed=SEEDS, m=st.integers(0, 9), n=st.integers(0, 9), p=st.integers(0, 9),
       big=st.booleans(), ka=st.sampled_from(BLASABLE), kb=st.sampled_from(BLASABLE), out_t=st.booleans(),
       nan=st.booleans())
def test_matmul_gives_np_matmuls_bits(dtype, seed, m, n, p, big, ka, kb, out_t, nan):
    if big:  # sizes where BLAS blocks and vectorizes
        m, n, p = 8 * m + 1, 16 * n + 3, 24 * p + 2
    rng = np.random.default_rng(seed)
    a, b = _layout(rng, dtype, (m, n), ka), _layout(rng, dtype, (n, p), kb)
    if nan and a.size:
        a[rng.integers(m), rng.integers(n)] = np.nan
    expected, out = _output(dtype, (m, p), out_t), _output(dtype, (m, p), out_t)
    np.matmul(a, b, out=expected)
    blas.matmul(a, b, out)
    np.testing.assert_array_equal(_bits(out), _bits(expected))


@SETTINGS
@given(dtype=DTYPES, seed=SEEDS, m=st.integers(1, 12), n=st.integers(1, 12), p=st.integers(1, 12),
       ka=st.sampled_from(BLASABLE + OTHER), kb=st.sampled_from(OTHER))
def test_matmul_of_layouts_numpy_copies_is_close(dtype, seed, m, n, p, ka, kb):
    rng = np.random.default_rng(seed)
    a, b = _layout(rng, dtype, (m, n), ka), _layout(rng, dtype, (n, p), kb)
    out = np.empty((m, p), dtype)
    blas.matmul(a, b, out)
    assert_close(out, a.astype(np.float64) @ b.astype(np.float64), scale=np.abs(a) @ np.abs(b))


def test_backend_is_numpys_openblas_where_numpy_bundles_it():
    from threadpoolctl import threadpool_info

    bundled = any(i.get("internal_api") == "openblas" and "numpy" in (i.get("filepath") or "")
                  for i in threadpool_info())
    assert blas.BACKEND == ("numpy-openblas" if bundled else "scipy-blas")


def _ptr(x):
    return ctypes.c_void_p(x.ctypes.data)


def _dtype(routine):
    return np.float32 if routine[0] == "s" else np.float64


TRANSPOSES = [blas._NO_TRANS, blas._TRANS]


@pytest.mark.parametrize("routine, ta, tb", list(itertools.product(["sgemm", "dgemm"], TRANSPOSES, TRANSPOSES)))
def test_scipy_gemm_adapter_computes_row_major_products(routine, ta, tb):
    dtype = _dtype(routine)
    rng = np.random.default_rng(0)
    m, n, k = 5, 7, 3
    A = rng.standard_normal((m, k) if ta == blas._NO_TRANS else (k, m)).astype(dtype)
    B = rng.standard_normal((k, n) if tb == blas._NO_TRANS else (n, k)).astype(dtype)
    C = np.full((m, n), np.nan, dtype)
    adapter = blas._gemm_adapter(routine)
    adapter.ctypes(blas._ROW_MAJOR, ta, tb, m, n, k, 1.0, _ptr(A), A.shape[1], _ptr(B), B.shape[1], 0.0, _ptr(C), n)
    opA = A if ta == blas._NO_TRANS else A.T
    opB = B if tb == blas._NO_TRANS else B.T
    assert_close(C, opA.astype(np.float64) @ opB.astype(np.float64))


@pytest.mark.parametrize("routine", ["sdot", "ddot"])
def test_scipy_dot_adapter_computes_strided_dot_products(routine):
    dtype = _dtype(routine)
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal(14).astype(dtype), rng.standard_normal(21).astype(dtype)
    got = blas._dot_adapter(routine).ctypes(7, _ptr(x), 2, _ptr(y), 3)
    assert_close(np.array(got, dtype), x[::2].astype(np.float64) @ y[::3].astype(np.float64))


@pytest.mark.parametrize("routine, order, trans",
                         list(itertools.product(["sgemv", "dgemv"], [blas._ROW_MAJOR, blas._COL_MAJOR], TRANSPOSES)))
def test_scipy_gemv_adapter_computes_both_orders(routine, order, trans):
    rng, dtype = np.random.default_rng(1), _dtype(routine)
    m, n = 4, 6  # A is m x n in the given order
    A = rng.standard_normal((m, n)).astype(dtype)
    stored = A if order == blas._ROW_MAJOR else np.ascontiguousarray(A.T)  # column-major storage of A
    lda = n if order == blas._ROW_MAJOR else m
    x = rng.standard_normal(m if trans == blas._TRANS else n).astype(dtype)
    y = np.full(n if trans == blas._TRANS else m, np.nan, dtype)
    adapter = blas._gemv_adapter(routine)
    adapter.ctypes(order, trans, m, n, 1.0, _ptr(stored), lda, _ptr(x), 1, 0.0, _ptr(y), 1)
    opA = A.T if trans == blas._TRANS else A
    assert_close(y, opA.astype(np.float64) @ x.astype(np.float64))


def _in_subprocess(code, blas_choice):
    env = {**os.environ, "FOURIER_TOY_BLAS": blas_choice}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env)


def test_forced_scipy_blas_trains_like_the_numpy_oracle():
    """The adapters end to end: the numba backend's loss and gradients on scipy's BLAS."""
    done = _in_subprocess("""
        import numpy as np
        from fourier_toy.fast import blas
        from fourier_toy.config import ModelConfig
        from fourier_toy.training.backends import make_gpt
        models = [make_gpt(ModelConfig(d_model=32, n_layers=2, n_heads=2, backend=b), 21,
                      rng=np.random.default_rng(0), dtype=np.float64) for b in ("numba", "numpy")]
        rng = np.random.default_rng(1)
        tok, tg = rng.integers(0, 23, (300, 4)), rng.integers(0, 21, 300)
        losses = [m.loss_and_grad(tok, tg) for m in models]
        err = np.abs(models[0].grads - models[1].grads).max() / np.abs(models[1].grads).max()
        print(blas.BACKEND, abs(losses[0] - losses[1]), err)
    """, "scipy")
    assert done.returncode == 0, done.stderr
    backend, loss_err, grad_err = done.stdout.split()
    assert backend == "scipy-blas"
    assert float(loss_err) < 1e-12 and float(grad_err) < 1e-10


def test_a_bad_blas_choice_is_a_one_line_config_error():
    done = _in_subprocess("import fourier_toy.fast.blas", "mkl")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        "fourier_toy.errors.ConfigError: FOURIER_TOY_BLAS: must be 'numpy' or 'scipy', got 'mkl'")
