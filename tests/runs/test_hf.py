"""GPT-2 interchange: state-dict renaming, config, and folder write/read (bit-exact, atomic, validated)."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from fourier_toy.errors import CheckpointError, ConfigError, DataError
from fourier_toy.runs.hf import (
    expected_shapes,
    from_hf_state_dict,
    hf_config,
    infer_n_layers,
    read_hf_folder,
    to_hf_state_dict,
    write_hf_folder,
)

V, C, D, L, H = 13, 4, 8, 2, 2


def _gpt2_names(n_layers, tied):
    """Hugging Face GPT-2 parameter names, written out independently of the module."""
    names = ["wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"]
    for l in range(n_layers):
        for part in ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                     "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                     "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"]:
            names.append(f"h.{l}.{part}")
    return set(names) | (set() if tied else {"lm_head.weight"})


def _tensors(tied, seed=0, n_layers=L, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in expected_shapes(V, C, D, n_layers, tied).items()}


def _one_line(exc, match, fn, *args, **kwargs):
    with pytest.raises(exc, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)


def _assert_same(a, b):
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("tied", [True, False])
def test_names_and_shapes_follow_gpt2(tied):
    shapes = expected_shapes(V, C, D, 3, tied)
    assert set(shapes) == _gpt2_names(3, tied)
    assert shapes["h.1.attn.c_attn.weight"] == (D, 3 * D)  # Conv1D layout: x @ W
    assert shapes["h.2.mlp.c_proj.weight"] == (4 * D, D)
    assert infer_n_layers(shapes) == 3


@pytest.mark.parametrize("tied", [True, False])
def test_state_dict_round_trip_is_bit_exact(tied):
    t = _tensors(tied)
    sd = to_hf_state_dict(t, tied)
    assert ("lm_head.weight" in sd) == (not tied)
    assert all(k == "lm_head.weight" or k.startswith("transformer.") for k in sd)
    assert "transformer.h.1.mlp.c_fc.bias" in sd
    back, back_tied = from_hf_state_dict(sd)
    assert back_tied == tied
    _assert_same(back, t)


def test_from_hf_accepts_unprefixed_keys_buffers_and_equal_head():
    t = _tensors(True)
    sd = dict(t)  # no prefix
    sd["h.0.attn.bias"] = np.tril(np.ones((1, 1, C, C), np.float32))
    sd["h.1.attn.masked_bias"] = np.array(-1e4, np.float32)
    sd["lm_head.weight"] = t["wte.weight"].copy()  # equal to wte -> tied
    back, tied = from_hf_state_dict(sd)
    assert tied
    _assert_same(back, t)
    # the mask buffer must not be confused with the real attention bias
    assert "h.0.attn.c_attn.bias" in back and "h.0.attn.bias" not in back


def test_state_dict_errors():
    t = _tensors(False)
    del t["h.1.ln_2.bias"]
    _one_line(DataError, r"tensor h\.1\.ln_2\.bias is missing", to_hf_state_dict, t, False)
    t = _tensors(True)
    t["h.0.mlp.c_fc.weight"] = np.zeros((D, 3 * D), np.float32)
    _one_line(DataError, r"tensor h\.0\.mlp\.c_fc\.weight has shape \(8, 24\), expected \(8, 32\)",
              to_hf_state_dict, t, True)
    t = _tensors(True)
    t["h.0.attn.rotary"] = np.zeros(3, np.float32)
    _one_line(DataError, r"unexpected tensor h\.0\.attn\.rotary", to_hf_state_dict, t, True)
    t = _tensors(True, n_layers=3)
    for k in [k for k in t if k.startswith("h.1.")]:
        del t[k]
    _one_line(DataError, r"block h\.1 is missing", to_hf_state_dict, t, True)
    t = _tensors(False)
    _one_line(DataError, r"lm_head\.weight differs from wte\.weight but tied", to_hf_state_dict, t, True)
    _one_line(DataError, r"lm_head\.weight is missing", from_hf_state_dict, _tensors(True), tied=False)


def test_hf_config_fields():
    cfg = hf_config(V, C, D, L, H, tied=True)
    assert cfg["model_type"] == "gpt2" and cfg["architectures"] == ["GPT2LMHeadModel"]
    assert (cfg["vocab_size"], cfg["n_positions"], cfg["n_embd"], cfg["n_layer"], cfg["n_head"]) == (V, C, D, L, H)
    assert cfg["n_inner"] == 4 * D and cfg["activation_function"] == "gelu_new"
    assert cfg["layer_norm_epsilon"] == 1e-5 and cfg["scale_attn_weights"] is True
    assert cfg["resid_pdrop"] == cfg["embd_pdrop"] == cfg["attn_pdrop"] == 0.0
    assert cfg["tie_word_embeddings"] is True and hf_config(V, C, D, L, H, False)["tie_word_embeddings"] is False
    assert 0 <= cfg["bos_token_id"] < V and 0 <= cfg["eos_token_id"] < V
    json.dumps(cfg)  # JSON-able as it is
    _one_line(ConfigError, r"model\.d_model: must be divisible by model\.n_heads \(3\)", hf_config, V, C, D, L, 3, True)
    _one_line(ConfigError, r"model\.n_layers", hf_config, V, C, D, 0, H, True)


@pytest.mark.parametrize("tied", [True, False])
def test_folder_round_trip_is_bit_exact(tmp_path, tied):
    t = _tensors(tied, seed=3)
    cfg = hf_config(V, C, D, L, H, tied)
    out = write_hf_folder(tmp_path / "export", t, cfg)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    raw = load_file(str(out / "model.safetensors"))
    assert ("lm_head.weight" in raw) == (not tied)
    assert all(k.startswith("transformer.") or k == "lm_head.weight" for k in raw)
    back, cfg_back = read_hf_folder(out)
    _assert_same(back, t)
    assert cfg_back == cfg
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_folder_has_the_format_metadata_transformers_needs(tmp_path):
    from safetensors import safe_open

    write_hf_folder(tmp_path / "e", _tensors(True), hf_config(V, C, D, L, H, True))
    with safe_open(str(tmp_path / "e" / "model.safetensors"), framework="numpy") as f:
        assert f.metadata() == {"format": "pt"}


def test_overwrite_refusal_and_force(tmp_path):
    cfg = hf_config(V, C, D, L, H, True)
    write_hf_folder(tmp_path / "e", _tensors(True, seed=1), cfg)
    _one_line(CheckpointError, r"e: exists and is not empty; pass force=True", write_hf_folder,
              tmp_path / "e", _tensors(True, seed=2), cfg)
    np.testing.assert_array_equal(read_hf_folder(tmp_path / "e")[0]["wte.weight"],
                                  _tensors(True, seed=1)["wte.weight"])  # untouched
    write_hf_folder(tmp_path / "e", _tensors(True, seed=2), cfg, force=True)
    _assert_same(read_hf_folder(tmp_path / "e")[0], _tensors(True, seed=2))
    (tmp_path / "empty").mkdir()
    write_hf_folder(tmp_path / "empty", _tensors(True), cfg)  # an empty dir is fine
    (tmp_path / "file").write_text("x")
    _one_line(CheckpointError, r"file: exists and is not a directory", write_hf_folder, tmp_path / "file",
              _tensors(True), cfg, force=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_write_checks_tensors_against_the_config(tmp_path):
    t = _tensors(True)
    _one_line(DataError, r"tensor wte\.weight has shape \(13, 8\), expected \(14, 8\)", write_hf_folder,
              tmp_path / "e", t, hf_config(V + 1, C, D, L, H, True))
    _one_line(DataError, r"tensor h\.2\.ln_1\.weight is missing", write_hf_folder,
              tmp_path / "e", t, hf_config(V, C, D, L + 1, H, True))
    assert not (tmp_path / "e").exists()


def _written(tmp_path, tied=True):
    folder = tmp_path / "e"
    write_hf_folder(folder, _tensors(tied), hf_config(V, C, D, L, H, tied))
    return folder


def test_read_missing_and_corrupt_files(tmp_path):
    _one_line(DataError, r"nothere: no such folder", read_hf_folder, tmp_path / "nothere")
    folder = _written(tmp_path)
    (folder / "config.json").write_text("{not json")
    _one_line(DataError, r"config\.json: not valid JSON", read_hf_folder, folder)
    (folder / "config.json").unlink()
    _one_line(DataError, r"config\.json is missing", read_hf_folder, folder)
    folder = _written(tmp_path / "b")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:-100])  # truncated data
    _one_line(DataError, r"model\.safetensors", read_hf_folder, folder)
    (folder / "model.safetensors").write_bytes(b"\xff" * 16)
    _one_line(DataError, r"model\.safetensors: not a valid safetensors file", read_hf_folder, folder)
    (folder / "model.safetensors").unlink()
    _one_line(DataError, r"model\.safetensors is missing", read_hf_folder, folder)


def test_read_checks_shapes_against_config(tmp_path):
    folder = _written(tmp_path)
    sd = load_file(str(folder / "model.safetensors"))
    sd["transformer.h.1.attn.c_proj.bias"] = np.zeros(D + 1, np.float32)
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    _one_line(DataError, r"tensor h\.1\.attn\.c_proj\.bias has shape \(9,\), expected \(8,\)", read_hf_folder, folder)

    folder = _written(tmp_path / "b")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["n_layer"] = 3
    (folder / "config.json").write_text(json.dumps(cfg))
    _one_line(DataError, r"has 2 blocks, config\.json says n_layer = 3", read_hf_folder, folder)
    cfg["n_layer"] = 2
    cfg["n_positions"] = 16
    (folder / "config.json").write_text(json.dumps(cfg))
    _one_line(DataError, r"tensor wpe\.weight has shape \(4, 8\), expected \(16, 8\)", read_hf_folder, folder)
    cfg["n_positions"] = C
    cfg["activation_function"] = "relu"
    (folder / "config.json").write_text(json.dumps(cfg))
    _one_line(DataError, r"activation_function = 'relu' is not supported", read_hf_folder, folder)


def test_read_tying_follows_the_config(tmp_path):
    # An untied export read with a config that says tied (transformers' default) must not
    # silently drop a different lm_head.
    folder = _written(tmp_path, tied=False)
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["tie_word_embeddings"]
    (folder / "config.json").write_text(json.dumps(cfg))
    _one_line(DataError, r"lm_head\.weight differs from wte\.weight", read_hf_folder, folder)
    # a tied export whose config says untied has no lm_head to load
    folder = _written(tmp_path / "b", tied=True)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["tie_word_embeddings"] = False
    (folder / "config.json").write_text(json.dumps(cfg))
    _one_line(DataError, r"lm_head\.weight is missing", read_hf_folder, folder)
