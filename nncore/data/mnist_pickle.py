"""Michael Nielsen's ``mnist.pkl.gz``: the pickled, pre-split MNIST of *Neural Networks and Deep Learning*.

The file is ``gzip(pickle((training, validation, test)))`` written by
Python 2; each part is ``(X, y)`` with ``X`` float32 ``(n, 784)`` already in
``[0, 1]`` and ``y`` int64 ``(n,)`` in ``0..9`` (50,000 / 10,000 / 10,000 rows
in the original). Unpickling can execute arbitrary code: load trusted files
only.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from nncore import encoding
from nncore.checks import check_float_dtype
from nncore.data.compression import is_gzip
from nncore.data.errors import DatasetError
from nncore.data.splits import Dataset, Split, build_split, scale_divisor

__all__ = ["load_mnist_pkl"]


def load_mnist_pkl(path: str | Path, *, dtype: Any = np.float64) -> Dataset:
    """Michael Nielsen's ``mnist.pkl.gz``: pickled ``(training, validation, test)``.

    Each part is ``(X, y)`` with ``X`` float32 ``(n, 784)`` in ``[0, 1]`` and
    ``y`` int64 ``(n,)``; they become the ``train``, ``eval`` and ``test``
    splits (an empty part gives ``None``). The file is read with
    ``pickle.load(f, encoding="latin1")`` (it was written by Python 2); it is
    gunzipped when it starts with the gzip magic bytes.

    Warning:
        Unpickling can execute arbitrary code: only use this on trusted
        files.

    Raises:
        DatasetError: the file is truncated/corrupted or does not have the
            expected structure.
    """
    path = Path(path)
    dt = check_float_dtype(dtype, "dtype", "load_mnist_pkl", error=DatasetError)
    opener: Any = gzip.open if is_gzip(path) else open
    try:
        with opener(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except Exception as exc:  # EOFError, zlib.error, UnpicklingError, ...: all mean a bad file
        raise DatasetError(
            f"{path}: truncated or corrupted pickle file ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(obj, (tuple, list)) or len(obj) != 3:
        raise DatasetError(
            f"{path}: expected a pickled (training, validation, test) tuple, got "
            f"{type(obj).__name__}" + (f" of length {len(obj)}" if hasattr(obj, "__len__") else "")
        )
    parts: list[Split | None] = []
    for part_name, part in zip(("training", "validation", "test"), obj):
        if not isinstance(part, (tuple, list)) or len(part) != 2:
            raise DatasetError(f"{path}: {part_name} part: expected an (X, y) pair, got {type(part).__name__}")
        X = np.asarray(part[0])
        what = f"{path}: {part_name} part"
        y = encoding.as_labels(part[1], name=f"{what} labels", error=DatasetError)
        if X.ndim != 2 or X.shape[0] != y.shape[0]:
            raise DatasetError(
                f"{what}: expected X of shape (n, n_features) and y of shape (n,), got "
                f"{X.shape} and {y.shape}"
            )
        if y.size and (y.min() < 0 or y.max() > 9):
            i = int(np.flatnonzero((y < 0) | (y > 9))[0])
            raise DatasetError(f"{what} labels: expected values in 0..9, got {int(y[i])} at index {i}")
        if X.shape[0] == 0:
            parts.append(None)
            continue
        divisor = scale_divisor(X, what=f"{what} X", allow_rescale=False)
        parts.append(build_split(X, y, divisor, 10, dt))
    train, eval_, test = parts
    if train is None:
        raise DatasetError(f"{path}: training part: expected at least one row, got 0")
    if any(p is not None and p.X.shape[1] != train.X.shape[1] for p in parts):
        raise DatasetError(
            f"{path}: expected the same number of features in every part, got "
            f"{[p.X.shape[1] for p in parts if p is not None]}"
        )
    return Dataset(name="mnist-pkl", train=train, eval=eval_, test=test)
