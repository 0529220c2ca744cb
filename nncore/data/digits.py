"""scikit-learn's bundled 8x8 handwritten digits as a :class:`~nncore.data.splits.Dataset`.

1,797 samples, 64 features (pixel values ``0..16``, divided by ``16`` so the
inputs are ``k/16`` in ``[0, 1]``), 10 classes. scikit-learn is imported inside
:func:`load_digits` only, so importing this module needs NumPy alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nncore.data.splits import Dataset, make_splits

__all__ = ["load_digits"]


def load_digits(
    *,
    n_train: int = 1500,
    n_eval: int = 297,
    n_test: int = 0,
    seed: int | None = 0,
    shuffle: bool = True,
    dtype: Any = np.float64,
) -> Dataset:
    """scikit-learn's 8x8 handwritten digits: 1,797 samples, 64 features, 10 classes.

    Pixel values ``0..16`` are divided by ``16.0``. Splits are made by
    :func:`make_splits` (shuffled with ``seed`` by default). scikit-learn is
    imported here, not at module import.

    Raises:
        ImportError: scikit-learn is not installed.
        DatasetError: see :func:`make_splits`.
    """
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "nncore.datasets.load_digits needs scikit-learn (it ships the digits data); "
            "install it with `pip install scikit-learn`, or use another loader"
        ) from exc
    bunch = _sk_load_digits()
    X = np.asarray(bunch.data, dtype=np.float64) / 16.0
    return make_splits(
        X,
        np.asarray(bunch.target),
        n_train=n_train,
        n_eval=n_eval,
        n_test=n_test,
        seed=seed,
        shuffle=shuffle,
        n_classes=10,
        dtype=dtype,
        name="digits",
    )
