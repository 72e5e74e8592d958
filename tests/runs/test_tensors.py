"""safetensors files: atomic bit-exact writes, whole-file and one-tensor reads, header checks."""

import json
import os

import numpy as np
import pytest

from fourier_toy.errors import CheckpointError, DataError
from fourier_toy.runs.tensors import load_tensors, read_header, read_tensor, save_tensors, tensor_names


# ----------------------------------------------------------------------------- whole files

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


# ----------------------------------------------------------------------------- header and one tensor

def _raw_file(path, header: dict, data: bytes) -> None:
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)


def test_read_header_and_one_tensor(tmp_path):
    path = tmp_path / "w.safetensors"
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.arange(4, dtype=np.int64)
    save_tensors(path, {"a": a, "b": b}, metadata={"step": "3"})
    header, start = read_header(path)
    assert sorted(tensor_names(header)) == ["a", "b"] and header["__metadata__"] == {"step": "3"}
    assert header["a"]["shape"] == [2, 3] and start == 8 + int.from_bytes(path.read_bytes()[:8], "little")
    np.testing.assert_array_equal(read_tensor(path, "b"), b)
    with pytest.raises(CheckpointError, match=r"w\.safetensors: no tensor 'c' \(it holds (a, b|b, a)\)"):
        read_tensor(path, "c")
    with pytest.raises(DataError, match="no tensor '__metadata__'"):
        read_tensor(path, "__metadata__", error=DataError)


def test_bf16_is_widened_exactly_whole_or_alone(tmp_path):
    exact = np.array([[1.0, -2.5], [3.140625, 0.0]], dtype=np.float32)  # all exact in bfloat16
    raw = (exact.view(np.uint32) >> 16).astype("<u2").tobytes()
    path = tmp_path / "bf16.safetensors"
    _raw_file(path, {"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, len(raw)]}}, raw)
    np.testing.assert_array_equal(read_tensor(path, "w"), exact)
    tensors, meta = load_tensors(path)
    assert tensors["w"].dtype == np.float32 and meta == {}
    np.testing.assert_array_equal(tensors["w"], exact)


@pytest.mark.parametrize("entry, problem", [
    ({"dtype": "F32", "shape": [2]}, "malformed header entry"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [0, 64]}, "lies outside the file"),
    ("F32", "malformed header entry"),
])
def test_bad_header_entries_name_the_tensor(tmp_path, entry, problem):
    path = tmp_path / "bad.safetensors"
    _raw_file(path, {"x": entry}, b"\0" * 8)
    with pytest.raises(DataError, match=rf"bad\.safetensors: not a valid safetensors file \(tensor 'x' .*{problem}"):
        read_header(path, error=DataError)


def test_errors_are_one_line_and_of_the_callers_kind(tmp_path):
    path = tmp_path / "short.safetensors"
    path.write_bytes(b"\x05\x00")
    for error in (CheckpointError, DataError):
        with pytest.raises(error, match=r"short\.safetensors: not a valid safetensors file") as info:
            load_tensors(path, error=error)
        assert "\n" not in str(info.value)
    with pytest.raises(DataError, match=r"absent\.safetensors: file not found"):
        read_tensor(tmp_path / "absent.safetensors", "x", error=DataError)
