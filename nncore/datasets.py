"""Data sets for the training loop: scaled inputs, one-hot targets, splits.

This module is the stable public facade; the implementation lives in
:mod:`nncore.data`, one module per idea (see that package's table).

Every loader returns a :class:`Dataset` whose splits are :class:`Split`
objects holding

* ``X`` -- ``(n, n_features)`` inputs scaled to ``[0, 1]`` in the requested
  floating dtype,
* ``Y`` -- ``(n, n_classes)`` one-hot targets in the same dtype,
* ``labels`` -- ``(n,)`` ``int64`` class indices.

Sources:

* :func:`load_digits` -- scikit-learn's bundled 8x8 digits (1,797 samples,
  values ``0..16`` divided by ``16``). scikit-learn is imported lazily inside
  that function only; the rest needs NumPy and the standard library alone.
* :func:`read_idx`, :func:`load_mnist_idx`, :func:`load_mnist` -- MNIST in the
  original IDX format, gzip-compressed or not (decided by the gzip magic
  bytes, not by the file name).
* :func:`download_mnist`, :func:`load_mnist_download` -- fetch the IDX files
  from a mirror into a cache directory (``urllib``; checksum-verified,
  atomic ``os.replace``), then load them.
* :func:`load_mnist_pkl` -- Michael Nielsen's ``mnist.pkl.gz`` (trusted files
  only: unpickling can execute code).

Splitting: :func:`make_splits`; encoding: :func:`one_hot`; hashing:
:func:`sha256_file`; the known MNIST file names: :data:`MNIST_FILES`.

Nothing is downloaded or cached at import time and the modules keep no global
mutable state. Invalid arguments and malformed files raise
:class:`DatasetError` (a :class:`ValueError`) with a message naming the
argument or file, what was expected and what was found.
"""

from __future__ import annotations

from nncore.data.digits import load_digits
from nncore.data.download import MNIST_FILES, download_mnist, sha256_file
from nncore.data.errors import DatasetError
from nncore.data.idx import read_idx
from nncore.data.mnist_idx import load_mnist, load_mnist_download, load_mnist_idx
from nncore.data.mnist_pickle import load_mnist_pkl
from nncore.data.splits import Dataset, Split, make_splits, one_hot

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
