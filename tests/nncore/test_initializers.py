"""nncore.initializers: the scale of every initializer, drawn with a seeded Generator.

Statistical tolerances. For ``N`` independent draws of ``N(0, s^2)`` the mean of
squares estimates ``s^2`` with relative standard deviation ``sqrt(2/N)``, the mean
has standard deviation ``s/sqrt(N)``, and the fraction of draws within one ``s``
is ``0.6827`` with standard deviation ``sqrt(0.6827 * 0.3173 / N)``. Each check
below allows about five of those standard deviations, so a correct initializer
passes for practically any seed, while the nearest wrong formula (e.g. Xavier's
``2/(n_in+n_out)`` against ``1/n_in``: 14% apart on the first layer, or a uniform
distribution: 58% within one ``s``) fails by far more.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from nncore.initializers import INITIALIZERS, initialize

SIZES = [400, 300, 200]  # 120,000 and 60,000 weights


def _expected_var(name: str, n_in: int, n_out: int) -> tuple[float, float]:
    """(weight variance, bias variance) from the formulas in the module docstring."""
    return {
        "default": (1.0 / n_in, 1.0),
        "large": (1.0, 1.0),
        "xavier": (2.0 / (n_in + n_out), 0.0),
        "he": (2.0 / n_in, 0.0),
    }[name]


def _check_normal(x: np.ndarray, var: float) -> None:
    n = x.size
    s = math.sqrt(var)
    ms = float(np.mean(x.astype(np.float64) ** 2))
    assert ms == pytest.approx(var, rel=5 * math.sqrt(2.0 / n)), "variance"
    assert abs(float(x.mean())) < 5 * s / math.sqrt(n), "mean"
    within = float(np.mean(np.abs(x) < s))
    assert within == pytest.approx(0.6827, abs=5 * math.sqrt(0.6827 * 0.3173 / n)), "normal shape"


@pytest.mark.parametrize("name", INITIALIZERS)
def test_weight_scale(name):
    weights, _ = initialize(name, SIZES, np.random.default_rng(12345))
    for w, n_in, n_out in zip(weights, SIZES[:-1], SIZES[1:]):
        assert w.shape == (n_out, n_in)
        _check_normal(w, _expected_var(name, n_in, n_out)[0])


@pytest.mark.parametrize("name", INITIALIZERS)
def test_bias_scale(name):
    sizes = [2, 20_000]  # many biases: relative sd of the variance estimate 1%
    _, biases = initialize(name, sizes, np.random.default_rng(54321))
    b = biases[0]
    assert b.shape == (20_000,)
    var = _expected_var(name, *sizes)[1]
    if var == 0.0:
        assert np.all(b == 0.0)
    else:
        _check_normal(b, var)


def test_formulas_are_distinguishable_at_this_size():
    """Guard for the tolerances above: the nearest two weight variances differ by > 5 tolerances (25 sd)."""
    n_in, n_out = SIZES[0], SIZES[1]
    variances = sorted(_expected_var(name, n_in, n_out)[0] for name in INITIALIZERS)
    tol = 5 * math.sqrt(2.0 / (n_in * n_out))
    assert min(b / a - 1 for a, b in zip(variances, variances[1:])) > 5 * tol


def test_draw_order_is_weights_then_biases_layer_by_layer():
    weights, biases = initialize("default", [3, 2, 1], np.random.default_rng(7))
    rng = np.random.default_rng(7)
    np.testing.assert_allclose(weights[0], rng.standard_normal((2, 3)) / math.sqrt(3), rtol=1e-15)
    np.testing.assert_array_equal(biases[0], rng.standard_normal(2))
    np.testing.assert_allclose(weights[1], rng.standard_normal((1, 2)) / math.sqrt(2), rtol=1e-15)
    np.testing.assert_array_equal(biases[1], rng.standard_normal(1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_and_seed_reproducibility(dtype):
    a = initialize("he", [5, 4, 3], np.random.default_rng(1), dtype)
    b = initialize("he", [5, 4, 3], np.random.default_rng(1), dtype)
    c = initialize("he", [5, 4, 3], np.random.default_rng(2), dtype)
    for x, y in zip(a[0] + a[1], b[0] + b[1]):
        assert x.dtype == dtype and x.flags.c_contiguous
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0][0], c[0][0])


@pytest.mark.parametrize(("args", "match"), [
    (("orthogonal", [2, 3], np.random.default_rng(0)),
     r"^The 'init' parameter of initialize must be a str among \{'default', 'large', 'xavier', 'he'\}"),
    (("he", [2, 3], 0), r"^The 'rng' parameter of initialize must be a numpy\.random\.Generator\. Got 0"),
    (("he", [2, 3], np.random.RandomState(0)), "'rng' parameter"),
    (("he", [2], np.random.default_rng(0)), "'sizes' parameter of initialize"),
])
def test_errors_name_the_argument(args, match):
    with pytest.raises(ValueError, match=match):
        initialize(*args)
