"""Open a finished (or checkpointed) run directory: its config, splits and model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .errors import CheckpointError
from .model import GPT
from .params import pack
from .runs import load_tensors
from .task import Split, make_splits
from .train import MODEL, load_run_config


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
    model = GPT(cfg.model, cfg.task.n_numbers, params=pack(GPT(cfg.model, cfg.task.n_numbers).layout, weights))
    return Run(path, cfg, derived, model, make_splits(cfg.task, cfg.seed), int(meta.get("step", 0)))
