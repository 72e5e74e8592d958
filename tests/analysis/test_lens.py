"""Logit lens (final LayerNorm recomputed per layer), module logits and their Fourier spectra."""

import numpy as np
import pytest

from fourier_toy.analysis import fourier
from fourier_toy.analysis import lens
from fourier_toy.errors import ConfigError, DataError
from fourier_toy.training.evaluate import evaluate, score
from fourier_toy.nn.ops import LN_EPS
from fourier_toy.task import Split
from fourier_toy.testing import all_examples


def ln64(x, w, b):
    x = x.astype(np.float64)
    xc = x - x.mean(-1, keepdims=True)
    return xc / np.sqrt((xc**2).mean(-1, keepdims=True) + LN_EPS) * w + b


def test_last_layer_lens_equals_model_logits(fourier_toy_run):
    model, sp = fourier_toy_run.model, all_examples(fourier_toy_run)
    resid = lens.residual_last(model, sp.tokens)
    assert resid.shape == (2, len(sp), model.cfg.d_model)
    np.testing.assert_array_equal(lens._lens_logits(model, resid[-1]), model.forward(sp.tokens))
    per_layer = lens.logit_lens(model, sp)
    ref = evaluate(model, sp)
    assert per_layer[-1] == {"layer": 1, **ref}
    assert [x["layer"] for x in per_layer] == [0, 1]
    # Other batch sizes change float32 rounding only.
    batched = lens.logit_lens(model, sp, batch=17)
    assert batched[-1]["acc"] == ref["acc"] and batched[-1]["loss"] == pytest.approx(ref["loss"], rel=1e-5)


def test_lens_recomputes_final_layernorm_per_layer(fourier_toy_run):
    model, sp = fourier_toy_run.model, all_examples(fourier_toy_run)
    rng = np.random.default_rng(3)
    saved = model.weights["ln_f.weight"].copy(), model.weights["ln_f.bias"].copy()
    try:
        model.weights["ln_f.weight"][...] = rng.uniform(0.3, 2.0, model.cfg.d_model)
        model.weights["ln_f.bias"][...] = rng.normal(0, 0.1, model.cfg.d_model)
        w, b = model.weights["ln_f.weight"].astype(np.float64), model.weights["ln_f.bias"].astype(np.float64)
        resid = lens.residual_last(model, sp.tokens).astype(np.float64)
        W_U = model.W_U.astype(np.float64)
        recomputed = ln64(resid[0], w, b) @ W_U.T
        # The mistake to avoid: normalizing layer 0 with the last layer's mean and std.
        last = resid[-1]
        mu, sd = last.mean(-1, keepdims=True), np.sqrt(last.var(-1, keepdims=True) + LN_EPS)
        reused = ((resid[0] - mu) / sd * w + b) @ W_U.T
        assert np.abs(recomputed - reused).max() > 1e-2 * np.abs(recomputed).max()
        got = lens.logit_lens(model, sp)[0]
        want, wrong = score(recomputed, sp.targets), score(reused, sp.targets)
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
        assert got["loss"] != pytest.approx(wrong["loss"], rel=1e-3)
        assert got["acc"] == want["acc"]
    finally:
        model.weights["ln_f.weight"][...], model.weights["ln_f.bias"][...] = saved


def test_module_logits_decompose_the_residual(fourier_toy_run):
    model, sp = fourier_toy_run.model, all_examples(fourier_toy_run)
    ml = lens.module_logits(model, sp.tokens)
    L, n, p = model.cfg.n_layers, len(sp), model.n_numbers
    assert ml.attn.shape == ml.mlp.shape == (L, n, p) and ml.embed.shape == (n, p)
    resid = lens.residual_last(model, sp.tokens)[-1].astype(np.float64)
    total = ml.embed.astype(np.float64) + ml.attn.sum(0) + ml.mlp.sum(0)
    direct = resid @ model.W_U.T.astype(np.float64)
    np.testing.assert_allclose(total, direct, atol=1e-4 * np.abs(direct).max())
    # Each module's logits are its own output read through W_U, not something else summing the same.
    _, cache = model.run_with_cache(sp.tokens, names=["blocks.0.hook_mlp_out"])
    np.testing.assert_allclose(ml.mlp[0], cache["blocks.0.hook_mlp_out"][:, -1] @ model.W_U.T, rtol=1e-6)


def test_module_spectra_match_independent_computations(fourier_toy_run):
    model, sp = fourier_toy_run.model, all_examples(fourier_toy_run)
    ms = lens.module_spectra(model, sp, batch=16)  # float32 forwards in other batches: rtol 1e-5
    fb = fourier.number_axis(model.n_numbers).basis
    N = fb.n
    tau = fourier.default_tau(N)
    assert (ms["basis"], ms["N"], ms["tau"]) == ("exact", N, tau)
    ml = lens.module_logits(model, sp.tokens)
    for m, logits in (("attn", ml.attn), ("mlp", ml.mlp)):
        for l in range(model.cfg.n_layers):
            X = logits[l][:, :N].astype(np.float64)  # (n, N)
            np.testing.assert_allclose(ms["rows"][m][l], np.abs(X @ fb.matrix.T).mean(0), rtol=1e-5)
            # cos and sin merged = the orthonormally scaled |rfft| (N even: Nyquist has no sine).
            rf = np.abs(np.fft.rfft(X, axis=1))
            scale = np.full(rf.shape[1], np.sqrt(2.0 / N))
            scale[0] = scale[-1] = 1 / np.sqrt(N)
            np.testing.assert_allclose(ms["freqs"][m][l], (rf * scale).mean(0), rtol=1e-5)
            # Energies pooled over examples: the same as band_energy_fractions on the (N, n) matrix.
            bands = fourier.band_energy_fractions(X.T, fb, tau)
            assert ms["low"][m][l] == pytest.approx(bands.low, rel=1e-5)
            assert ms["high"][m][l] == pytest.approx(bands.high, rel=1e-5)
            assert ms["low"][m][l] + ms["high"][m][l] == pytest.approx(1.0)
    assert len(ms["periods"]) == ms["freqs"]["attn"].shape[1] == N // 2 + 1


def test_module_spectra_paper_basis_and_tau(fourier_toy_run):
    model, sp = fourier_toy_run.model, all_examples(fourier_toy_run)
    ms = lens.module_spectra(model, sp, basis="paper", tau=5)
    assert (ms["basis"], ms["N"], ms["denominator"], ms["tau"]) == ("paper", model.n_numbers, model.n_numbers - 1, 5)
    low_all = lens.module_spectra(model, sp, tau=model.n_numbers)  # every non-constant k is below tau
    np.testing.assert_allclose(low_all["low"]["mlp"], 1.0)
    for bad in (0, 2.5, True):
        with pytest.raises(ConfigError):
            lens.module_spectra(model, sp, tau=bad)


def test_empty_split_is_refused(fourier_toy_run):
    empty = Split(np.zeros((0, 4), dtype=np.int64), np.zeros(0, dtype=np.int64))
    with pytest.raises(DataError):
        lens.logit_lens(fourier_toy_run.model, empty)
    with pytest.raises(DataError):
        lens.module_spectra(fourier_toy_run.model, empty)
