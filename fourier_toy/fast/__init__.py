"""The fast engine: everything numba, behind one object.

Exports `ENGINE` (fast/engine.py's Engine): attach it to a model as `GPT(cfg, p, engine=ENGINE)`
(training.make_gpt does so for `model.backend = "numba"`) and give AdamW its update rule as
`AdamW(..., update=ENGINE.adamw)`. `ENGINE.warmup()` compiles every kernel ahead of time.
`package_stamp()` is the digest of the package's sources that keys the compiled-code cache.
`limit_threads(n, blas=...)` (threads.py) sets this process's BLAS, OpenMP and numba thread counts.
The rest of this package is private to it:
  jit.py          the compile policy, the float32 exp/tanh, the cache stamp over the whole package
  inputs.py       the checks every public kernel entry makes of its arrays
  op_kernels.py   nn/ops.py's op pairs in numba, one by one (hooks, all positions)
  row_kernels.py  fused row kernels of a training step (LayerNorm, GELU, attention, loss)
  kernel_calls.py those kernels bound as external symbols, so every caller runs the same code
  blas.py         single-threaded BLAS matmuls callable from numba
  piece.py        one piece of a batch: forward and backward in one GIL-free call
  step.py         a thread's share of a training step: pieces, barrier, gradient sum, AdamW
  threads.py      the thread pool, its barrier, and the thread limits (limit_threads)
  adamw.py        AdamW's update kernel, sliced over the threads
  engine.py       the fused path of a model, and the Engine
"""

from fourier_toy.fast.engine import ENGINE, Engine
from fourier_toy.fast.jit import package_stamp
from fourier_toy.fast.threads import limit_threads

__all__ = ["ENGINE", "Engine", "package_stamp", "limit_threads"]
