"""The strategies of fourier_toy.testing: what they draw is valid, constrained by their keywords,
deterministic given hypothesis' choices, free of global state, and shrinks toward simple values."""

import numpy as np
import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from fourier_toy import ConfigError, config
from fourier_toy.analysis import filters, fourier, outliers
from fourier_toy.testing import (ArgumentError, build_case, configs, filter_width, max_operands, number_rows,
                                 planted_rows, random_models, seeds)

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(configs())
def test_every_drawn_config_is_valid_and_meaningful_for_the_analysis(cfg):
    config.validate(cfg)
    m = cfg.model
    assert m.d_model % m.n_heads == 0 and m.backend == "numpy"
    assert cfg.task.max_operand % 5 == 0 and cfg.task.max_operand >= 10
    fb = fourier.number_axis(cfg.task.n_numbers).basis
    assert fb.n % 10 == 0
    assert all(outliers.period_detectable(fb, T) for T in fourier.KEY_PERIODS)
    assert m.d_model >= filter_width(cfg.task.max_operand) + 4
    assert cfg.embedding.freeze == (cfg.embedding.kind == "fourier")


@settings(max_examples=10, deadline=None)
@given(random_models())
def test_the_filters_of_a_drawn_model_keep_a_null_space(case):
    for removed in ("low", "high"):
        _, info = filters.filter_hooks(case.model, removed, "both")
        assert info["dim_null"] >= 4, (removed, info)


@settings(max_examples=10, deadline=None)
@given(configs(max_operand=20, d_model=48, n_heads=4, n_layers=2, embedding="fourier", seed=7,
               overrides={"train.max_steps": 11, "model.tied": True}))
def test_keywords_fix_what_they_name(cfg):
    assert (cfg.task.max_operand, cfg.model.d_model, cfg.model.n_heads, cfg.model.n_layers) == (20, 48, 4, 2)
    assert (cfg.embedding.kind, cfg.seed, cfg.train.max_steps, cfg.model.tied) == ("fourier", 7, 11, True)


@settings(max_examples=10, deadline=None)
@given(configs(d_model=32), configs(max_operand=st.sampled_from([15, 20]), n_heads=st.just(2)))
def test_keywords_take_strategies_and_constrain_the_rest(narrow, drawn):
    # d_model 32 fits the filters at max_operand 10 (17 removed rows) and 15 (25), not 20 (33).
    assert narrow.model.d_model == 32 and narrow.task.max_operand in (10, 15)
    assert 32 % narrow.model.n_heads == 0
    assert drawn.task.max_operand in (15, 20) and drawn.model.n_heads == 2


@pytest.mark.parametrize("kwargs, name", [
    ({"max_operand": 12}, "max_operand"), ({"max_operand": 5}, "max_operand"), ({"d_model": 16}, "d_model"),
    ({"d_model": 30, "n_heads": 4}, "n_heads"), ({"max_operand": 20, "d_model": 32}, "d_model"),
    ({"embedding": "transplant"}, "embedding"), ({"backend": "torch"}, "backend"), ({"tied": 1}, "tied"),
    ({"filter_margin": -1}, "filter_margin"), ({"overrides": ["train.lr=1"]}, "overrides"),
    ({"n_layers": 0}, "n_layers"), ({"seed": -1}, "seed"),
])
def test_bad_arguments_are_one_line_errors_naming_the_argument(kwargs, name):
    with pytest.raises(ArgumentError, match=f"^{name}: ") as err:
        configs(**kwargs)
    assert isinstance(err.value, ValueError) and isinstance(err.value, ConfigError)
    assert "\n" not in str(err.value)


def test_bad_arguments_of_the_other_strategies():
    for call, name in ((lambda: max_operands(11, 14), "max_value"), (lambda: random_models(dtype="float16"), "dtype"),
                       (lambda: random_models(init="xavier"), "init"), (lambda: random_models(3), "configs_strategy"),
                       (lambda: number_rows(noise=-0.1), "noise"), (lambda: number_rows(periods=[10, 10]), "periods"),
                       (lambda: number_rows(n_rows=21, periods=[3.0]), "periods"),
                       (lambda: number_rows(amplitude=0), "amplitude"), (lambda: number_rows(width=0), "width")):
        with pytest.raises(ArgumentError, match=f"^{name}: "):
            call()


def test_a_bad_override_fails_when_drawn():
    @settings(max_examples=1, database=None)
    @given(configs(overrides={"train.lr": -1.0}))
    def draw(cfg):
        pass

    with pytest.raises(ConfigError, match="^train.lr: "):
        draw()


def test_configs_shrink_toward_the_simplest_model():
    cfg = find(configs(), lambda c: True, settings=settings(database=None))
    assert (cfg.task.max_operand, cfg.model.n_layers, cfg.model.n_heads, cfg.embedding.kind, cfg.seed) == (
        10, 1, 1, "learned", 0)
    assert cfg.model.d_model == filter_width(10) + 4 == 21
    # A failing property shrinks to its boundary: here the smallest config with two layers and d >= 40.
    big = find(configs(), lambda c: c.model.n_layers == 2 and c.model.d_model >= 40, settings=settings(database=None))
    assert (big.model.n_layers, big.model.d_model, big.task.max_operand, big.seed) == (2, 40, 10, 0)


def test_number_rows_shrink_toward_one_period_no_noise():
    W, planted = find(number_rows(), lambda case: True, settings=settings(database=None))
    assert (planted.periods, planted.noise, planted.seed, W.shape) == ((2.0,), 0.0, 0, (21, 8))


@settings(max_examples=10, deadline=None)
@given(random_models(), st.sampled_from(["float64", "float32"]))
def test_models_are_a_pure_function_of_the_config_and_leave_numpy_alone(case, dtype):
    state = np.random.get_state()
    a, b = build_case(case.cfg, dtype), build_case(case.cfg, dtype)
    np.testing.assert_array_equal(a.model.params, b.model.params)
    assert a.model.params.dtype == np.dtype(dtype)
    g = build_case(case.cfg, dtype, init="gpt2").model
    assert np.all(g.weights["ln_f.weight"] == 1) and not np.all(a.model.weights["ln_f.weight"] == 1)
    same = [n for n in a.model.weights if not n.endswith((".bias", "ln_1.weight", "ln_2.weight", "ln_f.weight"))]
    for n in same:  # perturbing touches LayerNorms and biases only
        np.testing.assert_array_equal(a.model.weights[n], g.weights[n])
    assert "ModelCase(max_operand=" in repr(case)
    state_after = np.random.get_state()
    assert state[0] == state_after[0] and np.array_equal(state[1], state_after[1]) and state[2:] == state_after[2:]


@FAST
@given(number_rows(), seeds())
def test_number_rows_say_what_was_planted(case, seed):
    W, planted = case
    n_rows, width = W.shape
    assert n_rows % 2 == 1 and 8 <= width <= 64 and planted.N == n_rows - 1
    assert 0.0 <= planted.noise <= 1.0 and len(planted.periods) >= 1
    assert all(planted.N / k == T for T, k in zip(planted.periods, planted.ks))
    again, same = planted_rows(n_rows, width, planted.periods, noise=planted.noise, seed=planted.seed)
    np.testing.assert_array_equal(W, again)
    assert same == planted


def test_planted_rows_without_noise_are_the_waves():
    W, planted = planted_rows(21, 4, [10.0], noise=0.0, seed=0)
    np.testing.assert_allclose(W[10:20], W[0:10], atol=1e-12)  # period 10 along the rows
    assert planted.ks == (2,) and planted.N == 20 and planted.noise == 0.0
    # Noise only: the same seed gives the same Gaussian rows, scaled.
    G, _ = planted_rows(21, 4, [], noise=1.0, seed=5)
    G2, _ = planted_rows(21, 4, [], noise=2.0, seed=5)
    np.testing.assert_array_equal(2.0 * G, G2)
