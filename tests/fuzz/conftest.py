"""Runners and bookkeeping shared by the fuzz tests.

`run_main` calls `fourier_toy.cli.main` in-process with stdout/stderr captured and a time limit
(SIGALRM); `run_subprocess` runs the CLI in a child process with a timeout, for cases that can
block (FIFOs, devices) or that need real concurrency; `tree_hash` hashes every file under a folder
so a test can check that nothing it did not ask to change changed. Every case is recorded per
category (cases, clean exit 2, tracebacks, hangs, data lost, ...); when the environment variable
FOURIER_TOY_FUZZ_REPORT is set, the counters are written there as JSON at the end of the session.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fourier_toy import cli

REPORT_ENV = "FOURIER_TOY_FUZZ_REPORT"
CASE_SECONDS = 30.0  # per-case time limit
TRACEBACK = "Traceback (most recent call last)"
COUNTERS = ("cases", "clean_exit_2", "accepted", "tracebacks", "hangs", "data_lost", "bad_stderr", "other_exit")
STATS: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTERS, 0))

# The tiny preset on the numpy backend, a few steps: every run the suite trains takes well under 1 s.
TINY = ["--preset", "tiny", "--set", "model.backend=numpy", "--set", "train.max_steps=4",
        "--set", "train.eval_every=2", "--set", "train.checkpoint_every=2"]


class Hang(BaseException):
    """Raised by SIGALRM inside a case that ran past its time limit."""


@dataclass
class Result:
    argv: list
    code: int | None
    stdout: str = ""
    stderr: str = ""
    hung: bool = False
    seconds: float = 0.0
    escaped: str = ""  # the last line of an exception that escaped main()

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def last_traceback_line(self) -> str:
        if self.escaped:
            return self.escaped
        lines = self.error_lines()
        if TRACEBACK in self.stderr:
            return lines[-1] if lines else ""
        return ""


def run_main(argv, timeout: float = CASE_SECONDS) -> Result:
    """cli.main(argv) in this process: exit code, captured streams, a SIGALRM time limit."""
    argv = [str(a) for a in argv]
    out, err = io.StringIO(), io.StringIO()
    res = Result(argv, None)

    def on_alarm(signum, frame):
        raise Hang()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("always")
            try:
                res.code = cli.main(argv)
            except SystemExit as e:
                res.code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except Hang:
                res.hung = True
            except BaseException as e:  # noqa: BLE001 - any escape is what the suite looks for
                import traceback

                traceback.print_exc(file=err)
                res.escaped = f"{type(e).__name__}: {e}"[:300]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    res.seconds = time.perf_counter() - t0
    res.stdout, res.stderr = out.getvalue(), err.getvalue()
    return res


def run_subprocess(argv, timeout: float = CASE_SECONDS, cwd=None) -> Result:
    """The CLI in a child process (its own process group, killed whole on timeout)."""
    argv = [str(a) for a in argv]
    res = Result(argv, None)
    env = {**os.environ, "PYTHONWARNINGS": "always"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "fourier_toy.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd, env=env, start_new_session=True)
    try:
        res.stdout, res.stderr = proc.communicate(timeout=timeout)
        res.code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        res.stdout, res.stderr = proc.communicate()
        res.hung = True
    res.seconds = time.perf_counter() - t0
    return res


def start_subprocess(argv, cwd=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fourier_toy.cli", *[str(a) for a in argv]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                            env={**os.environ, "PYTHONWARNINGS": "always"}, start_new_session=True)


def finish_subprocess(proc: subprocess.Popen, argv, timeout: float = CASE_SECONDS) -> Result:
    res = Result([str(a) for a in argv], None)
    try:
        res.stdout, res.stderr = proc.communicate(timeout=timeout)
        res.code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        res.stdout, res.stderr = proc.communicate()
        res.hung = True
    return res


def tree_hash(path) -> dict[str, str]:
    """relative path -> SHA-256 of every file under `path` (or of `path` itself when a file)."""
    root = Path(path)
    if root.is_file():
        return {".": hashlib.sha256(root.read_bytes()).hexdigest()}
    digests = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            if p.is_file():
                digests[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return dict(sorted(digests.items()))


def snapshot(*paths) -> dict:
    return {str(p): tree_hash(p) for p in paths}


def lost_files(before: dict) -> list[str]:
    """Files of a snapshot that are gone or changed now."""
    lost = []
    for root, digests in before.items():
        now = tree_hash(root) if Path(root).exists() else {}
        lost += [f"{root}/{rel}" for rel, d in digests.items() if now.get(rel) != d]
    return lost


def problems(res: Result, lost=(), allow_ok: bool = False) -> list[str]:
    """What is wrong with a case that should end with exit 2 and one `error:` line (or, with
    `allow_ok`, with exit 0 and no error line)."""
    found = []
    if res.hung:
        return [f"hang after {res.seconds:.1f} s"]
    if TRACEBACK in res.stderr or res.escaped:
        found.append(f"traceback: {res.last_traceback_line()}")
    lines = res.error_lines()
    if res.code == 2:
        if len(lines) != 1 or not lines[0].startswith("error:"):
            found.append(f"stderr is not one error line: {lines[:5]!r}")
    elif not (allow_ok and res.code == 0 and not any(line.startswith("error:") for line in lines)):
        found.append(f"exit {res.code}, stderr {lines[-3:]!r}")
    if lost:
        found.append(f"changed or lost: {list(lost)[:5]}")
    return found


def record(category: str, res: Result, lost=(), allow_ok: bool = False) -> list[str]:
    """Count one case of `category`; the problems found (empty when clean)."""
    found = problems(res, lost, allow_ok)
    s = STATS[category]
    s["cases"] += 1
    if res.hung:
        s["hangs"] += 1
    elif TRACEBACK in res.stderr or res.escaped:
        s["tracebacks"] += 1
    elif res.code == 2:
        if any(f.startswith("stderr") for f in found):
            s["bad_stderr"] += 1
        else:
            s["clean_exit_2"] += 1
    elif res.code == 0 and allow_ok and not found:
        s["accepted"] += 1
    else:
        s["other_exit"] += 1
    if lost:
        s["data_lost"] += 1
    return found


def describe(res: Result, found: list[str]) -> str:
    return f"fourier-toy {' '.join(a if len(a) < 200 else a[:60] + '...' for a in res.argv)}: {'; '.join(found)}"


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get(REPORT_ENV, "").strip()
    if path and STATS:
        Path(path).write_text(json.dumps(dict(STATS), indent=2, sort_keys=True) + "\n")


# ---- shared inputs -------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def fuzz_inputs(tmp_path_factory):
    """A tiny run, a tiny sweep, .npy/.npz rows and a grid, made once; tests damage copies."""
    base = tmp_path_factory.mktemp("fuzz_inputs")
    run = base / "run"
    res = run_main(["train", *TINY, "--out", run])
    assert res.code == 0, res.stderr
    grid = base / "grid.toml"
    grid.write_text('preset = "tiny"\n[base.model]\nbackend = "numpy"\n'
                    '[base.train]\nmax_steps = 4\neval_every = 2\ncheckpoint_every = 2\n[grid]\nseed = [0]\n')
    import numpy as np

    rows = np.random.default_rng(0).standard_normal((21, 16)).astype(np.float32)
    npy, npz = base / "rows.npy", base / "rows.npz"
    np.save(npy, rows)
    np.savez(npz, rows=rows)
    toml = base / "config.toml"
    toml.write_text('[model]\nbackend = "numpy"\n[train]\nmax_steps = 4\n')
    return {"base": base, "run": run, "npy": npy, "npz": npz, "grid": grid, "toml": toml}


@pytest.fixture(scope="session")
def fuzz_sweep(fuzz_inputs):
    """A one-run tiny sweep directory (sweep.json, results.jsonl, runs/)."""
    sweep = fuzz_inputs["base"] / "sweep"
    res = run_main(["sweep", fuzz_inputs["grid"], "--workers", "0", "--out", sweep])
    assert res.code == 0, res.stdout + res.stderr
    return sweep
