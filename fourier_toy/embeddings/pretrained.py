"""Readers for pre-trained number-token rows, and width adaptation to the model.

Every reader returns `(rows, info)`: rows is float64 (n_numbers, W) with row i the embedding of the
number i, and info is a JSON-able dict of provenance (source kind, path, sha256 of the file read,
which key / token ids were used) for the run directory.

Sources:
- load_matrix:    a .npy or .npz matrix whose row i is number i.
- load_hf_folder: a Hugging Face GPT-2-format folder (model.safetensors + vocab.json or
                  tokenizer.json); the rows of the tokens "0", "1", ..., "n_numbers-1" (no
                  leading space, as in the paper: every integer 0..520 is one GPT-2 token).
- load_run_rows:  a fourier_toy run directory (config.json + model.safetensors, wte rows 0..p-1).

adapt_width then brings the width W to d_model ("pca" or "pad"); the caller rescales (for
example embeddings.scale_like_init) and writes the rows into wte.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from fourier_toy.errors import CheckpointError, ConfigError, DataError
from fourier_toy.runs.files import read_json_object, regular_file
from fourier_toy.runs.hf import HF_TOKENIZER, HF_VOCAB, HF_WEIGHTS, HF_WEIGHTS_INDEX
from fourier_toy.runs.layout import CONFIG, MODEL
from fourier_toy.runs.read_run import read_config, read_weight
from fourier_toy.runs.tensors import read_header, read_tensor

EMBED_KEYS = ("transformer.wte.weight", "wte.weight")
MAX_ABS = 1e30  # larger entries are no embedding, and their squares overflow in PCA


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _check_n_numbers(n_numbers) -> int:
    if isinstance(n_numbers, bool) or not isinstance(n_numbers, (int, np.integer)) or n_numbers < 1:
        raise ConfigError(f"n_numbers: must be a positive integer, got {n_numbers!r}")
    return int(n_numbers)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_rows(arr: np.ndarray, n_numbers: int, what: str) -> np.ndarray:
    """Validate a (rows, W) real matrix and return its first n_numbers rows as float64."""
    if arr.dtype == object or arr.dtype.kind not in "fiu":
        raise DataError(f"{what}: expected a real numeric matrix, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise DataError(f"{what}: expected a 2-D (numbers, width) matrix, got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise DataError(f"{what}: the matrix has width 0")
    if arr.shape[0] < n_numbers:
        raise DataError(f"{what} has {arr.shape[0]} rows, the task needs {n_numbers} "
                        f"(numbers 0..{n_numbers - 1})")
    rows = np.asarray(arr[:n_numbers], dtype=np.float64)
    bad = ~np.isfinite(rows).all(axis=1)
    if bad.any():
        raise DataError(f"{what}: row {int(np.argmax(bad))} (the number {int(np.argmax(bad))}) "
                        f"has NaN or inf values")
    huge = (np.abs(rows) > MAX_ABS).any(axis=1)
    if huge.any():
        raise DataError(f"{what}: row {int(np.argmax(huge))} (the number {int(np.argmax(huge))}) "
                        f"has values beyond +-{MAX_ABS:g}; not an embedding")
    return rows


# ---- .npy / .npz ---------------------------------------------------------------------------------

def _load_error(what, suffix: str, e: ValueError, sep: str = ": ") -> DataError:
    """numpy's ValueError from np.load as one DataError line: a pickled or object array, or a
    file whose header does not match its data."""
    text = _one_line(e)
    if "pickle" in text.lower() or "object array" in text.lower():
        return DataError(f"{what}{sep}cannot be read without pickle ({text}); store a plain numeric array")
    return DataError(f"{what}{sep}is not a valid {suffix} array ({text})" if sep == " "
                     else f"{what}{sep}not a valid {suffix} file ({text})")


def load_matrix(path, n_numbers: int, key: str | None = None) -> tuple[np.ndarray, dict]:
    """A .npy or .npz file -> (rows (n_numbers, W) float64, info).

    Row i of the stored matrix must be the number i; rows past n_numbers are ignored. For .npz the
    array is `key`, or the only array in the archive. Pickled and object arrays are refused.
    """
    n_numbers = _check_n_numbers(n_numbers)
    path = Path(path)
    regular_file(path, "matrix")
    if not path.is_file():
        raise DataError(f"{path}: no such file (expected a .npy or .npz matrix of number rows)")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; expected .npy or .npz")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise _load_error(path, suffix, e) from None
    except (OSError, EOFError, zipfile.BadZipFile, UnicodeDecodeError, SyntaxError) as e:
        raise DataError(f"{path}: not a readable {suffix} file ({_one_line(e) or type(e).__name__})") from None
    info = {"source": "matrix", "path": str(path.resolve()), "sha256": _sha256(path)}
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            names = list(loaded.files)
            if key is None:
                if len(names) != 1:
                    raise DataError(f"{path}: holds {len(names)} arrays ({', '.join(names) or 'none'}); "
                                    f"name the one to use as the key")
                key = names[0]
            elif key not in names:
                raise DataError(f"{path}: no array {key!r}; it holds {', '.join(names) or 'none'}")
            try:
                arr = loaded[key]
            except ValueError as e:
                raise _load_error(f"{path}: array {key!r}", ".npy", e, sep=" ") from None
            except (OSError, EOFError, zipfile.BadZipFile, UnicodeDecodeError, SyntaxError) as e:
                raise DataError(f"{path}: array {key!r} is not readable "
                                f"({_one_line(e) or type(e).__name__})") from None
            if not isinstance(arr, np.ndarray):
                raise DataError(f"{path}: member {key!r} is not a .npy array")
        info["key"] = key
        what = f"{path} [{key}]"
    else:
        if key is not None:
            raise DataError(f"{path}: a .npy file holds one array; key {key!r} applies only to .npz")
        arr = loaded
        what = str(path)
    rows = _check_rows(arr, n_numbers, what)
    info.update(rows_in_file=int(arr.shape[0]), width=int(arr.shape[1]), dtype=str(arr.dtype))
    return rows, info


# ---- Hugging Face folder --------------------------------------------------------------------------

def _find_embedding(folder: Path, keys=EMBED_KEYS) -> tuple[Path, str]:
    """(file, key) of the token embedding in a folder: model.safetensors or a sharded index."""
    single = folder / HF_WEIGHTS
    index = folder / HF_WEIGHTS_INDEX
    if single.is_file():
        header, _ = read_header(single, error=DataError)
        for k in keys:
            if k in header:
                return single, k
        raise DataError(f"{single}: no token embedding; expected one of {', '.join(keys)}")
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
            raise DataError(f"{index}: not a valid safetensors index ({_one_line(e)})") from None
        if not isinstance(weight_map, dict):
            raise DataError(f"{index}: weight_map must be an object tensor -> file, got {type(weight_map).__name__}")
        for k in keys:
            if k in weight_map:
                name = weight_map[k]
                if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
                    raise DataError(f"{index}: weight_map[{k!r}] must be a file name in the folder, got {name!r}")
                if not (folder / name).is_file():
                    raise DataError(f"{index}: weight_map[{k!r}] names {name!r}, which is not in the folder")
                return folder / name, k
        raise DataError(f"{index}: no token embedding; expected one of {', '.join(keys)}")
    others = sorted(p.name for p in folder.glob("*.bin")) if folder.is_dir() else []
    hint = f" (found {', '.join(others)}: pickled weights are not read; convert to safetensors)" if others else ""
    raise DataError(f"{folder}: no {HF_WEIGHTS}{hint}")


def _read_vocab(folder: Path) -> tuple[dict, Path]:
    """token -> id from vocab.json, else from tokenizer.json's model.vocab."""
    vocab_json, tok_json = folder / HF_VOCAB, folder / HF_TOKENIZER
    if vocab_json.is_file():
        return read_json_object(vocab_json, "a JSON object mapping token -> id"), vocab_json
    if tok_json.is_file():
        try:
            vocab = json.loads(tok_json.read_text(encoding="utf-8"))["model"]["vocab"]
        except (OSError, ValueError, RecursionError) as e:
            raise DataError(f"{tok_json}: not valid JSON ({_one_line(e)})") from None
        except (KeyError, TypeError):
            raise DataError(f"{tok_json}: has no model.vocab") from None
        if isinstance(vocab, list):  # Unigram tokenizers store [token, score] pairs in id order
            try:
                vocab = {entry[0]: i for i, entry in enumerate(vocab)}
            except (TypeError, IndexError):
                raise DataError(f"{tok_json}: model.vocab is neither a mapping nor a list of pairs") from None
        if not isinstance(vocab, dict):
            raise DataError(f"{tok_json}: model.vocab is not a mapping token -> id")
        return vocab, tok_json
    raise DataError(f"{folder}: no {HF_VOCAB} or {HF_TOKENIZER} (needed to find the number tokens)")


def load_hf_folder(folder, n_numbers: int) -> tuple[np.ndarray, dict]:
    """A local Hugging Face GPT-2-format folder -> (rows (n_numbers, W) float64, info).

    Row i is the embedding row of the token str(i) with no leading space (GPT-2's "0" = id 15,
    "520" = id 31211). Each number must be a single token.
    """
    n_numbers = _check_n_numbers(n_numbers)
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (expected a Hugging Face model folder)")
    vocab, vocab_file = _read_vocab(folder)
    ids = []
    for i in range(n_numbers):
        tid = vocab.get(str(i))
        if tid is None:
            raise DataError(f"{vocab_file}: the number {i} is not a single token (no entry {str(i)!r}); "
                            f"this vocabulary covers numbers 0..{i - 1} at most")
        if isinstance(tid, bool) or not isinstance(tid, int) or tid < 0:
            raise DataError(f"{vocab_file}: token {str(i)!r} has an invalid id {tid!r}")
        ids.append(tid)
    file, key = _find_embedding(folder)
    wte = read_tensor(file, key, error=DataError)
    if wte.ndim != 2:
        raise DataError(f"{file} [{key}]: expected a 2-D (vocab, width) matrix, got shape {wte.shape}")
    too_big = [t for t in ids if t >= wte.shape[0]]
    if too_big:
        i = ids.index(too_big[0])
        raise DataError(f"{vocab_file}: token {str(i)!r} has id {too_big[0]}, but {key} has only "
                        f"{wte.shape[0]} rows")
    rows = _check_rows(wte[np.asarray(ids)], n_numbers, f"{file} [{key}]")
    info = {"source": "hf_folder", "path": str(folder.resolve()), "file": file.name,
            "sha256": _sha256(file), "key": key, "vocab_file": vocab_file.name,
            "token_ids": ids, "width": int(wte.shape[1]), "dtype": str(wte.dtype)}
    return rows, info


# ---- run directory ------------------------------------------------------------------------------

@contextmanager
def _as_data_error():
    """A run given as a transplant source is input data, like the other sources: its reader's
    CheckpointError becomes a DataError with the same message."""
    try:
        yield
    except CheckpointError as err:
        raise DataError(str(err)) from None


def load_run_rows(run_dir, n_numbers: int) -> tuple[np.ndarray, dict]:
    """A fourier_toy run directory -> (rows (n_numbers, d_model) float64, info).

    The run's numbers are 0..p-1 with p = 2 * task.max_operand + 1 (its config.json); they are
    wte.weight's rows 0..p-1 in its model.safetensors, the only tensor read.
    """
    n_numbers = _check_n_numbers(n_numbers)
    run_dir = Path(run_dir)
    cfg_path, weights = run_dir / CONFIG, run_dir / MODEL
    with _as_data_error():
        cfg = read_config(run_dir)
    try:
        max_operand = cfg["task"]["max_operand"]
    except (KeyError, TypeError):
        raise DataError(f"{cfg_path}: has no task.max_operand") from None
    if isinstance(max_operand, bool) or not isinstance(max_operand, int) or max_operand < 0:
        raise DataError(f"{cfg_path}: task.max_operand must be a non-negative integer, got {max_operand!r}")
    p = 2 * max_operand + 1
    if p < n_numbers:
        raise DataError(f"{run_dir}: the run has {p} numbers (0..{p - 1}, task.max_operand = {max_operand}), "
                        f"the task needs {n_numbers} (numbers 0..{n_numbers - 1})")
    with _as_data_error():
        wte = read_weight(run_dir, "wte.weight")
    if wte.ndim != 2 or wte.shape[0] != p + 2:
        raise DataError(f"{weights} [wte.weight]: shape {wte.shape} does not hold the run's {p} number rows "
                        f"and 2 more tokens")
    if wte.dtype.kind != "f":
        raise DataError(f"{weights} [wte.weight]: expected a float matrix, got dtype {wte.dtype}")
    rows = _check_rows(wte, n_numbers, f"{weights} [wte.weight]")
    info = {"source": "run", "path": str(run_dir.resolve()), "sha256": _sha256(weights),
            "key": "wte.weight", "run_numbers": p, "width": int(wte.shape[1])}
    return rows, info


# ---- width --------------------------------------------------------------------------------------

def adapt_width(rows: np.ndarray, d_model: int, method: str = "pca") -> tuple[np.ndarray, dict]:
    """rows (N, W) -> (adapted (N, d_model) float64, info {"method", "variance_kept", ...}).

    "pca": centre the rows (subtract their mean over the numbers) and express them in their
    principal directions, keeping the top min(d_model, rank) and zero-padding the rest. The mean
    is not added back: it is the same for every number, so it carries no information about which
    number a row is, and left in it would dominate the rows' scale. The caller rescales.
    variance_kept = kept / total centred variance (1.0 when nothing is dropped). Each component's
    sign is fixed so its largest-magnitude entry is positive, so the result does not depend on the
    SVD routine's sign convention.

    "pad": the raw rows (not centred) followed by zero columns; W > d_model is an error, since
    truncating columns would drop information arbitrarily (use "pca").
    """
    if method not in ("pca", "pad"):
        raise ConfigError(f"embedding.width: must be one of pca, pad; got {method!r}")
    if isinstance(d_model, bool) or not isinstance(d_model, (int, np.integer)) or d_model < 1:
        raise ConfigError(f"model.d_model: must be a positive integer, got {d_model!r}")
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[0] < 1 or rows.shape[1] < 1:
        raise DataError(f"rows: expected a non-empty 2-D (numbers, width) matrix, got shape {rows.shape}")
    if not np.isfinite(rows).all():
        raise DataError("rows: contains NaN or inf values")
    if (np.abs(rows) > MAX_ABS).any():
        raise DataError(f"rows: contains values beyond +-{MAX_ABS:g}")
    n, w = rows.shape
    out = np.zeros((n, int(d_model)), dtype=np.float64)
    if method == "pad":
        if w > d_model:
            raise ConfigError(f"embedding.width: 'pad' cannot shrink the source width {w} to "
                              f"model.d_model = {d_model}; use 'pca'")
        out[:, :w] = rows
        return out, {"method": "pad", "variance_kept": 1.0, "width_in": w, "n_components": w}
    centred = rows - rows.mean(axis=0)
    try:
        u, s, _ = np.linalg.svd(centred, full_matrices=False)
    except np.linalg.LinAlgError as e:
        raise DataError(f"rows: PCA failed ({_one_line(e)})") from None
    if not (np.isfinite(u).all() and np.isfinite(s).all() and np.isfinite(np.sum(s**2))):
        raise DataError("rows: PCA overflowed (values too large)")
    k = min(int(d_model), s.size)
    comps = u[:, :k] * s[:k]
    flip = np.sign(comps[np.argmax(np.abs(comps), axis=0), np.arange(k)])
    flip[flip == 0] = 1.0
    out[:, :k] = comps * flip
    total = float(np.sum(s**2))
    kept = 1.0 if total == 0.0 else float(np.sum(s[:k] ** 2) / total)
    return out, {"method": "pca", "variance_kept": min(kept, 1.0), "width_in": w, "n_components": k}
