"""nncore.data.errors: one exception type, a ValueError, from every loader and for every kind of problem."""

from __future__ import annotations

import numpy as np
import pytest

from nncore.data import digits, download, idx, mnist_idx, mnist_pickle, splits
from nncore.data.errors import DatasetError


def test_dataset_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)
    assert not issubclass(ValueError, DatasetError)


def _bad_idx(tmp_path):
    p = tmp_path / "bad.idx"
    p.write_bytes(b"PK\x03\x04" + bytes(16))
    return p


CASES = {
    "make_splits size": lambda tmp: splits.make_splits(np.zeros((2, 2)), [0, 1], n_train=0),
    "make_splits data": lambda tmp: splits.make_splits(np.full((2, 2), np.nan), [0, 1], n_train=1),
    "one_hot": lambda tmp: splits.one_hot([5], 3),
    "digits size": lambda tmp: digits.load_digits(n_train=-1),
    "read_idx": lambda tmp: idx.read_idx(_bad_idx(tmp)),
    "load_mnist source": lambda tmp: mnist_idx.load_mnist(tmp / "missing", n_train=1),
    "load_mnist_download use": lambda tmp: mnist_idx.load_mnist_download("http://127.0.0.1:9", tmp, use="x"),
    "download_mnist url": lambda tmp: download.download_mnist("nowhere", tmp),
    "load_mnist_pkl dtype": lambda tmp: mnist_pickle.load_mnist_pkl(tmp / "x.pkl", dtype="int8"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_loader_raises_dataset_error(tmp_path, name):
    with pytest.raises(DatasetError) as info:
        CASES[name](tmp_path)
    assert type(info.value) is DatasetError  # not a bare ValueError from a helper
