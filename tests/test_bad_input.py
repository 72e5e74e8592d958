"""Bad input the CLI must refuse in one line with exit 2: sizes that cannot fit in memory, paths that
are not regular files, deeply nested TOML/JSON, oversized grids, output directories that cannot be
created, and no warnings printed ahead of the error line."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from fourier_toy import cli, config as config_mod

TINY = ["--preset", "tiny", "--set", "model.backend=numpy"]


def refused(capsys, argv) -> str:
    """Run the CLI; assert exit 2 and exactly one stderr line, `error: ...`; return that line."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


def refused_in_subprocess(argv, cwd) -> str:
    """The same through a child process with a timeout, for input that used to hang (FIFOs)."""
    code = "import sys; from fourier_toy import cli; sys.exit(cli.main(sys.argv[1:]))"
    try:
        proc = subprocess.run([sys.executable, "-c", code, *argv], cwd=cwd, capture_output=True, text=True,
                              timeout=20, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung on {argv}")
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


# ---- 1. sizes that would exhaust memory ----------------------------------------------------------

def test_all_pairs_that_cannot_fit_are_refused_with_the_estimate(capsys, tmp_path):
    line = refused(capsys, ["train", "--set", "task.max_operand=100000", "--out", str(tmp_path / "r")])
    assert "task.max_operand" in line and "needs about" in line and "GiB of" in line
    assert not (tmp_path / "r").exists()


def test_a_model_that_cannot_fit_is_refused_with_the_estimate(capsys, tmp_path):
    line = refused(capsys, ["train", "--set", "model.d_model=65536", "--out", str(tmp_path / "r")])
    assert "model.d_model" in line and "needs about" in line


def test_the_basis_of_a_matrix_too_tall_is_refused_before_reading_it(capsys, tmp_path):
    path = tmp_path / "X.npy"
    np.save(path, np.zeros((50_257, 2), dtype=np.float32))
    line = refused(capsys, ["spectrum", str(path)])
    assert str(path) in line and "needs about" in line and "50257 rows" in line


def test_normal_sizes_pass_and_the_estimates_scale():
    assert config_mod.validate(config_mod.from_preset("paper")) is None
    small, big = config_mod.TaskConfig(max_operand=60), config_mod.TaskConfig(max_operand=100_000)
    assert config_mod.task_bytes(small) < 2**20 < 2**36 < config_mod.task_bytes(big)
    assert config_mod.basis_bytes(520) < 2**24


def test_the_check_does_nothing_where_the_memory_is_unknown(monkeypatch):
    monkeypatch.setattr(config_mod, "machine_memory", lambda: None)
    config_mod.check_memory("x", 2**60)


# ---- 2. non-regular files ------------------------------------------------------------------------

@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo.toml"
    os.mkfifo(path)
    return path


def test_a_fifo_as_config_is_refused_not_read(fifo, tmp_path):
    line = refused_in_subprocess(["train", "--config", str(fifo), "--out", str(tmp_path / "r")], tmp_path)
    assert "--config" in line and "FIFO" in line and "regular file" in line


def test_a_fifo_as_grid_is_refused_not_read(fifo, tmp_path):
    line = refused_in_subprocess(["sweep", str(fifo), "--out", str(tmp_path / "s")], tmp_path)
    assert "GRID" in line and "FIFO" in line


def test_a_fifo_as_a_matrix_is_refused_not_read(tmp_path):
    path = tmp_path / "X.npy"
    os.mkfifo(path)
    line = refused_in_subprocess(["spectrum", str(path)], tmp_path)
    assert str(path) in line and "FIFO" in line


def test_a_directory_as_config_is_refused(capsys, tmp_path):
    assert "directory" in refused(capsys, ["train", "--config", str(tmp_path)])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["train", *TINY, "--set", "train.max_steps=20", "--out", str(out), "--no-progress"]) == 0
    return out


def test_a_fifo_as_a_runs_metrics_is_refused_not_read(run_dir, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "metrics.jsonl").unlink()
    os.mkfifo(run / "metrics.jsonl")
    line = refused_in_subprocess(["train", "--resume", str(run), "--set", "train.max_steps=40"], tmp_path)
    assert "metrics.jsonl" in line and "FIFO" in line


# ---- 3. deep nesting -----------------------------------------------------------------------------

def test_deeply_nested_toml_is_one_line(capsys, tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text("a = " + "[" * 100_000 + "\n")
    line = refused(capsys, ["train", "--config", str(path)])
    assert "--config" in line and "nested too deeply" in line


def test_deeply_nested_set_value_is_one_line(capsys):
    assert "--set" in refused(capsys, ["train", "--set", "train.betas=" + "[" * 5000])


def test_deeply_nested_run_json_is_one_line(capsys, run_dir, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "config.json").write_text('{"a":' * 100_000)
    line = refused(capsys, ["eval", str(run)])
    assert "config.json" in line and "nested too deeply" in line


def test_deeply_nested_jsonl_line_is_one_line(tmp_path):
    from fourier_toy.errors import CheckpointError
    from fourier_toy.runs.files import read_jsonl

    path = tmp_path / "m.jsonl"
    path.write_text('{"a":' * 100_000 + "\n{}\n")
    with pytest.raises(CheckpointError, match="line 1"):
        read_jsonl(path)


# ---- 4. grid size --------------------------------------------------------------------------------

def test_a_grid_too_large_is_refused_before_it_is_expanded(capsys, tmp_path):
    values = "[" + ", ".join(str(i) for i in range(40)) + "]"
    keys = ["seed", "train.max_steps", "train.eval_every", "train.checkpoint_every", "train.warmup_steps",
            "model.n_layers"]
    grid = tmp_path / "grid.toml"
    grid.write_text('preset = "tiny"\n[grid]\n' + "".join(f'"{k}" = {values}\n' for k in keys))
    line = refused(capsys, ["sweep", str(grid), "--out", str(tmp_path / "s")])
    assert "4,096,000,000 points" in line and "10,000" in line


# ---- 5. output directories that cannot be created ------------------------------------------------

@pytest.mark.parametrize("command", ["train", "sweep", "reproduce", "export"])
def test_an_out_under_a_file_is_one_line(capsys, tmp_path, command):
    (tmp_path / "afile").write_text("")
    out = str(tmp_path / "afile" / "x")
    grid = tmp_path / "grid.toml"
    grid.write_text('preset = "tiny"\n[grid]\nseed = [0]\n')
    argv = {"train": ["train", *TINY, "--out", out], "sweep": ["sweep", str(grid), "--out", out],
            "reproduce": ["reproduce", "--seeds", "1", "--out", out],
            "export": ["export", str(tmp_path), out]}[command]
    line = refused(capsys, argv)
    assert out in line and "not a directory" in line


def test_an_out_name_too_long_is_one_line(capsys, tmp_path):
    out = str(tmp_path / ("x" * 300))
    assert "name too long" in refused(capsys, ["train", *TINY, "--out", out])


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_an_out_in_a_read_only_place_is_one_line(capsys, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert "cannot create" in refused(capsys, ["train", *TINY, "--out", str(ro / "r")])
    finally:
        ro.chmod(0o755)


# ---- 6. warnings do not precede the error line ---------------------------------------------------

def test_warnings_raised_while_failing_are_not_printed(capsys, monkeypatch):
    from fourier_toy.errors import ConfigError

    def noisy(args):
        warnings.warn("overflow encountered", RuntimeWarning)
        raise ConfigError("x: bad")

    monkeypatch.setattr(cli, "cmd_eval", noisy)
    parser = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with_eval(parser(), noisy))
    assert refused(capsys, ["eval", "somewhere"]) == "error: x: bad"


def test_warnings_of_a_successful_command_are_still_shown(monkeypatch):
    def noisy(args):
        warnings.warn("worth knowing", UserWarning)
        return 0

    parser = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with_eval(parser(), noisy))
    with pytest.warns(UserWarning, match="worth knowing"):
        assert cli.main(["eval", "somewhere"]) == 0


def _with_eval(parser, func):
    sub = next(a for a in parser._actions if hasattr(a, "choices") and a.choices and "eval" in a.choices)
    sub.choices["eval"].set_defaults(func=func)
    return parser
