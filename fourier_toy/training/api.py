"""Entry points for Python callers that the command line builds from its arguments instead."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fourier_toy import config as config_mod
from fourier_toy.config import Config


def load_config(preset: str = "quick", overrides: Mapping[str, Any] | Iterable[str] | None = None,
                toml=None, seed: int | None = None) -> Config:
    """A validated Config, layered as `fourier-toy train` layers it: the preset, then the TOML file
    `toml` (tables [task] [model] [embedding] [train]), then `overrides`, then `seed`.

    overrides: {"section.key": value} with Python values (e.g. {"model.d_model": 64}; a tuple
    counts as a list), or "section.key=value" strings as given to --set (the value read as a
    TOML literal).
    Raises ConfigError naming the first bad field.
    """
    cfg = config_mod.from_preset(preset)
    if toml is not None:
        cfg = config_mod.load_toml(toml, cfg)
    if isinstance(overrides, Mapping):
        pairs = list(overrides.items())
    elif isinstance(overrides, str):  # one --set string, not an iterable of its characters
        pairs = [config_mod.parse_override(overrides)]
    else:
        pairs = [config_mod.parse_override(text) for text in overrides or ()]
    if seed is not None:
        pairs.append(("seed", seed))
    for key, value in pairs:
        config_mod.set_value(cfg, key, list(value) if isinstance(value, tuple) else value)
    config_mod.validate(cfg)
    return cfg
