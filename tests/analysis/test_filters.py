"""The null-space filter (Definition A.6), its hooks, the Table 1 analogue and single-pass filters."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fourier_toy.analysis import filters
from fourier_toy.analysis import fourier
from fourier_toy.errors import ConfigError, DataError
from fourier_toy.training.evaluate import evaluate, predict
from fourier_toy.testing import all_examples


@st.composite
def projector_case(draw):
    max_operand = draw(st.integers(2, 12))
    p = 2 * max_operand + 1
    d = draw(st.integers(2, 40))
    kind = draw(st.sampled_from(["exact", "paper"]))
    fb = fourier.number_axis(p, kind).basis
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    W_U = rng.normal(size=(p, d))
    if draw(st.booleans()):  # a low-rank W_U makes M rank-deficient
        W_U = W_U[:, : max(1, d // 3)] @ rng.normal(size=(max(1, d // 3), d))
    which = draw(st.sampled_from(["low", "high", "keep", "random"]))
    if which == "keep":
        mask = filters.remove_mask(fb, ("keep", draw(st.integers(1, fb.n_freqs - 1))))
    elif which == "random":
        mask = rng.random(fb.n) < 0.5
        mask[0] = False
    else:
        mask = filters.remove_mask(fb, which, draw(st.integers(1, fb.n_freqs)))
    return fb, W_U, mask, rng


@settings(max_examples=60, deadline=None)
@given(projector_case())
def test_projector_is_the_orthogonal_projection_onto_null_M(case):
    fb, W_U, mask, rng = case
    P, info = filters.null_space_projector(W_U, fb, mask)
    d = W_U.shape[1]
    M = fb.matrix[mask] @ W_U[: fb.n]
    assert P.shape == (d, d)
    np.testing.assert_allclose(P @ P, P, atol=1e-10)
    np.testing.assert_array_equal(P, P.T)
    x = rng.normal(size=(5, d))
    y = x @ P
    assert np.all(np.linalg.norm(y, axis=1) <= np.linalg.norm(x, axis=1) * (1 + 1e-12))
    # After filtering, W_U y has no energy in the removed rows.
    scale = max(1.0, np.abs(M).max(initial=0.0)) * np.abs(x).max()
    assert np.abs(M @ y.T).max(initial=0.0) <= 1e-8 * scale
    # It is Definition A.6's y = x - pinv(M) M x, and dim null(M) = d - rank(M).
    if M.shape[0]:
        np.testing.assert_allclose(P, np.eye(d) - np.linalg.pinv(M) @ M, atol=1e-8)
    rank = int(np.linalg.matrix_rank(M)) if M.shape[0] else 0
    assert info["rank"] == rank and info["dim_null"] == d - rank
    assert info["n_removed_rows"] == int(mask.sum())


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 12), st.integers(1, 30), st.sampled_from(["exact", "paper"]))
def test_removing_nothing_is_the_identity(max_operand, d, kind):
    fb = fourier.number_axis(2 * max_operand + 1, kind).basis
    W_U = np.random.default_rng(d).normal(size=(2 * max_operand + 1, d))
    for removed in (None, "none"):
        P, info = filters.null_space_projector(W_U, fb, filters.remove_mask(fb, removed))
        np.testing.assert_array_equal(P, np.eye(d))
        assert info["rank"] == 0 and info["dim_null"] == d


def test_remove_masks_follow_table_1_naming():
    fb = fourier.number_axis(121).basis  # N = 120, tau = ceil(50 * 120 / 520) = 12
    tau = fourier.default_tau(fb.n)
    low, high = filters.remove_mask(fb, "low"), filters.remove_mask(fb, "high")
    # "removed: low" is the high-pass filter: it removes 1 <= k < tau, both cos and sin rows.
    assert set(fb.freqs[low]) == set(range(1, tau)) and low.sum() == 2 * (tau - 1)
    assert set(fb.freqs[high]) == set(range(tau, 61))
    assert not (low & high).any() and not low[0] and not high[0] and (low | high)[1:].all()
    keep = filters.remove_mask(fb, ("keep", 12))
    assert set(np.flatnonzero(~keep)) == {0, *fb.rows_for_k(12)}
    with pytest.raises(ConfigError):
        filters.remove_mask(fb, "middle")
    with pytest.raises(ConfigError):
        filters.remove_mask(fb, ("keep", 61))


def test_projector_rejects_bad_shapes():
    fb = fourier.number_axis(21).basis
    with pytest.raises(DataError):
        filters.null_space_projector(np.zeros((10, 4)), fb, np.zeros(fb.n, bool))
    with pytest.raises(DataError):
        filters.null_space_projector(np.zeros((21, 4)), fb, np.zeros(5, bool))


@pytest.mark.parametrize("modules", ["attn", "mlp", "both"])
def test_filter_hooks_remove_the_band_from_every_module_output(fourier_toy_run, modules):
    model, sp = fourier_toy_run.model, all_examples(fourier_toy_run)
    hooks, info = filters.filter_hooks(model, "high", modules)
    hooked = {name for name, _ in hooks}
    want = {f"blocks.{l}.{h}" for l in range(2) for h in filters.MODULES[modules]}
    assert hooked == want
    fb = fourier.number_axis(model.n_numbers).basis
    mask = filters.remove_mask(fb, "high")
    M = fb.matrix[mask] @ model.W_U[: fb.n].astype(np.float64)
    names = [f"blocks.{l}.{h}" for l in range(2) for h in ("hook_attn_out", "hook_mlp_out")]
    _, cache = model.run_with_cache(sp.tokens, names=names, hooks=hooks)
    for name in names:
        x = cache[name].astype(np.float64)  # every position (the last block has only the last)
        energy = np.abs(x @ M.T).max() / (np.abs(x).max() * np.abs(M).max())
        if name in hooked:
            assert energy < 1e-5, name
        else:
            assert energy > 1e-3, name
    assert info["dim_null"] == model.cfg.d_model - info["rank"] and info["N"] == fb.n


def test_ablation_table_rows_and_baseline(fourier_toy_run):
    model, sp = fourier_toy_run.model, all_examples(fourier_toy_run)
    tab = filters.ablation_table(model, sp)
    got = [(r["modules"], r["removed"]) for r in tab["rows"]]
    assert got == [("none", "-"), ("ATTN & MLP", "low"), ("ATTN", "low"), ("MLP", "low"),
                   ("ATTN & MLP", "high"), ("ATTN", "high"), ("MLP", "high")]
    base = evaluate(model, sp, with_errors=True)
    assert tab["rows"][0]["acc"] == base["acc"] and tab["rows"][0]["loss"] == base["loss"]
    assert tab["rows"][0]["dim_null"] == model.cfg.d_model
    fb = fourier.number_axis(model.n_numbers).basis
    W = model.W_U[: fb.n].astype(np.float64)
    for r in tab["rows"][1:]:
        M = fb.matrix[filters.remove_mask(fb, r["removed"])] @ W
        assert r["dim_null"] == model.cfg.d_model - np.linalg.matrix_rank(M)
        e = r["errors"]
        assert e["n_errors"] == round((1 - r["acc"]) * len(sp))
        if e["n_errors"]:
            hist = np.repeat(list(e["histogram"]), list(e["histogram"].values()))
            assert e["frac_multiple_of_10"] == pytest.approx(np.mean(hist % 10 == 0))
    # The "ATTN" row is the attention filter alone: rerun it by hand.
    hooks, _ = filters.filter_hooks(model, "low", "attn")
    assert tab["rows"][2]["acc"] == evaluate(model, sp, hooks=hooks)["acc"]
    assert (tab["basis"], tab["N"], tab["tau"], tab["d"]) == ("exact", fb.n, fourier.default_tau(fb.n), 32)


def test_single_pass_keeps_one_frequency(fourier_toy_run):
    model, sp = fourier_toy_run.model, all_examples(fourier_toy_run)
    res = filters.single_pass(model, sp, period=2)
    fb = fourier.number_axis(model.n_numbers).basis
    assert res["k"] == fb.n // 2 and res["n_removed_rows"] == fb.n - 2  # all but const and Nyquist
    hooks, _ = filters.filter_hooks(model, ("keep", res["k"]), "both")
    preds = predict(model, sp.tokens, hooks=hooks).argmax(1)
    assert res["parity_acc"] == pytest.approx(np.mean(preds % 2 == sp.targets % 2))
    assert res["acc"] == pytest.approx(np.mean(preds == sp.targets))
    assert res["parity_acc"] >= res["acc"]
    with pytest.raises(ConfigError):
        filters.single_pass(model, sp, period=3)  # 20 / 3 is not a component


def test_filter_arguments_are_checked(fourier_toy_run):
    with pytest.raises(ConfigError):
        filters.filter_hooks(fourier_toy_run.model, "low", "heads")
    with pytest.raises(ConfigError):
        filters.filter_hooks(fourier_toy_run.model, "low", basis="dct")
