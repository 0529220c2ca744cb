"""nncore.data.mnist_pickle: Nielsen's mnist.pkl.gz, on synthetic files of the same structure."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest

from nncore.data.errors import DatasetError
from nncore.data.mnist_pickle import load_mnist_pkl


def _synthetic_parts(rng: np.random.Generator, sizes=(30, 10, 5)):
    def part(n):
        return rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n).astype(np.int64)

    return tuple(part(n) for n in sizes)


def test_load_mnist_pkl_synthetic(tmp_path):
    parts = _synthetic_parts(np.random.default_rng(0))
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(parts, f, protocol=2)
    d = load_mnist_pkl(path, dtype=np.float32)
    assert d.describe() == {
        "name": "mnist-pkl", "n_train": 30, "n_eval": 10, "n_test": 5,
        "n_features": 784, "n_classes": 10,
    }
    for split, (X, y) in zip((d.train, d.eval, d.test), parts):
        assert split.X.dtype == np.float32 and split.Y.dtype == np.float32
        np.testing.assert_array_equal(split.X, X)  # already in [0, 1]: not rescaled
        np.testing.assert_array_equal(split.labels, y)
        np.testing.assert_array_equal(split.Y.argmax(axis=1), y)
    d64 = load_mnist_pkl(path)
    assert d64.train.X.dtype == np.float64


def test_python2_style_latin1_pickle_and_empty_parts(tmp_path):
    """Lists instead of tuples and an empty test part (None), uncompressed."""
    (Xt, yt), (Xv, yv), _ = _synthetic_parts(np.random.default_rng(2), sizes=(4, 3, 0))
    empty = (np.zeros((0, 784), np.float32), np.zeros(0, np.int64))
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps([[Xt, yt.tolist()], [Xv, yv], empty], protocol=2))
    d = load_mnist_pkl(path)
    assert d.train.n == 4 and d.eval.n == 3 and d.test is None
    np.testing.assert_array_equal(d.train.labels, yt)


def test_load_mnist_pkl_truncated_and_wrong_structure(tmp_path):
    parts = _synthetic_parts(np.random.default_rng(1))
    good = gzip.compress(pickle.dumps(parts, protocol=2))
    cut = tmp_path / "cut.pkl.gz"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError, match=r"cut\.pkl\.gz: truncated or corrupted"):
        load_mnist_pkl(cut)
    two = tmp_path / "two.pkl"  # uncompressed, only two parts
    two.write_bytes(pickle.dumps(parts[:2]))
    with pytest.raises(DatasetError, match=r"two\.pkl: expected a pickled \(training, validation, test\)"):
        load_mnist_pkl(two)
    scaled = tmp_path / "scaled.pkl"
    X, y = parts[0]
    scaled.write_bytes(pickle.dumps(((X * 255, y), parts[1], parts[2])))
    with pytest.raises(DatasetError, match=r"training part X: expected values in \[0, 1\]"):
        load_mnist_pkl(scaled)


@pytest.mark.parametrize(("edit", "match"), [
    (lambda p: ((p[0][0], p[0][1] + 10), p[1], p[2]), r"training part labels: expected values in 0\.\.9, got 1\d"),
    (lambda p: (p[0], (p[1][0][:, :5], p[1][1]), p[2]), "same number of features"),
    (lambda p: (p[0], (p[1][0], p[1][1][:-1]), p[2]), r"validation part: expected X of shape \(n, n_features\)"),
    (lambda p: (p[0], p[1], (p[2][0],)), r"test part: expected an \(X, y\) pair"),
    (lambda p: ((p[0][0][:0], p[0][1][:0]), p[1], p[2]), "training part: expected at least one row, got 0"),
])
def test_malformed_parts_are_named(tmp_path, edit, match):
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps(edit(_synthetic_parts(np.random.default_rng(3)))))
    with pytest.raises(DatasetError, match=match):
        load_mnist_pkl(path)


def test_bad_dtype_is_refused_before_reading(tmp_path):
    with pytest.raises(DatasetError, match="'dtype' parameter of load_mnist_pkl"):
        load_mnist_pkl(tmp_path / "does-not-exist.pkl", dtype=np.int64)
