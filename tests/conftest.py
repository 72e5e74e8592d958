"""The suite's plugin and hypothesis profile.

The fixtures the tests share come from the public pytest plugin fourier_toy.testing.plugin
(docs/testing.md): ``fourier_toy_run`` (the small trained run the diagnostics tests read) and
``fourier_toy_run_path`` (cached run directories). It is listed in pytest_plugins so that the suite
also runs where the package's entry points are not installed; the entry point has the same name, so
it is never loaded twice. Under CI=true every hypothesis test runs the derandomized profile
``fourier_toy-ci``: the same examples on every run.
"""

import os

from hypothesis import settings

pytest_plugins = ["fourier_toy.testing.plugin"]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


if _in_ci():
    from fourier_toy.testing.plugin import CI_PROFILE, register_profiles

    register_profiles()
    settings.load_profile(CI_PROFILE)
