"""The backend a config names, attached: a GPT with or without the fast engine, and AdamW's
matching update rule. The one place that reads `model.backend`."""

from __future__ import annotations

import numpy as np

from fourier_toy.config import ModelConfig
from fourier_toy.fast import ENGINE
from fourier_toy.nn.model import GPT
from fourier_toy.nn.optim import NUMPY_UPDATE, UpdateRule


def make_gpt(mcfg: ModelConfig, n_numbers: int, params: np.ndarray | None = None,
             rng: np.random.Generator | None = None, dtype=np.float32) -> GPT:
    """A GPT on the backend `mcfg.backend` names: "numba" attaches the fast engine, "numpy" runs
    the reference ops alone. params (layout.size,) or None for GPT-2's init drawn from rng."""
    engine = ENGINE if mcfg.backend == "numba" else None
    return GPT(mcfg, n_numbers, params=params, rng=rng, dtype=dtype, engine=engine)


def update_rule(model: GPT) -> UpdateRule:
    """AdamW's update rule for a model: its engine's, or the numpy reference."""
    return NUMPY_UPDATE if model.engine is None else model.engine.adamw
