"""nncore.network: forward/backward shapes and dtypes, batch of 1, and the row layout against
Nielsen's column-vector layout, computed independently here."""

from __future__ import annotations

import numpy as np
import pytest

from nncore import Network
from nncore.costs import COSTS

SIZES = [5, 7, 4, 3]
ACTIVATIONS = ("sigmoid", "tanh", "relu")
DTYPES = (np.float64, np.float32)
#: relative tolerance of float32 results against a float64 reference (a few ulps of float32 per layer)
RTOL = {np.float64: 1e-12, np.float32: 2e-5}


def _f(name, z):
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0.0)
    e = np.exp(z - z.max(axis=0, keepdims=True))  # softmax over a column
    return e / e.sum(axis=0, keepdims=True)


def _net(activation="sigmoid", cost="cross_entropy", dtype=np.float64, seed=0, sizes=SIZES):
    return Network(sizes, activation=activation, cost=cost, dtype=dtype, rng=np.random.default_rng(seed))


def _column_forward(net: Network, x: np.ndarray) -> np.ndarray:
    """Nielsen's network2.py feedforward for one sample: a column vector, ``a <- f(W a + b)``, in float64."""
    a = np.asarray(x, dtype=np.float64).reshape(-1, 1)
    for l, (w, b) in enumerate(zip(net.weights, net.biases)):
        z = w.astype(np.float64) @ a + b.astype(np.float64).reshape(-1, 1)
        a = _f(net.layer_activation(l), z)
    return a.ravel()


def _inputs(m, n=SIZES[0], seed=1):
    return np.random.default_rng(seed).normal(size=(m, n))


# ---------------------------------------------------------------------------
# forward
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [1, 6])
def test_forward_shapes_and_dtypes(dtype, m):
    net = _net(dtype=dtype)
    X = _inputs(m).astype(dtype)
    zs, acts = net.forward(X)
    assert len(zs) == net.n_layers and len(acts) == net.n_layers + 1
    assert acts[0] is X or np.shares_memory(acts[0], X)  # the input itself, not a copy
    for l in range(net.n_layers):
        assert zs[l].shape == (m, SIZES[l + 1]) and acts[l + 1].shape == (m, SIZES[l + 1])
        assert zs[l].dtype == dtype and acts[l + 1].dtype == dtype
    assert net.feedforward(X).shape == (m, SIZES[-1])


def test_float32_network_casts_float64_inputs():
    net = _net(dtype=np.float32)
    out = net.feedforward(_inputs(3))  # float64 in
    assert out.dtype == np.float32


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_row_layout_equals_column_layout(activation, cost, dtype):
    """Samples as rows (``a @ W.T + b``) give Nielsen's per-sample column results."""
    net = _net(activation, cost, dtype)
    X = _inputs(9)
    out = net.feedforward(X.astype(dtype))
    for i, x in enumerate(X.astype(dtype)):
        np.testing.assert_allclose(out[i], _column_forward(net, x), rtol=RTOL[dtype], atol=1e-7)


def test_whole_batch_in_columns_equals_rows():
    """One matrix product per layer with samples as columns, ``A <- f(W A + b)``, is the transpose."""
    net = _net("tanh", "log_likelihood")
    X = _inputs(8)
    A = X.T
    for l, (w, b) in enumerate(zip(net.weights, net.biases)):
        A = _f(net.layer_activation(l), w @ A + b[:, None])
    np.testing.assert_allclose(net.feedforward(X), A.T, rtol=1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_of_one_equals_its_row_in_a_batch(dtype):
    net = _net("relu", "log_likelihood", dtype)
    X = _inputs(5).astype(dtype)
    batch = net.feedforward(X)
    for i in range(5):
        np.testing.assert_allclose(net.feedforward(X[i:i + 1])[0], batch[i], rtol=RTOL[dtype])


def test_output_activation_follows_the_cost():
    assert _net(cost="quadratic").output_activation == "sigmoid"
    assert _net(cost="cross_entropy").output_activation == "sigmoid"
    soft = _net(activation="relu", cost="log_likelihood")
    assert soft.output_activation == "softmax"
    assert [soft.layer_activation(l) for l in range(3)] == ["relu", "relu", "softmax"]
    np.testing.assert_allclose(soft.feedforward(_inputs(4)).sum(axis=1), 1.0, rtol=1e-15)


def test_predict_is_argmax_of_output():
    net = _net()
    X = _inputs(20)
    np.testing.assert_array_equal(net.predict(X), net.feedforward(X).argmax(axis=1))


# ---------------------------------------------------------------------------
# backward
# ---------------------------------------------------------------------------


def _targets(m, seed=2):
    return np.eye(SIZES[-1])[np.random.default_rng(seed).integers(0, SIZES[-1], size=m)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [1, 5])
def test_backprop_shapes_and_dtypes(dtype, m):
    net = _net(dtype=dtype)
    gw, gb = net.backprop(_inputs(m).astype(dtype), _targets(m))
    assert [g.shape for g in gw] == [w.shape for w in net.weights]
    assert [g.shape for g in gb] == [b.shape for b in net.biases]
    assert all(g.dtype == dtype for g in gw + gb)


@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_batch_of_one_gradient_matches_central_differences(activation, cost):
    """Independent oracle: (C(p + h) - C(p - h)) / 2h on a handful of weights and every output bias."""
    net = _net(activation, cost, seed=3)
    X, Y = _inputs(1, seed=4), _targets(1, seed=5)
    gw, gb = net.backprop(X, Y)
    h = 1e-6
    probes = [(net.weights[0], gw[0], (2, 3)), (net.weights[1], gw[1], (0, 6)), (net.weights[2], gw[2], (1, 2))]
    probes += [(net.biases[2], gb[2], (j,)) for j in range(SIZES[-1])]
    for param, grad, idx in probes:
        old = param[idx]
        param[idx] = old + h
        up = net.data_loss(X, Y)
        param[idx] = old - h
        down = net.data_loss(X, Y)
        param[idx] = old
        assert grad[idx] == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-9)


def test_batch_gradient_is_the_mean_of_single_sample_gradients():
    net = _net("tanh", "quadratic")
    X, Y = _inputs(6), _targets(6)
    gw, gb = net.backprop(X, Y)
    singles = [net.backprop(X[i:i + 1], Y[i:i + 1]) for i in range(6)]
    for l in range(net.n_layers):
        np.testing.assert_allclose(gw[l], np.mean([s[0][l] for s in singles], axis=0), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(gb[l], np.mean([s[1][l] for s in singles], axis=0), rtol=1e-12, atol=1e-15)


def test_float32_gradients_follow_float64_gradients():
    net64 = _net("sigmoid", "cross_entropy")
    net32 = Network(SIZES, dtype=np.float32, weights=net64.weights, biases=net64.biases)
    X, Y = _inputs(4), _targets(4)
    for g32, g64 in zip(sum(net32.backprop(X, Y), []), sum(net64.backprop(X, Y), [])):
        np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------
# structure, copies, validation
# ---------------------------------------------------------------------------


def test_given_weights_are_used_and_copy_is_independent():
    w = [np.arange(6.0).reshape(3, 2), np.ones((1, 3))]
    b = [np.zeros(3), np.array([[0.5]])]  # a column vector is flattened
    net = Network([2, 3, 1], weights=w, biases=b)
    assert net.biases[1].shape == (1,) and net.n_layers == 2
    np.testing.assert_array_equal(net.weights[0], w[0])
    twin = net.copy()
    twin.weights[0][0, 0] = 99.0
    assert net.weights[0][0, 0] == 0.0
    assert twin.config() == net.config() == {"sizes": [2, 3, 1], "activation": "sigmoid",
                                             "cost": "cross_entropy", "init": "default", "dtype": "float64"}


@pytest.mark.parametrize("args,kwargs,name", [
    (([5],), {}, "sizes"), (([],), {}, "sizes"), (([5, 0, 3],), {}, "sizes"), (([5, 2.5, 3],), {}, "sizes"),
    ((SIZES,), {"activation": "softplus"}, "activation"),
    ((SIZES,), {"cost": "hinge"}, "cost"),
    ((SIZES,), {"init": "orthogonal"}, "init"),
    ((SIZES,), {"dtype": np.int32}, "dtype"), ((SIZES,), {"dtype": "float16"}, "dtype"),
    ((SIZES,), {"dtype": "not-a-dtype"}, "dtype"),
    ((SIZES,), {"rng": None}, "rng"),
    ((SIZES,), {"rng": 3}, "rng"),
])
def test_bad_network_raises_value_error_naming_argument(args, kwargs, name):
    kwargs = {"rng": np.random.default_rng(0), **kwargs}
    with pytest.raises(ValueError, match=f"^The '{name}' parameter of Network must be "):
        Network(*args, **kwargs)


def test_network_error_messages():
    with pytest.raises(ValueError, match=r"^The 'sizes' parameter of Network must be a sequence of at least 2 ints "
                                         r"in the range \[1, inf\)\. Got \[5, 0\] instead\.$"):
        Network([5, 0], rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"^The 'rng' parameter of Network must be a numpy\.random\.Generator "
                                         r"\(required unless weights and biases are given\)\. Got None instead\.$"):
        Network([5, 2])
    with pytest.raises(ValueError, match=r"'activation' parameter of Network must be a str among "
                                         r"\{'sigmoid', 'tanh', 'relu'\}\. Got 'softplus'"):
        Network([5, 2], activation="softplus", rng=np.random.default_rng(0))


def test_bad_network_weight_shapes():
    with pytest.raises(ValueError, match=r"weights\[1\]"):
        Network([5, 8, 3], weights=[np.zeros((8, 5)), np.zeros((3, 7))], biases=[np.zeros(8), np.zeros(3)])
    with pytest.raises(ValueError, match=r"biases\[0\]"):
        Network([5, 8, 3], weights=[np.zeros((8, 5)), np.zeros((3, 8))], biases=[np.zeros(7), np.zeros(3)])
    with pytest.raises(ValueError, match=r"weights\[1\] must have shape \(3, 8\), got None"):
        Network([5, 8, 3], weights=[np.zeros((8, 5))], biases=[np.zeros(8), np.zeros(3)])
