"""Data loading, one module per idea; :mod:`nncore.datasets` is the public facade.

==========================================  ==================================================
module                                      owns
==========================================  ==================================================
:mod:`nncore.data.errors`                   :class:`DatasetError`, raised by every loader
:mod:`nncore.data.splits`                   ``Split``/``Dataset`` types, ``make_splits``
                                            (train/eval/test cut, [0, 1] scaling, one-hot)
:mod:`nncore.data.digits`                   scikit-learn's 8x8 digits (imported lazily)
:mod:`nncore.data.compression`              gzip detection by magic bytes, complete-stream read
:mod:`nncore.data.idx`                      the IDX file format (``read_idx``)
:mod:`nncore.data.mnist_idx`                MNIST as IDX files: a pair, a directory, download
:mod:`nncore.data.download`                 checksummed, atomic download into a cache folder
:mod:`nncore.data.mnist_pickle`             Nielsen's ``mnist.pkl.gz``
==========================================  ==================================================

Nothing is downloaded or cached at import time and no module keeps global
mutable state. Import the public names from :mod:`nncore.datasets`; the
modules here are its implementation and may be reorganized.
"""
