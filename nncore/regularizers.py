"""Weight penalties (none, L2, L1) and the three conventions for "lambda".

Notation: ``n`` = training-set size, ``m`` = mini-batch size, ``eta`` = learning
rate, ``W`` = a weight matrix. Biases are never regularized.

Every convention reduces to one per-step *decay rate* ``d`` (units: 1/step per
unit of eta), and the SGD step on a batch ``B`` of size ``m`` is

    L2:  W <- (1 - eta*d) * W - (eta/m) * sum_{x in B} dC_x/dW
    L1:  W <- W - eta*d*sign(W) - (eta/m) * sum_{x in B} dC_x/dW

with

==============  ===========================  =================  =========================================
convention      lambda means                 decay rate ``d``   as used by
==============  ===========================  =================  =========================================
``dataset``     ``lmbda``                    ``lmbda / n``      Nielsen's network2.py (default here)
``per_batch``   ``alpha``                    ``alpha / m``      scikit-learn MLP (alpha / batch size)
``decoupled``   ``wd``                       ``wd``             PyTorch SGD ``weight_decay``
==============  ===========================  =================  =========================================

Exact conversions (same ``d`` per step): ``alpha = lmbda*m/n``, ``wd = lmbda/n``.

The *penalty* reported with every loss is the term whose gradient is the
decay actually applied, expressed per sample of the training set:

    L2: penalty = (d/2) * sum_l ||W_l||_F^2     (dataset: lmbda/(2n) * sum ||W||^2)
    L1: penalty = d * sum_l ||W_l||_1           (dataset: lmbda/n * sum |w|)

It always uses the training-set size ``n`` (never the size of the set being
evaluated), so the train and eval totals ``data_loss + penalty`` are on the
same scale. For ``per_batch`` the nominal batch size ``m`` is used; the last
partial batch of an epoch (size ``m' < m``) decays by ``alpha/m'``, exactly as
scikit-learn does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

PENALTIES = ("none", "l2", "l1")
CONVENTIONS = ("dataset", "per_batch", "decoupled")


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def convert_lambda(value: float, *, from_convention: str, to_convention: str, n_train: int, batch_size: int) -> float:
    """Convert a regularization strength between conventions, exactly (same per-step decay).

    ``dataset -> per_batch``: ``alpha = lmbda * m / n``; ``dataset -> decoupled``:
    ``wd = lmbda / n``; the other directions are the inverses.
    """
    _check_choice("from_convention", from_convention, CONVENTIONS)
    _check_choice("to_convention", to_convention, CONVENTIONS)
    if n_train <= 0:
        raise ValueError(f"n_train must be a positive integer, got {n_train!r}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    rate = decay_rate(value, from_convention, n_train=n_train, batch_size=batch_size)
    if to_convention == "dataset":
        return rate * n_train
    if to_convention == "per_batch":
        return rate * batch_size
    return rate


def decay_rate(lmbda: float, convention: str, *, n_train: int, batch_size: int) -> float:
    """Per-step decay rate ``d`` for a strength ``lmbda`` under ``convention`` (see module doc)."""
    if convention == "dataset":
        return lmbda / n_train
    if convention == "per_batch":
        return lmbda / batch_size
    if convention == "decoupled":
        return float(lmbda)
    raise ValueError(f"convention must be one of {list(CONVENTIONS)}, got {convention!r}")


@dataclass(frozen=True)
class Regularizer:
    """A weight penalty: ``kind`` in {none, l2, l1}, strength ``lmbda`` under ``convention``."""

    kind: str = "l2"
    lmbda: float = 0.0
    convention: str = "dataset"

    def __post_init__(self) -> None:
        _check_choice("penalty", self.kind, PENALTIES)
        _check_choice("convention", self.convention, CONVENTIONS)
        if not isinstance(self.lmbda, (int, float)) or not math.isfinite(self.lmbda) or self.lmbda < 0:
            raise ValueError(f"lmbda must be a finite number >= 0, got {self.lmbda!r}")

    @property
    def active(self) -> bool:
        return self.kind != "none" and self.lmbda > 0

    def rate(self, n_train: int, batch_size: int) -> float:
        """Per-step decay rate ``d`` (0 when inactive)."""
        if not self.active:
            return 0.0
        return decay_rate(self.lmbda, self.convention, n_train=n_train, batch_size=batch_size)

    def penalty(self, weights: Sequence[np.ndarray], n_train: int, batch_size: int) -> float:
        """The penalty term (see module doc); depends on ``n_train``, never on an eval set."""
        d = self.rate(n_train, batch_size)
        if d == 0.0:
            return 0.0
        if self.kind == "l2":
            return 0.5 * d * sum(float(np.einsum("ij,ij->", w, w, dtype=np.float64)) for w in weights)
        return d * sum(float(np.abs(w).sum(dtype=np.float64)) for w in weights)

    def gradient(self, w: np.ndarray, rate: float) -> np.ndarray:
        """Gradient of the penalty w.r.t. one weight matrix for decay rate ``rate``."""
        if self.kind == "l2":
            return rate * w
        if self.kind == "l1":
            return rate * np.sign(w)
        return np.zeros_like(w)

    def to_dict(self) -> dict:
        return {"penalty": self.kind, "lmbda": self.lmbda, "convention": self.convention}
