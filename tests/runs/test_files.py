"""Atomic writes, safetensors, metrics JSONL and RNG state of the run directory."""

import json
import os

import numpy as np
import pytest

from fourier_toy.errors import CheckpointError, DataError
from fourier_toy.runs.files import (
    append_jsonl,
    atomic_write_bytes,
    atomic_write_json,
    load_tensors,
    read_json_object,
    read_jsonl,
    rng_from_array,
    rng_state_to_array,
    save_tensors,
    truncate_jsonl,
)


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


# ----------------------------------------------------------------------------- safetensors

def test_safetensors_round_trip_is_bit_exact(tmp_path):
    rng = np.random.default_rng(0)
    special = np.array([np.nan, -0.0, np.inf, -np.inf, 1e-45, 3.4e38], dtype=np.float32)
    # A NaN with a non-default payload must survive as raw bits.
    special_bits = special.view(np.uint32).copy()
    special_bits[0] = 0x7FC01234
    base = rng.standard_normal((6, 8)).astype(np.float32)
    tensors = {
        "wte.weight": base,
        "transposed": base.T,  # a non-contiguous view
        "strided": base[:, ::3],
        "special": special_bits.view(np.float32),
        "t": np.array(7, dtype=np.int64),
        "mask": rng.random(9) < 0.5,
        "bytes": np.frombuffer(b"hello", dtype=np.uint8),
        "empty": np.zeros((0, 3), dtype=np.float64),
    }
    path = tmp_path / "model.safetensors"
    save_tensors(path, tensors, metadata={"format": "np", "step": "12"})
    loaded, metadata = load_tensors(path)

    assert metadata == {"format": "np", "step": "12"}
    assert set(loaded) == set(tensors)
    for name, original in tensors.items():
        got = loaded[name]
        assert got.dtype == original.dtype and got.shape == original.shape, name
        assert got.tobytes() == np.ascontiguousarray(original).tobytes(), name
        assert got.flags.writeable
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_same_tensors_and_metadata_give_the_same_bytes(tmp_path):
    # safetensors orders metadata by a randomly seeded hash map; the file must not depend on it.
    tensors = {"b": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.ones(5, dtype=np.int64)}
    metadata = {f"key{i}": "é" * i for i in range(8)}
    files = []
    for i in range(12):
        path = tmp_path / f"{i}.safetensors"
        save_tensors(path, tensors, metadata=dict(reversed(metadata.items())) if i % 2 else metadata)
        files.append(path.read_bytes())
    assert all(f == files[0] for f in files)
    loaded, meta = load_tensors(tmp_path / "0.safetensors")
    assert meta == metadata and list(meta) == sorted(meta)
    assert all(np.array_equal(loaded[k], v) for k, v in tensors.items())


def test_save_tensors_rejects_bad_input(tmp_path):
    with pytest.raises(DataError, match="metadata"):
        save_tensors(tmp_path / "a.safetensors", {"x": np.zeros(2)}, metadata={"step": 3})
    with pytest.raises(DataError, match="object"):
        save_tensors(tmp_path / "a.safetensors", {"x": np.array([object()])})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("cut", [0, 5, 8, 40, -1])
def test_truncated_safetensors_is_a_checkpoint_error(tmp_path, cut):
    path = tmp_path / "model.safetensors"
    save_tensors(path, {"w": np.arange(12, dtype=np.float32).reshape(3, 4)})
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut >= 0 else data[:cut])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_tensors(path)


def test_corrupt_or_missing_safetensors_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "model.safetensors"
    save_tensors(path, {"w": np.ones(4, dtype=np.float32)})
    data = bytearray(path.read_bytes())
    data[8:12] = b"\xff\xfe[!"  # break the JSON header
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_tensors(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_tensors(tmp_path / "absent.safetensors")


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
