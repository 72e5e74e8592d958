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
from fourier_toy.runs.files import file_sha256, read_json_object, read_jsonl
from fourier_toy.runs.layout import CHECKPOINT, CONFIG, METRICS, MODEL, pending
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
    step = manifest.get("step")
    if type(step) is not int or step < 0 or not isinstance(manifest.get("config"), dict):
        raise CheckpointError(f"{path}: expected a checkpoint manifest with an integer step and a config")
    for role in ("model", "state"):
        entry = manifest.get(role)
        if not (isinstance(entry, dict) and isinstance(entry.get("file"), str)
                and isinstance(entry.get("sha256"), str) and entry["file"] not in ("", ".", "..")
                and Path(entry["file"]).name == entry["file"]):
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


def weights_file(run_dir: str | os.PathLike) -> Path:
    """The file holding the weights of the run's last committed checkpoint."""
    return _weights(run_dir)


def checked_step(path: Path, meta: dict, manifest: dict | None) -> int:
    """The checkpoint's step from a weights file's metadata: a non-negative integer string, equal
    to the manifest's step when there is a manifest; CheckpointError naming `path` otherwise."""
    text = meta.get("step")
    if text is None and manifest is None:
        return 0  # a run written before manifests and step metadata
    if not isinstance(text, str) or not text.isascii() or not text.isdigit():
        raise CheckpointError(f"{path}: metadata 'step' must be a non-negative integer, got {text!r}")
    step = int(text)
    if manifest is not None and step != manifest["step"]:
        raise CheckpointError(f"{path}: holds step {step} but {CHECKPOINT} says {manifest['step']}")
    return step


def read_weights(run_dir: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, metadata) of the run's last committed checkpoint: GPT-2 names -> writable arrays,
    and the file's metadata ("step": the checkpoint's step as a string, checked by `checked_step`)."""
    manifest = read_checkpoint(run_dir)
    path = checkpoint_file(run_dir, manifest, "model") if manifest is not None else _weights(run_dir)
    tensors, meta = load_tensors(path)
    checked_step(path, meta, manifest)
    return tensors, meta


_SPLITS = ("train", "val", "test")


def metrics_problem(record: dict) -> str | None:
    """What is wrong with one metrics.jsonl record, or None: an integer "step" >= 0, and each
    split present an object whose numbers are numbers (or null)."""
    step = record.get("step")
    if type(step) is not int or step < 0:
        return f"'step' must be an integer >= 0, got {step!r}"
    for split in _SPLITS:
        if split not in record:
            continue
        entry = record[split]
        if not isinstance(entry, dict):
            return f"{split!r} must be an object, got {type(entry).__name__}"
        for key in ("acc", "acc_pm2", "acc_pm10", "loss", "n"):
            value = entry.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                return f"'{split}.{key}' must be a number or null, got {value!r}"
    return None


def read_weight(run_dir: str | os.PathLike, name: str) -> np.ndarray:
    """One tensor of the run's last checkpoint (wte.weight (V, D), say), without reading the others."""
    return read_tensor(_weights(run_dir), name)


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a run's metrics.jsonl (a run directory or the file), each checked by
    `metrics_problem`; CheckpointError naming the file and the line otherwise."""
    path = Path(path)
    return read_jsonl(path / METRICS if path.is_dir() else path, check=metrics_problem)
