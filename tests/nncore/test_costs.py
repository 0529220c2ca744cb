"""nncore.costs: each cost's value and output delta against hand computations on a 2-sample batch.

The batch is chosen so that every activation is exact: with ``ln 3`` in ``z``,
``sigmoid(0) = 1/2``, ``sigmoid(ln 3) = 3/4``, ``sigmoid(-ln 3) = 1/4`` and
``softmax([0, ln 3]) = [1/4, 3/4]``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from nncore import Network
from nncore.costs import COSTS, OUTPUT_ACTIVATION, output_delta, summed_loss

LN3 = math.log(3.0)
Z = np.array([[0.0, LN3], [-LN3, 0.0]])
Y = np.array([[1.0, 0.0], [0.0, 1.0]])
A_SIGMOID = np.array([[0.5, 0.75], [0.25, 0.5]])
A_SOFTMAX = np.array([[0.25, 0.75], [0.25, 0.75]])

#: sum over the two samples of C_x, worked out by hand (see each line)
HAND_SUM = {
    # 0.5*((1/2-1)^2 + (3/4)^2) + 0.5*((1/4)^2 + (1/2-1)^2) = 0.40625 + 0.15625
    "quadratic": 0.5625,
    # -(ln 1/2 + ln(1 - 3/4)) - (ln(1 - 1/4) + ln 1/2) = 3 ln 2 + ln(8/3)
    "cross_entropy": 3 * math.log(2.0) + math.log(8.0 / 3.0),
    # -ln(1/4) - ln(3/4) = ln(16/3)
    "log_likelihood": math.log(16.0 / 3.0),
}
#: dC_x/dz per sample (rows), by hand
HAND_DELTA = {
    # (a - y) * a * (1 - a)
    "quadratic": np.array([[-0.5 * 0.25, 0.75 * 0.1875], [0.25 * 0.1875, -0.5 * 0.25]]),
    # a - y
    "cross_entropy": np.array([[-0.5, 0.75], [0.25, -0.5]]),
    "log_likelihood": np.array([[-0.75, 0.75], [0.25, -0.25]]),
}


def _a(cost):
    return A_SOFTMAX if OUTPUT_ACTIVATION[cost] == "softmax" else A_SIGMOID


def _one_layer_net(cost, dtype=np.float64):
    """A [2, 2] network whose pre-activations on the identity inputs are exactly Z."""
    return Network([2, 2], cost=cost, dtype=dtype, weights=[np.array([[0.0, -LN3], [LN3, 0.0]])],
                   biases=[np.zeros(2)])


def test_output_activations():
    assert OUTPUT_ACTIVATION == {"quadratic": "sigmoid", "cross_entropy": "sigmoid", "log_likelihood": "softmax"}


@pytest.mark.parametrize("cost", COSTS)
def test_summed_loss_by_hand(cost):
    assert summed_loss(cost, Z, _a(cost), Y) == pytest.approx(HAND_SUM[cost], rel=1e-14)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cost", COSTS)
def test_data_loss_is_the_mean_over_the_batch(cost, dtype):
    net = _one_layer_net(cost, dtype)
    X = np.eye(2)
    np.testing.assert_allclose(net.feedforward(X), _a(cost), rtol=1e-6 if dtype == np.float32 else 1e-15)
    rel = 1e-6 if dtype == np.float32 else 1e-14
    assert net.data_loss(X, Y) == pytest.approx(HAND_SUM[cost] / 2, rel=rel)
    # each sample alone gives its own share; their mean is the batch value
    singles = [net.data_loss(X[i:i + 1], Y[i:i + 1]) for i in range(2)]
    assert np.mean(singles) == pytest.approx(HAND_SUM[cost] / 2, rel=rel)


@pytest.mark.parametrize("cost", COSTS)
def test_output_delta_by_hand(cost):
    out, tmp = np.empty((2, 2)), np.empty((2, 2))
    got = output_delta(cost, _a(cost), Y, out, tmp)
    assert got is out
    np.testing.assert_allclose(out, HAND_DELTA[cost], rtol=1e-15, atol=1e-16)


@pytest.mark.parametrize("cost", COSTS)
def test_output_delta_is_the_derivative_of_the_cost(cost):
    """Independent oracle: central differences of C_x with respect to each z_j."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 4))
    y = np.eye(4)[[2, 0, 3]]

    def act(z):
        if OUTPUT_ACTIVATION[cost] == "softmax":
            e = np.exp(z - z.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        return 1.0 / (1.0 + np.exp(-z))

    delta = output_delta(cost, act(z), y, np.empty_like(z), np.empty_like(z))
    h = 1e-6
    for i in range(3):
        for j in range(4):
            zp, zm = z.copy(), z.copy()
            zp[i, j] += h
            zm[i, j] -= h
            num = (summed_loss(cost, zp, act(zp), y) - summed_loss(cost, zm, act(zm), y)) / (2 * h)
            assert delta[i, j] == pytest.approx(num, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("cost", COSTS)
def test_backprop_averages_the_output_delta_over_the_batch(cost):
    net = _one_layer_net(cost)
    gw, gb = net.backprop(np.eye(2), Y)
    np.testing.assert_allclose(gb[0], HAND_DELTA[cost].mean(axis=0), rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(gw[0], HAND_DELTA[cost].T @ np.eye(2) / 2, rtol=1e-14, atol=1e-16)


def test_saturated_outputs_give_large_finite_losses_silently():
    z = np.array([[-800.0, 800.0]])
    y = np.array([[1.0, 0.0]])
    a = np.array([[0.0, 1.0]])  # what sigmoid / softmax give in floating point
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ce = summed_loss("cross_entropy", z, a, y)
        ll = summed_loss("log_likelihood", z, a, y)
    # -ln sigmoid(-800) - ln(1 - sigmoid(800)) = 800 + 800 (+ negligible); -ln softmax_0 = 1600
    assert ce == pytest.approx(1600.0, rel=1e-12)
    assert ll == pytest.approx(1600.0, rel=1e-12)


def test_float32_inputs_are_accumulated_in_float64():
    n = 200_000
    a = np.full((n, 1), 0.1, dtype=np.float32)
    y = np.zeros((n, 1), dtype=np.float32)
    got = summed_loss("quadratic", a, a, y)
    assert type(got) is float
    assert got == pytest.approx(0.5 * n * float(np.float32(0.1)) ** 2, rel=1e-9)


def test_unknown_cost_is_named():
    with pytest.raises(ValueError, match=r"^The 'cost' parameter of summed_loss must be a str among "
                                         r"\{'quadratic', 'cross_entropy', 'log_likelihood'\}\. Got 'hinge'"):
        summed_loss("hinge", Z, A_SIGMOID, Y)
