"""Category 3, hostile paths: outputs through a file, names too long, read-only places, outputs
that are inputs (--out = the config, --plot = the run's weights, export OUT = RUN or its parent),
and inputs that block or never end (a FIFO, /dev/zero). Each must exit 2 with one `error:` line
within the time limit and leave every existing run and input byte-identical. Cases that can block
run in a child process with a timeout."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import TINY, describe, lost_files, record, run_main, run_subprocess, snapshot


def check(res, before):
    found = record("hostile_paths", res, lost_files(before))
    assert not found, describe(res, found)


@pytest.fixture
def run(fuzz_inputs, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(fuzz_inputs["run"], copy)
    return copy


def train(out, *extra):
    return ["train", *TINY, "--out", out, *extra]


CASES = {
    "out_through_a_file": lambda t, r: train(t / "config.toml" / "run"),
    "out_name_too_long": lambda t, r: train(t / ("n" * 300)),
    "out_path_too_long": lambda t, r: train(t.joinpath(*["d" * 200] * 25)),
    "out_is_the_config": lambda t, r: train(t / "config.toml", "--config", t / "config.toml"),
    "out_is_the_config_force": lambda t, r: train(t / "config.toml", "--config", t / "config.toml", "--force"),
    "out_is_an_existing_run": lambda t, r: train(r),
    "out_is_a_run_file": lambda t, r: train(r / "model.safetensors", "--force"),
    "out_is_dev_null": lambda t, r: train("/dev/null"),
    "spectrum_plot_is_the_weights": lambda t, r: ["spectrum", r, "--plot", r / "model.safetensors"],
    "lens_plot_is_the_weights": lambda t, r: ["lens", r, "--plot", r / "model.safetensors"],
    "lens_plot_is_the_run": lambda t, r: ["lens", r, "--plot", r],
    "export_out_is_the_run": lambda t, r: ["export", r, r],
    "export_out_is_the_run_force": lambda t, r: ["export", r, r, "--force"],
    "export_out_is_the_parent": lambda t, r: ["export", r, r.parent],
    "export_out_is_the_parent_force": lambda t, r: ["export", r, r.parent, "--force"],
    "export_out_is_a_run_file_force": lambda t, r: ["export", r, r / "config.json", "--force"],
    "resume_a_file": lambda t, r: ["train", "--resume", r / "checkpoint.json"],
    "eval_a_file": lambda t, r: ["eval", r / "model.safetensors"],
    "sweep_report_a_run": lambda t, r: ["sweep-report", r],
    "sweep_grid_is_a_dir": lambda t, r: ["sweep", r, "--workers", "0", "--out", t / "sw"],
    "config_is_a_dir": lambda t, r: train(t / "out", "--config", r),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_path(name, run, fuzz_inputs, tmp_path):
    shutil.copy(fuzz_inputs["toml"], tmp_path / "config.toml")
    before = snapshot(run, tmp_path / "config.toml")
    check(run_main(CASES[name](tmp_path, run)), before)


BLOCKING = {
    "config_is_a_fifo": lambda t, r: train(t / "out", "--config", t / "fifo.toml"),
    "run_config_is_a_fifo": lambda t, r: ["eval", r],
    "grid_is_a_fifo": lambda t, r: ["sweep", t / "fifo.toml", "--workers", "0", "--out", t / "sw"],
    "source_is_dev_zero": lambda t, r: ["spectrum", t / "zero.npy"],
    "transplant_from_dev_zero": lambda t, r: train(t / "out", "--set", "embedding.kind=transplant",
                                                   "--set", f"embedding.source={t / 'zero.npy'}"),
}


@pytest.mark.parametrize("name", sorted(BLOCKING))
def test_blocking_input(name, run, fuzz_inputs, tmp_path):
    os.mkfifo(tmp_path / "fifo.toml")
    (tmp_path / "zero.npy").symlink_to("/dev/zero")
    if name == "run_config_is_a_fifo":
        (run / "config.json").unlink()
        os.mkfifo(run / "config.json")
    before = snapshot(run)
    check(run_subprocess(BLOCKING[name](tmp_path, run), timeout=20), before)


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory nothing can be written under: chmod for other users; as root (which ignores
    permissions) a read-only bind mount, skipped where mounting is not allowed."""
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "keep.txt").write_text("keep\n")
    if os.geteuid() != 0:
        ro.chmod(0o555)
        yield ro
        ro.chmod(0o755)
        return
    ok = subprocess.run(["mount", "--bind", ro, ro], capture_output=True).returncode == 0
    if not ok:
        pytest.skip("running as root, which ignores permissions, and a read-only bind mount is not allowed here")
    if subprocess.run(["mount", "-o", "remount,ro,bind", ro], capture_output=True).returncode != 0:
        subprocess.run(["umount", ro])
        pytest.skip("running as root, which ignores permissions, and remounting read-only is not allowed here")
    try:
        yield ro
    finally:
        subprocess.run(["umount", ro])


@pytest.mark.parametrize("command", ["train", "train_nested", "export", "plot"])
def test_read_only_out(command, read_only_dir, run):
    argv = {"train": train(read_only_dir / "run"),
            "train_nested": train(read_only_dir / "a" / "b" / "run"),
            "export": ["export", run, read_only_dir / "hf"],
            "plot": ["spectrum", run, "--plot", read_only_dir / "s.png"]}[command]
    before = snapshot(run, read_only_dir)
    check(run_main(argv), before)
