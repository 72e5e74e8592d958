"""Fixtures shared by the diagnostics tests, and the one place that locates the shared data files."""

import os
from pathlib import Path

import numpy as np
import pytest

from fourier_toy import config
from fourier_toy.training.open_run import load_run
from fourier_toy.task import Split
from fourier_toy.training.loop import train

SHARED_DATA_ENV = "FOURIER_TOY_SHARED_DATA"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data_dir() -> Path:
    """The shared data folder: $FOURIER_TOY_SHARED_DATA when set, else <repo>/../shared/data."""
    env = os.environ.get(SHARED_DATA_ENV, "").strip()
    return Path(env).expanduser() if env else DEFAULT_SHARED_DATA


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def shared_data_file(name: str) -> Path:
    """The path of the shared data file `name`, for tests that read real data.

    When the file is missing the calling test is skipped with the path and the variable in the
    reason, except under CI=true, where a missing file fails the test: CI must never pass by
    silently skipping the tests on real data.
    """
    path = shared_data_dir() / name
    if path.is_file():
        return path
    source = (f"{SHARED_DATA_ENV}={os.environ[SHARED_DATA_ENV]}" if os.environ.get(SHARED_DATA_ENV, "").strip()
              else f"{SHARED_DATA_ENV} not set, default <repo>/../shared/data")
    reason = f"shared data file {path} not found ({source}); set {SHARED_DATA_ENV} to the folder holding {name}"
    if _in_ci():
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A 2-layer tiny model with a frozen Fourier embedding, trained 300 steps once per session."""
    out = tmp_path_factory.getbasetemp() / "tiny_fourier_run"
    if not (out / "summary.json").is_file():
        cfg = config.apply_overrides(config.from_preset("tiny"), [
            "model.backend=numpy", "model.n_layers=2", "train.max_steps=300", "train.eval_every=100",
            "train.checkpoint_every=300", "embedding.kind=fourier", "embedding.freeze=true"])
        train(cfg, out, progress=False)
    return load_run(out, backend="numpy")


def all_examples(run) -> Split:
    """Every example of the run's task, all splits together."""
    sp = [run.splits[s] for s in ("train", "val", "test")]
    return Split(np.concatenate([s.tokens for s in sp]), np.concatenate([s.targets for s in sp]))
