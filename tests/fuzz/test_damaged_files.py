"""Category 2, damaged files: a copy of each file the project reads (a run directory's six files,
a sweep directory's sweep.json and results.jsonl, .npy/.npz rows, a TOML grid) is truncated, has
bytes flipped or is replaced by a JSON value, then read by the commands that read it. Each case
must exit 2 with one `error:` line, or exit 0 when the damage leaves nothing the command relies on
wrong (a digit of a logged metric, a file the command does not read); never a traceback or a hang,
and a failed command changes none of its inputs."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from fourier_toy.experiments import grid as grid_mod

from .conftest import TINY, describe, lost_files, record, run_main, snapshot

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
RUN_FILES = ["model.safetensors", "state.safetensors", "checkpoint.json", "config.json", "metrics.jsonl",
             "summary.json"]
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(allow_nan=False),
              st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=8)


@st.composite
def damage(draw, data: bytes) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["truncate", "flip", "json"]))
    if kind == "truncate":
        at = draw(st.integers(0, max(0, len(data) - 1)))
        return f"truncate at {at}", data[:at]
    if kind == "flip":
        buf = bytearray(data)
        spots = draw(st.lists(st.integers(0, max(0, len(data) - 1)), min_size=1, max_size=4))
        for i in spots:
            buf[i] ^= draw(st.integers(1, 255))
        return f"flip bytes {spots}", bytes(buf)
    value = draw(json_values)
    return f"replace with {json.dumps(value)[:60]}", json.dumps(value).encode()


def run_case(data, copy_dir: Path, damaged: Path, argv, category="damaged_files", read_only=True):
    """Damage `damaged` (inside the copied `copy_dir`), run argv, check the outcome."""
    what, new = data.draw(damage(damaged.read_bytes()))
    damaged.write_bytes(new)
    before = snapshot(copy_dir)
    res = run_main(argv)
    # a command that succeeded may write (train --resume, sweep-report): only failures must leave
    # their inputs as they were; read-only commands must always.
    lost = lost_files(before) if (read_only or res.code != 0) else []
    found = record(category, res, lost, allow_ok=True)
    assert not found, f"{damaged.name} ({what}): " + describe(res, found)


RUN_COMMANDS = ["eval", "resume", "export", "lens", "spectrum", "transplant"]


@SETTINGS
@given(name=st.sampled_from(RUN_FILES), command=st.sampled_from(RUN_COMMANDS), data=st.data())
def test_damaged_run(fuzz_inputs, name, command, data):
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(fuzz_inputs["run"], run)
        out = Path(tmp) / "out"
        argv = {
            "eval": ["eval", run],
            "resume": ["train", "--resume", run, "--set", "train.max_steps=6"],
            "export": ["export", run, out],
            "lens": ["lens", run, "--json"],
            "spectrum": ["spectrum", run, "--json"],
            "transplant": ["train", *TINY, "--set", "embedding.kind=transplant", "--set",
                           f"embedding.source={run}", "--out", out],
        }[command]
        run_case(data, run, run / name, argv, read_only=command != "resume")


@settings(SETTINGS, max_examples=20)
@given(name=st.sampled_from(["sweep.json", "results.jsonl"]), data=st.data())
def test_damaged_sweep(fuzz_sweep, name, data):
    with tempfile.TemporaryDirectory() as tmp:
        sweep = Path(tmp) / "sweep"
        shutil.copytree(fuzz_sweep, sweep)
        run_case(data, sweep, sweep / name, ["sweep-report", sweep], read_only=False)


@settings(SETTINGS, max_examples=20)
@given(kind=st.sampled_from(["npy", "npz"]), command=st.sampled_from(["transplant", "spectrum"]), data=st.data())
def test_damaged_rows(fuzz_inputs, kind, command, data):
    with tempfile.TemporaryDirectory() as tmp:
        rows = Path(tmp) / f"rows.{kind}"
        shutil.copy(fuzz_inputs[kind], rows)
        argv = (["spectrum", rows, "--json"] if command == "spectrum" else
                ["train", *TINY, "--set", "embedding.kind=transplant", "--set", f"embedding.source={rows}",
                 "--out", Path(tmp) / "out"])
        run_case(data, rows, rows, argv)


def grid_rejected(path) -> bool:
    try:
        grid_mod.expand(grid_mod.load_grid(path))
    except Exception:  # noqa: BLE001 - rejected (or crashed): the CLI must give one line
        return True
    return False


@settings(SETTINGS, max_examples=15, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_damaged_grid(fuzz_inputs, data):
    """Only grids the grid layer rejects: a damaged grid can still be valid (an empty file is one
    run of the quick preset), and a valid one trains."""
    with tempfile.TemporaryDirectory() as tmp:
        grid = Path(tmp) / "grid.toml"
        shutil.copy(fuzz_inputs["grid"], grid)
        what, new = data.draw(damage(grid.read_bytes()))
        grid.write_bytes(new)
        if not grid_rejected(grid):
            reject()
        before = snapshot(grid)
        res = run_main(["sweep", grid, "--workers", "0", "--out", Path(tmp) / "out"])
        found = record("damaged_files", res, lost_files(before))
        assert not found, f"grid.toml ({what}): " + describe(res, found)
