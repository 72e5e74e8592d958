"""The pytest plugin of fourier_toy.testing (entry point ``pytest11``: fourier_toy.testing.plugin).

Loaded by pytest in every session where fourier_toy is installed, so it imports nothing heavy:
numpy, numba and the package's models load when a fixture is first used (hypothesis, which imports
no numpy, is imported to register the profiles below).

Fixtures (session scope):
- ``fourier_toy_run``: a ``training.open_run.Run`` (numpy backend) of the default small trained
  run (``cache.DEFAULT_RUN``: the tiny preset, 2 layers, frozen Fourier embedding, 300 steps).
  The model may be changed in memory only if the test restores it.
- ``fourier_toy_run_path``: a factory ``(overrides=cache.DEFAULT_RUN, preset="tiny") -> Path`` of a
  cached trained run directory for any config; copy it before writing into it.
Both come from ``cache.cached_run``: under $FOURIER_TOY_CACHE/testing-runs when set, else pytest's
cache directory (.pytest_cache/d/fourier_toy_runs), else (``-p no:cacheprovider``) a session
temporary directory.

Hypothesis profiles (registered when the plugin is imported, before any conftest; not loaded:
choose one with ``--hypothesis-profile NAME`` or ``settings.load_profile(NAME)`` in a conftest):
- ``fourier_toy``: deadline=None (a forward of a random model can take a moment the first time);
- ``fourier_toy-ci``: the same, derandomize=True (the same examples on every run, no example
  database) and print_blob=True.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CACHE_ENV = "FOURIER_TOY_CACHE"
PROFILE = "fourier_toy"
CI_PROFILE = "fourier_toy-ci"


def register_profiles() -> None:
    """Register the hypothesis profiles ``fourier_toy`` and ``fourier_toy-ci`` (idempotent)."""
    try:
        from hypothesis import settings
    except ImportError:  # hypothesis is optional for the plugin; the strategies need it
        return
    settings.register_profile(PROFILE, deadline=None)
    settings.register_profile(CI_PROFILE, deadline=None, derandomize=True, print_blob=True)


register_profiles()


def _cache_dir(config, tmp_path_factory) -> Path:
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser() / "testing-runs"
    cache = getattr(config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("fourier_toy_runs"))
    return tmp_path_factory.mktemp("fourier_toy_runs")


@pytest.fixture(scope="session")
def fourier_toy_run_path(pytestconfig, tmp_path_factory):
    """Factory: ``fourier_toy_run_path(overrides=DEFAULT_RUN, preset="tiny") -> Path`` of a cached run."""
    from fourier_toy.testing import cache

    folder = _cache_dir(pytestconfig, tmp_path_factory)
    made: dict = {}

    def make(overrides=cache.DEFAULT_RUN, preset: str = cache.DEFAULT_PRESET) -> Path:
        cfg = cache.run_config(preset, overrides)
        key = cache.cache_key(cfg)
        if key not in made:
            made[key] = cache.cached_run(cfg, folder)
        return made[key]

    return make


@pytest.fixture(scope="session")
def fourier_toy_run(fourier_toy_run_path):
    """The default small trained run (cache.DEFAULT_RUN) opened on the numpy backend."""
    from fourier_toy.training.open_run import load_run

    return load_run(fourier_toy_run_path(), backend="numpy")
