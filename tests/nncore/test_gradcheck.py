"""Backpropagation (penalty included) against finite differences, and the costs against closed forms."""

from __future__ import annotations

import numpy as np
import pytest

import nncore
from nncore import Network, Regularizer, gradient_check

SIZES = [5, 4, 3, 3]
COSTS = ("quadratic", "cross_entropy", "log_likelihood")
ACTIVATIONS = ("sigmoid", "tanh", "relu")
#: (penalty, convention); every convention for L2, and L1 under two of them.
PENALTIES = (
    ("none", "dataset"),
    ("l2", "dataset"),
    ("l2", "per_batch"),
    ("l2", "decoupled"),
    ("l1", "dataset"),
    ("l1", "per_batch"),
)
N_TRAIN = 20  # differs from the batch checked (6 rows) and from BATCH_SIZE
BATCH_SIZE = 4
LMBDA = 2.0


def _problem(cost: str, activation: str, seed: int = 3) -> tuple[Network, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    net = Network(SIZES, activation=activation, cost=cost, rng=rng)
    X = rng.normal(size=(6, SIZES[0]))
    labels = rng.integers(0, SIZES[-1], size=6)
    Y = np.eye(SIZES[-1])[labels]
    return net, X, Y


@pytest.mark.parametrize("penalty,convention", PENALTIES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("cost", COSTS)
def test_backprop_matches_finite_differences(cost, activation, penalty, convention):
    net, X, Y = _problem(cost, activation)
    reg = Regularizer(penalty, LMBDA if penalty != "none" else 0.0, convention)
    before = [w.copy() for w in net.weights] + [b.copy() for b in net.biases]
    res = gradient_check(net, X, Y, reg, n_train=N_TRAIN, batch_size=BATCH_SIZE)
    assert res.max_rel_error <= 1e-6, res
    n_params = sum(w.size + b.size for w, b in zip(net.weights, net.biases))
    if penalty == "l1":
        assert n_params * 0.8 <= res.n_checked <= n_params  # only weights near a kink are skipped
    else:
        assert res.n_checked == n_params
    # the checked network is not modified
    after = [w for w in net.weights] + [b for b in net.biases]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_gradient_check_of_float32_network_runs_in_float64():
    net, X, Y = _problem("cross_entropy", "sigmoid")
    net32 = Network(SIZES, cost="cross_entropy", dtype=np.float32, weights=net.weights, biases=net.biases)
    res = gradient_check(net32, X, Y, Regularizer("l2", LMBDA), n_train=N_TRAIN, batch_size=BATCH_SIZE)
    assert res.max_rel_error <= 1e-6
    assert net32.weights[0].dtype == np.float32


def test_wrong_backprop_gradient_is_detected(monkeypatch):
    net, X, Y = _problem("cross_entropy", "sigmoid")
    original = Network.backprop

    def scaled(self, X, Y):
        gw, gb = original(self, X, Y)
        return [g * 1.01 for g in gw], [g * 1.01 for g in gb]

    monkeypatch.setattr(Network, "backprop", scaled)
    res = gradient_check(net, X, Y, Regularizer("l2", LMBDA), n_train=N_TRAIN, batch_size=BATCH_SIZE)
    assert res.max_rel_error > 1e-3


def test_one_wrong_bias_gradient_is_detected_and_located(monkeypatch):
    net, X, Y = _problem("log_likelihood", "tanh")
    original = Network.backprop

    def wrong(self, X, Y):
        gw, gb = original(self, X, Y)
        gb = [g.copy() for g in gb]
        gb[1][2] += 1e-2
        return gw, gb

    monkeypatch.setattr(Network, "backprop", wrong)
    res = gradient_check(net, X, Y)
    assert res.max_rel_error > 1e-3
    assert res.worst_parameter == "layer2/biases[2]"


@pytest.mark.parametrize("penalty", ["l2", "l1"])
def test_missing_penalty_gradient_is_detected(monkeypatch, penalty):
    net, X, Y = _problem("quadratic", "sigmoid")
    monkeypatch.setattr(Regularizer, "gradient", lambda self, w, rate: np.zeros_like(w))
    res = gradient_check(net, X, Y, Regularizer(penalty, LMBDA), n_train=N_TRAIN, batch_size=BATCH_SIZE)
    assert res.max_rel_error > 1e-3


# ---------------------------------------------------------------------------
# the losses themselves, against closed forms written here
# ---------------------------------------------------------------------------


def _reference_costs(net: Network, X: np.ndarray, Y: np.ndarray) -> float:
    """Mean per-sample cost with a per-sample column-vector forward pass (Nielsen's layout)."""
    f = {"sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)), "tanh": np.tanh, "relu": lambda z: np.maximum(z, 0.0)}
    total = 0.0
    for x, y in zip(X, Y):
        a = x.reshape(-1, 1)
        for l, (w, b) in enumerate(zip(net.weights, net.biases)):
            z = w @ a + b.reshape(-1, 1)
            if l < net.n_layers - 1:
                a = f[net.activation](z)
            elif net.cost == "log_likelihood":
                a = np.exp(z) / np.exp(z).sum()
            else:
                a = f["sigmoid"](z)
        y = y.reshape(-1, 1)
        if net.cost == "quadratic":
            total += 0.5 * float(np.linalg.norm(a - y) ** 2)
        elif net.cost == "cross_entropy":
            total += float(np.sum(-y * np.log(a) - (1 - y) * np.log(1 - a)))
        else:
            total += -float(np.log(a[int(np.argmax(y))])[0])
    return total / len(X)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("cost", COSTS)
def test_data_loss_matches_closed_form(cost, activation):
    net, X, Y = _problem(cost, activation)
    assert net.data_loss(X, Y) == pytest.approx(_reference_costs(net, X, Y), rel=1e-12)
    reg = Regularizer("l2", LMBDA)
    expected_penalty = LMBDA / (2 * N_TRAIN) * sum(float((w**2).sum()) for w in net.weights)
    assert net.total_loss(X, Y, reg, n_train=N_TRAIN) == pytest.approx(
        _reference_costs(net, X, Y) + expected_penalty, rel=1e-12)


def test_penalty_closed_forms_for_every_convention():
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=(4, 5)), rng.normal(size=(3, 4))]
    sq = sum(float((w**2).sum()) for w in weights)
    ab = sum(float(np.abs(w).sum()) for w in weights)
    n, m, lam = 50, 7, 2.0
    d = {"dataset": lam / n, "per_batch": lam / m, "decoupled": lam}
    for conv, rate in d.items():
        assert Regularizer("l2", lam, conv).penalty(weights, n, m) == pytest.approx(rate / 2 * sq, rel=1e-13)
        assert Regularizer("l1", lam, conv).penalty(weights, n, m) == pytest.approx(rate * ab, rel=1e-13)
        assert Regularizer("none", lam, conv).penalty(weights, n, m) == 0.0
    assert nncore.decay_rate(lam, "per_batch", n_train=n, batch_size=m) == lam / m
