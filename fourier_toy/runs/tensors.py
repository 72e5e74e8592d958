"""safetensors files: written atomically with a reproducible header, read whole or one tensor at a time.

A safetensors file is an 8-byte little-endian header length n, n bytes of JSON header, then the
tensor data:

    {name: {"dtype": "F32", "shape": [V, D], "data_offsets": [lo, hi]}, ..., "__metadata__": {str: str}}

with each tensor's bytes at [8 + n + lo, 8 + n + hi). No pickle is ever involved.

Every reader checks the header first (`read_header`) and raises `error` with the file's path and
the problem on one line: CheckpointError by default (a run's own files), DataError from callers
reading input files (a Hugging Face folder, a transplant source). BF16 tensors, which numpy lacks,
are widened exactly to float32. `read_tensor` reads one tensor without reading the others, which
matters for the embedding of a Hugging Face model of several hundred megabytes.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Mapping

import numpy as np
import safetensors
import safetensors.numpy

from fourier_toy.errors import CheckpointError, DataError, FourierToyError
from fourier_toy.runs.files import atomic_write_bytes

__all__ = ["save_tensors", "load_tensors", "read_header", "read_tensor", "tensor_names"]

METADATA = "__metadata__"
_HEADER_LEN = 8


def _one_line(text) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------- writing

def save_tensors(
    path: str | os.PathLike,
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Save named arrays (any shapes; safetensors dtypes) and string metadata to ``path`` atomically."""
    arrays = {}
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise DataError(f"{path}: tensor names must be strings, got {name!r}")
        if not isinstance(value, np.ndarray):
            raise DataError(f"{path}: tensor '{name}' must be a numpy array, got {type(value).__name__}")
        # safetensors reads raw memory from the data pointer, so views (transposes, strided
        # slices of the parameter buffer) must be made C-contiguous first.
        # (np.ascontiguousarray would also turn 0-d arrays into 1-d ones.)
        arrays[name] = value if value.flags.c_contiguous else value.copy(order="C")
    meta = None
    if metadata is not None:
        meta = {}
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise DataError(f"{path}: metadata keys and values must be strings, got {key!r}: {value!r}")
            meta[key] = value
    try:
        data = safetensors.numpy.save(arrays, metadata=meta)
    except (safetensors.SafetensorError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: cannot serialize tensors ({exc})") from None
    atomic_write_bytes(path, _sorted_metadata(data))


def _sorted_metadata(data: bytes) -> bytes:
    """The same safetensors bytes with the ``__metadata__`` keys in sorted order.

    safetensors writes metadata in hash-map order, which changes from call to call, so the same
    tensors and metadata would give files with different bytes (and sha256). Sorting keeps the
    header's length, so the tensor offsets stay valid.
    """
    (header_len,) = struct.unpack("<Q", data[:_HEADER_LEN])
    raw = data[_HEADER_LEN:_HEADER_LEN + header_len]
    header = json.loads(raw.decode("utf-8"))
    if METADATA not in header:
        return data
    header[METADATA] = dict(sorted(header[METADATA].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(text) > header_len:  # not expected: the same keys and values, reordered
        return data
    return data[:_HEADER_LEN] + text + b" " * (header_len - len(text)) + data[_HEADER_LEN + header_len:]


# --------------------------------------------------------------------------- reading

def _check_entry(name, entry, data_len: int) -> str | None:
    """What is wrong with one tensor's header entry, or None; offsets must lie in the data."""
    if not isinstance(entry, dict) or not isinstance(entry.get("dtype"), str):
        return f"tensor {name!r} has a malformed header entry"
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if (not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape)
            or not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)):
        return f"tensor {name!r} has a malformed header entry"
    lo, hi = offsets
    if not 0 <= lo <= hi <= data_len:
        return f"tensor {name!r} lies outside the file (bytes {lo}..{hi} of {data_len})"
    return None


def read_header(path: str | os.PathLike, error: type[FourierToyError] = CheckpointError) -> tuple[dict, int]:
    """(header, start): the file's JSON header and the byte offset where tensor data starts.

    The header maps each tensor name to {"dtype", "shape", "data_offsets"} (and "__metadata__" to
    a str -> str dict, when present); every entry is checked, including that its bytes lie in the
    file, so a truncated file is caught here without reading any tensor.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(_HEADER_LEN)
            n = int.from_bytes(head, "little") if len(head) == _HEADER_LEN else -1
            raw = f.read(n) if 0 <= n <= size - _HEADER_LEN else b""
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    if n < 0:
        problem = f"file shorter than its {_HEADER_LEN}-byte header length"
    elif n > size - _HEADER_LEN:
        problem = "header length beyond the end of the file"
    else:
        try:
            header = json.loads(raw.decode("utf-8"))
            problem = None if isinstance(header, dict) else "header is not a JSON object"
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            problem = _one_line(exc)
    if problem is None:
        meta = header.get(METADATA, {})
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            problem = f"{METADATA} is not a mapping of strings"
    if problem is None:
        data_len = size - _HEADER_LEN - n
        problem = next((p for name, entry in header.items() if name != METADATA
                        and (p := _check_entry(name, entry, data_len))), None)
    if problem is not None:
        raise error(f"{path}: not a valid safetensors file ({problem})")
    return header, _HEADER_LEN + n


def tensor_names(header: dict) -> list[str]:
    """The tensor names of a header, in its order (without "__metadata__")."""
    return [name for name in header if name != METADATA]


def _read_bf16(path: Path, name: str, entry: dict, start: int, error) -> np.ndarray:
    """A BF16 tensor widened exactly to float32: a bfloat16 is the upper half of a float32."""
    count = math.prod(entry["shape"])
    lo, hi = entry["data_offsets"]
    if hi - lo != 2 * count:
        raise error(f"{path}: tensor {name!r} has {hi - lo} bytes, expected {2 * count}")
    raw = np.fromfile(path, dtype="<u2", count=count, offset=start + lo)
    if raw.size != count:
        raise error(f"{path}: tensor {name!r} is truncated")
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(entry["shape"])


def _read(path: Path, names: list[str], header: dict, start: int, error) -> dict[str, np.ndarray]:
    """name -> array for `names` of a file whose header was checked; one open for all non-BF16."""
    out = {}
    plain = [name for name in names if header[name]["dtype"] != "BF16"]
    if plain:
        try:
            with safetensors.safe_open(str(path), framework="numpy") as f:
                for name in plain:
                    out[name] = f.get_tensor(name)
        except (safetensors.SafetensorError, OSError, ValueError, TypeError, KeyError) as exc:
            raise error(f"{path}: not a valid safetensors file ({_one_line(exc) or type(exc).__name__})") from None
    for name in names:
        if name not in out:
            out[name] = _read_bf16(path, name, header[name], start, error)
    return {name: out[name] for name in names}


def read_tensor(path: str | os.PathLike, name: str, error: type[FourierToyError] = CheckpointError) -> np.ndarray:
    """One tensor of the file, without reading the others; a missing name lists what the file holds."""
    path = Path(path)
    header, start = read_header(path, error)
    if name not in header or name == METADATA:
        names = tensor_names(header)
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        raise error(f"{path}: no tensor {name!r} (it holds {shown or 'nothing'})")
    return _read(path, [name], header, start, error)[name]


def load_tensors(path: str | os.PathLike,
                 error: type[FourierToyError] = CheckpointError) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``(tensors, metadata)`` of the whole file; arrays are writable copies, in the header's order.

    A missing, unreadable, truncated or corrupt file raises `error` with the path and reason.
    """
    path = Path(path)
    header, start = read_header(path, error)
    tensors = _read(path, tensor_names(header), header, start, error)
    tensors = {name: np.array(arr, copy=True) for name, arr in tensors.items()}
    return tensors, dict(header.get(METADATA) or {})
