"""SGD steps against closed forms computed with an independent per-sample backprop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nncore import Network, Regularizer, TrainConfig, convert_lambda, train
from nncore.train import SGD

SIZES = [4, 5, 3]


# ---------------------------------------------------------------------------
# independent reference: Nielsen's network2.py backprop, one column vector at a time
# ---------------------------------------------------------------------------


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _f(name, z):
    if name == "sigmoid":
        return _sigmoid(z)
    if name == "tanh":
        return np.tanh(z)
    return np.maximum(z, 0.0)


def _fprime(name, z):
    if name == "sigmoid":
        return _sigmoid(z) * (1.0 - _sigmoid(z))
    if name == "tanh":
        return 1.0 - np.tanh(z) ** 2
    return (z > 0).astype(float)


def ref_backprop(weights, biases, x, y, activation, cost):
    """(nabla_w, nabla_b) of C_x for one sample, as in network2.py (column vectors)."""
    L = len(weights)
    a = x.reshape(-1, 1)
    y = y.reshape(-1, 1)
    acts, zs = [a], []
    for l, (w, b) in enumerate(zip(weights, biases)):
        z = w @ a + b.reshape(-1, 1)
        zs.append(z)
        if l < L - 1:
            a = _f(activation, z)
        elif cost == "log_likelihood":
            e = np.exp(z - z.max())
            a = e / e.sum()
        else:
            a = _sigmoid(z)
        acts.append(a)
    if cost == "quadratic":
        delta = (a - y) * _fprime("sigmoid", zs[-1])
    else:  # cross-entropy with sigmoid, log-likelihood with softmax
        delta = a - y
    nw = [None] * L
    nb = [None] * L
    nw[-1] = delta @ acts[-2].T
    nb[-1] = delta.ravel()
    for l in range(2, L + 1):
        delta = (weights[-l + 1].T @ delta) * _fprime(activation, zs[-l])
        nw[-l] = delta @ acts[-l - 1].T
        nb[-l] = delta.ravel()
    return nw, nb


def ref_mean_grad(weights, biases, X, Y, activation, cost):
    gw = [np.zeros_like(w) for w in weights]
    gb = [np.zeros_like(b) for b in biases]
    for x, y in zip(X, Y):
        nw, nb = ref_backprop(weights, biases, x, y, activation, cost)
        for l in range(len(weights)):
            gw[l] += nw[l]
            gb[l] += nb[l]
    m = len(X)
    return [g / m for g in gw], [g / m for g in gb]


def ref_step(weights, biases, X, Y, eta, d, kind, activation, cost, vel=None, mu=0.0):
    """One SGD step, closed form; ``vel`` (list of (vw, vb)) is updated in place when given."""
    gw, gb = ref_mean_grad(weights, biases, X, Y, activation, cost)
    new_w, new_b = [], []
    for l, (w, b) in enumerate(zip(weights, biases)):
        dp = d * w if kind == "l2" else d * np.sign(w) if kind == "l1" else 0.0 * w
        if vel is None:
            if kind == "l2":
                new_w.append((1 - eta * d) * w - eta * gw[l])
            elif kind == "l1":
                new_w.append(w - eta * d * np.sign(w) - eta * gw[l])
            else:
                new_w.append(w - eta * gw[l])
            new_b.append(b - eta * gb[l])
        else:
            vw, vb = vel[l]
            vw = mu * vw - eta * (gw[l] + dp)
            vb = mu * vb - eta * gb[l]
            vel[l] = (vw, vb)
            new_w.append(w + vw)
            new_b.append(b + vb)
    return new_w, new_b


def _data(n, seed=0, n_in=SIZES[0], n_out=SIZES[-1]):
    rng = np.random.default_rng(seed)
    X = rng.random((n, n_in))
    labels = rng.integers(0, n_out, size=n)
    return X, np.eye(n_out)[labels], labels


def _net(activation="sigmoid", cost="cross_entropy", seed=1, sizes=SIZES):
    return Network(sizes, activation=activation, cost=cost, rng=np.random.default_rng(seed))


def _assert_params(net, weights, biases, rtol=1e-11, atol=1e-14):
    for l in range(net.n_layers):
        np.testing.assert_allclose(net.weights[l], weights[l], rtol=rtol, atol=atol)
        np.testing.assert_allclose(net.biases[l], biases[l], rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------
# one full-batch step
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("activation,cost", [("sigmoid", "cross_entropy"), ("tanh", "quadratic"),
                                             ("relu", "log_likelihood"), ("sigmoid", "quadratic")])
@pytest.mark.parametrize("kind", ["l2", "l1", "none"])
def test_one_full_batch_step_equals_closed_form(activation, cost, kind):
    n, eta, lmbda = 8, 0.7, 3.0
    X, Y, labels = _data(n)
    net = _net(activation, cost)
    W0, B0 = [w.copy() for w in net.weights], [b.copy() for b in net.biases]
    cfg = TrainConfig(eta=eta, epochs=1, batch_size=n, lmbda=lmbda, penalty=kind, shuffle=False)
    res = train(net, X, labels, cfg)
    assert res.final.n_steps == 1
    d = lmbda / n if kind != "none" else 0.0
    # written out for the docstring's formulas (no helper for the update itself)
    gw, gb = ref_mean_grad(W0, B0, X, Y, activation, cost)
    for l in range(net.n_layers):
        if kind == "l2":
            expected = (1 - eta * lmbda / n) * W0[l] - eta * gw[l]
        elif kind == "l1":
            expected = W0[l] - eta * (lmbda / n) * np.sign(W0[l]) - eta * gw[l]
        else:
            expected = W0[l] - eta * gw[l]
        np.testing.assert_allclose(net.weights[l], expected, rtol=1e-11, atol=1e-14)
        np.testing.assert_allclose(net.biases[l], B0[l] - eta * gb[l], rtol=1e-11, atol=1e-14)
    assert res.final.decay_factor == pytest.approx(1 - eta * d if kind == "l2" else 1.0, rel=1e-15)


def test_sgd_step_directly_matches_closed_form():
    n, eta, lmbda = 6, 0.3, 2.0
    X, Y, _ = _data(n)
    net = _net("tanh", "cross_entropy")
    W0, B0 = [w.copy() for w in net.weights], [b.copy() for b in net.biases]
    sgd = SGD(net, n, Regularizer("l2", lmbda))
    sgd.step(X, Y, eta, lmbda / n)
    w_ref, b_ref = ref_step(W0, B0, X, Y, eta, lmbda / n, "l2", "tanh", "cross_entropy")
    _assert_params(net, w_ref, b_ref)


def test_biases_are_never_decayed():
    n, eta = 8, 0.5
    X, Y, labels = _data(n)
    nets = {}
    for kind, lmbda in (("l2", 0.0), ("l2", 50.0), ("l1", 50.0)):
        net = _net()
        train(net, X, labels, TrainConfig(eta=eta, epochs=1, batch_size=n, lmbda=lmbda, penalty=kind,
                                          shuffle=False))
        nets[(kind, lmbda)] = net
    base = nets[("l2", 0.0)]
    for key in (("l2", 50.0), ("l1", 50.0)):
        # one step: the bias update only sees the (shared) data gradient at W0
        for l in range(base.n_layers):
            np.testing.assert_array_equal(nets[key].biases[l], base.biases[l])
            assert not np.allclose(nets[key].weights[l], base.weights[l])


# ---------------------------------------------------------------------------
# several steps: momentum, partial last batch
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["l2", "l1"])
def test_momentum_two_steps(kind):
    n, m, eta, mu, lmbda = 8, 4, 0.4, 0.9, 2.0
    X, Y, labels = _data(n)
    net = _net("sigmoid", "quadratic")
    W, B = [w.copy() for w in net.weights], [b.copy() for b in net.biases]
    res = train(net, X, labels, TrainConfig(eta=eta, epochs=1, batch_size=m, lmbda=lmbda, penalty=kind,
                                            momentum=mu, shuffle=False))
    assert res.final.n_steps == 2
    vel = [(np.zeros_like(w), np.zeros_like(b)) for w, b in zip(W, B)]
    for start in (0, m):
        W, B = ref_step(W, B, X[start:start + m], Y[start:start + m], eta, lmbda / n, kind, "sigmoid",
                        "quadratic", vel=vel, mu=mu)
    _assert_params(net, W, B)
    # the velocity really carried over: plain SGD gives different weights
    W_plain, B_plain = [w.copy() for w in _net("sigmoid", "quadratic").weights], [
        b.copy() for b in _net("sigmoid", "quadratic").biases]
    for start in (0, m):
        W_plain, B_plain = ref_step(W_plain, B_plain, X[start:start + m], Y[start:start + m], eta, lmbda / n,
                                    kind, "sigmoid", "quadratic")
    assert not np.allclose(net.weights[0], W_plain[0], rtol=1e-6, atol=0)


def test_momentum_velocity_carries_across_epochs():
    n, eta, mu, lmbda = 6, 0.4, 0.5, 1.0
    X, Y, labels = _data(n)
    net = _net("relu", "log_likelihood")
    W, B = [w.copy() for w in net.weights], [b.copy() for b in net.biases]
    train(net, X, labels, TrainConfig(eta=eta, epochs=2, batch_size=n, lmbda=lmbda, momentum=mu, shuffle=False))
    vel = [(np.zeros_like(w), np.zeros_like(b)) for w, b in zip(W, B)]
    for _ in range(2):
        W, B = ref_step(W, B, X, Y, eta, lmbda / n, "l2", "relu", "log_likelihood", vel=vel, mu=mu)
    _assert_params(net, W, B)


@pytest.mark.parametrize("convention", ["dataset", "per_batch", "decoupled"])
@pytest.mark.parametrize("kind", ["l2", "l1"])
def test_last_partial_batch_is_kept_and_averaged_over_its_size(convention, kind):
    n, m, eta, lmbda = 7, 3, 0.5, 0.3
    X, Y, labels = _data(n)
    net = _net("tanh", "cross_entropy")
    W, B = [w.copy() for w in net.weights], [b.copy() for b in net.biases]
    res = train(net, X, labels, TrainConfig(eta=eta, epochs=1, batch_size=m, lmbda=lmbda, penalty=kind,
                                            convention=convention, shuffle=False))
    assert res.final.n_steps == 3
    factor = 1.0
    for start, size in ((0, 3), (3, 3), (6, 1)):
        d = {"dataset": lmbda / n, "per_batch": lmbda / size, "decoupled": lmbda}[convention]
        W, B = ref_step(W, B, X[start:start + size], Y[start:start + size], eta, d, kind, "tanh",
                        "cross_entropy")
        if kind == "l2":
            factor *= 1 - eta * d
    _assert_params(net, W, B)
    assert res.final.decay_factor == pytest.approx(factor, rel=1e-14)


def test_partial_batch_differs_from_dropping_it():
    """Guard for the test above: the single-row batch does change the weights."""
    n, m = 7, 3
    X, Y, labels = _data(n)
    net = _net()
    W, B = [w.copy() for w in net.weights], [b.copy() for b in net.biases]
    train(net, X, labels, TrainConfig(eta=0.5, epochs=1, batch_size=m, shuffle=False))
    for start in (0, 3):
        W, B = ref_step(W, B, X[start:start + m], Y[start:start + m], 0.5, 0.0, "none", "sigmoid",
                        "cross_entropy")
    assert not np.allclose(net.weights[0], W[0])


# ---------------------------------------------------------------------------
# conventions and the decay factor
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["l2", "l1"])
@pytest.mark.parametrize("momentum", [0.0, 0.8])
def test_converted_lambdas_give_identical_weights(kind, momentum):
    n, m, lmbda = 24, 6, 3.0
    X, _, labels = _data(n, seed=5)
    alpha = convert_lambda(lmbda, from_convention="dataset", to_convention="per_batch", n_train=n, batch_size=m)
    wd = convert_lambda(alpha, from_convention="per_batch", to_convention="decoupled", n_train=n, batch_size=m)
    assert alpha == pytest.approx(lmbda * m / n, rel=1e-15)
    assert wd == pytest.approx(lmbda / n, rel=1e-15)
    back = convert_lambda(wd, from_convention="decoupled", to_convention="dataset", n_train=n, batch_size=m)
    assert back == pytest.approx(lmbda, rel=1e-15)
    results = []
    for conv, lam in (("dataset", lmbda), ("per_batch", alpha), ("decoupled", wd)):
        net = _net(seed=11)
        res = train(net, X, labels, TrainConfig(eta=0.6, epochs=2, batch_size=m, lmbda=lam, penalty=kind,
                                                convention=conv, momentum=momentum), rng=7)
        results.append((net, res))
    (ref_net, ref_res), others = results[0], results[1:]
    for net, res in others:
        for l in range(ref_net.n_layers):
            np.testing.assert_allclose(net.weights[l], ref_net.weights[l], rtol=1e-12, atol=0)
            np.testing.assert_allclose(net.biases[l], ref_net.biases[l], rtol=1e-12, atol=0)
        assert res.final.train.penalty == pytest.approx(ref_res.final.train.penalty, rel=1e-12)
        assert res.final.decay_factor == pytest.approx(ref_res.final.decay_factor, rel=1e-12)
    # and the strength matters at all (else the comparison above is empty)
    plain = _net(seed=11)
    train(plain, X, labels, TrainConfig(eta=0.6, epochs=2, batch_size=m, momentum=momentum), rng=7)
    assert not np.allclose(plain.weights[0], ref_net.weights[0], rtol=1e-6, atol=0)


@pytest.mark.parametrize("n,m", [(12, 4), (30, 10), (16, 16)])
def test_record_decay_factor_closed_form(n, m):
    eta, lmbda = 0.5, 2.5
    X, _, labels = _data(n)
    res = train(_net(), X, labels, TrainConfig(eta=eta, epochs=2, batch_size=m, lmbda=lmbda))
    assert (res.records[0].epoch, res.records[0].n_steps, res.records[0].decay_factor) == (0, 0, None)
    for rec in res.records[1:]:
        assert rec.n_steps == n // m
        assert rec.decay_factor == pytest.approx((1 - eta * lmbda / n) ** (n / m), rel=1e-13)
    # L1 and no penalty: no multiplicative decay
    for kind in ("l1", "none"):
        r = train(_net(), X, labels, TrainConfig(eta=eta, epochs=1, batch_size=m, lmbda=lmbda, penalty=kind))
        assert r.final.decay_factor == 1.0


@pytest.mark.parametrize("convention", ["dataset", "per_batch"])
def test_momentum_decay_factor_is_the_effective_steady_state_factor(convention):
    """With momentum mu the record's factor is prod(1 - eta*d/(1 - mu)) (docs: an approximation);
    mu = 0 gives the exact prod(1 - eta*d). n % m != 0: the partial batch uses its own d under per_batch."""
    n, m, eta, lmbda = 14, 4, 0.3, 0.4
    X, _, labels = _data(n)
    factors = {}
    for mu in (0.0, 0.9):
        res = train(_net(), X, labels, TrainConfig(eta=eta, epochs=2, batch_size=m, lmbda=lmbda,
                                                   convention=convention, momentum=mu), rng=0)
        sizes = [4, 4, 4, 2]
        d = [lmbda / n if convention == "dataset" else lmbda / size for size in sizes]
        expected = float(np.prod([1 - eta * di / (1 - mu) for di in d]))
        for rec in res.records[1:]:
            assert rec.decay_factor == pytest.approx(expected, rel=1e-14)
            for stats in rec.layers:
                assert stats.decay_pull == pytest.approx(-np.log(expected), rel=1e-12)
        factors[mu] = res.final.decay_factor
    assert factors[0.9] < factors[0.0] < 1.0  # momentum amplifies the decay: x10 per step at mu = 0.9


def test_momentum_factor_describes_the_steady_state_decay():
    """Oracle for the approximation: a layer whose data gradient is 0 (all-zero inputs, one layer) under
    heavy-ball decay, v <- mu v - a W; W <- W + v (a = eta*d), i.e. W_(k+1) = (1 + mu - a) W_k - mu W_(k-1).
    Once the velocity has built up the norm shrinks per step by the dominant root lam of
    x^2 - (1 + mu - a) x + mu = 0; lam = 1 - a/(1 - mu) + O(a^2): the record's effective factor, not 1 - a."""
    n, m, eta, lmbda, mu = 8, 8, 0.1, 0.4, 0.5  # one step per epoch, a = eta*d = 0.005
    net = Network([3, 2], rng=np.random.default_rng(0))
    res = train(net, np.zeros((n, 3)), np.arange(n) % 2,
                TrainConfig(eta=eta, epochs=40, batch_size=m, lmbda=lmbda, momentum=mu), rng=0)
    a = eta * lmbda / n
    lam = ((1 + mu - a) + math.sqrt((1 + mu - a) ** 2 - 4 * mu)) / 2
    effective = 1 - a / (1 - mu)
    assert res.final.decay_factor == pytest.approx(effective, rel=1e-15)
    assert abs(lam - effective) < 2 * a * a / (1 - mu) ** 3 < abs(lam - (1 - a)) / 10
    for prev, rec in zip(res.records[-6:], res.records[-5:]):
        stats = rec.layers[0]
        assert stats.weight_fro / prev.layers[0].weight_fro == pytest.approx(lam, rel=1e-9)
        # what the approximation misses ends up in grad_push: ln(lam / effective), O(a^2)
        assert stats.grad_push == pytest.approx(math.log(lam / effective), rel=1e-6)
