"""Progress on stderr for the long commands (reproduce, sweep, train), by one rule:

- stderr is a terminal: a tqdm bar, redrawn in place;
- anything else (CI logs, a notebook cell, nohup.out): plain lines, one per finished run

      [7/15] fourier_frozen seed 1: test acc 0.989, 14.2 s
      [8/15] pretrained seed 0 failed: FileNotFoundError: rows.npy

  and one per finished stage (`reproduce: 25 runs done in 280 s (0 failed)`), because a redrawn bar
  turns into thousands of carriage returns in a log file, or into nothing at all in a notebook.

`--progress` / `--no-progress` (progress=True/False) force the bar on or off; off means lines.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def bars_wanted(progress: bool | None = None, stream: TextIO | None = None) -> bool:
    """The rule: an explicit choice wins, else a bar exactly when `stream` (stderr) is a terminal."""
    if progress is not None:
        return bool(progress)
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def seconds_text(seconds: float) -> str:
    # Tenths matter for a 14.2 s run; for a 280 s sweep they are noise.
    return f"{seconds:.1f}" if seconds < 100 else f"{seconds:.0f}"


def one_line(text: Any) -> str:
    """An error message on one line (tracebacks and wrapped messages would break the one-line-per-run log)."""
    return " ".join(str(text).split())


def run_label(values: dict) -> str:
    """A grid point by its values: a named condition by its name, the seed as `seed N`, anything
    else as key=value (as in GRID.toml)."""
    from fourier_toy.experiments.grid import show_value

    parts = []
    for key, value in values.items():
        if isinstance(value, dict) and "name" in value:
            parts.append(str(value["name"]))
        elif key == "seed":
            parts.append(f"seed {value}")
        else:
            parts.append(f"{key}={show_value(value)}")
    return " ".join(parts) or "(base)"


def run_line(rec: dict, index: int, total: int | None, seconds: float | None) -> str:
    """One finished run: `[i/n] LABEL: test acc A, S s`, or `[i/n] LABEL failed: ERROR`."""
    head = f"[{index}/{total if total is not None else '?'}] {run_label(rec.get('values') or {})}"
    if rec.get("status") != "ok":
        return f"{head} failed: {one_line(rec.get('error') or rec.get('status') or 'unknown error')}"
    parts = []
    if rec.get("test_acc") is not None:
        parts.append(f"test acc {rec['test_acc']:.3f}")
    if seconds is not None:
        parts.append(f"{seconds_text(seconds)} s")
    return f"{head}: {', '.join(parts) or 'ok'}"


class Progress:
    """Progress of one command: `start` once the number of runs is known, `result` per finished run
    record (run_sweep's on_start / on_result), `stage` per finished stage, `close` at the end (or use
    it as a context manager). Stage lines are printed in line mode only: on a terminal the bar, and
    what the command prints to stdout, already say it."""

    def __init__(self, command: str, progress: bool | None = None, stream: TextIO | None = None):
        self.command = command
        self.stream = sys.stderr if stream is None else stream
        self.bars = bars_wanted(progress, self.stream)
        self._bar = None
        self._total: int | None = None
        self._done = 0
        self._last = time.perf_counter()

    def start(self, total: int, reused: int = 0) -> None:
        """`total` runs are about to run; `reused` finished earlier and are kept."""
        self._total, self._done, self._last = total, 0, time.perf_counter()
        if self.bars:
            from tqdm.auto import tqdm

            self.close()
            self._bar = tqdm(total=total, unit="run", desc=self.command, dynamic_ncols=True, file=self.stream)
        else:
            kept = f" ({reused} already finished)" if reused else ""
            self._print(f"{self.command}: {total} run{'s' if total != 1 else ''} to train{kept}")

    def result(self, rec: dict) -> None:
        """A finished run's record. Its seconds are the record's own ("seconds", as run_point
        measures them) when present, else the time since the previous result."""
        now = time.perf_counter()
        seconds = rec.get("seconds")
        if not isinstance(seconds, (int, float)):
            seconds = now - self._last
        self._last = now
        self._done += 1
        index, total = rec.get("index", self._done), rec.get("total", self._total)
        if self.bars and self._bar is None and isinstance(total, int):  # a caller that never called start
            done = self._done
            self.start(total)
            self._done = done
        if self._bar is not None:
            self._bar.update(1)
            acc = rec.get("test_acc")
            self._bar.set_postfix_str(f"{run_label(rec.get('values') or {})}: {rec.get('status')}"
                                      + (f", test acc {acc:.3f}" if acc is not None else ""))
        elif not self.bars:
            self._print(run_line(rec, index, total, seconds))

    def stage(self, text: str, seconds: float | None = None) -> None:
        """`COMMAND: TEXT (S s)` in line mode."""
        if not self.bars:
            self._print(f"{self.command}: {text}" + ("" if seconds is None else f" ({seconds_text(seconds)} s)"))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)
