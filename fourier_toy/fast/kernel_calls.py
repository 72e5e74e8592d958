"""The kernels of fused.py (and the AdamW update), callable from numba code as the very machine code
a Python caller runs.

A numba function that calls another links a copy of the callee's code into its own module and
optimizes the two together. For the fused kernels, compiled with reassociating fastmath, that
second optimization can vectorize a sum in another order: the copy then differs from the kernel
in the last bits of float32 results, and which of the two runs depends on what the process has
already loaded (numba's JIT merges same-named functions). fused_piece.py therefore calls each
kernel through an external symbol bound, at import, to the kernel's own compiled entry point for
the argument types listed in KERNEL_ARGS (float32 and float64). A call with other types fails to
compile with a typing error rather than silently running different code.
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
from numba import from_dtype, types
from numba.core import cgutils
from numba.core.typing import signature
from numba.extending import intrinsic

from fourier_toy.fast import adamw as adamw_kernel
from fourier_toy.fast import row_kernels as fused
from fourier_toy.fast.jit import FLOATS

# Argument kinds: f1/f2/f4 C-contiguous float arrays of 1/2/4 dimensions, i1/i2 intp arrays, b1 a
# bool array, n an int64, s a float scalar of the arrays' dtype. "adamw" is adamw_kernel._adamw.
KERNEL_ARGS = {
    "embed_ln_fwd": "i2 f2 f2 f1 f1 s f2 f2 f1 f1",
    "res_ln_fwd": "f2 n f2 f1 f1 f1 s f2 f2 f1 f1",
    "ln_res_bwd": "f2 f2 n f2 f1 f1 f1 f2 n f2 f1 f1 f1",
    "gelu_bias_fwd": "f2 f1 f2",
    "gelu_bias_bwd": "f2 f2 f2 f1",
    "attn_fwd": "f2 n f2 n n f1 n n f2 f4",
    "attn_bwd": "f2 f2 n f2 n n f4 n n f2 n f2 n n f1",
    "ce_fwd_bwd": "f2 i1 s f2",
    "embed_bwd": "i2 f2 f2 f2",
    "add_into": "f1 f1",
    "adamw": "f1 f1 f1 f1 s s s s s s s s s b1 b1",
}


def _kernel(name: str):
    return adamw_kernel._adamw if name == "adamw" else getattr(fused, name)


def argument_types(name: str, dtype) -> tuple:
    real = from_dtype(np.dtype(dtype))
    kinds = {"f1": types.Array(real, 1, "C"), "f2": types.Array(real, 2, "C"), "f4": types.Array(real, 4, "C"),
             "i1": types.Array(types.intp, 1, "C"), "i2": types.Array(types.intp, 2, "C"), "n": types.int64,
             "b1": types.Array(types.boolean, 1, "C"),
             "s": real}
    return tuple(kinds[k] for k in KERNEL_ARGS[name].split())


def _symbol(name: str, dtype) -> str:
    return f"fourier_toy_fused_{name}_{np.dtype(dtype).name}"


def _bind() -> dict:
    """Compile (or load from the cache) every kernel for every listed signature; bind its symbol."""
    returns = {}
    for dtype in FLOATS:
        for name in KERNEL_ARGS:
            kernel, argtys = _kernel(name), argument_types(name, dtype)
            kernel.compile(argtys)
            cres = kernel.overloads[argtys]
            llvm.add_symbol(_symbol(name, dtype), cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name))
            returns[name, dtype] = cres.signature.return_type
    return returns


_RETURNS = _bind()


def _bound(name: str):
    """An intrinsic that calls fused.<name> through its bound symbol."""

    def typer(typingctx, *args):
        args = tuple(types.unliteral(a) for a in args)
        real = next((a.dtype for a in args if isinstance(a, types.Array) and isinstance(a.dtype, types.Float)), None)
        dtype = np.dtype(str(real)) if real is not None else None
        expected = argument_types(name, dtype) if dtype is not None else None
        if args != expected:
            return None  # numba reports the call as a typing error, with the types it was given
        restype, symbol = _RETURNS[name, dtype], _symbol(name, dtype)

        def codegen(context, builder, sig, packed):
            given = sig.args[0].types
            vals = [context.cast(builder, v, t, e) for v, t, e in
                    zip(cgutils.unpack_tuple(builder, packed[0], len(given)), given, expected)]
            fnty = context.call_conv.get_function_type(restype, expected)
            fn = cgutils.get_or_insert_function(builder.module, fnty, symbol)
            status, res = context.call_conv.call_function(builder, fn, restype, expected, vals)
            with cgutils.if_unlikely(builder, status.is_error):
                context.call_conv.return_status_propagate(builder, status)
            return res

        return signature(restype, types.StarArgTuple.from_types(args)), codegen

    typer.__name__ = name
    return intrinsic(typer)


(embed_ln_fwd, res_ln_fwd, ln_res_bwd, gelu_bias_fwd, gelu_bias_bwd, attn_fwd, attn_bwd, ce_fwd_bwd, embed_bwd,
 add_into, adamw) = (_bound(name) for name in KERNEL_ARGS)
