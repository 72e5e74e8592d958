"""The numba policy: the compile options every kernel uses, and the float32 `exp` and `tanh`
they inline.

Transcendentals: float32 uses the vectorizable approximations below (a few ulp; the C library's
scalar calls would cost more than the whole op); float64, used for gradient checks, calls the C
library. Every kernel (`kernels.py`, op by op; `fused.py`, the training path, and `fused_piece.py`,
which strings its kernels together; `adamw_kernel.py`; the thread pool's spin loop in `threads.py`)
compiles with these options only, and both attention kernels share `masked_softmax_row`. The one
exception is `exact`, for the loops of `blas.py` that must round exactly as numpy's C loops do.
No kernel uses numba's `parallel=True`: its code rounded differently when freshly compiled than
when loaded from the cache, so the first run after an install or an edit got other bits than
every later one. The hot path takes its threads from `threads.py` instead.

Compiled code is cached (`cache=True`) and checked against a digest of all of this package's
sources (`package_stamp`), not numba's digest of the function's own file: a numba function holds
copies of the numba functions it calls from other modules, so after an edit to one of those (a
`git pull` in an editable install, or an upgrade that leaves the caller's file as it was) it
would otherwise keep running the old code.
"""

from __future__ import annotations

import hashlib
import math
import os

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

# The package's root folder (fourier_toy/), two levels above this file: the stamp covers every
# subpackage, since a kernel here inlines constants and functions from nn/ and elsewhere.
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_stamp = None


def _python_files(directory: str) -> list[str]:
    """The .py files below `directory`, recursively, as sorted paths relative to it."""
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        found += [os.path.relpath(os.path.join(root, n), directory) for n in files if n.endswith(".py")]
    return sorted(found)


def sources_digest(directory: str) -> bytes:
    """sha256 over the relative paths and contents of every .py file below `directory`."""
    h = hashlib.sha256()
    for rel in _python_files(directory):
        h.update(rel.replace(os.sep, "/").encode() + b"\0")
        with open(os.path.join(directory, rel), "rb") as f:
            h.update(f.read())
    return h.digest()


def in_package(py_file: str) -> bool:
    """Whether a source file lies inside this package (in any of its subpackages)."""
    path = os.path.abspath(py_file)
    return os.path.commonpath([path, PACKAGE_DIR]) == PACKAGE_DIR


def package_stamp() -> bytes:
    """The digest of this package's sources, read once per process: every cached function of
    the package is valid for exactly these sources."""
    global _stamp
    if _stamp is None:
        _stamp = sources_digest(PACKAGE_DIR)
    return _stamp


def _use_package_stamps() -> None:
    """Puts, ahead of numba's own cache locators for source files (a user-given cache directory,
    the __pycache__ beside the source, a user-wide directory), variants that take only this
    package's functions and stamp them with package_stamp()."""
    from numba.core import caching

    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)  # recent numba, older
    if impl is None:  # another layout: numba's per-file stamps stay (tests/test_jit_cache.py fails)
        return
    bases = [c for c in impl._locator_classes
             if c.__name__.lstrip("_") in ("UserProvidedCacheLocator", "InTreeCacheLocator", "UserWideCacheLocator")]
    ours = []
    for base in bases:
        class PackageLocator(base):
            def get_source_stamp(self):
                return package_stamp()

            @classmethod
            def from_function(cls, py_func, py_file):
                if not in_package(py_file):
                    return None
                return super().from_function(py_func, py_file)

        PackageLocator.__name__ = PackageLocator.__qualname__ = "FourierToy" + base.__name__.lstrip("_")
        ours.append(PackageLocator)
    impl._locator_classes[:0] = [c for c in ours if c.__name__ not in {k.__name__ for k in impl._locator_classes}]


_use_package_stamps()

__all__ = ["FASTMATH", "FLOATS", "JIT_OPTIONS", "exact", "exp", "jit", "masked_softmax_row",
           "in_package", "package_stamp", "sources_digest", "tanh"]

# fastmath without 'nnan' and 'ninf': causal masks are -inf and NaN must propagate, so the
# compiler may not assume either away.
FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})
# error_model="numpy": float division by zero gives inf/NaN as in numpy rather than raising, and
# leaves loops free of the checks that block vectorization. cache=True: a second run reuses the
# compiled code from __pycache__.
JIT_OPTIONS = {"cache": True, "fastmath": set(FASTMATH), "error_model": "numpy", "nogil": True}
jit = njit(**JIT_OPTIONS)
# No fastmath at all: IEEE arithmetic in source order, for code that must reproduce numpy's own
# loops bit for bit ('nsz' alone would fold the 0.0 + x by which numpy turns -0.0 into +0.0).
exact = njit(cache=True, nogil=True, error_model="numpy")
# Helpers inlined into kernels (the float32 exp/tanh) get the same floating-point flags.
OVERLOAD_OPTIONS = {"fastmath": set(FASTMATH), "error_model": "numpy"}

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))  # the dtypes kernels accept


# ---- float32 transcendentals -------------------------------------------------------------------
# Written as branch-free arithmetic so loops over them vectorize. Comparisons are arranged so a
# NaN input fails every test and flows through the arithmetic to a NaN output.

@intrinsic
def _pow2_f32(typingctx, nf):
    """2.0**n as float32 for an integer-valued float32 n in [-126, 127], by building the bits."""
    if nf != types.float32:
        return None
    sig = types.float32(types.float32)

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        n = builder.fptosi(args[0], i32)
        bits = builder.shl(builder.add(n, ir.Constant(i32, 127)), ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())

    return sig, codegen


_F32 = np.float32
_LOG2E = _F32(1.4426950408889634)
_LN2_HI = _F32(0.693359375)  # Cody-Waite split of ln 2: n * _LN2_HI is exact
_LN2_LO = _F32(-2.12194440e-4)
_EXP_C = tuple(_F32(1.0 / math.factorial(i)) for i in range(10))
_F32_HALF, _F32_ZERO, _F32_ONE, _F32_INF = _F32(0.5), _F32(0.0), _F32(1.0), _F32(np.inf)
_F32_EXP_LO, _F32_EXP_HI = _F32(-104.0), _F32(89.0)
_F32_N_LO, _F32_N_HI = _F32(-150.0), _F32(127.0)


def _exp32_impl(x):
    # exp(x) = 2**n * exp(f) with n = round(x / ln 2). n stays <= 127 so that no product of the
    # powers of two overflows, whichever order 'reassoc' multiplies them in; f then reaches
    # 0.7 near the top of the range, which the degree-9 polynomial still covers.
    r = x * _LOG2E
    if r < _F32_N_LO:
        r = _F32_N_LO
    if r > _F32_N_HI:
        r = _F32_N_HI
    nf = np.floor(r + _F32_HALF)
    if nf != nf:  # NaN: keep the integer conversion defined; f stays NaN
        nf = _F32_ZERO
    f = (x - nf * _LN2_HI) - nf * _LN2_LO
    p = _EXP_C[9]
    p = p * f + _EXP_C[8]
    p = p * f + _EXP_C[7]
    p = p * f + _EXP_C[6]
    p = p * f + _EXP_C[5]
    p = p * f + _EXP_C[4]
    p = p * f + _EXP_C[3]
    p = p * f + _EXP_C[2]
    p = p * f + _EXP_C[1]
    p = p * f + _EXP_C[0]
    # Two factors keep each 2**n normal, so results down to the denormals come out right.
    h = np.floor(nf * _F32_HALF)
    res = p * _pow2_f32(h) * _pow2_f32(nf - h)
    if x < _F32_EXP_LO:
        res = _F32_ZERO
    if x > _F32_EXP_HI:
        res = _F32_INF
    return res


# Rational minimax approximation of tanh on [-7.9988, 7.9988] (the one Eigen uses for float32;
# max relative error about 3.5e-7). Beyond 9.1 float32 tanh rounds to +-1 exactly.
_TANH_A = tuple(_F32(c) for c in (
    4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
    -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16))
_TANH_B = tuple(_F32(c) for c in (
    4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06))
_TANH_CLAMP, _TANH_SAT, _TANH_TINY = _F32(7.99881172180175781), _F32(9.1), _F32(0.0004)


def _tanh32_impl(x):
    xc = x
    if xc > _TANH_CLAMP:
        xc = _TANH_CLAMP
    if xc < -_TANH_CLAMP:
        xc = -_TANH_CLAMP
    x2 = xc * xc
    p = _TANH_A[6]
    p = p * x2 + _TANH_A[5]
    p = p * x2 + _TANH_A[4]
    p = p * x2 + _TANH_A[3]
    p = p * x2 + _TANH_A[2]
    p = p * x2 + _TANH_A[1]
    p = p * x2 + _TANH_A[0]
    q = _TANH_B[3]
    q = q * x2 + _TANH_B[2]
    q = q * x2 + _TANH_B[1]
    q = q * x2 + _TANH_B[0]
    res = xc * p / q
    if abs(x) < _TANH_TINY:
        res = x
    if x > _TANH_SAT:
        res = _F32_ONE
    if x < -_TANH_SAT:
        res = -_F32_ONE
    return res


def exp(x):
    """exp for kernels: the float32 approximation above, or the C library for float64."""
    return math.exp(x)


def tanh(x):
    """tanh for kernels: the float32 approximation above, or the C library for float64."""
    return math.tanh(x)


@overload(exp, jit_options=OVERLOAD_OPTIONS)
def _exp_overload(x):
    if x == types.float32:
        return _exp32_impl
    if isinstance(x, types.Float):
        return lambda x: math.exp(x)
    return None


@overload(tanh, jit_options=OVERLOAD_OPTIONS)
def _tanh_overload(x):
    if x == types.float32:
        return _tanh32_impl
    if isinstance(x, types.Float):
        return lambda x: math.tanh(x)
    return None



@jit
def masked_softmax_row(row, last, m):
    """row[:last+1] (scores whose maximum is m) -> their softmax, in place; row[last+1:] (the
    masked keys) -> exactly 0, or NaN in a NaN row, as in the oracle. Shared by both attention
    kernels (kernels.py, fused.py)."""
    zero = row.dtype.type(0.0)
    tot = zero
    for j in range(last + 1):
        e = exp(row[j] - m)
        row[j] = e
        tot += e
    inv = row.dtype.type(1.0) / tot
    for j in range(last + 1):
        row[j] *= inv
    for j in range(last + 1, row.shape[0]):
        row[j] = zero * inv
