"""Data set containers and the train / eval / test split of an ``(X, labels)`` pair.

A :class:`Dataset` holds a training :class:`Split` and optional eval/test
splits; each split holds

* ``X`` -- ``(n, n_features)`` inputs scaled to ``[0, 1]`` in a floating dtype,
* ``Y`` -- ``(n, n_classes)`` one-hot targets in the same dtype
  (:func:`nncore.encoding.one_hot`),
* ``labels`` -- ``(n,)`` ``int64`` class indices, ``Y[i, labels[i]] == 1``.

:func:`make_splits` cuts any ``(X, labels)`` pair into such splits (seeded
shuffle or data order) with one scaling divisor shared by all splits; every
loader in :mod:`nncore.data` ends with it or with :func:`build_split`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from nncore import encoding
from nncore.checks import check_float_dtype, check_int
from nncore.data.errors import DatasetError

__all__ = ["Dataset", "Split", "build_split", "make_splits", "one_hot", "scale_divisor"]




@dataclass(frozen=True)
class Split:
    """One split of a data set.

    Attributes:
        X: ``(n, n_features)`` inputs in ``[0, 1]`` (floating dtype).
        Y: ``(n, n_classes)`` one-hot targets, same dtype as ``X``.
        labels: ``(n,)`` ``int64`` class indices, ``Y[i, labels[i]] == 1``.
    """

    X: np.ndarray
    Y: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.X.ndim != 2 or self.Y.ndim != 2 or self.labels.ndim != 1:
            raise DatasetError(
                "Split expects X (n, n_features), Y (n, n_classes) and labels "
                f"(n,); got shapes {self.X.shape}, {self.Y.shape}, "
                f"{self.labels.shape}"
            )
        n = self.X.shape[0]
        if self.Y.shape[0] != n or self.labels.shape[0] != n:
            raise DatasetError(
                "Split expects X, Y and labels with the same number of rows; "
                f"got {n}, {self.Y.shape[0]}, {self.labels.shape[0]}"
            )

    @property
    def n(self) -> int:
        """Number of samples (rows)."""
        return int(self.X.shape[0])


@dataclass(frozen=True)
class Dataset:
    """A named data set with a training split and optional eval/test splits."""

    name: str
    train: Split
    eval: Split | None = None
    test: Split | None = None

    @property
    def n_features(self) -> int:
        """Number of input features (columns of ``X``)."""
        return int(self.train.X.shape[1])

    @property
    def n_classes(self) -> int:
        """Number of classes (columns of ``Y``)."""
        return int(self.train.Y.shape[1])

    def describe(self) -> dict[str, Any]:
        """Summary suitable for logging: name, split sizes, features, classes."""
        return {
            "name": self.name,
            "n_train": self.train.n,
            "n_eval": self.eval.n if self.eval is not None else 0,
            "n_test": self.test.n if self.test is not None else 0,
            "n_features": self.n_features,
            "n_classes": self.n_classes,
        }


# ---------------------------------------------------------------------------
# Building splits
# ---------------------------------------------------------------------------


def one_hot(labels: np.ndarray, n_classes: int, dtype: Any = np.float64) -> np.ndarray:
    """One-hot encode integer ``labels`` into an ``(n, n_classes)`` array.

    ``out[i, labels[i]] = 1`` and ``0`` elsewhere: :func:`nncore.encoding.one_hot`
    with its errors raised as :class:`DatasetError`.

    Raises:
        DatasetError: ``n_classes < 1``, ``labels`` is not 1-D integer, or a
            label lies outside ``[0, n_classes)`` (the message names the first
            offending value and its index).
    """
    return encoding.one_hot(labels, n_classes, dtype, error=DatasetError)


def scale_divisor(X: np.ndarray, *, what: str, allow_rescale: bool = True) -> float:
    """Divisor ``s`` such that ``X / s`` lies in ``[0, 1]`` (see :func:`make_splits`).

    Integer ``X``: ``255`` (values must lie in ``[0, 255]``); boolean: ``1``;
    floating: ``1`` when already in ``[0, 1]``, else ``max(X)`` (or an error
    when ``allow_rescale`` is false). ``what`` names ``X`` in error messages.

    Raises:
        DatasetError: integers outside ``[0, 255]``, NaN/inf, negative values,
            a non-numeric dtype, or floats above 1 with ``allow_rescale=False``.
    """
    if X.size == 0:
        return 1.0
    kind = X.dtype.kind
    if kind == "b":
        return 1.0
    if kind in "iu":
        lo, hi = int(X.min()), int(X.max())
        if lo < 0 or hi > 255:
            raise DatasetError(
                f"{what}: integer inputs are taken as 8-bit pixels and must lie in "
                f"[0, 255], got values in [{lo}, {hi}]"
            )
        return 255.0
    if kind != "f":
        raise DatasetError(f"{what}: expected a numeric array, got dtype {X.dtype}")
    if not np.all(np.isfinite(X)):
        n_bad = int(np.count_nonzero(~np.isfinite(X)))
        raise DatasetError(f"{what}: expected finite values, got {n_bad} NaN/inf value(s)")
    lo, hi = float(X.min()), float(X.max())
    if lo < 0.0:
        raise DatasetError(f"{what}: expected non-negative values, got minimum {lo}")
    if hi <= 1.0:
        return 1.0
    if not allow_rescale:
        raise DatasetError(f"{what}: expected values in [0, 1], got maximum {hi}")
    return hi


def build_split(
    X: np.ndarray, labels: np.ndarray, divisor: float, n_classes: int, dtype: np.dtype
) -> Split:
    """A :class:`Split` with ``X = X / divisor`` (copied, in ``dtype``) and one-hot ``Y``.

    ``labels`` must already be validated 1-D integers (``Y`` is checked for
    the range ``[0, n_classes)``, raising :class:`DatasetError`).
    """
    Xs = X.astype(dtype, copy=True)
    if divisor != 1.0:
        Xs /= dtype.type(divisor)
    return Split(X=Xs, Y=one_hot(labels, n_classes, dtype), labels=labels.astype(np.int64))


def make_splits(
    X: np.ndarray,
    labels: np.ndarray,
    *,
    n_train: int,
    n_eval: int = 0,
    n_test: int = 0,
    seed: int | None = 0,
    shuffle: bool = True,
    n_classes: int | None = None,
    dtype: Any = np.float64,
    name: str = "custom",
) -> Dataset:
    """Cut ``(X, labels)`` into train / eval / test splits.

    Rows are drawn without replacement: with ``shuffle=True`` through the
    permutation ``np.random.default_rng(seed).permutation(n_rows)`` (so a seed
    always gives the same splits); with ``shuffle=False`` in data order -- the
    first ``n_train`` rows train, the next ``n_eval`` eval, the next
    ``n_test`` test. On the 10,000-row MNIST test file ``n_train=8000,
    n_eval=2000, shuffle=False`` is the usual "first 8,000 train / last 2,000
    eval" split. Rows beyond ``n_train + n_eval + n_test`` are unused.

    Inputs with more than two dimensions (e.g. ``(n, 28, 28)`` images) are
    flattened to ``(n, n_features)``. Scaling to ``[0, 1]`` uses one divisor
    for the whole of ``X`` so all splits share it:

    * integer ``X`` (8-bit images) must lie in ``[0, 255]`` and is divided by
      255;
    * boolean ``X`` is converted to 0/1;
    * floating ``X`` must be finite and non-negative; values already in
      ``[0, 1]`` are kept, otherwise ``X`` is divided by its maximum (the
      8x8 digits, ``0..16``, would be divided by 16 --
      :func:`nncore.data.digits.load_digits` does that division itself).

    Args:
        X: ``(n_rows, ...)`` inputs.
        labels: ``(n_rows,)`` integer class indices (``>= 0``).
        n_train: training rows, ``>= 1``.
        n_eval: evaluation rows, ``>= 0`` (``eval`` is ``None`` when 0).
        n_test: test rows, ``>= 0`` (``test`` is ``None`` when 0).
        seed: seed of the shuffling permutation (ignored if not ``shuffle``).
        shuffle: shuffle before splitting.
        n_classes: number of classes; default ``labels.max() + 1`` over all
            rows (not just the selected ones), so every split has the same
            one-hot width.
        dtype: floating dtype of ``X`` and ``Y``.
        name: the returned :class:`Dataset`'s name.

    Raises:
        DatasetError: bad sizes (the message names the arguments and the row
            count), ``X``/``labels`` length mismatch, NaN/inf or negative
            inputs, labels outside ``[0, n_classes)``, non-floating ``dtype``.
    """
    owner = "make_splits"
    dt = check_float_dtype(dtype, "dtype", owner, error=DatasetError)
    n_train = check_int(n_train, "n_train", owner, low=1, error=DatasetError)
    n_eval = check_int(n_eval, "n_eval", owner, low=0, error=DatasetError)
    n_test = check_int(n_test, "n_test", owner, low=0, error=DatasetError)
    X = np.asarray(X)
    if X.ndim < 2:
        raise DatasetError(f"X: expected shape (n_rows, n_features), got shape {X.shape}")
    if X.ndim > 2:
        X = X.reshape(X.shape[0], -1)
    lab = encoding.as_labels(labels, error=DatasetError)
    n_rows = X.shape[0]
    if lab.shape[0] != n_rows:
        raise DatasetError(
            f"X and labels: expected the same number of rows, got {n_rows} rows in X "
            f"and {lab.shape[0]} labels"
        )
    total = n_train + n_eval + n_test
    if total > n_rows:
        raise DatasetError(
            f"n_train + n_eval + n_test = {n_train} + {n_eval} + {n_test} = {total} "
            f"exceeds the {n_rows} rows available"
        )
    if lab.size and lab.min() < 0:
        i = int(np.argmin(lab))
        raise DatasetError(f"labels: expected values >= 0, got {int(lab[i])} at index {i}")
    if n_classes is None:
        n_classes = int(lab.max()) + 1
    n_classes = check_int(n_classes, "n_classes", owner, low=1, error=DatasetError)
    if lab.max() >= n_classes:
        i = int(np.argmax(lab))
        raise DatasetError(
            f"labels: expected values in [0, {n_classes}) (n_classes={n_classes}), "
            f"got {int(lab[i])} at index {i}"
        )
    divisor = scale_divisor(X, what="X")

    order = np.random.default_rng(seed).permutation(n_rows)[:total] if shuffle else None
    bounds = (0, n_train, n_train + n_eval, total)
    splits: list[Split | None] = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi == lo:
            splits.append(None)
            continue
        if order is not None:
            idx = order[lo:hi]
            Xi, li = X[idx], lab[idx]
        else:  # contiguous slices: no fancy-indexing copy of the source rows
            Xi, li = X[lo:hi], lab[lo:hi]
        splits.append(build_split(Xi, li, divisor, n_classes, dt))
    train, eval_, test = splits
    assert train is not None
    return Dataset(name=name, train=train, eval=eval_, test=test)

