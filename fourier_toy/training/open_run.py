"""Open a finished (or checkpointed) run directory: its config, splits and model.

The files are read by runs/read_run.py, which embeddings/pretrained.py's transplant reader shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fourier_toy.config import Config
from fourier_toy.errors import CheckpointError
from fourier_toy.nn.model import GPT
from fourier_toy.nn.params import Layout, pack
from fourier_toy.training.backends import make_gpt
from fourier_toy.runs.read_run import read_weights, weights_file
from fourier_toy.task import Split, make_splits
from fourier_toy.training.loop import load_run_config


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
    try:
        cfg, derived = load_run_config(path)
        weights, meta = read_weights(path)
        step = int(meta.get("step", 0))  # checked by read_weights
        layout = Layout.gpt2(cfg.task.n_numbers + 2, cfg.model.d_model, cfg.model.n_layers, cfg.model.tied,
                             cfg.model.n_ctx)
        params = pack(layout, weights, where=str(weights_file(path)))
    except CheckpointError as err:
        raise CheckpointError(f"RUN: {err}") from None  # the argument that named the run
    if backend:
        cfg.model.backend = backend
    model = make_gpt(cfg.model, cfg.task.n_numbers, params=params)
    return Run(path, cfg, derived, model, make_splits(cfg.task, cfg.seed), step)
