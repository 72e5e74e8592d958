"""A training step of the fused path (engine.py's FusedPath) as one numba call per thread, without the GIL.

Thread j of n runs the pieces k = j, j + n, ... of the batch (piece.train), meets the other
threads at a barrier (threads.barrier), then takes slice j of the flat buffers: it adds the other
pieces' gradients into piece 0's, in piece order, and applies the optimizer's step to the slice
(adamw.py's update, through kernel_calls.py) if every piece's loss is finite. Done from Python,
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
(tests/fast/test_step.py).

The arguments come in groups, one namedtuple each (below): the batch (`Batch`), the model
(`Model`), a thread's scratch (`Buffers`), the pieces' gradients and losses (`Gradients`), the
barrier (`Barrier`) and the optimizer's step (`Update`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fourier_toy.fast import kernel_calls as kern
from fourier_toy.fast.piece import train
from fourier_toy.fast.jit import jit
from fourier_toy.fast.threads import barrier, post, wait

__all__ = ["Barrier", "Batch", "Buffers", "Gradients", "Model", "Update", "finish_slice", "run_pieces", "sum_pieces",
           "train_share", "train_steps_share"]


# ---- the argument groups --------------------------------------------------------------------------
# numba takes each as one argument. Sizes: P pieces, B examples of T tokens, flat buffers of `size`
# entries (the model's layout) cut into S slices, K steps (train_steps_share).

class Batch(NamedTuple):
    """The examples of a step, cut into pieces.

    bounds (P + 1,) int64: piece k is examples bounds[k]:bounds[k + 1].
    tokens (B, T) intp and targets (B,) intp; for train_steps_share (K, B, T) and (K, B), one batch
    per step.
    scale: 1 / B in the parameters' dtype (the loss is the batch's mean).
    """
    bounds: np.ndarray
    tokens: np.ndarray
    targets: np.ndarray
    scale: np.floating


class Model(NamedTuple):
    """The model as its pieces read it.

    weights (size,): the flat parameters, which the optimizer's step updates in place.
    table (L + 1, 12) int64: where each tensor starts in weights (piece.weight_table).
    d_model, n_heads: ints. eps: LayerNorm's epsilon in the parameters' dtype.
    n_numbers: p, the number logits per example.
    """
    weights: np.ndarray
    table: np.ndarray
    d_model: int
    n_heads: int
    eps: np.floating
    n_numbers: int


class Buffers(NamedTuple):
    """One thread's scratch, reused by each of its pieces: 1-D buffers of the parameters' dtype,
    large enough for its largest piece (b examples).

    scratch (at least piece.scratch_entries(b, T, D, H, L),): the activations.
    logits, dlogits (at least b * p,): a piece's logits and their gradient, seen as (b, p).
    """
    scratch: np.ndarray
    logits: np.ndarray
    dlogits: np.ndarray


class Gradients(NamedTuple):
    """Where the pieces' gradients and losses go, and how their sum is sliced.

    grads (size,): piece 0's gradient, then the batch's (the model's own buffer).
    extra (P - 1, size): the gradients of pieces 1..P-1.
    losses (P,) float64: each piece's loss sum; (K, P) for train_steps_share.
    cuts (S + 1,) int64: slice i of the sum and of the optimizer's step is entries cuts[i]:cuts[i + 1].
    """
    grads: np.ndarray
    extra: np.ndarray
    losses: np.ndarray
    cuts: np.ndarray


class Barrier(NamedTuple):
    """Where the threads meet (threads.barrier, threads.wait).

    reached (n,) int64: the barrier count each thread has reached.
    count: this step's barrier count; for train_steps_share the count before its first barrier.
    iters: how long a thread spins there before it gives up (barrier) or yields the core (wait).
    """
    reached: np.ndarray
    count: int
    iters: int


class Update(NamedTuple):
    """The optimizer's step (adamw.Step), applied slice by slice.

    scalars (9,): the update kernel's scalars in the parameters' dtype, or (0,) for no step; for
    train_steps_share (K, 9), one row per step.
    m, v (size,): the moments. decay, trainable (size,) bool: the entries that take weight decay,
    and those the step changes.
    """
    scalars: np.ndarray
    m: np.ndarray
    v: np.ndarray
    decay: np.ndarray
    trainable: np.ndarray


# ---- the shares -------------------------------------------------------------------------------------

@jit
def train_share(posted, j, n, batch, model, buffers, grads, sync, update):
    """Thread j's share of a training step on n threads: its pieces, the barrier, then slice j (if
    j < S) of the gradient sum and of the optimizer's step; returns whether it got past the
    barrier and so finished its slice.

    posted: threads.post_handle(), so that the caller's share hands the others to the pool's
    workers once it holds no GIL (threads.run_tasks' first_posts). batch: a Batch; model: a Model;
    buffers: this thread's Buffers; grads: a Gradients; sync: a Barrier; update: an Update, whose
    empty scalars mean no step.
    """
    post(*posted)
    run_pieces(j, n, batch, model, buffers, grads)
    if not barrier(sync.reached, j, n, sync.count, sync.iters):
        return False
    finish_slice(j, model.weights, grads, update)
    return True


@jit
def train_steps_share(posted, j, n, alone, batch, model, buffers, grads, sync, update):
    """Thread j's share of K = len(batch.tokens) training steps on n threads, one after another;
    returns the barrier count it reached (every thread reaches the same).

    As train_share for each step s, with batch.tokens (K, B, T), batch.targets (K, B), grads.losses
    (K, P) and update.scalars (K, 9): the pieces k = j, j + n, ..., a barrier, slice j of the
    gradient sum and the update, a barrier. The steps stop after the first one with a non-finite
    loss (not applied): every thread reads every piece's loss after the first barrier, so all stop
    there. Barriers are counted from sync.count; sync.iters: their spin before each yield.
    alone: the tasks run inline (threads.inline()), one after another: thread 0 does every piece
    and every slice without waiting, and the others nothing.
    """
    post(*posted)
    count = sync.count
    if alone:
        if j != 0:
            return count
        n = 1
    for s in range(batch.tokens.shape[0]):
        step_grads = Gradients(grads.grads, grads.extra, grads.losses[s], grads.cuts)
        run_pieces(j, n, Batch(batch.bounds, batch.tokens[s], batch.targets[s], batch.scale), model, buffers,
                   step_grads)
        count += 1
        wait(sync.reached, j, n, count, sync.iters)
        step_update = Update(update.scalars[s], update.m, update.v, update.decay, update.trainable)
        for i in range(j, len(grads.cuts) - 1, n):
            finish_slice(i, model.weights, step_grads, step_update)
        for k in range(grads.losses.shape[1]):
            if not np.isfinite(grads.losses[s, k]):
                return count
        count += 1
        wait(sync.reached, j, n, count, sync.iters)
    return count


@jit
def run_pieces(j, n, batch, model, buffers, grads):
    """Thread j's pieces k = j, j + n, ... of a step, each one piece.train: its loss sum to
    grads.losses[k], its gradient to grads.grads or grads.extra[k - 1] (see Gradients)."""
    p = model.n_numbers
    for k in range(j, len(batch.bounds) - 1, n):
        lo, hi = batch.bounds[k], batch.bounds[k + 1]
        b = hi - lo
        gk = grads.grads if k == 0 else grads.extra[k - 1]
        grads.losses[k] = train(batch.tokens[lo:hi], batch.targets[lo:hi], batch.scale, model.weights, model.table,
                                model.d_model, model.n_heads, model.eps, buffers.scratch,
                                buffers.logits[:b * p].reshape((b, p)), buffers.dlogits[:b * p].reshape((b, p)), gk)


@jit
def finish_slice(i, weights, grads, update):
    """Slice i of a step (see Gradients): the gradient sum, then the optimizer's step on weights
    unless update.scalars is empty or a loss is not finite."""
    cuts = grads.cuts
    if i >= len(cuts) - 1:
        return
    lo, hi = cuts[i], cuts[i + 1]
    sum_pieces(grads.grads, grads.extra, lo, hi)
    opt = update.scalars
    if opt.size == 0:
        return
    for k in range(grads.losses.size):
        if not np.isfinite(grads.losses[k]):
            return
    kern.adamw(weights[lo:hi], grads.grads[lo:hi], update.m[lo:hi], update.v[lo:hi], opt[0], opt[1], opt[2], opt[3],
               opt[4], opt[5], opt[6], opt[7], opt[8], update.decay[lo:hi], update.trainable[lo:hi])


@jit
def sum_pieces(g0, extra, lo, hi):
    """g0[lo:hi] += extra[0, lo:hi] + extra[1, lo:hi] + ..., one piece at a time, in order."""
    for e in range(extra.shape[0]):
        kern.add_into(g0[lo:hi], extra[e, lo:hi])
