"""known_answer_models: planted models (fourier_toy.plant) drawn by hypothesis, and the assertions
on the mechanism they have by construction."""

import numpy as np
import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from fourier_toy.testing import (ArgumentError, KnownAnswer, assert_band_removed, assert_division_of_labour,
                                 assert_errors_multiple_of, assert_errors_small, assert_lens_consistent,
                                 assert_module_logits_decompose, known_answer_models, module_band_shares)

FEW = settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FEW
@given(known_answer_models(max_operand=30))
def test_a_planted_division_of_labour_is_found_and_the_reverse_is_not(case):
    assert isinstance(case, KnownAnswer) and "PlantSpec(" in repr(case)
    model, cfg, spec = case
    assert cfg.task.max_operand == spec.max_operand == 30 and spec.high_module != spec.low_module
    assert_division_of_labour(model, high=spec.high_module, low=spec.low_module)
    with pytest.raises(AssertionError, match="division of labour"):
        assert_division_of_labour(model, high=spec.low_module, low=spec.high_module)
    shares = module_band_shares(model)
    assert shares[spec.high_module] > 0.9 and shares[spec.low_module] < 0.1


@FEW
@given(known_answer_models(max_operand=30), st.sampled_from(["low", "high"]))
def test_the_invariants_hold_on_planted_models(case, removed):
    model, _, spec = case
    assert_lens_consistent(model)
    assert_module_logits_decompose(model)
    assert_band_removed(model, removed=removed, modules=spec.high_module)


@FEW
@given(known_answer_models(max_operand=30))
def test_the_planted_error_types_are_found(case):
    # Removing the magnitude (low band) from the module that writes it keeps the units digit:
    # errors are multiples of 10. Removing the units digit (high band) keeps the magnitude, which
    # the plant approximates within magnitude_block - 1: errors are small.
    model, _, spec = case
    assert_errors_multiple_of(model, 10, removed="low", modules=spec.low_module)
    assert_errors_small(model, 5, removed="high", modules=spec.high_module)
    with pytest.raises(AssertionError, match="chance"):
        assert_errors_multiple_of(model, 10, removed="high", modules=spec.high_module)


def test_the_filter_removes_only_the_directions_w_u_reaches():
    from fourier_toy.analysis import filters, fourier
    from fourier_toy.plant import PlantSpec, plant

    model, _ = plant(PlantSpec(max_operand=60, seed=1))
    fb = fourier.number_axis(model.n_numbers).basis
    M = fb.matrix[filters.remove_mask(fb, "high")] @ model.W_U[: fb.n].astype(np.float64)
    s = np.linalg.svd(M, compute_uv=False)
    reached = int(np.sum(s > s.max() * 1e-5))  # float32 resolves ~1e-7 of the largest
    _, info = filters.filter_hooks(model, "high", "attn")
    assert info["rank"] == reached


def test_known_answer_models_shrink_to_the_simplest_spec(monkeypatch):
    import fourier_toy.plant

    monkeypatch.setattr(fourier_toy.plant, "plant", lambda spec: (None, None))  # the specs are the point here
    case = find(known_answer_models(), lambda c: True, settings=settings(database=None))
    spec = case.spec
    assert (spec.max_operand, spec.high_module, spec.low_module, spec.noise, spec.seed) == (30, "attn", "mlp", 0.0, 0)


def test_bad_fields_are_one_line_errors_naming_them():
    with pytest.raises(ArgumentError, match="^max_operand: "):
        known_answer_models(max_operand=12)
    with pytest.raises(ArgumentError, match="^width: not a PlantSpec field"):
        known_answer_models(width=3)
    with pytest.raises(ArgumentError, match="^noise: "):
        known_answer_models(noise=2.0)
