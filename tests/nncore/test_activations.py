"""nncore.activations: values against math-module formulas, derivatives against central
differences, in-place use, and numerical safety at extreme arguments."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from nncore import activations as act

Z = np.array([[-30.0, -5.0, -1.0, -0.25, 0.0], [0.25, 1.0, 2.5, 7.0, 30.0]])


def _elementwise(f, z):
    return np.vectorize(f)(z)


def test_sigmoid_tanh_relu_against_scalar_formulas():
    np.testing.assert_allclose(act.sigmoid(Z), _elementwise(lambda v: 1.0 / (1.0 + math.exp(-v)), Z), rtol=1e-15)
    np.testing.assert_allclose(act.tanh(Z), _elementwise(math.tanh, Z), rtol=1e-15)
    np.testing.assert_array_equal(act.relu(Z), _elementwise(lambda v: max(v, 0.0), Z))
    assert act.relu(np.array([[-0.0, 0.0]])).tolist() == [[0.0, 0.0]]


def test_softmax_rows_against_scalar_formula():
    z = np.array([[1.0, 2.0, 3.0], [-1000.0, 0.0, 1000.0]])
    s = act.softmax(z)
    e = [math.exp(v - 3.0) for v in (1.0, 2.0, 3.0)]
    np.testing.assert_allclose(s[0], [v / sum(e) for v in e], rtol=1e-15)
    np.testing.assert_array_equal(s[1], [0.0, 0.0, 1.0])  # shifted by the max: no overflow
    np.testing.assert_allclose(s.sum(axis=1), 1.0, rtol=1e-15)
    np.testing.assert_allclose(act.softmax(z[:1] + 123.0), s[:1], rtol=1e-14)  # shift invariance


def test_softmax_over_columns_is_the_transpose():
    z = np.random.default_rng(0).normal(size=(4, 6))
    np.testing.assert_allclose(act.softmax(z.T.copy(), axis=0), act.softmax(z).T, rtol=1e-15)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "softmax"])
def test_out_parameter_is_written_in_place(name):
    z = Z.copy()
    out = np.empty_like(z)
    got = act.apply(name, z, out=out)
    assert got is out
    np.testing.assert_array_equal(z, Z)  # input untouched
    np.testing.assert_allclose(out, act.apply(name, Z), rtol=1e-15)
    same = Z.copy()
    act.apply(name, same, out=same)  # aliasing the input is allowed (the training loop does it)
    np.testing.assert_allclose(same, out, rtol=1e-15)


@pytest.mark.parametrize("name", act.ACTIVATIONS)
def test_derivative_through_the_output_matches_central_differences(name):
    z = np.array([[-2.0, -0.7, 0.3, 1.1, 2.6]])  # away from relu's kink at 0
    a = act.apply(name, z)
    delta = np.full_like(z, 3.0)
    act.multiply_by_derivative(name, delta, a, np.empty_like(z))
    h = 1e-6
    numeric = (act.apply(name, z + h) - act.apply(name, z - h)) / (2 * h)
    np.testing.assert_allclose(delta, 3.0 * numeric, rtol=1e-8, atol=1e-12)


def test_log_sigmoid_and_log_softmax_against_scalar_formulas():
    # log sigmoid(v) = -log(1 + e^-v), with log1p so that large v keeps its precision
    np.testing.assert_allclose(act.log_sigmoid(Z), _elementwise(lambda v: -math.log1p(math.exp(-v)), Z),
                               rtol=1e-14)
    z = np.random.default_rng(1).normal(size=(3, 5))
    np.testing.assert_allclose(act.log_softmax(z), np.log(act.softmax(z)), rtol=1e-12, atol=1e-15)


def test_sigmoid_of_large_arguments_is_exact_and_silent():
    z = np.array([[-1e308, -1e4, -800.0, -746.0, 0.0, 40.0, 800.0, 1e4, 1e308]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = act.sigmoid(z)
        ls = act.log_sigmoid(z)
        lsm = act.log_softmax(np.array([[0.0, 1e4]]))
    assert a[0, 0] == 0.0 and a[0, 1] == 0.0 and a[0, 2] == 0.0
    assert a[0, -1] == 1.0 and a[0, -2] == 1.0 and a[0, -3] == 1.0
    assert a[0, 4] == 0.5
    assert a[0, 5] == 1.0 / (1.0 + math.exp(-40.0))
    assert np.all(np.isfinite(ls)) and ls[0, -1] == 0.0 and ls[0, 1] == -1e4
    assert lsm.tolist() == [[-1e4, 0.0]]
    # moderately negative z keeps its relative precision (no 0.5*(1+tanh) cancellation)
    assert act.sigmoid(np.array([[-30.0]]))[0, 0] == pytest.approx(math.exp(-30.0) / (1 + math.exp(-30.0)),
                                                                    rel=1e-14)


def test_float32_stays_float32():
    z = Z.astype(np.float32)
    for name in ("sigmoid", "tanh", "relu", "softmax"):
        assert act.apply(name, z).dtype == np.float32


def test_names():
    assert act.ACTIVATIONS == ("sigmoid", "tanh", "relu")
    assert act.OUTPUT_ACTIVATIONS == ("sigmoid", "softmax")
