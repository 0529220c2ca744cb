"""A sweep's data (``sweeps.engine.data``): the configured data set loaded once, each trial's training rows
a prefix of it.

Oracles: nncore's own loader called directly, and the loaded arrays themselves.
"""

from __future__ import annotations

import numpy as np
import pytest

from nncore import datasets
from sweeps.config import parse_config
from sweeps.engine.data import load_data, trial_data


def test_load_data_is_the_configured_split_and_its_seed_decides_the_rows(sw) -> None:
    cfg = parse_config(sw.merge(sw.BASE_CONFIG, {"data": {"n_test": 50}}))
    data = load_data(cfg.data, cfg.seed)
    assert (data.train.n, data.eval.n, data.test.n) == (300, 100, 50)
    want = datasets.load_digits(n_train=300, n_eval=100, n_test=50, seed=cfg.seed, shuffle=cfg.data.shuffle)
    for got, expected in ((data.train, want.train), (data.eval, want.eval), (data.test, want.test)):
        np.testing.assert_array_equal(got.X, expected.X)
        np.testing.assert_array_equal(got.labels, expected.labels)
    assert data.train.X.dtype == np.float64
    again = load_data(cfg.data, cfg.seed)
    np.testing.assert_array_equal(again.train.labels, data.train.labels)
    other = load_data(cfg.data, cfg.seed + 1)
    assert not np.array_equal(other.train.labels, data.train.labels)


def test_trial_data_is_a_prefix_and_checks_its_range(sw) -> None:
    cfg = parse_config(sw.BASE_CONFIG)
    data = load_data(cfg.data, cfg.seed)
    small = trial_data(data, 40)
    assert small.train.n == 40 and small.eval is data.eval
    np.testing.assert_array_equal(small.train.labels, data.train.labels[:40])
    assert trial_data(data, data.train.n) is data
    for bad in (0, data.train.n + 1, 2.5, True):
        with pytest.raises(ValueError, match=r"n_train must be an int in \[1, 300\]"):
            trial_data(data, bad)
