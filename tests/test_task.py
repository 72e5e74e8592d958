"""The addition task: targets, the split, the encoding."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fourier_toy.config import TaskConfig
from fourier_toy.errors import ConfigError, DataError
from fourier_toy.task import SPLITS, Vocab, all_pairs, make_splits

splits_st = st.sampled_from([[0.8, 0.1, 0.1], [0.5, 0.25, 0.25], [1.0, 0.0, 0.0], [0.6, 0.4, 0.0]])


@settings(max_examples=40, deadline=None)
@given(max_operand=st.integers(1, 40), split=splits_st, ordered=st.booleans(), seed=st.integers(0, 2**32))
def test_splits_are_disjoint_cover_every_pair_and_targets_are_sums(max_operand, split, ordered, seed):
    cfg = TaskConfig(max_operand=max_operand, split=split, ordered=ordered)
    splits = make_splits(cfg, seed)
    vocab = Vocab(cfg.n_numbers)
    seen = []
    for name in SPLITS:
        a, b = vocab.decode(splits[name].tokens)
        np.testing.assert_array_equal(splits[name].targets, a + b)
        assert np.all(splits[name].targets < cfg.n_numbers)
        seen += [(int(x), int(y)) if ordered else tuple(sorted((int(x), int(y)))) for x, y in zip(a, b)]
    expected = {tuple(p) for p in all_pairs(max_operand, ordered)}
    assert len(seen) == len(set(seen)) == len(expected)  # disjoint, each pair once
    assert set(seen) == expected
    n = len(expected)
    assert abs(len(splits["train"]) - split[0] * n) <= 1


@settings(max_examples=20, deadline=None)
@given(max_operand=st.integers(1, 30), seed=st.integers(0, 2**32))
def test_split_depends_only_on_the_seed(max_operand, seed):
    cfg = TaskConfig(max_operand=max_operand)
    one, two = make_splits(cfg, seed), make_splits(cfg, seed)
    for name in SPLITS:
        np.testing.assert_array_equal(one[name].tokens, two[name].tokens)
    other = make_splits(cfg, seed + 1)
    if len(all_pairs(max_operand, False)) > 6:
        assert any(not np.array_equal(one[s].tokens, other[s].tokens) for s in SPLITS)


@settings(max_examples=50, deadline=None)
@given(p=st.integers(2, 600), data=st.data())
def test_encode_decode_round_trip(p, data):
    vocab = Vocab(p)
    n = data.draw(st.integers(0, 20))
    a = np.array(data.draw(st.lists(st.integers(0, p - 1), min_size=n, max_size=n)), dtype=np.int64)
    b = np.array(data.draw(st.lists(st.integers(0, p - 1), min_size=n, max_size=n)), dtype=np.int64)
    tokens = vocab.encode(a, b)
    assert tokens.shape == (n, 4)
    a2, b2 = vocab.decode(tokens)
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(b, b2)


def test_worked_example_from_the_docstring():
    vocab = Vocab(121)
    assert vocab.encode([15], [43]).tolist() == [[15, 121, 43, 122]]
    assert vocab.to_text([15, 121, 43, 122]) == "15 + 43 ="
    assert vocab.size == 123


def test_unordered_pairs_appear_in_both_orders_across_the_split():
    splits = make_splits(TaskConfig(max_operand=30), seed=0)
    a, b = Vocab(61).decode(np.concatenate([splits[s].tokens for s in SPLITS]))
    assert 0.4 < np.mean(a > b) / np.mean(a != b) < 0.6  # the order is drawn, not fixed


def test_decode_rejects_foreign_sequences():
    with pytest.raises(DataError):
        Vocab(11).decode([[1, 2, 3, 4]])
    with pytest.raises(DataError):
        Vocab(11).encode([11], [0])


def test_an_empty_training_split_is_a_config_error():
    """No training pair would make every epoch empty: refused up front, naming task.split."""
    with pytest.raises(ConfigError, match=r"task\.split: .* leaves the training split empty \(val 33, test 33\)"):
        make_splits(TaskConfig(max_operand=10, split=[0.001, 0.5, 0.499]), 0)
