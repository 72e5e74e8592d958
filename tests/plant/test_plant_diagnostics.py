"""The diagnostics recover the planted answer, end to end: each planted variant is written as a run
directory and read by the report's own functions (analysis.diagnose.lens_report / ablate_report,
which open it as the CLI does), and every measured value is compared with fourier_toy.plant's
prediction, which is computed from the spec alone.

- module-logit spectra: the last layer's high module has high-band share 1, its low module 0;
- logit lens: per layer, exact / +-2 / +-10 accuracy within the predicted ranges, and within 10
  before exact where the construction says so (schedule.py);
- Table 1 filters: every row's accuracy within its predicted range and dim null(M) as predicted;
  GPT-2's two directions on the GPT-2-like plant, reversed on the reversed plant; removing the low
  band from the magnitude module leaves only multiples of 10, removing the high band from the
  units-digit module only errors below 6 (at exactly the predicted accuracy P(delta = 0));
- the single-pass period-2 filter: parity accuracy 1.
"""

from __future__ import annotations

import functools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fourier_toy.analysis import diagnose
from fourier_toy.analysis.filters import TABLE1_ROWS
from fourier_toy.plant import (PlantSpec, design, lens_claim, predicted_band_shares, predicted_lens, predicted_single_pass,
                               predicted_table1)
from fourier_toy.plant.predict import TABLE1_ROWS as PLANT_ROWS
from fourier_toy.training.open_run import load_run

from .conftest import PLANT_SETTINGS, filters_count_float32_rounding, plant_specs, written

LABEL = {"attn": "ATTN", "mlp": "MLP", "both": "ATTN & MLP", "none": "none"}


@functools.lru_cache(maxsize=None)
def measured(spec: PlantSpec):
    """(lens report, ablate report, test split) of the spec written as a run directory."""
    with written(spec) as path:
        lens = diagnose.lens_report(path)
        ablate = diagnose.ablate_report(path)
        split = load_run(path, backend="numpy").splits["test"]
    return lens, ablate, split


def rows_by_key(ablate: dict) -> dict:
    return {(row["modules"], row["removed"]): row for row in ablate["rows"]}


def check_row(spec, row, outcome, removed):
    assert outcome.holds("acc", row["acc"]), (row, outcome)
    errs = row["errors"]
    if outcome.errors_x10 and errs["n_errors"]:
        assert errs["frac_multiple_of_10"] == 1.0, (row, outcome)
    if outcome.errors_below_6 and errs["n_errors"]:
        assert errs["frac_below_6"] == 1.0, (row, outcome)
    S = spec.slots
    rank = {None: 0, "low": S.n_low_coords, "high": S.n_high_coords}[removed]
    assert row["dim_null"] == spec.d_model - rank, row


def test_the_table1_rows_are_the_papers():
    assert PLANT_ROWS == TABLE1_ROWS


# ---- spectra and lens -----------------------------------------------------------------------------

@PLANT_SETTINGS(8)
@given(plant_specs())
def test_module_spectra_and_lens_recover_the_plant(spec):
    lens, _, split = measured(spec)
    shares = predicted_band_shares(spec)
    tol = 1e-6 + 4 * design(spec).eta  # energies are squared amplitudes, each within relative eta
    for m in lens["modules"]:
        for module in ("attn", "mlp"):
            want = shares[(m["layer"], module)]
            if want is not None:
                assert m[f"{module}_high"] == pytest.approx(want, abs=tol), (m, module)
    last = spec.n_layers - 1
    got = lens["modules"][last]
    if spec.high_module != spec.low_module:
        assert got[f"{spec.high_module}_high"] > 1 - 1e-6
        assert got[f"{spec.low_module}_high"] < 1e-6
    for layer, outcome in zip(lens["lens"], predicted_lens(spec, split)):
        for key in ("acc", "acc_pm2", "acc_pm10"):
            assert outcome.holds(key, layer[key]), (key, layer, outcome)
    first, exact = lens_claim(spec)
    assert lens["lens"][exact]["acc"] == 1.0
    assert lens["lens"][first]["acc_pm10"] == 1.0
    if first < exact:  # the lens is within 10 of a + b before it is exact
        assert lens["lens"][first]["acc"] < 0.99


# ---- Table 1 and the single-pass filter -------------------------------------------------------------

@PLANT_SETTINGS(8)
@given(plant_specs())
def test_table1_rows_and_single_pass_recover_the_plant(spec):
    _, ablate, split = measured(spec)
    rows = rows_by_key(ablate)
    for modules, removed, outcome in predicted_table1(spec, split):
        check_row(spec, rows[(LABEL[modules], removed or "-")], outcome, removed)
    magnitude = rows[(LABEL[spec.low_module], "low")]
    assert magnitude["acc"] < 0.5 and magnitude["errors"]["frac_multiple_of_10"] == 1.0
    units = rows[(LABEL[spec.high_module], "high")]
    assert units["errors"]["frac_below_6"] == 1.0
    if spec.high_module != spec.low_module:  # GPT-2's directions 1 and 2, or their reverse
        assert magnitude["acc"] < rows[(LABEL[spec.high_module], "low")]["acc"] == 1.0
        assert units["acc"] < rows[(LABEL[spec.low_module], "high")]["acc"] == 1.0
    sp = ablate["single_pass"][0]
    outcome = predicted_single_pass(spec, split, 2.0)
    assert outcome.holds("parity", sp["parity_acc"]) and outcome.holds("acc", sp["acc"])
    if 2.0 in spec.high_periods:
        assert sp["parity_acc"] == 1.0
        S = spec.slots
        assert sp["dim_null"] == spec.d_model - (S.n_high_coords - 1 + S.n_low_coords)


@pytest.mark.parametrize("high, low", [("attn", "mlp"), ("mlp", "attn")])
def test_both_directions_on_the_gpt2_like_and_reversed_plants(high, low):
    _, ablate, _ = measured(PlantSpec(max_operand=30, d_model=128, high_module=high, low_module=low))
    rows = rows_by_key(ablate)
    mlp_low, attn_low = rows[("MLP", "low")]["acc"], rows[("ATTN", "low")]["acc"]
    attn_high, mlp_high = rows[("ATTN", "high")]["acc"], rows[("MLP", "high")]["acc"]
    if high == "attn":
        assert mlp_low < attn_low and attn_high < mlp_high
    else:
        assert attn_low < mlp_low and mlp_high < attn_high


def test_the_filter_judges_rank_at_w_u_precision():
    """A float32 W_U whose columns are one low and one high component has high-band rank 1: its
    rounding is not rank (with float64's epsilon the filter removed 97 directions of a plant whose
    W_U reaches 7)."""
    assert not filters_count_float32_rounding()


@PLANT_SETTINGS(4)
@given(plant_specs(periods=[(2.0, 5.0), (10.0,), (2.0, 2.5, 10 / 3, 5.0, 10.0)]), st.just(None))
def test_other_period_sets_keep_the_low_band_findings(spec, _):
    """Period sets other than GPT-2's: the comb still singles out n mod 10, so removing the
    magnitude still leaves only multiples of 10."""
    _, ablate, _ = measured(spec)
    row = rows_by_key(ablate)[(LABEL[spec.low_module], "low")]
    assert row["errors"]["frac_multiple_of_10"] == 1.0
