"""The shared reader of a run directory: config and weights, and one message per problem."""

import json

import numpy as np
import pytest

from fourier_toy.errors import CheckpointError
from fourier_toy.runs.layout import CONFIG, MODEL
from fourier_toy.runs.read_run import read_config, read_weight, read_weights
from fourier_toy.runs.tensors import save_tensors


def _run(path):
    path.mkdir()
    (path / CONFIG).write_text(json.dumps({"task": {"max_operand": 2}, "derived": {"n_numbers": 5}}))
    wte = np.arange(28, dtype=np.float32).reshape(7, 4)
    save_tensors(path / MODEL, {"wte.weight": wte, "wpe.weight": np.zeros((4, 4), np.float32)}, {"step": "9"})
    return wte


def test_reads_config_and_weights(tmp_path):
    wte = _run(tmp_path / "run")
    assert read_config(tmp_path / "run")["derived"] == {"n_numbers": 5}
    tensors, meta = read_weights(tmp_path / "run")
    assert meta["step"] == "9" and set(tensors) == {"wte.weight", "wpe.weight"}
    np.testing.assert_array_equal(read_weight(tmp_path / "run", "wte.weight"), wte)


def test_each_problem_names_the_path(tmp_path):
    def fails(match, fn, *args):
        with pytest.raises(CheckpointError, match=match) as info:
            fn(*args)
        assert "\n" not in str(info.value)

    fails(r"nothere: no such run directory", read_config, tmp_path / "nothere")
    fails(r"nothere: no such run directory", read_weights, tmp_path / "nothere")
    (tmp_path / "empty").mkdir()
    fails(r"empty: no config\.json \(not a fourier_toy run directory\)", read_config, tmp_path / "empty")
    fails(r"empty/model\.safetensors: no such file \(the run has no checkpoint yet\)", read_weights, tmp_path / "empty")
    _run(tmp_path / "run")
    (tmp_path / "run" / CONFIG).write_text("[1, 2]")
    fails(r"config\.json: expected a JSON object", read_config, tmp_path / "run")
    (tmp_path / "run" / CONFIG).write_text("{")
    fails(r"config\.json: not valid JSON", read_config, tmp_path / "run")
    (tmp_path / "run" / MODEL).write_bytes(b"\x00" * 4)
    fails(r"model\.safetensors: not a valid safetensors file", read_weight, tmp_path / "run", "wte.weight")
