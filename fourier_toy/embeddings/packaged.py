"""Pre-trained number rows shipped inside the package, selectable by name as `embedding.source`.

  "whisper"  Whisper tiny.en's rows of the GPT-2 number tokens "0".."520": (521, 384) float16,
             data/whisper_tiny_en_numbers_0_520.npy, provenance and license in data/PROVENANCE.md.

`load_packaged(name, n_numbers)` returns (rows (n_numbers, 384) float64, info) like every reader in
pretrained.py; the file's sha256 is checked on every load, so a damaged install is one DataError.
"""

from __future__ import annotations

import hashlib
import io
from importlib import resources

import numpy as np

from fourier_toy.embeddings.pretrained import _check_n_numbers, _check_rows
from fourier_toy.errors import DataError

# name -> (file in data/, sha256 of that file, what it is)
PACKAGED = {
    "whisper": ("whisper_tiny_en_numbers_0_520.npy",
                "f0e3f939d91f12e260e66547f6b25b6cddd9b39b16b44b66acc8bf3120fa101f",
                "Whisper tiny.en token embedding, GPT-2 number tokens 0..520"),
}


def packaged_path(name: str):
    """The installed file of a packaged source (a Traversable; a real path in an ordinary install)."""
    return resources.files("fourier_toy.embeddings").joinpath("data", PACKAGED[name][0])


def load_packaged(name: str, n_numbers: int) -> tuple[np.ndarray, dict]:
    """(rows (n_numbers, W) float64, info) of the packaged source `name` (a key of PACKAGED)."""
    if name not in PACKAGED:
        raise DataError(f"embedding.source: no packaged source {name!r}; packaged: {', '.join(PACKAGED)}")
    n_numbers = _check_n_numbers(n_numbers)
    file_name, sha256, what = PACKAGED[name]
    data = packaged_path(name).read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise DataError(f"embedding.source: the packaged file {file_name} is damaged (sha256 differs from "
                        f"data/PROVENANCE.md); reinstall fourier_toy")
    arr = np.load(io.BytesIO(data), allow_pickle=False)
    if arr.shape[0] < n_numbers:
        raise DataError(f"embedding.source: {name!r} has the rows of the numbers 0..{arr.shape[0] - 1}; the task needs "
                        f"0..{n_numbers - 1} (task.max_operand <= {(arr.shape[0] - 1) // 2})")
    rows = _check_rows(arr, n_numbers, f"packaged source {name!r}")
    return rows, {"source": "packaged", "name": name, "what": what, "file": file_name, "sha256": sha256,
                  "rows_in_file": int(arr.shape[0]), "width": int(arr.shape[1]), "dtype": str(arr.dtype)}
