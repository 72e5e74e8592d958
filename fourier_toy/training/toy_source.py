"""A pre-trained number embedding that fourier_toy makes itself: "the decimal digits of n".

The paper transplants number-token rows from a model pre-trained on text. A fresh machine may have
no such weights, so this module pre-trains a small GPT (the same model and optimizer as the
addition runs) on a different task and offers its number rows as `embedding.source = "toy"`.

Why digits. In text a number token co-occurs with its digits and its neighbours ("1997", "the 90s",
"page 7 of 10"); predicting the digits of n is the simplest pressure of that kind that gives number
tokens base-10 structure, and it never shows the model an addition. The units digit depends on
n mod 10 only, so a row that lets an MLP read it off must separate the residues mod 10, which puts
energy at the harmonics of period 10 (periods 10, 5, 3.33, 2.5, 2) along the number axis; the
tens and hundreds digits add the slower, step-like magnitude structure.

Task and encoding (N pre-training numbers, V = N + 2 as in task.py):

    tokens  [n, k, '=']    n in 0..N-1, k in {0, 1, 2} given as the number token k, '=' = token N+1
    target  the k-th decimal digit of n (k = 0 units, 1 tens, 2 hundreds) as the number token 0..9

    e.g. n = 472: [472, 0, '='] -> 2,  [472, 1, '='] -> 7,  [472, 2, '='] -> 4,  [7, 2, '='] -> 0

Token N ('+' in the addition vocabulary) is never used. The loss is cross-entropy at the last
position over the N number tokens (GPT.loss_and_grad); every (n, k) pair is a training example and
accuracy is measured on all of them (each number's row is its own parameter, so there is nothing
to hold out: the task is to store the digits in the rows).

Which numbers: N = max(n_numbers, 100), so every source covers the numbers the addition task
needs, and at least 0..99 (the tokens 0..9 exist as digit targets and the tens digit takes all its
values). The three digit places fix N <= 1000; a larger task is refused (ConfigError). The rows
of the numbers 0..n_numbers-1 are returned; tasks with n_numbers <= 100 share one source.

The source is one fixed artifact, like GPT-2's weights: it depends on its own config (ToyConfig,
seed 0 by default) and not on the run that transplants it, and it is trained with the numpy backend
by default, so a run's embedding does not change with the run's backend. The trained rows are
cached in `$FOURIER_TOY_CACHE` (default `~/.cache/fourier_toy`) under a hash of the whole
pre-training config; a cache hit returns the identical rows and info. The cache file is written
atomically, so concurrent runs at worst train the same (deterministic) source twice. A cache file
that cannot be read or does not match its key is ignored and replaced.

Cost (numpy backend, one core): N = 121 reaches 100% digit accuracy in 150-350 steps, 3-12 s;
N = 521 in about 1800 steps; N = 1000 ends the 3000-step budget near 99%. Training stops at the
first evaluation with every digit right.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fourier_toy.config import RNG_TOY_EPOCH, RNG_TOY_INIT, ModelConfig
from fourier_toy.errors import CheckpointError, ConfigError, DataError, FourierToyError
from fourier_toy.training.evaluate import predict
from fourier_toy.nn.model import GPT
from fourier_toy.training.backends import make_gpt
from fourier_toy.nn.optim import AdamW, LRSchedule
from fourier_toy.nn.params import decay_mask
from fourier_toy.runs.tensors import load_tensors, save_tensors
from fourier_toy.training.batches import EpochBatches

FORMAT_VERSION = 1  # bump when the task, the loop or the file layout changes
N_PLACES = 3  # units, tens, hundreds
MIN_NUMBERS = 100
MAX_NUMBERS = 10**N_PLACES
CACHE_ENV = "FOURIER_TOY_CACHE"
ROWS_KEY = "number_rows"


@dataclass(frozen=True)
class ToyConfig:
    """Everything the pre-trained rows depend on; its hash is the cache key."""

    n_numbers: int = 1000  # N: the numbers 0..N-1 are pre-trained
    seed: int = 0
    d_model: int = 64
    n_layers: int = 1
    n_heads: int = 4
    tied: bool = True  # the digit outputs 0..9 are the number rows 0..9 themselves, as in GPT-2
    batch_size: int = 256
    lr: float = 3e-3
    betas: tuple = (0.9, 0.98)
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    max_steps: int = 3000
    eval_every: int = 50  # training stops at the first evaluation with every digit right
    backend: str = "numpy"

    def __post_init__(self):
        for name in ("n_numbers", "seed", "d_model", "n_layers", "n_heads", "batch_size", "max_steps",
                     "eval_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (0 if name == "seed" else 1):
                raise ConfigError(f"toy.{name}: expected a positive integer, got {v!r}")
        if not MIN_NUMBERS <= self.n_numbers <= MAX_NUMBERS:
            raise ConfigError(f"toy.n_numbers: must be in [{MIN_NUMBERS}, {MAX_NUMBERS}], got {self.n_numbers}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"toy.d_model: must be divisible by toy.n_heads ({self.n_heads}), got {self.d_model}")
        if self.backend not in ("numpy", "numba"):
            raise ConfigError(f"toy.backend: expected one of numpy, numba, got {self.backend!r}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    def key(self) -> str:
        """A 16-hex-digit hash of the config and the format version."""
        text = json.dumps({"format": FORMAT_VERSION, "task": "digits", **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def toy_numbers(n_numbers: int) -> int:
    """The pre-training range N for a task with n_numbers numbers (see the module docstring)."""
    if isinstance(n_numbers, bool) or not isinstance(n_numbers, (int, np.integer)) or n_numbers < 1:
        raise ConfigError(f"n_numbers: must be a positive integer, got {n_numbers!r}")
    if n_numbers > MAX_NUMBERS:
        raise ConfigError(f"embedding.source: 'toy' pre-trains the {N_PLACES}-digit numbers 0..{MAX_NUMBERS - 1}; "
                          f"the task needs {n_numbers} numbers (use a smaller task.max_operand or another source)")
    return max(int(n_numbers), MIN_NUMBERS)


def digit_dataset(n_numbers: int) -> tuple[np.ndarray, np.ndarray]:
    """Every example of the digits task over 0..N-1 -> (tokens (N*3, 3) int64, targets (N*3,) int64).

    Example 3n + k is [n, k, '='] with target the k-th decimal digit of n; '=' is token N + 1.
    """
    N = int(n_numbers)
    if not 10 <= N <= MAX_NUMBERS:
        raise ConfigError(f"toy.n_numbers: must be in [10, {MAX_NUMBERS}], got {n_numbers!r}")
    n = np.repeat(np.arange(N, dtype=np.int64), N_PLACES)
    k = np.tile(np.arange(N_PLACES, dtype=np.int64), N)
    tokens = np.stack([n, k, np.full_like(n, N + 1)], axis=1)
    return tokens, (n // 10**k) % 10


def _model_config(cfg: ToyConfig) -> ModelConfig:
    return ModelConfig(d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads, n_ctx=3,
                       tied=cfg.tied, backend=cfg.backend)


def digit_accuracy(model: GPT, tokens: np.ndarray, targets: np.ndarray) -> dict:
    """Exact accuracy over all examples and per digit place ({"all", "units", "tens", "hundreds"})."""
    correct = predict(model, tokens).argmax(axis=1) == targets
    out = {"all": float(correct.mean())}
    for k, name in enumerate(("units", "tens", "hundreds")):
        out[name] = float(correct[tokens[:, 1] == k].mean())
    return out


def pretrain(cfg: ToyConfig) -> tuple[GPT, dict]:
    """Train the digits model from scratch -> (model, info). Deterministic given cfg.

    Epoch e visits all examples in the order of a permutation drawn from [seed, RNG_TOY_EPOCH, e]
    (training/batches.py, as the addition runs do); AdamW with decoupled weight decay on matrices,
    global-norm clipping, constant learning rate.
    """
    t0 = time.perf_counter()
    tokens, targets = digit_dataset(cfg.n_numbers)
    model = make_gpt(_model_config(cfg), cfg.n_numbers, rng=np.random.default_rng([cfg.seed, RNG_TOY_INIT]))
    opt = AdamW(model.layout.size, cfg.lr, tuple(cfg.betas), 1e-8, cfg.weight_decay,
                decay_mask=decay_mask(model.layout))
    schedule = LRSchedule("constant", cfg.lr, cfg.max_steps)
    batches = EpochBatches(len(targets), cfg.batch_size, cfg.seed, RNG_TOY_EPOCH)
    step, acc, last_loss = 0, None, float("nan")
    while step < cfg.max_steps:
        idx = batches.take(step)[0]
        last_loss = model.train_step(tokens[idx], targets[idx], opt, schedule(step), cfg.grad_clip)
        if not math.isfinite(last_loss):
            raise DataError(f"toy pre-training diverged at step {step} (loss {last_loss}); lower toy.lr")
        step += 1
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            acc = digit_accuracy(model, tokens, targets)
            if acc["all"] == 1.0:
                break
    info = {"source": "toy", "task": "digits", "toy_config": cfg.to_dict(), "key": cfg.key(),
            "pretrain_numbers": cfg.n_numbers, "steps": step, "final_batch_loss": last_loss,
            "digit_accuracy": acc, "seconds": round(time.perf_counter() - t0, 3), "width": cfg.d_model}
    return model, info


def cache_dir() -> Path:
    """$FOURIER_TOY_CACHE, else ~/.cache/fourier_toy (not created here)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fourier_toy"


def cache_path(cfg: ToyConfig, directory: Path | None = None) -> Path:
    return (directory if directory is not None else cache_dir()) / f"toy-digits-{cfg.key()}.safetensors"


def _rows_sha256(rows: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(rows, dtype="<f4").tobytes()).hexdigest()


def _read_cache(path: Path, cfg: ToyConfig) -> tuple[np.ndarray, dict] | None:
    """The cached (rows (N, d) float32, info), or None when absent, unreadable or not this config's."""
    if not path.is_file():
        return None
    try:
        tensors, meta = load_tensors(path)
        info = json.loads(meta.get("info", ""))
    except (CheckpointError, ValueError):
        return None
    rows = tensors.get(ROWS_KEY)
    ok = (isinstance(info, dict) and info.get("key") == cfg.key() and rows is not None
          and rows.dtype == np.float32 and rows.shape == (cfg.n_numbers, cfg.d_model)
          and np.isfinite(rows).all() and info.get("rows_sha256") == _rows_sha256(rows))
    return (rows, info) if ok else None


def _write_cache(path: Path, rows: np.ndarray, info: dict) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_tensors(path, {ROWS_KEY: rows}, {"info": json.dumps(info, sort_keys=True)})
    except (OSError, FourierToyError):
        return False  # the cache is an optimisation: a read-only home still gets its rows
    return True


def pretrained_rows(cfg: ToyConfig, use_cache: bool = True) -> tuple[np.ndarray, dict]:
    """(rows (cfg.n_numbers, d_model) float32 of the trained wte, info), through the cache."""
    path = cache_path(cfg)
    if use_cache:
        hit = _read_cache(path, cfg)
        if hit is not None:
            return hit
    model, info = pretrain(cfg)
    rows = model.weights["wte.weight"][: cfg.n_numbers].copy()
    info["rows_sha256"] = _rows_sha256(rows)
    if use_cache:
        _write_cache(path, rows, info)
    return rows, info


def toy_number_rows(n_numbers: int, seed: int = 0, backend: str = "numpy",
                    use_cache: bool = True) -> tuple[np.ndarray, dict]:
    """The number rows of the digits-pre-trained toy -> (rows (n_numbers, 64) float64, info).

    Row i embeds the number i. info (JSON-able) holds source = "toy", the pre-training config and
    its key, the steps and seconds it took, its digit accuracy (all / units / tens / hundreds)
    and the sha256 of the stored rows; it is the same on a cache hit.
    """
    N = toy_numbers(n_numbers)
    rows, info = pretrained_rows(ToyConfig(n_numbers=N, seed=seed, backend=backend), use_cache)
    return rows[:n_numbers].astype(np.float64), dict(info)
