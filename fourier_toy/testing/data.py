"""Deterministic builders of test data: number rows with planted periods, circle features, examples.

Plain functions of their arguments (a seed or a ``numpy.random.Generator``, never numpy's global
state). The hypothesis strategies of ``strategies.py`` draw these arguments and call them; tests
that want one fixed case call them directly.

Shapes:
- ``planted_rows(n_rows, width, periods)`` -> (W (n_rows, width) float64, Planted).
- ``circle_features(n (n,), T, rng)`` -> (n, 2 + extra_dims) float64.
- ``task_examples(max_operand)`` -> Split with tokens (n, 4) int64 and targets (n,) int64,
  n = (m + 1)(m + 2) / 2 unordered pairs a <= b.
- ``all_examples(run)`` -> the Split of a run's train, val and test examples together.
- ``filter_width(max_operand)`` -> int, the rows the widest band filter removes on the exact axis.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from fourier_toy.analysis import fourier
from fourier_toy.task import Split, Vocab, all_pairs
from fourier_toy.testing._args import ArgumentError, check_float, check_int

__all__ = ["Planted", "planted_rows", "circle_features", "task_examples", "all_examples", "filter_width",
           "component_of"]


class Planted(NamedTuple):
    """What ``planted_rows`` put into a matrix.

    - ``periods``: the planted periods, in the order planted.
    - ``ks``: the frequency k of each period on the exact number axis of the matrix
      (``fourier.number_axis(n_rows)``: N = n_rows - 1 rows for odd n_rows, else n_rows), None
      where the period is not a component of that basis.
    - ``N``: the rows that axis analyses.
    - ``amplitude``, ``noise``, ``seed``: the arguments.
    """

    periods: tuple
    ks: tuple
    N: int
    amplitude: float
    noise: float
    seed: int


def component_of(N: int, period: float) -> int | None:
    """The frequency k with N / k == period exactly (relative 1e-9), or None."""
    k = N / float(period)
    ki = int(round(k))
    return ki if ki >= 1 and math.isclose(k, ki, rel_tol=1e-9, abs_tol=0.0) else None


def planted_rows(n_rows: int, width: int, periods=(), *, amplitude: float = 1.0, noise: float = 1.0,
                 seed: int = 0) -> tuple[np.ndarray, Planted]:
    """(W (n_rows, width) float64, Planted): Gaussian noise plus a wave of each period in random directions.

    W[n] = noise * g_n + amplitude * sum_T [cos(2 pi n / T), sin(2 pi n / T)] @ R_T, where g_n (width,)
    and each R_T (2, width) are standard normal, drawn in that order from
    ``numpy.random.default_rng(seed)`` (all of G first, then R_T in the order of ``periods``).
    Each planted period has per-entry RMS ``amplitude`` (cos^2 + sin^2 = 1), so ``noise /
    amplitude`` is the noise-to-signal RMS ratio of every period. Row n is the number n.
    """
    n_rows = check_int("n_rows", n_rows, 2)
    width = check_int("width", width, 1)
    if isinstance(periods, (str, bytes)) or not hasattr(periods, "__iter__"):
        raise ArgumentError(f"periods: expected a sequence of periods > 1, got {periods!r}")
    periods = tuple(check_float("periods", T, 1.0, None, lo_open=True) for T in periods)
    amplitude = check_float("amplitude", amplitude, 0.0)
    noise = check_float("noise", noise, 0.0)
    seed = check_int("seed", seed, 0)
    rng = np.random.default_rng(seed)
    n = np.arange(n_rows)[:, None]
    W = rng.normal(size=(n_rows, width))
    if noise != 1.0:
        W *= noise
    for T in periods:
        wave = np.hstack([np.cos(2 * np.pi * n / T), np.sin(2 * np.pi * n / T)])
        W += amplitude * wave @ rng.normal(size=(2, width))
    N = fourier.number_axis(n_rows).basis.n if n_rows >= 3 else n_rows
    return W, Planted(periods, tuple(component_of(N, T) for T in periods), N, amplitude, noise, seed)


def circle_features(n, T: int, rng: np.random.Generator, extra_dims: int = 6, noise: float = 0.05) -> np.ndarray:
    """(len(n), 2 + extra_dims): [cos, sin](2 pi n / T) plus ``noise`` * N(0, 1), beside
    ``extra_dims`` unit-variance noise columns, the whole rotated by a random orthogonal matrix
    (so the code is not axis-aligned, as in a learned embedding). Draws from ``rng`` in order:
    the extra columns, the circle's noise, the rotation."""
    n = np.asarray(n)
    if n.ndim != 1:
        raise ArgumentError(f"n: expected a 1-D array of numbers, got shape {n.shape}")
    check_int("T", T, 1)
    check_int("extra_dims", extra_dims, 0)
    check_float("noise", noise, 0.0)
    if not isinstance(rng, np.random.Generator):
        raise ArgumentError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    angle = 2 * np.pi * n / T
    signal = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    X = np.concatenate([signal, rng.normal(size=(n.size, extra_dims))], axis=1)
    X[:, :2] += noise * rng.normal(size=(n.size, 2))
    Q, _ = np.linalg.qr(rng.normal(size=(X.shape[1], X.shape[1])))
    return X @ Q


def task_examples(max_operand: int) -> Split:
    """Every unordered pair a <= b <= max_operand as [a, '+', b, '='] with target a + b."""
    m = check_int("max_operand", max_operand, 1)
    pairs = all_pairs(m, ordered=False)
    return Split(Vocab(2 * m + 1).encode(pairs[:, 0], pairs[:, 1]), pairs.sum(axis=1).astype(np.int64))


def all_examples(run) -> Split:
    """Every example of a run's task (``training.open_run.Run``): train, val and test together."""
    splits = getattr(run, "splits", None)
    if not isinstance(splits, dict):
        raise ArgumentError(f"run: expected a Run with splits, got {type(run).__name__}")
    sp = [splits[s] for s in ("train", "val", "test")]
    return Split(np.concatenate([s.tokens for s in sp]), np.concatenate([s.targets for s in sp]))


def filter_width(max_operand: int, basis: str = "exact", tau: int | None = None) -> int:
    """The most rows a band filter removes at this task size: max(#low rows, #high rows).

    A filter's M = F[removed] W_U has rank <= that count, so d_model above it leaves the filter a
    null space of at least d_model - filter_width. Exact axis, N = 2 * max_operand, default tau:
    20 rows at N = 20 remove 17 (high band k >= 2), N = 30 removes 25, N = 40 removes 33.
    """
    m = check_int("max_operand", max_operand, 1)
    axis = fourier.number_axis(2 * m + 1, basis, tau)
    masks = fourier.band_masks(axis.basis, axis.tau)
    return int(max(masks.low.sum(), masks.high.sum()))
