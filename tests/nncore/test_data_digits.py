"""nncore.data.digits: scikit-learn's 8x8 digits, scaled by 1/16 and split by make_splits."""

from __future__ import annotations

import numpy as np
import pytest

from nncore.data.digits import load_digits
from nncore.data.errors import DatasetError

sk_datasets = pytest.importorskip("sklearn.datasets")  # a third-party dependency, not the project's own module


def test_load_digits_shapes_scaling_one_hot():
    d = load_digits()
    assert d.name == "digits"
    assert d.describe() == {
        "name": "digits", "n_train": 1500, "n_eval": 297, "n_test": 0,
        "n_features": 64, "n_classes": 10,
    }
    assert d.train.X.shape == (1500, 64) and d.eval.X.shape == (297, 64) and d.test is None
    assert d.train.Y.shape == (1500, 10) and d.train.labels.dtype == np.int64
    allX = np.concatenate([d.train.X, d.eval.X])
    assert allX.dtype == np.float64 and allX.min() == 0.0 and allX.max() == 1.0
    np.testing.assert_array_equal(allX * 16, np.round(allX * 16))  # exactly k/16
    np.testing.assert_array_equal(d.train.Y.sum(axis=1), 1.0)
    np.testing.assert_array_equal(d.train.Y.argmax(axis=1), d.train.labels)
    assert set(np.unique(d.train.labels)) == set(range(10))


def test_load_digits_seeded_reproducible_and_seeds_differ():
    a = load_digits(seed=3, dtype=np.float32)
    b = load_digits(seed=3, dtype=np.float32)
    c = load_digits(seed=4, dtype=np.float32)
    assert a.train.X.dtype == np.float32 and a.train.Y.dtype == np.float32
    np.testing.assert_array_equal(a.train.X, b.train.X)
    np.testing.assert_array_equal(a.eval.labels, b.eval.labels)
    assert not np.array_equal(a.train.labels, c.train.labels)
    sk = sk_datasets.load_digits()
    perm = np.random.default_rng(3).permutation(1797)
    np.testing.assert_array_equal(a.train.labels, sk.target[perm[:1500]])
    np.testing.assert_allclose(a.train.X, sk.data[perm[:1500]] / 16.0, rtol=1e-6)


def test_load_digits_shuffle_false_is_data_order():
    sk = sk_datasets.load_digits()
    d = load_digits(n_train=1000, n_eval=500, n_test=297, shuffle=False)
    np.testing.assert_array_equal(d.train.X, sk.data[:1000] / 16.0)
    np.testing.assert_array_equal(d.eval.labels, sk.target[1000:1500])
    np.testing.assert_array_equal(d.test.labels, sk.target[1500:])


def test_load_digits_too_many_rows():
    with pytest.raises(DatasetError, match=r"exceeds the 1797 rows"):
        load_digits(n_train=1500, n_eval=298)


def test_digits_arrays_equal_sklearn_and_skip_importing_it():
    from nncore.data import digits

    sk = sk_datasets.load_digits()
    pixels, labels = digits.digits_arrays()
    assert pixels.dtype == np.float64 and labels.dtype == np.int64
    np.testing.assert_array_equal(pixels, sk.data)
    np.testing.assert_array_equal(labels, sk.target)
    import subprocess
    import sys

    code = ("import sys; from nncore.data.digits import load_digits; d = load_digits(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # the bundled CSV was read with NumPy alone


@pytest.mark.parametrize("content", [None, "1,2,3\n", "\n".join(["17," * 64 + "0"] * 1797),
                                     "\n".join(["0," * 64 + "10"] * 1797), b"not gzip"])
def test_digits_arrays_fall_back_to_sklearn_when_the_file_is_missing_or_not_the_digits(tmp_path, monkeypatch,
                                                                                       content):
    import gzip

    from nncore.data import digits

    if content is None:
        monkeypatch.setattr(digits, "_bundled_csv", lambda: None)
    else:
        path = tmp_path / "digits.csv.gz"
        path.write_bytes(content if isinstance(content, bytes) else gzip.compress(content.encode()))
        assert digits._read_csv(path) is None
        monkeypatch.setattr(digits, "_bundled_csv", lambda: path)
    sk = sk_datasets.load_digits()
    pixels, labels = digits.digits_arrays()
    np.testing.assert_array_equal(pixels, sk.data)
    np.testing.assert_array_equal(labels, sk.target)
    d = load_digits(seed=5)
    np.testing.assert_array_equal(d.train.labels, sk.target[np.random.default_rng(5).permutation(1797)[:1500]])
