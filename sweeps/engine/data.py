"""A sweep's data: the configured data set loaded once per process, and each trial's training rows."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from nncore.datasets import Dataset, Split
from sweeps.config import DataConfig


def load_data(cfg: DataConfig, seed: int) -> Dataset:
    """Load and split the configured data set (float64; trials cast to their dtype)."""
    from nncore import datasets

    if cfg.source == "digits":
        return datasets.load_digits(n_train=cfg.n_train, n_eval=cfg.n_eval, n_test=cfg.n_test, seed=seed,
                                    shuffle=cfg.shuffle)
    if cfg.path:
        return datasets.load_mnist(Path(cfg.path).expanduser(), n_train=cfg.n_train, n_eval=cfg.n_eval,
                                   n_test=cfg.n_test, seed=seed, shuffle=cfg.shuffle,
                                   images=f"{cfg.files}-images-idx3-ubyte.gz",
                                   labels=f"{cfg.files}-labels-idx1-ubyte.gz")
    return datasets.load_mnist_download(cfg.url, Path(cfg.cache_dir).expanduser(), checksums=cfg.checksums or None,
                                        n_train=cfg.n_train, n_eval=cfg.n_eval, n_test=cfg.n_test, use=cfg.files,
                                        seed=seed, shuffle=cfg.shuffle)


def trial_data(data: Dataset, n_train: int) -> Dataset:
    """``data`` with only the first ``n_train`` training rows (views, no copy); eval and test unchanged.

    Every trial of a study gets its training set this way from one loaded data set, so a smaller
    training set is a prefix of a larger one and all trials share one evaluation set.
    """
    if isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer)) or not 1 <= n_train <= data.train.n:
        raise ValueError(f"n_train must be an int in [1, {data.train.n}] (the training rows loaded, data.n_train), "
                         f"got {n_train!r}")
    if n_train == data.train.n:
        return data
    train = data.train
    return dataclasses.replace(data, train=Split(train.X[:n_train], train.Y[:n_train], train.labels[:n_train]))
