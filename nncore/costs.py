"""Cost functions (Nielsen, *Neural Networks and Deep Learning*, ch. 3).

Convention: the *data loss* of a set of ``n`` samples is the mean over samples
of the per-sample cost ``C_x``:

    data_loss = (1/n) * sum_x C_x

* ``quadratic``:      ``C_x = 0.5 * ||a - y||^2``                    (sigmoid output)
* ``cross_entropy``:  ``C_x = -sum_j [y_j ln a_j + (1 - y_j) ln(1 - a_j)]`` (sigmoid output)
* ``log_likelihood``: ``C_x = -ln a_{y(x)}``                          (softmax output)

``a`` is the output activation, ``z`` the output pre-activation. Losses are
computed from ``z`` (log-sigmoid / log-softmax), so a saturated output gives a
large finite loss rather than ``nan`` (Nielsen's code needs ``np.nan_to_num``).

The output error ``delta = dC_x/dz`` per sample is:

* quadratic:      ``(a - y) * a * (1 - a)``
* cross_entropy:  ``a - y``
* log_likelihood: ``a - y``
"""

from __future__ import annotations

import numpy as np

from nncore.activations import log_sigmoid, log_softmax
from nncore.checks import check_choice

COSTS = ("quadratic", "cross_entropy", "log_likelihood")

#: The output activation each cost is defined with.
OUTPUT_ACTIVATION = {"quadratic": "sigmoid", "cross_entropy": "sigmoid", "log_likelihood": "softmax"}


def summed_loss(cost: str, z: np.ndarray, a: np.ndarray, y: np.ndarray) -> float:
    """``sum_x C_x`` over the rows of a batch (divide by ``n`` for the data loss).

    Shapes: ``z``, ``a``, ``y`` are ``(n, n_out)``; ``y`` is one-hot (or any
    target in [0, 1] for the sigmoid costs). Accumulated in float64.
    """
    if cost == "quadratic":
        diff = a - y
        return 0.5 * float(np.einsum("ij,ij->", diff, diff, dtype=np.float64))
    if cost == "cross_entropy":
        z64 = z.astype(np.float64, copy=False)
        y64 = y.astype(np.float64, copy=False)
        return -float(np.sum(y64 * log_sigmoid(z64) + (1.0 - y64) * log_sigmoid(-z64)))
    if cost == "log_likelihood":
        return -float(np.sum(y * log_softmax(z.astype(np.float64, copy=False))))
    check_choice(cost, "cost", "summed_loss", COSTS)  # raises: no branch above matched
    raise AssertionError("unreachable")  # pragma: no cover


def output_delta(cost: str, a: np.ndarray, y: np.ndarray, out: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    """Write ``dC_x/dz`` for every row into ``out`` (``tmp`` is scratch of the same shape)."""
    np.subtract(a, y, out=out)
    if cost == "quadratic":
        np.subtract(1.0, a, out=tmp)
        tmp *= a
        out *= tmp
    return out
