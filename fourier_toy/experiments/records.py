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
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(summary, dict) or summary_problem(summary) is not None:
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


_NUMBERS = ("acc", "acc_pm2", "acc_pm10", "loss", "n")


def _number(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def summary_problem(summary) -> str | None:
    """What is wrong with a run's summary.json object, or None: stop_reason a string, step an
    integer >= 0, final {split: {name: number}}, steps_to {level: step or null}, diverged
    {"step", "loss"} or null, diagnostics an object or null."""
    if not isinstance(summary, dict):
        return f"expected a JSON object, got {type(summary).__name__}"
    if not isinstance(summary.get("stop_reason"), str):
        return f"'stop_reason' must be a string, got {summary.get('stop_reason')!r}"
    step = summary.get("step")
    if type(step) is not int or step < 0:
        return f"'step' must be an integer >= 0, got {step!r}"
    final = summary.get("final")
    if final is not None:
        if not isinstance(final, dict):
            return f"'final' must be an object, got {type(final).__name__}"
        for split, entry in final.items():
            if entry is None:
                continue
            if not isinstance(entry, dict):
                return f"'final.{split}' must be an object, got {type(entry).__name__}"
            bad = next((k for k in _NUMBERS if not _number(entry.get(k))), None)
            if bad is not None:
                return f"'final.{split}.{bad}' must be a number or null, got {entry[bad]!r}"
    steps_to = summary.get("steps_to")
    if steps_to is not None:
        if not isinstance(steps_to, dict):
            return f"'steps_to' must be an object, got {type(steps_to).__name__}"
        bad = next((k for k, v in steps_to.items() if v is not None and (type(v) is not int or v < 0)), None)
        if bad is not None:
            return f"'steps_to.{bad}' must be an integer step or null, got {steps_to[bad]!r}"
    diverged = summary.get("diverged")
    if diverged is not None and not (isinstance(diverged, dict) and "step" in diverged and "loss" in diverged):
        return f"'diverged' must be an object with step and loss, got {diverged!r}"
    diagnostics = summary.get("diagnostics")
    if diagnostics is not None and not isinstance(diagnostics, dict):
        return f"'diagnostics' must be an object, got {type(diagnostics).__name__}"
    return None


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
