"""Category 4, two writers on one run: two processes start `train` (or `train --resume`, or
`export`) on the same directory at once. Exactly one succeeds, the other exits 2 with one `error:`
line, and the directory is left consistent (it evaluates, at the step the winner reached)."""

from __future__ import annotations

import json
import shutil

import pytest

from .conftest import TINY, describe, finish_subprocess, record, run_main, start_subprocess

LONGER = ["--set", "train.max_steps=300", "--set", "train.checkpoint_every=50"]


@pytest.mark.parametrize("command", ["train", "resume", "export"])
def test_two_writers(command, fuzz_inputs, tmp_path):
    run = tmp_path / "run"
    if command == "train":
        argv = ["train", *TINY, *LONGER, "--out", run]
    else:
        shutil.copytree(fuzz_inputs["run"], run)
        argv = (["train", "--resume", run, "--set", "train.max_steps=300"] if command == "resume"
                else ["export", run, tmp_path / "hf"])
    procs = [start_subprocess(argv) for _ in range(2)]
    results = [finish_subprocess(p, argv, timeout=60) for p in procs]
    assert not any(r.hung for r in results), [describe(r, ["hang"]) for r in results]
    winners = [r for r in results if r.code == 0]
    losers = [r for r in results if r.code != 0]
    for r in losers:
        found = record("two_writers", r)
        assert not found, describe(r, found)
    for r in winners:
        record("two_writers", r, allow_ok=True)
    assert len(winners) == 1, [(r.code, r.stderr[-300:]) for r in results]
    check = run_main(["eval", run, "--json"])
    assert check.code == 0, check.stderr
    if command != "export":
        assert json.loads((run / "checkpoint.json").read_text())["step"] == 300
    else:
        assert (tmp_path / "hf").is_dir() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
