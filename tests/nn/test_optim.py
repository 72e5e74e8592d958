"""AdamW, gradient clipping and LR schedules against independent float64 references."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fourier_toy.errors import CheckpointError, ConfigError, DataError
from fourier_toy.nn.optim import AdamW, LRSchedule, clip_grad_norm
from fourier_toy.runs.tensors import load_tensors, save_tensors


def reference_adamw(p0, grad_seq, lr, b1, b2, eps, wd, decay):
    """Scalar float64 AdamW straight from the published formulas (decoupled decay first)."""
    p = [float(x) for x in p0]
    m = [0.0] * len(p)
    v = [0.0] * len(p)
    for t, g in enumerate(grad_seq, start=1):
        for i in range(len(p)):
            if decay[i]:
                p[i] = p[i] - lr * wd * p[i]
            m[i] = b1 * m[i] + (1 - b1) * float(g[i])
            v[i] = b2 * v[i] + (1 - b2) * float(g[i]) ** 2
            mhat = m[i] / (1 - b1**t)
            vhat = v[i] / (1 - b2**t)
            p[i] = p[i] - lr * mhat / (math.sqrt(vhat) + eps)
    return np.array(p), np.array(m), np.array(v)


def test_adamw_matches_scalar_reference_over_three_steps():
    p0 = np.array([0.5, -1.25, 2.0, 0.0], dtype=np.float32)
    grads = [
        np.array([0.1, -0.3, 2.0, 1e-3], dtype=np.float32),
        np.array([-0.2, -0.1, 0.5, 4.0], dtype=np.float32),
        np.array([0.05, 0.7, -1.5, 0.0], dtype=np.float32),
    ]
    decay = [True, True, False, True]
    lr, b1, b2, eps, wd = 0.05, 0.9, 0.98, 1e-8, 0.1

    opt = AdamW(4, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, decay_mask=np.array(decay))
    params = p0.copy()
    for g in grads:
        opt.step(params, g)
    ref_p, ref_m, ref_v = reference_adamw(p0, grads, lr, b1, b2, eps, wd, decay)

    assert opt.t == 3
    np.testing.assert_allclose(params, ref_p, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(opt.m, ref_m, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(opt.v, ref_v, rtol=1e-5, atol=1e-12)
    # The run must have moved every entry well beyond the tolerance, or the comparison is empty.
    assert np.all(np.abs(params - p0) > 1e-3)


def test_first_step_is_lr_times_sign_of_gradient():
    # After one step mhat = g and vhat = g**2, so the Adam step is lr * g / (|g| + eps).
    p0 = np.array([1.0, -2.0, 3.0], dtype=np.float32)
    g = np.array([0.25, -4.0, 1e-2], dtype=np.float32)
    lr, wd, eps = 1e-2, 0.5, 1e-8
    opt = AdamW(3, lr=lr, eps=eps, weight_decay=wd)
    params = p0.copy()
    opt.step(params, g)
    expected = p0.astype(np.float64) * (1 - lr * wd) - lr * g / (np.abs(g) + eps)
    np.testing.assert_allclose(params, expected, rtol=1e-6)


def test_step_lr_argument_overrides_stored_lr():
    p0 = np.array([1.0, 1.0], dtype=np.float32)
    g = np.array([1.0, -1.0], dtype=np.float32)
    opt = AdamW(2, lr=1.0, weight_decay=0.0)
    params = p0.copy()
    opt.step(params, g, lr=1e-3)
    np.testing.assert_allclose(params, [1.0 - 1e-3, 1.0 + 1e-3], rtol=1e-6)


def test_decay_mask_exempts_entries():
    # Zero gradients: the only change is decoupled weight decay on the masked entries.
    p0 = np.array([1.0, -2.0, 3.0, -4.0], dtype=np.float32)
    decay = np.array([True, False, True, False])
    lr, wd = 0.1, 0.5
    opt = AdamW(4, lr=lr, weight_decay=wd, decay_mask=decay)
    params = p0.copy()
    for _ in range(3):
        opt.step(params, np.zeros(4, dtype=np.float32))
    np.testing.assert_allclose(params[decay], p0[decay] * (1 - lr * wd) ** 3, rtol=1e-6)
    assert params[~decay].tobytes() == p0[~decay].tobytes()


@st.composite
def masked_problem(draw):
    n = draw(st.integers(1, 40))
    finite = st.floats(-10, 10, width=32, allow_nan=False)
    params = draw(hnp.arrays(np.float32, n, elements=finite))
    trainable = draw(hnp.arrays(np.bool_, n))
    decay = draw(hnp.arrays(np.bool_, n))
    steps = draw(st.integers(1, 5))
    # Frozen entries may even carry non-finite gradients; they must still not move.
    any_float = st.floats(width=32, allow_nan=True, allow_infinity=True)
    grads = []
    for _ in range(steps):
        g = draw(hnp.arrays(np.float32, n, elements=finite))
        junk = draw(hnp.arrays(np.float32, n, elements=any_float))
        grads.append(np.where(trainable, g, junk).astype(np.float32))
    return params, trainable, decay, grads


@settings(max_examples=60, deadline=None)
@given(masked_problem())
def test_trainable_mask_freezes_entries_exactly(problem):
    params0, trainable, decay, grads = problem
    n = params0.size
    masked = AdamW(n, lr=0.05, weight_decay=0.1, decay_mask=decay, trainable_mask=trainable)
    full = AdamW(n, lr=0.05, weight_decay=0.1, decay_mask=decay)
    p_masked, p_full = params0.copy(), params0.copy()
    for g in grads:
        masked.step(p_masked, g)
        full.step(p_full, np.where(trainable, g, 0).astype(np.float32))

    frozen = ~trainable
    assert p_masked[frozen].tobytes() == params0[frozen].tobytes()
    assert not masked.m[frozen].any() and not masked.v[frozen].any()
    # Entries are independent, so the trainable ones follow the unmasked optimizer bit for bit.
    assert p_masked[trainable].tobytes() == p_full[trainable].tobytes()


def test_state_dict_round_trip_through_safetensors_continues_identically(tmp_path):
    rng = np.random.default_rng(0)
    n = 64
    decay = rng.random(n) < 0.7
    trainable = rng.random(n) < 0.8
    grads = [rng.standard_normal(n).astype(np.float32) for _ in range(6)]
    params = rng.standard_normal(n).astype(np.float32)

    a = AdamW(n, lr=3e-3, weight_decay=0.05, decay_mask=decay, trainable_mask=trainable)
    for g in grads[:3]:
        a.step(params, g)
    save_tensors(tmp_path / "optim.safetensors", a.state_dict())
    resumed_params = params.copy()

    b = AdamW(n, lr=1.0, weight_decay=0.05, decay_mask=decay, trainable_mask=trainable)
    state, _ = load_tensors(tmp_path / "optim.safetensors")
    b.load_state_dict(state)
    assert b.t == 3 and b.lr == pytest.approx(3e-3)
    for g in grads[3:]:
        a.step(params, g)
        b.step(resumed_params, g)
    assert params.tobytes() == resumed_params.tobytes()
    assert a.m.tobytes() == b.m.tobytes() and a.v.tobytes() == b.v.tobytes()


def test_load_state_dict_names_the_bad_key():
    opt = AdamW(5, lr=1e-3)
    good = opt.state_dict()
    bad = dict(good, v=np.zeros(4, dtype=np.float32))
    with pytest.raises(CheckpointError, match="'v'"):
        opt.load_state_dict(bad)
    missing = {k: val for k, val in good.items() if k != "t"}
    with pytest.raises(CheckpointError, match="'t'"):
        opt.load_state_dict(missing)
    with pytest.raises(CheckpointError, match="'beta2'"):
        opt.load_state_dict(dict(good, beta2=np.array([0.9, 0.9])))


def test_constructor_and_step_reject_bad_input():
    with pytest.raises(ConfigError, match="optimizer.beta1"):
        AdamW(3, lr=1e-3, betas=(1.0, 0.98))
    with pytest.raises(ConfigError, match="optimizer.lr"):
        AdamW(3, lr=-1.0)
    with pytest.raises(ConfigError, match="optimizer.decay_mask"):
        AdamW(3, lr=1e-3, decay_mask=np.ones(4, dtype=bool))
    opt = AdamW(3, lr=1e-3)
    with pytest.raises(DataError, match="grads"):
        opt.step(np.zeros(3, np.float32), np.zeros(3, np.float64))


# ----------------------------------------------------------------------------- clipping

def test_clip_grad_norm_scales_to_max_norm():
    rng = np.random.default_rng(1)
    g = (rng.standard_normal(10_000) * 3).astype(np.float32)
    before = np.linalg.norm(g.astype(np.float64))
    returned = clip_grad_norm(g, 1.5)
    assert returned == pytest.approx(before, rel=1e-12)
    after = np.linalg.norm(g.astype(np.float64))
    assert after == pytest.approx(1.5, rel=1e-6)


def test_clip_grad_norm_leaves_small_or_disabled_gradients_alone():
    g = np.array([0.3, -0.4], dtype=np.float32)  # norm 0.5
    original = g.copy()
    assert clip_grad_norm(g, 1.0) == pytest.approx(0.5, rel=1e-7)
    assert g.tobytes() == original.tobytes()
    big = np.array([30.0, -40.0], dtype=np.float32)
    big_original = big.copy()
    for disabled in (None, 0.0, -1.0):
        assert clip_grad_norm(big, disabled) == pytest.approx(50.0)
        assert big.tobytes() == big_original.tobytes()


def test_clip_grad_norm_nan_returns_nan_and_keeps_grads():
    g = np.array([1.0, np.nan, 100.0], dtype=np.float32)
    original = g.copy()
    assert math.isnan(clip_grad_norm(g, 1.0))
    assert g.tobytes() == original.tobytes()


# ----------------------------------------------------------------------------- schedules

def test_warmup_goes_linearly_from_zero_to_base():
    s = LRSchedule("cosine", base_lr=1e-3, total_steps=1000, warmup_steps=100, min_lr_ratio=0.1)
    assert s(0) == 0.0
    assert s(50) == pytest.approx(5e-4)
    assert s(100) == pytest.approx(1e-3)


def test_cosine_midpoint_and_end():
    base, ratio = 2e-3, 0.1
    s = LRSchedule("cosine", base_lr=base, total_steps=1100, warmup_steps=100, min_lr_ratio=ratio)
    min_lr = base * ratio
    assert s(600) == pytest.approx((base + min_lr) / 2)
    # A quarter of the way the cosine is above the linear interpolation.
    assert s(350) == pytest.approx(min_lr + (base - min_lr) * (1 + math.cos(math.pi / 4)) / 2)
    assert s(1100) == pytest.approx(min_lr)
    assert s(5000) == pytest.approx(min_lr)


def test_linear_decay_and_constant():
    lin = LRSchedule("linear", base_lr=1.0, total_steps=100, warmup_steps=0, min_lr_ratio=0.0)
    assert lin(0) == 1.0 and lin(25) == pytest.approx(0.75) and lin(100) == 0.0 and lin(150) == 0.0
    const = LRSchedule("constant", base_lr=0.5, total_steps=100, warmup_steps=10, min_lr_ratio=0.2)
    assert const(5) == pytest.approx(0.25) and const(10) == 0.5 and const(1000) == 0.5
    # A constant schedule works without a step budget (time-budgeted runs).
    unbounded = LRSchedule("constant", base_lr=0.5, total_steps=0, warmup_steps=4)
    assert unbounded(2) == pytest.approx(0.25) and unbounded(10**6) == 0.5


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(kind="cos"), "train.schedule"),
        (dict(base_lr=-1.0), "train.lr"),
        (dict(total_steps=0), "train.max_steps"),
        (dict(total_steps=-1, kind="constant"), "train.max_steps"),
        (dict(warmup_steps=200), "train.warmup_steps"),
        (dict(warmup_steps=-1, kind="constant"), "train.warmup_steps"),
        (dict(min_lr_ratio=1.5), "train.min_lr_ratio"),
    ],
)
def test_schedule_validation_names_the_field(kwargs, field):
    args = dict(kind="cosine", base_lr=1e-3, total_steps=100, warmup_steps=10, min_lr_ratio=0.0)
    args.update(kwargs)
    with pytest.raises(ConfigError, match=field):
        LRSchedule(**args)


def test_schedule_error_lists_allowed_kinds():
    with pytest.raises(ConfigError) as info:
        LRSchedule("cos", 1e-3, 10)
    assert str(info.value) == "train.schedule: expected one of constant, linear, cosine, got 'cos'"
