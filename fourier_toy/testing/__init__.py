"""Property-test Fourier mechanisms: hypothesis strategies, calibrated assertions, a cached trained run.

For people who test what a model computes, not only that it runs. docs/testing.md walks through a
complete example; the pieces:

  strategies.py  hypothesis strategies: ``configs()`` (valid small configs whose filters and
                 spectra are meaningful), ``random_models()`` (a GPT at a random init),
                 ``number_rows()`` (number rows (p, D) with planted periods and noise, and what was
                 planted), ``known_answer_models()`` (``fourier_toy.plant`` models whose mechanism
                 is known by construction), ``max_operands()``, ``seeds()``
  assertions.py  ``assert_close``, ``assert_periods_found`` / ``assert_periods_absent``,
                 ``assert_band_removed``, ``assert_division_of_labour``, ``assert_lens_consistent``,
                 ``assert_module_logits_decompose``, ``assert_errors_multiple_of``,
                 ``assert_errors_small``; each raises AssertionError with the measured numbers and
                 the tolerance, each tolerance calibrated (its docstring says how)
  data.py        the deterministic builders behind the strategies: ``planted_rows``,
                 ``circle_features``, ``task_examples``, ``all_examples``, ``filter_width``
  models.py      ``permute_units``: the same model with MLP units, heads or residual coordinates
                 relabelled (a symmetry every diagnostic must respect)
  cache.py       ``cached_run``: a small trained run directory, cached by config and code stamp
  plugin.py      the pytest plugin (entry point ``pytest11``): the fixtures ``fourier_toy_run``
                 (a Run of the default small trained run) and ``fourier_toy_run_path`` (a factory
                 of cached run directories), and the hypothesis profiles ``fourier_toy`` and
                 ``fourier_toy-ci`` (derandomized)
  calibrate.py   ``python -m fourier_toy.testing.calibrate``: re-measures the tolerances

Shapes, as everywhere in fourier_toy: p = 2 * max_operand + 1 number tokens; number rows W (p, D)
with row n the number n; logits (n, p); tokens (n, 4) = [a, '+', b, '=']; the exact number axis
keeps N = p - 1 rows (``fourier_toy.analysis.fourier.number_axis``).

Errors: a bad argument is one-line ``ArgumentError`` (a ``ValueError`` and a
``fourier_toy.ConfigError``) naming it; a property that does not hold is an ``AssertionError``.

Everything here imports lazily (PEP 562), so ``import fourier_toy.testing`` (and the pytest plugin)
loads neither numpy, numba nor hypothesis until a name is used.
"""

from __future__ import annotations

import importlib

_API = {
    # strategies
    "seeds": "strategies", "max_operands": "strategies", "configs": "strategies", "random_models": "strategies",
    "number_rows": "strategies", "known_answer_models": "strategies", "ModelCase": "strategies",
    "KnownAnswer": "strategies", "RowsCase": "strategies", "build_case": "strategies",
    # assertions
    "assert_close": "assertions", "assert_periods_found": "assertions", "assert_periods_absent": "assertions",
    "assert_band_removed": "assertions", "assert_division_of_labour": "assertions",
    "assert_lens_consistent": "assertions", "assert_module_logits_decompose": "assertions",
    "assert_errors_multiple_of": "assertions", "assert_errors_small": "assertions",
    "module_band_shares": "assertions", "FLOAT_TOLERANCE": "assertions",
    # data
    "Planted": "data", "planted_rows": "data", "circle_features": "data", "task_examples": "data",
    "all_examples": "data", "filter_width": "data",
    # symmetries
    "permute_units": "models",
    # the run cache
    "cached_run": "cache", "DEFAULT_RUN": "cache",
    # errors
    "ArgumentError": "_args",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
