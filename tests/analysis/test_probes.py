"""Linear probes for n mod T."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fourier_toy.errors import ConfigError, DataError
from fourier_toy.analysis.probes import cohen_kappa, probe_mod
from fourier_toy.testing import circle_features


@settings(max_examples=15, deadline=None)
@given(T=st.integers(2, 10), N=st.integers(200, 600), seed=st.integers(0, 2**32 - 1))
def test_probe_reads_residue_from_circle_features(T, N, seed):
    # Over 400 random draws of this setup the lowest kappa was 0.97 (T = 10, N = 200); with
    # T = 11-12 and ~17 training numbers per residue it drops to ~0.84, so T stops at 10.
    n = np.arange(N)
    X = circle_features(n, T, np.random.default_rng(seed))
    res = probe_mod(X, n, T, np.random.default_rng(seed + 1))
    assert res.n_train + res.n_test == N
    assert res.kappa > 0.9
    assert res.accuracy > 0.9


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("T", [2, 5, 10])
def test_probe_on_gaussian_features_is_at_chance(seed, T):
    # 400 held-out numbers: the sampling sd of kappa is ~0.05, so 0.2 is a 4-sigma bound.
    N = 2000
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, 20))
    res = probe_mod(X, np.arange(N), T, rng)
    assert abs(res.kappa) < 0.2
    assert res.accuracy < res.chance + 0.15


def test_probe_is_deterministic_for_a_seed():
    n = np.arange(300)
    X = circle_features(n, 7, np.random.default_rng(0), noise=1.0)
    a = probe_mod(X, n, 7, np.random.default_rng(42))
    b = probe_mod(X, n, 7, np.random.default_rng(42))
    c = probe_mod(X, n, 7, np.random.default_rng(43))
    assert a == b
    assert (a.accuracy, a.kappa) != (c.accuracy, c.kappa)  # another split, another score


def test_chance_is_held_out_majority_and_labels_are_residues():
    # Labels n with n mod 3: feature = the residue itself one-hot, so the probe is perfect.
    n = np.arange(0, 90)
    X = np.eye(3)[n % 3]
    res = probe_mod(X, n + 300, 3, np.random.default_rng(0))  # offsets by a multiple of 3 change nothing
    assert res.accuracy == 1.0 and res.kappa == pytest.approx(1.0)
    assert 1 / 3 <= res.chance < 1.0
    # one residue only: the majority baseline is perfect and kappa is undefined
    even = 2 * np.arange(100)
    res = probe_mod(np.random.default_rng(1).normal(size=(100, 3)), even, 2, np.random.default_rng(0))
    assert res.chance == 1.0 and res.accuracy == 1.0 and np.isnan(res.kappa)


def test_cohen_kappa_by_hand():
    labels = np.array([0, 0, 1, 1])
    assert cohen_kappa(labels, np.array([0, 1, 1, 1]), 2) == pytest.approx(0.5)
    assert cohen_kappa(labels, labels, 2) == pytest.approx(1.0)
    assert cohen_kappa(labels, np.array([1, 1, 1, 1]), 2) == pytest.approx(0.0)
    assert cohen_kappa(labels, np.array([1, 1, 0, 0]), 2) == pytest.approx(-1.0)


def test_probe_validates_inputs():
    n = np.arange(20)
    X = np.ones((20, 3))
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="T"):
        probe_mod(X, n, 1, rng)
    with pytest.raises(DataError, match="labels_n"):
        probe_mod(X, n[:10], 2, rng)
    with pytest.raises(DataError, match="labels_n"):
        probe_mod(X, n.astype(float), 2, rng)
    with pytest.raises(DataError, match="X"):
        probe_mod(np.ones(20), n, 2, rng)
    with pytest.raises(ConfigError, match="train_frac"):
        probe_mod(X, n, 2, rng, train_frac=1.0)
    with pytest.raises(ConfigError, match="train_frac"):
        probe_mod(X, n, 2, rng, train_frac="0.8")
    with pytest.raises(ConfigError, match="C"):
        probe_mod(X, n, 2, rng, C=0)
    with pytest.raises(ConfigError, match="rng"):
        probe_mod(X, n, 2, 0)
