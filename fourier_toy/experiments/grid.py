"""A sweep's grid: GRID.toml, its expansion into points, and content-addressed run ids.

A grid file (GRID.toml) is a base config plus lists of values:

    preset = "quick"                      # optional, default "quick"
    [base]                                # config-file form: [base.task], [base.model], ..., seed
    train = { max_steps = 1500 }
    [grid]                                # dotted config keys -> lists of values
    "embedding.kind" = ["learned", "fourier"]
    "model.d_model" = [64, 128]
    seed = [0, 1, 2]

It expands to the Cartesian product of the lists, in file order with the last key varying fastest.
Each point is a resolved config, and its run directory is OUT/runs/<id>, id = the first 12 hex digits
of the SHA-256 of the config's canonical JSON (`run_id`). A run is a pure function of its config, so
the directory name says everything about what is inside and an unchanged run is never trained twice.
For the same reason a time budget (train.max_seconds) is refused: use max_steps or max_epochs.

A grid value may also be a table of dotted keys set together, a named condition such as
{name = "fourier_frozen", "embedding.kind" = "fourier", "embedding.freeze" = true}.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fourier_toy import config as config_mod
from fourier_toy.config import Config
from fourier_toy.errors import ConfigError

ID_LEN = 12
MAX_POINTS = 10_000  # a sweep's grid: more points than this is refused before it is expanded


@dataclass
class Grid:
    preset: str
    base: dict  # config-file form: {"task": {...}, ..., "seed": int}
    axes: list[tuple[str, list]]  # (dotted key, values) in file order

    @property
    def keys(self) -> list[str]:
        return [k for k, _ in self.axes]

    def to_dict(self) -> dict:
        return {"preset": self.preset, "base": self.base, "grid": {k: v for k, v in self.axes}}


@dataclass
class Point:
    run_id: str
    values: dict  # grid key -> value at this point
    config: Config
    run_dir: Path | None = None  # set by run_sweep: OUT/runs/<run_id>


def run_id(cfg: Config) -> str:
    """12 hex digits of the SHA-256 of the resolved config's canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(canonical_json(cfg.to_dict()).encode("utf-8")).hexdigest()[:ID_LEN]


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def grid_from_dict(data: Any, where: str = "GRID") -> Grid:
    """Check the top level of a grid (types only; values are checked by `expand`)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table, got {type(data).__name__}")
    unknown = set(data) - {"preset", "base", "grid"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}; allowed: preset, base, grid")
    preset = data.get("preset", "quick")
    if not isinstance(preset, str) or preset not in config_mod.PRESETS:
        raise ConfigError(f"{where}: preset must be one of {', '.join(config_mod.PRESETS)}, got {preset!r}")
    base = data.get("base", {})
    if not isinstance(base, dict):
        raise ConfigError(f"{where}: [base] must be a table of config sections, got {type(base).__name__}")
    grid = data.get("grid", {})
    if not isinstance(grid, dict):
        raise ConfigError(f"{where}: [grid] must be a table of dotted keys to lists, got {type(grid).__name__}")
    axes = []
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"[grid] {key}: expected a non-empty list of values, got {values!r}")
        axes.append((key, list(values)))
    n_points = math.prod(len(values) for _, values in axes)
    if n_points > MAX_POINTS:
        raise ConfigError(f"[grid]: {' x '.join(str(len(v)) for _, v in axes)} = {n_points:,} points; "
                          f"a sweep may have at most {MAX_POINTS:,}")
    return Grid(preset, base, axes)


def load_grid(path) -> Grid:
    return grid_from_dict(config_mod.read_toml(path, "GRID"), f"GRID {str(path)!r}")


def expand(grid: Grid) -> list[Point]:
    """Every point of the grid, validated, in a stable order (file order, last key fastest)."""
    try:
        base = config_mod.from_dict(grid.base, config_mod.from_preset(grid.preset))
    except ConfigError as e:
        raise ConfigError(f"[base] {e}") from None
    points, seen = [], {}
    for combo in itertools.product(*(values for _, values in grid.axes)):
        values = dict(zip(grid.keys, combo))
        cfg = config_mod.from_dict({}, base)  # a copy
        for key, value in values.items():
            for k, v in _assignments(key, value):
                try:
                    config_mod.set_value(cfg, k, v)
                except ConfigError as e:
                    raise ConfigError(f"[grid] {key} = {value!r}: {e}") from None
        try:
            config_mod.validate(cfg)
        except ConfigError as e:
            raise ConfigError(f"[grid] point {describe_values(values)}: {e}") from None
        if cfg.train.max_seconds:
            # A time budget makes the weights depend on the machine's load, and a directory named by
            # the config would then not say what is inside.
            raise ConfigError(f"train.max_seconds: must be 0 in a sweep (a run must be a pure function of "
                              f"its config; use train.max_steps or train.max_epochs), got {cfg.train.max_seconds}")
        rid = run_id(cfg)
        if rid in seen:
            raise ConfigError(f"[grid] points {describe_values(seen[rid])} and {describe_values(values)} resolve to the "
                              "same config; remove the duplicate value")
        seen[rid] = values
        points.append(Point(rid, values, cfg))
    return points


def _assignments(key: str, value: Any) -> list[tuple[str, Any]]:
    """A grid value is one config value, or a table of dotted keys set together (a named
    condition such as {name = "fourier_frozen", "embedding.kind" = "fourier", ...}; "name" only
    labels it)."""
    if isinstance(value, dict):
        return [(k, v) for k, v in value.items() if k != "name"]
    return [(key, value)]


def describe_values(values: dict) -> str:
    return " ".join(f"{k}={show_value(v)}" for k, v in values.items()) or "(base)"


def show_value(value: Any) -> str:
    """A grid value as written in GRID.toml (strings bare, a condition table by its name)."""
    if isinstance(value, dict) and "name" in value:
        return str(value["name"])
    return value if isinstance(value, str) else json.dumps(value)
