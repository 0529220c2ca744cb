"""Finite-difference check of backpropagation, penalty included.

The checked function is the total loss of a batch,

    J(W, b) = (1/m) * sum_x C_x  +  penalty(W)

with the penalty of :mod:`nncore.regularizers` (decay rate ``d`` from
``n_train`` and ``batch_size``). Every weight and bias is perturbed by
``+-eps`` and ``+-2 eps`` and the fourth-order central difference

    (-J(+2e) + 8 J(+e) - 8 J(-e) + J(-2e)) / (12 e)

(truncation error O(eps^4), so even small gradient entries are resolved) is
compared with the analytic gradient ``backprop + dP/dW``. With L1, weights
closer than ``2 eps`` to 0 (where |w| has a kink) are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nncore.encoding import as_targets
from nncore.network import Network
from nncore.regularizers import Regularizer


@dataclass(frozen=True)
class GradCheckResult:
    """``max_rel_error`` over all parameters, and where it occurred."""

    max_rel_error: float
    worst_parameter: str
    n_checked: int


def gradient_check(
    network: Network,
    X: np.ndarray,
    Y: np.ndarray,
    regularizer: Regularizer | None = None,
    *,
    n_train: int | None = None,
    batch_size: int | None = None,
    eps: float = 3e-4,
    floor: float = 1e-5,
) -> GradCheckResult:
    """Compare backprop gradients with central differences; return the max relative error.

    Relative error of one entry: ``|g_bp - g_fd| / max(|g_bp|, |g_fd|, floor)``.
    ``n_train`` defaults to ``len(X)`` and ``batch_size`` to ``len(X)``. Run it in
    float64 (the network is copied to float64 for the check; it is not modified).
    """
    reg = regularizer or Regularizer("none", 0.0)
    net = network.copy()
    if net.dtype != np.float64:
        net = Network(net.sizes, activation=net.activation, cost=net.cost, init=net.init, dtype=np.float64,
                      weights=net.weights, biases=net.biases)
    X = np.asarray(X, dtype=np.float64)
    Y = as_targets(Y, net.sizes[-1], np.dtype(np.float64))
    n = n_train or len(X)
    m = batch_size or len(X)
    rate = reg.rate(n, m)

    def total() -> float:
        return net.data_loss(X, Y) + reg.penalty(net.weights, n, m)

    gw, gb = net.backprop(X, Y)
    analytic = [(f"layer{l + 1}/weights", net.weights[l], gw[l] + reg.gradient(net.weights[l], rate), True)
                for l in range(net.n_layers)]
    analytic += [(f"layer{l + 1}/biases", net.biases[l], gb[l], False) for l in range(net.n_layers)]
    skip_kinks = reg.kind == "l1" and rate > 0
    worst, worst_name, count = 0.0, "", 0
    for name, param, grad, is_weight in analytic:
        flat, gflat = param.reshape(-1), grad.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            if skip_kinks and is_weight and abs(old) < 2 * eps:
                continue
            values = []
            for step in (2 * eps, eps, -eps, -2 * eps):
                flat[i] = old + step
                values.append(total())
            flat[i] = old
            numeric = (-values[0] + 8 * values[1] - 8 * values[2] + values[3]) / (12 * eps)
            err = abs(gflat[i] - numeric) / max(abs(gflat[i]), abs(numeric), floor)
            count += 1
            if err > worst:
                worst, worst_name = err, f"{name}[{i}]"
    return GradCheckResult(max_rel_error=worst, worst_parameter=worst_name, n_checked=count)
