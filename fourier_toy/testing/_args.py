"""Argument checks shared by the testing modules: every bad argument is one line naming it."""

from __future__ import annotations

import math
from numbers import Integral, Real

from fourier_toy.errors import ConfigError


class ArgumentError(ConfigError, ValueError):
    """A bad argument to a ``fourier_toy.testing`` function.

    Both a ``ConfigError`` (the project's family, so the CLI's one-line convention holds) and a
    ``ValueError`` (what a hypothesis or pytest user catches). The message is one line that starts
    with the argument's name.
    """


def check_int(name: str, value, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ArgumentError(f"{name}: expected an integer, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise ArgumentError(f"{name}: must be in [{lo_s}, {hi_s}], got {value}")
    return int(value)


def check_float(name: str, value, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ArgumentError(f"{name}: expected a finite number, got {value!r}")
    v = float(value)
    if (lo is not None and (v < lo or (lo_open and v == lo))) or (hi is not None and v > hi):
        bracket = "(" if lo_open else "["
        raise ArgumentError(f"{name}: must be in {bracket}{lo}, {hi}], got {v}")
    return v


def check_choice(name: str, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ArgumentError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value
