"""Invariants every model satisfies, property-tested on random models (fourier_toy.testing).

Each holds for any weights, so a random model (strategies.random_models: GPT-2 init with perturbed
LayerNorms and biases, float64) is the right test case: a diagnostic that only works on trained
models would hide its bugs behind the training.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fourier_toy import config
from fourier_toy.analysis import filters, lens
from fourier_toy.testing import (assert_band_removed, assert_close, assert_lens_consistent,
                                 assert_module_logits_decompose, build_case, permute_units, random_models,
                                 task_examples)

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

REMOVED = st.sampled_from(["low", "high"])
MODULES = st.sampled_from(["attn", "mlp", "both"])


def examples(case):
    return task_examples(case.cfg.task.max_operand)


@FAST
@given(random_models(), REMOVED, MODULES)
def test_a_removed_band_leaves_no_energy_in_the_filtered_modules_logits(case, removed, modules):
    assert_band_removed(case.model, examples(case).tokens, removed, modules)


@settings(max_examples=8, deadline=None)
@given(random_models(dtype="float32"), REMOVED, MODULES)
def test_a_removed_band_leaves_no_energy_in_float32_too(case, removed, modules):
    assert_band_removed(case.model, examples(case).tokens, removed, modules)


@FAST
@given(random_models(), st.sampled_from([None, "none"]), MODULES)
def test_removing_nothing_is_the_identity(case, removed, modules):
    model, tokens = case.model, examples(case).tokens
    hooks, info = filters.filter_hooks(model, removed, modules)
    assert info["rank"] == 0 and info["dim_null"] == model.cfg.d_model
    # x @ I adds only exact zeros: the filtered model is the model, to the bit.
    np.testing.assert_array_equal(model.forward(tokens, hooks=hooks), model.forward(tokens))


@FAST
@given(random_models())
def test_the_last_lens_layer_equals_the_logits(case):
    assert_lens_consistent(case.model, tokens=examples(case).tokens, check_order=False)
    # And the layers before it are not the logits (the lens reads each layer's own residual).
    if case.cfg.model.n_layers > 1:
        resid = lens.residual_last(case.model, examples(case).tokens)
        assert not np.array_equal(resid[0], resid[-1])


@FAST
@given(random_models())
def test_module_logits_and_the_embedding_path_decompose_the_final_residual(case):
    """Linear: embed + sum attn + sum mlp logits == resid_post[L-1] @ W_U.T. Through LN_f: the logits
    == sum_c ((x_c - mean x_c) / sigma * g) @ W_U.T + b @ W_U.T, sigma from the whole residual."""
    assert_module_logits_decompose(case.model, examples(case).tokens)


def _perms(draw, model):
    d, H = model.cfg.d_model, model.cfg.n_heads
    return {"mlp": np.array(draw(st.permutations(range(4 * d)))),
            "heads": np.array(draw(st.permutations(range(H)))),
            "resid": np.array(draw(st.permutations(range(d))))}


@FAST
@given(random_models(), REMOVED, MODULES, st.sampled_from(["mlp", "heads", "resid", "all"]), st.data())
def test_the_filters_commute_with_a_permutation_of_units(case, removed, modules, which, data):
    model, tokens = case.model, examples(case).tokens
    perms = _perms(data.draw, model)
    kw = perms if which == "all" else {which: perms[which]}
    twin = permute_units(model, **kw)
    # The same function ...
    assert_close(twin.forward(tokens), model.forward(tokens), "permuted model's logits")
    # ... and the same filtered function: the filter is built from the twin's own W_U.
    hooks, info = filters.filter_hooks(model, removed, modules)
    twin_hooks, twin_info = filters.filter_hooks(twin, removed, modules)
    assert (twin_info["rank"], twin_info["dim_null"]) == (info["rank"], info["dim_null"])
    assert_close(twin.forward(tokens, hooks=twin_hooks), model.forward(tokens, hooks=hooks),
                 f"filtered logits, {which} permuted", scale=np.abs(model.forward(tokens)).max())
    assert_band_removed(twin, tokens, removed, modules)


def test_a_permutation_that_is_not_consistent_changes_the_function():
    # The commuting test can fail: permuting c_fc's columns without c_proj's rows breaks the model.
    cfg = config.from_dict({"task": {"max_operand": 10}, "model": {"d_model": 24, "n_layers": 1, "n_heads": 2,
                                                                  "backend": "numpy"}, "seed": 3})
    model, _ = build_case(cfg)
    tokens = task_examples(10).tokens
    broken = permute_units(model)
    w = broken.weights["h.0.mlp.c_fc.weight"]
    w[...] = w[:, np.random.default_rng(0).permutation(w.shape[1])]
    with pytest.raises(AssertionError, match=r"max \|actual - expected\| = .* tolerance rtol 1e-10"):
        assert_close(broken.forward(tokens), model.forward(tokens))
