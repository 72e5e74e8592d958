"""Hypothesis strategies for property tests of Fourier mechanisms.

Every function returns a ``hypothesis.strategies.SearchStrategy``; arguments are checked when the
function is called (one-line ``ArgumentError``, a ``ValueError`` and a ``ConfigError``, naming the
argument). Keyword arguments constrain what is drawn: each accepts a fixed value or a strategy
(drawn values that break a constraint are rejected with ``assume``); None draws from the default
range. Everything random is derived from integers hypothesis draws (``seeds()``), never from
numpy's global state, so a failing example replays and shrinks: toward the smallest task, the
narrowest width, one layer, one head, a learned embedding, seed 0, no noise, fewer periods.

What is drawn (shapes):
- ``max_operands()`` -> int m, a multiple of 5 >= 10. The exact number axis then has N = 2m rows,
  divisible by 10, so periods 2, 2.5, 5, 10 sit on integer frequencies k = N/T (k = 2 for period 10
  at N = 20, the lowest bin the outlier scan reads; see ``fourier.number_axis``).
- ``configs()`` -> ``fourier_toy.config.Config`` that passes ``config.validate``: n_heads divides
  d_model, max_operand from ``max_operands()``, d_model >= ``data.filter_width(max_operand) +
  filter_margin`` so both band filters keep a null space of at least ``filter_margin`` dimensions.
- ``random_models()`` -> ``ModelCase(model, cfg)``: a GPT (p = 2m + 1 number tokens, weights
  ``model.params`` (size,), ``model.W_U`` (p, d)) at GPT-2's init from ``cfg.seed``, by default
  with perturbed LayerNorm gains and biases so that LayerNorm handling is exercised.
- ``number_rows()`` -> ``RowsCase(W (n_rows, width) float64, Planted)``: ``data.planted_rows`` with periods,
  noise and seed drawn; Planted says what was put in (periods, their k, N, noise, seed).
- ``known_answer_models()`` -> ``KnownAnswer(model, cfg, spec)``: ``fourier_toy.plant.plant(spec)``
  of a drawn ``PlantSpec``; a model whose mechanism is known by construction.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from fourier_toy import config as config_mod
from fourier_toy.analysis.fourier import KEY_PERIODS
from fourier_toy.config import Config
from fourier_toy.errors import FourierToyError
from fourier_toy.testing import data
from fourier_toy.testing._args import ArgumentError, check_choice, check_float, check_int

__all__ = ["seeds", "max_operands", "configs", "ModelCase", "random_models", "number_rows", "RowsCase",
           "KnownAnswer", "known_answer_models", "MIN_MAX_OPERAND", "DEFAULT_MAX_WIDTH"]

# N = 20 is the smallest axis on which every key period is a scanned bin (period 10 at k = 2).
MIN_MAX_OPERAND = 10
DEFAULT_MAX_OPERAND = 20  # default upper end of max_operand: N <= 40 keeps models small
DEFAULT_MAX_WIDTH = 64  # default upper end of d_model
SEED_MAX = 2**32 - 1
# The sub-stream of a model's seed that perturbs its LayerNorms and biases (config.py lists the
# project's streams; this one is the testing package's own).
RNG_PERTURB = 0x7E57


def seeds() -> SearchStrategy[int]:
    """Integers 0..2**32-1 for numpy Generators; shrink toward 0."""
    return st.integers(0, SEED_MAX)


def _strategy(name: str, value, default: SearchStrategy, check) -> SearchStrategy:
    """A fixed value (checked now), a strategy (drawn), or None (the default strategy)."""
    if value is None:
        return default
    if isinstance(value, SearchStrategy):
        return value
    return st.just(check(name, value))


def _multiple_of_5(name: str, value) -> int:
    m = check_int(name, value, MIN_MAX_OPERAND)
    if m % 5:
        raise ArgumentError(f"{name}: must be a multiple of 5 >= {MIN_MAX_OPERAND} (so N = 2 * max_operand "
                            f"puts periods 2, 2.5, 5, 10 on integer frequencies), got {value}")
    return m


def max_operands(min_value: int = MIN_MAX_OPERAND, max_value: int = DEFAULT_MAX_OPERAND) -> SearchStrategy[int]:
    """Multiples of 5 in [min_value, max_value] (both >= 10); shrink toward min_value."""
    lo = check_int("min_value", min_value, MIN_MAX_OPERAND)
    hi = check_int("max_value", max_value, MIN_MAX_OPERAND)
    first, last = -(-lo // 5), hi // 5
    if first > last:
        raise ArgumentError(f"max_value: no multiple of 5 in [{lo}, {hi}]")
    return st.integers(first, last).map(lambda j: 5 * j)


# ---------------------------------------------------------------------------------------------- configs

_BASE_TRAIN = {"batch_size": 64, "max_steps": 200, "eval_every": 100, "checkpoint_every": 200}


def configs(*, max_operand=None, d_model=None, n_layers=None, n_heads=None, embedding=None,
            tied: bool = False, backend: str = "numpy", filter_margin: int = 4,
            max_width: int = DEFAULT_MAX_WIDTH, seed=None,
            overrides: Mapping[str, Any] | None = None) -> SearchStrategy[Config]:
    """Valid ``Config``s of small models whose filters and spectra are meaningful.

    max_operand: int (a multiple of 5 >= 10) or strategy; default ``max_operands()`` (10..20).
    d_model: int or strategy; default a multiple of n_heads from ``filter_width(max_operand) +
    filter_margin`` to ``max_width`` (shrinking toward the narrowest). A fixed d_model restricts
    the default max_operand to the task sizes it is wide enough for.
    n_layers: int or strategy; default 1..2. n_heads: int or strategy; default 1, 2 or 4 (those
    dividing a fixed d_model). embedding: "learned", "fourier" (frozen Fourier rows) or a strategy;
    default either. tied, backend: fixed. seed: int or strategy; default ``seeds()``.
    overrides: {"section.key": value} set last (e.g. {"train.max_steps": 300}), as
    ``fourier_toy.load_config`` does; checked per drawn config.
    Every drawn config passes ``config.validate``.
    """
    margin = check_int("filter_margin", filter_margin, 0)
    max_width = check_int("max_width", max_width, 1)
    if not isinstance(tied, bool):
        raise ArgumentError(f"tied: expected true or false, got {tied!r}")
    check_choice("backend", backend, ("numpy", "numba"))
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ArgumentError(f"overrides: expected a mapping of 'section.key' to values, got {type(overrides).__name__}")
    overrides = dict(overrides or {})
    for key in overrides:
        if not isinstance(key, str):
            raise ArgumentError(f"overrides: keys must be 'section.key' strings, got {key!r}")

    fixed_d = None
    if d_model is not None and not isinstance(d_model, SearchStrategy):
        fixed_d = check_int("d_model", d_model, 1, 65_536)
    if max_operand is None:
        if fixed_d is None:
            mo = max_operands()
        else:
            fits = [m for m in range(MIN_MAX_OPERAND, DEFAULT_MAX_OPERAND + 1, 5)
                    if data.filter_width(m) + margin <= fixed_d]
            if not fits:
                need = data.filter_width(MIN_MAX_OPERAND) + margin
                raise ArgumentError(f"d_model: {fixed_d} is too narrow for the filters at every max_operand "
                                    f"in {MIN_MAX_OPERAND}..{DEFAULT_MAX_OPERAND} (needs >= {need} at "
                                    f"max_operand {MIN_MAX_OPERAND} with filter_margin {margin})")
            mo = st.sampled_from(fits)
    else:
        mo = _strategy("max_operand", max_operand, None, _multiple_of_5)
        if fixed_d is not None and not isinstance(max_operand, SearchStrategy):
            need = data.filter_width(max_operand) + margin
            if fixed_d < need:
                raise ArgumentError(f"d_model: {fixed_d} leaves the filters no {margin}-dimensional null space "
                                    f"at max_operand {max_operand} (needs >= {need})")
    layers = _strategy("n_layers", n_layers, st.integers(1, 2), lambda n, v: check_int(n, v, 1, 64))
    if n_heads is None:
        heads = (st.sampled_from([h for h in (1, 2, 4) if fixed_d % h == 0]) if fixed_d is not None
                 else st.sampled_from([1, 2, 4]))
    else:
        heads = _strategy("n_heads", n_heads, None, lambda n, v: check_int(n, v, 1, 1024))
        if fixed_d is not None and not isinstance(n_heads, SearchStrategy) and fixed_d % n_heads:
            raise ArgumentError(f"n_heads: {n_heads} does not divide d_model {fixed_d}")
    emb = _strategy("embedding", embedding, st.sampled_from(["learned", "fourier"]),
                    lambda n, v: check_choice(n, v, ("learned", "fourier")))
    seed_st = _strategy("seed", seed, seeds(), lambda n, v: check_int(n, v, 0, 2**63 - 1))
    return _configs(mo, d_model, layers, heads, emb, tied, backend, margin, max_width, seed_st, overrides)


@st.composite
def _configs(draw, mo_st, d_model, layers_st, heads_st, emb_st, tied, backend, margin, max_width, seed_st,
             overrides) -> Config:
    mo = draw(mo_st)
    assume(isinstance(mo, int) and mo >= MIN_MAX_OPERAND and mo % 5 == 0)
    need = data.filter_width(mo) + margin
    h = draw(heads_st)
    if d_model is None:
        lo_units, hi_units = -(-need // h), max(-(-need // h), max_width // h)
        d = h * draw(st.integers(lo_units, hi_units))
    else:
        d = draw(d_model) if isinstance(d_model, SearchStrategy) else d_model
        assume(d % h == 0 and d >= need)
    kind = draw(emb_st)
    cfg = config_mod.from_dict({
        "task": {"max_operand": mo},
        "model": {"d_model": d, "n_layers": draw(layers_st), "n_heads": h, "tied": tied, "backend": backend},
        "embedding": {"kind": kind, "freeze": kind == "fourier"},
        "train": dict(_BASE_TRAIN),
        "seed": draw(seed_st),
    })
    for key, value in overrides.items():
        config_mod.set_value(cfg, key, list(value) if isinstance(value, tuple) else value)
    config_mod.validate(cfg)
    return cfg


# ---------------------------------------------------------------------------------------------- models

class ModelCase(NamedTuple):
    """A drawn model and its config (unpacks as ``model, cfg = case``)."""

    model: Any  # fourier_toy.nn.model.GPT
    cfg: Config

    def __repr__(self) -> str:
        c = self.cfg
        return (f"ModelCase(max_operand={c.task.max_operand}, d_model={c.model.d_model}, "
                f"n_layers={c.model.n_layers}, n_heads={c.model.n_heads}, embedding={c.embedding.kind!r}, "
                f"tied={c.model.tied}, seed={c.seed}, dtype={self.model.params.dtype})")


_DTYPES = {"float64": np.float64, "float32": np.float32}


def random_models(configs_strategy: SearchStrategy[Config] | None = None, *, dtype: str = "float64",
                  init: str = "perturbed") -> SearchStrategy[ModelCase]:
    """``ModelCase(model, cfg)`` with a GPT built from a drawn config (default ``configs()``).

    The weights come from ``training.build.build_model(cfg)``: GPT-2's init from the config's
    seed (and, for a Fourier embedding, its number rows). init="perturbed" (default) then draws,
    from the stream [seed, RNG_PERTURB], LayerNorm gains in U(0.5, 1.5), LayerNorm biases
    N(0, 0.1^2) and linear biases N(0, 0.02^2), so that a property that ignores a LayerNorm or a
    bias fails; init="gpt2" keeps GPT-2's init (unit gains, zero biases). dtype: "float64"
    (default; exact identities hold to ~1e-12) or "float32" (as trained).
    """
    if configs_strategy is None:
        configs_strategy = configs()
    elif not isinstance(configs_strategy, SearchStrategy):
        raise ArgumentError(f"configs_strategy: expected a SearchStrategy of Config, "
                            f"got {type(configs_strategy).__name__}")
    check_choice("dtype", dtype, tuple(_DTYPES))
    check_choice("init", init, ("perturbed", "gpt2"))
    return st.builds(lambda cfg: build_case(cfg, dtype, init), configs_strategy)


def build_case(cfg: Config, dtype: str = "float64", init: str = "perturbed") -> ModelCase:
    """The ``random_models`` model of one config (deterministic: a pure function of cfg)."""
    from fourier_toy.training.build import build_model

    if not isinstance(cfg, Config):
        raise ArgumentError(f"cfg: expected a fourier_toy.config.Config, got {type(cfg).__name__}")
    check_choice("dtype", dtype, tuple(_DTYPES))
    check_choice("init", init, ("perturbed", "gpt2"))
    model, _ = build_model(cfg, dtype=_DTYPES[dtype])
    if init == "perturbed":
        rng = np.random.default_rng([cfg.seed, RNG_PERTURB])
        for name, view in model.weights.items():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                view[...] = rng.uniform(0.5, 1.5, view.shape)
            elif name.endswith(("ln_1.bias", "ln_2.bias", "ln_f.bias")):
                view[...] = rng.normal(0.0, 0.1, view.shape)
            elif name.endswith(".bias"):
                view[...] = rng.normal(0.0, 0.02, view.shape)
    return ModelCase(model, cfg)


# ---------------------------------------------------------------------------------------------- rows

def _periods_value(name, value) -> tuple:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ArgumentError(f"{name}: expected a sequence of periods > 1, got {value!r}")
    out = tuple(check_float(name, T, 1.0, None, lo_open=True) for T in value)
    if len(set(out)) != len(out):
        raise ArgumentError(f"{name}: periods must be distinct, got {list(value)!r}")
    return out


def number_rows(*, n_rows=None, width=None, periods=None, noise=None, amplitude: float = 1.0,
                seed=None) -> SearchStrategy[RowsCase]:
    """``RowsCase(W (n_rows, width) float64, Planted)`` from ``data.planted_rows``: number rows with periods planted.

    n_rows: int or strategy; default 2m + 1 for m from ``max_operands()`` (a task's p, so the exact
    axis keeps N = 2m rows and every key period is a scanned component). width: default 8..64.
    periods: a sequence or a strategy of tuples; default a non-empty subset of (2, 2.5, 5, 10), in
    that order. noise: the noise RMS relative to each period's RMS ``amplitude``; float or
    strategy, default 0..1 (every draw in that range is found by ``assert_periods_found``, see its
    calibration). seed: default ``seeds()``. A drawn period that is not a component of the drawn
    n_rows' axis is rejected (``assume``); a fixed pair that can never match raises now.
    """
    amplitude = check_float("amplitude", amplitude, 0.0, None, lo_open=True)
    rows_st = _strategy("n_rows", n_rows, max_operands().map(lambda m: 2 * m + 1),
                        lambda n, v: check_int(n, v, 3))
    width_st = _strategy("width", width, st.integers(8, 64), lambda n, v: check_int(n, v, 1))
    periods_st = _strategy("periods", periods,
                           st.sets(st.sampled_from(KEY_PERIODS), min_size=1).map(
                               lambda s: tuple(T for T in KEY_PERIODS if T in s)),
                           _periods_value)
    noise_st = _strategy("noise", noise, st.floats(0.0, 1.0), lambda n, v: check_float(n, v, 0.0))
    seed_st = _strategy("seed", seed, seeds(), lambda n, v: check_int(n, v, 0))
    if n_rows is not None and periods is not None and not isinstance(n_rows, SearchStrategy) \
            and not isinstance(periods, SearchStrategy):
        N = data.planted_rows(n_rows, 1)[1].N
        missing = [T for T in _periods_value("periods", periods) if data.component_of(N, T) is None]
        if missing:
            raise ArgumentError(f"periods: {missing} are not components of the exact axis of {n_rows} rows (N = {N})")
    return _number_rows(rows_st, width_st, periods_st, noise_st, seed_st, amplitude)


class RowsCase(NamedTuple):
    """``number_rows()``'s draw: W (n_rows, width) and what was planted (unpacks as ``W, planted``).
    Its repr shows W's shape, not its entries, so a falsifying example stays readable."""

    W: np.ndarray
    planted: data.Planted

    def __repr__(self) -> str:
        return f"RowsCase(W=<{self.W.shape[0]}x{self.W.shape[1]} {self.W.dtype}>, planted={self.planted!r})"


@st.composite
def _number_rows(draw, rows_st, width_st, periods_st, noise_st, seed_st, amplitude):
    n_rows = draw(rows_st)
    periods = tuple(draw(periods_st))
    N = n_rows - 1 if n_rows % 2 else n_rows
    assume(all(data.component_of(N, T) is not None for T in periods))
    return RowsCase(*data.planted_rows(n_rows, draw(width_st), periods, amplitude=amplitude,
                                       noise=draw(noise_st), seed=draw(seed_st)))


# ---------------------------------------------------------------------------------------------- known answers

class KnownAnswer(NamedTuple):
    """A planted model: ``plant(spec)``'s model and config, and the spec (unpacks as a 3-tuple)."""

    model: Any  # fourier_toy.nn.model.GPT, numpy backend
    cfg: Config
    spec: Any  # fourier_toy.plant.PlantSpec

    def __repr__(self) -> str:
        return f"KnownAnswer({self.spec!r})"


# Defaults for the PlantSpec fields this module draws; any other field keeps PlantSpec's default.
def _plant_defaults() -> dict:
    return {
        "max_operand": st.sampled_from([30, 60]),
        "high_module": st.sampled_from(["attn", "mlp"]),
        "noise": st.sampled_from([0.0, 0.01]),
        "seed": st.integers(0, 2**16 - 1),
    }


def known_answer_models(**fields) -> SearchStrategy[KnownAnswer]:
    """``KnownAnswer(model, cfg, spec)``: a ``fourier_toy.plant.PlantSpec`` drawn and built with ``plant``.

    fields: PlantSpec field -> fixed value or strategy; fields not given keep PlantSpec's defaults,
    except these drawn by default: max_operand (30 or 60), high_module ("attn" or "mlp", with
    low_module the other unless given), noise (0 or 0.01) and seed. A spec PlantSpec refuses is a
    bad argument (ArgumentError naming the field) when given as a fixed value; a drawn combination
    it refuses is rejected (``assume``). The model's mechanism is known by construction:
    ``spec.high_module`` carries the high band (periods ``spec.high_periods``), ``spec.low_module``
    the low band.
    """
    plant_mod = _plant()
    names = {f.name for f in dataclasses.fields(plant_mod.PlantSpec)}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise ArgumentError(f"{unknown[0]}: not a PlantSpec field; fields: {', '.join(sorted(names))}")
    draws = {k: v for k, v in _plant_defaults().items() if k in names}
    for k, v in fields.items():
        draws[k] = v if isinstance(v, SearchStrategy) else st.just(v)
    # Refuse fixed values PlantSpec rejects now (with its defaults for the rest), not at the first example.
    fixed = {k: v for k, v in fields.items() if not isinstance(v, SearchStrategy)}
    if fixed:
        if "high_module" in fixed and "low_module" not in fields:
            fixed["low_module"] = "mlp" if fixed["high_module"] == "attn" else "attn"
        _spec(plant_mod, fixed)
    return _known_answer_models(draws, "low_module" in fields)


def _plant():
    try:
        from fourier_toy import plant as plant_mod
    except ImportError as err:  # pragma: no cover - the plant package is part of fourier_toy
        raise ArgumentError(f"known_answer_models: fourier_toy.plant is not available ({err})") from None
    return plant_mod


def _spec(plant_mod, values: dict):
    try:
        return plant_mod.PlantSpec(**values)
    except (FourierToyError, ValueError, TypeError) as err:
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ArgumentError(text if ":" in text else f"spec: {text}") from None


@st.composite
def _known_answer_models(draw, draws, low_given):
    plant_mod = _plant()
    values = {k: draw(s) for k, s in draws.items()}
    spec_fields = {f.name for f in dataclasses.fields(plant_mod.PlantSpec)}
    if not low_given and "high_module" in values and "low_module" in spec_fields:
        values["low_module"] = "mlp" if values["high_module"] == "attn" else "attn"
    try:
        spec = plant_mod.PlantSpec(**values)
    except (FourierToyError, ValueError, TypeError):
        assume(False)  # a drawn combination PlantSpec refuses (e.g. a d_model too narrow for its modules)
    model, cfg = plant_mod.plant(spec)
    return KnownAnswer(model, cfg, spec)
