"""Fourier number embeddings: exact spectra, the low component, scaling, determinism, validation."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fourier_toy.embeddings.fourier_rows import (
    feature_names,
    fourier_embedding,
    fourier_features,
    map_to_width,
    orthonormal_rows,
    scale_like_init,
)
from fourier_toy.errors import ConfigError, FourierToyError

# Every period here divides 20, so on N = 20 m points each one sits on the integer bin k = N / T.
PERIOD_POOL = (2.0, 2.5, 4.0, 5.0, 10.0, 20.0)


def _power_over_numbers(E):
    """(N, D) -> (N//2 + 1,) energy of each real-DFT bin along the number axis, summed over width."""
    return (np.abs(np.fft.rfft(E, axis=0)) ** 2).sum(axis=1)


@settings(max_examples=60, deadline=None)
@given(
    periods=st.lists(st.sampled_from(PERIOD_POOL), min_size=1, max_size=len(PERIOD_POOL), unique=True),
    m=st.integers(1, 12),
    extra_width=st.integers(0, 40),
    mapping=st.sampled_from(["orthonormal", "pad"]),
    seed=st.integers(0, 2**32 - 1),
    std=st.floats(0.001, 1.0),
)
def test_spectrum_has_energy_exactly_at_the_chosen_periods(periods, m, extra_width, mapping, seed, std):
    N = 20 * m
    F = sum(1 if t == 2.0 else 2 for t in periods)
    d_model = F + extra_width
    E = fourier_embedding(N, d_model, np.random.default_rng(seed), periods=periods, low="none",
                          mapping=mapping, std=std)
    assert E.shape == (N, d_model) and E.dtype == np.float64
    power = _power_over_numbers(E)
    total = power.sum()

    # Each column has RMS 1 before mapping, the map keeps energy, and the final scale makes the
    # per-entry RMS std: c^2 = std^2 * d_model / F. An RMS-1 cos or sin of period T != 2 is
    # sqrt(2) cos(2 pi k n / N) with k = N / T: N^2 / 2 in rfft bin k, so a pair puts N^2 there;
    # the lone cos of period 2 is (-1)^n: N^2 in the Nyquist bin. Every period gets the same.
    c2 = std**2 * d_model / F
    expected = np.zeros_like(power)
    for t in periods:
        k = int(round(N / t))
        expected[k] += c2 * N**2
    np.testing.assert_allclose(power, expected, rtol=1e-9, atol=1e-12 * total)
    off = np.ones(power.shape, bool)
    off[[int(round(N / t)) for t in periods]] = False
    assert power[off].sum() <= 1e-20 * total


def test_spectrum_is_not_trivially_concentrated_without_the_right_periods():
    # The same check must fail for a period the embedding does not use.
    N = 40
    E = fourier_embedding(N, 16, np.random.default_rng(0), periods=(5.0,), low="none")
    power = _power_over_numbers(E)
    assert power[N // 5] > 0.99 * power.sum()
    assert power[N // 10] < 1e-20 * power.sum()


def test_linear_low_component_is_the_standardised_ramp():
    N = 37
    X = fourier_features(N, periods=(), low="linear")
    n = np.arange(N)
    ramp = (n - (N - 1) / 2) / np.sqrt((N**2 - 1) / 12)  # population std of 0..N-1
    np.testing.assert_allclose(X[:, 0], ramp, atol=1e-12)
    assert feature_names((), "linear") == ["linear"]


def test_lowfreq_low_component_is_half_a_turn():
    N = 30
    X = fourier_features(N, periods=(10.0,), low="lowfreq")
    n = np.arange(N)
    # sum cos^2(pi n / N) = sum sin^2(pi n / N) = N / 2, so RMS 1 means a factor sqrt(2).
    np.testing.assert_allclose(X[:, 2], np.sqrt(2) * np.cos(np.pi * n / N), atol=1e-12)
    np.testing.assert_allclose(X[:, 3], np.sqrt(2) * np.sin(np.pi * n / N), atol=1e-12)
    assert np.all(np.diff(X[:, 2]) < 0)  # monotone in n: a magnitude code
    assert feature_names((10.0,), "lowfreq") == ["cos T=10", "sin T=10", "cos T=2N", "sin T=2N"]


@pytest.mark.parametrize("low", ["linear", "lowfreq"])
def test_low_component_separates_numbers_that_periods_alone_confuse(low):
    N = 121
    periodic = fourier_features(N, (2, 2.5, 5, 10), low="none")
    assert np.allclose(periodic[3], periodic[13])  # every period divides 10
    X = fourier_features(N, (2, 2.5, 5, 10), low=low)
    d = np.linalg.norm(X[:, None, :] - X[None, :, :], axis=-1)
    assert d[~np.eye(N, dtype=bool)].min() > 1e-3


def test_columns_have_equal_rms_and_documented_order():
    N = 53  # not a multiple of any period: RMS still 1 per column
    X = fourier_features(N, (2, 2.5, 7), low="linear")
    assert feature_names((2, 2.5, 7), "linear") == ["cos T=2", "cos T=2.5", "sin T=2.5", "cos T=7",
                                                     "sin T=7", "linear"]
    assert X.shape == (N, 6)
    np.testing.assert_allclose(np.sqrt((X**2).mean(axis=0)), 1.0, rtol=1e-12)
    n = np.arange(N)
    cos7 = np.cos(2 * np.pi * n / 7)
    np.testing.assert_allclose(X[:, 3], cos7 / np.sqrt((cos7**2).mean()), atol=1e-12)


def test_orthonormal_map_preserves_inner_products_and_pad_keeps_columns():
    rng = np.random.default_rng(5)
    X = fourier_features(50, (2, 5, 10), low="linear")
    Y = map_to_width(X, 24, "orthonormal", rng)
    np.testing.assert_allclose(Y @ Y.T, X @ X.T, atol=1e-10)
    # and it really spreads over the width, unlike padding
    assert np.count_nonzero(np.abs(Y).max(axis=0) > 1e-8) == 24
    P = map_to_width(X, 24, "pad")
    np.testing.assert_array_equal(P[:, : X.shape[1]], X)
    assert not P[:, X.shape[1]:].any()
    Q = orthonormal_rows(6, 24, np.random.default_rng(1))
    np.testing.assert_allclose(Q @ Q.T, np.eye(6), atol=1e-12)


def test_scale_like_init_matches_gpt2_init_rms():
    E = fourier_embedding(61, 32, np.random.default_rng(0))
    assert np.sqrt(np.mean(E**2)) == pytest.approx(0.02, rel=1e-12)
    W = scale_like_init(np.arange(12.0).reshape(3, 4), std=0.5)
    assert np.sqrt(np.mean(W**2)) == pytest.approx(0.5, rel=1e-12)
    np.testing.assert_allclose(W / W[0, 1], np.arange(12.0).reshape(3, 4))  # shape unchanged


def test_determinism_per_seed():
    a = fourier_embedding(41, 32, np.random.default_rng(7))
    b = fourier_embedding(41, 32, np.random.default_rng(7))
    c = fourier_embedding(41, 32, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # padding draws nothing
    p1 = fourier_embedding(41, 32, np.random.default_rng(1), mapping="pad")
    p2 = fourier_embedding(41, 32, None, mapping="pad")
    np.testing.assert_array_equal(p1, p2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(periods=(1,)), r"embedding\.periods: each period must be > 1, got 1"),
        (dict(periods=(0.5, 10)), r"embedding\.periods: each period must be > 1"),
        (dict(periods=(10, 5, 10.0)), r"embedding\.periods: .*distinct.*10"),
        (dict(periods=(float("nan"),)), r"embedding\.periods: .*finite"),
        (dict(periods=(True,)), r"embedding\.periods"),
        (dict(periods="2,5"), r"embedding\.periods"),
        (dict(periods=(), low="none"), r"embedding\.periods: empty"),
        (dict(low="cubic"), r"embedding\.low: must be one of linear, lowfreq, none"),
        (dict(mapping="random"), r"embedding\.mapping: must be one of orthonormal, pad"),
        (dict(n_numbers=1), r"n_numbers: must be an integer >= 2"),
        (dict(n_numbers=20.0), r"n_numbers"),
        (dict(d_model=4, mapping="pad"), r"embedding\.periods: 8 feature columns .*model\.d_model = 4"),
        (dict(d_model=4), r"model\.d_model = 4"),
        (dict(d_model=0), r"model\.d_model"),
        (dict(std=0.0), r"embedding\.std"),
        (dict(rng=None), r"rng: .*orthonormal"),
        (dict(rng=np.random.RandomState(0)), r"rng: expected a numpy\.random\.Generator"),
    ],
)
def test_validation_errors(kwargs, match):
    args = dict(n_numbers=21, d_model=16, rng=np.random.default_rng(0), periods=(2, 2.5, 5, 10),
                low="linear", mapping="orthonormal", std=0.02)
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match) as info:
        fourier_embedding(**args)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, FourierToyError)


def test_scale_like_init_rejects_zero_matrix():
    with pytest.raises(ConfigError, match="RMS"):
        scale_like_init(np.zeros((3, 4)))
