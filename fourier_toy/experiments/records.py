"""A sweep's run records: whether a run directory holds a finished run, and what results.jsonl says
about each run.

Restart: a run counts as finished when its summary.json parses, its config.json is the expected
config and its model.safetensors loads at the summary's step; finished runs are kept as they are
(including runs that diverged: training them again would diverge again). Anything else in a run
directory is the trace of an interrupted run and is deleted and trained again.

A record is a plain dict (it crosses process boundaries): status ("ok" or "failed"), error,
stop_reason, step, steps_to, {train,val,test}_acc and seconds, to which the sweep adds the run's
id, its grid values and whether it was reused.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from fourier_toy.config import Config
from fourier_toy.errors import CheckpointError
from fourier_toy.experiments.grid import canonical_json, describe_values


def finished_summary(run_dir: Path, cfg: Config | None = None) -> dict | None:
    """The run's summary if the run finished intact, else None (absent, interrupted or damaged).

    Raises CheckpointError when a finished run holds a different config than `cfg`: that directory
    was not written by this sweep and is not deleted.
    """
    from fourier_toy.runs.layout import CONFIG, MODEL, SUMMARY
    from fourier_toy.runs.tensors import load_tensors

    try:
        summary = json.loads((run_dir / SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or "stop_reason" not in summary or "step" not in summary:
        return None
    try:
        saved = json.loads((run_dir / CONFIG).read_text())
        _, meta = load_tensors(run_dir / MODEL)
    except (OSError, ValueError, CheckpointError):
        return None
    if not isinstance(saved, dict) or meta.get("step") != str(summary["step"]):
        return None
    if cfg is not None:
        saved.pop("derived", None)
        if canonical_json(saved) != canonical_json(cfg.to_dict()):
            raise CheckpointError(f"{run_dir}: holds a finished run of a different config; "
                                  "move it away or use another --out")
    return summary


def run_record(summary: dict, seconds: float | None = None) -> dict:
    """The results.jsonl fields of a finished run's summary."""
    final = summary.get("final") or {}
    stop = summary.get("stop_reason")
    div = summary.get("diverged") or {"step": summary.get("step"), "loss": "non-finite"}
    rec = {"status": "failed" if stop == "diverged" else "ok", "stop_reason": stop, "step": summary.get("step"),
           "error": f"diverged: loss {div['loss']} at step {div['step']}" if stop == "diverged" else None,
           "steps_to": summary.get("steps_to") or {}}
    for split in ("train", "val", "test"):
        rec[f"{split}_acc"] = (final.get(split) or {}).get("acc")
    if seconds is not None:
        rec["seconds"] = seconds
    return rec


def jsonable(rec: dict) -> dict:
    """The record with non-finite floats as None, for canonical JSON (which refuses NaN)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()}


def format_record(rec: dict) -> str:
    """One progress line for a run's record."""
    head = f"[{rec.get('index', '?')}/{rec.get('total', '?')}] {rec['id']} {describe_values(rec.get('values', {}))}"
    if rec["status"] != "ok":
        return f"{head}: FAILED {rec.get('error')}"
    line = f"{head}: {rec.get('stop_reason')} at step {rec.get('step')}"
    if rec.get("test_acc") is not None:
        line += f", test acc {rec['test_acc']:.4f}"
    if rec.get("seconds") is not None:
        line += f" ({rec['seconds']:.1f} s)"
    return line
