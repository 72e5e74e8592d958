"""Which examples each training step takes, for the addition runs (loop.py) and the toy source.

Epoch e visits the n examples in the order of a permutation drawn from the generator seeded with
[seed, stream, e] (stream: config.RNG_EPOCH for a run, config.RNG_TOY_EPOCH for the toy source),
batch_size at a time; an epoch's last batch holds the n mod batch_size left over, if any. Step s is
batch s mod steps_per_epoch of epoch s // steps_per_epoch, so the step number is the whole
data-order state: a resumed run draws the same batches as one that never stopped.
"""

from __future__ import annotations

import math

import numpy as np


class EpochBatches:
    """The example indices of each step over n examples; the current epoch's order is kept."""

    def __init__(self, n: int, batch_size: int, seed: int, stream: int):
        self.n, self.batch_size, self.seed, self.stream = int(n), int(batch_size), seed, stream
        self.steps_per_epoch = math.ceil(self.n / self.batch_size)
        self._epoch, self._order = -1, None

    def order(self, epoch: int) -> np.ndarray:
        """(n,) int64: the permutation of 0..n-1 that epoch `epoch` visits."""
        if epoch != self._epoch:
            self._order = np.random.default_rng([self.seed, self.stream, epoch]).permutation(self.n)
            self._epoch = epoch
        return self._order

    def take(self, step: int, k: int = 1) -> np.ndarray:
        """(k, b) int64: row j holds the examples of step `step + j`.

        The k steps must lie in one epoch, and be full batches (b = batch_size) when k > 1: one
        array then feeds GPT.train_steps. k = 1 at an epoch's smaller last batch gives (1, n mod
        batch_size).
        """
        epoch, pos = divmod(step, self.steps_per_epoch)
        idx = self.order(epoch)[pos * self.batch_size : (pos + k) * self.batch_size]
        if k > 1 and idx.size != k * self.batch_size:
            raise ValueError(f"steps {step}..{step + k - 1} are not {k} full batches of one epoch")
        return idx.reshape(k, -1)
