"""numpy's own BLAS, called from numba code that runs without the GIL.

`matmul(a, b, out)` computes out = a @ b for 2-D float32 or float64 arrays the way `np.matmul`
does: the same BLAS routine of the same library (numpy's bundled OpenBLAS) with the same
arguments, chosen by the same rules from the shapes and strides (gemm for matrix @ matrix, gemv
when a side is a vector, dot for a 1 x 1 result, numpy's plain loop for an outer product or a
zero-sized dimension). Its results are therefore bit-identical to `np.matmul`'s, which the tests
check over drawn shapes and layouts. Two cases are not mirrored, and none arises in the fused
path: an operand BLAS cannot take as it is (numpy copies it first; here it goes to the plain loop),
and a @ a.T of one buffer (numpy calls syrk).

The routines are found once, at import, in numpy's OpenBLAS (its ILP64 `cblas_*64_` entry points).
Where numpy was built against another BLAS (MKL, Accelerate) they are not exported, and the same
symbols are bound to adapters over scipy's BLAS (`scipy.linalg.cython_blas`): results then agree
with numpy to rounding, not bit for bit. The environment variable FOURIER_TOY_BLAS=scipy asks for
the adapters anyway (FOURIER_TOY_BLAS=numpy, the default, for numpy's BLAS where it can).
`BACKEND` says which is in use.
"""

from __future__ import annotations

import ctypes
import os

import llvmlite.binding as llvm
import numpy as np
from numba import cfunc, types
from numba.core import cgutils
from numba.extending import get_cython_function_address, intrinsic

from fourier_toy.errors import ConfigError
from fourier_toy.fast.jit import exact, jit

__all__ = ["BACKEND", "matmul"]

_ROW_MAJOR, _COL_MAJOR, _NO_TRANS, _TRANS = 101, 102, 111, 112  # the CBLAS enum values
_I32, _I64, _VP = types.int32, types.int64, types.voidptr
_ROUTINES = ("sgemm", "dgemm", "sgemv", "dgemv", "sdot", "ddot")


def _signature(routine: str):
    """The C signature of cblas_<routine> with 64-bit integers."""
    real = types.float32 if routine[0] == "s" else types.float64
    if routine.endswith("gemm"):  # order, transa, transb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc
        return types.void(_I32, _I32, _I32, _I64, _I64, _I64, real, _VP, _I64, _VP, _I64, real, _VP, _I64)
    if routine.endswith("dot"):  # N, x, incx, y, incy
        return real(_I64, _VP, _I64, _VP, _I64)
    # order, trans, M, N, alpha, A, lda, x, incx, beta, y, incy
    return types.void(_I32, _I32, _I64, _I64, real, _VP, _I64, _VP, _I64, real, _VP, _I64)


def _numpy_cblas() -> dict | None:
    """Addresses of the ILP64 cblas routines of the OpenBLAS bundled with numpy, if it has them."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    home = os.path.dirname(os.path.dirname(os.path.abspath(np.__file__)))
    for info in threadpool_info():
        path = info.get("filepath") or ""
        rel = os.path.relpath(os.path.abspath(path), home) if path else ".."
        if info.get("internal_api") != "openblas" or not rel.split(os.sep)[0].startswith("numpy"):
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_cblas_", "cblas_"):
            found = {r: getattr(lib, f"{prefix}{r}64_", None) for r in _ROUTINES}
            if all(found.values()):
                return {r: ctypes.cast(f, ctypes.c_void_p).value for r, f in found.items()}
    return None


# ---- adapters over scipy's Fortran BLAS (used only where numpy's BLAS exports no cblas) --------

def _fortran(routine: str):
    """scipy.linalg.cython_blas.<routine>, every argument a pointer, as a numba external."""
    name = f"fourier_toy_scipy_{routine}"
    llvm.add_symbol(name, get_cython_function_address("scipy.linalg.cython_blas", routine))
    if routine.endswith("dot"):
        return types.ExternalFunction(name, (types.float32 if routine[0] == "s" else types.float64)(*[_VP] * 5))
    return types.ExternalFunction(name, types.void(*([_VP] * (13 if routine.endswith("gemm") else 11))))


@intrinsic
def _cell(typingctx, value):
    """A pointer to a fresh stack slot holding value (Fortran passes every argument by address)."""
    sig = _VP(value)

    def codegen(context, builder, signature, args):
        slot = cgutils.alloca_once_value(builder, args[0])
        return builder.bitcast(slot, cgutils.voidptr_t)

    return sig, codegen


def _gemm_adapter(routine: str):
    fortran = _fortran(routine)
    real = np.float32 if routine[0] == "s" else np.float64

    def adapter(order, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        # Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
        ta = np.uint8(78 if transa == _NO_TRANS else 84)  # 'N' or 'T'
        tb = np.uint8(78 if transb == _NO_TRANS else 84)
        fortran(_cell(tb), _cell(ta), _cell(np.int32(n)), _cell(np.int32(m)), _cell(np.int32(k)),
                _cell(real(alpha)), b, _cell(np.int32(ldb)), a, _cell(np.int32(lda)), _cell(real(beta)), c,
                _cell(np.int32(ldc)))

    return cfunc(_signature(routine), cache=True)(adapter)


def _gemv_adapter(routine: str):
    fortran = _fortran(routine)
    real = np.float32 if routine[0] == "s" else np.float64

    def adapter(order, trans, m, n, alpha, a, lda, x, incx, beta, y, incy):
        # A row-major M x N matrix is a column-major N x M one: swap the sizes and the transpose.
        if order == _ROW_MAJOR:
            m, n = n, m
            trans = _TRANS if trans == _NO_TRANS else _NO_TRANS
        t = np.uint8(78 if trans == _NO_TRANS else 84)
        fortran(_cell(t), _cell(np.int32(m)), _cell(np.int32(n)), _cell(real(alpha)), a, _cell(np.int32(lda)), x,
                _cell(np.int32(incx)), _cell(real(beta)), y, _cell(np.int32(incy)))

    return cfunc(_signature(routine), cache=True)(adapter)


def _dot_adapter(routine: str):
    fortran = _fortran(routine)

    def adapter(n, x, incx, y, incy):
        return fortran(_cell(np.int32(n)), x, _cell(np.int32(incx)), y, _cell(np.int32(incy)))

    return cfunc(_signature(routine), cache=True)(adapter)


_ADAPTERS = {"gemm": _gemm_adapter, "gemv": _gemv_adapter, "dot": _dot_adapter}


def _bind() -> tuple[str, dict]:
    choice = os.environ.get("FOURIER_TOY_BLAS", "numpy")
    if choice not in ("numpy", "scipy"):
        raise ConfigError(f"FOURIER_TOY_BLAS: must be 'numpy' or 'scipy', got {choice!r}")
    addresses = _numpy_cblas() if choice == "numpy" else None
    backend = "numpy-openblas"
    if addresses is None:
        backend = "scipy-blas"
        adapters = {r: _ADAPTERS[r[1:]](r) for r in _ROUTINES}
        addresses = {r: a.address for r, a in adapters.items()}
    externals = {}
    for r in _ROUTINES:
        name = f"fourier_toy_cblas_{r}"
        llvm.add_symbol(name, addresses[r])
        externals[r] = types.ExternalFunction(name, _signature(r))
    return backend, externals


BACKEND, _EXTERNALS = _bind()
_sgemm, _dgemm, _sgemv, _dgemv, _sdot, _ddot = (_EXTERNALS[r] for r in _ROUTINES)


# ---- numpy's matmul rules ----------------------------------------------------------------------

@intrinsic
def _data(typingctx, arr):
    """The address of arr's first element."""
    if not isinstance(arr, types.Array):
        return None
    sig = _VP(arr)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.bitcast(ary.data, cgutils.voidptr_t)

    return sig, codegen


@jit
def _blasable(stride1, stride2, d2, itemsize):
    """numpy's is_blasable2d: the fast axis contiguous, the slow one at least d2 items apart."""
    return stride2 == itemsize and stride1 % itemsize == 0 and stride1 // itemsize >= d2


@exact
def _matmul_loop(a, b, out):
    dm, dn = a.shape
    dp = b.shape[1]
    for i in range(dm):
        for j in range(dp):
            out[i, j] = 0
            for k in range(dn):
                out[i, j] += a[i, k] * b[k, j]


@jit
def _gemm(a, b, out, m, n, p, s1m, s1n, s2n, s2p, som):
    sz = a.itemsize
    if _blasable(s1m, s1n, n, sz):
        ta, lda = _NO_TRANS, s1m // sz
    else:
        ta, lda = _TRANS, s1n // sz
    if _blasable(s2n, s2p, p, sz):
        tb, ldb = _NO_TRANS, s2n // sz
    else:
        tb, ldb = _TRANS, s2p // sz
    if sz == 4:  # float32
        _sgemm(_ROW_MAJOR, ta, tb, m, p, n, np.float32(1), _data(a), lda, _data(b), ldb, np.float32(0), _data(out),
               som // sz)
    else:
        _dgemm(_ROW_MAJOR, ta, tb, m, p, n, 1.0, _data(a), lda, _data(b), ldb, 0.0, _data(out), som // sz)


@jit
def _gemv(mat, sm, sn, vec, svn, out, so, m, n):
    """out (m,) = mat (m, n) @ vec (n,), as numpy's gemv helper calls BLAS."""
    sz = mat.itemsize
    if _blasable(sm, sn, n, sz):
        order, lda = _COL_MAJOR, sm // sz
    else:
        order, lda = _ROW_MAJOR, sn // sz
    if sz == 4:  # float32
        _sgemv(order, _TRANS, n, m, np.float32(1), _data(mat), lda, _data(vec), svn // sz, np.float32(0), _data(out),
               so // sz)
    else:
        _dgemv(order, _TRANS, n, m, 1.0, _data(mat), lda, _data(vec), svn // sz, 0.0, _data(out), so // sz)


@exact
def _dot(a, b, out, s1n, s2n):
    """out (1, 1) = a (1, n) @ b (n, 1), as numpy's dot: BLAS dot summed into a float64."""
    sz = a.itemsize
    if s1n > 0 and s2n > 0 and s1n % sz == 0 and s2n % sz == 0:
        n = a.shape[1]
        if sz == 4:  # float32
            out[0, 0] = np.float32(0.0 + np.float64(_sdot(n, _data(a), s1n // sz, _data(b), s2n // sz)))
        else:
            out[0, 0] = 0.0 + _ddot(n, _data(a), s1n // sz, _data(b), s2n // sz)
    else:  # numpy's dot without BLAS: a sum in the arrays' dtype, in order
        _matmul_loop(a, b, out)


@jit
def matmul(a, b, out):
    """out (m, p) = a (m, n) @ b (n, p), any strides, same dtype: np.matmul's routine and bits.

    Follows numpy's matmul loop for 2-D operands: BLAS needs each matrix to have a contiguous
    axis; an output with its fast axis first is computed as b.T @ a.T; a non-blasable operand is
    not copied here but given to the plain loop (numpy copies it; none arises in the fused path).
    """
    # Viewed as any-layout arrays, every call site shares one compiled _matmul per dtype.
    _matmul(a[::1, ::1], b[::1, ::1], out[::1, ::1])


@jit
def _matmul(a, b, out):
    m, n = a.shape
    p = b.shape[1]
    sz = a.itemsize
    s1m, s1n = a.strides
    s2n, s2p = b.strides
    som, sop = out.strides
    b1 = _blasable(s1m, s1n, n, sz) or _blasable(s1n, s1m, m, sz)
    b2 = _blasable(s2n, s2p, p, sz) or _blasable(s2p, s2n, n, sz)
    if m == 0 or n == 0 or p == 0:
        _matmul_loop(a, b, out)
    elif m == 1 and p == 1:
        _dot(a, b, out, s1n, s2n)
    elif m == 1 or n == 1 or p == 1:
        if m == 1 and p != 1 and n != 1 and b2 and _blasable(s1n, sz, 1, sz):
            _gemv(b, s2p, s2n, a, s1n, out, sop, p, n)  # vector @ matrix: (b.T @ a.T).T
        elif p == 1 and m != 1 and n != 1 and b1 and _blasable(s2n, sz, 1, sz):
            _gemv(a, s1m, s1n, b, s2n, out, som, m, n)
        else:
            _matmul_loop(a, b, out)
    elif not (b1 and b2 and (_blasable(som, sop, p, sz) or _blasable(sop, som, m, sz))):
        _matmul_loop(a, b, out)
    elif abs(som) < abs(sop):
        _gemm(b, a, out, p, n, m, s2p, s2n, s1n, s1m, sop)
    else:
        _gemm(a, b, out, m, n, p, s1m, s1n, s2n, s2p, som)
