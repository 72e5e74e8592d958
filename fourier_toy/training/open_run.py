"""Open a finished (or checkpointed) run directory: its config, splits and model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fourier_toy.config import Config
from fourier_toy.errors import CheckpointError
from fourier_toy.nn.model import GPT
from fourier_toy.nn.params import Layout, pack
from fourier_toy.training.backends import make_gpt
from fourier_toy.runs.files import load_tensors
from fourier_toy.task import Split, make_splits
from fourier_toy.training.loop import MODEL, load_run_config


@dataclass
class Run:
    path: Path
    cfg: Config
    derived: dict
    model: GPT
    splits: dict[str, Split]
    step: int


def load_run(path, backend: str | None = None) -> Run:
    """backend overrides the run's model.backend (e.g. 'numpy' for analysis in float64 later)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"RUN: {str(path)!r} is not a directory")
    cfg, derived = load_run_config(path)
    if backend:
        cfg.model.backend = backend
    weights, meta = load_tensors(path / MODEL) if (path / MODEL).is_file() else (None, None)
    if weights is None:
        raise CheckpointError(f"RUN: {str(path)!r} has no {MODEL} yet")
    layout = Layout.gpt2(cfg.task.n_numbers + 2, cfg.model.d_model, cfg.model.n_layers, cfg.model.tied, cfg.model.n_ctx)
    model = make_gpt(cfg.model, cfg.task.n_numbers, params=pack(layout, weights))
    return Run(path, cfg, derived, model, make_splits(cfg.task, cfg.seed), int(meta.get("step", 0)))
