"""The addition task: examples, the split, batches and the token encoding.

Encoding (p = 2 * max_operand + 1 number tokens, V = p + 2):

    token id   0 .. p-1   the numbers 0 .. p-1 themselves (one token each, like GPT-2's "0".."520")
    token id   p          '+'
    token id   p + 1      '='

Worked example, max_operand = 60 (p = 121, V = 123): "15 + 43 =" -> tokens [15, 121, 43, 122],
target token 58. The model reads the logits at the last
position ('=') over the p number tokens only; the loss is on that answer token alone.

Split: by default every unordered pair {a, b} appears once, in an order drawn by the seed (as the
paper's 34,191 = 261 * 262 / 2 examples suggest); the pairs are shuffled and cut 80/10/10.
With `ordered = true` (a, b) and (b, a) are separate examples that may land in different splits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fourier_toy.config import RNG_SPLITS, TaskConfig, check_memory, task_bytes
from fourier_toy.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Vocab:
    n_numbers: int  # p

    @property
    def plus(self) -> int:
        return self.n_numbers

    @property
    def equals(self) -> int:
        return self.n_numbers + 1

    @property
    def size(self) -> int:
        return self.n_numbers + 2

    def encode(self, a, b) -> np.ndarray:
        """a, b (n,) ints -> tokens (n, 4) int64 = [a, '+', b, '=']."""
        a, b = np.atleast_1d(a), np.atleast_1d(b)
        if a.shape != b.shape or np.any(a < 0) or np.any(b < 0) or np.any(a >= self.n_numbers) or np.any(
            b >= self.n_numbers
        ):
            raise DataError(f"operands: expected equal-length integer arrays in [0, {self.n_numbers - 1}]")
        out = np.empty((a.shape[0], 4), dtype=np.int64)
        out[:, 0], out[:, 1], out[:, 2], out[:, 3] = a, self.plus, b, self.equals
        return out

    def decode(self, tokens) -> tuple[np.ndarray, np.ndarray]:
        """tokens (n, 4) -> (a, b); raises DataError on a sequence that is not [a, '+', b, '=']."""
        tokens = np.asarray(tokens)
        ok = (
            tokens.ndim == 2 and tokens.shape[1] == 4
            and np.all(tokens[:, 1] == self.plus) and np.all(tokens[:, 3] == self.equals)
            and np.all((tokens[:, [0, 2]] >= 0) & (tokens[:, [0, 2]] < self.n_numbers))
        )
        if not ok:
            raise DataError(f"tokens: expected rows [a, {self.plus}, b, {self.equals}] with a, b < {self.n_numbers}")
        return tokens[:, 0].copy(), tokens[:, 2].copy()

    def to_text(self, tokens) -> str:
        names = {self.plus: "+", self.equals: "="}
        return " ".join(names.get(int(t), str(int(t))) for t in tokens)


@dataclass(frozen=True)
class Split:
    """tokens (n, 4) int64 and targets (n,) int64 (= a + b) of one split."""

    tokens: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)


def all_pairs(max_operand: int, ordered: bool) -> np.ndarray:
    """(n, 2) operand pairs in a fixed order: all (a, b) if ordered, else a <= b."""
    a, b = np.meshgrid(np.arange(max_operand + 1), np.arange(max_operand + 1), indexing="ij")
    pairs = np.stack([a.ravel(), b.ravel()], axis=1)
    return pairs if ordered else pairs[pairs[:, 0] <= pairs[:, 1]]


def make_splits(cfg: TaskConfig, seed: int) -> dict[str, Split]:
    """Train/val/test splits; a pure function of (cfg, seed)."""
    check_memory("task.max_operand", task_bytes(cfg), "use a smaller task.max_operand")
    # A generator of its own, so the split does not depend on anything else the run draws.
    rng = np.random.default_rng([seed, RNG_SPLITS])
    pairs = all_pairs(cfg.max_operand, cfg.ordered)
    if not cfg.ordered:
        swap = rng.random(len(pairs)) < 0.5
        pairs[swap] = pairs[swap][:, ::-1]
    pairs = pairs[rng.permutation(len(pairs))]
    n = len(pairs)
    n_train = int(round(cfg.split[0] * n))
    n_val = int(round(cfg.split[1] * n))
    n_val = min(n_val, n - n_train)
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
    if n_train < 1:
        # Nothing to train on: every epoch would be empty. (val and test may be empty: the runs then
        # report no accuracy on them.)
        raise ConfigError(f"task.split: {list(cfg.split)} of {n} pairs leaves the training split empty "
                          f"(val {n_val}, test {n - n_val}); it needs at least one pair")
    vocab = Vocab(cfg.n_numbers)
    out = {}
    for name, (lo, hi) in bounds.items():
        a, b = pairs[lo:hi, 0], pairs[lo:hi, 1]
        out[name] = Split(vocab.encode(a, b), (a + b).astype(np.int64))
    return out


def epoch_batches(n: int, batch_size: int, rng: np.random.Generator):
    """Index arrays covering a fresh permutation of range(n); the last batch may be short."""
    perm = rng.permutation(n)
    for lo in range(0, n, batch_size):
        yield perm[lo : lo + batch_size]
