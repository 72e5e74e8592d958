"""The one source of hyperparameters: sections, presets, TOML files, `--set` overrides, validation.

A config is built in layers: the preset's values, then a TOML file, then `--set section.key=value`
overrides, then `seed`. Every layer is checked against the schema below, and every problem is a
`ConfigError` whose one-line message names the field and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import stat
import tomllib
from dataclasses import dataclass, field
from typing import Any

from fourier_toy.errors import ConfigError, DataError, FourierToyError


def _choice(*allowed):
    return {"choices": allowed}


def _range(lo=None, hi=None, lo_open=False):
    return {"range": (lo, hi, lo_open)}


@dataclass
class TaskConfig:
    """a + b over the numbers 0..p-1 with p = 2 * max_operand + 1 (see task.py for the encoding)."""

    max_operand: int = field(default=60, metadata=_range(1, 100_000))
    split: list = field(default_factory=lambda: [0.8, 0.1, 0.1], metadata={"split": True})
    ordered: bool = False  # False: each unordered pair once, its order drawn by the seed

    @property
    def n_numbers(self) -> int:
        return 2 * self.max_operand + 1


# GPT-2's architecture constants (DESIGN.md convention 3), one home for every implementation of it:
# the numpy ops, the numba kernels, the PyTorch twin and the Hugging Face config.
LN_EPS = 1e-5  # LayerNorm epsilon
GELU_C = math.sqrt(2.0 / math.pi)  # the tanh GELU: 0.5 x (1 + tanh(GELU_C (x + GELU_K x^3)))
GELU_K = 0.044715


@dataclass
class ModelConfig:
    d_model: int = field(default=128, metadata=_range(1, 65_536))
    n_layers: int = field(default=2, metadata=_range(1, 64))
    n_heads: int = field(default=4, metadata=_range(1, 1024))
    n_ctx: int = field(default=4, metadata=_range(4, 4096))  # positions; the task uses 4
    tied: bool = False  # True: the unembedding is wte's number rows, as in GPT-2
    backend: str = field(default="numba", metadata=_choice("numba", "numpy"))


@dataclass
class EmbeddingConfig:
    kind: str = field(default="learned", metadata=_choice("learned", "fourier", "transplant"))
    freeze: bool = False
    periods: list = field(default_factory=lambda: [2.0, 2.5, 5.0, 10.0], metadata={"periods": True})
    low: str = field(default="linear", metadata=_choice("linear", "lowfreq", "none"))
    mapping: str = field(default="orthonormal", metadata=_choice("orthonormal", "pad"))
    source: str = ""  # transplant: a .npy/.npz, a Hugging Face GPT-2 folder, a run dir, "whisper" or "toy"
    width: str = field(default="pca", metadata=_choice("pca", "pad"))


@dataclass
class TrainConfig:
    batch_size: int = field(default=256, metadata=_range(1, 1_000_000))
    lr: float = field(default=1e-3, metadata=_range(0.0, 10.0, lo_open=True))
    betas: list = field(default_factory=lambda: [0.9, 0.98], metadata={"betas": True})
    eps: float = field(default=1e-8, metadata=_range(0.0, 1.0, lo_open=True))
    weight_decay: float = field(default=0.01, metadata=_range(0.0, 100.0))
    schedule: str = field(default="constant", metadata=_choice("constant", "linear", "cosine"))
    warmup_steps: int = field(default=0, metadata=_range(0, 10**9))
    min_lr_ratio: float = field(default=0.0, metadata=_range(0.0, 1.0))
    grad_clip: float = field(default=1.0, metadata=_range(0.0, 1e9))  # 0 disables
    max_steps: int = field(default=2000, metadata=_range(0, 10**9))  # 0: no step budget
    max_epochs: int = field(default=0, metadata=_range(0, 10**9))  # 0: no epoch budget
    max_seconds: float = field(default=0.0, metadata=_range(0.0, 1e9))  # 0: none; checked between train_steps calls
    eval_every: int = field(default=100, metadata=_range(1, 10**9))
    eval_split: str = field(default="test", metadata=_choice("train", "val", "test"))
    target_accuracy: float = field(default=0.0, metadata=_range(0.0, 1.0))  # 0: never stop early
    target_split: str = field(default="train", metadata=_choice("train", "val", "test"))
    checkpoint_every: int = field(default=500, metadata=_range(1, 10**9))


@dataclass
class Config:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Sub-streams of the seed: each purpose draws from its own generator np.random.default_rng([seed,
# RNG_X, ...]) (numpy SeedSequence entropy), so what one part draws never depends on what, or how
# much, another part drew first. The ids are part of every stored result: changing one changes the
# splits or weights of every run, and the toy source's cached rows (whose cache key does not hold the
# ids: bump toy_source.FORMAT_VERSION with them).
#
#   id      name           entropy                   draws                              used by
#   0x5917  RNG_SPLITS     [seed, id]                pairs' order and train/val/test    task.make_splits
#   1       RNG_INIT       [seed, id]                the GPT-2 initialization           training/build.py
#   2       RNG_EMBED      [seed, id]                the Fourier number embedding       training/build.py
#   3       RNG_EPOCH      [seed, id, epoch]         an epoch's batch order             training/loop.py
#   11      RNG_TOY_INIT   [toy seed, id]            the toy source's initialization    training/toy_source.py
#   13      RNG_TOY_EPOCH  [toy seed, id, epoch]     the toy source's batch order       training/toy_source.py
#   17      RNG_PLANT_NOISE [seed, id]               a planted model's weight noise     plant/construct.py
#
# The toy source has a seed of its own (ToyConfig.seed), not the run's; its ids differ from the
# run's anyway, so a toy seed equal to a run's seed still draws unrelated numbers. bench/throughput.py
# initializes its models from [bench seed, RNG_INIT].
RNG_SPLITS = 0x5917
RNG_INIT = 1
RNG_EMBED = 2
RNG_EPOCH = 3
RNG_TOY_INIT = 11
RNG_TOY_EPOCH = 13
RNG_PLANT_NOISE = 17


SECTIONS = {"task": TaskConfig, "model": ModelConfig, "embedding": EmbeddingConfig, "train": TrainConfig}

# Presets hold only the values that differ from the dataclass defaults. Each was chosen from the
# regime study (docs/regimes.md, scripts/study/), which also says which claims each one measures.
PRESETS: dict[str, dict] = {
    # The whole `reproduce` (every condition, 3 seeds) in about two minutes on 2 cores: p = 121, so
    # the number axis analysed (0..119, N = 120) puts periods 2, 2.5, 5, 10 on integer components.
    # It measures the embedding claims (spectra, rescue, from scratch, probes); its filters leave
    # 31 (high band removed) and 10 (period 2 kept) null dimensions of 128, too few for the others.
    "quick": {},
    # The cheapest regime of the study in which every filter keeps dim null(M) >= 25% of d_model
    # (138 / 63 / 42 of 160 for the low-band, high-band and period-2 filters at p = 121) with 4
    # layers for the logit lens: the mechanism claims (division of labour, Table 1, error types,
    # parity, lens). Without clipping: at 4 layers clipping at 1.0 reverses the division of labour.
    "mechanism": {
        "model": {"d_model": 160, "n_layers": 4, "n_heads": 4},
        "train": {"grad_clip": 0.0},
    },
    # The paper's task: p = 521, a, b <= 260, unordered pairs once each, 80/10/10. At p = 521 the
    # period-2 filter removes 519 of the 521 basis rows' directions, so d_model 640 (10 heads of 64)
    # is the narrowest multiple of 64 that leaves every filter a null space: 542 / 219 / 122.
    "paper": {
        "task": {"max_operand": 260},
        "model": {"d_model": 640, "n_layers": 2, "n_heads": 10},
        "train": {"batch_size": 512, "max_steps": 0, "max_seconds": 600.0, "eval_every": 250,
                  "checkpoint_every": 1000},
    },
    # The toy smallest enough for unit tests of the whole pipeline.
    "tiny": {
        "task": {"max_operand": 10},
        "model": {"d_model": 32, "n_layers": 1, "n_heads": 2},
        "train": {"batch_size": 32, "max_steps": 40, "eval_every": 10, "checkpoint_every": 20},
    },
}


# ---- building ------------------------------------------------------------------------------------

def from_preset(name: str) -> Config:
    if name not in PRESETS:
        raise ConfigError(f"--preset: unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
    return from_dict(PRESETS[name])


def from_dict(d: Any, base: Config | None = None) -> Config:
    """Apply a nested dict of values on top of `base` (default: the dataclass defaults)."""
    cfg = dataclasses.replace(base) if base is not None else Config()
    cfg = Config(**{s: dataclasses.replace(getattr(cfg, s)) for s in SECTIONS}, seed=cfg.seed)
    if not isinstance(d, dict):
        raise ConfigError(f"config: expected a table of sections, got {type(d).__name__}")
    for key, value in d.items():
        if key == "seed":
            set_value(cfg, "seed", value)
        elif key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a table of keys, got {type(value).__name__}")
            for k, v in value.items():
                set_value(cfg, f"{key}.{k}", v)
        else:
            raise ConfigError(f"config: unknown section {key!r}; allowed: {', '.join([*SECTIONS, 'seed'])}")
    validate(cfg)
    return cfg


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def regular_file(path, what: str, error: type[FourierToyError] = DataError) -> None:
    """Refuse, before anything opens it, a path that exists but is not a regular file (a FIFO, a
    device, a directory: reading one may block forever or never end). A missing path passes: the
    reader reports it in its own words. Symlinks are followed."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
        raise error(f"{what}: {str(path)!r} is {kind}; only a regular file is read")


def read_toml(path, field: str) -> dict:
    """A TOML file as a dict; every failure is one ConfigError naming `field` (e.g. --config)."""
    regular_file(path, field, ConfigError)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{field}: no such file {str(path)!r}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{field}: {str(path)!r} is not valid TOML ({e})") from None
    except RecursionError:
        raise ConfigError(f"{field}: {str(path)!r} is nested too deeply to read; "
                          "arrays and tables may nest only a few levels") from None
    except OSError as e:
        raise ConfigError(f"{field}: cannot read {str(path)!r} ({e.strerror})") from None


def load_toml(path, base: Config | None = None) -> Config:
    return from_dict(read_toml(path, "--config"), base)


def parse_override(text: Any) -> tuple[str, Any]:
    """'section.key=value' -> (dotted key, value). The value is read as a TOML literal
    (numbers, booleans, [lists], "strings"); anything else is taken as a bare string."""
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(f"--set: expected section.key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key, raw = key.strip(), raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    except RecursionError:
        raise ConfigError(f"--set {key}: the value is nested too deeply; "
                          "arrays may nest only a few levels") from None
    return key, value


def apply_overrides(cfg: Config, overrides) -> Config:
    cfg = from_dict({}, cfg)
    for text in overrides:
        key, value = parse_override(text)
        set_value(cfg, key, value)
    validate(cfg)
    return cfg


def set_value(cfg: Config, key: str, value: Any) -> None:
    """Set one dotted key after checking its type and range."""
    if key == "seed":
        cfg.seed = _check_int("seed", value, 0, 2**63 - 1)
        return
    section, _, name = key.partition(".")
    if section not in SECTIONS or not name:
        raise ConfigError(f"--set: unknown key {key!r}; keys look like section.key with section one of "
                          f"{', '.join(SECTIONS)} (or plain seed)")
    fields = {f.name: f for f in dataclasses.fields(SECTIONS[section])}
    if name not in fields:
        raise ConfigError(f"{section}: unknown key {name!r}; allowed: {', '.join(fields)}")
    setattr(getattr(cfg, section), name, _check_field(key, fields[name], value))


def _check_int(key, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{key}: must be in [{lo}, {hi}], got {value}")
    return value


def _check_float(key, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{key}: must be finite, got {value!r}")
    return float(value)


def _check_field(key, f: dataclasses.Field, value):
    meta = f.metadata
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    if "choices" in meta:
        if not isinstance(value, str) or value not in meta["choices"]:
            raise ConfigError(f"{key}: expected one of {', '.join(meta['choices'])}, got {value!r}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if kind == "int":
        lo, hi, _ = meta.get("range", (None, None, False))
        return _check_int(key, value, lo, hi)
    if kind == "float":
        v = _check_float(key, value)
        lo, hi, lo_open = meta.get("range", (None, None, False))
        if lo is not None and (v < lo or (lo_open and v == lo)) or hi is not None and v > hi:
            bracket = "(" if lo_open else "["
            raise ConfigError(f"{key}: must be in {bracket}{lo}, {hi}], got {v}")
        return v
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list, got {value!r}")
    values = [_check_float(key, v) for v in value]
    if "split" in meta:
        if len(values) != 3 or any(v < 0 for v in values) or abs(sum(values) - 1.0) > 1e-9 or values[0] == 0:
            raise ConfigError(f"{key}: expected [train, val, test] fractions >= 0 summing to 1 with "
                              f"train > 0, got {value!r}")
    elif "betas" in meta:
        if len(values) != 2 or not all(0.0 <= v < 1.0 for v in values):
            raise ConfigError(f"{key}: expected [beta1, beta2] each in [0, 1), got {value!r}")
    elif "periods" in meta:
        if any(v <= 1.0 for v in values) or len(set(values)) != len(values):
            raise ConfigError(f"{key}: expected distinct periods > 1, got {value!r}")
    return values


def validate(cfg: Config) -> None:
    """Checks that involve more than one field."""
    m = cfg.model
    if m.d_model % m.n_heads:
        raise ConfigError(f"model.d_model: must be divisible by model.n_heads ({m.n_heads}), got {m.d_model}")
    e = cfg.embedding
    if e.kind == "transplant" and not e.source:
        raise ConfigError("embedding.source: required when embedding.kind = 'transplant' "
                          "(a .npy/.npz file, a Hugging Face GPT-2 folder, a run directory, 'whisper' or 'toy')")
    if e.kind == "fourier" and not e.periods and e.low == "none":
        raise ConfigError("embedding.periods: empty with embedding.low = 'none' leaves no features")
    t = cfg.train
    if t.max_steps == 0 and t.max_epochs == 0 and t.max_seconds == 0 and t.target_accuracy == 0:
        raise ConfigError("train.max_steps: set a budget (max_steps, max_epochs, max_seconds) "
                          "or a target_accuracy; all are 0")
    check_memory("task.max_operand", task_bytes(cfg.task), "use a smaller task.max_operand")
    check_memory("model.d_model", model_bytes(cfg),
                 "use a smaller model.d_model, model.n_layers, train.batch_size or task.max_operand")


# ---- memory --------------------------------------------------------------------------------------
# Sizes that cannot fit are refused before anything is allocated. The estimates count the big
# arrays only, so they are "about" (within a small factor); the limit is a fraction of the machine's
# physical memory, not of what happens to be free right now, so a config's validity does not change
# with the machine's load.

MEMORY_FRACTION = 0.8  # of the physical memory (os.sysconf SC_PHYS_PAGES * SC_PAGE_SIZE)
GIB = 2**30


def machine_memory() -> int | None:
    """Bytes of physical memory, or None where the OS does not say."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return total if total > 0 else None


def check_memory(what: str, needed: float, hint: str = "", error: type[FourierToyError] = ConfigError) -> None:
    """Raise `error` naming `what` when `needed` bytes exceed MEMORY_FRACTION of the machine's memory."""
    total = machine_memory()
    if total is None or needed <= total * MEMORY_FRACTION:
        return
    raise error(f"{what}: needs about {needed / GIB:.1f} GiB of {total * MEMORY_FRACTION / GIB:.1f} GiB "
                f"allowed ({MEMORY_FRACTION:.0%} of this machine's {total / GIB:.1f} GiB memory)"
                + (f"; {hint}" if hint else ""))


def task_bytes(task: TaskConfig) -> int:
    """The task's pairs and tokens (task.make_splits): the (n, n) int64 operand grids and their
    stacked pairs, then per kept pair its copy, 4 int64 tokens and an int64 target."""
    n = task.max_operand + 1
    kept = n * n if task.ordered else n * (n + 1) // 2
    return n * n * (8 + 8 + 16 + 1) + kept * (16 + 32 + 8)


def model_bytes(cfg: Config) -> int:
    """float32 parameters with their gradients, the two AdamW moments and a checkpoint copy, plus a
    batch's activations (forward and backward) and logits."""
    m, p = cfg.model, cfg.task.n_numbers
    d, vocab, batch = m.d_model, p + 2, cfg.train.batch_size
    params = vocab * d + m.n_ctx * d + m.n_layers * (12 * d * d + 13 * d) + 2 * d + (0 if m.tied else p * d)
    activations = batch * m.n_ctx * m.n_layers * (24 * d + m.n_heads * m.n_ctx) + 3 * batch * vocab
    return 4 * (5 * params + 2 * activations)


def basis_bytes(n: int) -> int:
    """An (n, n) float64 Fourier basis and its (n/2, n) integer, angle, sin and cos temporaries."""
    return 8 * n * n + (n // 2 + 1) * n * (8 + 8 + 8 + 8 + 2)
