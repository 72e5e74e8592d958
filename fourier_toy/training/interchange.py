"""A run directory to and from a Hugging Face GPT-2 folder.

    export_run(run_dir, out_dir)  ->  out_dir/config.json        GPT2Config (n_positions = model.n_ctx)
                                      out_dir/model.safetensors  the run's last checkpoint, GPT-2 names
                                      out_dir/vocab.json         "0".."p-1" -> 0..p-1, "+" -> p, "=" -> p+1
    import_hf(folder)             ->  a fourier_toy GPT with the same weights

The exported folder loads in transformers' GPT2LMHeadModel, whose logits at the last position over
the first p vocabulary columns are the run's number logits. vocab.json is the task's vocabulary
(not a usable BPE tokenizer: there is no merges.txt); it also makes the folder a valid
`embedding.source` for a transplant. config.json carries a "fourier_toy" entry with the vocabulary
layout and the run it came from (transformers keeps unknown keys as plain attributes).

import_hf expects our vocabulary layout: the numbers 0..p-1 are token ids 0..p-1 and the last two
ids are '+' and '=', so p = vocab_size - 2. It checks the layout against vocab.json and the
"fourier_toy" entry when they are present; a foreign GPT-2 folder (GPT-2's own vocabulary of 50257
tokens, say) would import as a model over 50255 "numbers" whose ids are not numbers, so it is
refused when its vocab.json says otherwise. To use a foreign model's number rows, transplant them
(`embedding.source = FOLDER`), which looks the tokens "0", "1", ... up in its vocabulary.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from fourier_toy.config import ModelConfig
from fourier_toy.errors import CheckpointError, ConfigError, DataError
from fourier_toy.runs.hf import (HF_CONFIG, HF_VOCAB, HF_WEIGHTS, hf_config, is_written_folder, read_hf_folder,
                                 write_hf_folder)
from fourier_toy.training.open_run import load_run
from fourier_toy.nn.model import GPT
from fourier_toy.training.backends import make_gpt
from fourier_toy.nn.params import Layout, pack
from fourier_toy.runs.files import read_json_object

META_KEY = "fourier_toy"


def task_vocab(n_numbers: int) -> dict[str, int]:
    """token string -> id for the task's vocabulary: "0".."p-1", "+" = p, "=" = p + 1."""
    vocab = {str(i): i for i in range(n_numbers)}
    vocab["+"], vocab["="] = n_numbers, n_numbers + 1
    return vocab


def export_run(run_dir, out_dir, force: bool = False) -> Path:
    """Write a run's weights as a GPT-2 folder -> out_dir.

    An existing non-empty out_dir is replaced only with force=True, and only if it is a folder an
    earlier export wrote (its config.json has the "fourier_toy" entry): never a run directory, the
    run itself or a folder holding it (CheckpointError otherwise). The new folder is written
    completely (config.json, model.safetensors, vocab.json) in a temporary sibling and then swapped
    in; the old one is deleted only after that.
    """
    out_path = Path(out_dir)
    if out_path.exists():
        run_abs, out_abs = Path(run_dir).resolve(), out_path.resolve()
        if out_abs == run_abs or out_abs in run_abs.parents:
            what = "the run itself" if out_abs == run_abs else f"a folder holding the run {str(run_dir)!r}"
            raise CheckpointError(f"OUT: {str(out_dir)!r} is {what}; export to a new folder or to an earlier export")
    run = load_run(run_dir, backend="numpy")
    m, p = run.cfg.model, run.cfg.task.n_numbers
    tensors = {name: run.model.weights[name] for name in run.model.layout.names}
    hf_cfg = hf_config(p + 2, m.n_ctx, m.d_model, m.n_layers, m.n_heads, m.tied)
    hf_cfg[META_KEY] = {"n_numbers": p, "plus_token": p, "equals_token": p + 1,
                        "run": str(Path(run_dir).resolve()), "step": run.step,
                        "embedding": run.derived.get("embedding", {}).get("kind")}
    return write_hf_folder(out_dir, tensors, hf_cfg, force=force, extra_json={HF_VOCAB: task_vocab(p)},
                           replaceable=is_export)


def is_export(folder) -> bool:
    """Whether `folder` is one export_run wrote: a GPT-2 folder whose config.json has our entry."""
    folder = Path(folder)
    if not is_written_folder(folder):
        return False
    try:
        return isinstance(read_json_object(folder / HF_CONFIG).get(META_KEY), dict)
    except DataError:
        return False


def _check_layout(folder: Path, cfg: dict, n_numbers: int) -> str:
    """Verify our vocabulary layout where the folder states one -> how it was established."""
    meta = cfg.get(META_KEY)
    how = "assumed (vocab_size - 2 numbers)"
    if meta is not None:
        if not isinstance(meta, dict) or meta.get("n_numbers") != n_numbers:
            got = meta.get("n_numbers") if isinstance(meta, dict) else meta
            raise DataError(f"{folder / HF_CONFIG}: {META_KEY}.n_numbers is {got!r}, but vocab_size "
                            f"{n_numbers + 2} means {n_numbers} numbers")
        how = HF_CONFIG
    vocab_path = folder / HF_VOCAB
    if vocab_path.is_file():
        vocab = read_json_object(vocab_path, "a JSON object mapping token -> id")
        for token, want in task_vocab(n_numbers).items():
            if vocab.get(token) != want:
                raise DataError(f"{vocab_path}: token {token!r} has id {vocab.get(token)!r}, expected {want} "
                                f"(import needs the numbers 0..{n_numbers - 1} at ids 0..{n_numbers - 1}, "
                                f"then '+' and '=')")
        how = HF_VOCAB
    return how


def import_hf(folder, backend: str = "numpy") -> tuple[GPT, dict]:
    """A GPT-2 folder in our vocabulary layout -> (GPT, info).

    info: path, sha256 of model.safetensors, n_numbers, the model config (as a dict), the
    folder's fourier_toy entry if any, and how the layout was checked ("vocab.json",
    "config.json" or "assumed ...").
    """
    if backend not in ("numpy", "numba"):
        raise ConfigError(f"backend: expected one of numpy, numba, got {backend!r}")
    folder = Path(folder)
    tensors, cfg = read_hf_folder(folder)
    n_numbers = int(cfg["vocab_size"]) - 2
    if n_numbers < 1:
        raise DataError(f"{folder / HF_CONFIG}: vocab_size {cfg['vocab_size']} leaves no number tokens "
                        f"(our layout is numbers, '+', '=')")
    layout_check = _check_layout(folder, cfg, n_numbers)
    mcfg = ModelConfig(d_model=int(cfg["n_embd"]), n_layers=int(cfg["n_layer"]), n_heads=int(cfg["n_head"]),
                       n_ctx=int(cfg.get("n_positions", cfg.get("n_ctx"))),
                       tied=bool(cfg.get("tie_word_embeddings", True)), backend=backend)
    layout = Layout.gpt2(n_numbers + 2, mcfg.d_model, mcfg.n_layers, mcfg.tied, mcfg.n_ctx)
    try:
        params = pack(layout, tensors)
    except CheckpointError as e:
        raise DataError(f"{folder / HF_WEIGHTS}: {e}") from None
    if not np.isfinite(params).all():
        raise DataError(f"{folder / HF_WEIGHTS}: holds NaN or inf weights")
    model = make_gpt(mcfg, n_numbers, params=params)
    sha = hashlib.sha256((folder / HF_WEIGHTS).read_bytes()).hexdigest()
    info = {"path": str(folder.resolve()), "sha256": sha, "n_numbers": n_numbers,
            "model": {"d_model": mcfg.d_model, "n_layers": mcfg.n_layers, "n_heads": mcfg.n_heads,
                      "n_ctx": mcfg.n_ctx, "tied": mcfg.tied, "backend": backend},
            "layout_checked_by": layout_check, META_KEY: cfg.get(META_KEY)}
    return model, info
