"""GPT-2 weight interchange with Hugging Face folders (config.json + model.safetensors).

fourier_toy names parameters as Hugging Face GPT-2 does without the "transformer." prefix
(`wte.weight`, `h.{l}.attn.c_attn.weight` of shape (d, 3d) used as x @ W, ...), so the export is
a renaming: add the prefix, and `lm_head.weight` stays at the top level. A tied model stores no
lm_head.weight: with tie_word_embeddings = true, transformers ties the output layer to wte.

    tensors (ours) --to_hf_state_dict--> HF state dict --write_hf_folder--> folder
    folder --read_hf_folder--> (tensors, hf_cfg)      HF state dict --from_hf_state_dict--> tensors

Shapes: V = vocab size, C = n_positions, D = n_embd, L = n_layer.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np

from fourier_toy.config import LN_EPS
from fourier_toy.errors import CheckpointError, ConfigError, DataError
from fourier_toy.runs.files import DirLock, fsync_dir
from fourier_toy.runs.layout import is_run_dir
from fourier_toy.runs.tensors import load_tensors

# The files of a Hugging Face GPT-2 folder. Two names coincide with a run directory's
# (runs/layout.py), but the contents differ: a GPT2Config here, a fourier_toy config there.
HF_CONFIG = "config.json"
HF_WEIGHTS = "model.safetensors"
HF_WEIGHTS_INDEX = "model.safetensors.index.json"  # sharded weights: {"weight_map": {tensor: file}}
HF_VOCAB = "vocab.json"  # token -> id
HF_TOKENIZER = "tokenizer.json"  # its "model" -> "vocab" is token -> id too

PREFIX = "transformer."
LM_HEAD = "lm_head.weight"
SUPPORTED_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")  # both the tanh approximation
_LAYER_KEY = re.compile(r"^h\.(\d+)\.")
# Causal-mask buffers that older transformers versions saved with the weights.
_HF_BUFFER = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")


def expected_shapes(n_vocab: int, n_ctx: int, d_model: int, n_layers: int, tied: bool) -> dict:
    """name (ours, no prefix) -> shape tuple, for every parameter of the GPT-2 model."""
    d = d_model
    shapes = {"wte.weight": (n_vocab, d), "wpe.weight": (n_ctx, d)}
    for l in range(n_layers):
        h = f"h.{l}."
        shapes.update({
            h + "ln_1.weight": (d,), h + "ln_1.bias": (d,),
            h + "attn.c_attn.weight": (d, 3 * d), h + "attn.c_attn.bias": (3 * d,),
            h + "attn.c_proj.weight": (d, d), h + "attn.c_proj.bias": (d,),
            h + "ln_2.weight": (d,), h + "ln_2.bias": (d,),
            h + "mlp.c_fc.weight": (d, 4 * d), h + "mlp.c_fc.bias": (4 * d,),
            h + "mlp.c_proj.weight": (4 * d, d), h + "mlp.c_proj.bias": (d,),
        })
    shapes["ln_f.weight"] = (d,)
    shapes["ln_f.bias"] = (d,)
    if not tied:
        shapes[LM_HEAD] = (n_vocab, d)
    return shapes


def infer_n_layers(keys, where: str = "tensors") -> int:
    """The number of blocks h.0 .. h.{L-1} named in `keys` (they must be contiguous from 0)."""
    layers = {int(m.group(1)) for k in keys if (m := _LAYER_KEY.match(k))}
    if not layers:
        raise DataError(f"{where}: no transformer blocks (no h.0.* tensors)")
    n = max(layers) + 1
    missing = sorted(set(range(n)) - layers)
    if missing:
        raise DataError(f"{where}: block h.{missing[0]} is missing (blocks found up to h.{n - 1})")
    return n


def _as_array(name: str, value, where: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind != "f":
        raise DataError(f"{where}: tensor {name} has dtype {arr.dtype}, expected floating point")
    return arr


def check_tensors(tensors: dict, tied: bool, where: str = "tensors") -> tuple[int, int, int, int]:
    """Validate names and shapes (ours, no prefix) -> (n_vocab, n_ctx, d_model, n_layers).

    Sizes are read off wte.weight and wpe.weight; every other tensor must match them. Raises
    DataError naming the first missing, unexpected or mis-shaped tensor.
    """
    for k in ("wte.weight", "wpe.weight"):
        if k not in tensors:
            raise DataError(f"{where}: tensor {k} is missing")
        if np.ndim(tensors[k]) != 2:
            raise DataError(f"{where}: tensor {k} has shape {np.shape(tensors[k])}, expected 2-D")
    n_vocab, d = np.shape(tensors["wte.weight"])
    n_ctx = np.shape(tensors["wpe.weight"])[0]
    n_layers = infer_n_layers(tensors, where)
    shapes = expected_shapes(n_vocab, n_ctx, d, n_layers, tied)
    _check_against(tensors, shapes, where)
    return n_vocab, n_ctx, d, n_layers


def _check_against(tensors: dict, shapes: dict, where: str) -> None:
    for name, shape in shapes.items():
        if name not in tensors:
            raise DataError(f"{where}: tensor {name} is missing")
        got = np.shape(tensors[name])
        if got != shape:
            raise DataError(f"{where}: tensor {name} has shape {got}, expected {shape}")
        _as_array(name, tensors[name], where)
    extra = sorted(set(tensors) - set(shapes))
    if extra:
        raise DataError(f"{where}: unexpected tensor {extra[0]}"
                        + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))


def to_hf_state_dict(tensors: dict, tied: bool) -> dict:
    """Our tensors -> a GPT2LMHeadModel state dict ("transformer." prefix, lm_head.weight untied only).

    A tied model may pass lm_head.weight only if it equals wte.weight (it is then left out).
    The arrays are not copied.
    """
    tensors = dict(tensors)
    if tied and LM_HEAD in tensors:
        if not np.array_equal(tensors[LM_HEAD], tensors.get("wte.weight")):
            raise DataError("tensors: lm_head.weight differs from wte.weight but tied = True")
        del tensors[LM_HEAD]
    check_tensors(tensors, tied)
    return {(k if k == LM_HEAD else PREFIX + k): v for k, v in tensors.items()}


def from_hf_state_dict(sd: dict, tied: bool | None = None, where: str = "state dict") -> tuple[dict, bool]:
    """A GPT-2 state dict (keys with or without "transformer.") -> (our tensors, tied).

    Attention-mask buffers (h.{l}.attn.bias / .masked_bias) are dropped. With tied=None the
    result is tied when lm_head.weight is absent or equal to wte.weight; with tied=True an
    lm_head.weight that differs from wte is an error; with tied=False lm_head.weight is required.
    """
    out = {}
    for key, value in sd.items():
        name = key[len(PREFIX):] if key.startswith(PREFIX) else key
        if _HF_BUFFER.match(name):
            continue
        if name in out:
            raise DataError(f"{where}: tensor {name} appears both with and without the {PREFIX!r} prefix")
        out[name] = value
    head = out.get(LM_HEAD)
    if tied is None:
        tied = head is None or np.array_equal(head, out.get("wte.weight"))
    if tied and head is not None:
        if not np.array_equal(head, out.get("wte.weight")):
            raise DataError(f"{where}: lm_head.weight differs from wte.weight but the model is tied")
        del out[LM_HEAD]
    if not tied and head is None:
        raise DataError(f"{where}: tensor lm_head.weight is missing (the model is untied)")
    check_tensors(out, tied, where)
    return out, bool(tied)


def hf_config(n_vocab: int, n_ctx: int, d_model: int, n_layers: int, n_heads: int, tied: bool) -> dict:
    """A GPT2Config-compatible config.json dict for our architecture.

    bos/eos are set to the last token id (n_vocab - 1; the '=' token in the task's vocabulary):
    the task has no BOS/EOS, and GPT-2's default 50256 would lie outside a small vocabulary.
    """
    for name, v, lo in (("n_vocab", n_vocab, 1), ("n_ctx", n_ctx, 1), ("model.d_model", d_model, 1),
                        ("model.n_layers", n_layers, 1), ("model.n_heads", n_heads, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ConfigError(f"{name}: must be an integer >= {lo}, got {v!r}")
    if d_model % n_heads:
        raise ConfigError(f"model.d_model: must be divisible by model.n_heads ({n_heads}), got {d_model}")
    if not isinstance(tied, (bool, np.bool_)):
        raise ConfigError(f"model.tied: must be true or false, got {tied!r}")
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": int(n_vocab),
        "n_positions": int(n_ctx),
        "n_embd": int(d_model),
        "n_layer": int(n_layers),
        "n_head": int(n_heads),
        "n_inner": 4 * int(d_model),
        "activation_function": "gelu_new",
        "layer_norm_epsilon": LN_EPS,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": bool(tied),
        "use_cache": True,
        "bos_token_id": int(n_vocab) - 1,
        "eos_token_id": int(n_vocab) - 1,
        "torch_dtype": "float32",
    }


def _config_sizes(cfg, where: str) -> tuple[int, int, int, int, int, bool]:
    """Validate an HF GPT-2 config dict -> (n_vocab, n_ctx, d_model, n_layers, n_heads, tied)."""
    if not isinstance(cfg, dict):
        raise DataError(f"{where}: expected a JSON object")
    if cfg.get("model_type", "gpt2") != "gpt2":
        raise DataError(f"{where}: model_type is {cfg.get('model_type')!r}, only 'gpt2' is supported")
    sizes = []
    for key in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
        v = cfg.get(key, cfg.get("n_ctx") if key == "n_positions" else None)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise DataError(f"{where}: {key} must be a positive integer, got {v!r}")
        sizes.append(v)
    n_vocab, n_ctx, d, n_layers, n_heads = sizes
    if d % n_heads:
        raise DataError(f"{where}: n_embd {d} is not divisible by n_head {n_heads}")
    # Settings that change the computation; the numpy model implements GPT-2's defaults only.
    checks = [
        ("activation_function", cfg.get("activation_function", "gelu_new") in SUPPORTED_ACTIVATIONS,
         f"one of {', '.join(SUPPORTED_ACTIVATIONS)}"),
        ("n_inner", cfg.get("n_inner") in (None, 4 * d), f"null or {4 * d} (4 * n_embd)"),
        ("layer_norm_epsilon", cfg.get("layer_norm_epsilon", LN_EPS) == LN_EPS, f"{LN_EPS}"),
        ("scale_attn_weights", cfg.get("scale_attn_weights", True) is True, "true"),
        ("scale_attn_by_inverse_layer_idx", cfg.get("scale_attn_by_inverse_layer_idx", False) is False, "false"),
    ]
    for key, ok, allowed in checks:
        if not ok:
            raise DataError(f"{where}: {key} = {cfg.get(key)!r} is not supported (allowed: {allowed})")
    tied = cfg.get("tie_word_embeddings", True)  # transformers' default
    if not isinstance(tied, bool):
        raise DataError(f"{where}: tie_word_embeddings must be true or false, got {tied!r}")
    return n_vocab, n_ctx, d, n_layers, n_heads, tied


def is_written_folder(folder) -> bool:
    """Whether `folder` looks like one write_hf_folder wrote: a GPT-2 config.json and its weights,
    and not a run directory."""
    folder = Path(folder)
    if is_run_dir(folder) or not (folder / HF_WEIGHTS).is_file():
        return False
    try:
        cfg = json.loads((folder / HF_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(cfg, dict) and cfg.get("model_type") == "gpt2"


def write_hf_folder(out_dir, tensors: dict, hf_cfg: dict, force: bool = False,
                    extra_json: dict | None = None, replaceable=is_written_folder) -> Path:
    """Write config.json + model.safetensors that transformers.GPT2LMHeadModel.from_pretrained loads.

    tensors use our names; tying follows hf_cfg["tie_word_embeddings"]. extra_json: more files of
    the folder, name -> JSON-encodable object. The folder is built in a temporary sibling and
    renamed into place only once complete, so a reader never sees half a folder. An existing
    non-empty out_dir is replaced only with force=True and only if replaceable(out_dir) says it is
    a folder written here (never a run directory); CheckpointError otherwise.
    """
    out_dir = Path(out_dir)
    n_vocab, n_ctx, d, n_layers, _, tied = _config_sizes(hf_cfg, "hf_cfg")
    sd = to_hf_state_dict(tensors, tied)
    _check_against({k.removeprefix(PREFIX): v for k, v in sd.items()},
                   expected_shapes(n_vocab, n_ctx, d, n_layers, tied), "tensors (against hf_cfg)")

    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"{out_dir.parent}: cannot create ({e.strerror})") from None
    # One writer at a time: the checks below and the swap must see the folder as it stays.
    with DirLock(out_dir.parent / f".{out_dir.name}.lock", f"OUT {str(out_dir)!r}"):
        _replace_folder(out_dir, sd, hf_cfg, force, extra_json, replaceable)
    return out_dir


def _replace_folder(out_dir: Path, sd: dict, hf_cfg: dict, force: bool, extra_json, replaceable) -> None:
    """write_hf_folder's checks and swap, under its lock."""
    from safetensors import SafetensorError
    from safetensors.numpy import save_file

    if out_dir.exists() and not out_dir.is_dir():
        raise CheckpointError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not force:
            raise CheckpointError(f"{out_dir}: exists and is not empty; pass force=True to replace it")
        if is_run_dir(out_dir) or not replaceable(out_dir):
            what = "a run directory" if is_run_dir(out_dir) else "not a folder this export wrote"
            raise CheckpointError(f"--force: {out_dir} is {what}; refusing to replace it "
                                  f"(only a previously exported folder is replaced)")
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex}"
    trash = None
    try:
        tmp.mkdir()
        save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(tmp / HF_WEIGHTS),
                  metadata={"format": "pt"})  # transformers refuses safetensors without it
        files = {HF_CONFIG: hf_cfg, **(extra_json or {})}
        for name, obj in files.items():
            with open(tmp / name, "w") as f:
                json.dump(obj, f, indent=2, sort_keys=True)
                f.write("\n")
        for name in (HF_WEIGHTS, *files):
            with open(tmp / name, "rb+") as f:
                os.fsync(f.fileno())
        fsync_dir(tmp)
        if out_dir.is_dir():
            trash = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex}"
            os.rename(out_dir, trash)
        os.rename(tmp, out_dir)
        fsync_dir(out_dir.parent)
    except (OSError, SafetensorError) as e:
        # safetensors reports a full disk as its own error, not as an OSError.
        if trash is not None and trash.exists() and not out_dir.exists():
            os.rename(trash, out_dir)
            trash = None
        reason = e.strerror if isinstance(e, OSError) and e.strerror else " ".join(str(e).split())
        raise CheckpointError(f"{out_dir}: cannot write the folder ({reason})") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)


def read_hf_folder(folder) -> tuple[dict, dict]:
    """A GPT-2 folder (config.json + model.safetensors) -> (tensors (our names), hf_cfg dict).

    Tying follows the config (transformers' default: tied). Every expected tensor's shape is
    checked against the config; DataError names the file, tensor or field at fault.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (expected config.json + model.safetensors)")
    cfg_path, weights = folder / HF_CONFIG, folder / HF_WEIGHTS
    for p in (cfg_path, weights):
        if not p.is_file():
            raise DataError(f"{folder}: {p.name} is missing")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise DataError(f"{cfg_path}: not valid JSON ({' '.join(str(e).split())})") from None
    n_vocab, n_ctx, d, n_layers, _, tied = _config_sizes(cfg, str(cfg_path))
    sd, _ = load_tensors(weights, error=DataError)
    tensors, _ = from_hf_state_dict(sd, tied, str(weights))
    found = infer_n_layers(tensors, str(weights))
    if found != n_layers:
        raise DataError(f"{weights}: has {found} blocks, {cfg_path.name} says n_layer = {n_layers}")
    _check_against(tensors, expected_shapes(n_vocab, n_ctx, d, n_layers, tied), str(weights))
    return tensors, cfg
