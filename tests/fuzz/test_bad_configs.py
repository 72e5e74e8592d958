"""Category 1, bad configs: `--set` values and TOML files that the config validator rejects must
make `train` exit 2 with one `error:` line, create nothing that matters and change no input."""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from fourier_toy import config

from .conftest import TINY, describe, lost_files, record, run_main, snapshot

SETTINGS = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
KEYS = ["seed"] + [f"{s}.{f.name}" for s, cls in config.SECTIONS.items() for f in dataclasses.fields(cls)]
BASE_OVERRIDES = [a for a in TINY[2:] if a != "--set"]


def toml_literal(value) -> str:
    """A Python value as a TOML literal (inline tables for dicts)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, -1, 1, 2**63, -(2**63), 10**9 + 1, 100_001, 65_537, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 1e308, 5e-324, 10.5, 1.0000001]),
    st.text(max_size=20),
    st.sampled_from(["numba", "numpy", "learned", "fourier", "transplant", "toy", "", "x" * 5000]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=3)),
    max_leaves=10)
unknown_keys = st.one_of(
    st.sampled_from(["", "model", "model.", ".d_model", "bogus.key", "model.d_model.x", "train.lr.x",
                     "seed.x", "task.max_operand ", "MODEL.d_model", "embedding.source.path"]),
    st.builds(lambda s, k: f"{s}.{k}", st.sampled_from([*config.SECTIONS, "x"]), st.text(max_size=10)),
)
raw_text = st.one_of(st.text(max_size=40), st.sampled_from(["[", "{", "[[[[", "'", '"', "1e", "0x", "=",
                                                            "[1,", "{a=", "nan", "1_", "--", "\x00"]))


def validator_rejects(overrides) -> bool:
    """True when the config layer refuses the overrides (with any exception: a crash there is
    also worth running through the CLI, which must turn it into one line)."""
    try:
        config.apply_overrides(config.from_preset("tiny"), [*BASE_OVERRIDES, *overrides])
    except Exception:  # noqa: BLE001
        return True
    return False


@st.composite
def set_texts(draw):
    kind = draw(st.sampled_from(["typed", "typed", "typed", "unknown", "raw"]))
    key = draw(unknown_keys) if kind == "unknown" else draw(st.sampled_from(KEYS))
    raw = draw(raw_text) if kind == "raw" else toml_literal(draw(values))
    return f"{key}={raw}" if draw(st.integers(0, 9)) else draw(st.sampled_from([key, raw, f"{key}=={raw}"]))


def run_train(extra, inputs=()):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        before = snapshot(*inputs)
        res = run_main(["train", *TINY, "--out", out, *extra])
        found = record("bad_configs", res, lost_files(before))
    assert not found, describe(res, found)


@SETTINGS
@given(texts=st.lists(set_texts(), min_size=1, max_size=3))
def test_bad_set_values(texts):
    if not validator_rejects(texts):
        reject()
    run_train([x for t in texts for x in ("--set", t)])


def deep(depth: int, kind: str) -> str:
    if kind == "array":
        return "[" * depth + "1" + "]" * depth
    return "{a = " * depth + "1" + "}" * depth


@st.composite
def toml_files(draw):
    kind = draw(st.sampled_from(["tables", "tables", "deep", "raw", "top"]))
    if kind == "deep":
        depth = draw(st.sampled_from([50, 500, 5_000, 50_000]))
        section = draw(st.sampled_from(["model", "train", "x"]))
        key = draw(st.sampled_from(["d_model", "lr", "periods", "y"]))
        return f"[{section}]\n{key} = {deep(depth, draw(st.sampled_from(['array', 'table'])))}\n"
    if kind == "raw":
        return draw(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
    if kind == "top":
        return f"{draw(st.sampled_from(['seed', 'model', 'task', 'unknown', 'preset']))} = {toml_literal(draw(values))}\n"
    lines = []
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.one_of(st.sampled_from(list(config.SECTIONS)), st.sampled_from(["extra", "model.sub", "Train"])))
        lines.append(f"[{section}]")
        names = [f.name for f in dataclasses.fields(config.SECTIONS.get(section, config.TrainConfig))]
        for _ in range(draw(st.integers(1, 3))):
            name = draw(st.one_of(st.sampled_from(names), st.sampled_from(["unknown", "lr_", "steps"])))
            lines.append(f"{json.dumps(name)} = {toml_literal(draw(values))}")
    return "\n".join(lines) + "\n"


@SETTINGS
@given(text=toml_files())
def test_bad_toml_configs(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bad.toml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        try:
            cfg = config.load_toml(path, config.from_preset("tiny"))
            config.apply_overrides(cfg, BASE_OVERRIDES)
        except Exception:  # noqa: BLE001 - rejected (or crashed): the CLI must give one line
            pass
        else:
            reject()
        run_train(["--config", path], inputs=[path])
