"""Fourier conventions: the one place that builds bases, spectra and bands.

A basis is an N x N matrix F whose rows are components over the number axis n = 0..N-1
(row 0 constant; row 2k-1 = sin, row 2k = cos at frequency k). Every component is named by
its period T, so a result reads "period 10" rather than "row 104".

Two bases:
- ``exact_basis(N)`` (the project default): the orthonormal real DFT on N points,
  w_k = 2 pi k / N, T = N / k; for even N the last row is the period-2 (Nyquist) cosine
  (-1)^n / sqrt(N). There is no Nyquist sine (it would be identically zero). Orthonormal and
  complete for every N >= 1.
- ``paper_basis(p)``: Definition A.3 of Zhou et al. on p points with denominator p - 1,
  quirk included (for p = 521 the Gram matrix is off the identity by up to ~0.004 and the
  sin row k = 260 is all zeros). Kept for side-by-side comparison with the paper.

Choosing N. Every analysis of the p number rows (number tokens, rows of an embedding or of W_U)
gets its basis from ``number_axis(p, kind, tau)``, the one selector. Periods fall on integer k only
when N / T is an integer, so N divisible by 10 puts periods 2, 2.5, 5 and 10 exactly on
components. With p = 2 * max_operand + 1 the number vocabulary is odd (p = 521 in the paper): the
exact basis on all p rows would be valid, but period 10 would then live between two components
(k = 52 has period 10.02, see ``nearest_component``). So:
- kind "exact" uses the exact basis on the first p - 1 rows (what the real-embedding check in
  shared/data does: rows 0..519, N = 520), so that T = 10 is exactly k = 52;
- kind "paper" uses ``paper_basis(p)``, whose denominator p - 1 puts the periods on integer k at
  the cost of exact orthonormality.
Both then have denominator p - 1, and presets choose p - 1 divisible by 10, so the two agree on
where the spikes are.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from fourier_toy.config import basis_bytes, check_memory
from fourier_toy.errors import ConfigError, DataError

# The periods of GPT-2's Fourier features (PAPER.md section 4): every analysis that looks for them
# reads them here (experiments/paper.py quotes the paper's statement of them).
KEY_PERIODS = (2.0, 2.5, 5.0, 10.0)

__all__ = [
    "KEY_PERIODS",
    "FourierBasis",
    "exact_basis",
    "paper_basis",
    "NumberAxis",
    "number_axis",
    "nearest_component",
    "format_period",
    "spectrum",
    "FrequencySpectrum",
    "frequency_magnitudes",
    "mean_dft_amplitude",
    "default_tau",
    "BandMasks",
    "band_masks",
    "BandFractions",
    "band_energy_fractions",
    "harmonic_freqs",
    "phi_T",
    "trace_between_class_scatter",
    "PAPER_TAU",
    "PAPER_DENOMINATOR",
]

# The paper's band threshold: tau = 50 on denominator 520, i.e. a period threshold of 10.4.
PAPER_TAU = 50
PAPER_DENOMINATOR = 520


@dataclass(frozen=True, eq=False)
class FourierBasis:
    """A named real Fourier basis over N points.

    Fields (all read-only arrays of length N unless noted):
    - ``matrix``: (N, N) float64, rows are components; ``matrix @ W`` projects W (N, D).
    - ``freqs``: int, frequency k of each row (0 for the constant row).
    - ``periods``: float, period T = denominator / k (inf for the constant row).
    - ``kinds``: 'const' | 'cos' | 'sin'.
    - ``names``: display names such as "const", "cos T=10", "sin T=2.5".
    - ``scale``: the coefficient multiplying the unit cos/sin wave in each row, so
      ``matrix[r] / scale[r]`` is the plain wave (used to express projections as |DFT| bins).
    - ``kind``: 'exact' | 'paper'.
    - ``denominator``: int, the N in w_k = 2 pi k / N (N for exact, p - 1 for paper).
    """

    matrix: np.ndarray
    freqs: np.ndarray
    periods: np.ndarray
    kinds: np.ndarray
    names: tuple[str, ...]
    scale: np.ndarray
    kind: str
    denominator: int

    @property
    def n(self) -> int:
        """Number of points (rows of the analysed arrays)."""
        return self.matrix.shape[0]

    @property
    def n_freqs(self) -> int:
        """Number of distinct frequencies k = 0..n_freqs-1 (floor(denominator / 2) + 1)."""
        return int(self.freqs.max()) + 1

    @property
    def frequency_periods(self) -> np.ndarray:
        """(n_freqs,) period of each frequency k (inf at k = 0)."""
        k = np.arange(self.n_freqs, dtype=np.float64)
        with np.errstate(divide="ignore"):
            return self.denominator / k

    def rows_for_k(self, k: int) -> np.ndarray:
        """Row indices (1 or 2: sin and/or cos) of frequency k."""
        rows = np.flatnonzero(self.freqs == k)
        if rows.size == 0:
            raise ConfigError(f"k: must be an integer in 0..{self.n_freqs - 1}, got {k}")
        return rows

    def k_for_period(self, period: float) -> int:
        """The frequency k whose period equals ``period`` exactly (relative tolerance 1e-9)."""
        hits = np.flatnonzero(np.isclose(self.frequency_periods, period, rtol=1e-9, atol=0.0))
        if hits.size == 0:
            k, actual = nearest_component(self.denominator, period)
            raise ConfigError(
                f"period: {period} is not a component of this basis (denominator "
                f"{self.denominator}); nearest is k={k} with period {actual:.4g}"
            )
        return int(hits[0])

    def rows_for_period(self, period: float) -> np.ndarray:
        """Row indices of the component(s) with exactly this period."""
        return self.rows_for_k(self.k_for_period(period))


def format_period(period: float) -> str:
    """Compact period text: "10", "2.5", "3.33", "inf"."""
    if not math.isfinite(period):
        return "inf"
    if abs(period - round(period)) < 1e-9:
        return str(int(round(period)))
    return f"{period:.2f}".rstrip("0").rstrip(".")


def _as_int(value, name: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name}: must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name}: must be an integer >= {minimum}, got {value}")
    return int(value)


def _make_basis(rows, scale, freqs, kinds, kind: str, denominator: int) -> FourierBasis:
    matrix = np.ascontiguousarray(rows, dtype=np.float64)
    freqs = np.asarray(freqs, dtype=np.int64)
    with np.errstate(divide="ignore"):
        periods = np.where(freqs == 0, np.inf, denominator / np.maximum(freqs, 1))
    kinds = np.asarray(kinds)
    scale = np.asarray(scale, dtype=np.float64)
    names = tuple(
        "const" if kd == "const" else f"{kd} T={format_period(t)}" for kd, t in zip(kinds, periods)
    )
    for arr in (matrix, freqs, periods, kinds, scale):
        arr.setflags(write=False)
    return FourierBasis(matrix, freqs, periods, kinds, names, scale, kind, denominator)


def _trig_rows(n_points: int, denominator: int, k_max: int):
    """sin/cos waves of frequency k = 1..k_max on n_points, with angles reduced mod 2 pi exactly."""
    n = np.arange(n_points, dtype=np.int64)
    k = np.arange(1, k_max + 1, dtype=np.int64)
    # (k * n) mod denominator in integers keeps the angle exact for large k * n.
    r = (k[:, None] * n[None, :]) % denominator
    angle = 2.0 * np.pi * r / denominator
    # Zeros of sin (angle 0 or pi) and cos (pi/2, 3pi/2) are set exactly, so e.g. the paper's
    # sin row at k = (p-1)/2 is exactly zero rather than ~1e-16.
    sin = np.where((2 * r) % denominator == 0, 0.0, np.sin(angle))
    cos = np.where((4 * r) % (2 * denominator) == denominator, 0.0, np.cos(angle))
    return sin, cos


@functools.lru_cache(maxsize=32)
def exact_basis(N: int) -> FourierBasis:
    """Orthonormal real DFT basis on N >= 1 points, rows ordered const, (sin k, cos k)..., [Nyquist].

    For even N the last row is the period-2 cosine (-1)^n / sqrt(N); there is no Nyquist sine.
    """
    N = _as_int(N, "N", 1)
    check_memory(f"basis: N = {N}", basis_bytes(N), "analyse fewer number rows (the basis is N x N)", DataError)
    k_pairs = (N - 1) // 2
    sin, cos = _trig_rows(N, N, k_pairs)
    rows = np.empty((N, N))
    rows[0] = 1.0 / math.sqrt(N)
    rows[1 : 2 * k_pairs + 1 : 2] = math.sqrt(2.0 / N) * sin
    rows[2 : 2 * k_pairs + 2 : 2] = math.sqrt(2.0 / N) * cos
    freqs = [0] + [k for k in range(1, k_pairs + 1) for _ in (0, 1)]
    kinds = ["const"] + ["sin", "cos"] * k_pairs
    scale = [1.0 / math.sqrt(N)] + [math.sqrt(2.0 / N)] * (2 * k_pairs)
    if N % 2 == 0 and N >= 2:
        rows[N - 1] = np.where(np.arange(N) % 2 == 0, 1.0, -1.0) / math.sqrt(N)
        freqs.append(N // 2)
        kinds.append("cos")
        scale.append(1.0 / math.sqrt(N))
    return _make_basis(rows, scale, freqs, kinds, "exact", N)


@functools.lru_cache(maxsize=8)
def paper_basis(p: int) -> FourierBasis:
    """Definition A.3 on p points (odd p >= 3), denominator p - 1, quirk included.

    row 0 = sqrt(1/(p-1)); row 2k-1 = sqrt(2/(p-1)) sin(w_k x); row 2k = sqrt(2/(p-1)) cos(w_k x),
    w_k = 2 pi k / (p-1), k = 1..(p-1)/2. Not exactly orthonormal; the last sin row is zero.
    """
    p = _as_int(p, "p", 3)
    if p % 2 == 0:
        raise ConfigError(f"p: the paper basis needs an odd p >= 3, got {p}")
    check_memory(f"basis: p = {p}", basis_bytes(p), "analyse fewer number rows (the basis is p x p)", DataError)
    M = p - 1
    half = M // 2
    sin, cos = _trig_rows(p, M, half)
    rows = np.empty((p, p))
    rows[0] = math.sqrt(1.0 / M)
    rows[1::2] = math.sqrt(2.0 / M) * sin
    rows[2::2] = math.sqrt(2.0 / M) * cos
    freqs = [0] + [k for k in range(1, half + 1) for _ in (0, 1)]
    kinds = ["const"] + ["sin", "cos"] * half
    scale = [math.sqrt(1.0 / M)] + [math.sqrt(2.0 / M)] * (2 * half)
    return _make_basis(rows, scale, freqs, kinds, "paper", M)


class NumberAxis(NamedTuple):
    """The Fourier view of p number rows shared by every analysis (built by ``number_axis``)."""

    basis: FourierBasis  # N points; arrays are cut to their first N number rows
    tau: int  # band threshold: low band 1 <= k < tau, high band k >= tau

    @property
    def info(self) -> dict:
        """What every Fourier result carries: basis kind, N, denominator, tau and tau's period."""
        fb = self.basis
        return {"basis": fb.kind, "N": int(fb.n), "denominator": int(fb.denominator), "tau": self.tau,
                "tau_period": fb.denominator / self.tau}


def number_axis(p: int, kind: str = "exact", tau: int | None = None) -> NumberAxis:
    """The basis and band threshold for p number rows; every analysis selects its basis here.

    p counts the number rows: the number tokens of a task (p = 2 * max_operand + 1, always odd) or
    the rows of a matrix whose row i is the number i. An array W (p, D), or a logit vector (p,), is
    cut to its first N = ``basis.n`` rows and projected as ``basis.matrix @ W[:N]``, with
    ``basis.matrix`` (N, N) and frequencies k = 0..K-1, K = denominator // 2 + 1.

    Rule for N (and the denominator of w_k = 2 pi k / denominator):
    - kind "exact" (default): ``exact_basis(N)`` with N = p - 1 when p is odd (numbers 0..p-2;
      only the largest answer p - 1, reached by a single pair, is dropped) and N = p when p is
      even (a matrix that already stops at an even count); denominator N.
    - kind "paper": ``paper_basis(p)``, Definition A.3 on all N = p rows (p odd), denominator p - 1.
    For odd p both have denominator p - 1, so max_operand divisible by 5 puts periods 2, 2.5, 5
    and 10 on integer k in either.

    Rule for tau: None gives ``default_tau(denominator)`` = ceil(50 * denominator / 520), the
    paper's tau = 50 at 520 scaled so that the period threshold stays 10.4; otherwise an integer
    >= 1, used as given.

    Raises DataError when p < 3 and ConfigError for another kind, "paper" with an even p, or a
    tau that is not an integer >= 1.
    """
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, np.integer)) or p < 3:
        raise DataError(f"p: needs at least 3 number rows, got {p!r}")
    p = int(p)
    if kind == "exact":
        fb = exact_basis(p - 1 if p % 2 else p)
    elif kind == "paper":
        if p % 2 == 0:
            raise ConfigError(f"basis: 'paper' needs an odd number of rows (p = 2 * max_operand + 1), got {p}")
        fb = paper_basis(p)
    else:
        raise ConfigError(f"basis: kind must be 'exact' or 'paper', got {kind!r}")
    if tau is None:
        tau = default_tau(fb.denominator)
    elif isinstance(tau, (bool, np.bool_)) or not isinstance(tau, (int, np.integer)) or tau < 1:
        raise ConfigError(f"tau: must be an integer >= 1 (a frequency k), got {tau!r}")
    return NumberAxis(fb, int(tau))


def nearest_component(N: int, period: float) -> tuple[int, float]:
    """The frequency k in 1..N//2 whose period N / k is closest to ``period``, and that period."""
    N = _as_int(N, "N", 2)
    if not (isinstance(period, (int, float, np.integer, np.floating)) and period >= 2):
        raise ConfigError(f"period: must be a number >= 2, got {period!r}")
    k = np.arange(1, N // 2 + 1)
    best = int(k[np.argmin(np.abs(N / k - float(period)))])
    return best, N / best


# ---------------------------------------------------------------------------------------------
# Spectra


def _resolve(W, fb: FourierBasis | None, name: str = "W") -> tuple[np.ndarray, FourierBasis]:
    """W as float64 (N, D) (a vector becomes one column) and the basis to use."""
    try:
        arr = np.asarray(W, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name}: must be a numeric array of shape (N,) or (N, D)") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{name}: must have shape (N,) or (N, D) with N, D >= 1, got {np.shape(W)}")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{name}: contains NaN or inf")
    if fb is None:
        fb = exact_basis(arr.shape[0])
    elif not isinstance(fb, FourierBasis):
        raise ConfigError(f"basis: must be a FourierBasis, got {type(fb).__name__}")
    elif fb.n != arr.shape[0]:
        raise DataError(f"{name}: has {arr.shape[0]} rows but the basis has {fb.n} points")
    return arr, fb


def _project(W, fb, subtract_mean: bool) -> tuple[np.ndarray, FourierBasis]:
    arr, fb = _resolve(W, fb)
    if subtract_mean:
        arr = arr - arr.mean(axis=0, keepdims=True)
    return fb.matrix @ arr, fb


def spectrum(W, basis: FourierBasis | None = None, subtract_mean: bool = False) -> np.ndarray:
    """Per-component magnitudes ||F[r] @ W||_2 over dims, shape (N,).

    W is (N, D) (an embedding or W_U restricted to the number rows) or (N,) (a logit vector, for
    which this is |F @ w|). ``subtract_mean`` removes the mean over the N rows first; with the exact
    basis that only zeroes the constant component, with the paper basis it also removes the
    constant's leakage into the other rows.
    """
    proj, _ = _project(W, basis, subtract_mean)
    return np.sqrt(np.sum(proj**2, axis=1))


class FrequencySpectrum(NamedTuple):
    """One magnitude per frequency k = 0..K-1 (K = floor(denominator / 2) + 1)."""

    freqs: np.ndarray  # (K,) int
    periods: np.ndarray  # (K,) float, inf at k = 0
    mags: np.ndarray  # (K,) float


def frequency_magnitudes(
    W, basis: FourierBasis | None = None, subtract_mean: bool = False
) -> FrequencySpectrum:
    """Merge the cos and sin rows of each frequency: mags[k] = sqrt(sum of their squared norms)."""
    proj, fb = _project(W, basis, subtract_mean)
    energy = np.bincount(fb.freqs, weights=np.sum(proj**2, axis=1), minlength=fb.n_freqs)
    return FrequencySpectrum(np.arange(fb.n_freqs), fb.frequency_periods, np.sqrt(energy))


def mean_dft_amplitude(W, basis: FourierBasis | None = None, subtract_mean: bool = True) -> np.ndarray:
    """|DFT| of each column at k = 0..K-1, averaged over columns, shape (K,).

    This is the shared/data recipe (subtract the row mean, |DFT| along rows, mean over dims);
    with the exact basis it equals ``np.abs(np.fft.rfft(W - mean, axis=0)).mean(axis=1)``.
    The plain (unnormalized) DFT scale matters for the Nyquist bin: in it, white noise gives the
    period-2 bin about 0.9x its neighbours, whereas in the orthonormal scale a single real row
    against a cos/sin pair gives about 0.64x and would understate a period-2 spike.
    """
    proj, fb = _project(W, basis, subtract_mean)
    waves = proj / fb.scale[:, None]
    per_dim = np.zeros((fb.n_freqs, waves.shape[1]))
    np.add.at(per_dim, fb.freqs, waves**2)
    return np.sqrt(per_dim).mean(axis=1)


# ---------------------------------------------------------------------------------------------
# Bands and harmonic energy


def default_tau(denominator: int) -> int:
    """The paper's tau = 50 at denominator 520, scaled: ceil(50 * denominator / 520).

    Scaling keeps the period threshold fixed at 520 / 50 = 10.4, so "high" means periods <= ~10.4
    at every N; when 10 divides the denominator, period 10 is always high.
    """
    d = _as_int(denominator, "denominator", 1)
    return -(-PAPER_TAU * d // PAPER_DENOMINATOR)


class BandMasks(NamedTuple):
    """Boolean (N,) masks over basis rows; the constant row is in neither."""

    low: np.ndarray  # 1 <= k < tau
    high: np.ndarray  # k >= tau


def band_masks(basis_or_N, tau: int | None = None) -> BandMasks:
    """Low (1 <= k < tau) and high (k >= tau) rows of a basis (or of ``exact_basis(N)``)."""
    fb = basis_or_N if isinstance(basis_or_N, FourierBasis) else exact_basis(basis_or_N)
    tau = default_tau(fb.denominator) if tau is None else _as_int(tau, "tau", 1)
    return BandMasks((fb.freqs >= 1) & (fb.freqs < tau), fb.freqs >= tau)


class BandFractions(NamedTuple):
    low: float
    high: float


def band_energy_fractions(
    W, basis: FourierBasis | None = None, tau: int | None = None
) -> BandFractions:
    """Fractions of the non-constant energy sum((F @ W)^2) in the low and high bands.

    The two sum to 1. If W has no non-constant energy (beyond rounding) both are NaN: undefined.
    """
    proj, fb = _project(W, basis, subtract_mean=False)
    masks = band_masks(fb, tau)
    energy = np.sum(proj**2, axis=1)
    low, high = float(energy[masks.low].sum()), float(energy[masks.high].sum())
    total = low + high
    # A constant W leaves only rounding (~1e-32 relative) outside the constant row.
    if total <= 1e-20 * float(energy.sum()):
        return BandFractions(math.nan, math.nan)
    return BandFractions(low / total, high / total)


def harmonic_freqs(denominator: int, T: int) -> np.ndarray:
    """Distinct frequencies k of the harmonics l / T, l = 1..T-1, folded into 1..denominator // 2.

    Harmonic l sits at k = l * denominator / T. When that is not an integer the nearest integer k
    is used (so Phi_T then approximates the period-T energy). Harmonics l and T - l are complex
    conjugates and fold onto the same real frequency, whose cos and sin rows hold both.
    """
    d = _as_int(denominator, "denominator", 2)
    T = _as_int(T, "T", 2)
    ks = np.rint(np.arange(1, T) * d / T).astype(np.int64) % d
    ks = np.minimum(ks, d - ks)
    return np.unique(ks[ks > 0])


def phi_T(W, T: int, basis: FourierBasis | None = None, subtract_mean: bool = False) -> float:
    """Phi_T = sum_{l=1}^{T-1} ||F_{l/T} W||^2: the energy at the harmonics of period T.

    With the exact basis and T dividing N this is exactly the energy of the T-periodic part of W
    minus its mean (the projection onto functions of n mod T). Integer T >= 2 only.
    """
    proj, fb = _project(W, basis, subtract_mean)
    ks = harmonic_freqs(fb.denominator, T)
    rows = np.isin(fb.freqs, ks)
    return float(np.sum(proj[rows] ** 2))


def trace_between_class_scatter(W, T: int, basis: FourierBasis | None = None) -> float:
    """Tr(S_B) = Phi_T / N for classes n mod T, on W minus its row mean.

    S_B = (1/N) sum_c N_c (mu_c - mu)(mu_c - mu)^T. The identity is exact for the exact basis when
    T divides N; otherwise it is the nearest-k approximation of ``harmonic_freqs``.
    """
    arr, fb = _resolve(W, basis)
    return phi_T(arr, T, fb, subtract_mean=True) / fb.n
