"""A small trained run directory, trained once and reused: by the session, and by the next session.

``cached_run(cfg, cache_dir)`` -> the path of an ordinary run directory (``fourier_toy train``'s
output) for ``cfg``, from ``cache_dir/<key>/run``. The key is a hash of the resolved config, the
package's code stamp (``fourier_toy.fast.package_stamp``: a digest of every source file) and the
numpy and Python versions, so changed sources or a changed config train afresh and a stale run is
never read. A miss trains into a private temporary directory beside the entry and renames it into
place (atomic on one file system): readers see a whole run or none, and two processes that miss
together both train the same deterministic run, one rename wins and the other's copy is removed.

Do not write into the returned directory: copy it first (``shutil.copytree``) when a test changes
files. The pytest plugin (plugin.py) puts the cache under $FOURIER_TOY_CACHE/testing-runs when that
variable is set, else in pytest's cache directory (.pytest_cache/d/fourier_toy_runs, cleared by
``pytest --cache-clear``).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
import uuid
from pathlib import Path

from fourier_toy.testing._args import ArgumentError

__all__ = ["DEFAULT_PRESET", "DEFAULT_RUN", "run_config", "cache_key", "cached_run", "CACHE_FORMAT"]

# The default small run: a 2-layer tiny model (max_operand 10, d_model 32) with a frozen Fourier
# embedding, 300 steps on the numpy backend (under a second of training; train accuracy 1.0).
DEFAULT_PRESET = "tiny"
DEFAULT_RUN = ("model.backend=numpy", "model.n_layers=2", "train.max_steps=300", "train.eval_every=100",
               "train.checkpoint_every=300", "embedding.kind=fourier", "embedding.freeze=true")
CACHE_FORMAT = 1  # bump when the entry layout changes
_STALE_SECONDS = 24 * 3600  # temporary directories older than this are a killed session's leftovers


def run_config(preset: str = DEFAULT_PRESET, overrides=DEFAULT_RUN):
    """The Config of a cached run: ``preset`` with ``overrides`` ("section.key=value" strings or a
    {"section.key": value} mapping), layered as ``fourier-toy train --preset P --set ...``."""
    from fourier_toy.training.api import load_config

    return load_config(preset, overrides)


def cache_key(cfg) -> str:
    """Hex digest (24 chars) of the config, the code stamp, and the numpy and Python versions."""
    import numpy as np

    from fourier_toy.fast import package_stamp

    record = {"format": CACHE_FORMAT, "config": cfg.to_dict(), "code": package_stamp().hex(),
              "numpy": np.__version__, "python": platform.python_version()}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:24]


def _complete(entry: Path) -> bool:
    return (entry / "run" / "summary.json").is_file() and (entry / "entry.json").is_file()


def _clean_stale(cache_dir: Path) -> None:
    now = time.time()
    for tmp in cache_dir.glob(".*.tmp"):
        try:
            if now - tmp.stat().st_mtime > _STALE_SECONDS:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


def cached_run(cfg, cache_dir) -> Path:
    """The run directory of ``cfg`` trained once into ``cache_dir`` (see the module docstring)."""
    from fourier_toy.config import Config
    from fourier_toy.training.loop import train

    if not isinstance(cfg, Config):
        raise ArgumentError(f"cfg: expected a fourier_toy.config.Config, got {type(cfg).__name__}")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(cfg)
    entry = cache_dir / key
    if _complete(entry):
        return entry / "run"
    if entry.exists():  # an incomplete entry (a copy removed by hand, a damaged file system)
        shutil.rmtree(entry, ignore_errors=True)
    _clean_stale(cache_dir)
    tmp = cache_dir / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        result = train(cfg, tmp / "run", progress=False)
        record = {"key": key, "config": cfg.to_dict(), "step": result.step, "stop_reason": result.stop_reason,
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (tmp / "entry.json").write_text(json.dumps(record, indent=1) + "\n")
        try:
            os.rename(tmp, entry)
        except OSError:
            if not _complete(entry):  # not another process's finished entry: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return entry / "run"
