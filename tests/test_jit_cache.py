"""The numba cache is keyed on all of the package's sources (jit.py), not on each function's own
file: a cached function holds copies of the numba functions it calls from other modules."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from fourier_toy import jit


def test_the_digest_changes_with_any_source_file_and_nothing_else(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 2\n")
    (tmp_path / "notes.txt").write_text("not a source\n")
    first = jit.sources_digest(str(tmp_path))
    (tmp_path / "notes.txt").write_text("edited\n")
    assert jit.sources_digest(str(tmp_path)) == first
    (tmp_path / "b.py").write_text("y = 3\n")
    second = jit.sources_digest(str(tmp_path))
    assert second != first
    (tmp_path / "c.py").write_text("")
    assert jit.sources_digest(str(tmp_path)) not in (first, second)
    assert jit.package_stamp() == jit.sources_digest(str(Path(jit.__file__).parent))


@pytest.mark.parametrize("module, name", [("fused_step", "train_share"), ("fused_step", "train_steps_share"),
                                          ("fused", "attn_fwd"), ("blas", "matmul"), ("threads", "wait"),
                                          ("threads", "barrier"), ("adamw_kernel", "_adamw")])
def test_every_cached_function_of_the_package_carries_the_package_stamp(module, name):
    dispatcher = getattr(importlib.import_module(f"fourier_toy.{module}"), name)
    locator = dispatcher._cache._impl.locator
    assert type(locator).__name__.startswith("FourierToy")
    assert locator.get_source_stamp() == jit.package_stamp()


def test_functions_outside_the_package_keep_numbas_own_stamps(tmp_path):
    from numba import njit

    (tmp_path / "outside.py").write_text("def f(x):\n    return x + 1\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        outside = importlib.import_module("outside")
        locator = njit(cache=True)(outside.f)._cache._impl.locator
    finally:
        sys.path.remove(str(tmp_path))
    assert not type(locator).__name__.startswith("FourierToy")
    assert locator.get_source_stamp() != jit.package_stamp()
