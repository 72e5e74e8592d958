"""Atomic writes, metrics JSONL and RNG state of the run directory."""

import json
import os

import numpy as np
import pytest

from fourier_toy.errors import CheckpointError, DataError
from fourier_toy.runs.files import (
    append_jsonl,
    atomic_write_bytes,
    atomic_write_json,
    read_json_object,
    read_jsonl,
    rng_from_array,
    rng_state_to_array,
    truncate_jsonl,
)
from fourier_toy.runs.tensors import load_tensors, save_tensors


# ----------------------------------------------------------------------------- atomic writes

def test_atomic_write_json_content(tmp_path):
    target = tmp_path / "config.json"
    atomic_write_json(target, {"b": 1, "a": [1.5, None], "c": np.float32(0.5), "d": np.int64(3)})
    text = target.read_text()
    assert json.loads(text) == {"a": [1.5, None], "b": 1, "c": 0.5, "d": 3}
    assert text.index('"a"') < text.index('"b"')  # sorted keys
    assert '\n  "a"' in text  # indent 2
    assert os.listdir(tmp_path) == ["config.json"]


def test_failed_rename_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    target = tmp_path / "config.json"
    atomic_write_json(target, {"version": 1})
    old = target.read_bytes()

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(CheckpointError, match="config.json"):
        atomic_write_json(target, {"version": 2})
    assert target.read_bytes() == old
    assert os.listdir(tmp_path) == ["config.json"]


def test_interrupt_during_write_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    target = tmp_path / "weights.bin"
    atomic_write_bytes(target, b"old contents")

    def interrupted_fsync(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted_fsync)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"new contents that never land")
    monkeypatch.undo()
    assert target.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["weights.bin"]


@pytest.mark.parametrize("bad, reason", [({"loss": float("nan")}, "NaN"), ({"x": object()}, "JSON")])
def test_unencodable_json_raises_and_keeps_old_file(tmp_path, bad, reason):
    target = tmp_path / "config.json"
    atomic_write_json(target, {"ok": True})
    old = target.read_bytes()
    with pytest.raises(CheckpointError, match=reason):
        atomic_write_json(target, bad)
    assert target.read_bytes() == old
    assert os.listdir(tmp_path) == ["config.json"]


def test_write_into_missing_directory_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="missing"):
        atomic_write_bytes(tmp_path / "missing" / "x.bin", b"data")


# ----------------------------------------------------------------------------- JSONL

def test_jsonl_append_and_read(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [{"step": i, "loss": 1.0 / (i + 1), "acc": np.float32(0.5)} for i in range(3)]
    for r in records:
        append_jsonl(path, r)
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["step"] == i for i, line in enumerate(lines))
    assert read_jsonl(path) == [{"step": i, "loss": 1.0 / (i + 1), "acc": 0.5} for i in range(3)]


def test_jsonl_partial_last_line_is_dropped_and_repaired_on_append(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"step": 0})
    append_jsonl(path, {"step": 1})
    with open(path, "ab") as f:
        f.write(b'{"step": 2, "lo')  # an interrupted append
    assert read_jsonl(path) == [{"step": 0}, {"step": 1}]
    append_jsonl(path, {"step": 3})
    assert read_jsonl(path) == [{"step": 0}, {"step": 1}, {"step": 3}]
    assert path.read_bytes().endswith(b'{"step": 3}\n')


def test_jsonl_complete_last_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 0}\n{"step": 1}')
    assert read_jsonl(path) == [{"step": 0}, {"step": 1}]
    append_jsonl(path, {"step": 2})
    assert read_jsonl(path) == [{"step": 0}, {"step": 1}, {"step": 2}]


@pytest.mark.parametrize(
    "content, line",
    [
        (b'{"step": 0}\n{"step": 1, oops}\n{"step": 2}\n', 2),
        (b'{"step": 0}\n[1, 2]\n{"step": 2}\n', 2),
        (b'{"step": 0}\n{"step": 1}\n{"step": \n', 3),  # terminated, so not an interrupted append
    ],
)
def test_jsonl_corrupt_line_names_file_and_line(tmp_path, content, line):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"metrics\.jsonl: line {line}\b"):
        read_jsonl(path)


def test_jsonl_rejects_nan_without_touching_the_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"step": 0})
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="NaN"):
        append_jsonl(path, {"step": 1, "loss": float("nan")})
    assert path.read_bytes() == before


def test_truncate_jsonl_keeps_matching_records(tmp_path):
    path = tmp_path / "metrics.jsonl"
    for step in (0, 100, 200, 300):
        append_jsonl(path, {"step": step})
    with open(path, "ab") as f:
        f.write(b'{"step": 40')
    kept = truncate_jsonl(path, lambda r: r["step"] <= 200)
    assert kept == [{"step": 0}, {"step": 100}, {"step": 200}]
    assert read_jsonl(path) == kept
    assert path.read_bytes().endswith(b"\n")
    assert os.listdir(tmp_path) == ["metrics.jsonl"]


# ----------------------------------------------------------------------------- RNG state

def test_rng_round_trip_continues_identical_stream(tmp_path):
    gen = np.random.default_rng(12345)
    gen.standard_normal(7)
    gen.integers(0, 10, size=3, dtype=np.uint32)  # leaves a buffered 32-bit half in the state
    arr = rng_state_to_array(gen)
    assert arr.dtype == np.uint8 and arr.ndim == 1

    save_tensors(tmp_path / "rng.safetensors", {"rng": arr})
    restored = rng_from_array(load_tensors(tmp_path / "rng.safetensors")[0]["rng"])

    expected = (gen.integers(0, 2**32, size=5, dtype=np.uint32), gen.standard_normal(50), gen.permutation(20))
    got = (restored.integers(0, 2**32, size=5, dtype=np.uint32), restored.standard_normal(50), restored.permutation(20))
    for e, g in zip(expected, got):
        assert e.tobytes() == g.tobytes()


def test_rng_state_rejects_bad_input():
    with pytest.raises(DataError, match="MT19937"):
        rng_state_to_array(np.random.Generator(np.random.MT19937(0)))
    with pytest.raises(CheckpointError, match="rng state"):
        rng_from_array(np.frombuffer(b"{not json", dtype=np.uint8))
    with pytest.raises(CheckpointError, match="uint8"):
        rng_from_array(np.zeros(4, dtype=np.float32))


def test_read_json_object_names_the_file_in_one_line(tmp_path):
    good, broken, listed = tmp_path / "good.json", tmp_path / "broken.json", tmp_path / "list.json"
    good.write_text('{"0": 0}')
    broken.write_text('{"0": ')
    listed.write_text("[1, 2]")
    assert read_json_object(good) == {"0": 0}
    for path, match in ((broken, "not valid JSON"), (listed, "expected a vocabulary"),
                        (tmp_path / "missing.json", "not valid JSON")):
        with pytest.raises(DataError, match=match) as e:
            read_json_object(path, "a vocabulary")
        assert str(path) in str(e.value) and "\n" not in str(e.value)
