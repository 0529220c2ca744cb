"""nncore.datasets: the stable public facade over nncore.data.

The behaviour of each loader is tested beside its implementation module
(test_data_*.py); here: the public names exist, are the implementation's
objects (not copies that could drift), and nothing else leaks out.
"""

from __future__ import annotations

import numpy as np
import pytest

import nncore.datasets as ds
from nncore.data import digits, download, errors, idx, mnist_idx, mnist_pickle, splits

#: The public API of nncore.datasets before the split into nncore.data, name -> implementing module.
PUBLIC = {
    "MNIST_FILES": download,
    "Dataset": splits,
    "DatasetError": errors,
    "Split": splits,
    "download_mnist": download,
    "load_digits": digits,
    "load_mnist": mnist_idx,
    "load_mnist_download": mnist_idx,
    "load_mnist_idx": mnist_idx,
    "load_mnist_pkl": mnist_pickle,
    "make_splits": splits,
    "one_hot": splits,
    "read_idx": idx,
    "sha256_file": download,
}


def test_all_lists_exactly_the_public_names():
    assert sorted(ds.__all__) == sorted(PUBLIC)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_name_is_the_implementation_object(name):
    assert getattr(ds, name) is getattr(PUBLIC[name], name)


def test_names_imported_elsewhere_in_the_repository():
    # sweeps/, benchmarks/, nncore/cli.py and the tests import these from nncore.datasets
    from nncore.datasets import (  # noqa: F401
        Dataset, DatasetError, load_digits, load_mnist, load_mnist_download, load_mnist_idx,
    )


def test_facade_one_hot_raises_dataset_error_and_encodes():
    np.testing.assert_array_equal(ds.one_hot([1, 0], 2), [[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(ds.DatasetError, match=r"expected values in \[0, 2\), got 2 at index 0"):
        ds.one_hot([2], 2)
