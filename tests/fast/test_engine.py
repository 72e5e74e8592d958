"""The numba backend's fused path (fused_path.FusedPath) against the numpy-backend model (the oracle
composed op by op): loss, gradients and logits, NaN propagation, and independence from the
number of threads."""

import numba
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fourier_toy.fast.adamw import adamw_update
from fourier_toy.fast import ENGINE
from fourier_toy.fast import op_kernels as kernels
from fourier_toy.training.backends import make_gpt
from fourier_toy.fast import engine as fused_path
from fourier_toy.config import ModelConfig
from fourier_toy.errors import DataError
from fourier_toy.nn.model import GPT
from fourier_toy.nn.params import decay_mask


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    ENGINE.warmup()


def pair(n_layers, n_heads, d_head, tied, dtype, n_numbers=7, n_ctx=5, seed=0):
    """The same weights in a numpy-backend and a numba-backend model."""
    models = []
    for backend in ("numpy", "numba"):
        cfg = ModelConfig(d_model=n_heads * d_head, n_layers=n_layers, n_heads=n_heads, tied=tied,
                          n_ctx=n_ctx, backend=backend)
        rng = np.random.default_rng(seed)
        m = make_gpt(cfg, n_numbers, rng=rng, dtype=dtype)
        # Larger-than-init weights and non-trivial LayerNorm/bias values, so no path hides behind ~0.
        m.params[:] = rng.normal(0, 0.3, size=m.params.shape)
        models.append(m)
    return models


def data(model, batch, seq_len, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, model.vocab_size, size=(batch, seq_len)), rng.integers(0, model.n_numbers, size=batch)


def assert_grads_close(ref, got, rtol):
    """Per tensor, relative to the tensor's largest gradient; a tensor whose gradient is ~0 for a
    structural reason (a LayerNorm over one dimension has none) is judged against the model's."""
    floor = 1e-3 * np.abs(ref.grads).max()
    for name, g_ref in ref.grad_views.items():
        scale = max(np.abs(g_ref).max(), floor, 1e-30)
        err = np.abs(got.grad_views[name] - g_ref).max() / scale
        assert err < rtol, f"{name}: relative error {err:.2e}"


@settings(max_examples=30, deadline=None)
@given(n_layers=st.integers(1, 3), n_heads=st.integers(1, 3), d_head=st.sampled_from([1, 2, 5, 8]),
       seq_len=st.integers(1, 5), batch=st.sampled_from([1, 3, 17, 200, 450]), tied=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_fused_path_matches_the_numpy_backend(n_layers, n_heads, d_head, seq_len, batch, tied, dtype, seed):
    # A LayerNorm over 1 or 2 features passes no gradient to its input (its output is +-1 per
    # feature), so in float32 both paths would only be comparing their rounding noise there.
    assume(dtype == np.float64 or n_heads * d_head >= 3)
    ref, fused = pair(n_layers, n_heads, d_head, tied, dtype, seed=seed)
    tokens, targets = data(ref, batch, seq_len, seed + 1)
    loss_ref = ref.loss_and_grad(tokens, targets)
    loss = fused.loss_and_grad(tokens, targets)
    tol = 1e-10 if dtype == np.float64 else 2e-4
    assert abs(loss - loss_ref) <= tol * max(1.0, abs(loss_ref))
    assert_grads_close(ref, fused, tol)
    logits = fused.forward(tokens)
    assert logits.dtype == dtype and logits.shape == (batch, ref.n_numbers)
    np.testing.assert_allclose(logits, ref.forward(tokens), rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tied", [False, True])
def test_backward_after_a_fused_forward_matches_the_numpy_backend(dtype, tied):
    ref, fused = pair(2, 2, 4, tied=tied, dtype=dtype)
    tokens, _ = data(ref, 300, 4, 3)  # several pieces
    dlogits = np.random.default_rng(4).standard_normal((300, ref.n_numbers)).astype(dtype)
    ref.forward(tokens)
    ref.backward(dlogits)
    fused.forward(tokens)
    fused.backward(dlogits)
    assert_grads_close(ref, fused, 1e-10 if dtype == np.float64 else 2e-4)
    first = fused.grads.copy()
    fused.backward(dlogits)  # written, not accumulated
    np.testing.assert_array_equal(fused.grads, first)


def test_hooks_and_all_positions_take_the_op_by_op_path_with_the_same_result():
    _, fused = pair(2, 2, 4, tied=True, dtype=np.float64)
    tokens, _ = data(fused, 9, 4, 5)
    fast = fused.forward(tokens)
    logits, cache = fused.run_with_cache(tokens, names=["blocks.1.hook_resid_post"])
    np.testing.assert_allclose(logits, fast, rtol=1e-12, atol=1e-12)
    assert cache["blocks.1.hook_resid_post"].shape == (9, 1, 8)
    np.testing.assert_allclose(fused.forward(tokens, all_positions=True)[:, -1], fast, rtol=1e-12, atol=1e-12)


def test_training_steps_match_the_numpy_backend():
    # Three steps of training in float64 with one AdamW update: the gradients of the two paths
    # must keep the weights together (the update itself is tested in test_kernels.py).
    ref, fused = pair(2, 2, 4, tied=False, dtype=np.float64)
    decay = decay_mask(ref.layout).astype(np.float32)
    trainable = np.ones(ref.layout.size, np.float32)
    state = {id(m): (np.zeros_like(m.params), np.zeros_like(m.params)) for m in (ref, fused)}
    for t in range(1, 4):
        tokens, targets = data(ref, 260, 4, 10 + t)
        for m in (ref, fused):
            m.loss_and_grad(tokens, targets)
            adamw_update(m.params, m.grads, *state[id(m)], 1e-2, 0.9, 0.98, 1e-8, 0.01, decay, trainable, t)
    np.testing.assert_allclose(fused.params, ref.params, rtol=1e-9, atol=1e-12)


def test_results_do_not_depend_on_the_thread_count():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one numba thread available")
    _, fused = pair(2, 2, 8, tied=False, dtype=np.float32)
    tokens, targets = data(fused, 512, 4, 6)  # four pieces
    assert len(fused_path.piece_bounds(512)) - 1 == 4
    runs = []
    before = numba.get_num_threads()
    try:
        for n in (1, 2, 1):
            numba.set_num_threads(n)
            loss = fused.loss_and_grad(tokens, targets)
            runs.append((loss, fused.grads.copy(), fused.forward(tokens)))
    finally:
        numba.set_num_threads(before)
    for loss, grads, logits in runs[1:]:
        assert loss == runs[0][0]
        np.testing.assert_array_equal(grads, runs[0][1])
        np.testing.assert_array_equal(logits, runs[0][2])


@pytest.mark.parametrize("where", ["wte.weight", "h.0.mlp.c_fc.weight", "h.1.attn.c_attn.bias", "lm_head.weight"])
def test_nan_weights_propagate_like_the_numpy_backend(where):
    ref, fused = pair(2, 2, 4, tied=False, dtype=np.float32)
    tokens, targets = data(ref, 200, 4, 7)
    row = tokens[0, 0] if where == "wte.weight" else 0  # an embedding row some examples use
    for m in (ref, fused):
        m.weights[where].reshape(-1, m.weights[where].shape[-1])[row, 0] = np.nan
    with np.errstate(all="ignore"):
        nan_logits = np.isnan(fused.forward(tokens))
        np.testing.assert_array_equal(nan_logits, np.isnan(ref.forward(tokens)))
        assert nan_logits.any()
        assert np.isnan(ref.loss_and_grad(tokens, targets)) and np.isnan(fused.loss_and_grad(tokens, targets))
    assert np.isnan(fused.grads).any()
    if where == "wte.weight":  # attention mixes within an example: the others stay finite
        assert not nan_logits.all()


def test_piece_bounds_depend_only_on_the_batch_size():
    for batch in (1, 63, 128, 191, 192, 256, 512, 513, 5000):
        b = fused_path.piece_bounds(batch)
        assert b[0] == 0 and b[-1] == batch and all(hi > lo for lo, hi in zip(b, b[1:]))
        assert len(b) - 1 <= fused_path.MAX_PIECES
    assert len(fused_path.piece_bounds(256)) - 1 == 2  # two threads have a piece each
    e = fused_path.piece_bounds(1000, train=False)
    assert max(hi - lo for lo, hi in zip(e, e[1:])) <= fused_path.EVAL_PIECE


def test_fused_path_rejects_bad_tokens_and_targets():
    _, fused = pair(1, 1, 4, tied=False, dtype=np.float32)
    with pytest.raises(DataError, match="tokens"):
        fused.forward(np.array([[0, fused.vocab_size]]))
    with pytest.raises(DataError, match="targets"):
        fused.loss_and_grad(np.zeros((2, 4), dtype=int), np.array([0, fused.n_numbers]))
    with pytest.raises(DataError, match="targets"):
        fused.loss_and_grad(np.zeros((2, 4), dtype=int), np.array([0]))
    with pytest.raises(ValueError, match="tokens"):
        fused.loss_and_grad(np.zeros((2, 9), dtype=int), np.array([0, 1]))
