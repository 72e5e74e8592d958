"""The CLI never destroys what it did not write: export --force, train --force, --plot, and one
writer per run directory. Each refusal exits 2 with one `error:` line and leaves every file as it
was (compared byte for byte)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fourier_toy import cli

TINY = ["--preset", "tiny", "--set", "model.backend=numpy"]


def tree(folder: Path) -> dict:
    """relative path -> sha256 of every file under `folder` (directories as "dir")."""
    folder = Path(folder)
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(code: int, err: str, *words: str) -> bool:
    lines = err.strip().splitlines()
    return (code == 2 and len(lines) == 1 and lines[0].startswith("error: ")
            and all(w in lines[0] for w in words))


@pytest.fixture
def run(fourier_toy_run_path, tmp_path) -> Path:
    """A copy of `fourier-toy train --preset tiny --set model.backend=numpy` (40 steps), trained
    once into the plugin's run cache (fourier_toy.testing.plugin)."""
    copy = tmp_path / "p" / "run"
    shutil.copytree(fourier_toy_run_path(["model.backend=numpy"], preset="tiny"), copy)
    return copy


# --------------------------------------------------------------------------- export --force

def test_export_force_never_replaces_the_run_or_its_parent(run, capsys):
    parent = run.parent
    before = tree(parent)
    code, _, err = run_cli(capsys, "export", run, run, "--force")
    assert refused(code, err, str(run), "run itself")
    code, _, err = run_cli(capsys, "export", run, parent, "--force")
    assert refused(code, err, str(parent), "holding the run")
    assert tree(parent) == before


def test_export_force_replaces_only_an_earlier_export(run, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(run, other)
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "config.json").write_text('{"model_type": "gpt2"}\n')
    (stranger / "model.safetensors").write_bytes(b"mine")
    before = tree(tmp_path)
    for target in (other, stranger):
        code, _, err = run_cli(capsys, "export", run, target, "--force")
        assert refused(code, err, "--force", str(target))
    assert tree(tmp_path) == before

    hf = tmp_path / "hf"
    assert run_cli(capsys, "export", run, hf)[0] == 0
    first = tree(hf)
    assert set(first) == {"config.json", "model.safetensors", "vocab.json"}
    assert run_cli(capsys, "export", run, hf, "--force")[0] == 0  # an earlier export is replaced
    assert tree(hf) == first
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------- train --force

def test_train_force_keeps_the_old_run_when_the_new_one_fails(run, capsys):
    # An empty training split passes the config checks and the build, then fails in the loop,
    # after the run directory has been prepared.
    before = tree(run.parent)
    proc = subprocess.run([sys.executable, "-m", "fourier_toy.cli", "train", *TINY,
                           "--set", "task.split=[0.001,0.5,0.499]", "--out", str(run), "--force"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert tree(run.parent) == before  # the old run, byte for byte, and no lock or set-aside copy left


def test_train_force_replaces_once_the_new_run_has_trained(run, capsys):
    old = (run / "model.safetensors").read_bytes()
    assert run_cli(capsys, "train", *TINY, "--seed", "5", "--out", run, "--force")[0] == 0
    assert (run / "model.safetensors").read_bytes() != old
    assert sorted(p.name for p in run.parent.iterdir()) == ["run"]


# --------------------------------------------------------------------------- --plot

def test_plot_never_overwrites_a_file_it_did_not_write(run, tmp_path, capsys):
    matrix = tmp_path / "rows.npy"
    np.save(matrix, np.random.default_rng(0).normal(size=(24, 8)))
    foreign = tmp_path / "photo.png"
    foreign.write_bytes(b"\x89PNG\r\n\x1a\n not ours")
    before = tree(tmp_path)
    for target, words in ((run / "model.safetensors", ".png"), (matrix, ".png"), (foreign, "not a figure"),
                          (run / "config.json", ".png"), (tmp_path / "fig.PDF", ".png")):
        code, _, err = run_cli(capsys, "spectrum", run, "--plot", target)
        assert refused(code, err, "--plot", str(target), words)
    code, _, err = run_cli(capsys, "lens", run, "--plot", foreign)
    assert refused(code, err, "--plot", str(foreign))
    assert tree(tmp_path) == before

    fig = tmp_path / "fig.png"
    assert run_cli(capsys, "spectrum", run, "--plot", fig)[0] == 0
    assert b"Software\x00fourier_toy" in fig.read_bytes()
    assert run_cli(capsys, "spectrum", run, "--plot", fig)[0] == 0  # our own figure may be replaced


# --------------------------------------------------------------------------- one writer per run

def _train_proc(out: Path, seed: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fourier_toy.cli", "train", *TINY, "--seed", str(seed),
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_concurrent_trains_one_wins(tmp_path, capsys):
    out = tmp_path / "run"
    procs = [_train_proc(out, seed) for seed in (1, 2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    winner = (1, 2)[[code for code, _ in results].index(0)]
    loser_err = next(err for code, err in results if code == 2)
    assert loser_err.strip().splitlines()[-1].startswith("error: --out")
    assert json.loads((out / "config.json").read_text())["seed"] == winner
    assert run_cli(capsys, "eval", out, "--json")[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_live_lock_refuses_and_a_stale_lock_is_taken_over(run, capsys):
    lock = run.parent / ".run.lock"
    lock.write_text(f"{os.getpid()} {socket.gethostname()}\n")  # held by a live process
    before = tree(run.parent)
    code, _, err = run_cli(capsys, "train", "--resume", run, "--set", "train.max_steps=60")
    assert refused(code, err, "--resume", f"process {os.getpid()}")
    code, _, err = run_cli(capsys, "train", *TINY, "--out", run, "--force")
    assert refused(code, err, "--out", f"process {os.getpid()}")
    assert tree(run.parent) == before

    lock.write_text(f"{_dead_pid()} {socket.gethostname()}\n")  # its holder died
    assert run_cli(capsys, "train", "--resume", run, "--set", "train.max_steps=60")[0] == 0
    assert not lock.exists()
