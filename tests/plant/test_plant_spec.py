"""PlantSpec: frozen, validated field by field with one-line ConfigErrors; derived widths."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fourier_toy.analysis.fourier import default_tau
from fourier_toy.errors import ConfigError
from fourier_toy.plant import PlantSpec
from fourier_toy.plant.spec import paper_tau

from .conftest import PLANT_SETTINGS, VALID_PERIODS, plant_specs


@pytest.mark.parametrize("field, value", [
    ("max_operand", 21), ("max_operand", 5), ("max_operand", True), ("max_operand", 2.0),
    ("d_model", 32), ("d_model", "128"), ("n_layers", 1), ("n_heads", 3), ("n_heads", 1), ("n_heads", 256),
    ("high_periods", (2.5, 5)), ("high_periods", (2,)), ("high_periods", (3,)), ("high_periods", ()),
    ("high_periods", (10, 10)), ("high_periods", "10"), ("high_periods", (float("nan"),)),
    ("high_module", "ffn"), ("low_module", None), ("low_frequencies", 0), ("low_frequencies", 12),
    ("magnitude_block", 2), ("magnitude_block", True), ("noise", -0.1), ("noise", 2.0), ("noise", float("inf")),
    ("seed", -1),
])
def test_a_bad_field_is_one_line_naming_it(field, value):
    with pytest.raises(ConfigError) as err:
        PlantSpec(**{field: value})
    msg = str(err.value)
    assert msg.startswith(f"{field}:"), msg
    assert "\n" not in msg


def test_too_narrow_for_the_design_names_the_minimum():
    with pytest.raises(ConfigError, match=r"^d_model: this spec needs at least \d+"):
        PlantSpec(d_model=48, low_frequencies=3)


def test_frozen_and_replaceable():
    spec = PlantSpec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.noise = 0.1
    assert dataclasses.replace(spec, noise=0.01).noise == 0.01
    assert spec.high_periods == (2.0, 2.5, 5.0, 10.0) and spec.division == "gpt2"
    assert PlantSpec(high_module="mlp", low_module="attn").division == "reversed"
    assert PlantSpec(low_module="attn").division == "both-attn"
    assert PlantSpec(high_periods=(3.33, 10)).high_periods == (10 / 3, 10.0)


@PLANT_SETTINGS(30)
@given(plant_specs(max_operands=(10, 20, 60, 100, 260), widths=(64, 96, 128, 256), layers=(2, 5)))
def test_every_valid_spec_fits_its_width(spec):
    assert spec.tau == default_tau(spec.N) == paper_tau(spec.N)
    assert 1 <= spec.low_frequencies < spec.tau
    assert spec.required_d_model <= spec.d_model
    assert spec.required_heads(spec.d_model // spec.n_heads) <= spec.n_heads
    # None takes the most low frequencies that fit
    bigger = spec.low_frequencies + 1
    if bigger < spec.tau:
        with pytest.raises(ConfigError):
            PlantSpec(**{**spec.to_dict(), "low_frequencies": bigger, "d_model": spec.d_model})
    assert PlantSpec(**spec.to_dict()) == spec


@given(st.sampled_from(VALID_PERIODS))
@PLANT_SETTINGS(len(VALID_PERIODS))
def test_valid_period_sets_single_out_n_mod_10(periods):
    import numpy as np

    x = np.arange(1, 30)
    h = sum(np.cos(2 * np.pi * x / T) for T in periods)
    assert np.all((np.abs(h - len(periods)) < 1e-9) == (x % 10 == 0))


def test_block_centres():
    spec = PlantSpec(max_operand=20, magnitude_block=5)
    assert list(spec.block_centre(range(22))) == [2] * 5 + [7] * 5 + [12] * 5 + [17] * 5 + [20, 21]
    assert list(PlantSpec(max_operand=20, magnitude_block=1).block_centre(range(21))) == list(range(21))
