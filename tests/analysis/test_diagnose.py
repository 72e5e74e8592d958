"""The diagnostics reports (JSON-able dicts + text tables) and the figures drawn from them."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fourier_toy.analysis import diagnose
from fourier_toy.analysis import plots
from fourier_toy.embeddings.packaged import packaged_path
from fourier_toy.errors import CheckpointError, ConfigError, DataError
from fourier_toy.testing import planted_rows
from fourier_toy.training.evaluate import evaluate


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def strict_json(obj):
    return json.loads(json.dumps(obj, allow_nan=False))


def test_spectrum_report_finds_planted_periods(tmp_path):
    path = tmp_path / "rows.npy"
    W, _ = planted_rows(121, 64, [10, 2.5])  # Gaussian rows plus waves of RMS 1 in random directions
    np.save(path, W)
    rep = strict_json(diagnose.spectrum_report(path))
    (m,) = rep["matrices"]
    assert (m["basis"], m["N"], m["width"], m["rows_used"]) == ("exact", 120, 64, 120)
    assert {o["period"] for o in m["outliers"]} == {10.0, 2.5}
    key = {r["period"]: r for r in m["key_periods"]}
    assert key[10.0]["k"] == 12 and key[10.0]["prominence"] > 3 and key[5.0]["prominence"] < 2
    assert len(m["amplitude"]) == len(m["periods"]) == 61 and m["periods"][0] is None
    text = diagnose.format_spectrum(rep)
    assert "N = 120" in text and "2.5" in text
    paper = diagnose.spectrum_report(path, basis="paper")["matrices"][0]
    assert (paper["N"], paper["denominator"]) == (121, 120)


def test_spectrum_report_of_a_run_names_each_matrix(fourier_toy_run):
    rep = strict_json(diagnose.spectrum_report(fourier_toy_run.path))
    assert rep["kind"] == "run" and [m["name"] for m in rep["matrices"]] == ["wte", "W_U"]
    assert all(m["N"] == fourier_toy_run.model.n_numbers - 1 for m in rep["matrices"])
    # The frozen Fourier embedding has periods 2, 2.5, 5, 10 built in.
    key = {r["k"]: r["amplitude"] for r in rep["matrices"][0]["key_periods"]}
    amps = rep["matrices"][0]["amplitude"]
    others = [a for k, a in enumerate(amps) if k >= 2 and k not in key]  # k = 1: the magnitude ramp
    assert sorted(key) == [2, 4, 8, 10] and min(key.values()) > 3 * max(others)


def test_real_embedding_rows_0_to_519():
    (m,) = diagnose.spectrum_report(Path(packaged_path("whisper")))["matrices"]
    assert m["N"] == 520 and m["rows_used"] == 520
    found = {round(o["period"], 2) for o in m["outliers"]}
    assert {10.0, 5.0, 2.5, 2.0} <= found


def test_bad_sources_are_refused(tmp_path):
    with pytest.raises(DataError):
        diagnose.spectrum_report(tmp_path / "missing.npy")
    (tmp_path / "text.npy").write_text("not numpy")
    with pytest.raises(DataError):
        diagnose.spectrum_report(tmp_path / "text.npy")
    (tmp_path / "notarun").mkdir()
    with pytest.raises(CheckpointError):
        diagnose.lens_report(tmp_path / "notarun")
    np.save(tmp_path / "even.npy", np.ones((20, 3)))
    with pytest.raises(ConfigError):
        diagnose.spectrum_report(tmp_path / "even.npy", basis="paper")


def test_lens_report(fourier_toy_run):
    rep = strict_json(diagnose.lens_report(fourier_toy_run, split="train"))
    assert rep["n_layers"] == 2 and [x["layer"] for x in rep["lens"]] == [0, 1]
    final = evaluate(fourier_toy_run.model, fourier_toy_run.splits["train"])
    assert rep["lens"][-1]["acc"] == final["acc"]
    for m in rep["modules"]:
        assert m["attn_low"] + m["attn_high"] == pytest.approx(1.0)
        assert m["mlp_low"] + m["mlp_high"] == pytest.approx(1.0)
    assert np.array(rep["spectra"]["mlp"]).shape == (2, len(rep["periods"]))
    text = diagnose.format_lens(rep)
    assert "attn low" in text and f"tau = {rep['tau']}" in text
    with pytest.raises(ConfigError):
        diagnose.lens_report(fourier_toy_run, split="dev")


def test_ablate_report(fourier_toy_run):
    rep = strict_json(diagnose.ablate_report(fourier_toy_run.path, split="train", periods=(2, 10)))
    assert len(rep["rows"]) == 7 and rep["rows"][0]["modules"] == "none"
    assert [s["period"] for s in rep["single_pass"]] == [2.0, 10.0]
    text = diagnose.format_ablate(rep)
    assert "ATTN & MLP" in text and "parity acc" in text and "dim null" in text


def test_probe_report_matrix_separates_planted_residues(tmp_path):
    rng = np.random.default_rng(1)
    n = np.arange(121)
    W = rng.normal(size=(121, 12))
    W[:, 0] += 4.0 * (n % 2)  # parity linearly readable; mod 10 is not
    np.save(tmp_path / "rows.npy", W)
    rep = strict_json(diagnose.probe_report(tmp_path / "rows.npy", periods=(2, 10)))
    probes = {p["T"]: p for p in rep["embedding"][0]["probes"]}
    assert probes[2]["kappa"] > 0.8 and probes[10]["kappa"] < 0.4
    assert rep["hidden"] is None and rep["embedding"][0]["N"] == 120
    assert "kappa" in diagnose.format_probe(rep)


def test_probe_report_run_probes_each_layer(fourier_toy_run):
    rep = strict_json(diagnose.probe_report(fourier_toy_run, periods=(2,), split="train", rng=np.random.default_rng(0)))
    assert [x["layer"] for x in rep["hidden"]["layers"]] == [0, 1]
    assert rep["hidden"]["n"] == len(fourier_toy_run.splits["train"])
    wte = {p["T"]: p["kappa"] for p in rep["embedding"][0]["probes"]}
    assert wte[2] > 0.5  # the frozen Fourier rows carry parity on a circle
    assert "after block 1" in diagnose.format_probe(rep)


# ---- figures -------------------------------------------------------------------------------------

def is_png(path) -> bool:
    data = Path(path).read_bytes()
    return len(data) > 1000 and data[:8] == PNG_MAGIC


def test_every_plot_writes_a_png(fourier_toy_run, tmp_path):
    spec = strict_json(diagnose.spectrum_report(fourier_toy_run))
    lens_rep = strict_json(diagnose.lens_report(fourier_toy_run, split="train"))
    abl = strict_json(diagnose.ablate_report(fourier_toy_run, split="train"))
    probes = strict_json(diagnose.probe_report(fourier_toy_run, periods=(2,), split="train"))
    ref = [{"modules": "none", "removed": "-", "acc": 0.9974}, {"modules": "MLP", "removed": "low", "acc": 0.3589}]
    outs = [
        plots.plot_spectrum(spec, tmp_path / "spectrum.png"),
        plots.plot_module_spectra(lens_rep, tmp_path / "modules.png"),
        plots.plot_lens(lens_rep, tmp_path / "lens.png"),
        plots.plot_ablation(abl, tmp_path / "table1.png"),
        plots.plot_ablation(abl, tmp_path / "table1_ref.png", reference=ref),
        plots.plot_errors(abl, tmp_path / "errors.png"),
        plots.plot_probes(probes, tmp_path / "probes.png"),
        plots.plot_training({"fourier": fourier_toy_run.path, "again": fourier_toy_run.path / "metrics.jsonl"},
                            tmp_path / "curves.png"),
        plots.plot_training({"seeds": [fourier_toy_run.path, fourier_toy_run.path / "metrics.jsonl"]}, tmp_path / "band.png",
                            title="mean over seeds"),
    ]
    for p in outs:
        assert is_png(p), p
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic writer left no temporary files


def test_plots_survive_edge_cases(tmp_path):
    row = {"modules": "none", "removed": "-", "loss": 0.0, "acc": 1.0, "acc_pm2": 1.0, "acc_pm10": 1.0,
           "rank": 0, "dim_null": 8, "n_removed_rows": 0,
           "errors": {"n_errors": 0, "frac_multiple_of_10": None, "frac_below_6": None, "histogram": {}}}
    abl = {"basis": "exact", "N": 20, "denominator": 20, "tau": 2, "tau_period": 10.0, "d": 8, "n": 5,
           "rows": [row], "single_pass": []}
    assert is_png(plots.plot_errors(abl, tmp_path / "no_errors.png"))
    assert is_png(plots.plot_ablation(abl, tmp_path / "one_row.png", reference=[]))
    zeros = {"n_layers": 1, "basis": "exact", "N": 20, "denominator": 20, "tau": 2,
             "spectra": {"attn": [[0.0] * 11], "mlp": [[0.0] * 11]}}
    assert is_png(plots.plot_module_spectra(zeros, tmp_path / "zeros.png"))
    assert is_png(plots.plot_training({"empty": []}, tmp_path / "empty.png"))
    undefined = {"source": "x.npy", "embedding": [{"name": "matrix", "N": 4, "probes": [
        {"T": 2, "accuracy": 1.0, "chance": 1.0, "kappa": None, "n_train": 3, "n_test": 1}]}], "hidden": None}
    assert is_png(plots.plot_probes(undefined, tmp_path / "kappa_none.png"))
    with pytest.raises(DataError):
        plots.plot_training({}, tmp_path / "none.png")
    with pytest.raises(CheckpointError):
        plots.plot_errors(abl, tmp_path / "no_such_dir" / "x.png")


@given(st.lists(st.dictionaries(st.integers(0, 50), st.floats(0, 1), min_size=1, max_size=8), min_size=1, max_size=4))
def test_mean_band_carries_each_run_forward_and_brackets_the_mean(series):
    steps, mean, lo, hi = plots.mean_band(series)
    assert steps == sorted(set().union(*series))
    for j, s in enumerate(steps):
        # Each run's value at s: its own, else its last one before s; runs not yet started drop out.
        vals = [c[max(k for k in c if k <= s)] for c in series if min(c) <= s]
        assert mean[j] == pytest.approx(np.mean(vals))
        assert lo[j] == min(vals) and hi[j] == max(vals)
        assert lo[j] <= mean[j] + 1e-12 and mean[j] <= hi[j] + 1e-12
