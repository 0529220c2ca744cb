"""nncore.encoding: labels -> one-hot targets, the single encoder used by the data loaders and training."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import nncore.encoding as enc
from nncore.data.errors import DatasetError
from nncore.encoding import as_labels, as_targets, one_hot


def test_one_hot_by_hand():
    Y = one_hot([2, 0, 1, 2], 4)
    assert Y.dtype == np.float64 and Y.shape == (4, 4)
    assert Y.tolist() == [[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_hot_rows_sum_to_one_and_argmax_is_the_label(dtype):
    labels = np.random.default_rng(0).integers(0, 7, size=50)
    Y = one_hot(labels, 7, dtype)
    assert Y.dtype == dtype
    np.testing.assert_array_equal(Y.sum(axis=1), 1)
    np.testing.assert_array_equal(Y.argmax(axis=1), labels)
    assert np.count_nonzero(Y) == 50


def test_one_hot_of_no_labels():
    assert one_hot(np.zeros(0, int), 3).shape == (0, 3)


def test_one_hot_out_of_range_names_first_value_index_and_count():
    with pytest.raises(ValueError, match=r"^labels: expected values in \[0, 3\), got 3 at index 1 "
                                         r"\(2 out-of-range label\(s\)\)$"):
        one_hot([0, 3, 1, -1], 3)
    with pytest.raises(DatasetError, match=r"^y: expected values in \[0, 2\), got -1 at index 0"):
        one_hot([-1], 2, name="y", error=DatasetError)


@pytest.mark.parametrize("n_classes", [0, -1, 2.0, True])
def test_one_hot_n_classes_must_be_a_positive_int(n_classes):
    with pytest.raises(ValueError, match="The 'n_classes' parameter of one_hot must be an int"):
        one_hot([0], n_classes)


def test_as_labels_accepts_integers_and_integral_floats():
    for raw in ([1, 2], np.array([1, 2], np.uint8), np.array([1.0, 2.0])):
        out = as_labels(raw)
        assert out.dtype == np.int64 and out.tolist() == [1, 2]


@pytest.mark.parametrize(("raw", "match"), [
    (np.array([0.5, 1.0]), "expected integer class indices, got dtype float64"),
    (np.array([np.nan, 1.0]), "expected integer class indices"),
    (np.array([True, False]), "got dtype bool"),
    (np.array(["a"]), "expected integer class indices"),
    (np.zeros((2, 1), int), r"expected a 1-D array of class indices, got shape \(2, 1\)"),
    (np.int64(3), r"got shape \(\)"),
])
def test_as_labels_rejects(raw, match):
    with pytest.raises(ValueError, match=match):
        as_labels(raw)


def test_as_targets_encodes_integer_labels():
    Y = as_targets(np.array([1, 0]), 3, np.float32)
    assert Y.dtype == np.float32 and Y.tolist() == [[0, 1, 0], [1, 0, 0]]


def test_as_targets_keeps_a_target_matrix_without_copying():
    T = np.array([[0.2, 0.8], [1.0, 0.0]])
    out = as_targets(T, 2, np.float64)
    assert out is T or np.shares_memory(out, T)
    out32 = as_targets(T, 2, np.float32)
    assert out32.dtype == np.float32 and out32.flags.c_contiguous
    np.testing.assert_allclose(out32, T)
    assert as_targets(np.asfortranarray(T), 2, np.float64).flags.c_contiguous


@pytest.mark.parametrize(("Y", "match"), [
    (np.array([0.0, 1.0]), r"^Y must be integer labels of shape \(n,\) or one-hot targets of shape \(n, 3\)"),
    (np.array([0, 3]), r"^Y labels: expected values in \[0, 3\), got 3 at index 1"),
    (np.zeros((2, 4)), r"^Y must have shape \(n, 3\) or \(n,\), got \(2, 4\)"),
    (np.zeros((2, 3, 1)), r"got \(2, 3, 1\)"),
])
def test_as_targets_errors(Y, match):
    with pytest.raises(ValueError, match=match):
        as_targets(Y, 3, np.float64)


def test_every_one_hot_in_nncore_goes_through_this_encoder(monkeypatch):
    """Replacing encoding.one_hot is seen by the data loaders, the training loop and the gradient check."""
    from nncore import Network, datasets, gradient_check

    train_module = importlib.import_module("nncore.train")  # ``nncore.train`` is also the function
    calls = []
    original = enc.one_hot

    def spy(*args, **kwargs):
        calls.append(kwargs.get("name", "labels"))
        return original(*args, **kwargs)

    monkeypatch.setattr(enc, "one_hot", spy)
    datasets.make_splits(np.zeros((3, 2)), [0, 1, 1], n_train=2, n_eval=1)
    datasets.one_hot([0], 1)
    net = Network([2, 2], rng=np.random.default_rng(0))
    train_module.check_data(net, np.zeros((2, 2)), np.array([0, 1]), "training")
    gradient_check(net, np.zeros((1, 2)), np.array([1]))
    assert calls == ["labels", "labels", "labels", "training targets labels", "Y labels"]
