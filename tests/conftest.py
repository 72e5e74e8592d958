"""Fixtures shared by the diagnostics tests."""

import numpy as np
import pytest

from fourier_toy import config
from fourier_toy.training.open_run import load_run
from fourier_toy.task import Split
from fourier_toy.training.loop import train


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
