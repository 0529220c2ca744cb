"""Class labels and one-hot targets: the one encoder every nncore module uses.

For ``n`` samples and ``K`` classes, the one-hot encoding of the labels
``y_i in {0, ..., K-1}`` is the ``(n, K)`` matrix

    Y[i, k] = 1 if k == y_i else 0

so every row sums to 1 and ``Y.argmax(axis=1) == y``.

* :func:`as_labels` -- validate class indices, return ``(n,)`` ``int64``.
* :func:`one_hot` -- labels -> ``(n, K)`` one-hot matrix in a floating dtype.
* :func:`as_targets` -- what the training loop accepts as targets: integer
  labels ``(n,)`` (one-hot encoded here) or an ``(n, K)`` target matrix used
  as given.

Errors are ``ValueError`` by default; data loaders pass ``error=DatasetError``
so their callers see one exception type. Messages name the argument, what was
expected and what was found (the first offending label and its index).

Imports only NumPy and the standard library.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nncore.checks import check_int

__all__ = ["as_labels", "as_targets", "one_hot"]


def as_labels(labels: Any, *, name: str = "labels", error: type[Exception] = ValueError) -> np.ndarray:
    """``labels`` as a 1-D ``int64`` array of class indices (range not checked).

    Integer dtypes are accepted, and floating arrays whose values are all
    finite whole numbers (labels read from a CSV file); anything else raises
    ``error`` naming ``name``.
    """
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise error(f"{name}: expected a 1-D array of class indices, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        integral_floats = arr.dtype.kind == "f" and bool(np.all(np.isfinite(arr))) and bool(
            np.all(arr == np.round(arr)))
        if not integral_floats:
            raise error(f"{name}: expected integer class indices, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def one_hot(
    labels: Any, n_classes: int, dtype: Any = np.float64, *, name: str = "labels",
    error: type[Exception] = ValueError,
) -> np.ndarray:
    """One-hot encode ``labels`` (see :func:`as_labels`) into an ``(n, n_classes)`` array.

    ``out[i, labels[i]] = 1``, every other entry ``0``, in ``dtype``.

    Raises:
        error: ``n_classes`` is not an int ``>= 1``; ``labels`` is not 1-D
            integer; a label lies outside ``[0, n_classes)`` (the message
            names the first offending value, its index and how many there are).
    """
    n_classes = check_int(n_classes, "n_classes", "one_hot", low=1, error=error)
    lab = as_labels(labels, name=name, error=error)
    bad = np.flatnonzero((lab < 0) | (lab >= n_classes))
    if bad.size:
        i = int(bad[0])
        raise error(
            f"{name}: expected values in [0, {n_classes}), got {int(lab[i])} at index {i} "
            f"({bad.size} out-of-range label(s))"
        )
    out = np.zeros((lab.shape[0], n_classes), dtype=np.dtype(dtype))
    out[np.arange(lab.shape[0]), lab] = 1
    return out


def as_targets(Y: Any, n_out: int, dtype: Any, name: str = "Y") -> np.ndarray:
    """Targets of shape ``(n, n_out)`` in ``dtype``, C-contiguous.

    A 1-D array must hold integer labels (integer dtype) and is one-hot encoded
    with :func:`one_hot` (its errors are prefixed ``"<name> labels"``); a 2-D
    array must have ``n_out`` columns and is converted, not copied when it
    already has the right dtype and layout.

    Raises:
        ValueError: 1-D non-integer ``Y``, labels outside ``[0, n_out)``, or a
            shape other than ``(n,)`` / ``(n, n_out)``.
    """
    Y = np.asarray(Y)
    if Y.ndim == 1:
        if not np.issubdtype(Y.dtype, np.integer):
            raise ValueError(f"{name} must be integer labels of shape (n,) or one-hot targets of shape "
                             f"(n, {n_out}), got dtype {Y.dtype} with shape {Y.shape}")
        return one_hot(Y, n_out, dtype, name=f"{name} labels")
    if Y.ndim != 2 or Y.shape[1] != n_out:
        raise ValueError(f"{name} must have shape (n, {n_out}) or (n,), got {Y.shape}")
    return np.ascontiguousarray(Y, dtype=dtype)
