"""Configs: presets, TOML, overrides; bad input is always a one-line ConfigError."""

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fourier_toy import config
from fourier_toy.errors import ConfigError


def test_presets_build_and_validate():
    for name in config.PRESETS:
        cfg = config.from_preset(name)
        assert cfg.model.d_model % cfg.model.n_heads == 0
    assert config.from_preset("paper").task.n_numbers == 521


def test_overrides_parse_toml_literals_and_bare_strings():
    cfg = config.apply_overrides(config.from_preset("quick"), [
        "train.lr=3e-4", "task.split=[0.5, 0.25, 0.25]", "embedding.kind=fourier", "model.tied=true", "seed=7"])
    assert cfg.train.lr == 3e-4 and cfg.task.split == [0.5, 0.25, 0.25]
    assert cfg.embedding.kind == "fourier" and cfg.model.tied is True and cfg.seed == 7


def test_toml_file_layers_under_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[model]\nd_model = 64\nn_heads = 2\n[train]\nlr = 0.01\n')
    cfg = config.apply_overrides(config.load_toml(path, config.from_preset("quick")), ["train.lr=0.02"])
    assert (cfg.model.d_model, cfg.model.n_heads, cfg.train.lr) == (64, 2, 0.02)


@pytest.mark.parametrize("override, field", [
    ("model.d_model=130", "model.d_model"), ("task.max_operand=0", "task.max_operand"),
    ("model.nope=1", "model"), ("nope.x=1", "nope.x"), ("train.lr=abc", "train.lr"),
    ("model.n_layers=2.5", "model.n_layers"), ("model.tied=1", "model.tied"),
    ("embedding.kind=magic", "embedding.kind"), ("task.split=[0.5,0.5]", "task.split"),
    ("embedding.periods=[1, 2]", "embedding.periods"), ("train.lr=nan", "train.lr"), ("noequals", "--set"),
])
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError) as err:
        config.apply_overrides(config.from_preset("quick"), [override])
    msg = str(err.value)
    assert field in msg and "\n" not in msg


def test_missing_and_corrupt_toml(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        config.load_toml(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nd_model = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load_toml(bad)


scalars = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.booleans(),
                    st.text(string.printable, max_size=8), st.none())
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(string.ascii_lowercase + "_", max_size=12), inner, max_size=4), max_leaves=10)
keys = st.sampled_from(["task", "model", "embedding", "train", "seed", "other"] + [
    f"{s}.{f}" for s, cls in config.SECTIONS.items() for f in cls.__dataclass_fields__] + ["model.x", "x.y", ""])


@settings(max_examples=300, deadline=None)
@given(d=st.dictionaries(st.sampled_from(["task", "model", "embedding", "train", "seed", "zzz"]),
                         st.dictionaries(st.sampled_from(sorted({f for c in config.SECTIONS.values()
                                                                 for f in c.__dataclass_fields__} | {"bogus"})),
                                         values, max_size=4) | values, max_size=4))
def test_random_config_dicts_raise_only_config_errors(d):
    try:
        cfg = config.from_dict(d)
    except ConfigError as e:
        assert "\n" not in str(e)
        return
    config.validate(cfg)


@settings(max_examples=300, deadline=None)
@given(key=keys, raw=st.text(string.printable, max_size=20))
def test_random_override_strings_raise_only_config_errors(key, raw):
    try:
        config.apply_overrides(config.from_preset("quick"), [f"{key}={raw}"])
    except ConfigError as e:
        assert "\n" not in str(e)
