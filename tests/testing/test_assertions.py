"""The assertions of fourier_toy.testing pass where the property holds, and fail, with the measured
numbers and the tolerance in the message, where it does not: each tolerance is checked against the
cases it was calibrated on (random models on the failing side)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fourier_toy import ConfigError, config
from fourier_toy.analysis import filters, lens
from fourier_toy.testing import (ArgumentError, assert_band_removed, assert_close, assert_division_of_labour,
                                 assert_errors_multiple_of, assert_errors_small, assert_lens_consistent,
                                 assert_periods_absent, assert_periods_found, build_case, configs, number_rows,
                                 planted_rows, random_models, task_examples)
from fourier_toy.testing.assertions import chance_share

FAST = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def small_model(seed: int, n_layers: int):
    """A random_models() model of one fixed config (max_operand 10, d_model 24)."""
    cfg = config.from_dict({"task": {"max_operand": 10}, "seed": seed,
                            "model": {"d_model": 24, "n_layers": n_layers, "n_heads": 2, "backend": "numpy"}})
    return build_case(cfg).model


def fails(fn, *args, match: str, **kwargs) -> str:
    with pytest.raises(AssertionError, match=match) as err:
        fn(*args, **kwargs)
    return str(err.value)


# ------------------------------------------------------------------------------------------ assert_close

def test_assert_close_tolerance_is_the_dtypes_relative_to_the_scale():
    x = np.array([1.0, 2.0, -3.0])
    assert_close(x + 1e-11, x)
    assert_close(x.astype(np.float32) * (1 + 1e-5), x.astype(np.float32))
    msg = fails(assert_close, x + 1e-9, x, "y", match=r"^y: max \|actual - expected\| = 1e-09")
    assert "rtol 1e-10" in msg and "scale 3" in msg and "3 of 3 entries" in msg
    # A result that cancels to ~0 is judged against the size of its terms.
    assert_close(np.array([1e-12]), np.array([0.0]), scale=100.0)
    fails(assert_close, np.array([1e-12]), np.array([0.0]), match="allowed 1e-40")


def test_assert_close_nans_infinities_shapes_and_integers():
    nan, inf = np.nan, np.inf
    assert_close(np.array([nan, inf, 1.0]), np.array([nan, inf, 1.0]))
    fails(assert_close, np.array([nan, 1.0]), np.array([1.0, 1.0]), match="NaN at")
    fails(assert_close, np.array([inf]), np.array([-inf]), match="infinite entry")
    fails(assert_close, np.zeros(3), np.zeros(4), match=r"shape \(3,\) != expected \(4,\)")
    fails(assert_close, np.array([1, 2]), np.array([1, 3]), match="rtol 0")
    with pytest.raises(ArgumentError, match="^rtol: "):
        assert_close(np.zeros(2, np.float16), np.zeros(2, np.float16))


# ------------------------------------------------------------------------------------------ periods

@FAST
@given(number_rows())
def test_planted_periods_are_found_and_shuffled_ones_are_not(case):
    W, planted = case
    assert_periods_found(W, planted.periods)
    assert planted.N == W.shape[0] - 1 and all(planted.N / k == T for T, k in zip(planted.periods, planted.ks))


def test_periods_found_fails_with_the_scan_numbers():
    W, planted = planted_rows(41, 16, [10.0], noise=1.0, seed=0)
    shuffled = W[np.random.default_rng(0).permutation(41)]
    msg = fails(assert_periods_found, shuffled, [10.0], match=r"not found: period 10 \(k=4: prominence")
    assert "critical" in msg and "alpha 0.01" in msg and "N = 40" in msg
    assert_periods_absent(shuffled, [10.0])
    fails(assert_periods_absent, W, [10.0], match="periods found that should be absent: period 10")
    # only=True: a planted period the caller did not list is an unexpected outlier.
    W2, _ = planted_rows(41, 16, [10.0, 2.0], noise=0.5, seed=1)
    assert_periods_found(W2, [10.0])
    fails(assert_periods_found, W2, [10.0], only=True, match=r"other outliers \(only=True\): period 2 ")


def test_periods_arguments_are_checked():
    W, _ = planted_rows(41, 8, [10.0])
    with pytest.raises(ArgumentError, match=r"^periods: 3 is not a scanned component"):
        assert_periods_found(W, [3.0])
    with pytest.raises(ArgumentError, match=r"^W: expected shape"):
        assert_periods_found(np.zeros((2, 3)), [10.0])
    with pytest.raises(ArgumentError, match=r"^basis: "):
        assert_periods_found(W, [10.0], basis="dct")


# ------------------------------------------------------------------------------------------ band removed

@FAST
@given(random_models(), st.sampled_from(["low", "high"]), st.sampled_from(["attn", "mlp", "both"]))
def test_band_removed_fails_without_the_filter_or_with_the_other_band(case, removed, modules):
    model, tokens = case.model, task_examples(case.cfg.task.max_operand).tokens
    msg = fails(assert_band_removed, model, tokens, removed, modules, hooks=[], match="removed band .* left in")
    assert "rtol 1e-12" in msg and "before the filter" in msg
    other = "low" if removed == "high" else "high"
    wrong, _ = filters.filter_hooks(model, other, modules)
    fails(assert_band_removed, model, tokens, removed, modules, hooks=wrong, match=r"max \d")


def test_band_removed_arguments_are_checked():
    model = small_model(seed=0, n_layers=1)
    with pytest.raises(ArgumentError, match="^modules: "):
        assert_band_removed(model, removed="high", modules="heads")
    with pytest.raises(ConfigError, match="^removed: "):
        assert_band_removed(model, removed="middle")
    with pytest.raises(ValueError, match="^tokens: "):
        assert_band_removed(model, tokens=np.zeros((3, 5), dtype=np.int64))
    with pytest.raises(ArgumentError, match="^model: "):
        assert_band_removed(3.0)


# ------------------------------------------------------------------------------------------ division of labour

@FAST
@given(random_models())
def test_random_models_show_no_division_of_labour_either_way(case):
    # The margin is calibrated above every random model's |share_attn - share_mlp|.
    for high, low in (("attn", "mlp"), ("mlp", "attn")):
        msg = fails(assert_division_of_labour, case.model, high, low,
                    match=f"division of labour: high-band share of logit energy {high} ")
        assert "margin" in msg and "per layer" in msg and "tau =" in msg


def test_division_of_labour_arguments_are_checked(fourier_toy_run):
    with pytest.raises(ArgumentError, match="^low: must differ"):
        assert_division_of_labour(fourier_toy_run, "mlp", "mlp")
    with pytest.raises(ArgumentError, match="^high: "):
        assert_division_of_labour(fourier_toy_run, "heads")
    with pytest.raises(ArgumentError, match="^split: "):
        assert_division_of_labour(fourier_toy_run, split="dev")
    assert_division_of_labour(fourier_toy_run, margin=-1.0)  # any split passes a margin of -1


# ------------------------------------------------------------------------------------------ lens

def test_lens_is_consistent_on_the_trained_run(fourier_toy_run):
    assert_lens_consistent(fourier_toy_run, split="all")
    assert_lens_consistent(fourier_toy_run.path, split="train", check_order=False)


def test_lens_order_fails_with_the_numbers(fourier_toy_run, monkeypatch):
    real = lens.logit_lens

    def late_within_10(model, split, batch=4096):
        out = real(model, split, batch)
        out[0] = {**out[0], "acc": out[-1]["acc"], "acc_pm10": 0.0}  # exact early, within-10 late
        return out

    monkeypatch.setattr(lens, "logit_lens", late_within_10)
    msg = fails(assert_lens_consistent, fourier_toy_run, split="all",
                match="lens order: within-10 reaches 0.9 x its final value at layer 1, exact at layer 0")
    assert "exact by layer" in msg and "within-10 [0.0," in msg


def test_lens_order_needs_a_model_that_adds():
    model = small_model(seed=1, n_layers=2)
    assert_lens_consistent(model, check_order=False)
    fails(assert_lens_consistent, model, match="final exact accuracy .* < min_accuracy 0.5")


# ------------------------------------------------------------------------------------------ error types

def test_error_assertions_on_given_errors():
    tens = np.array([0, 0, 10, -10, 20, 10, -30, 10, 10, 10, 1, 10])
    assert_errors_multiple_of(tens)
    fails(assert_errors_small, tens, match=r"errors within 5: 1 of 10 wrong answers \(0.1\)")
    fails(assert_errors_multiple_of, tens[:6], match="only 4 wrong answers .* < min_errors 10")
    with pytest.raises(ArgumentError, match="^errors: "):
        assert_errors_multiple_of(np.array([1.5, 2.0]))
    with pytest.raises(ArgumentError, match="^m: "):
        assert_errors_multiple_of(tens, 1)


@FAST
@given(random_models(configs(max_operand=st.sampled_from([15, 20]))), st.sampled_from([None, "low", "high"]))
def test_random_models_errors_are_at_chance(case, removed):
    # Calibration: random models' shares stay far below 0.5 over chance; both assertions refuse them.
    for check in (assert_errors_multiple_of, assert_errors_small):
        with pytest.raises(AssertionError, match="chance"):
            check(case.model, removed=removed)


def test_chance_share_pairs_predictions_with_other_targets():
    targets = np.array([0, 10, 20])
    preds = np.array([0, 10, 20])  # every answer right; paired with the others': errors +-10, +-20
    assert chance_share(targets, preds, lambda w: w % 10 == 0) == 1.0
    assert chance_share(targets, preds, lambda w: np.abs(w) <= 5) == 0.0
    assert np.isnan(chance_share(np.array([3, 3]), np.array([3, 3]), lambda w: w == 0))
