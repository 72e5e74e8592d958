"""The engine a GPT (nn/model.py) runs on: `Engine` (the one instance is `fourier_toy.fast.ENGINE`)
gives the model its op kernels (op_kernels.py), its fused path (`FusedPath`, below) and AdamW's
update rule (adamw.py).

The fused path: last-position logits, loss and gradients, a batch cut into pieces that run on the
threads of threads.py. Each piece is one call into piece.py (the fused kernels of row_kernels.py
between numpy's BLAS matmuls, without the GIL), with its thread's reusable buffers and its own
gradient buffer. In training, each thread's whole share of a step (its pieces, the barrier, its
slice of the gradient sum and of the optimizer's step) is one call into step.py.

The pieces depend only on the batch size (piece_bounds), never on the thread count, and their
gradients are summed in a fixed order, so results are bit-identical for any number of threads.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np

from fourier_toy.config import ModelConfig
from fourier_toy.fast import op_kernels, piece, threads
from fourier_toy.fast import step as step_share
from fourier_toy.fast.adamw import RULE as ADAMW_RULE, adamw_update
from fourier_toy.fast.inputs import indices
from fourier_toy.fast.jit import FLOATS
from fourier_toy.fast.step import Barrier, Batch, Buffers, Gradients, Model, Update
from fourier_toy.nn import ops
from fourier_toy.nn.model import GPT


PIECE_EXAMPLES = 128  # a training batch is cut into pieces of about this many examples,
MAX_PIECES = 4        # at most this many (each piece's gradient is a buffer of the model's size);
EVAL_PIECE = 128      # evaluation batches into pieces of at most this many examples.


def piece_bounds(batch: int, train: bool = True) -> list[int]:
    """Where a batch is cut into pieces: a function of the batch size alone."""
    if train:
        n = min(MAX_PIECES, max(1, round(batch / PIECE_EXAMPLES)))
    else:
        n = max(1, -(-batch // EVAL_PIECE))
    return [batch * k // n for k in range(n + 1)]


class _Workspace:
    """Scratch of one thread, grown on demand and reused across steps: the activations
    (fused_piece's layout) and the logits with their gradient."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.scratch = np.empty(0, dtype=dtype)
        self.logits = np.empty(0, dtype=dtype)
        self.dlogits = np.empty(0, dtype=dtype)

    def buffers(self, entries: int, B: int, p: int) -> tuple:
        """(scratch of at least `entries`, logits (B, p), dlogits (B, p))."""
        if self.scratch.size < entries:
            self.scratch = np.empty(entries, dtype=self.dtype)
        if self.logits.size < B * p:
            self.logits = np.empty(B * p, dtype=self.dtype)
            self.dlogits = np.empty(B * p, dtype=self.dtype)
        return self.scratch, self.logits[:B * p].reshape(B, p), self.dlogits[:B * p].reshape(B, p)


class FusedPath:
    """Last-position logits, loss and gradients of a GPT, piece by piece: each piece is one call
    into fused_piece.py, which runs without the GIL (see there for the computation)."""

    def __init__(self, model: GPT):
        self.model = model
        self.piece = piece
        self.threads = threads
        self.dtype = model.params.dtype
        self.eps = self.dtype.type(ops.LN_EPS)
        self.D, self.H, self.L = model.cfg.d_model, model.n_heads, model.cfg.n_layers
        self.table = self.piece.weight_table(model)
        self.workspaces: dict[int, _Workspace] = {}
        self.scratch_sizes: dict[tuple, int] = {}
        self.fused_step = step_share
        self.extra = np.zeros((0, model.grads.size), dtype=self.dtype)
        empty, no_mask = np.zeros(0, dtype=self.dtype), np.zeros(0, dtype=bool)
        self._no_step = Update(empty, empty, empty, no_mask, no_mask)
        self.plans: dict[tuple, tuple] = {}
        self.sync = np.zeros(0, dtype=np.int64)  # the barrier count each thread has reached
        self.barriers = 0
        self.spin = self.threads.barrier_iterations()

    # ---- helpers -------------------------------------------------------------------------------

    def _ws(self, j: int, B: int, T: int) -> tuple:
        """Thread j's (scratch, logits, dlogits) for a piece of B examples of T tokens."""
        ws = self.workspaces.get(j)
        if ws is None:
            ws = self.workspaces[j] = _Workspace(self.dtype)
        entries = self.scratch_sizes.get((B, T))
        if entries is None:
            entries = self.scratch_sizes[B, T] = self.piece.scratch_entries(B, T, self.D, self.H, self.L)
        return ws.buffers(entries, B, self.model.n_numbers)

    def _extra(self, P: int) -> np.ndarray:
        """(P - 1, size): the gradient buffers of pieces 1..P-1 (piece 0's is the model's own)."""
        if len(self.extra) < P - 1:
            self.extra = np.zeros((P - 1, self.model.grads.size), dtype=self.dtype)
        return self.extra[:P - 1]

    def _grads(self, k: int) -> np.ndarray:
        """Piece k's flat gradient buffer: the model's own for piece 0."""
        return self.model.grads if k == 0 else self._extra(k + 1)[k - 1]

    def _tokens(self, tokens) -> np.ndarray:
        return indices("tokens", "ids", tokens, np.shape(tokens), self.model.vocab_size)

    def _targets(self, targets, shape: tuple) -> np.ndarray:
        return indices("targets", "number tokens", targets, shape, self.model.n_numbers)

    # ---- public entry points ---------------------------------------------------------------------

    def logits(self, tokens) -> np.ndarray:
        """tokens (B, T) -> (B, p) number logits at the last position; no activations are kept."""
        tok = self._tokens(tokens)
        B, T = tok.shape
        out = np.empty((B, self.model.n_numbers), dtype=self.dtype)
        bounds = piece_bounds(B, train=False)
        P = len(bounds) - 1
        W = min(self.threads.threads(), P)
        w, table, piece = self.model.params, self.table, self.piece

        def work(j):
            for k in range(j, P, W):
                lo, hi = bounds[k], bounds[k + 1]
                if hi > lo:
                    scratch, _, _ = self._ws(j, hi - lo, T)
                    piece.forward(tok[lo:hi], w, table, self.D, self.H, self.eps, scratch, out[lo:hi])

        self.threads.run_tasks([(lambda j=j: work(j)) for j in range(W)], W)
        return out

    def loss_and_grad(self, tokens, targets, step=None) -> float:
        """The mean loss; fills the model's gradient. With step (optim.AdamW.prepare_step's), the
        same hand-off then applies it, slice by slice, and commits it, unless the loss is not
        finite: the parameters then stay as they were. One numba call per thread
        (fused_step.train_share) does it all."""
        tok = self._tokens(tokens)
        tg = self._targets(targets, (len(tok),))
        B, T = tok.shape
        bounds, n, cuts, biggest = self._plan(B)
        P = len(bounds) - 1
        grads = Gradients(self.model.grads, self._extra(P), np.zeros(P), cuts)
        update = self._no_step if step is None else self._update(step)
        if len(self.sync) < n:
            self.sync = np.zeros(n, dtype=np.int64)
        self.barriers += 1  # counts only grow, so a stale entry never passes the next barrier
        # Everything a thread needs is ready before the hand-off: the caller then lets go of the
        # GIL as soon as it has posted the work, and each task is a single numba call.
        batch, model = Batch(bounds, tok, tg, self.dtype.type(1.0 / max(B, 1))), self._model()
        shares = [(j, n, batch, model, self._buffers(j, biggest[j], T), grads, self.sync, self.barriers, update)
                  for j in range(n)]
        done = self.threads.run_tasks([partial(self._share, *share) for share in shares], n, first_posts=True)
        for j, finished in enumerate(done):
            if not finished:
                self.fused_step.finish_slice(j, model.weights, grads, update)
        loss = math.fsum(grads.losses) / max(B, 1)
        if step is not None and math.isfinite(loss):
            step.commit()
        return float(loss)

    def train_steps(self, tokens, targets, update) -> np.ndarray:
        """K training steps in one hand-off: tokens (K, B, T) and targets (K, B), update an
        adamw_kernel.Step whose scalars hold one row per step (optim.AdamW.prepare_steps). Each step
        is loss_and_grad(tokens[s], targets[s], ...) with that row, to the bit; the steps stop after
        the first non-finite loss, which is not applied. Returns the losses of the steps taken
        (float64, the last one non-finite if they stopped early) and commits that many steps but
        the non-finite one (fused_step.train_steps_share)."""
        tok = self._tokens(tokens)
        K, B, T = tok.shape
        tg = self._targets(targets, (K, B))
        if update.scalars.shape[0] != K:
            raise ValueError(f"update: expected the scalars of {K} steps, got {update.scalars.shape[0]}")
        bounds, n, cuts, biggest = self._plan(B)
        P = len(bounds) - 1
        grads = Gradients(self.model.grads, self._extra(P), np.zeros((K, P)), cuts)
        if len(self.sync) < n:
            self.sync = np.zeros(n, dtype=np.int64)
        batch, model = Batch(bounds, tok, tg, self.dtype.type(1.0 / max(B, 1))), self._model()
        sync, steps = Barrier(self.sync, self.barriers, self.spin), self._update(update)
        # Thread 0 runs every piece when the tasks run inline. Every buffer is made here: a task that
        # raised before its numba call would leave the others waiting at the first barrier for good.
        largest = max(bounds[k + 1] - bounds[k] for k in range(P))
        ws = [self._buffers(j, largest if j == 0 else biggest[j], T) for j in range(n)]

        def share(j):
            return self.fused_step.train_steps_share(self.threads.post_handle(), j, n, self.threads.inline(), batch,
                                                     model, ws[j], grads, sync, steps)

        counts = self.threads.run_tasks([partial(share, j) for j in range(n)], n, first_posts=True)
        self.barriers = max(counts)
        out = np.array([math.fsum(row) / max(B, 1) for row in grads.losses])  # as loss_and_grad's
        bad = np.flatnonzero(~np.isfinite(out))
        if bad.size:
            update.commit(int(bad[0]))
            return out[:bad[0] + 1]
        update.commit(K)
        return out

    def _share(self, j, n, batch, model, buffers, grads, reached, count, update) -> bool:
        # Run inline, the other shares come after this one: no waiting at the barrier.
        iters = 0 if self.threads.inline() else self.spin
        return self.fused_step.train_share(self.threads.post_handle(), j, n, batch, model, buffers, grads,
                                           Barrier(reached, count, iters), update)

    def _model(self) -> Model:
        return Model(self.model.params, self.table, self.D, self.H, self.eps, self.model.n_numbers)

    def _buffers(self, j: int, B: int, T: int) -> Buffers:
        """Thread j's scratch for pieces of up to B examples of T tokens, flat, as step.py takes it."""
        return Buffers(*(a.reshape(-1) for a in self._ws(j, B, T)))

    @staticmethod
    def _update(step) -> Update:
        """An adamw.Step (one row of scalars, or one per step) as step.py takes it."""
        return Update(step.scalars, step.m, step.v, step.decay, step.trainable)

    def _plan(self, B: int) -> tuple:
        """For a training batch of B examples: the pieces' bounds (int64), the number of threads,
        the slices' cuts (int64) and each thread's largest piece."""
        key = (B, self.threads.threads())
        plan = self.plans.get(key)
        if plan is None:
            bounds = piece_bounds(B)
            P = len(bounds) - 1
            cuts = np.array(self.threads.slice_bounds(self.model.grads.size), dtype=np.int64)
            n = min(key[1], max(P, len(cuts) - 1))
            biggest = [max((bounds[k + 1] - bounds[k] for k in range(j, P, n)), default=1) for j in range(n)]
            plan = self.plans[key] = (np.array(bounds, dtype=np.int64), n, cuts, biggest)
        return plan

    def backward(self, tokens, dlogits) -> None:
        tok = self._tokens(tokens)
        dl = np.asarray(dlogits)
        if dl.shape != (len(tok), self.model.n_numbers):
            raise ValueError(f"dlogits: expected shape {(len(tok), self.model.n_numbers)}, got {dl.shape}")
        dl = np.ascontiguousarray(dl, dtype=self.dtype)
        w, table, piece, T = self.model.params, self.table, self.piece, tok.shape[1]

        def grad(j, k, lo, hi):
            scratch, logits, _ = self._ws(j, hi - lo, T)
            piece.forward(tok[lo:hi], w, table, self.D, self.H, self.eps, scratch, logits)
            piece.backward(tok[lo:hi], w, table, self.D, self.H, scratch, dl[lo:hi], self._grads(k))
            return 0.0

        self._run_pieces(len(tok), grad)

    def _run_pieces(self, batch: int, piece_fn) -> list:
        """Run piece_fn(thread j, piece k, lo, hi) for every training piece k, then sum the gradients."""
        bounds = piece_bounds(batch)
        P = len(bounds) - 1
        W = min(self.threads.threads(), P)
        results = [0.0] * P
        self._extra(P)  # allocated here, not by the threads

        def work(j):
            for k in range(j, P, W):
                results[k] = piece_fn(j, k, bounds[k], bounds[k + 1])

        self.threads.run_tasks([(lambda j=j: work(j)) for j in range(W)], W)
        if P > 1:
            grads = self.model.grads
            self.threads.run_sliced(partial(self.fused_step.sum_pieces, grads, self._extra(P)), grads.size)
        return results


class Engine:
    """The numba engine, attached to a GPT as `GPT(..., engine=ENGINE)`:
    - `ops`: the op-by-op kernels, with nn/ops.py's names, signatures and caches;
    - `fused_path(model)`: the model's fused path (FusedPath);
    - `adamw`: AdamW's update rule (an nn.optim.UpdateRule), for `AdamW(..., update=ENGINE.adamw)`;
    - `warmup(dtypes)`: compile, or load from the cache, every kernel.
    """

    name = "numba"
    ops = op_kernels
    adamw = ADAMW_RULE

    def fused_path(self, model: GPT) -> FusedPath:
        return FusedPath(model)

    def warmup(self, dtypes=FLOATS) -> None:
        _warmup(dtypes)

    def __repr__(self) -> str:
        return "fourier_toy.fast.ENGINE"


ENGINE = Engine()


def _warmup(dtypes=FLOATS):
    """Compile (or load from the cache) every kernel for the given dtypes (default float32 and
    float64) on tiny inputs, the fused ones through a tiny model's training step and forward
    pass. Training needs float32 only; float64 serves the gradient checks."""
    rng = np.random.default_rng(0)
    tokens = np.array([[0, 1, 2], [2, 1, 0]])
    for dt in map(np.dtype, dtypes):
        def r(*shape):
            return rng.standard_normal(shape).astype(dt)

        x, c = op_kernels.embedding_forward(tokens, r(3, 4), r(3, 4))
        op_kernels.embedding_backward(x, c)
        y, c = op_kernels.layernorm_forward(r(2, 3, 4), r(4), r(4))
        op_kernels.layernorm_backward(y, c)
        y, c = op_kernels.linear_forward(r(2, 3, 4), r(4, 5), r(5))
        op_kernels.linear_backward(y, c)
        y, c = op_kernels.gelu_forward(r(2, 3, 4))
        op_kernels.gelu_backward(y, c)
        z, c = op_kernels.attention_forward(r(2, 2, 3, 4), r(2, 2, 3, 4), r(2, 2, 3, 4))
        op_kernels.attention_backward(z, c)
        _, c = op_kernels.cross_entropy_forward(r(2, 5), np.array([0, 4]))
        op_kernels.cross_entropy_backward(1.0, c)
        p = r(6)
        adamw_update(p, r(6), np.zeros_like(p), np.zeros_like(p), 1e-3, 0.9, 0.98, 1e-8, 0.01,
                     np.ones(6, np.float32), np.ones(6, np.float32), 1)
        model = GPT(ModelConfig(d_model=4, n_layers=2, n_heads=2, n_ctx=4, backend="numba"), 3,
                    rng=np.random.default_rng(0), dtype=dt, engine=ENGINE)
        tokens4 = np.array([[0, 3, 1, 4], [2, 3, 2, 4]])
        model.loss_and_grad(tokens4, np.array([1, 2]))
        model.forward(tokens4)
