"""The pytest plugin and the run cache: a light import, fixtures in any project, one training per
config and code stamp (reused by the next session), atomic entries."""

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from hypothesis import settings

from fourier_toy.testing import cache
from fourier_toy.testing.plugin import CI_PROFILE, PROFILE

ROOT = Path(__file__).resolve().parents[2]
# A run that trains in a few hundredths of a second.
SMALL = ["model.backend=numpy", "train.max_steps=5", "train.eval_every=5", "train.checkpoint_every=5"]


def test_importing_the_plugin_loads_no_numpy_or_numba():
    code = ("import sys, fourier_toy.testing, fourier_toy.testing.plugin; "
            "print(sorted(m for m in ('numpy', 'numba', 'fourier_toy.nn', 'fourier_toy.analysis') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_plugin_is_a_pytest11_entry_point_named_like_its_module():
    eps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["pytest11"]
    assert eps == {"fourier_toy.testing.plugin": "fourier_toy.testing.plugin"}


def test_the_hypothesis_profiles_are_registered():
    assert settings.get_profile(PROFILE).deadline is None
    ci = settings.get_profile(CI_PROFILE)
    assert ci.derandomize and ci.deadline is None


def test_cached_run_trains_once_per_config(tmp_path, monkeypatch):
    import fourier_toy.training.loop as loop

    calls = []
    real = loop.train
    monkeypatch.setattr(loop, "train", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    cfg = cache.run_config("tiny", SMALL)
    first = cache.cached_run(cfg, tmp_path)
    assert (first / "summary.json").is_file() and first.name == "run" and len(calls) == 1
    assert cache.cached_run(cache.run_config("tiny", SMALL), tmp_path) == first and len(calls) == 1
    record = json.loads((first.parent / "entry.json").read_text())
    assert record["key"] == first.parent.name == cache.cache_key(cfg) and record["step"] == 5
    other = cache.cached_run(cache.run_config("tiny", [*SMALL, "seed=1"]), tmp_path)
    assert other != first and len(calls) == 2
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary directory left


def test_an_incomplete_entry_is_trained_again_and_stale_leftovers_go(tmp_path):
    cfg = cache.run_config("tiny", SMALL)
    entry = tmp_path / cache.cache_key(cfg)
    (entry / "run").mkdir(parents=True)  # a copy that never finished: no summary, no entry.json
    stale = tmp_path / ".deadbeef.1.abc.tmp"
    stale.mkdir()
    os.utime(stale, (0, 0))
    path = cache.cached_run(cfg, tmp_path)
    assert path == entry / "run" and (path / "summary.json").is_file()
    assert not stale.exists()


def test_the_cache_key_follows_the_config_and_the_code():
    a, b = cache.run_config("tiny", SMALL), cache.run_config("tiny", [*SMALL, "train.lr=0.002"])
    assert cache.cache_key(a) == cache.cache_key(cache.run_config("tiny", SMALL)) != cache.cache_key(b)
    assert len(cache.cache_key(a)) == 24


INNER = """
    import json, os
    from pathlib import Path

    def test_run(fourier_toy_run_path):
        path = fourier_toy_run_path({overrides!r})
        assert path.is_dir() and (path / "summary.json").is_file()
        entry = path.parent / "entry.json"
        Path(os.environ["REPORT"]).write_text(json.dumps({{"path": str(path), "mtime": entry.stat().st_mtime_ns}}))
"""


def test_a_second_session_reuses_the_run(tmp_path):
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER.format(overrides=SMALL)))
    env = {**os.environ, "FOURIER_TOY_CACHE": str(tmp_path / "cache"), "REPORT": str(tmp_path / "report.json")}
    reports = []
    for _ in range(2):
        # -p no:cacheprovider: the run cache must come from $FOURIER_TOY_CACHE, not pytest's cache.
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_inner.py"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        reports.append(json.loads((tmp_path / "report.json").read_text()))
    assert reports[0] == reports[1]
    assert Path(reports[0]["path"]).parent.parent == tmp_path / "cache" / "testing-runs"
