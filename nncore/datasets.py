"""Data sets for the training loop: scaled inputs, one-hot targets, splits.

Every loader returns a :class:`Dataset` whose splits are :class:`Split`
objects holding

* ``X`` -- ``(n, n_features)`` inputs scaled to ``[0, 1]`` in the requested
  floating dtype,
* ``Y`` -- ``(n, n_classes)`` one-hot targets in the same dtype,
* ``labels`` -- ``(n,)`` ``int64`` class indices.

Sources:

* :func:`load_digits` -- scikit-learn's bundled 8x8 digits (1,797 samples,
  values ``0..16`` divided by ``16``). scikit-learn is imported lazily inside
  that function only; the rest of this module needs NumPy and the standard
  library alone.
* :func:`read_idx`, :func:`load_mnist_idx`, :func:`load_mnist` -- MNIST in the
  original IDX format, gzip-compressed or not (decided by the gzip magic
  bytes, not by the file name).
* :func:`download_mnist`, :func:`load_mnist_download` -- fetch the IDX files
  from a mirror into a cache directory (``urllib``; checksum-verified,
  atomic ``os.replace``), then load them.
* :func:`load_mnist_pkl` -- Michael Nielsen's ``mnist.pkl.gz`` (trusted files
  only: unpickling can execute code).

Nothing is downloaded or cached at import time and the module keeps no global
mutable state. Invalid arguments and malformed files raise
:class:`DatasetError` (a :class:`ValueError`) with a message naming the
argument or file, what was expected and what was found.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import pickle
import struct
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "MNIST_FILES",
    "Dataset",
    "DatasetError",
    "Split",
    "download_mnist",
    "load_digits",
    "load_mnist",
    "load_mnist_download",
    "load_mnist_idx",
    "load_mnist_pkl",
    "make_splits",
    "one_hot",
    "read_idx",
    "sha256_file",
]

#: The four standard MNIST file names mapped to the SHA-256 of the ``.gz``
#: file as distributed by the canonical mirror. The digests are not recorded
#: here (``None``: unknown, so a download of that file is not verified unless
#: the caller passes ``checksums=``); they are deliberately not guessed.
MNIST_FILES: dict[str, str | None] = {
    "train-images-idx3-ubyte.gz": None,
    "train-labels-idx1-ubyte.gz": None,
    "t10k-images-idx3-ubyte.gz": None,
    "t10k-labels-idx1-ubyte.gz": None,
}

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20

#: IDX type code (third magic byte) -> big-endian NumPy dtype.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DatasetError(ValueError):
    """A data set argument or file is invalid (bad size, corrupted file, ...)."""


# ---------------------------------------------------------------------------
# Containers
# ---------------------------------------------------------------------------


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


def _float_dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise DatasetError(f"dtype: expected a floating NumPy dtype, got {dtype!r}") from exc
    if dt.kind != "f":
        raise DatasetError(f"dtype: expected a floating NumPy dtype, got {dt}")
    return dt


def _count(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DatasetError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise DatasetError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def _as_labels(labels: Any, what: str = "labels") -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise DatasetError(f"{what}: expected a 1-D array of class indices, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            pass  # integral floats, e.g. labels read from a CSV
        else:
            raise DatasetError(f"{what}: expected integer class indices, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def one_hot(labels: np.ndarray, n_classes: int, dtype: Any = np.float64) -> np.ndarray:
    """One-hot encode integer ``labels`` into an ``(n, n_classes)`` array.

    Raises:
        ValueError: ``n_classes < 1``, ``labels`` is not 1-D integer, or a
            label lies outside ``[0, n_classes)`` (the message names the first
            offending value and its index).
    """
    n_classes = _count(n_classes, "n_classes", 1)
    dt = np.dtype(dtype)
    lab = _as_labels(labels)
    bad = np.flatnonzero((lab < 0) | (lab >= n_classes))
    if bad.size:
        i = int(bad[0])
        raise DatasetError(
            f"labels: expected values in [0, {n_classes}), got {int(lab[i])} at index {i} "
            f"({bad.size} out-of-range label(s))"
        )
    out = np.zeros((lab.shape[0], n_classes), dtype=dt)
    out[np.arange(lab.shape[0]), lab] = 1
    return out


def _scale_divisor(X: np.ndarray, *, what: str, allow_rescale: bool = True) -> float:
    """Divisor that brings ``X`` into ``[0, 1]`` (see :func:`make_splits`)."""
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


def _make_split(
    X: np.ndarray, labels: np.ndarray, divisor: float, n_classes: int, dtype: np.dtype
) -> Split:
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
      :func:`load_digits` does that division itself).

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
    dt = _float_dtype(dtype)
    n_train = _count(n_train, "n_train", 1)
    n_eval = _count(n_eval, "n_eval", 0)
    n_test = _count(n_test, "n_test", 0)
    X = np.asarray(X)
    if X.ndim < 2:
        raise DatasetError(f"X: expected shape (n_rows, n_features), got shape {X.shape}")
    if X.ndim > 2:
        X = X.reshape(X.shape[0], -1)
    lab = _as_labels(labels)
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
    n_classes = _count(n_classes, "n_classes", 1)
    if lab.max() >= n_classes:
        i = int(np.argmax(lab))
        raise DatasetError(
            f"labels: expected values in [0, {n_classes}) (n_classes={n_classes}), "
            f"got {int(lab[i])} at index {i}"
        )
    divisor = _scale_divisor(X, what="X")

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
        splits.append(_make_split(Xi, li, divisor, n_classes, dt))
    train, eval_, test = splits
    assert train is not None
    return Dataset(name=name, train=train, eval=eval_, test=test)


# ---------------------------------------------------------------------------
# scikit-learn digits
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# IDX files (MNIST)
# ---------------------------------------------------------------------------


def _read_maybe_gzip(path: Path) -> tuple[bytes, str | None]:
    """Bytes of ``path``, gunzipped when it starts with the gzip magic.

    Returns ``(data, problem)``: ``problem`` is ``None`` for a complete file,
    otherwise a description of why the gzip stream is incomplete (``data`` is
    then what could be decompressed). A corrupted stream raises.
    """
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw, None
    out: list[bytes] = []
    rest = raw
    while rest.startswith(_GZIP_MAGIC):  # a gzip file may hold several members
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out.append(d.decompress(rest))
        except zlib.error as exc:
            raise DatasetError(
                f"{path}: corrupted gzip data ({exc}); delete the file and fetch it again"
            ) from exc
        if not d.eof:
            out.append(d.flush())
            return b"".join(out), "the gzip stream ends before its end-of-stream marker"
        rest = d.unused_data
    if rest.strip(b"\x00"):
        raise DatasetError(
            f"{path}: corrupted gzip file: {len(rest)} trailing byte(s) after the gzip data"
        )
    return b"".join(out), None


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not.

    Compression is detected from the gzip magic bytes ``1f 8b``, not from the
    file name. The header is two zero bytes, a type code (``0x08`` uint8,
    ``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E``
    float64), the number of dimensions, then one big-endian uint32 per
    dimension; the big-endian payload must hold exactly ``prod(dims)``
    items. MNIST labels have magic ``0x00000801`` (2049), images
    ``0x00000803`` (2051).

    Returns:
        A writable array of shape ``dims`` in native byte order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DatasetError: bad magic, truncated or corrupted file (the message
            names the path and the expected vs. actual byte counts).
    """
    path = Path(path)
    data, problem = _read_maybe_gzip(path)
    fix = "delete the file and fetch it again"
    if len(data) < 4:
        raise DatasetError(
            f"{path}: truncated IDX file: expected a 4-byte header, got {len(data)} byte(s)"
            + (f" ({problem})" if problem else "")
        )
    magic = data[:4]
    if magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES or magic[3] == 0:
        codes = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise DatasetError(
            f"{path}: not an IDX file: bad magic 0x{magic.hex().upper()} (expected two zero "
            f"bytes, a type code in {{{codes}}} and ndim >= 1, e.g. 0x00000801 for labels, "
            "0x00000803 for images)"
        )
    dtype = _IDX_DTYPES[magic[2]]
    ndim = magic[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(
            f"{path}: truncated IDX file: expected a {header}-byte header for {ndim} "
            f"dimension(s), got {len(data)} byte(s); {fix}"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    count = 1
    for d in dims:
        count *= d
    expected = count * dtype.itemsize
    got = len(data) - header
    if got < expected or problem:
        raise DatasetError(
            f"{path}: truncated or corrupted IDX file: expected {expected} payload bytes "
            f"for dims {dims} of {dtype.newbyteorder('=')}, got {got}"
            + (f" ({problem})" if problem else "")
            + f"; {fix}"
        )
    if got > expected:
        raise DatasetError(
            f"{path}: corrupted IDX file: expected {expected} payload bytes for dims "
            f"{dims}, got {got} ({got - expected} unexpected trailing bytes)"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header)
    return arr.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def load_mnist_idx(
    images_path: str | Path, labels_path: str | Path
) -> tuple[np.ndarray, np.ndarray]:
    """Read an MNIST images/labels pair of IDX files.

    The images file must hold uint8 data of shape ``(n, rows, cols)`` (28x28
    for MNIST; any consistent size is accepted, e.g. Fashion-MNIST), the
    labels file uint8 data of shape ``(n,)`` with values ``0..9``.

    Returns:
        ``(images, labels)``: ``(n, rows * cols)`` uint8 and ``(n,)`` int64.

    Raises:
        DatasetError: wrong dtype/rank, count mismatch, a label outside
            ``0..9`` (the message names the file, value and index), or any
            :func:`read_idx` error.
    """
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DatasetError(
            f"{images_path}: expected IDX images of uint8 with shape (n, rows, cols) "
            f"(magic 0x00000803), got {images.dtype} with shape {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DatasetError(
            f"{labels_path}: expected IDX labels of uint8 with shape (n,) (magic 0x00000801), "
            f"got {labels.dtype} with shape {labels.shape}"
        )
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{images_path} and {labels_path}: expected as many labels as images, got "
            f"{images.shape[0]} images and {labels.shape[0]} labels"
        )
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        i = int(bad[0])
        raise DatasetError(
            f"{labels_path}: expected labels in 0..9, got {int(labels[i])} at index {i} "
            f"({bad.size} out-of-range label(s))"
        )
    return images.reshape(images.shape[0], -1), labels.astype(np.int64)


def _find_file(directory: Path, name: str, what: str) -> Path:
    candidates = [name]
    if name.endswith(".gz"):
        candidates.append(name[: -len(".gz")])
    else:
        candidates.append(name + ".gz")
    for cand in candidates:
        p = directory / cand
        if p.is_file():
            return p
    tried = ", ".join(str(directory / c) for c in candidates)
    raise DatasetError(f"{what}: no IDX file {name!r} in {directory} (tried {tried})")


def load_mnist(
    source: str | Path,
    *,
    n_train: int,
    n_eval: int = 0,
    n_test: int = 0,
    seed: int | None = 0,
    shuffle: bool = False,
    dtype: Any = np.float64,
    images: str = "t10k-images-idx3-ubyte.gz",
    labels: str = "t10k-labels-idx1-ubyte.gz",
) -> Dataset:
    """MNIST from a directory of IDX files, split with :func:`make_splits`.

    ``images``/``labels`` are file names inside ``source``; each is looked up
    as given, then without (or with) the ``.gz`` suffix; compression is
    detected from the content. Pixels are divided by 255. By default the
    split keeps data order (``shuffle=False``): ``n_train=8000, n_eval=2000``
    on the 10,000-image test file is the usual first-8,000 / last-2,000
    split.

    Raises:
        DatasetError: ``source`` is not a directory, a file is missing or
            malformed, or the split sizes are invalid.
    """
    directory = Path(source)
    if not directory.is_dir():
        raise DatasetError(f"source: expected a directory holding MNIST IDX files, got {directory}")
    images_path = _find_file(directory, images, "images")
    labels_path = _find_file(directory, labels, "labels")
    X, y = load_mnist_idx(images_path, labels_path)
    prefix = images.split("-", 1)[0]
    return make_splits(
        X,
        y,
        n_train=n_train,
        n_eval=n_eval,
        n_test=n_test,
        seed=seed,
        shuffle=shuffle,
        n_classes=10,
        dtype=dtype,
        name=f"mnist-{prefix}",
    )


# ---------------------------------------------------------------------------
# Nielsen's mnist.pkl.gz
# ---------------------------------------------------------------------------


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
    dt = _float_dtype(dtype)
    with open(path, "rb") as raw:
        is_gzip = raw.read(2) == _GZIP_MAGIC
    opener = gzip.open if is_gzip else open
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
        y = _as_labels(part[1], f"{what} labels")
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
        divisor = _scale_divisor(X, what=f"{what} X", allow_rescale=False)
        parts.append(_make_split(X, y, divisor, 10, dt))
    train, eval_, test = parts
    if train is None:
        raise DatasetError(f"{path}: training part: expected at least one row, got 0")
    if any(p is not None and p.X.shape[1] != train.X.shape[1] for p in parts):
        raise DatasetError(
            f"{path}: expected the same number of features in every part, got "
            f"{[p.X.shape[1] for p in parts if p is not None]}"
        )
    return Dataset(name="mnist-pkl", train=train, eval=eval_, test=test)


# ---------------------------------------------------------------------------
# Download
# ---------------------------------------------------------------------------


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 digest of the file at ``path`` (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_file_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise DatasetError(f"files: expected plain file names, got {name!r}")


def download_mnist(
    base_url: str,
    cache_dir: str | Path,
    *,
    files: Sequence[str] | None = None,
    checksums: Mapping[str, str | None] | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download MNIST files from ``base_url`` into ``cache_dir`` (idempotent).

    For each name in ``files`` (default: the four names of
    :data:`MNIST_FILES`): a file already in ``cache_dir`` is kept when its
    SHA-256 matches the known checksum, or when no checksum is known;
    otherwise ``base_url.rstrip('/') + '/' + name`` is streamed into a
    temporary file in ``cache_dir``, its SHA-256 is verified (when known) and
    it is moved into place with ``os.replace`` -- so the cache never holds a
    partial or unverified file under the final name.

    ``checksums`` maps names to hex SHA-256 digests (``None``: unknown); it
    overrides :data:`MNIST_FILES` name by name.

    Returns:
        ``Path(cache_dir)``.

    Raises:
        DatasetError: checksum mismatch (naming the file, expected and actual
            digests; the downloaded file is removed and a file already under
            that name is left untouched), HTTP error, unreachable server or
            timeout (naming the URL), bad ``base_url`` or file name.
    """
    scheme = urllib.parse.urlsplit(base_url).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise DatasetError(
            f"base_url: expected an http://, https:// or file:// URL, got {base_url!r}"
        )
    if not timeout > 0:
        raise DatasetError(f"timeout: expected a positive number of seconds, got {timeout!r}")
    if isinstance(files, str):
        raise DatasetError(f"files: expected a sequence of file names, got the string {files!r}")
    names = list(MNIST_FILES) if files is None else list(files)
    known: dict[str, str | None] = {**MNIST_FILES, **(dict(checksums) if checksums else {})}
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    for name in names:
        _check_file_name(name)
        expected = known.get(name)
        expected = expected.lower() if expected else None
        dest = cache / name
        if dest.is_file() and (expected is None or sha256_file(dest) == expected):
            continue
        url = base_url.rstrip("/") + "/" + urllib.parse.quote(name)
        fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=f".{name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                try:
                    with urllib.request.urlopen(url, timeout=timeout) as resp:
                        for chunk in iter(lambda: resp.read(_CHUNK), b""):
                            h.update(chunk)
                            out.write(chunk)
                except urllib.error.HTTPError as exc:
                    raise DatasetError(
                        f"download of {url} failed: HTTP {exc.code} {exc.reason}"
                    ) from exc
                except urllib.error.URLError as exc:
                    raise DatasetError(f"download of {url} failed: {exc.reason}") from exc
                except (OSError, http.client.HTTPException) as exc:
                    # timeouts, resets, incomplete reads (Content-Length not met)
                    raise DatasetError(
                        f"download of {url} failed: {type(exc).__name__}: {exc}"
                    ) from exc
                out.flush()
                os.fsync(out.fileno())
            actual = h.hexdigest()
            if expected is not None and actual != expected:
                raise DatasetError(
                    f"{name}: checksum mismatch for {url}: expected sha256 {expected}, "
                    f"got {actual}; the download was discarded"
                )
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
    return cache


def load_mnist_download(
    base_url: str,
    cache_dir: str | Path,
    *,
    checksums: Mapping[str, str | None] | None = None,
    n_train: int = 50000,
    n_eval: int = 10000,
    n_test: int = 0,
    use: str = "train",
    seed: int | None = 0,
    shuffle: bool = False,
    dtype: Any = np.float64,
    timeout: float = 30.0,
) -> Dataset:
    """Download (or reuse from ``cache_dir``) one MNIST pair and split it.

    ``use="train"`` takes the 60,000-image training files (the defaults give
    the classic 50,000 / 10,000 split in data order), ``use="t10k"`` the
    10,000-image test files (pass smaller sizes). See :func:`download_mnist`
    and :func:`load_mnist`.
    """
    if use not in ("train", "t10k"):
        raise DatasetError(f"use: expected 'train' or 't10k', got {use!r}")
    images = f"{use}-images-idx3-ubyte.gz"
    labels = f"{use}-labels-idx1-ubyte.gz"
    cache = download_mnist(
        base_url, cache_dir, files=[images, labels], checksums=checksums, timeout=timeout
    )
    return load_mnist(
        cache,
        n_train=n_train,
        n_eval=n_eval,
        n_test=n_test,
        seed=seed,
        shuffle=shuffle,
        dtype=dtype,
        images=images,
        labels=labels,
    )
