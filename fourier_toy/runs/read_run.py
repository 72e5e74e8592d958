"""Read a run directory's config and weights, with the checks every reader of a run shares.

training/open_run.py opens a run (config, model, splits) and embeddings/pretrained.py reads a
run's number rows for a transplant; both go through here, so a missing directory, config or
checkpoint reads the same from either. Errors are CheckpointError naming the path and the problem
on one line; the callers prefix the setting that pointed at the run (RUN, --resume,
embedding.source).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fourier_toy.errors import CheckpointError
from fourier_toy.runs.files import file_sha256, read_json_object
from fourier_toy.runs.layout import CHECKPOINT, CONFIG, MODEL, pending
from fourier_toy.runs.tensors import load_tensors, read_tensor


def _run_dir(run_dir: str | os.PathLike) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    return run_dir


def read_config(run_dir: str | os.PathLike) -> dict:
    """The run's config.json as a dict: the config's sections and seed, plus its "derived" entry.

    Parsing it into a Config is the caller's business: a transplant reads only task.max_operand.
    """
    run_dir = _run_dir(run_dir)
    path = run_dir / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: no {CONFIG} (not a fourier_toy run directory)")
    return read_json_object(path, "a JSON object (the run's config)", error=CheckpointError)


def read_checkpoint(run_dir: str | os.PathLike) -> dict | None:
    """The run's committed checkpoint manifest (runs/layout.py), or None when it has none (no
    checkpoint yet, or a run written before manifests, whose MODEL and STATE are read directly)."""
    path = _run_dir(run_dir) / CHECKPOINT
    if not path.exists():
        return None
    manifest = read_json_object(path, "a JSON object (the checkpoint manifest)", error=CheckpointError)
    if not isinstance(manifest.get("step"), int) or not isinstance(manifest.get("config"), dict):
        raise CheckpointError(f"{path}: expected a checkpoint manifest with an integer step and a config")
    for role in ("model", "state"):
        entry = manifest.get(role)
        if not (isinstance(entry, dict) and isinstance(entry.get("file"), str)
                and isinstance(entry.get("sha256"), str) and Path(entry["file"]).name == entry["file"]):
            raise CheckpointError(f"{path}: expected {role!r} to be {{\"file\": NAME, \"sha256\": HEX}}")
    return manifest


def checkpoint_file(run_dir: str | os.PathLike, manifest: dict, role: str) -> Path:
    """The file holding the manifest's `role` ("model" or "state"): NAME, or NAME.next when the
    commit's renames were cut short, whichever has the recorded sha256."""
    run_dir = Path(run_dir)
    name, sha = manifest[role]["file"], manifest[role]["sha256"]
    for path in (run_dir / name, run_dir / pending(name)):
        if path.is_file() and file_sha256(path) == sha:
            return path
    raise CheckpointError(f"{run_dir / CHECKPOINT}: no {name} with the recorded sha256 {sha[:16]} "
                          f"(the file was changed or removed after step {manifest['step']} was checkpointed)")


def _weights(run_dir: str | os.PathLike) -> Path:
    manifest = read_checkpoint(run_dir)
    if manifest is not None:
        return checkpoint_file(run_dir, manifest, "model")
    path = _run_dir(run_dir) / MODEL
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file (the run has no checkpoint yet)")
    return path


def read_weights(run_dir: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, metadata) of the run's last committed checkpoint: GPT-2 names -> writable arrays,
    and the file's metadata ("step": the checkpoint's step as a string)."""
    return load_tensors(_weights(run_dir))


def read_weight(run_dir: str | os.PathLike, name: str) -> np.ndarray:
    """One tensor of the run's last checkpoint (wte.weight (V, D), say), without reading the others."""
    return read_tensor(_weights(run_dir), name)
