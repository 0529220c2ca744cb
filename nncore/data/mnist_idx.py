"""MNIST (and look-alikes such as Fashion-MNIST) stored as IDX files.

* :func:`load_mnist_idx` -- an images/labels pair of IDX files -> ``(X, y)``
  arrays (uint8 pixels, int64 labels ``0..9``).
* :func:`load_mnist` -- a directory of IDX files -> a
  :class:`~nncore.data.splits.Dataset` (pixels divided by 255).
* :func:`load_mnist_download` -- :func:`~nncore.data.download.download_mnist`
  into a cache directory, then :func:`load_mnist`.

The IDX format itself is parsed by :mod:`nncore.data.idx`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nncore.checks import check_choice, invalid
from nncore.data.download import download_mnist
from nncore.data.errors import DatasetError
from nncore.data.idx import read_idx
from nncore.data.splits import Dataset, make_splits

__all__ = ["load_mnist", "load_mnist_download", "load_mnist_idx"]

#: The MNIST file pairs: ``use`` -> (images file, labels file).
MNIST_PAIRS: dict[str, tuple[str, str]] = {
    use: (f"{use}-images-idx3-ubyte.gz", f"{use}-labels-idx1-ubyte.gz") for use in ("train", "t10k")
}


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
    """``directory / name``, or the same name without (or with) ``.gz`` when only that exists."""
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
        raise invalid("source", "load_mnist", "a directory holding MNIST IDX files", str(directory),
                      error=DatasetError)
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
    use = check_choice(use, "use", "load_mnist_download", MNIST_PAIRS, error=DatasetError)
    images, labels = MNIST_PAIRS[use]
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
