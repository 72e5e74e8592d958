"""The files of a run directory, named once for every module that writes or reads one.

    config.json        CONFIG       the resolved config (Config.to_dict()) plus "derived": facts
                                    computed from it (vocabulary size, split sizes, n_params, the
                                    number embedding's provenance)
    metrics.jsonl      METRICS      one JSON object per evaluation: step, epoch, elapsed, lr,
                                    train_loss and each split's exact / +-2 / +-10 accuracy
    model.safetensors  MODEL        the weights in GPT-2 names (wte.weight (V, D), h.{l}.*, ...);
                                    metadata "step" (the checkpoint's step) and "format" = "pt"
    state.safetensors  STATE        opt.* (AdamW moments (P,) and step count), step () int64,
                                    elapsed () float64; written just before MODEL, same step
    summary.json       SUMMARY      the final evaluation (step, stop_reason, elapsed_seconds, final,
                                    steps_to), written when the run ends; a diagnosed run also
                                    holds the diagnostics' headline numbers under "diagnostics"
    diagnostics.json   DIAGNOSTICS  the full diagnostics of a finished run (spectrum, lens, ablate,
                                    probe, seconds), written by experiments/conditions.py

training/loop.py writes CONFIG and METRICS when a run starts, STATE and MODEL at each checkpoint and
SUMMARY at the end, each atomically (runs/files.py). METRICS is appended to, one line per evaluation.

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


def is_run_dir(path: Path) -> bool:
    """Whether `path` holds a run: its config and metrics files, both written when a run starts.

    (A Hugging Face folder has a config.json too, but no metrics.jsonl.)
    """
    path = Path(path)
    return (path / CONFIG).is_file() and (path / METRICS).exists()
