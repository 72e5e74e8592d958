"""The files of a run directory, named once for every module that writes or reads one.

    config.json        CONFIG       the resolved config (Config.to_dict()) plus "derived": facts
                                    computed from it (vocabulary size, split sizes, n_params, the
                                    number embedding's provenance)
    metrics.jsonl      METRICS      one JSON object per evaluation: step, epoch, elapsed, lr,
                                    train_loss and each split's exact / +-2 / +-10 accuracy
    model.safetensors  MODEL        the weights in GPT-2 names (wte.weight (V, D), h.{l}.*, ...);
                                    metadata "step" (the checkpoint's step) and "format" = "pt"
    state.safetensors  STATE        opt.* (AdamW moments (P,) and step count), step () int64,
                                    elapsed () float64; same step as MODEL
    checkpoint.json    CHECKPOINT   the checkpoint's manifest, its commit record: step, the sha256 of
                                    MODEL and STATE (under "model" and "state": {"file", "sha256"})
                                    and "config", a copy of the resolved config the checkpoint was
                                    made with (what --resume checks config.json against)
    summary.json       SUMMARY      the final evaluation (step, stop_reason, elapsed_seconds, final,
                                    steps_to), written when the run ends; a diagnosed run also
                                    holds the diagnostics' headline numbers under "diagnostics"
    diagnostics.json   DIAGNOSTICS  the full diagnostics of a finished run (spectrum, lens, ablate,
                                    probe, seconds), written by experiments/conditions.py

training/loop.py writes CONFIG and METRICS when a run starts, a checkpoint (below) every
train.checkpoint_every steps and SUMMARY at the end, each file atomically (runs/files.py). METRICS
is appended to, one line per evaluation; on resume the lines after the checkpoint's step are dropped.

A checkpoint is committed by one rename, so a process killed at any instant leaves either the
previous checkpoint or the new one:

    1. finish an earlier commit whose renames of step 4 were cut short, then delete what no
       commit names: leftover PENDING files and the ``.NAME.*.tmp`` files of interrupted writes
    2. write STATE and MODEL as ``state.safetensors.next`` and ``model.safetensors.next``
       (each atomically: temporary file, fsync, rename)
    3. write CHECKPOINT atomically, naming both files with their sha256: the commit
    4. rename the two ``.next`` files over STATE and MODEL

Before 3 the old CHECKPOINT still describes the old STATE and MODEL, which are untouched; after 3
each of its files is either still at ``NAME.next`` or already at NAME, and readers take whichever
of the two has the recorded sha256 (runs/read_run.py), never a file CHECKPOINT does not name. A run
written before CHECKPOINT existed (STATE and MODEL, no manifest) is read as before. --resume
refuses a CONFIG that differs from CHECKPOINT's "config" other than in the budget keys it may
change (training/loop.py RESUMABLE_KEYS), and takes every weight from the checkpoint, so a
transplant's embedding.source is not read again.

A Hugging Face folder (runs/hf.py) and a sweep directory (experiments/sweep.py) are other kinds of
directory and name their own files.
"""

from __future__ import annotations

from pathlib import Path

CONFIG = "config.json"
METRICS = "metrics.jsonl"
MODEL = "model.safetensors"
STATE = "state.safetensors"
SUMMARY = "summary.json"
DIAGNOSTICS = "diagnostics.json"
CHECKPOINT = "checkpoint.json"
PENDING = ".next"  # suffix of a checkpoint file written but not yet renamed into place


def pending(name: str) -> str:
    """The name `name` is written under before its checkpoint is committed."""
    return name + PENDING


def is_run_dir(path: Path) -> bool:
    """Whether `path` holds a run: its config and metrics files, both written when a run starts.

    (A Hugging Face folder has a config.json too, but no metrics.jsonl.)
    """
    path = Path(path)
    return (path / CONFIG).is_file() and (path / METRICS).exists()
