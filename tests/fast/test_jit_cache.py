"""The numba cache is keyed on all of the package's sources (jit.py), not on each function's own
file: a cached function holds copies of the numba functions it calls from other modules."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

from fourier_toy.fast import jit


def test_the_digest_changes_with_any_source_file_below_the_folder_and_nothing_else(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    (tmp_path / "notes.txt").write_text("not a source\n")
    (tmp_path / "sub" / "__pycache__").mkdir()
    (tmp_path / "sub" / "__pycache__" / "b.py").write_text("a cache, not a source\n")
    first = jit.sources_digest(str(tmp_path))
    (tmp_path / "notes.txt").write_text("edited\n")
    (tmp_path / "sub" / "__pycache__" / "b.py").write_text("edited\n")
    assert jit.sources_digest(str(tmp_path)) == first
    (tmp_path / "sub" / "b.py").write_text("y = 3\n")
    second = jit.sources_digest(str(tmp_path))
    assert second != first
    (tmp_path / "sub" / "deeper").mkdir()
    (tmp_path / "sub" / "deeper" / "c.py").write_text("")
    third = jit.sources_digest(str(tmp_path))
    assert third not in (first, second)
    (tmp_path / "sub" / "deeper" / "c.py").rename(tmp_path / "sub" / "c.py")  # same content, other place
    assert jit.sources_digest(str(tmp_path)) not in (first, second, third)


def test_the_package_stamp_covers_every_subpackage():
    root = Path(jit.__file__).parent.parent
    assert (root / "nn").is_dir() and (root / "fast").is_dir()
    assert jit.package_stamp() == jit.sources_digest(str(root))
    assert jit.in_package(str(root / "nn" / "ops.py")) and jit.in_package(str(root / "fast" / "jit.py"))
    assert not jit.in_package(str(root.parent / "tests" / "test_jit_cache.py"))


_KERNEL_RUN = """
import numpy as np
from fourier_toy.fast import row_kernels
h = np.linspace(-3, 3, 8).reshape(2, 4)
act = np.empty((2, 4))
row_kernels.gelu_bias_fwd(h, np.zeros(4), act)
print(repr(act.sum()))
"""


def test_a_kernel_recompiles_when_a_constant_it_reads_from_another_subpackage_changes(tmp_path):
    """fast/row_kernels.py reads the GELU constants of fourier_toy/config.py; numba's own stamp
    (the kernel's file alone) would keep the old machine code after an edit of that file."""
    import shutil
    import subprocess
    import sys

    copy = tmp_path / "src" / "fourier_toy"
    shutil.copytree(Path(jit.__file__).parent.parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(copy.parent), "NUMBA_CACHE_DIR": str(tmp_path / "cache")}

    def run() -> str:
        done = subprocess.run([sys.executable, "-c", _KERNEL_RUN], env=env, capture_output=True, text=True,
                              cwd=tmp_path, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    first = run()
    assert any((tmp_path / "cache").rglob("*.nbi")), "the kernel was not cached"
    assert run() == first  # loaded from the cache
    config = copy / "config.py"
    config.write_text(config.read_text().replace("GELU_K = 0.044715", "GELU_K = 0.5"))
    assert run() != first


@pytest.mark.parametrize("module, name", [("step", "train_share"), ("step", "train_steps_share"),
                                          ("row_kernels", "attn_fwd"), ("blas", "matmul"), ("threads", "wait"),
                                          ("threads", "barrier"), ("adamw", "_adamw")])
def test_every_cached_function_of_the_package_carries_the_package_stamp(module, name):
    dispatcher = getattr(importlib.import_module(f"fourier_toy.fast.{module}"), name)
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
