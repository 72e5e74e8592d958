"""Fourier conventions: bases, spectra, bands, Phi_T and prominence outliers."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fourier_toy.analysis import fourier as fr
from fourier_toy.analysis import outliers as ol
from fourier_toy.errors import ConfigError, DataError

SETTINGS = settings(max_examples=25, deadline=None)


# --------------------------------------------------------------------------------- exact basis


@SETTINGS
@given(N=st.integers(1, 80))
def test_exact_basis_orthonormal_and_complete(N):
    F = fr.exact_basis(N).matrix
    assert F.shape == (N, N)
    np.testing.assert_allclose(F @ F.T, np.eye(N), atol=1e-12)  # orthonormal rows
    np.testing.assert_allclose(F.T @ F, np.eye(N), atol=1e-12)  # complete


@SETTINGS
@given(half=st.integers(1, 40))
def test_exact_basis_even_n_has_period_two_cos_and_no_nyquist_sin(half):
    N = 2 * half
    b = fr.exact_basis(N)
    n = np.arange(N)
    np.testing.assert_allclose(b.matrix[-1], (-1.0) ** n / math.sqrt(N), atol=1e-15)
    assert b.kinds[-1] == "cos" and b.periods[-1] == 2.0 and b.freqs[-1] == N // 2
    assert b.names[-1] == "cos T=2"
    nyquist_rows = b.rows_for_k(N // 2)
    assert list(nyquist_rows) == [N - 1]
    assert list(b.rows_for_period(2)) == [N - 1]


@SETTINGS
@given(N=st.integers(3, 41).map(lambda m: 2 * m - 1))
def test_exact_basis_odd_n_has_pairs_only(N):
    b = fr.exact_basis(N)
    assert b.n_freqs == (N - 1) // 2 + 1
    for k in range(1, b.n_freqs):
        assert sorted(b.kinds[b.rows_for_k(k)]) == ["cos", "sin"]


def test_exact_basis_rows_are_the_defined_waves():
    N = 20
    b = fr.exact_basis(N)
    n = np.arange(N)
    for k in (1, 2, 7, 9):
        np.testing.assert_allclose(b.matrix[2 * k - 1], np.sqrt(2 / N) * np.sin(2 * np.pi * k * n / N), atol=1e-13)
        np.testing.assert_allclose(b.matrix[2 * k], np.sqrt(2 / N) * np.cos(2 * np.pi * k * n / N), atol=1e-13)
    assert b.names[:5] == ("const", "sin T=20", "cos T=20", "sin T=10", "cos T=10")
    assert b.names[2 * 6] == "cos T=3.33"


@SETTINGS
@given(N=st.integers(2, 60), D=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_spectra_agree_with_numpy_fft(N, D, seed):
    """Independent check: merged energies and |DFT| amplitudes against np.fft.rfft."""
    W = np.random.default_rng(seed).normal(size=(N, D))
    X = np.fft.rfft(W, axis=0)
    k = np.arange(X.shape[0])
    paired = (k > 0) & (2 * k != N)
    energy_expected = np.where(paired[:, None], 2.0, 1.0) * np.abs(X) ** 2 / N
    spec = fr.frequency_magnitudes(W)
    np.testing.assert_allclose(spec.mags**2, energy_expected.sum(axis=1), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(spec.freqs, k)
    amp = fr.mean_dft_amplitude(W)
    Xc = np.fft.rfft(W - W.mean(axis=0), axis=0)
    np.testing.assert_allclose(amp, np.abs(Xc).mean(axis=1), rtol=1e-9, atol=1e-12)
    # spectrum is the per-row version of the same energies
    np.testing.assert_allclose(np.sum(fr.spectrum(W) ** 2), np.sum(W**2), rtol=1e-10)


# --------------------------------------------------------------------------------- paper basis


def test_paper_basis_521_quirk_and_periods():
    b = fr.paper_basis(521)
    F = b.matrix
    assert F.shape == (521, 521)
    # row 2k-1 is sin at k; the sin row at k = 260 is sin(pi x) = 0
    assert b.kinds[519] == "sin" and b.freqs[519] == 260
    assert np.all(F[519] == 0.0)
    G = F @ F.T
    off = np.abs(G - np.diag(np.diag(G)))
    assert 0.003 < off.max() < 0.005  # ~0.004, not orthonormal
    x = np.arange(521)
    np.testing.assert_allclose(F[0], np.full(521, math.sqrt(1 / 520)))
    np.testing.assert_allclose(F[2 * 52 - 1], math.sqrt(2 / 520) * np.sin(2 * np.pi * 52 * x / 520), atol=1e-13)
    np.testing.assert_allclose(F[2 * 52], math.sqrt(2 / 520) * np.cos(2 * np.pi * 52 * x / 520), atol=1e-13)
    for k, T in [(52, 10), (104, 5), (156, 520 / 156), (208, 2.5), (260, 2)]:
        rows = b.rows_for_k(k)
        np.testing.assert_allclose(b.periods[rows], T)
        assert b.k_for_period(T) == k
    assert b.names[2 * 52] == "cos T=10" and b.names[2 * 208 - 1] == "sin T=2.5"


def test_paper_basis_rejects_even_p_and_selector_validates():
    with pytest.raises(ConfigError, match="p"):
        fr.paper_basis(520)
    with pytest.raises(ConfigError, match="kind"):
        fr.number_axis(10, kind="dft")
    with pytest.raises(ConfigError, match="N"):
        fr.exact_basis(0)
    assert fr.number_axis(11).basis is fr.exact_basis(10)
    assert fr.number_axis(11, "paper").basis is fr.paper_basis(11)


def test_number_axis_rule_for_n_and_tau():
    axis = fr.number_axis(121)
    fb = axis.basis
    assert fb.kind == "exact" and fb.n == 120 and fb.k_for_period(10) == 12 and fb.k_for_period(2.5) == 48
    assert fr.number_axis(120).basis.n == 120  # an even count is already the analysed axis
    paper = fr.number_axis(121, "paper").basis
    assert paper.n == 121 and paper.denominator == 120
    with pytest.raises(ConfigError):
        fr.number_axis(120, "paper")
    with pytest.raises(ConfigError):
        fr.number_axis(121, "fft")
    with pytest.raises(DataError):
        fr.number_axis(2)
    # tau: default_tau(denominator) unless given; the info every result carries names all of it.
    assert axis.tau == fr.default_tau(120) == 12
    assert axis.info == {"basis": "exact", "N": 120, "denominator": 120, "tau": 12, "tau_period": 10.0}
    assert fr.number_axis(521, "paper").info == {"basis": "paper", "N": 521, "denominator": 520, "tau": 50,
                                                  "tau_period": 10.4}
    assert fr.number_axis(121, tau=np.int64(7)).tau == 7 and type(fr.number_axis(121, tau=7).tau) is int
    for bad in (0, 2.5, True, "12"):
        with pytest.raises(ConfigError, match="tau"):
            fr.number_axis(121, tau=bad)


def test_nearest_component_and_missing_period():
    assert fr.nearest_component(520, 10) == (52, 10.0)
    k, T = fr.nearest_component(521, 10)
    assert k == 52 and T == pytest.approx(521 / 52)
    with pytest.raises(ConfigError, match="period"):
        fr.exact_basis(521).k_for_period(10)


# --------------------------------------------------------------------------------- spectra


@SETTINGS
@given(
    m=st.integers(1, 8),
    T=st.sampled_from([2, 2.5, 3, 4, 5, 10, 7.5, 60]),
    phase=st.floats(0, 2 * np.pi),
    amp=st.floats(0.1, 10),
)
def test_pure_cosine_gives_one_spike_at_its_period(m, T, phase, amp):
    N = 60 * m  # N / T is an integer for every T above
    n = np.arange(N)
    w = amp * np.cos(2 * np.pi * n / T + phase)
    k0 = int(round(N / T))
    if 2 * k0 == N:  # period 2: only the cos part survives, amplitude amp*|cos(phase)|
        expected = amp * abs(math.cos(phase)) * math.sqrt(N)
    else:
        expected = amp * math.sqrt(N / 2)
    spec = fr.frequency_magnitudes(w)
    assert spec.periods[k0] == pytest.approx(T)
    np.testing.assert_allclose(spec.mags[k0], expected, rtol=1e-9, atol=1e-9)
    others = np.delete(spec.mags, k0)
    assert np.all(others < 1e-9 * amp * math.sqrt(N))


@SETTINGS
@given(N=st.integers(3, 60), D=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_spectrum_invariant_to_constant_offset(N, D, seed):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(N, D))
    c = rng.normal(size=D) * 5
    s0, s1 = fr.spectrum(W), fr.spectrum(W + c)
    np.testing.assert_allclose(s1[1:], s0[1:], atol=1e-10)
    assert not np.isclose(s1[0], s0[0])  # the offset lands in the constant row only


def test_paper_basis_offset_leaks_unless_mean_subtracted():
    rng = np.random.default_rng(0)
    b = fr.paper_basis(101)
    W = rng.normal(size=(101, 3))
    c = np.array([3.0, -2.0, 5.0])
    leaked = np.abs(fr.spectrum(W + c, b)[1:] - fr.spectrum(W, b)[1:]).max()
    assert leaked > 1e-3  # the extra 101st point makes sum(cos) = 1, not 0
    np.testing.assert_allclose(
        fr.spectrum(W + c, b, subtract_mean=True), fr.spectrum(W, b, subtract_mean=True), atol=1e-10
    )


def test_bad_inputs_raise_project_errors():
    with pytest.raises(DataError, match="W"):
        fr.spectrum(np.zeros((4, 2)), fr.exact_basis(5))
    with pytest.raises(DataError, match="NaN"):
        fr.spectrum(np.array([1.0, np.nan, 2.0]))
    with pytest.raises(DataError, match="W"):
        fr.spectrum(np.zeros((2, 2, 2)))
    with pytest.raises(ConfigError, match="T"):
        fr.phi_T(np.ones(10), 1)
    with pytest.raises(ConfigError, match="tau"):
        fr.band_masks(10, tau=0)
    with pytest.raises(ConfigError, match="alpha"):
        ol.find_outliers(np.ones((20, 2)), alpha=0)
    with pytest.raises(ConfigError, match="n_permutations"):  # 1 / (49 + 1) > 0.01: alpha unreachable
        ol.find_outliers(np.ones((20, 2)), alpha=0.01, n_permutations=49)


# --------------------------------------------------------------------------------- bands


@SETTINGS
@given(N=st.integers(2, 300), data=st.data())
def test_band_masks_partition_non_constant_rows(N, data):
    tau = data.draw(st.none() | st.integers(1, N // 2 + 2))
    b = fr.exact_basis(N)
    low, high = fr.band_masks(b, tau)
    assert not np.any(low & high)
    const = b.kinds == "const"
    assert not low[const].any() and not high[const].any()
    np.testing.assert_array_equal(low | high, ~const)
    if tau is None:  # default tau keeps the period threshold at 520/50 = 10.4
        assert np.all(b.periods[high] <= 10.4) and np.all(b.periods[low] > 10.4)


def test_default_tau_matches_paper_and_scales():
    assert fr.default_tau(520) == 50
    assert fr.default_tau(120) == 12  # 120/12 = 10 is high, 120/11 = 10.9 low
    low, high = fr.band_masks(fr.paper_basis(521))
    assert high[fr.paper_basis(521).rows_for_k(50)].all() and low[fr.paper_basis(521).rows_for_k(49)].all()


def test_band_energy_fractions_of_known_mixture():
    N = 120
    n = np.arange(N)
    low_wave = 3.0 * np.cos(2 * np.pi * n / 40)  # k = 3
    high_wave = 1.0 * np.sin(2 * np.pi * n / 5)  # k = 24
    W = np.stack([low_wave + high_wave + 7.0, 2 * low_wave], axis=1)
    fr_ = fr.band_energy_fractions(W)
    e_low = (9 + 4 * 9) * N / 2
    e_high = 1 * N / 2
    assert fr_.low == pytest.approx(e_low / (e_low + e_high))
    assert fr_.high == pytest.approx(e_high / (e_low + e_high))
    assert all(math.isnan(v) for v in fr.band_energy_fractions(np.ones((N, 2))))


# --------------------------------------------------------------------------------- Phi_T


@SETTINGS
@given(T=st.integers(2, 12), reps=st.integers(2, 10), D=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_phi_T_of_period_T_signal_is_all_its_energy(T, reps, D, seed):
    rng = np.random.default_rng(seed)
    W = np.tile(rng.normal(size=(T, D)), (reps, 1))  # any function of n mod T
    N = T * reps
    non_const = np.sum(fr.spectrum(W)[1:] ** 2)
    assert fr.phi_T(W, T) == pytest.approx(non_const, rel=1e-9, abs=1e-12)
    # Tr(S_B) = Phi_T / N against the direct between-class scatter
    Wc = W + rng.normal(size=(N, D))
    mu = Wc.mean(axis=0)
    labels = np.arange(N) % T
    tr = sum(np.sum(labels == c) * np.sum((Wc[labels == c].mean(axis=0) - mu) ** 2) for c in range(T)) / N
    assert fr.trace_between_class_scatter(Wc, T) == pytest.approx(tr, rel=1e-9)


@SETTINGS
@given(m=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_phi_10_of_period_7_signal_is_zero(m, seed):
    N = 70 * m
    rng = np.random.default_rng(seed)
    W = np.tile(rng.normal(size=(7, 3)), (N // 7, 1))
    total = np.sum(fr.spectrum(W)[1:] ** 2)
    assert fr.phi_T(W, 10) < 1e-20 * N + 1e-12 * total
    assert fr.phi_T(W, 7) == pytest.approx(total, rel=1e-9)


def test_harmonic_freqs_fold_and_round():
    np.testing.assert_array_equal(fr.harmonic_freqs(520, 10), [52, 104, 156, 208, 260])
    np.testing.assert_array_equal(fr.harmonic_freqs(520, 2), [260])
    # 521 / 10 = 52.1: nearest integer harmonics
    np.testing.assert_array_equal(fr.harmonic_freqs(521, 10), [52, 104, 156, 208, 260])


# --------------------------------------------------------------------------------- prominence


def test_prominence_by_hand():
    mags = np.ones(40)
    mags[20] = 3.0
    mags[12] = 100.0  # outside 20 +- 2..8, so it must not matter
    assert ol.prominence(mags, 20) == pytest.approx(3.0)
    mags = np.arange(1.0, 21.0)  # mags[k] = k + 1
    # k = 19 (last): neighbours 11..17 (the high side is clipped): median 15
    assert ol.prominence(mags, 19) == pytest.approx(20.0 / 15.0)
    # Below k = 9 the window shrinks symmetrically instead of being cut at DC:
    # k = 2 -> bins 1, 3; k = 3 -> 1, 5; k = 4 -> 1, 2, 6, 7; k = 9 -> the full 1..7, 11..17.
    assert list(ol._neighbours(2, 20, 2, 8)) == [1, 3]
    assert list(ol._neighbours(3, 20, 2, 8)) == [1, 5]
    assert sorted(ol._neighbours(4, 20, 2, 8)) == [1, 2, 6, 7]
    assert sorted(ol._neighbours(9, 20, 2, 8)) == [1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14, 15, 16, 17]
    assert ol.prominence(mags, 2) == pytest.approx(3.0 / 3.0)  # median of 2 and 4
    assert ol.prominence(mags, 4) == pytest.approx(5.0 / 5.0)  # median of 2, 3, 7, 8
    # On a smooth decreasing (convex) trend a symmetric window never makes a low bin a peak.
    trend = np.r_[0.0, 1.0 / np.arange(1, 40)]
    assert all(ol.prominence(trend, k) < 1.0 for k in range(2, 30))
    with pytest.raises(ConfigError, match="k"):
        ol.prominence(mags, 0)
    with pytest.raises(ConfigError, match="neighbourhood"):
        ol.prominence(mags, 1)  # only DC below it


def _trend_spike_noise(N, D, k0, rng, ratio=4.0, noise=0.2):
    """Rows with a 1/k magnitude trend (random phases), white noise and a spike at k0.

    In |DFT| units the trend bin is 1/k and the noise bin averages noise * sqrt(pi) / 2; the spike
    bin is ``ratio`` times their sum.
    """
    K = N // 2 + 1
    k = np.arange(K)
    amp = np.zeros(K)
    amp[1:] = 1.0 / k[1:]
    C = amp[:, None] * np.exp(1j * rng.uniform(0, 2 * np.pi, (K, D)))
    if N % 2 == 0:
        C[-1] = C[-1].real
    trend = np.fft.irfft(C, n=N, axis=0)
    white = rng.normal(0, noise / np.sqrt(N), (N, D))
    target = ratio * (1.0 / k0 + noise * np.sqrt(np.pi) / 2)
    n = np.arange(N)[:, None]
    if 2 * k0 == N:
        spike = target / N * np.cos(np.pi * n) * np.ones(D)
    else:
        spike = 2 * target / N * np.cos(2 * np.pi * k0 * n / N + rng.uniform(0, 2 * np.pi, D))
    return trend + white + spike


@settings(max_examples=25, deadline=None, derandomize=True)
@given(m=st.integers(2, 60), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_find_outliers_finds_planted_spike_not_in_permuted_rows(m, data, seed):
    # Every scanned bin, from k = 2 up: the 1/k trend is largest exactly where the windows shrink.
    # Assertions are about the planted bin only: any other bin of the permuted rows may be a chance
    # outlier at the family-wise rate (tests/analysis/test_outlier_null.py counts those).
    N = 10 * m
    k0 = data.draw(st.integers(2, N // 2))
    rng = np.random.default_rng(seed)
    W = _trend_spike_noise(N, 32, k0, rng)
    found = ol.find_outliers(W)
    assert found[0].k == k0 and found[0].period == pytest.approx(N / k0)
    assert k0 not in [o.k for o in ol.find_outliers(W[rng.permutation(N)])]


def test_find_outliers_does_not_flag_the_low_k_trend():
    rng = np.random.default_rng(1)
    W = _trend_spike_noise(300, 32, 60, rng, noise=0.01)
    scan = ol.outlier_scan(W)
    assert scan.ks[0] == 2 and [o.k for o in scan.outliers] == [60]
    # the trend's bins are scanned, and their symmetric windows keep them below their neighbours
    assert np.all(scan.prominence[scan.ks < 9] < 1.0)
