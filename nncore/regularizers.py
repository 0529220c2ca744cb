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

Conversions (same ``d`` per full step): ``alpha = lmbda*m/n``, ``wd = lmbda/n``.
``dataset <-> decoupled`` is always exact. ``per_batch <-> either`` is exact when
``m`` divides ``n``; when ``n % m != 0`` the epoch's last, partial batch of
``m' = n % m`` rows decays by ``eta*alpha/m'`` under ``per_batch`` (``d = alpha/m'``,
scikit-learn's rule) but by ``eta*alpha/m`` under the converted ``dataset`` or
``decoupled`` strength (``d = lmbda/n = alpha/m``), so the epoch's L2 decay factor
differs by the ratio ``(1 - eta*alpha/m') / (1 - eta*alpha/m)`` (per_batch over
dataset; the other ``ceil(n/m) - 1`` steps are identical). Under L1 the same
step subtracts ``eta*alpha/m' * sign(W)`` instead of ``eta*alpha/m * sign(W)``.

The *penalty* reported with every loss is the term whose gradient is the
decay actually applied, expressed per sample of the training set:

    L2: penalty = (d/2) * sum_l ||W_l||_F^2     (dataset: lmbda/(2n) * sum ||W||^2)
    L1: penalty = d * sum_l ||W_l||_1           (dataset: lmbda/n * sum |w|)

It always uses the training-set size ``n`` (never the size of the set being
evaluated), so the train and eval totals ``data_loss + penalty`` are on the
same scale. For ``per_batch`` the nominal batch size ``m`` is used; the last
partial batch of an epoch (size ``m' < m``) decays by ``alpha/m'``, exactly as
scikit-learn does.

The epoch records (:mod:`nncore.records`) carry the epoch's L2 decay factor
``f = prod_steps (1 - eta*d)`` (``train/decay_factor``) and, per layer, how the
norm change splits into ``decay_pull = -ln f`` and ``grad_push = ln(r/f)``
(``r`` the layer's norm ratio over the epoch); with momentum ``mu`` the
factor is the effective ``prod (1 - eta*d/(1 - mu))`` (see :mod:`nncore.train`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from nncore.checks import check_choice, check_int, check_real, invalid

PENALTIES = ("none", "l2", "l1")
CONVENTIONS = ("dataset", "per_batch", "decoupled")


def convert_lambda(value: float, *, from_convention: str, to_convention: str, n_train: int, batch_size: int) -> float:
    """Convert a regularization strength between conventions (same per-step decay on full batches).

    ``dataset -> per_batch``: ``alpha = lmbda * m / n``; ``dataset -> decoupled``:
    ``wd = lmbda / n``; the other directions are the inverses. ``value`` is any
    finite real number (NumPy scalars included; the conversion is linear, so
    its sign is not checked here); the result is a ``float``.

    **When it is not exact.** ``dataset <-> decoupled`` always is. A conversion
    to or from ``per_batch`` is exact when ``n_train % batch_size == 0``.
    Otherwise (``n % m != 0``) every full batch decays identically, but the
    epoch's last, partial batch of ``m' = n % m`` rows decays by ``eta*alpha/m'``
    under ``per_batch`` instead of ``eta*alpha/m`` under the converted
    ``dataset``/``decoupled`` strength, so the epoch's decay factor (L2) differs by
    ``(1 - eta*alpha/m') / (1 - eta*alpha/m)`` (per_batch over dataset); e.g.
    ``n = 7, m = 3, eta*alpha = 0.3``: ``0.7 / 0.9``.

    Raises:
        ValueError: an unknown convention, ``value`` not a finite real number,
            ``n_train`` not an int ``>= 1``, ``batch_size`` not an int in
            ``[1, n_train]`` (a batch never has more rows than the training set).
    """
    owner = "convert_lambda"
    value = check_real(value, "value", owner)
    check_choice(from_convention, "from_convention", owner, CONVENTIONS)
    check_choice(to_convention, "to_convention", owner, CONVENTIONS)
    n_train = check_int(n_train, "n_train", owner, low=1)
    batch_size = check_int(batch_size, "batch_size", owner, low=1)
    if batch_size > n_train:
        raise invalid("batch_size", owner, f"an int in the range [1, {n_train}] for n_train={n_train}",
                      batch_size)
    rate = decay_rate(value, from_convention, n_train=n_train, batch_size=batch_size)
    if to_convention == "dataset":
        return rate * n_train
    if to_convention == "per_batch":
        return rate * batch_size
    return rate


def decay_rate(lmbda: float, convention: str, *, n_train: int, batch_size: int) -> float:
    """Per-step decay rate ``d`` for a strength ``lmbda`` under ``convention`` (see module doc).

    ``dataset``: ``d = lmbda / n_train``; ``per_batch``: ``d = lmbda / batch_size``;
    ``decoupled``: ``d = lmbda``. ``lmbda`` is any finite real number (its sign is
    checked by :class:`Regularizer`, not here); the result is a Python ``float``.
    """
    owner = "decay_rate"
    lmbda = check_real(lmbda, "lmbda", owner)
    check_choice(convention, "convention", owner, CONVENTIONS)
    if convention == "dataset":
        return lmbda / check_int(n_train, "n_train", owner, low=1)
    if convention == "per_batch":
        return lmbda / check_int(batch_size, "batch_size", owner, low=1)
    return lmbda


@dataclass(frozen=True)
class Regularizer:
    """A weight penalty: ``kind`` in {none, l2, l1}, strength ``lmbda`` under ``convention``.

    ``lmbda`` is any finite real number ``>= 0`` (``int``, ``float``, NumPy
    scalars such as ``numpy.float32``; ``bool`` is refused) and is stored as a
    Python ``float``, so rates and penalties never pick up a NumPy scalar
    type. Biases are never regularized.
    """

    kind: str = "l2"
    lmbda: float = 0.0
    convention: str = "dataset"

    def __post_init__(self) -> None:
        check_choice(self.kind, "kind", "Regularizer", PENALTIES)
        check_choice(self.convention, "convention", "Regularizer", CONVENTIONS)
        object.__setattr__(self, "lmbda", check_real(self.lmbda, "lmbda", "Regularizer", low=0.0))

    @property
    def active(self) -> bool:
        """Whether any decay is applied (``kind != "none"`` and ``lmbda > 0``)."""
        return self.kind != "none" and self.lmbda > 0

    def rate(self, n_train: int, batch_size: int) -> float:
        """Per-step decay rate ``d`` (0 when inactive)."""
        if not self.active:
            return 0.0
        return decay_rate(self.lmbda, self.convention, n_train=n_train, batch_size=batch_size)

    def penalty(self, weights: Sequence[np.ndarray], n_train: int, batch_size: int) -> float:
        """The penalty term: ``(d/2) * sum_l ||W_l||_F^2`` (L2) or ``d * sum_l ||W_l||_1`` (L1).

        ``d = rate(n_train, batch_size)``; 0 when inactive. Biases are not
        passed here and never penalized. Depends on ``n_train``, never on the
        size of an eval set; accumulated in float64.
        """
        d = self.rate(n_train, batch_size)
        if d == 0.0:
            return 0.0
        if self.kind == "l2":
            return 0.5 * d * sum(float(np.einsum("ij,ij->", w, w, dtype=np.float64)) for w in weights)
        return d * sum(float(np.abs(w).sum(dtype=np.float64)) for w in weights)

    def gradient(self, w: np.ndarray, rate: float) -> np.ndarray:
        """Gradient of the penalty w.r.t. one weight matrix: ``rate * W`` (L2), ``rate * sign(W)`` (L1), 0 (none)."""
        if self.kind == "l2":
            return rate * w
        if self.kind == "l1":
            return rate * np.sign(w)
        return np.zeros_like(w)

    def to_dict(self) -> dict:
        """``{"penalty": kind, "lmbda": lmbda, "convention": convention}`` (what trackers record)."""
        return {"penalty": self.kind, "lmbda": self.lmbda, "convention": self.convention}
