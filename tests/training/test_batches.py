"""The batch order shared by the training loop and the toy source."""

import numpy as np
import pytest

from fourier_toy import config
from fourier_toy.training.batches import EpochBatches


def test_an_epoch_visits_every_example_once_in_the_seeds_order():
    batches = EpochBatches(10, 4, seed=5, stream=config.RNG_EPOCH)
    assert batches.steps_per_epoch == 3
    steps = [batches.take(s) for s in range(3)]
    assert [s.shape for s in steps] == [(1, 4), (1, 4), (1, 2)]  # the last batch holds the 2 left over
    epoch0 = np.concatenate([s[0] for s in steps])
    np.testing.assert_array_equal(epoch0, np.random.default_rng([5, config.RNG_EPOCH, 0]).permutation(10))
    epoch1 = np.concatenate([batches.take(s)[0] for s in range(3, 6)])
    np.testing.assert_array_equal(epoch1, np.random.default_rng([5, config.RNG_EPOCH, 1]).permutation(10))


def test_several_steps_at_once_are_the_same_batches():
    batches = EpochBatches(40, 8, seed=0, stream=config.RNG_TOY_EPOCH)
    fresh = EpochBatches(40, 8, seed=0, stream=config.RNG_TOY_EPOCH)
    together = batches.take(6, 3)  # epoch 1, batches 1..3
    assert together.shape == (3, 8)
    for j in range(3):
        np.testing.assert_array_equal(together[j], fresh.take(6 + j)[0])
    with pytest.raises(ValueError, match="full batches"):
        batches.take(8, 3)  # only 2 batches left in the epoch


def test_the_seed_sub_streams_are_distinct():
    ids = [config.RNG_SPLITS, config.RNG_INIT, config.RNG_EMBED, config.RNG_EPOCH, config.RNG_TOY_INIT,
           config.RNG_TOY_EPOCH]
    assert len(set(ids)) == len(ids)
