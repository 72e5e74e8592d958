"""The fused path of a GPT (model.py): last-position logits, loss and gradients, a batch cut into
pieces that run on the threads of threads.py. Each piece is one call into fused_piece.py (the
fused kernels of fused.py between numpy's BLAS matmuls, without the GIL), with its thread's
reusable buffers and its own gradient buffer.

The pieces depend only on the batch size (piece_bounds), never on the thread count, and their
gradients are summed in a fixed order, so results are bit-identical for any number of threads.
"""

from __future__ import annotations

import importlib
import math
from typing import TYPE_CHECKING

import numpy as np

from . import ops
from .errors import DataError

if TYPE_CHECKING:
    from .model import GPT


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
        self.piece = importlib.import_module(".fused_piece", __package__)
        self.fused = importlib.import_module(".fused", __package__)
        self.threads = importlib.import_module(".threads", __package__)
        self.dtype = model.params.dtype
        self.eps = self.dtype.type(ops.LN_EPS)
        self.D, self.H, self.L = model.cfg.d_model, model.n_heads, model.cfg.n_layers
        self.table = self.piece.weight_table(model)
        self.workspaces: dict[int, _Workspace] = {}
        self.scratch_sizes: dict[tuple, int] = {}
        self.piece_grads: dict[int, np.ndarray] = {0: model.grads}

    # ---- helpers -------------------------------------------------------------------------------

    def _ws(self, j: int, B: int, T: int) -> tuple:
        """Thread j's (scratch, logits, dlogits) for a piece of B examples of T tokens."""
        ws = self.workspaces.get(j)
        if ws is None:
            ws = self.workspaces[j] = _Workspace(self.dtype)
        entries = self.scratch_sizes.get((B, T))
        if entries is None:
            entries = self.scratch_sizes[B, T] = self.piece.scratch_entries(B, T, self.D, self.H, self.L)
        return ws.buffers(entries, B, self.model.p)

    def _grads(self, k: int) -> np.ndarray:
        """Piece k's flat gradient buffer: the model's own for piece 0."""
        if k not in self.piece_grads:
            self.piece_grads[k] = np.zeros_like(self.model.grads)
        return self.piece_grads[k]

    def _tokens(self, tokens) -> np.ndarray:
        tok = np.asarray(tokens)
        if tok.dtype.kind not in "iu":
            raise DataError(f"tokens: expected integer token ids, got dtype {tok.dtype}")
        V = self.model.vocab_size
        if tok.size and (tok.min() < 0 or tok.max() >= V):
            raise DataError(f"tokens: ids must lie in [0, {V}), got values in [{tok.min()}, {tok.max()}]")
        return np.ascontiguousarray(tok, dtype=np.intp)

    def _targets(self, targets, batch: int) -> np.ndarray:
        tg = np.asarray(targets)
        p = self.model.p
        if tg.dtype.kind not in "iu" or tg.shape != (batch,):
            raise DataError(f"targets: expected {batch} integer number tokens, got {tg.dtype} {tg.shape}")
        if batch and (tg.min() < 0 or tg.max() >= p):
            raise DataError(f"targets: must lie in [0, {p}), got values in [{tg.min()}, {tg.max()}]")
        return np.ascontiguousarray(tg, dtype=np.intp)

    # ---- public entry points ---------------------------------------------------------------------

    def logits(self, tokens) -> np.ndarray:
        """tokens (B, T) -> (B, p) number logits at the last position; no activations are kept."""
        tok = self._tokens(tokens)
        B, T = tok.shape
        out = np.empty((B, self.model.p), dtype=self.dtype)
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

    def loss_and_grad(self, tokens, targets) -> float:
        tok = self._tokens(tokens)
        tg = self._targets(targets, len(tok))
        scale = self.dtype.type(1.0 / max(len(tok), 1))
        w, table, piece, T = self.model.params, self.table, self.piece, tok.shape[1]

        def train(j, k, lo, hi):
            scratch, logits, dlogits = self._ws(j, hi - lo, T)
            return piece.train(tok[lo:hi], tg[lo:hi], scale, w, table, self.D, self.H, self.eps, scratch, logits,
                               dlogits, self._grads(k))

        sums = self._run_pieces(len(tok), train)
        return float(math.fsum(sums) / max(len(tok), 1))

    def backward(self, tokens, dlogits) -> None:
        tok = self._tokens(tokens)
        dl = np.asarray(dlogits)
        if dl.shape != (len(tok), self.model.p):
            raise ValueError(f"dlogits: expected shape {(len(tok), self.model.p)}, got {dl.shape}")
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

        def work(j):
            for k in range(j, P, W):
                results[k] = piece_fn(j, k, bounds[k], bounds[k + 1])

        self.threads.run_tasks([(lambda j=j: work(j)) for j in range(W)], W)
        if P > 1:
            g0 = self.model.grads
            extra = [self._grads(k) for k in range(1, P)]
            n = g0.size
            S = min(W, max(1, n // self.threads.MIN_SLICE))
            cuts = [n * i // S for i in range(S + 1)]

            def add(lo, hi):
                for e in extra:  # a fixed order: piece 1, 2, ...
                    self.fused.add_into(g0[lo:hi], e[lo:hi])

            self.threads.run_tasks([(lambda i=i: add(cuts[i], cuts[i + 1])) for i in range(S)], S)
        return results
