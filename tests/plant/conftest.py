"""Shared by the known-answer tests: plant variants as hypothesis strategies, a written run, and
the probe for the filters' rank tolerance.

Every property test here runs with ``PLANT_SETTINGS(n)``: derandomized, no example database, no
deadline and no shrinking (a failure reports the derandomized example itself, which reruns as
is), so CI sees the same examples on every run and the directory stays under a minute.
"""

from __future__ import annotations

import contextlib
import itertools
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from fourier_toy.errors import ConfigError
from fourier_toy.plant import PlantSpec, write_plant
from fourier_toy.plant.spec import HARMONICS


def PLANT_SETTINGS(max_examples: int):
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    phases=(Phase.explicit, Phase.generate),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _valid_period_sets() -> list[tuple[float, ...]]:
    out = []
    for r in range(1, 6):
        for combo in itertools.combinations(sorted(HARMONICS.values()), r):
            try:
                PlantSpec(high_periods=combo)
            except ConfigError:
                continue
            out.append(combo)
    return out


VALID_PERIODS = _valid_period_sets()  # every subset of 10/j that singles out n mod 10
MODULES = ("attn", "mlp")


@st.composite
def plant_specs(draw, max_operands=(20, 30, 40), widths=(96, 128, 160), layers=(2, 3),
                blocks=(3, 5), periods=None, noise=st.just(0.0)):
    """Valid PlantSpecs over the variants: task size, width, heads, depth, which module writes
    which band, the period set, the magnitude block, the seed (the split), and noise."""
    d = draw(st.sampled_from(widths))
    heads = draw(st.sampled_from([h for h in (2, 4, 8) if d % h == 0]))
    kw = dict(max_operand=draw(st.sampled_from(max_operands)), d_model=d, n_heads=heads,
              n_layers=draw(st.sampled_from(layers)), high_module=draw(st.sampled_from(MODULES)),
              low_module=draw(st.sampled_from(MODULES)),
              high_periods=draw(st.sampled_from(periods or VALID_PERIODS)),
              magnitude_block=draw(st.sampled_from(blocks)), seed=draw(st.integers(0, 3)), noise=draw(noise))
    return PlantSpec(**kw)


@contextlib.contextmanager
def written(spec: PlantSpec):
    """The spec written as a run directory in a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        yield write_plant(spec, Path(tmp) / "run")


def filters_count_float32_rounding() -> bool:
    """Whether analysis.filters' rank tolerance treats float32 rounding as rank.

    A float32 W_U whose two columns are exactly one low and one high Fourier component before
    rounding has rank 1 in the high band; a tolerance below float32's resolution (numpy's default,
    float64 eps) also counts the ~6e-8 rounding of the low column. Then "remove the high band"
    also removes every low direction W_U reads (and, with Q mixing, random directions of the whole
    residual), and the high-band and single-pass rows of a planted model cannot match the design.
    """
    from fourier_toy.analysis import filters, fourier

    N = 120
    n = np.arange(N + 1)
    W = np.stack([np.cos(2 * np.pi * n / N), np.cos(2 * np.pi * n / 10)], axis=1).astype(np.float32)
    fb = fourier.number_axis(N + 1).basis
    _, info = filters.null_space_projector(W, fb, filters.remove_mask(fb, "high"))
    return info["rank"] != 1

