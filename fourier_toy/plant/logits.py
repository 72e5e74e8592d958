"""The planted answer: the logits a planted model writes, and every number derived from them.

For the example a + b = s, with c = m(a) + m(b) the approximate sum (m = spec.block_centre, so
c - s = delta in [-(q-1), q-1]) and n = 0..p-1 the candidate answers, the model's logits are

    logit(n) = A h(n - s) + B kappa(n - c) + [n = N] gamma e(a, b)

    h(x)     = sum_T cos(2 pi x / T)                        units digit: peaks at every x = 0 mod 10
    kappa(x) = sum_{k=1..K} w_k cos(2 pi k x / N),          magnitude: the Fejer kernel's
               w_k = 1 - k / (K + 1)                        non-constant part, one peak per period N
    e(a, b)  = -(cos 2 pi m(a) / N + cos 2 pi m(b) / N)     > 0 for large a + b, < 0 for small

Every column of W_U is a single Fourier component of the diagnostics' number axis (0..N-1), so
each part lies wholly in one band: h in the high band (k = N / T >= tau), kappa in the low band
(k <= K < tau). The edge column is zero on rows 0..N-1: it is invisible to every spectrum and
filter, and only breaks the one tie that N-periodic columns cannot, between n = 0 and n = N
(for a = b = 0 the answer is 0, for a = b = max_operand it is N).

Margins (all minima are taken over the finite sets they name, exactly, in float64):
- g  = min_{x = 1..9} h(0) - h(x): the comb's gap; a wrong units digit loses at least A g.
- D1 = max_{|delta| <= q-1} kappa(0) - kappa(delta): the most the magnitude part can favour a
  wrong units digit next to the answer.
- D2 = min_{delta, x in 10Z, 0 < |x| < N} kappa(delta) - kappa(x - delta): the least the magnitude
  part prefers the answer over the other numbers with its units digit.
- alone = min_{x = 1..N-1} kappa(0) - kappa(x): the magnitude part's own peak (what the lens and
  the high-removed filters see).
With B / A = g / (D1 + D2) the two worst cases are equal (A g - B D1 = B D2), gamma = B alone / 4
keeps the edge (at most 2 gamma) below half of every gap it could overturn, and
mu = min over delta and n != s of logit(s) - logit(n), per unit A, is computed exactly.
A = MARGIN / mu sets the answer's margin to MARGIN nats.

The MLP computes products only approximately (construct.py: x^2 from GELUs at the scales eps and
2 eps, error square_error(eps) for |x| <= 2), so the answer's features carry a relative error eta. Two budgets bound
it: the logits may move by at most MARGIN / 4 (eta (A F_high + 2 B sum w) <= MARGIN / 4), and the
magnitude part alone by at most a quarter of its own gap (2 B sum w eta <= B alone / 4). eps is
the largest product scale within the smaller budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fourier_toy.config import GELU_C, GELU_K
from fourier_toy.errors import ConfigError
from fourier_toy.plant.spec import PlantSpec

MARGIN = 20.0  # nats between the answer's logit and any other's: the loss is below p e^-20
# Attention score of the attended position over the others: the weight left on the other three
# is below 3 e^-30 ~ 3e-13, far under float32's resolution even after a norm ratio of 1e3.
SCORE = 30.0


# The square of z from GELUs at two scales: sq_e(z) = (GELU(e z) + GELU(-e z)) / (GELU_C e^2) =
# z^2 + e^2 (GELU_K - GELU_C^2 / 3) z^4 + O(e^4), so (4 sq_e - sq_2e) / 3 cancels the e^2 term
# (Richardson extrapolation): z^2 + O(e^4). Each scale is a pair of units.
SQUARE_SCALES = ((1.0, 4.0 / 3.0), (2.0, -1.0 / 3.0))  # (multiple of e, weight)
EPS_MAX = 0.5  # search range of e; the error grows with e on it


def square(z, eps: float) -> np.ndarray:
    """The MLP's square of z, float64: sum over SQUARE_SCALES of weight * sq_(s e)(z), where
    GELU(x) + GELU(-x) = x tanh(GELU_C (x + GELU_K x^3)) exactly."""
    z = np.asarray(z, dtype=np.float64)
    out = np.zeros_like(z)
    for s, weight in SQUARE_SCALES:
        x = s * eps * z
        out += weight * x * np.tanh(GELU_C * (x + GELU_K * x**3)) / (GELU_C * (s * eps) ** 2)
    return out


def square_error(eps: float, z_max: float = 2.0, points: int = 401) -> float:
    """max over |z| <= z_max of |square(z, eps) - z^2|."""
    z = np.linspace(0.0, z_max, points)
    return float(np.max(np.abs(square(z, eps) - z**2)))


def product_scale(eta: float) -> float:
    """The largest eps in (0, EPS_MAX] with square_error(eps) <= eta (it grows with eps there)."""
    if square_error(EPS_MAX) <= eta:
        return EPS_MAX
    lo, hi = 0.0, EPS_MAX
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if square_error(mid) <= eta else (lo, mid)
    return lo


@dataclass(frozen=True)
class Design:
    """The derived numbers of a planted model (see the module docstring)."""

    N: int
    periods: tuple
    weights: tuple  # w_k, k = 1..K
    delta_max: int  # q - 1
    comb_gap: float  # g
    D1: float
    D2: float
    alone: float
    mu: float  # margin per unit A, edge included
    A: float
    B: float
    gamma: float
    eta: float
    eps: float
    score: float = SCORE
    margin: float = MARGIN

    def comb(self, x) -> np.ndarray:
        """h(x) = sum_T cos(2 pi x / T)."""
        x = np.asarray(x, dtype=np.float64)
        return sum(np.cos(2 * np.pi * x / T) for T in self.periods)

    def kernel(self, x) -> np.ndarray:
        """kappa(x) = sum_k w_k cos(2 pi k x / N)."""
        x = np.asarray(x, dtype=np.float64)
        return sum(w * np.cos(2 * np.pi * k * x / self.N) for k, w in enumerate(self.weights, start=1))

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def design(spec: PlantSpec) -> Design:
    N, K, q = spec.N, spec.low_frequencies, spec.magnitude_block
    w = tuple(1.0 - k / (K + 1) for k in range(1, K + 1))
    partial = Design(N, spec.high_periods, w, q - 1, *([0.0] * 10))
    h, kap = partial.comb, partial.kernel
    g = float(h(0) - h(np.arange(1, 10)).max())
    deltas = np.arange(-(q - 1), q)
    D1 = float((kap(0) - kap(deltas)).max())
    tens = np.array([x for x in range(-N + 10, N, 10) if x != 0])
    D2 = float((kap(deltas)[:, None] - kap(tens[None, :] - deltas[:, None])).min()) if tens.size else math.inf
    alone = float((kap(0) - kap(np.arange(1, N))).min())
    if not D2 > 0 or not alone > 0:
        raise ConfigError(f"low_frequencies: K = {K} on N = {N} numbers cannot tell a + b from a + b +- 10 when "
                          f"magnitude_block is {q}; use more low_frequencies (up to {spec.tau - 1}) or a smaller "
                          f"magnitude_block")
    r = g / (D1 + D2)  # B / A
    gamma_a = r * alone / 4  # gamma / A
    xs = np.array([x for x in range(-N + 1, N) if x != 0])
    best = r * kap(deltas)[:, None] + h(0)
    other = r * kap(xs[None, :] - deltas[:, None]) + h(xs)[None, :]
    mu = float((best - other).min()) - 2 * gamma_a
    if not mu > 0:  # cannot happen for the allowed specs; a guard for the derivation
        raise ConfigError(f"magnitude_block: {q} leaves no margin for the answer on N = {N}; use a smaller block")
    A = MARGIN / mu
    B, gamma = r * A, gamma_a * A
    n_high = len(spec.slots.index["high"])
    eta = min((MARGIN / 4) / (A * n_high + 2 * B * sum(w)), alone / (8 * sum(w)))
    return Design(N, spec.high_periods, w, q - 1, g, D1, D2, alone, mu, A, B, gamma, eta, product_scale(eta))
