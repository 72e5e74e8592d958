"""The digits-pre-trained number source: its task, its cache, its determinism and its spectrum."""

import dataclasses
import json

import numpy as np
import pytest

from fourier_toy.training import build
from fourier_toy import config
from fourier_toy.embeddings import fourier_rows as embeddings
from fourier_toy.training import toy_source as pretrain_toy
from fourier_toy.embeddings import pretrained
from fourier_toy.errors import ConfigError
from fourier_toy.training.toy_source import ToyConfig, cache_path, digit_dataset, pretrained_rows, toy_number_rows

QUICK_P = 121  # the quick preset's numbers


@pytest.fixture(scope="session")
def toy_cache(tmp_path_factory):
    """One cache directory for the whole session, so the toy is pre-trained once."""
    directory = tmp_path_factory.getbasetemp() / "toy_cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(pretrain_toy.CACHE_ENV, str(directory))
        yield directory


@pytest.fixture(autouse=True)
def _isolated_cache(toy_cache, monkeypatch):
    # Every test sees the session cache, never the user's ~/.cache.
    monkeypatch.setenv(pretrain_toy.CACHE_ENV, str(toy_cache))


@pytest.fixture(scope="session")
def quick_rows(toy_cache):
    rows, info = toy_number_rows(QUICK_P)
    print(f"toy pre-training N={info['pretrain_numbers']}: {info['steps']} steps, {info['seconds']} s, "
          f"digit accuracy {info['digit_accuracy']}")
    return rows, info


def small(**kw):
    """A toy config that trains in a fraction of a second (not a useful source)."""
    return ToyConfig(**{"n_numbers": 100, "d_model": 16, "n_heads": 2, "max_steps": 12, "eval_every": 6, **kw})


def prominence(rows, period, inner=2, outer=8):
    """|rfft| along the number axis (mean-subtracted, averaged over dims) at the period's bin,
    against the median of the bins k +- inner..outer."""
    X = rows - rows.mean(axis=0)
    mag = np.abs(np.fft.rfft(X, axis=0)).mean(axis=1)
    k = round(len(rows) / period)
    nb = [j for o in range(inner, outer + 1) for j in (k - o, k + o) if 1 <= j < len(mag)]
    return mag[k] / np.median(mag[nb])


# ---- the task -----------------------------------------------------------------------------------

@pytest.mark.parametrize("N", [100, 121, 1000])
def test_digit_dataset_spells_each_number(N):
    tokens, targets = digit_dataset(N)
    assert tokens.shape == (3 * N, 3) and targets.shape == (3 * N,)
    assert (tokens[:, 2] == N + 1).all()  # '=' of a vocabulary with N numbers
    for (n, k, _), t in zip(tokens, targets):
        assert k in (0, 1, 2)
        assert t == int(f"{n:03d}"[2 - k])  # units, tens, hundreds from the decimal string
    assert sorted(set(tokens[:, 0].tolist())) == list(range(N))


def test_toy_numbers_cover_the_task_and_at_least_0_to_99():
    assert [pretrain_toy.toy_numbers(p) for p in (3, 21, 100, 121, 521, 1000)] == [100, 100, 100, 121, 521, 1000]
    with pytest.raises(ConfigError, match=r"embedding\.source: 'toy'.*1001"):
        toy_number_rows(1001)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="n_numbers"):
            toy_number_rows(bad)
    with pytest.raises(ConfigError, match=r"toy\.n_numbers"):
        ToyConfig(n_numbers=50)
    with pytest.raises(ConfigError, match=r"toy\.d_model"):
        ToyConfig(d_model=30, n_heads=4)


def test_small_tasks_take_the_first_rows_of_one_source(monkeypatch):
    seen = []

    def fake(cfg, use_cache=True):
        seen.append(cfg)
        return np.arange(cfg.n_numbers * 4, dtype=np.float32).reshape(cfg.n_numbers, 4), {"key": cfg.key()}

    monkeypatch.setattr(pretrain_toy, "pretrained_rows", fake)
    r21, i21 = toy_number_rows(21)
    r61, i61 = toy_number_rows(61)
    assert seen[0] == seen[1] and seen[0].n_numbers == 100
    assert r21.dtype == np.float64 and r21.shape == (21, 4)
    np.testing.assert_array_equal(r21, r61[:21])
    assert r61[60, 0] == 240.0  # row i is the number i


# ---- determinism and the cache ------------------------------------------------------------------

def test_same_config_same_rows_and_seed_changes_them():
    a, ia = pretrained_rows(small(), use_cache=False)
    b, ib = pretrained_rows(small(), use_cache=False)
    np.testing.assert_array_equal(a, b)
    assert ia["rows_sha256"] == ib["rows_sha256"] and ia["steps"] == 12
    c, _ = pretrained_rows(small(seed=1), use_cache=False)
    assert not np.array_equal(a, c)


def test_cache_key_changes_with_every_field():
    base = small()
    keys = {base.key()}
    changed = {"n_numbers": 101, "seed": 1, "d_model": 32, "n_layers": 2, "n_heads": 4, "tied": False,
               "batch_size": 128, "lr": 1e-3, "betas": (0.9, 0.99), "weight_decay": 0.5, "grad_clip": 0.5,
               "max_steps": 13, "eval_every": 5, "backend": "numba"}
    assert set(changed) == {f.name for f in dataclasses.fields(ToyConfig)}
    for name, value in changed.items():
        keys.add(dataclasses.replace(base, **{name: value}).key())
    assert len(keys) == len(changed) + 1


def test_cache_hit_is_identical_and_does_not_train(quick_rows, monkeypatch, toy_cache):
    rows, info = quick_rows
    path = cache_path(ToyConfig(n_numbers=QUICK_P))
    assert path.parent == toy_cache and path.is_file()
    assert not [p for p in toy_cache.iterdir() if p.name.startswith(".")]  # no temporary files left

    def no_training(cfg):
        raise AssertionError("pre-trained again despite the cache")

    monkeypatch.setattr(pretrain_toy, "pretrain", no_training)
    again, info2 = toy_number_rows(QUICK_P)
    np.testing.assert_array_equal(again, rows)
    assert info2 == info and json.dumps(info2)  # JSON-able, for the run's config.json


def test_corrupt_or_foreign_cache_file_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv(pretrain_toy.CACHE_ENV, str(tmp_path / "c"))
    cfg = small()
    fresh, _ = pretrained_rows(cfg, use_cache=False)
    path = cache_path(cfg)
    path.parent.mkdir()
    path.write_bytes(b"not a safetensors file")
    rows, _ = pretrained_rows(cfg)
    np.testing.assert_array_equal(rows, fresh)
    assert pretrain_toy._read_cache(path, cfg) is not None  # rewritten, now valid
    # Another config's file under this config's name is not taken for it.
    other = small(seed=5)
    pretrained_rows(other)
    cache_path(other).replace(path)
    assert pretrain_toy._read_cache(path, cfg) is None
    np.testing.assert_array_equal(pretrained_rows(cfg)[0], fresh)


def test_unwritable_cache_still_gives_rows(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    monkeypatch.setenv(pretrain_toy.CACHE_ENV, str(blocker / "cache"))
    rows, info = pretrained_rows(small())
    assert rows.shape == (100, 16) and np.isfinite(rows).all() and info["source"] == "toy"


# ---- the real source ------------------------------------------------------------------------------

def test_toy_rows_learn_the_digits(quick_rows):
    rows, info = quick_rows
    assert rows.shape == (QUICK_P, 64) and rows.dtype == np.float64 and np.isfinite(rows).all()
    acc = info["digit_accuracy"]
    assert set(acc) == {"all", "units", "tens", "hundreds"}
    assert acc["all"] >= 0.99 and min(acc.values()) >= 0.98
    assert info["source"] == "toy" and info["pretrain_numbers"] == QUICK_P


def test_toy_rows_have_base_10_structure(quick_rows):
    """Periods 10, 5, 2.5, 2 stand out of their spectral neighbours; a row-permuted copy does not."""
    rows = quick_rows[0][:120]  # N = 120 puts every period on an integer bin
    periods = (10, 5, 2.5, 2)
    prom = [prominence(rows, T) for T in periods]
    shuffled = rows[np.random.default_rng(0).permutation(120)]
    control = [prominence(shuffled, T) for T in periods]
    print("prominence", dict(zip(periods, np.round(prom, 2))), "control", np.round(control, 2))
    assert np.mean(prom) > 1.5 and min(prom) > 1.2
    assert np.mean(prom) > np.mean(control) + 0.4


def test_transplant_toy_through_build(quick_rows):
    cfg = config.apply_overrides(config.from_preset("quick"), [
        "model.backend=numpy", "embedding.kind=transplant", "embedding.source=toy"])
    model, info = build.build_model(cfg)
    rows, toy_info = quick_rows
    adapted, width = pretrained.adapt_width(rows, cfg.model.d_model, "pca")
    expected = embeddings.scale_like_init(adapted).astype(np.float32)
    np.testing.assert_array_equal(model.weights["wte.weight"][:QUICK_P], expected)
    assert info["kind"] == "transplant" and info["source"] == "toy"
    assert info["digit_accuracy"] == toy_info["digit_accuracy"] and info["variance_kept"] == 1.0
