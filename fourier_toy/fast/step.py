"""A training step of the fused path (fused_path.py) as one numba call per thread, without the GIL.

Thread j of n runs the pieces k = j, j + n, ... of the batch (fused_piece.train), meets the other
threads at a barrier (threads.barrier), then takes slice j of the flat buffers: it adds the other
pieces' gradients into piece 0's, in piece order, and applies the optimizer's step to the slice
(adamw_kernel's update, through fused_calls.py) if every piece's loss is finite. Done from Python,
the gradient sum and the optimizer were two more hand-offs, each with a trip through the GIL, and
the interpreter runs slowly right after a piece has pushed its code and data out of the caches.

`train_steps_share` runs several steps in one call per thread, meeting the other threads at two
barriers per step (before the gradient sum, and before the next step's pieces read the updated
parameters): the Python between two steps, about 0.3 ms of a 4 ms step of bench-v1 S (checks, the
optimizer's constants, the threads' arguments, the hand-off), is then paid once per call. Its
barriers cannot give up (threads.wait), so it runs alone, one thread doing every piece and slice,
when its tasks run inline.

If the barrier's brief spin ends before every thread has arrived (a thread descheduled, or the
shares run one after another on one thread), the share returns False and leaves its slice to the
caller, who finishes it with `finish_slice` once all shares have returned. The kernels and their
order are those of the Python-driven step, so the results are bit-identical to it
(tests/test_fused_step.py).
"""

from __future__ import annotations

import numpy as np

from fourier_toy.fast import kernel_calls as kern
from fourier_toy.fast.piece import train
from fourier_toy.fast.jit import jit
from fourier_toy.fast.threads import barrier, post, wait

__all__ = ["finish_slice", "run_pieces", "sum_pieces", "train_share", "train_steps_share"]


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
    run_pieces(j, n, bounds, tok, tg, scale, w, table, D, H, eps, buf, logits, dlogits, p, g0, extra, losses)
    if not barrier(sync, j, n, count, iters):
        return False
    finish_slice(j, cuts, losses, g0, extra, opt, w, m, v, decay, trainable)
    return True


@jit
def train_steps_share(posted, j, n, alone, bounds, toks, tgs, scale, w, table, D, H, eps, buf, logits, dlogits, p, g0,
                      extra, losses, sync, count, iters, cuts, opts, m, v, decay, trainable):
    """Thread j's share of K = len(toks) training steps on n threads, one after another; returns the
    barrier count it reached (every thread reaches the same).

    As train_share for each step s, with toks (K, B, T), tgs (K, B), losses (K, P) and opts (K, 9)
    (the optimizer's scalars of each step): the pieces k = j, j + n, ..., a barrier, slice j of
    the gradient sum and the update, a barrier. The steps stop after the first one with a
    non-finite loss (not applied): every thread reads every piece's loss after the first barrier,
    so all stop there. Barriers are counted from `count`; iters: their spin before each yield.
    alone: the tasks run inline (threads.inline()), one after another: thread 0 does every piece
    and every slice without waiting, and the others nothing.
    """
    post(*posted)
    if alone:
        if j != 0:
            return count
        n = 1
    for s in range(toks.shape[0]):
        run_pieces(j, n, bounds, toks[s], tgs[s], scale, w, table, D, H, eps, buf, logits, dlogits, p, g0, extra,
                   losses[s])
        count += 1
        wait(sync, j, n, count, iters)
        for i in range(j, len(cuts) - 1, n):
            finish_slice(i, cuts, losses[s], g0, extra, opts[s], w, m, v, decay, trainable)
        for k in range(losses.shape[1]):
            if not np.isfinite(losses[s, k]):
                return count
        count += 1
        wait(sync, j, n, count, iters)
    return count


@jit
def run_pieces(j, n, bounds, tok, tg, scale, w, table, D, H, eps, buf, logits, dlogits, p, g0, extra, losses):
    """Thread j's pieces k = j, j + n, ... of a step, each one fused_piece.train (arguments as in
    train_share)."""
    for k in range(j, len(bounds) - 1, n):
        lo, hi = bounds[k], bounds[k + 1]
        b = hi - lo
        gk = g0 if k == 0 else extra[k - 1]
        losses[k] = train(tok[lo:hi], tg[lo:hi], scale, w, table, D, H, eps, buf, logits[:b * p].reshape((b, p)),
                          dlogits[:b * p].reshape((b, p)), gk)


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
