"""The model's hand-written backward pass against central finite differences in float64, and hooks."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fourier_toy.nn import ops
from fourier_toy.training.backends import make_gpt
from fourier_toy.config import ModelConfig
from fourier_toy.nn.model import GPT, hook_names


def make_model(n_layers, n_heads, d_head, tied, n_numbers=7, n_ctx=5, seed=0, dtype=np.float64):
    cfg = ModelConfig(d_model=n_heads * d_head, n_layers=n_layers, n_heads=n_heads, tied=tied,
                      n_ctx=n_ctx, backend="numpy")
    rng = np.random.default_rng(seed)
    model = make_gpt(cfg, n_numbers, rng=rng, dtype=dtype)
    # Larger-than-init weights and non-trivial LayerNorm/bias values, so no path hides behind ~0.
    model.params[:] = rng.normal(0, 0.3, size=model.params.shape)
    return model


def loss_of(model, tokens, targets, all_positions):
    logits = model.forward(tokens, all_positions=all_positions)
    if all_positions:
        # A loss that reads every position, so every position's path is checked.
        B, T, p = logits.shape
        loss, c = ops.cross_entropy_forward(logits.reshape(B * T, p), np.repeat(targets, T))
        return float(loss), lambda: model.backward(ops.cross_entropy_backward(1.0, c).reshape(B, T, p))
    loss, c = ops.cross_entropy_forward(logits, targets)
    return float(loss), lambda: model.backward(ops.cross_entropy_backward(1.0, c))


@settings(max_examples=25, deadline=None)
@given(
    n_layers=st.integers(1, 3), n_heads=st.integers(1, 4), d_head=st.sampled_from([1, 2, 3, 5]),
    seq_len=st.integers(1, 5), batch=st.integers(1, 3), tied=st.booleans(), all_positions=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_backward_matches_central_differences(n_layers, n_heads, d_head, seq_len, batch, tied,
                                              all_positions, seed):
    model = make_model(n_layers, n_heads, d_head, tied, seed=seed)
    rng = np.random.default_rng(seed + 1)
    tokens = rng.integers(0, model.vocab_size, size=(batch, seq_len))
    targets = rng.integers(0, model.n_numbers, size=batch)
    _, backward = loss_of(model, tokens, targets, all_positions)
    backward()
    first = model.grads.copy()
    backward()  # a second call must give the same gradients, not twice them
    np.testing.assert_array_equal(model.grads, first)

    # Central differences at eps and eps/2, combined by Richardson extrapolation (4 D(eps/2) - D(eps)) / 3:
    # the eps^2 truncation term cancels, which matters where a LayerNorm over 2 dims bends sharply
    # (plain D(1e-5) was off by 1.7e-5 there), and the larger eps keeps float64 round-off ~1e-16 * loss / eps
    # near 1e-12 where the LayerNorm shrinks gradients to 1e-5.
    eps = 1e-4

    def central(i, h):
        old = model.params[i]
        model.params[i] = old + h
        lp, _ = loss_of(model, tokens, targets, all_positions)
        model.params[i] = old - h
        lm, _ = loss_of(model, tokens, targets, all_positions)
        model.params[i] = old
        return (lp - lm) / (2 * h)

    for name, offset, shape in model.layout.entries:
        size = int(np.prod(shape))
        idx = offset + rng.choice(size, size=min(size, 8), replace=False)
        numeric = np.array([(4 * central(i, eps / 2) - central(i, eps)) / 3 for i in idx])
        analytic = first[idx]
        # Relative to the tensor's largest gradient; below 1e-5 (a LayerNorm over 2 dims can shrink
        # gradients that far) round-off dominates, so the check becomes absolute at 1e-10.
        scale = max(np.abs(numeric).max(), np.abs(analytic).max(), 1e-5)
        rel = np.abs(numeric - analytic).max() / scale
        assert rel < 1e-5, f"{name}: relative error {rel:.2e}"


def test_last_position_shortcut_equals_full_forward():
    model = make_model(2, 2, 4, tied=False, n_ctx=4)
    tokens = np.random.default_rng(3).integers(0, model.vocab_size, size=(6, 4))
    last = model.forward(tokens)
    full = model.forward(tokens, all_positions=True)
    np.testing.assert_allclose(last, full[:, -1], rtol=1e-12, atol=1e-12)


def test_tied_model_has_no_lm_head_and_uses_wte_rows():
    model = make_model(1, 2, 4, tied=True)
    assert "lm_head.weight" not in model.layout.names
    assert np.shares_memory(model.W_U, model.weights["wte.weight"])
    assert model.W_U.shape == (model.n_numbers, model.cfg.d_model)


def test_hook_return_value_replaces_activation_downstream():
    model = make_model(2, 2, 4, tied=False, n_ctx=4)
    tokens = np.random.default_rng(4).integers(0, model.vocab_size, size=(5, 4))
    base = model.forward(tokens)
    # Zeroing the last block's MLP output must equal a model whose c_proj of that MLP is zero.
    zeroed = model.forward(tokens, hooks=[("blocks.1.hook_mlp_out", lambda x, name: np.zeros_like(x))])
    assert not np.allclose(base, zeroed)
    saved = {k: model.weights[k].copy() for k in ("h.1.mlp.c_proj.weight", "h.1.mlp.c_proj.bias")}
    for k in saved:
        model.weights[k][...] = 0
    np.testing.assert_allclose(model.forward(tokens), zeroed, rtol=1e-12, atol=1e-12)
    for k, v in saved.items():
        model.weights[k][...] = v
    # A hook returning None leaves the forward unchanged.
    np.testing.assert_array_equal(model.forward(tokens, hooks={"blocks.0.hook_resid_post": lambda x, n: None}), base)


def test_backward_refuses_after_a_replacing_hook():
    model = make_model(1, 1, 4, tied=False)
    tokens = np.zeros((2, 4), dtype=np.int64)
    logits = model.forward(tokens, hooks=[("blocks.0.hook_attn_out", lambda x, n: x * 0)])
    with pytest.raises(RuntimeError, match="hook replaced"):
        model.backward(np.ones_like(logits))


def test_run_with_cache_stores_only_what_is_asked_with_transformerlens_shapes():
    model = make_model(2, 2, 3, tied=False, n_ctx=4)
    tokens = np.random.default_rng(5).integers(0, model.vocab_size, size=(3, 4))
    logits, cache = model.run_with_cache(tokens, names=["blocks.0.attn.hook_q", "blocks.0.attn.hook_pattern"])
    assert set(cache) == {"blocks.0.attn.hook_q", "blocks.0.attn.hook_pattern"}
    assert cache["blocks.0.attn.hook_q"].shape == (3, 4, 2, 3)  # (B, T, H, Dh)
    pattern = cache["blocks.0.attn.hook_pattern"]
    assert pattern.shape == (3, 2, 4, 4)
    np.testing.assert_allclose(pattern.sum(-1), 1.0)
    assert np.all(np.triu(pattern[0, 0], k=1) == 0)  # causal
    _, everything = model.run_with_cache(tokens, all_positions=True)
    assert set(everything) == set(hook_names(2))
    # The residual stream adds up: resid_post = resid_mid + mlp_out = resid_pre + attn_out + mlp_out.
    e = everything
    np.testing.assert_allclose(e["blocks.1.hook_resid_post"],
                               e["blocks.1.hook_resid_pre"] + e["blocks.1.hook_attn_out"] + e["blocks.1.hook_mlp_out"])
    np.testing.assert_array_equal(e["blocks.0.hook_resid_post"], e["blocks.1.hook_resid_pre"])
