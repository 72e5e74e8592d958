"""Readers of pre-trained number rows (.npy/.npz, Hugging Face folder, run dir) and width adaptation."""

import hashlib
import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from fourier_toy.errors import ConfigError, DataError
from fourier_toy.embeddings import packaged
from fourier_toy.embeddings.packaged import PACKAGED, load_packaged, packaged_path
from fourier_toy.embeddings.pretrained import adapt_width, load_hf_folder, load_matrix, load_run_rows
from fourier_toy.training.build import load_source




def _raises_one_line(exc, match, fn, *args, **kwargs):
    with pytest.raises(exc, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


# ---- .npy / .npz --------------------------------------------------------------------------------

def test_npy_rows_are_the_first_n_numbers(tmp_path):
    M = np.random.default_rng(0).standard_normal((30, 7)).astype(np.float32)
    path = tmp_path / "emb.npy"
    np.save(path, M)
    rows, info = load_matrix(path, 20)
    assert rows.dtype == np.float64 and rows.shape == (20, 7)
    np.testing.assert_array_equal(rows, M[:20].astype(np.float64))
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["rows_in_file"] == 30 and info["width"] == 7


def test_npz_single_array_and_named_key(tmp_path):
    A = np.arange(40.0).reshape(10, 4)
    B = -np.arange(60.0).reshape(12, 5)
    np.savez(tmp_path / "one.npz", emb=A)
    np.savez(tmp_path / "two.npz", a=A, b=B)
    np.testing.assert_array_equal(load_matrix(tmp_path / "one.npz", 10)[0], A)
    rows, info = load_matrix(tmp_path / "two.npz", 11, key="b")
    np.testing.assert_array_equal(rows, B[:11])
    assert info["key"] == "b"
    _raises_one_line(DataError, r"two\.npz: holds 2 arrays \(a, b\); name the one", load_matrix,
                     tmp_path / "two.npz", 5)
    _raises_one_line(DataError, r"two\.npz: no array 'c'; it holds a, b", load_matrix,
                     tmp_path / "two.npz", 5, key="c")


def test_missing_file(tmp_path):
    _raises_one_line(DataError, r"nope\.npy: no such file", load_matrix, tmp_path / "nope.npy", 5)


@pytest.mark.parametrize("shape", [(20,), (20, 3, 2), ()])
def test_not_two_dimensional(tmp_path, shape):
    np.save(tmp_path / "m.npy", np.zeros(shape))
    _raises_one_line(DataError, r"m\.npy: expected a 2-D \(numbers, width\) matrix, got shape",
                     load_matrix, tmp_path / "m.npy", 5)


def test_too_few_rows_message(tmp_path):
    np.save(tmp_path / "m.npy", np.zeros((300, 8), np.float32))
    _raises_one_line(DataError, r"m\.npy has 300 rows, the task needs 521 \(numbers 0\.\.520\)$",
                     load_matrix, tmp_path / "m.npy", 521)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_names_first_bad_row(tmp_path, bad):
    M = np.ones((20, 4))
    M[7, 2] = bad
    M[12, 0] = np.nan
    np.save(tmp_path / "m.npy", M)
    _raises_one_line(DataError, r"m\.npy: row 7 \(the number 7\) has NaN or inf", load_matrix,
                     tmp_path / "m.npy", 20)
    # rows past n_numbers are not used, so they may be anything
    assert load_matrix(tmp_path / "m.npy", 7)[0].shape == (7, 4)


def test_pickled_and_object_arrays_are_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([[{"a": 1}, None]], dtype=object))  # saved pickled (the default)
    _raises_one_line(DataError, r"obj\.npy: cannot be read without pickle", load_matrix,
                     tmp_path / "obj.npy", 1)
    with open(tmp_path / "pick.npy", "wb") as f:
        pickle.dump(np.zeros((3, 3)), f)
    _raises_one_line(DataError, r"pick\.npy: cannot be read without pickle", load_matrix,
                     tmp_path / "pick.npy", 1)
    np.savez(tmp_path / "obj.npz", e=np.array([[object()]], dtype=object))
    _raises_one_line(DataError, r"obj\.npz: array 'e' cannot be read without pickle", load_matrix,
                     tmp_path / "obj.npz", 1)


def test_other_bad_inputs(tmp_path):
    np.save(tmp_path / "s.npy", np.array([["a", "b"], ["c", "d"]]))
    _raises_one_line(DataError, r"s\.npy: expected a real numeric matrix, got dtype <U1", load_matrix,
                     tmp_path / "s.npy", 2)
    (tmp_path / "m.txt").write_text("1 2\n3 4\n")
    _raises_one_line(DataError, r"m\.txt: unsupported file type '\.txt'", load_matrix, tmp_path / "m.txt", 2)
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    _raises_one_line(DataError, r"junk\.npy", load_matrix, tmp_path / "junk.npy", 2)
    np.save(tmp_path / "ok.npy", np.zeros((3, 3)))
    _raises_one_line(DataError, r"key 'x' applies only to \.npz", load_matrix, tmp_path / "ok.npy", 2, key="x")
    _raises_one_line(ConfigError, r"n_numbers", load_matrix, tmp_path / "ok.npy", 0)


# ---- Hugging Face folder --------------------------------------------------------------------------

def _hf_folder(path, n_in_vocab=15, missing=(), key="transformer.wte.weight", vocab_file="vocab.json",
               width=6, seed=0):
    """A tiny GPT-2-style folder: number tokens at scattered ids among other tokens."""
    rng = np.random.default_rng(seed)
    tokens = ["<|endoftext|>", "+", "Ġthe"] + [f"Ġ{i}" for i in range(5)]
    tokens += [str(i) for i in range(n_in_vocab) if i not in missing]
    order = rng.permutation(len(tokens))
    vocab = {tok: int(i) for tok, i in zip(tokens, order)}
    wte = rng.standard_normal((len(tokens) + 3, width)).astype(np.float32)
    path.mkdir()
    save_file({key: wte, "transformer.wpe.weight": np.zeros((4, width), np.float32)},
              str(path / "model.safetensors"), metadata={"format": "pt"})
    if vocab_file == "vocab.json":
        (path / "vocab.json").write_text(json.dumps(vocab))
    else:
        (path / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": vocab, "merges": []}}))
    return vocab, wte


@pytest.mark.parametrize("key", ["transformer.wte.weight", "wte.weight"])
@pytest.mark.parametrize("vocab_file", ["vocab.json", "tokenizer.json"])
def test_hf_folder_rows_follow_the_vocabulary(tmp_path, key, vocab_file):
    vocab, wte = _hf_folder(tmp_path / "m", key=key, vocab_file=vocab_file)
    rows, info = load_hf_folder(tmp_path / "m", 12)
    assert rows.shape == (12, 6) and rows.dtype == np.float64
    for i in range(12):
        np.testing.assert_array_equal(rows[i], wte[vocab[str(i)]])
    assert info["token_ids"] == [vocab[str(i)] for i in range(12)]
    assert info["key"] == key and info["vocab_file"] == vocab_file


def test_hf_folder_missing_number_names_the_first(tmp_path):
    _hf_folder(tmp_path / "m", n_in_vocab=15, missing=(7, 9))
    msg = _raises_one_line(DataError, r"vocab\.json: the number 7 is not a single token", load_hf_folder,
                           tmp_path / "m", 12)
    assert "0..6" in msg
    assert load_hf_folder(tmp_path / "m", 7)[0].shape == (7, 6)


def test_hf_folder_missing_pieces(tmp_path):
    _raises_one_line(DataError, r"nothere: no such folder", load_hf_folder, tmp_path / "nothere", 3)
    _hf_folder(tmp_path / "a")
    (tmp_path / "a" / "vocab.json").unlink()
    _raises_one_line(DataError, r"no vocab\.json or tokenizer\.json", load_hf_folder, tmp_path / "a", 3)
    _hf_folder(tmp_path / "b")
    (tmp_path / "b" / "model.safetensors").unlink()
    (tmp_path / "b" / "pytorch_model.bin").write_bytes(b"x")
    _raises_one_line(DataError, r"no model\.safetensors \(found pytorch_model\.bin", load_hf_folder,
                     tmp_path / "b", 3)
    _hf_folder(tmp_path / "c", key="embed_tokens.weight")
    _raises_one_line(DataError, r"no token embedding; expected one of transformer\.wte\.weight, wte\.weight",
                     load_hf_folder, tmp_path / "c", 3)
    _hf_folder(tmp_path / "d")
    (tmp_path / "d" / "model.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{bad}")
    _raises_one_line(DataError, r"not a valid safetensors file", load_hf_folder, tmp_path / "d", 3)


def test_hf_folder_bf16_is_widened_exactly(tmp_path):
    vocab, wte = _hf_folder(tmp_path / "m")
    # Values exactly representable in bfloat16: float32 with the low 16 mantissa bits cleared.
    exact = (wte.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
    raw = (exact.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = json.dumps({"transformer.wte.weight": {"dtype": "BF16", "shape": list(wte.shape),
                                                    "data_offsets": [0, len(raw)]}}).encode()
    (tmp_path / "m" / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + raw)
    rows, _ = load_hf_folder(tmp_path / "m", 10)
    for i in range(10):
        np.testing.assert_array_equal(rows[i], exact[vocab[str(i)]])


def test_hf_folder_sharded_index(tmp_path):
    vocab, wte = _hf_folder(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").rename(tmp_path / "m" / "model-00001-of-00001.safetensors")
    (tmp_path / "m" / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"transformer.wte.weight": "model-00001-of-00001.safetensors"}}))
    rows, info = load_hf_folder(tmp_path / "m", 5)
    np.testing.assert_array_equal(rows[4], wte[vocab["4"]])
    assert info["file"] == "model-00001-of-00001.safetensors"


# ---- run directory ------------------------------------------------------------------------------

def _run_dir(path, max_operand=5, width=8):
    p = 2 * max_operand + 1
    wte = np.random.default_rng(1).standard_normal((p + 2, width)).astype(np.float32)
    path.mkdir()
    save_file({"wte.weight": wte}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"task": {"max_operand": max_operand}, "model": {}}))
    return wte


def test_run_dir(tmp_path):
    wte = _run_dir(tmp_path / "run", max_operand=5)
    rows, info = load_run_rows(tmp_path / "run", 11)
    np.testing.assert_array_equal(rows, wte[:11])
    assert info["run_numbers"] == 11
    _raises_one_line(DataError, r"run: the run has 11 numbers \(0\.\.10, task\.max_operand = 5\), "
                     r"the task needs 12", load_run_rows, tmp_path / "run", 12)
    (tmp_path / "run" / "config.json").write_text(json.dumps({"model": {}}))
    _raises_one_line(DataError, r"config\.json: has no task\.max_operand", load_run_rows, tmp_path / "run", 3)
    (tmp_path / "run" / "config.json").unlink()
    _raises_one_line(DataError, r"no config\.json", load_run_rows, tmp_path / "run", 3)
    _run_dir(tmp_path / "run2")
    (tmp_path / "run2" / "model.safetensors").unlink()
    _raises_one_line(DataError, r"model\.safetensors: no such file", load_run_rows, tmp_path / "run2", 3)


# ---- width adaptation ---------------------------------------------------------------------------

def _anisotropic(n, w, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, w)) * np.geomspace(10, 0.1, w) @ np.linalg.qr(rng.standard_normal((w, w)))[0] + 3.0


def test_pca_variance_kept_against_svd_and_eigh():
    X = _anisotropic(80, 20, 0)
    out, info = adapt_width(X, 6, "pca")
    assert out.shape == (80, 6) and info["method"] == "pca"
    s = np.linalg.svd(X - X.mean(0), compute_uv=False)
    assert info["variance_kept"] == pytest.approx((s[:6] ** 2).sum() / (s**2).sum(), rel=1e-12)
    ev = np.linalg.eigvalsh(np.cov(X.T))[::-1]
    assert info["variance_kept"] == pytest.approx(ev[:6].sum() / ev.sum(), rel=1e-9)
    # the kept columns really carry that variance, in decreasing order, uncorrelated
    assert out.var(0).sum() / X.var(0).sum() == pytest.approx(info["variance_kept"], rel=1e-9)
    cov = np.cov(out.T)
    np.testing.assert_allclose(cov, np.diag(ev[:6]), atol=1e-8 * ev[0])


def test_pca_when_width_already_fits_keeps_all_distances():
    X = _anisotropic(30, 5, 1)
    out, info = adapt_width(X, 8, "pca")
    assert info["variance_kept"] == 1.0
    assert not out[:, 5:].any()
    dist = lambda A: np.linalg.norm(A[:, None] - A[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(dist(out), dist(X), atol=1e-10)
    np.testing.assert_allclose(out.mean(0), 0.0, atol=1e-12)  # centred, mean not added back
    # fewer numbers than width and d_model: rank N-1 at most, nothing dropped
    out, info = adapt_width(_anisotropic(4, 10, 2), 6, "pca")
    assert info["variance_kept"] == pytest.approx(1.0) and out.shape == (4, 6)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), d=st.integers(1, 12))
def test_pca_is_invariant_to_rotating_the_source(seed, d):
    X = _anisotropic(40, 12, seed)
    R = np.linalg.qr(np.random.default_rng(seed + 1).standard_normal((12, 12)))[0]
    a, ia = adapt_width(X, d, "pca")
    b, ib = adapt_width(X @ R, d, "pca")
    np.testing.assert_allclose(a, b, atol=1e-8)
    assert ia["variance_kept"] == pytest.approx(ib["variance_kept"], rel=1e-10)


def test_pad_and_its_errors():
    X = np.arange(12.0).reshape(4, 3)
    out, info = adapt_width(X, 5, "pad")
    np.testing.assert_array_equal(out[:, :3], X)
    assert not out[:, 3:].any() and info == {"method": "pad", "variance_kept": 1.0, "width_in": 3,
                                             "n_components": 3}
    _raises_one_line(ConfigError, r"embedding\.width: 'pad' cannot shrink the source width 3 to "
                     r"model\.d_model = 2; use 'pca'", adapt_width, X, 2, "pad")
    _raises_one_line(ConfigError, r"embedding\.width: must be one of pca, pad", adapt_width, X, 2, "svd")
    _raises_one_line(ConfigError, r"model\.d_model", adapt_width, X, 0)
    _raises_one_line(DataError, r"rows: contains NaN", adapt_width, np.array([[1.0, np.nan]]), 2)


# ---- the packaged real pre-trained rows (embeddings/packaged.py) -------------------------------------

def test_packaged_whisper_rows_load_and_pca_to_128():
    rows, info = load_packaged("whisper", 521)
    assert rows.shape == (521, 384) and rows.dtype == np.float64 and np.isfinite(rows).all()
    data = packaged_path("whisper").read_bytes()
    assert info["sha256"] == hashlib.sha256(data).hexdigest() == PACKAGED["whisper"][1]
    assert np.load(io.BytesIO(data)).dtype == np.float16 and info["dtype"] == "float16"
    assert not np.array_equal(rows[10], rows[11])  # row i is the number i, not a constant
    out, pinfo = adapt_width(rows, 128, "pca")
    print(f"whisper tiny.en numbers 0..520, PCA 384 -> 128: variance_kept = {pinfo['variance_kept']:.4f}")
    assert out.shape == (521, 128)
    assert 0.5 < pinfo["variance_kept"] < 1.0
    assert np.array_equal(load_source("whisper", 121)[0], rows[:121])


def test_packaged_rows_provenance_names_the_file_license_and_hash():
    text = (Path(packaged.__file__).parent / "data" / "PROVENANCE.md").read_text()
    name, sha256, _ = PACKAGED["whisper"]
    assert name in text and sha256 in text and "MIT" in text and "(521, 384) float16" in text


def test_packaged_rows_too_few_and_damaged_are_one_line(tmp_path, monkeypatch):
    _raises_one_line(DataError, r"'whisper' has the rows of the numbers 0\.\.520; the task needs 0\.\.521 "
                     r"\(task\.max_operand <= 260\)", load_packaged, "whisper", 522)
    _raises_one_line(DataError, r"no packaged source 'gpt2'", load_packaged, "gpt2", 10)
    damaged = tmp_path / "rows.npy"
    data = bytearray(packaged_path("whisper").read_bytes())
    data[-1] ^= 1
    damaged.write_bytes(bytes(data))
    monkeypatch.setattr(packaged, "packaged_path", lambda name: damaged)
    _raises_one_line(DataError, r"packaged file whisper_tiny_en_numbers_0_520\.npy is damaged", load_packaged,
                     "whisper", 10)
