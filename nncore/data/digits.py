"""scikit-learn's bundled 8x8 handwritten digits as a :class:`~nncore.data.splits.Dataset`.

1,797 samples, 64 features (pixel values ``0..16``, divided by ``16`` so the
inputs are ``k/16`` in ``[0, 1]``), 10 classes. The data is the CSV file scikit-learn
ships (``sklearn/datasets/data/digits.csv.gz``), read with NumPy without importing
scikit-learn (~0.06 s instead of ~0.9 s, most of it importing SciPy: every sweep
worker loads it on its start-up path). Where that file is not found or does not hold
what ``sklearn.datasets.load_digits`` returns (1,797 rows of 64 pixels in ``0..16`` and a
label in ``0..9``), scikit-learn's own loader is used. Importing this module needs NumPy alone.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from nncore.data.splits import Dataset, make_splits

__all__ = ["load_digits", "digits_arrays"]

#: The file scikit-learn's ``load_digits`` reads, relative to the installed ``sklearn`` package.
BUNDLED_CSV = Path("datasets", "data", "digits.csv.gz")
N_SAMPLES, N_PIXELS = 1797, 64


def _bundled_csv() -> Path | None:
    """Where scikit-learn's copy of the digits CSV is installed (without importing scikit-learn), or None."""
    try:
        spec = importlib.util.find_spec("sklearn")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / BUNDLED_CSV
    return path if path.is_file() else None


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """Pixels (float64) and labels (int64) from the bundled CSV, or None if it does not hold the digits."""
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    except (OSError, ValueError, EOFError):
        return None
    if table.shape != (N_SAMPLES, N_PIXELS + 1):
        return None
    pixels, labels = table[:, :N_PIXELS], table[:, N_PIXELS]
    if not (np.isin(pixels, np.arange(17)).all() and np.isin(labels, np.arange(10)).all()):
        return None
    return np.ascontiguousarray(pixels), labels.astype(np.int64)


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 raw digits: pixels ``(1797, 64)`` float64 in ``0..16`` and labels ``(1797,)`` int64, in
    scikit-learn's order: its bundled CSV read with NumPy, else ``sklearn.datasets.load_digits()``."""
    path = _bundled_csv()
    read = _read_csv(path) if path is not None else None
    if read is not None:
        return read
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "nncore.datasets.load_digits needs scikit-learn (it ships the digits data); "
            "install it with `pip install scikit-learn`, or use another loader"
        ) from exc
    bunch = _sk_load_digits()
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)


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
    :func:`make_splits` (shuffled with ``seed`` by default). The data comes from
    :func:`digits_arrays` (scikit-learn's bundled file, read without importing it).

    Raises:
        ImportError: scikit-learn is not installed.
        DatasetError: see :func:`make_splits`.
    """
    pixels, labels = digits_arrays()
    return make_splits(
        pixels / 16.0,
        labels,
        n_train=n_train,
        n_eval=n_eval,
        n_test=n_test,
        seed=seed,
        shuffle=shuffle,
        n_classes=10,
        dtype=dtype,
        name="digits",
    )
