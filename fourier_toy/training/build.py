"""A model from a config: GPT-2 init on the configured backend, then the selected number embedding,
and its trainable mask.

Randomness comes from generators derived from the config's seed, one per purpose (the sub-streams
RNG_INIT and RNG_EMBED of config.py), so the weights do not depend on the order in which things are
drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fourier_toy.embeddings import fourier_rows as embeddings
from fourier_toy.embeddings import pretrained
from fourier_toy.embeddings.packaged import PACKAGED, load_packaged
from fourier_toy.config import RNG_EMBED, RNG_INIT, Config, check_memory, model_bytes
from fourier_toy.errors import ConfigError, DataError
from fourier_toy.nn.model import GPT
from fourier_toy.runs.layout import is_run_dir
from fourier_toy.training.backends import make_gpt


def number_rows(cfg: Config) -> tuple[np.ndarray | None, dict]:
    """(p, d_model) float64 rows for the numbers 0..p-1, or None for learned embeddings."""
    e, p, d = cfg.embedding, cfg.task.n_numbers, cfg.model.d_model
    if e.kind == "learned":
        return None, {"kind": "learned"}
    rng = np.random.default_rng([cfg.seed, RNG_EMBED])
    if e.kind == "fourier":
        rows = embeddings.fourier_embedding(p, d, rng, periods=e.periods, low=e.low, mapping=e.mapping)
        return rows, {"kind": "fourier", "periods": list(e.periods), "low": e.low, "mapping": e.mapping}
    rows, info = load_source(e.source, p)
    if np.all(rows == rows[0]):
        raise DataError(f"embedding.source: the rows of the numbers 0..{p - 1} are all identical "
                        f"(they carry nothing that tells one number from another)")
    rows, width_info = pretrained.adapt_width(rows, d, method=e.width)
    rows = embeddings.scale_like_init(rows)
    return rows, {"kind": "transplant", **info, **width_info}


def load_source(source: str, n_numbers: int) -> tuple[np.ndarray, dict]:
    """Pre-trained number rows from a .npy/.npz file, a Hugging Face GPT-2 folder, a fourier_toy
    run directory, a packaged source by name ("whisper": embeddings/packaged.py), or "toy" (a model
    fourier_toy pre-trains itself; see toy_source.py)."""
    if source in PACKAGED:
        return load_packaged(source, n_numbers)
    if source == "toy":
        from fourier_toy.training.toy_source import toy_number_rows

        return toy_number_rows(n_numbers)
    path = Path(source).expanduser()
    try:
        if path.is_dir():
            if is_run_dir(path):
                return pretrained.load_run_rows(path, n_numbers)
            return pretrained.load_hf_folder(path, n_numbers)
        if path.suffix in (".npy", ".npz") or path.exists():
            return pretrained.load_matrix(path, n_numbers)
    except DataError as err:
        # The readers name the file; the prefix names the setting that pointed at it.
        raise DataError(f"embedding.source: {err}") from None
    raise ConfigError(f"embedding.source: {source!r} is neither an existing .npy/.npz file, a folder, "
                      f"nor one of {', '.join([*PACKAGED, 'toy'])}")


def build_model(cfg: Config, dtype=np.float32) -> tuple[GPT, dict]:
    """The initialized model and a description of its embedding (written into the run config)."""
    check_memory("model.d_model", model_bytes(cfg),
                 "use a smaller model.d_model, model.n_layers, train.batch_size or task.max_operand")
    model = make_gpt(cfg.model, cfg.task.n_numbers, rng=np.random.default_rng([cfg.seed, RNG_INIT]), dtype=dtype)
    rows, info = number_rows(cfg)
    if rows is not None:
        model.weights["wte.weight"][: cfg.task.n_numbers] = rows
    return model, info


def trainable_mask(model: GPT, freeze_numbers: bool) -> np.ndarray | None:
    """None (everything trains), or a mask with the number rows of wte frozen. With a tied
    unembedding those rows are W_U too, so freezing them freezes the unembedding, as in GPT-2."""
    if not freeze_numbers:
        return None
    mask = np.ones(model.layout.size, dtype=bool)
    name, offset, shape = next(e for e in model.layout.entries if e[0] == "wte.weight")
    mask[offset : offset + model.n_numbers * shape[1]] = False
    return mask
