"""Activation functions, written for in-place use on whole mini-batches.

Every activation works on a batch ``Z`` of shape ``(m, n_units)`` (one row per
sample) and writes its result into ``out`` so that the training loop reuses
buffers. Derivatives are expressed through the activation's *output* ``A``
(``sigmoid'(z) = a (1 - a)``, ``tanh'(z) = 1 - a^2``, ``relu'(z) = [a > 0]``),
which is what backpropagation has at hand.

The sigmoid is computed as ``1 / (1 + exp(-z))`` inside ``np.errstate(over=
"ignore")``: for very negative ``z`` the exponential overflows to ``inf`` and
the result is exactly ``0``; no warning is emitted and no precision is lost
for moderately negative ``z`` (unlike the ``0.5 (1 + tanh(z / 2))`` form).
"""

from __future__ import annotations

import numpy as np

ACTIVATIONS = ("sigmoid", "tanh", "relu")
OUTPUT_ACTIVATIONS = ("sigmoid", "softmax")


def sigmoid(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Logistic function ``1 / (1 + exp(-z))``, stable for any finite ``z``."""
    out = np.negative(z, out=out)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    out += 1.0
    return np.reciprocal(out, out=out)


def tanh(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Hyperbolic tangent."""
    return np.tanh(z, out=out)


def relu(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Rectified linear unit ``max(z, 0)``."""
    return np.maximum(z, 0.0, out=out)


def softmax(z: np.ndarray, out: np.ndarray | None = None, axis: int = 1) -> np.ndarray:
    """Softmax ``exp(z_j - max z) / sum_k exp(z_k - max z)`` along ``axis`` (1: one row per sample)."""
    out = np.subtract(z, z.max(axis=axis, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=axis, keepdims=True)
    return out


def apply(name: str, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Apply the activation called ``name`` to ``z``."""
    return _FORWARD[name](z, out)


def multiply_by_derivative(name: str, delta: np.ndarray, a: np.ndarray, tmp: np.ndarray) -> None:
    """In place: ``delta *= f'(z)``, with ``f'`` written through the output ``a = f(z)``.

    ``tmp`` is a scratch buffer of the same shape as ``a``.
    """
    if name == "sigmoid":
        np.subtract(1.0, a, out=tmp)
        tmp *= a
        delta *= tmp
    elif name == "tanh":
        np.multiply(a, a, out=tmp)
        np.subtract(1.0, tmp, out=tmp)
        delta *= tmp
    elif name == "relu":
        np.greater(a, 0.0, out=tmp)
        delta *= tmp
    else:  # pragma: no cover - guarded by validation in Network
        raise ValueError(f"no derivative for activation {name!r}")


def log_sigmoid(z: np.ndarray) -> np.ndarray:
    """``log(sigmoid(z)) = -softplus(-z)``, computed without overflow or ``log(0)``."""
    return -(np.maximum(-z, 0.0) + np.log1p(np.exp(-np.abs(z))))


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise ``log(softmax(z))``, computed without ``log(0)``."""
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


_FORWARD = {"sigmoid": sigmoid, "tanh": tanh, "relu": relu, "softmax": softmax}
