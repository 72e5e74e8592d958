"""AdamW over the flat parameter buffer, global-norm gradient clipping, learning-rate schedules.

All parameters live in one contiguous float32 buffer of length ``n`` (see ``params.py``); the
gradients share its layout. The optimizer is therefore a single elementwise pass, and freezing a
parameter (e.g. a fixed Fourier embedding) is a mask over the buffer rather than a separate
parameter group.

Update rule (PyTorch ``torch.optim.AdamW``, step count ``t`` starting at 1)::

    p <- p * (1 - lr * wd)                  where decay_mask (decoupled weight decay)
    m <- b1 * m + (1 - b1) * g
    v <- b2 * v + (1 - b2) * g**2
    p <- p - lr * mhat / (sqrt(vhat) + eps)  with mhat = m / (1 - b1**t), vhat = v / (1 - b2**t)

Entries whose ``trainable_mask`` is False are never touched: their gradient is ignored, they are
not decayed, and their moments stay 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from fourier_toy.errors import CheckpointError, ConfigError, DataError

__all__ = ["AdamW", "NUMPY_UPDATE", "Optimizer", "UpdateRule", "clip_grad_norm", "LRSchedule", "SCHEDULE_KINDS"]

SCHEDULE_KINDS = ("constant", "linear", "cosine")

# Hyperparameters stored next to the moments in state_dict(), as float64 0-d arrays so the
# whole state can go into one safetensors file.
_HYPER_KEYS = ("lr", "beta1", "beta2", "eps", "weight_decay")


def _adamw_update(
    params: np.ndarray,
    grads: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    lr: float,
    b1: float,
    b2: float,
    eps: float,
    wd: float,
    decay_mask_f32: np.ndarray,
    trainable_mask_f32: np.ndarray,
    t: int,
) -> None:
    """One AdamW step in place on ``params`` (n,), ``m`` (n,), ``v`` (n,); all float32.

    ``grads`` (n,) float32 is read only. The masks are float32 (n,) holding exactly 0.0 or 1.0.
    ``t`` is the step number of this update (>= 1). Keeps the signature of a future compiled
    kernel, so everything it needs arrives as arguments.
    """
    live = trainable_mask_f32 != 0
    # np.where rather than a multiply: a NaN gradient in a frozen entry must not leak into m, v.
    g = np.where(live, grads, np.float32(0.0))
    buf = np.empty_like(params)

    if wd != 0.0:
        # The factor is exactly 1.0 where the mask is 0, so frozen/undecayed entries (even inf or
        # NaN ones) keep their bits; elsewhere it is float32(1 - lr*wd), as PyTorch rounds it.
        factor = np.float32(1.0 - lr * wd)
        np.multiply(decay_mask_f32, trainable_mask_f32, out=buf)
        buf *= factor - np.float32(1.0)  # exact (Sterbenz), so buf + 1 == factor where masked
        buf += np.float32(1.0)
        params *= buf

    m *= np.float32(b1)
    np.multiply(g, np.float32(1.0 - b1), out=buf)
    m += buf

    v *= np.float32(b2)
    np.multiply(g, g, out=buf)
    buf *= np.float32(1.0 - b2)
    v += buf

    # PyTorch's arrangement: p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps). Frozen entries
    # have m = v = 0, so their step is 0 / eps = 0 and p - 0 leaves p bit-identical.
    bc1 = 1.0 - b1**t
    bc2_sqrt = math.sqrt(1.0 - b2**t)
    np.sqrt(v, out=buf)
    buf /= np.float32(bc2_sqrt)
    buf += np.float32(eps)
    np.divide(m, buf, out=buf)
    buf *= np.float32(lr / bc1)
    params -= buf


@dataclass(frozen=True)
class UpdateRule:
    """How AdamW applies one step to the flat buffers: the one interface between the optimizer
    and an accelerator (fourier_toy.fast.ENGINE.adamw is the numba one).

    - ``apply(params, grads, m, v, lr, b1, b2, eps, wd, decay_f32, trainable_f32, t)``: the
      whole step in place, with ``_adamw_update``'s signature and results.
    - ``slice_step(params, grads, m, v, lr, b1, b2, eps, wd, decay, trainable, t)``: the same
      step, checked and not yet applied, as an object with ``scalars`` (its constants, one array)
      and ``__call__(lo, hi)`` (apply it to entries lo:hi, in any slicing, on any thread); None
      when the update cannot be cut into slices.
    - ``run_slices(step, n)``: apply such a step to all n entries, slice by slice (on the
      accelerator's threads); given with ``slice_step``.
    """

    apply: Callable[..., None]
    slice_step: Callable[..., Any] | None = None
    run_slices: Callable[[Callable[[int, int], None], int], None] | None = None


NUMPY_UPDATE = UpdateRule(apply=_adamw_update)  # the reference: one numpy pass, never sliced


class Optimizer(Protocol):
    """What a GPT's training step needs of an optimizer (AdamW here)."""

    def step(self, params: np.ndarray, grads: np.ndarray, lr: float | None = None) -> None: ...

    def prepare_step(self, params: np.ndarray, grads: np.ndarray, lr: float | None = None): ...

    def prepare_steps(self, params: np.ndarray, grads: np.ndarray, lrs): ...


def _as_mask(mask: np.ndarray | None, n: int, name: str) -> np.ndarray:
    """A (n,) bool mask from None (all True), a bool array, or a 0/1 numeric array."""
    if mask is None:
        return np.ones(n, dtype=bool)
    arr = np.asarray(mask)
    if arr.shape != (n,):
        raise ConfigError(f"optimizer.{name}: expected shape ({n},), got {arr.shape}")
    if arr.dtype == bool:
        return arr.copy()
    if arr.dtype.kind not in "biuf" or not np.all((arr == 0) | (arr == 1)):
        raise ConfigError(f"optimizer.{name}: expected a bool array or values 0/1")
    return arr != 0


def _check_float(value: Any, name: str, lo: float, hi: float, lo_open: bool, hi_open: bool) -> float:
    """Validate a real hyperparameter lying in the interval lo..hi (open/closed ends)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"optimizer.{name}: expected a number, got {value!r}") from None
    below = x <= lo if lo_open else x < lo
    above = x >= hi if hi_open else x > hi
    if not math.isfinite(x) or below or above:
        interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise ConfigError(f"optimizer.{name}: expected a finite value in {interval}, got {value!r}")
    return x


class AdamW:
    """AdamW state for one flat float32 parameter buffer of length ``n``.

    ``m``, ``v``: float32 (n,) first and second moments; ``t``: number of steps taken.
    ``decay_mask`` (n,) bool selects the entries that get weight decay (GPT-2 practice: matrices
    yes, biases/LayerNorm no); None decays everything. ``trainable_mask`` (n,) bool selects the
    entries that may change at all; None trains everything.
    """

    def __init__(
        self,
        n: int,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        decay_mask: np.ndarray | None = None,
        trainable_mask: np.ndarray | None = None,
        update: UpdateRule = NUMPY_UPDATE,
    ) -> None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ConfigError(f"optimizer.n: expected an integer >= 0, got {n!r}")
        self.n = int(n)
        self.lr = _check_float(lr, "lr", 0.0, math.inf, False, True)
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise ConfigError(f"optimizer.betas: expected two numbers, got {betas!r}") from None
        self.beta1 = _check_float(b1, "beta1", 0.0, 1.0, False, True)
        self.beta2 = _check_float(b2, "beta2", 0.0, 1.0, False, True)
        self.eps = _check_float(eps, "eps", 0.0, math.inf, True, True)
        self.weight_decay = _check_float(weight_decay, "weight_decay", 0.0, math.inf, False, True)

        self.trainable_mask = _as_mask(trainable_mask, self.n, "trainable_mask")
        self.decay_mask = _as_mask(decay_mask, self.n, "decay_mask")
        self._trainable_f32 = self.trainable_mask.astype(np.float32)
        self._decay_f32 = self.decay_mask.astype(np.float32)

        self.m = np.zeros(self.n, dtype=np.float32)
        self.v = np.zeros(self.n, dtype=np.float32)
        self.t = 0
        if not isinstance(update, UpdateRule):
            raise ConfigError(f"optimizer.update: expected an UpdateRule, got {type(update).__name__}")
        self.update = update

    def _check_buffer(self, arr: Any, name: str) -> None:
        if not isinstance(arr, np.ndarray) or arr.dtype != np.float32 or arr.shape != (self.n,):
            got = f"{arr.dtype} {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
            raise DataError(f"optimizer.step {name}: expected a float32 array of shape ({self.n},), got {got}")
        if not arr.flags.c_contiguous:
            raise DataError(f"optimizer.step {name}: expected a contiguous array")

    def step(self, params: np.ndarray, grads: np.ndarray, lr: float | None = None) -> None:
        """Update ``params`` (n,) float32 in place from ``grads`` (n,) float32.

        ``lr`` overrides the stored learning rate for this step (e.g. from an LRSchedule).
        """
        update = self.prepare_step(params, grads, lr)
        if update is not None:
            self.update.run_slices(update, self.n)
            update.commit()
            return
        step_lr = self._checked_step(params, grads, lr)
        self.t += 1
        self.update.apply(
            params, grads, self.m, self.v, step_lr, self.beta1, self.beta2, self.eps,
            self.weight_decay, self._decay_f32, self._trainable_f32, self.t,
        )

    def prepare_step(self, params: np.ndarray, grads: np.ndarray, lr: float | None = None):
        """The next step, checked as step() checks it, for an update function that can be cut
        into slices (an UpdateRule with slice_step); None for one that cannot.

        Returns the rule's step object: ``update(lo, hi)`` applies the step to entries lo:hi (any
        slicing, on any threads); once every entry has been updated, ``update.commit()`` counts
        the step. A step that is never committed must not be applied at all.
        """
        update = self.prepare_steps(params, grads, [lr])
        if update is not None:
            update.scalars = update.scalars[0]
        return update

    def prepare_steps(self, params: np.ndarray, grads: np.ndarray, lrs):
        """prepare_step for len(lrs) steps in a row (an lr of None: the stored one), for a caller
        that applies them in order (GPT.train_steps): the rule's step object whose scalars hold one
        row per step, (K, 9), and whose ``commit(k)`` counts the first k. None for an update
        function that cannot be cut into slices."""
        step_of = self.update.slice_step
        if step_of is None:
            return None
        rates = [self._checked_step(params, grads, lr) for lr in lrs]
        if not rates:
            raise ConfigError("optimizer.prepare_steps lrs: expected at least one step")
        t = self.t
        steps = [step_of(params, grads, self.m, self.v, rate, self.beta1, self.beta2, self.eps, self.weight_decay,
                         self.decay_mask, self.trainable_mask, t + 1 + s) for s, rate in enumerate(rates)]
        update = steps[0]
        update.scalars = np.stack([s.scalars for s in steps])

        def commit(k: int = 1) -> None:
            self.t = t + k

        update.commit = commit
        return update

    def _checked_step(self, params, grads, lr) -> float:
        """The step's learning rate, after checking the buffers."""
        self._check_buffer(params, "params")
        self._check_buffer(grads, "grads")
        if not params.flags.writeable:
            raise DataError("optimizer.step params: array is read-only")
        return self.lr if lr is None else _check_float(lr, "lr", 0.0, math.inf, False, True)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the state as arrays (safetensors-ready).

        Keys: ``m``, ``v`` float32 (n,); ``t`` int64 0-d; ``lr``, ``beta1``, ``beta2``, ``eps``,
        ``weight_decay`` float64 0-d. The masks are not included: they follow from the config.
        """
        state = {"m": self.m.copy(), "v": self.v.copy(), "t": np.array(self.t, dtype=np.int64)}
        for key in _HYPER_KEYS:
            state[key] = np.array(getattr(self, key), dtype=np.float64)
        return state

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        """Restore a ``state_dict()``; raises CheckpointError naming the bad or missing key.

        Nothing is changed unless the whole dict is valid. Moments of frozen entries are
        reset to 0 so that a frozen entry cannot move even if it was trainable when saved.
        """
        for key in ("m", "v", "t", *_HYPER_KEYS):
            if key not in d:
                raise CheckpointError(f"optimizer state: missing key '{key}'")
        moments = {}
        for key in ("m", "v"):
            arr = np.asarray(d[key])
            if arr.shape != (self.n,):
                raise CheckpointError(f"optimizer state '{key}': expected shape ({self.n},), got {arr.shape}")
            if arr.dtype.kind != "f":
                raise CheckpointError(f"optimizer state '{key}': expected a float array, got {arr.dtype}")
            moments[key] = arr.astype(np.float32, copy=True)
        t_arr = np.asarray(d["t"])
        if t_arr.size != 1 or t_arr.dtype.kind not in "iu" or int(t_arr.reshape(-1)[0]) < 0:
            raise CheckpointError(
                f"optimizer state 't': expected one integer >= 0, got {t_arr.dtype} {t_arr.shape}"
            )
        hyper = {}
        for key in _HYPER_KEYS:
            arr = np.asarray(d[key])
            if arr.size != 1 or arr.dtype.kind not in "iuf":
                raise CheckpointError(f"optimizer state '{key}': expected one number, got {arr.dtype} {arr.shape}")
            hyper[key] = float(arr.reshape(-1)[0])
        try:
            _check_float(hyper["lr"], "lr", 0.0, math.inf, False, True)
            _check_float(hyper["beta1"], "beta1", 0.0, 1.0, False, True)
            _check_float(hyper["beta2"], "beta2", 0.0, 1.0, False, True)
            _check_float(hyper["eps"], "eps", 0.0, math.inf, True, True)
            _check_float(hyper["weight_decay"], "weight_decay", 0.0, math.inf, False, True)
        except ConfigError as exc:
            raise CheckpointError(f"optimizer state: {exc}") from None

        frozen = ~self.trainable_mask
        moments["m"][frozen] = 0.0
        moments["v"][frozen] = 0.0
        self.m, self.v = moments["m"], moments["v"]
        self.t = int(t_arr.reshape(-1)[0])
        for key, value in hyper.items():
            setattr(self, key, value)


def clip_grad_norm(grads: np.ndarray, max_norm: float | None) -> float:
    """Scale ``grads`` (any shape, float) in place so its global L2 norm is at most ``max_norm``.

    Returns the norm before clipping (accumulated in float64). ``max_norm`` None or <= 0 only
    measures. A non-finite norm (NaN or inf) leaves ``grads`` untouched and is returned as is,
    so the caller can report divergence instead of silently zeroing the step.
    """
    if not isinstance(grads, np.ndarray) or grads.dtype.kind != "f":
        raise DataError(f"clip_grad_norm grads: expected a float array, got {type(grads).__name__}")
    flat = grads.reshape(-1)  # a view for the contiguous buffers this is used on
    total = 0.0
    chunk = 1 << 20  # float64 accumulation without a full float64 copy of the buffer
    for start in range(0, flat.size, chunk):
        part = flat[start:start + chunk].astype(np.float64)
        # einsum, not np.dot: a BLAS dot would wake (and wait on) a multi-threaded BLAS pool every step.
        total += float(np.einsum("i,i->", part, part))
    norm = math.sqrt(total)
    if not math.isfinite(norm):
        return norm
    if max_norm is not None and max_norm > 0 and norm > max_norm:
        grads *= grads.dtype.type(max_norm / norm)
    return norm


class LRSchedule:
    """Learning rate as a function of the step index (0-based): ``schedule(step) -> lr``.

    Linear warm-up from 0 at step 0 to ``base_lr`` at ``warmup_steps``; then ``constant`` keeps
    ``base_lr``, while ``linear`` and ``cosine`` decay to ``base_lr * min_lr_ratio`` at
    ``total_steps`` and stay there afterwards. Error messages use the config names
    (``train.schedule``, ``train.lr``, ``train.max_steps``, ``train.warmup_steps``,
    ``train.min_lr_ratio``). ``total_steps`` may be 0 for ``constant`` only.
    """

    def __init__(
        self,
        kind: str,
        base_lr: float,
        total_steps: int,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
    ) -> None:
        if kind not in SCHEDULE_KINDS:
            raise ConfigError(f"train.schedule: expected one of {', '.join(SCHEDULE_KINDS)}, got {kind!r}")
        try:
            base = float(base_lr)
        except (TypeError, ValueError):
            base = math.nan
        if not math.isfinite(base) or base < 0:
            raise ConfigError(f"train.lr: expected a finite number >= 0, got {base_lr!r}")
        if not _is_int(total_steps) or total_steps < 0:
            raise ConfigError(f"train.max_steps: expected an integer >= 0, got {total_steps!r}")
        if not _is_int(warmup_steps) or warmup_steps < 0:
            raise ConfigError(f"train.warmup_steps: expected an integer >= 0, got {warmup_steps!r}")
        # A constant schedule never looks at total_steps (a run may have only a time budget);
        # the decaying ones need the step budget to know where they end.
        if kind != "constant":
            if total_steps < 1:
                raise ConfigError(
                    f"train.max_steps: the {kind} schedule needs a step budget >= 1, got {total_steps!r}"
                )
            if warmup_steps > total_steps:
                raise ConfigError(
                    f"train.warmup_steps: expected at most train.max_steps ({total_steps}), got {warmup_steps!r}"
                )
        try:
            ratio = float(min_lr_ratio)
        except (TypeError, ValueError):
            ratio = math.nan
        if not 0.0 <= ratio <= 1.0:  # also rejects NaN
            raise ConfigError(f"train.min_lr_ratio: expected a number in [0, 1], got {min_lr_ratio!r}")
        self.kind = kind
        self.base_lr = base
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.min_lr_ratio = ratio

    def __call__(self, step: int) -> float:
        if not _is_int(step) or step < 0:
            raise ConfigError(f"schedule step: expected an integer >= 0, got {step!r}")
        if step < self.warmup_steps:
            return self.base_lr * step / self.warmup_steps
        if self.kind == "constant":
            return self.base_lr
        min_lr = self.base_lr * self.min_lr_ratio
        span = self.total_steps - self.warmup_steps
        progress = 1.0 if span == 0 else min(1.0, (step - self.warmup_steps) / span)
        if self.kind == "linear":
            return self.base_lr + (min_lr - self.base_lr) * progress
        return min_lr + (self.base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def __repr__(self) -> str:
        return (
            f"LRSchedule(kind={self.kind!r}, base_lr={self.base_lr}, total_steps={self.total_steps}, "
            f"warmup_steps={self.warmup_steps}, min_lr_ratio={self.min_lr_ratio})"
        )


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)
