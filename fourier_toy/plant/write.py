"""A planted model as an ordinary run directory: `write_plant(spec, out, force=False) -> Path`.

The directory holds the files the trainer writes (runs/layout.py), as a run checkpointed at step 0:

    config.json        the Config (task, model with backend numpy, untied; default train
                       section) plus "derived": n_numbers, vocab_size, n_params, split_sizes,
                       embedding {"kind": "plant"} and "plant" {spec, design, writers}
    metrics.jsonl      one evaluation at step 0 (every split: loss, exact / +-2 / +-10 accuracy)
    model.safetensors  the planted weights (metadata step "0")
    state.safetensors  a fresh AdamW state of the config's train section, step 0, elapsed 0
    checkpoint.json    the manifest naming both files with their sha256
    summary.json       stop_reason "planted", the final evaluation of every split with errors

so `eval`, `lens`, `ablate`, `spectrum`, `probe`, `export` read it, and `train --resume` trains it
further. The directory is built completely in a hidden sibling and renamed into place under the
run's lock (the same ``.NAME.lock`` the trainer takes); an existing run is replaced only with
force=True, and only once the new one is complete (it is set aside as ``.NAME.replaced-PID``,
then deleted).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from fourier_toy.errors import CheckpointError, ConfigError
from fourier_toy.nn.optim import AdamW
from fourier_toy.plant.construct import plant
from fourier_toy.plant.logits import design
from fourier_toy.plant.schedule import writers
from fourier_toy.plant.spec import PlantSpec
from fourier_toy.runs.files import DirLock, append_jsonl, atomic_write_json, file_sha256, fsync_dir
from fourier_toy.runs.layout import CHECKPOINT, CONFIG, METRICS, MODEL, STATE, SUMMARY
from fourier_toy.runs.tensors import save_tensors
from fourier_toy.task import SPLITS, make_splits
from fourier_toy.training.evaluate import evaluate
from fourier_toy.training.loop import check_out_dir, steps_to

STOP_REASON = "planted"


def write_plant(spec: PlantSpec, out, force: bool = False) -> Path:
    """Write the planted model of `spec` as a run directory at `out` -> Path(out)."""
    if not isinstance(spec, PlantSpec):
        raise ConfigError(f"spec: expected a fourier_toy.plant.PlantSpec, got {type(spec).__name__}")
    out = Path(out)
    check_out_dir(out, force)  # refuse before building anything; checked again under the lock
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"--out: cannot create {str(out.parent)!r} ({e.strerror or e})") from None
    tmp = out.parent / f".{out.name}.plant-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        _write_files(spec, tmp)
        lock = DirLock(Path(os.path.abspath(out)).parent / f".{out.name}.lock", f"--out {str(out)!r}")
        with lock:
            _swap_in(tmp, out, force)
    except OSError as e:
        raise CheckpointError(f"--out: cannot write {str(out)!r} ({e.strerror or e})") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _swap_in(tmp: Path, out: Path, force: bool) -> None:
    aside = None
    if check_out_dir(out, force):
        aside = out.parent / f".{out.name}.replaced-{os.getpid()}"
        os.rename(out, aside)
    elif out.exists():  # an empty directory
        out.rmdir()
    try:
        os.rename(tmp, out)
    except OSError:
        if aside is not None:
            os.rename(aside, out)
        raise
    fsync_dir(out.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _write_files(spec: PlantSpec, run: Path) -> None:
    model, cfg = plant(spec)
    splits = make_splits(cfg.task, cfg.seed)
    D = design(spec)
    derived = {
        "n_numbers": cfg.task.n_numbers, "vocab_size": model.vocab_size, "n_params": int(model.layout.size),
        "split_sizes": {s: len(splits[s]) for s in SPLITS},
        "embedding": {"kind": "plant"},
        "plant": {"spec": spec.to_dict(), "division": spec.division, "design": D.to_dict(),
                  "writers": [w.__dict__ for w in writers(spec)]},
    }
    atomic_write_json(run / CONFIG, {**cfg.to_dict(), "derived": derived})
    record = {"step": 0, "epoch": 0.0, "elapsed": 0.0, "lr": cfg.train.lr, "train_loss": None}
    final = {}
    for s in SPLITS:
        final[s] = evaluate(model, splits[s], with_errors=True)
        record[s] = {k: v for k, v in final[s].items() if k != "errors"}
    append_jsonl(run / METRICS, record)
    tc = cfg.train
    opt = AdamW(model.layout.size, tc.lr, tuple(tc.betas), tc.eps, tc.weight_decay)
    state = {f"opt.{k}": v for k, v in opt.state_dict().items()}
    state["step"] = np.array(0, dtype=np.int64)
    state["elapsed"] = np.array(0.0, dtype=np.float64)
    save_tensors(run / STATE, state)
    save_tensors(run / MODEL, {k: v.copy() for k, v in model.weights.items()}, {"step": "0", "format": "pt"})
    atomic_write_json(run / CHECKPOINT, {
        "step": 0, "config": cfg.to_dict(),
        "state": {"file": STATE, "sha256": file_sha256(run / STATE)},
        "model": {"file": MODEL, "sha256": file_sha256(run / MODEL)},
    })
    atomic_write_json(run / SUMMARY, {"step": 0, "stop_reason": STOP_REASON, "elapsed_seconds": 0.0,
                                      "final": final, "steps_to": steps_to([record])})
