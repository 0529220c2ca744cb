"""A feed-forward network in the style of Nielsen's ``network2.py``, vectorized over batches.

Layout: samples are rows. A batch ``X`` has shape ``(m, sizes[0])``; layer
``l`` (1-based) has weights ``W_l`` of shape ``(sizes[l], sizes[l-1])`` (Nielsen's
``(out, in)`` layout) and biases ``b_l`` of shape ``(sizes[l],)``:

    z_l = a_{l-1} @ W_l.T + b_l,    a_l = f_l(z_l)

Hidden layers use ``activation`` (sigmoid, tanh or relu); the output layer uses
the activation its cost is defined with (sigmoid for quadratic and
cross-entropy, softmax for log-likelihood).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from nncore import activations as act
from nncore.checks import check_choice, check_float_dtype, check_instance, check_int_sequence
from nncore.costs import COSTS, OUTPUT_ACTIVATION, output_delta, summed_loss
from nncore.initializers import INITIALIZERS, initialize
from nncore.regularizers import Regularizer

DTYPES = ("float64", "float32")


class Network:
    """Weights, biases and the maths of one network; no training state.

    Parameters
    ----------
    sizes: neurons per layer, input first, e.g. ``[784, 30, 10]`` (at least two layers).
    activation: hidden-layer activation, one of ``sigmoid``, ``tanh``, ``relu``.
    cost: ``quadratic``, ``cross_entropy`` or ``log_likelihood``.
    init: ``default``, ``large``, ``xavier`` or ``he`` (see :mod:`nncore.initializers`).
    dtype: ``float64`` (default) or ``float32``; weights and all computation use it.
    rng: the ``numpy.random.Generator`` weights are drawn from (required unless
        ``weights`` and ``biases`` are given).
    weights, biases: initial parameters (copied into ``dtype``), shapes ``(sizes[l+1], sizes[l])``
        and ``(sizes[l+1],)`` (a column vector ``(sizes[l+1], 1)`` is flattened).

    Raises ``ValueError`` naming the argument, the allowed values and the value got
    (see :mod:`nncore.checks`); ``init`` is checked only when weights are drawn.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        *,
        activation: str = "sigmoid",
        cost: str = "cross_entropy",
        init: str = "default",
        dtype: object = np.float64,
        rng: np.random.Generator | None = None,
        weights: Sequence[np.ndarray] | None = None,
        biases: Sequence[np.ndarray] | None = None,
    ) -> None:
        self.sizes = check_int_sequence(sizes, "sizes", "Network", min_len=2, low=1)
        self.activation = check_choice(activation, "activation", "Network", act.ACTIVATIONS)
        self.cost = check_choice(cost, "cost", "Network", COSTS)
        self.init = init
        self.dtype = check_float_dtype(dtype, "dtype", "Network", allowed=DTYPES)
        if weights is None or biases is None:
            check_choice(init, "init", "Network", INITIALIZERS)
            check_instance(rng, "rng", "Network", np.random.Generator,
                           what="a numpy.random.Generator (required unless weights and biases are given)")
            weights, biases = initialize(init, self.sizes, rng, self.dtype)  # type: ignore[arg-type]
        self.weights = [np.ascontiguousarray(w, dtype=self.dtype) for w in weights]
        self.biases = [np.ascontiguousarray(b, dtype=self.dtype).reshape(-1) for b in biases]
        for l, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            if l >= len(self.weights) or self.weights[l].shape != (n_out, n_in):
                got = self.weights[l].shape if l < len(self.weights) else None
                raise ValueError(f"weights[{l}] must have shape {(n_out, n_in)}, got {got}")
            if l >= len(self.biases) or self.biases[l].shape != (n_out,):
                got = self.biases[l].shape if l < len(self.biases) else None
                raise ValueError(f"biases[{l}] must have shape {(n_out,)}, got {got}")
        if len(self.weights) != len(self.sizes) - 1 or len(self.biases) != len(self.sizes) - 1:
            raise ValueError(f"expected {len(self.sizes) - 1} weight and bias arrays for sizes {self.sizes}")

    # -- structure -------------------------------------------------------
    @property
    def n_layers(self) -> int:
        """Number of weight layers (``len(sizes) - 1``)."""
        return len(self.sizes) - 1

    @property
    def output_activation(self) -> str:
        """Activation of the output layer, fixed by the cost (sigmoid, or softmax for log_likelihood)."""
        return OUTPUT_ACTIVATION[self.cost]

    def layer_activation(self, l: int) -> str:
        """Activation of weight layer ``l`` (0-based)."""
        return self.output_activation if l == self.n_layers - 1 else self.activation

    def copy(self) -> "Network":
        """An independent copy (weights and biases copied)."""
        return Network(
            self.sizes, activation=self.activation, cost=self.cost, init=self.init, dtype=self.dtype,
            weights=[w.copy() for w in self.weights], biases=[b.copy() for b in self.biases],
        )

    def config(self) -> dict:
        """The structural settings (what save/load and trackers record)."""
        return {"sizes": list(self.sizes), "activation": self.activation, "cost": self.cost,
                "init": self.init, "dtype": self.dtype.name}

    # -- maths -----------------------------------------------------------
    def forward(self, X: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Full forward pass: returns ``(zs, activations)``; ``activations[0] is X``."""
        a = np.asarray(X, dtype=self.dtype)
        zs, acts = [], [a]
        for l, (w, b) in enumerate(zip(self.weights, self.biases)):
            # (W @ a.T).T: the same numbers as a @ W.T, but BLAS runs the skinny product ~1.5x faster
            # this way round; z is a Fortran-ordered (m, n_out) view.
            z = (w @ a.T).T
            z += b
            a = act.apply(self.layer_activation(l), z)
            zs.append(z)
            acts.append(a)
        return zs, acts

    def feedforward(self, X: np.ndarray) -> np.ndarray:
        """Output activations for a batch ``X`` of shape ``(m, sizes[0])``."""
        return self.forward(X)[1][-1]

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted class (argmax of the output) for every row of ``X``."""
        return np.argmax(self.feedforward(X), axis=1)

    def data_loss(self, X: np.ndarray, Y: np.ndarray) -> float:
        """Mean per-sample cost over the rows of ``X`` (see :mod:`nncore.costs`)."""
        zs, acts = self.forward(X)
        return summed_loss(self.cost, zs[-1], acts[-1], np.asarray(Y, dtype=self.dtype)) / len(X)

    def total_loss(self, X: np.ndarray, Y: np.ndarray, regularizer: Regularizer, *, n_train: int,
                   batch_size: int = 1) -> float:
        """``data_loss(X, Y) + penalty``; the penalty uses ``n_train`` whatever ``X`` is."""
        return self.data_loss(X, Y) + regularizer.penalty(self.weights, n_train, batch_size)

    def backprop(self, X: np.ndarray, Y: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Gradients of the *data loss* (mean over the rows of ``X``) w.r.t. weights and biases.

        Returns ``(grad_weights, grad_biases)`` with the shapes of ``weights``/``biases``.
        The penalty's gradient is not included (see :meth:`Regularizer.gradient`).
        """
        _, acts = self.forward(X)
        gw, gb = self.gradient_sums(acts, np.asarray(Y, dtype=self.dtype))
        m = len(X)
        return [g / m for g in gw], [g / m for g in gb]

    def gradient_sums(self, acts: list[np.ndarray], Y: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """``sum_x dC_x/dW`` and ``sum_x dC_x/db`` over a batch, from its :meth:`forward` activations."""
        delta = np.empty_like(acts[-1])
        output_delta(self.cost, acts[-1], Y, delta, np.empty_like(delta))
        gw = [np.empty(0)] * self.n_layers
        gb = [np.empty(0)] * self.n_layers
        for l in range(self.n_layers - 1, -1, -1):
            gw[l] = delta.T @ acts[l]
            gb[l] = delta.sum(axis=0)
            if l > 0:
                delta = delta @ self.weights[l]
                act.multiply_by_derivative(self.layer_activation(l - 1), delta, acts[l], np.empty_like(delta))
        return gw, gb
