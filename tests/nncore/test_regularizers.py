"""nncore.regularizers: penalty values, decay rates, the three conventions and convert_lambda,
all against hand computations; biases are never decayed; lambda types accepted consistently."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from nncore import Network, TrainConfig
from nncore.regularizers import CONVENTIONS, PENALTIES, Regularizer, convert_lambda, decay_rate

W1 = np.array([[1.0, -2.0], [3.0, 0.0]])
W2 = np.array([[-1.0, 2.0]])
SUM_SQ = 1 + 4 + 9 + 0 + 1 + 4  # 19
SUM_ABS = 1 + 2 + 3 + 0 + 1 + 2  # 9
N, M, LAM = 10, 5, 2.0
#: d per convention for lambda = 2, n = 10, m = 5
RATE = {"dataset": 2.0 / 10, "per_batch": 2.0 / 5, "decoupled": 2.0}


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_decay_rate_by_hand(convention):
    assert decay_rate(LAM, convention, n_train=N, batch_size=M) == RATE[convention]
    assert Regularizer("l2", LAM, convention).rate(N, M) == RATE[convention]


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_penalty_values_by_hand(convention):
    d = RATE[convention]
    assert Regularizer("l2", LAM, convention).penalty([W1, W2], N, M) == pytest.approx(d / 2 * SUM_SQ, rel=1e-15)
    assert Regularizer("l1", LAM, convention).penalty([W1, W2], N, M) == pytest.approx(d * SUM_ABS, rel=1e-15)
    assert Regularizer("none", LAM, convention).penalty([W1, W2], N, M) == 0.0


def test_dataset_convention_is_nielsens_formula():
    # network2.py: 0.5 * (lmbda / n) * sum ||w||^2 -> 0.5 * 0.2 * 19 = 1.9
    assert Regularizer("l2", 2.0).penalty([W1, W2], 10, 5) == pytest.approx(1.9, rel=1e-15)


def test_inactive_regularizers_have_zero_rate():
    assert not Regularizer("none", 5.0).active and Regularizer("none", 5.0).rate(N, M) == 0.0
    assert not Regularizer("l2", 0.0).active and Regularizer("l1", 0.0).rate(N, M) == 0.0
    assert Regularizer("l1", 1e-12).active


def test_gradients_by_hand():
    d = 0.3
    np.testing.assert_array_equal(Regularizer("l2", 1.0).gradient(W1, d), d * W1)
    np.testing.assert_array_equal(Regularizer("l1", 1.0).gradient(W1, d), [[d, -d], [d, 0.0]])  # sign(0) = 0
    np.testing.assert_array_equal(Regularizer("none", 1.0).gradient(W1, d), np.zeros((2, 2)))


@pytest.mark.parametrize(("kind", "convention"), [("l2", "dataset"), ("l2", "per_batch"), ("l1", "decoupled")])
def test_gradient_is_the_derivative_of_the_penalty(kind, convention):
    """Independent oracle: central differences of the penalty (|w| is smooth away from 0)."""
    reg = Regularizer(kind, LAM, convention)
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=(3, 4)), rng.normal(size=(2, 3))]
    h = 1e-6
    for w in weights:
        grad = reg.gradient(w, reg.rate(N, M))
        for idx in np.ndindex(w.shape):
            old = w[idx]
            w[idx] = old + h
            up = reg.penalty(weights, N, M)
            w[idx] = old - h
            down = reg.penalty(weights, N, M)
            w[idx] = old
            assert grad[idx] == pytest.approx((up - down) / (2 * h), rel=1e-6, abs=1e-10)


# ---------------------------------------------------------------------------
# conversions between conventions
# ---------------------------------------------------------------------------


def test_convert_lambda_by_hand():
    kw = {"n_train": 50_000, "batch_size": 10}
    # alpha = lmbda * m / n;  wd = lmbda / n
    assert convert_lambda(5.0, from_convention="dataset", to_convention="per_batch", **kw) == pytest.approx(1e-3)
    assert convert_lambda(5.0, from_convention="dataset", to_convention="decoupled", **kw) == pytest.approx(1e-4)
    assert convert_lambda(1e-3, from_convention="per_batch", to_convention="dataset", **kw) == pytest.approx(5.0)
    assert convert_lambda(1e-4, from_convention="decoupled", to_convention="per_batch", **kw) == pytest.approx(1e-3)
    assert convert_lambda(3.0, from_convention="per_batch", to_convention="per_batch", **kw) == 3.0


@pytest.mark.parametrize(("a", "b"), list(itertools.permutations(CONVENTIONS, 2)))
def test_convert_lambda_round_trip_keeps_the_decay_rate(a, b):
    n, m, lam = 1234, 17, 0.37
    there = convert_lambda(lam, from_convention=a, to_convention=b, n_train=n, batch_size=m)
    back = convert_lambda(there, from_convention=b, to_convention=a, n_train=n, batch_size=m)
    assert back == pytest.approx(lam, rel=1e-15)
    assert decay_rate(there, b, n_train=n, batch_size=m) == pytest.approx(
        decay_rate(lam, a, n_train=n, batch_size=m), rel=1e-15)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"from_convention": "per_sample"}, r"'from_convention' parameter of convert_lambda must be a str among"),
    ({"to_convention": "l2"}, "'to_convention' parameter"),
    ({"n_train": 0}, r"'n_train' parameter of convert_lambda must be an int in the range \[1, inf\)\. Got 0"),
    ({"batch_size": 2.5}, r"'batch_size' parameter .* Got 2\.5"),
    ({"value": math.nan}, "'value' parameter of convert_lambda must be a float"),
    ({"value": True}, "'value' parameter"),
    ({"batch_size": 11}, r"^The 'batch_size' parameter of convert_lambda must be an int in the range \[1, 10\] for "
                         r"n_train=10\. Got 11 instead\.$"),
])
def test_convert_lambda_errors(kwargs, match):
    args = {"value": 1.0, "from_convention": "dataset", "to_convention": "decoupled", "n_train": 10,
            "batch_size": 2, **kwargs}
    value = args.pop("value")
    with pytest.raises(ValueError, match=match):
        convert_lambda(value, **args)


def test_convert_lambda_accepts_batch_size_equal_to_n_train():
    assert convert_lambda(2.0, from_convention="dataset", to_convention="per_batch", n_train=10,
                          batch_size=10) == 2.0


@pytest.mark.parametrize("n,m", [(7, 3), (10, 4), (12, 4)])
def test_per_batch_conversion_differs_only_at_the_partial_batch(n, m):
    """The docstring's claim, measured: per_batch alpha vs dataset lmbda = alpha*n/m over one epoch. The
    decay factors differ by (1 - eta*alpha/m') / (1 - eta*alpha/m), m' = n % m (equal when m divides n)."""
    from nncore import train

    eta, alpha = 0.5, 0.6
    lmbda = convert_lambda(alpha, from_convention="per_batch", to_convention="dataset", n_train=n, batch_size=m)
    assert lmbda == pytest.approx(alpha * n / m, rel=1e-15)
    rng = np.random.default_rng(0)
    X, y = rng.random((n, 3)), rng.integers(0, 2, n)
    factors = {}
    for conv, lam in (("per_batch", alpha), ("dataset", lmbda)):
        net = Network([3, 2], rng=np.random.default_rng(1))
        res = train(net, X, y, TrainConfig(eta=eta, epochs=1, batch_size=m, lmbda=lam, convention=conv,
                                           shuffle=False))
        factors[conv] = res.final.decay_factor
    # by hand: ceil(n/m) - 1 full steps decay by (1 - eta*alpha/m) in both; the last differs when n % m != 0
    full = (1 - eta * alpha / m) ** (n // m)
    assert factors["dataset"] == pytest.approx(full * ((1 - eta * alpha / m) if n % m else 1.0), rel=1e-14)
    expected_ratio = (1 - eta * alpha / (n % m)) / (1 - eta * alpha / m) if n % m else 1.0
    assert factors["per_batch"] / factors["dataset"] == pytest.approx(expected_ratio, rel=1e-14)
    if n % m:
        assert abs(expected_ratio - 1) > 0.05  # a real difference, not rounding


def test_per_batch_partial_step_by_hand():
    """One epoch of n = 7, m = 3 with a one-layer net and all-zero inputs (zero data gradient for W):
    W is multiplied by the decays only, so the two conventions' weights differ by exactly 0.7/0.9."""
    from nncore import train

    n, m, eta, alpha = 7, 3, 0.5, 0.6  # eta*alpha = 0.3; m' = 1
    lmbda = convert_lambda(alpha, from_convention="per_batch", to_convention="dataset", n_train=n, batch_size=m)
    weights = {}
    for conv, lam in (("per_batch", alpha), ("dataset", lmbda)):
        net = Network([3, 2], rng=np.random.default_rng(1))
        w0 = net.weights[0].copy()
        train(net, np.zeros((n, 3)), np.arange(n) % 2, TrainConfig(eta=eta, epochs=1, batch_size=m, lmbda=lam,
                                                                    convention=conv))
        weights[conv] = net.weights[0]
    np.testing.assert_allclose(weights["dataset"], 0.9**3 * w0, rtol=1e-14)
    np.testing.assert_allclose(weights["per_batch"], 0.9**2 * 0.7 * w0, rtol=1e-14)


def test_decay_rate_errors():
    with pytest.raises(ValueError, match="'convention' parameter of decay_rate"):
        decay_rate(1.0, "per_sample", n_train=10, batch_size=2)
    with pytest.raises(ValueError, match="'n_train' parameter of decay_rate"):
        decay_rate(1.0, "dataset", n_train=0, batch_size=2)
    with pytest.raises(ValueError, match="'batch_size' parameter of decay_rate"):
        decay_rate(1.0, "per_batch", n_train=10, batch_size=True)
    with pytest.raises(ValueError, match="'lmbda' parameter of decay_rate must be a float"):
        decay_rate("2", "decoupled", n_train=10, batch_size=2)  # type: ignore[arg-type]
    assert type(decay_rate(np.float32(0.5), "per_batch", n_train=10, batch_size=np.int64(2))) is float


# ---------------------------------------------------------------------------
# biases are never decayed
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["l2", "l1"])
def test_biases_do_not_enter_the_penalty(kind):
    reg = Regularizer(kind, LAM)
    net = Network([2, 2, 1], weights=[W1, W2], biases=[np.zeros(2), np.zeros(1)])
    X, Y = np.array([[0.3, 0.7]]), np.array([[1.0]])
    expected = RATE["dataset"] / 2 * SUM_SQ if kind == "l2" else RATE["dataset"] * SUM_ABS
    for b in (0.0, 100.0):  # huge biases: the penalty does not move
        net.biases[0][:] = b
        net.biases[1][:] = -b
        assert net.total_loss(X, Y, reg, n_train=N) - net.data_loss(X, Y) == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------------------
# validation, and lambda types accepted the same way as TrainConfig
# ---------------------------------------------------------------------------


def test_kind_and_convention_messages():
    with pytest.raises(ValueError, match=r"^The 'kind' parameter of Regularizer must be a str among "
                                         r"\{'none', 'l2', 'l1'\}\. Got 'l3' instead\.$"):
        Regularizer("l3")
    with pytest.raises(ValueError, match=r"^The 'convention' parameter of Regularizer must be a str among"):
        Regularizer("l2", 1.0, "per_sample")
    assert PENALTIES == ("none", "l2", "l1") and CONVENTIONS == ("dataset", "per_batch", "decoupled")


GOOD_LAMBDAS = [0, 2, 0.5, np.float32(0.5), np.float16(0.25), np.float64(0.5), np.int64(3), np.uint8(1),
                Fraction(1, 4)]
BAD_LAMBDAS = [True, False, np.bool_(True), -1e-9, np.float32(-0.5), math.nan, math.inf, np.float32("inf"), "0.5",
               None, complex(1, 0)]


@pytest.mark.parametrize("lmbda", GOOD_LAMBDAS, ids=repr)
def test_any_real_lambda_is_accepted_by_regularizer_and_trainconfig(lmbda):
    reg = Regularizer("l2", lmbda)
    assert type(reg.lmbda) is float and reg.lmbda == float(lmbda)
    assert type(reg.rate(10, 5)) is float  # no NumPy scalar leaks into the decay arithmetic
    assert reg.to_dict() == {"penalty": "l2", "lmbda": float(lmbda), "convention": "dataset"}
    cfg = TrainConfig(lmbda=lmbda)
    assert cfg.regularizer == reg


@pytest.mark.parametrize("lmbda", BAD_LAMBDAS, ids=repr)
def test_the_same_lambdas_are_refused_by_regularizer_and_trainconfig(lmbda):
    with pytest.raises(ValueError, match=r"^The 'lmbda' parameter of Regularizer must be a float in the range "
                                         r"\[0\.0, inf\)\. Got .* instead\.$"):
        Regularizer("l2", lmbda)
    with pytest.raises(ValueError, match=r"^The 'lmbda' parameter of TrainConfig must be a float in the range "
                                         r"\[0\.0, inf\)"):
        TrainConfig(lmbda=lmbda)


def test_float32_lambda_trains_like_the_equal_float():
    """The issue's case: a numpy.float32 lambda from TrainConfig reaches the Regularizer and trains."""
    from nncore import train

    rng = np.random.default_rng(0)
    X, y = rng.random((20, 3)), rng.integers(0, 2, 20)
    results = []
    for lmbda in (np.float32(0.5), float(np.float32(0.5))):
        net = Network([3, 2], rng=np.random.default_rng(1))
        train(net, X, y, TrainConfig(epochs=2, batch_size=5, lmbda=lmbda), rng=0)
        results.append(net.weights[0])
    np.testing.assert_array_equal(results[0], results[1])
