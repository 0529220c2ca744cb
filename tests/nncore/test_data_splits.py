"""nncore.data.splits: Split/Dataset containers, scaling to [0, 1], and make_splits."""

from __future__ import annotations

import numpy as np
import pytest

from nncore.data.errors import DatasetError
from nncore.data.splits import Dataset, Split, build_split, make_splits, one_hot, scale_divisor

# ---------------------------------------------------------------------------
# containers
# ---------------------------------------------------------------------------


def _split(n: int, n_features: int = 2, n_classes: int = 3) -> Split:
    labels = np.arange(n) % n_classes
    return Split(X=np.zeros((n, n_features)), Y=np.eye(n_classes)[labels], labels=labels)


def test_split_and_dataset_properties():
    d = Dataset("toy", train=_split(4, 5, 3), eval=_split(2, 5, 3))
    assert d.train.n == 4 and d.eval.n == 2
    assert d.n_features == 5 and d.n_classes == 3
    assert d.describe() == {"name": "toy", "n_train": 4, "n_eval": 2, "n_test": 0, "n_features": 5,
                            "n_classes": 3}


@pytest.mark.parametrize(("X", "Y", "labels", "match"), [
    (np.zeros(3), np.zeros((3, 2)), np.zeros(3), r"got shapes \(3,\), \(3, 2\), \(3,\)"),
    (np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((3, 1)), "labels"),
    (np.zeros((3, 2)), np.zeros((2, 2)), np.zeros(3), "same number of rows; got 3, 2, 3"),
    (np.zeros((3, 2)), np.zeros((3, 2)), np.zeros(4), "same number of rows; got 3, 3, 4"),
])
def test_split_rejects_inconsistent_shapes(X, Y, labels, match):
    with pytest.raises(DatasetError, match=match):
        Split(X=X, Y=Y, labels=labels)


# ---------------------------------------------------------------------------
# one_hot (the data-set flavour of nncore.encoding.one_hot) and scaling
# ---------------------------------------------------------------------------


def test_one_hot_values_and_range_error():
    Y = one_hot(np.array([2, 0, 1]), 3, dtype=np.float32)
    assert Y.dtype == np.float32
    np.testing.assert_array_equal(Y, [[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    with pytest.raises(DatasetError, match=r"\[0, 3\).*got 3 at index 1"):
        one_hot(np.array([0, 3]), 3)
    with pytest.raises(DatasetError, match="got -1"):
        one_hot(np.array([-1]), 3)
    with pytest.raises(DatasetError, match="'n_classes' parameter of one_hot"):
        one_hot(np.array([0]), 0)


@pytest.mark.parametrize(("X", "divisor"), [
    (np.array([[0, 255], [7, 9]], dtype=np.uint8), 255.0),  # 8-bit pixels
    (np.array([[0, 3]], dtype=np.int64), 255.0),  # integers are pixels whatever their range in [0, 255]
    (np.array([[True, False]]), 1.0),
    (np.array([[0.0, 0.25], [1.0, 0.5]]), 1.0),  # already in [0, 1]
    (np.array([[0.0, 16.0], [8.0, 4.0]]), 16.0),  # 8x8 digits: divided by their maximum
    (np.zeros((0, 3)), 1.0),
])
def test_scale_divisor(X, divisor):
    assert scale_divisor(X, what="X") == divisor


@pytest.mark.parametrize(("X", "kwargs", "match"), [
    (np.array([[1, 300]]), {}, r"X: integer inputs .* \[0, 255\], got values in \[1, 300\]"),
    (np.array([[-1, 3]]), {}, r"got values in \[-1, 3\]"),
    (np.array([[0.5, np.nan, np.inf]]), {}, "X: expected finite values, got 2 NaN/inf"),
    (np.array([[0.5, -0.25]]), {}, "X: expected non-negative values, got minimum -0.25"),
    (np.array([[0.5, 2.0]]), {"allow_rescale": False}, r"X: expected values in \[0, 1\], got maximum 2.0"),
    (np.array([["a"]]), {}, "X: expected a numeric array"),
])
def test_scale_divisor_errors(X, kwargs, match):
    with pytest.raises(DatasetError, match=match):
        scale_divisor(X, what="X", **kwargs)


def test_build_split_divides_copies_and_encodes():
    X = np.array([[0, 51], [255, 102]], dtype=np.uint8)
    s = build_split(X, np.array([1, 0]), 255.0, 2, np.dtype(np.float32))
    assert s.X.dtype == np.float32 and s.Y.dtype == np.float32 and s.labels.dtype == np.int64
    np.testing.assert_allclose(s.X, [[0.0, 0.2], [1.0, 0.4]], rtol=1e-7)
    np.testing.assert_array_equal(s.Y, [[0, 1], [1, 0]])
    Xf = np.array([[0.5, 0.25]])
    s1 = build_split(Xf, np.array([0]), 1.0, 1, np.dtype(np.float64))
    assert not np.shares_memory(s1.X, Xf)  # divisor 1: still a copy


# ---------------------------------------------------------------------------
# make_splits
# ---------------------------------------------------------------------------


def test_make_splits_shuffle_false_keeps_data_order_and_scales_uint8():
    X = np.arange(10 * 4, dtype=np.uint8).reshape(10, 4)
    labels = np.arange(10) % 3
    d = make_splits(X, labels, n_train=6, n_eval=3, n_test=1, shuffle=False, name="toy")
    assert d.name == "toy"
    np.testing.assert_array_equal(d.train.X, X[:6] / 255.0)
    np.testing.assert_array_equal(d.eval.X, X[6:9] / 255.0)
    np.testing.assert_array_equal(d.test.X, X[9:] / 255.0)
    np.testing.assert_array_equal(d.eval.labels, labels[6:9])
    assert d.train.labels.dtype == np.int64
    assert d.describe() == {
        "name": "toy", "n_train": 6, "n_eval": 3, "n_test": 1, "n_features": 4, "n_classes": 3,
    }


def test_make_splits_shuffle_uses_seeded_permutation_and_partitions_rows():
    X = np.arange(20, dtype=np.float64).reshape(20, 1) / 19.0  # row id encoded in X
    labels = np.arange(20) % 4
    d = make_splits(X, labels, n_train=12, n_eval=5, n_test=3, seed=7)
    perm = np.random.default_rng(7).permutation(20)
    np.testing.assert_array_equal(d.train.X[:, 0], X[perm[:12], 0])
    np.testing.assert_array_equal(d.train.labels, labels[perm[:12]])
    rows = np.concatenate([d.train.X, d.eval.X, d.test.X])[:, 0]
    np.testing.assert_allclose(np.sort(rows), X[:, 0])  # every row exactly once
    np.testing.assert_array_equal(d.test.Y.argmax(axis=1), d.test.labels)


def test_make_splits_flattens_images_and_leaves_extra_rows_unused():
    X = np.arange(5 * 2 * 3, dtype=np.uint8).reshape(5, 2, 3)
    d = make_splits(X, [0, 1, 0, 1, 0], n_train=2, n_eval=1, shuffle=False)
    assert d.n_features == 6 and d.train.n + d.eval.n == 3 and d.test is None
    np.testing.assert_array_equal(d.eval.X, X[2].reshape(1, 6) / 255.0)


def test_make_splits_zero_sizes_give_none_and_dtype_is_respected():
    X = np.random.default_rng(0).random((5, 3))
    d = make_splits(X, np.zeros(5, int), n_train=5, n_classes=2, shuffle=False, dtype=np.float32)
    assert d.eval is None and d.test is None
    assert d.train.X.dtype == np.float32 and d.train.Y.dtype == np.float32
    assert d.n_classes == 2 and d.train.n == 5
    np.testing.assert_allclose(d.train.X, X.astype(np.float32))  # already in [0, 1]: unscaled


def test_make_splits_float_above_one_is_divided_by_max():
    X = np.array([[0.0, 16.0], [8.0, 4.0]])
    d = make_splits(X, [0, 1], n_train=2, shuffle=False)
    np.testing.assert_array_equal(d.train.X, X / 16.0)


def test_make_splits_one_divisor_for_all_splits():
    # the maximum (16) is in the eval row: the training rows are still divided by 16, not by their own max
    X = np.array([[2.0, 4.0], [16.0, 0.0]])
    d = make_splits(X, [0, 1], n_train=1, n_eval=1, shuffle=False)
    np.testing.assert_array_equal(d.train.X, [[0.125, 0.25]])


def test_make_splits_n_classes_defaults_to_max_over_all_rows():
    d = make_splits(np.zeros((4, 2)), [0, 0, 0, 4], n_train=2, n_eval=2, shuffle=False)
    assert d.train.Y.shape == (2, 5) and d.eval.Y.shape == (2, 5)


def test_make_splits_accepts_integral_float_labels():
    d = make_splits(np.zeros((3, 2)), np.array([2.0, 0.0, 1.0]), n_train=3, shuffle=False)
    assert d.train.labels.tolist() == [2, 0, 1] and d.train.labels.dtype == np.int64


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_train": 0}, r"The 'n_train' parameter of make_splits must be an int in the range \[1, inf\)\. "
                         r"Got 0 instead\."),
        ({"n_train": 2, "n_eval": -1}, r"'n_eval' parameter .* \[0, inf\)\. Got -1"),
        ({"n_train": 2, "n_test": -3}, r"'n_test' parameter .* Got -3"),
        ({"n_train": 2.5}, "'n_train' parameter .* Got 2.5"),
        ({"n_train": True}, "'n_train' parameter .* Got True"),
        ({"n_train": 6, "n_eval": 3, "n_test": 2}, r"n_train \+ n_eval \+ n_test = .* 11 exceeds the 10 rows"),
        ({"n_train": 11}, r"n_train .*exceeds the 10 rows"),
        ({"n_train": 5, "n_classes": 2}, r"labels: expected values in \[0, 2\).*got 2"),
        ({"n_train": 5, "n_classes": 0}, r"'n_classes' parameter of make_splits"),
        ({"n_train": 5, "dtype": np.int32}, "'dtype' parameter of make_splits must be a floating NumPy dtype"),
    ],
)
def test_make_splits_argument_errors(kwargs, match):
    X = np.random.default_rng(0).random((10, 3))
    labels = np.arange(10) % 3
    with pytest.raises(DatasetError, match=match):
        make_splits(X, labels, **kwargs)


@pytest.mark.parametrize(
    ("X", "labels", "match"),
    [
        (np.array([[0.1, np.nan], [0.2, 0.3]]), [0, 1], "NaN/inf"),
        (np.array([[0.1, np.inf], [0.2, 0.3]]), [0, 1], "NaN/inf"),
        (np.array([[0.1, -0.5], [0.2, 0.3]]), [0, 1], "non-negative"),
        (np.array([[1, 300], [2, 3]]), [0, 1], r"\[0, 255\]"),
        (np.zeros((3, 2)), [0, 1], "X and labels.*3 rows in X and 2 labels"),
        (np.zeros(3), [0, 1, 2], "X: expected shape"),
        (np.zeros((2, 2)), [0.5, 1], "labels: expected integer"),
        (np.zeros((2, 2)), [0, -1], "labels: expected values >= 0, got -1"),
        (np.zeros((2, 2)), [[0], [1]], "labels: expected a 1-D array"),
    ],
)
def test_make_splits_data_errors(X, labels, match):
    with pytest.raises(DatasetError, match=match):
        make_splits(X, labels, n_train=1)
