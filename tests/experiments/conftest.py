"""Fixtures shared by the experiments tests: the quick reproduce run, made once per pytest run
and read by test_reproduce.py (the claims) and test_report_html.py (the report page)."""

import json
import shutil
from pathlib import Path

import pytest

from fourier_toy.experiments.conditions import DEFAULT_SEEDS, DEFAULT_SOURCE, conditions
from fourier_toy.experiments.reproduce import code_stamp, reproduce

# Seeds per condition of the shared run (reproduce's default, as the README's first command runs
# it); test_reproduce.py checks every condition has this many.
SEEDS = DEFAULT_SEEDS
# The README's first command writes here; the test command after it may judge those runs again.
README_RUN = Path(__file__).resolve().parents[2] / "reproduce-quick"


def _made_by_this_code(out: Path) -> bool:
    """Whether `out` is a finished quick reproduce of SEEDS seeds from exactly these sources."""
    try:
        saved = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    seeds = saved.get("seeds", {})
    return (saved.get("code") == code_stamp() and saved.get("preset") == "quick"
            and saved.get("setup", {}).get("source") == DEFAULT_SOURCE
            and set(seeds) == {c.name for c in conditions(DEFAULT_SOURCE)} and all(len(s) == SEEDS for s in seeds.values()))


@pytest.fixture(scope="session")
def summary(tmp_path_factory):
    """`fourier-toy reproduce --preset quick` (SEEDS seeds, the default source) in a temporary directory:
    its report summary (report.write's). Minutes of training, so only tests marked slow use it. When the README's
    first command has just written ./reproduce-quick with these very sources (summary.json's "code"
    stamp), a copy of it is judged and reported again instead: same sources, same bits, and every
    run's numbers are read back from its own directory either way."""
    out = tmp_path_factory.mktemp("reproduce") / "quick"
    if _made_by_this_code(README_RUN):
        shutil.copytree(README_RUN, out)
    return reproduce(preset="quick", seeds=SEEDS, out=out, progress=False)
