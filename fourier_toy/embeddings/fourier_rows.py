"""Fourier number embeddings: fixed cos/sin features of each number, mapped to the model width.

Row n of every array here embeds the number n (n = 0..N-1, N = n_numbers). For a period T the
number n gets the pair cos(2 pi n / T), sin(2 pi n / T), as in FoNE (PAPER.md section 7) and the
periodic components the paper finds in GPT-2's number tokens (periods 2, 2.5, 5, 10). Periodic
features alone cannot tell 3 from 13, so one low-frequency magnitude component is added:

- low = "linear":  the ramp (n - mean) / std over n = 0..N-1 (one column; a number line, as in the
  helix of Kantamneni & Tegmark).
- low = "lowfreq": cos and sin of period 2N (two columns; half a turn over the range, so the map
  n -> feature is one-to-one and cos alone is monotone in n).
- low = "none":    no magnitude component.

Every column is scaled to RMS 1 over the numbers (no centring: a cos column keeps its exact values
up to scale, so the spectrum over the number axis is untouched), then the F columns are mapped to
d_model columns by a random orthonormal map or by zero padding, and the whole matrix is scaled to
the per-entry RMS of GPT-2's learned init (normal(0, 0.02)), so a Fourier embedding enters the
residual stream at the same size as a learned one.

Shapes: N = n_numbers, F = number of feature columns, D = d_model. Everything is float64; the
caller casts to the parameter dtype.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from fourier_toy.errors import ConfigError

DEFAULT_PERIODS = (2.0, 2.5, 5.0, 10.0)
LOW_KINDS = ("linear", "lowfreq", "none")
MAPPINGS = ("orthonormal", "pad")
GPT2_INIT_STD = 0.02


def _check_n_numbers(n_numbers) -> int:
    if isinstance(n_numbers, bool) or not isinstance(n_numbers, (int, np.integer)) or n_numbers < 2:
        raise ConfigError(f"n_numbers: must be an integer >= 2, got {n_numbers!r}")
    return int(n_numbers)


def _check_periods(periods) -> tuple[float, ...]:
    if isinstance(periods, (str, bytes)) or not hasattr(periods, "__iter__"):
        raise ConfigError(f"embedding.periods: expected a list of numbers > 1, got {periods!r}")
    out = []
    for t in periods:
        if isinstance(t, bool) or not isinstance(t, Real) or not math.isfinite(float(t)):
            raise ConfigError(f"embedding.periods: each period must be a finite number > 1, got {t!r}")
        if float(t) <= 1.0:
            # Period 1 is the constant function on the integers; below 1 aliases onto a period > 1.
            raise ConfigError(f"embedding.periods: each period must be > 1, got {t!r}")
        out.append(float(t))
    if len(set(out)) != len(out):
        dup = next(t for t in out if out.count(t) > 1)
        raise ConfigError(f"embedding.periods: periods must be distinct, {dup:g} appears twice")
    return tuple(out)


def _check_choice(name: str, value, allowed) -> str:
    if value not in allowed:
        raise ConfigError(f"{name}: must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def feature_names(periods=DEFAULT_PERIODS, low: str = "linear") -> list[str]:
    """The names of fourier_features' columns, in order (e.g. "cos T=2.5", "sin T=2.5", "linear")."""
    periods = _check_periods(periods)
    _check_choice("embedding.low", low, LOW_KINDS)
    names = []
    for t in periods:
        names.append(f"cos T={t:g}")
        if t != 2.0:  # sin(pi n) = 0 for every integer n
            names.append(f"sin T={t:g}")
    if low == "linear":
        names.append("linear")
    elif low == "lowfreq":
        names += ["cos T=2N", "sin T=2N"]
    return names


def fourier_features(n_numbers: int, periods=DEFAULT_PERIODS, low: str = "linear") -> np.ndarray:
    """Fixed features of the numbers 0..n_numbers-1 -> (N, F) float64, each column with RMS 1.

    Columns: for each period T (in the given order) cos(2 pi n / T) and sin(2 pi n / T), except
    T = 2 which has only the cos column (its sin is zero on the integers); then the low component
    (see the module docstring). feature_names() gives the column names.
    """
    n_numbers = _check_n_numbers(n_numbers)
    periods = _check_periods(periods)
    _check_choice("embedding.low", low, LOW_KINDS)
    if not periods and low == "none":
        raise ConfigError("embedding.periods: empty with embedding.low = 'none' leaves no features")
    n = np.arange(n_numbers, dtype=np.float64)
    cols = []
    for t in periods:
        phase = 2.0 * np.pi * n / t
        cols.append(np.cos(phase))
        if t != 2.0:
            cols.append(np.sin(phase))
    if low == "linear":
        cols.append(n - n.mean())
    elif low == "lowfreq":
        phase = np.pi * n / n_numbers  # period 2N
        cols += [np.cos(phase), np.sin(phase)]
    X = np.stack(cols, axis=1)
    # Every column is non-zero on 0..N-1: cos is 1 at n = 0, sin(2 pi / T) != 0 at n = 1 for
    # T > 1, T != 2, and the ramp and the half-turn sin are non-constant for N >= 2.
    rms = np.sqrt(np.mean(X * X, axis=0))
    return X / rms


def orthonormal_rows(n_rows: int, n_cols: int, rng: np.random.Generator) -> np.ndarray:
    """A random (n_rows, n_cols) matrix with orthonormal rows (n_rows <= n_cols), Haar-distributed.

    QR of a gaussian (n_cols, n_rows) matrix; the signs of R's diagonal are folded into Q so the
    result depends only on the random draw, not on the QR routine's sign convention.
    """
    _check_rng(rng)
    if n_rows > n_cols:
        raise ConfigError(f"orthonormal_rows: cannot fit {n_rows} orthonormal rows in {n_cols} columns")
    g = rng.standard_normal((n_cols, n_rows))
    q, r = np.linalg.qr(g)
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    return (q * signs).T


def map_to_width(features: np.ndarray, d_model: int, mapping: str = "orthonormal",
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """features (N, F) -> (N, d_model).

    "orthonormal": features @ Q with Q a seeded random (F, d_model) matrix with orthonormal rows,
    so inner products between numbers (and every spectrum over the number axis, summed over the
    width) are preserved while the features are spread over all d_model directions.
    "pad": the F columns followed by d_model - F zero columns (rng unused).
    """
    _check_choice("embedding.mapping", mapping, MAPPINGS)
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ConfigError(f"features: expected a 2-D (n_numbers, F) array, got shape {features.shape}")
    if isinstance(d_model, bool) or not isinstance(d_model, (int, np.integer)) or d_model < 1:
        raise ConfigError(f"model.d_model: must be a positive integer, got {d_model!r}")
    n, f = features.shape
    if f > d_model:
        raise ConfigError(f"embedding.periods: {f} feature columns do not fit in model.d_model = {d_model}; "
                          f"use fewer periods or a wider model")
    if mapping == "pad":
        out = np.zeros((n, d_model), dtype=np.float64)
        out[:, :f] = features
        return out
    if rng is None:
        raise ConfigError("rng: embedding.mapping = 'orthonormal' needs a numpy.random.Generator")
    return features @ orthonormal_rows(f, int(d_model), rng)


def scale_like_init(E: np.ndarray, std: float = GPT2_INIT_STD) -> np.ndarray:
    """E (N, D) -> E scaled so that sqrt(mean(E**2)) == std (the RMS of a normal(0, std) init)."""
    if isinstance(std, bool) or not isinstance(std, Real) or not (math.isfinite(std) and std > 0):
        raise ConfigError(f"embedding.std: must be a finite number > 0, got {std!r}")
    E = np.asarray(E, dtype=np.float64)
    if E.size == 0:
        raise ConfigError(f"scale_like_init: empty array of shape {E.shape}")
    rms = float(np.sqrt(np.mean(E * E)))
    if not math.isfinite(rms) or rms == 0.0:
        raise ConfigError(f"scale_like_init: cannot rescale an array whose RMS is {rms}")
    return E * (float(std) / rms)


def fourier_embedding(n_numbers: int, d_model: int, rng: np.random.Generator | None,
                      periods=DEFAULT_PERIODS, low: str = "linear", mapping: str = "orthonormal",
                      std: float = GPT2_INIT_STD) -> np.ndarray:
    """The number rows of a Fourier embedding -> (n_numbers, d_model) float64.

    fourier_features -> map_to_width -> scale_like_init. Deterministic given the generator's
    state; with mapping "pad" the generator is not used (and may be None).
    """
    X = fourier_features(n_numbers, periods, low)
    return scale_like_init(map_to_width(X, d_model, mapping, rng), std)
