"""Weight and bias initializers. All draw from an explicit ``numpy.random.Generator``.

Weights have shape ``(n_out, n_in)`` (Nielsen's layout), biases ``(n_out,)``.

* ``default`` (Nielsen): ``W ~ N(0, 1/n_in)``, ``b ~ N(0, 1)``
* ``large`` (Nielsen's ``large_weight_initializer``): ``W ~ N(0, 1)``, ``b ~ N(0, 1)``
* ``xavier`` (Glorot normal): ``W ~ N(0, 2/(n_in + n_out))``, ``b = 0``
* ``he``: ``W ~ N(0, 2/n_in)``, ``b = 0``
"""

from __future__ import annotations

import numpy as np

from nncore.checks import check_choice, check_instance, check_int_sequence

INITIALIZERS = ("default", "large", "xavier", "he")


def initialize(
    name: str, sizes: list[int] | tuple[int, ...], rng: np.random.Generator, dtype: np.dtype | type = np.float64
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Return ``(weights, biases)`` for layer ``sizes`` drawn with ``rng`` (see the module doc).

    Layer ``l`` gets ``W_l = std_w * N`` with ``N`` a ``(n_out, n_in)`` draw of
    ``rng.standard_normal`` and ``b_l = std_b * N'`` (or zeros when
    ``std_b = 0``), drawn layer by layer, weights before biases, so a seed
    fixes every value. Errors name ``init`` (for ``name``), ``rng`` or ``sizes``.
    """
    check_choice(name, "init", "initialize", INITIALIZERS)
    check_instance(rng, "rng", "initialize", np.random.Generator, what="a numpy.random.Generator")
    sizes = check_int_sequence(sizes, "sizes", "initialize", min_len=2, low=1)
    weights, biases = [], []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        if name == "default":
            w_std, b_std = 1.0 / np.sqrt(n_in), 1.0
        elif name == "large":
            w_std, b_std = 1.0, 1.0
        elif name == "xavier":
            w_std, b_std = np.sqrt(2.0 / (n_in + n_out)), 0.0
        else:
            w_std, b_std = np.sqrt(2.0 / n_in), 0.0
        w = rng.standard_normal((n_out, n_in)) * w_std
        b = rng.standard_normal(n_out) * b_std if b_std else np.zeros(n_out)
        weights.append(np.ascontiguousarray(w, dtype=dtype))
        biases.append(np.ascontiguousarray(b, dtype=dtype))
    return weights, biases
