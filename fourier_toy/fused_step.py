"""A training step of the fused path (fused_path.py) as one numba call per thread, without the GIL.

Thread j of n runs the pieces k = j, j + n, ... of the batch (fused_piece.train), meets the other
threads at a barrier (threads.barrier), then takes slice j of the flat buffers: it adds the other
pieces' gradients into piece 0's, in piece order, and applies the optimizer's step to the slice
(adamw_kernel's update, through fused_calls.py) if every piece's loss is finite. Done from Python,
the gradient sum and the optimizer were two more hand-offs, each with a trip through the GIL, and
the interpreter runs slowly right after a piece has pushed its code and data out of the caches.

If the barrier's brief spin ends before every thread has arrived (a thread descheduled, or the
shares run one after another on one thread), the share returns False and leaves its slice to the
caller, who finishes it with `finish_slice` once all shares have returned. The kernels and their
order are those of the Python-driven step, so the results are bit-identical to it
(tests/test_fused_step.py).
"""

from __future__ import annotations

import numpy as np

from fourier_toy import fused_calls as kern
from fourier_toy.fused_piece import train
from fourier_toy.jit import jit
from fourier_toy.threads import barrier, post

__all__ = ["finish_slice", "sum_pieces", "train_share"]


@jit
def train_share(posted, j, n, bounds, tok, tg, scale, w, table, D, H, eps, buf, logits, dlogits, p, g0, extra,
                losses, sync, count, iters, cuts, opt, m, v, decay, trainable):
    """Thread j's share of a training step on n threads; returns whether it finished its slice.

    posted: threads.post_handle(), so that the caller's share hands the others to the pool's
    workers once it holds no GIL (threads.run_tasks' first_posts).
    bounds (P + 1,) int64: piece k is examples bounds[k]:bounds[k + 1] of tok (B, T) intp and tg
    (B,) intp; its loss sum goes to losses[k] (float64) and its gradient to g0 (k = 0) or
    extra[k - 1] (extra (P - 1, size)). buf, logits, dlogits: this thread's scratch (1-D, large
    enough for its largest piece; p number logits per example). sync, count, iters: the barrier
    (see threads.barrier). cuts (S + 1,) int64: slice j of the flat buffers is cuts[j]:cuts[j+1]
    for j < S. opt: the optimizer's 9 scalars (adamw_kernel.Step.scalars), or empty for no step; m, v,
    decay, trainable: its moments and masks.
    """
    post(*posted)
    for k in range(j, len(bounds) - 1, n):
        lo, hi = bounds[k], bounds[k + 1]
        b = hi - lo
        gk = g0 if k == 0 else extra[k - 1]
        losses[k] = train(tok[lo:hi], tg[lo:hi], scale, w, table, D, H, eps, buf, logits[:b * p].reshape((b, p)),
                          dlogits[:b * p].reshape((b, p)), gk)
    if not barrier(sync, j, n, count, iters):
        return False
    finish_slice(j, cuts, losses, g0, extra, opt, w, m, v, decay, trainable)
    return True


@jit
def finish_slice(i, cuts, losses, g0, extra, opt, w, m, v, decay, trainable):
    """Slice i of a step (see train_share): the gradient sum, then the optimizer's step unless
    opt is empty or a loss is not finite."""
    if i >= len(cuts) - 1:
        return
    lo, hi = cuts[i], cuts[i + 1]
    sum_pieces(g0, extra, lo, hi)
    if opt.size == 0:
        return
    for k in range(losses.size):
        if not np.isfinite(losses[k]):
            return
    kern.adamw(w[lo:hi], g0[lo:hi], m[lo:hi], v[lo:hi], opt[0], opt[1], opt[2], opt[3], opt[4], opt[5], opt[6],
               opt[7], opt[8], decay[lo:hi], trainable[lo:hi])


@jit
def sum_pieces(g0, extra, lo, hi):
    """g0[lo:hi] += extra[0, lo:hi] + extra[1, lo:hi] + ..., one piece at a time, in order."""
    for e in range(extra.shape[0]):
        kern.add_into(g0[lo:hi], extra[e, lo:hi])
