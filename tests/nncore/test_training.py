"""Input validation, divergence, stopping rules, dtypes, numerical safety and learning."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest

from nncore import DivergenceError, Network, TrainConfig, train

SIZES = [5, 8, 3]


def _data(n=30, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, SIZES[0])), rng.integers(0, SIZES[-1], size=n)


def _net(seed=1, **kw):
    return Network(SIZES, rng=np.random.default_rng(seed), **kw)


# ---------------------------------------------------------------------------
# validation: every error names its argument
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,name", [
    ({"eta": 0.0}, "eta"), ({"eta": -0.5}, "eta"), ({"eta": math.nan}, "eta"), ({"eta": math.inf}, "eta"),
    ({"eta": "0.5"}, "eta"), ({"eta": True}, "eta"),
    ({"lmbda": -1e-9}, "lmbda"), ({"lmbda": math.nan}, "lmbda"), ({"lmbda": math.inf}, "lmbda"),
    ({"batch_size": 0}, "batch_size"), ({"batch_size": -3}, "batch_size"), ({"batch_size": 2.0}, "batch_size"),
    ({"epochs": 0}, "epochs"), ({"epochs": -1}, "epochs"),
    ({"momentum": 1.0}, "momentum"), ({"momentum": -0.1}, "momentum"),
    ({"penalty": "l3"}, "penalty"), ({"convention": "per_sample"}, "convention"),
    ({"early_stopping": 0}, "early_stopping"), ({"schedule_patience": 0}, "schedule_patience"),
    ({"schedule_factor": 1.0}, "schedule_factor"), ({"min_eta_ratio": 0.0}, "min_eta_ratio"),
])
def test_bad_config_raises_value_error_naming_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"^The '{name}' parameter of TrainConfig must be "):
        TrainConfig(**kwargs)


def test_config_messages_give_allowed_values_and_value_got():
    with pytest.raises(ValueError, match=r"^The 'eta' parameter of TrainConfig must be a float in the range "
                                         r"\(0\.0, inf\)\. Got -1 instead\.$"):
        TrainConfig(eta=-1)
    with pytest.raises(ValueError, match=r"^The 'momentum' parameter of TrainConfig must be a float in the range "
                                         r"\[0\.0, 1\.0\)\. Got 1\.0 instead\.$"):
        TrainConfig(momentum=1.0)
    with pytest.raises(ValueError, match=r"^The 'penalty' parameter of TrainConfig must be a str among "
                                         r"\{'none', 'l2', 'l1'\}\. Got 'l3' instead\.$"):
        TrainConfig(penalty="l3")
    with pytest.raises(ValueError, match=r"^The 'epochs' parameter of TrainConfig must be an int in the range "
                                         r"\[1, inf\)\. Got 0 instead\.$"):
        TrainConfig(epochs=0)


def test_config_accepts_numpy_scalars_and_stores_python_numbers():
    cfg = TrainConfig(eta=np.float32(0.5), epochs=np.int64(3), batch_size=np.int32(5), lmbda=np.float16(2),
                      momentum=np.float64(0.25), early_stopping=np.int8(2), schedule_factor=np.float32(0.5))
    assert (cfg.eta, cfg.epochs, cfg.batch_size, cfg.lmbda, cfg.momentum) == (0.5, 3, 5, 2.0, 0.25)
    assert [type(v) for v in (cfg.eta, cfg.lmbda, cfg.momentum, cfg.schedule_factor)] == [float] * 4
    assert [type(v) for v in (cfg.epochs, cfg.batch_size, cfg.early_stopping)] == [int] * 3
    assert cfg == TrainConfig(eta=0.5, epochs=3, batch_size=5, lmbda=2.0, momentum=0.25, early_stopping=2)


def test_config_monitor_must_be_a_string():
    with pytest.raises(ValueError, match="^The 'monitor' parameter of TrainConfig must be a str"):
        TrainConfig(monitor=3)  # type: ignore[arg-type]


def test_bad_training_inputs_raise_value_error_naming_argument():
    X, y = _data()
    cfg = TrainConfig(epochs=1, batch_size=5)
    with pytest.raises(ValueError, match=r"^The 'batch_size' parameter of TrainConfig must be an int in the range "
                                         r"\[1, 30\] for n_train=30 training rows\. Got 31 instead\.$"):
        train(_net(), X, y, TrainConfig(epochs=1, batch_size=31))
    with pytest.raises(ValueError, match="inputs and targets"):
        train(_net(), X, y[:-1], cfg)
    with pytest.raises(ValueError, match="inputs and targets"):
        train(_net(), X[:-2], np.eye(3)[y], cfg)
    bad = X.copy()
    bad[7, 2] = np.nan
    with pytest.raises(ValueError, match="training inputs must be finite.*row 7"):
        train(_net(), bad, y, cfg)
    bad[7, 2] = np.inf
    with pytest.raises(ValueError, match="training inputs must be finite"):
        train(_net(), bad, y, cfg)
    with pytest.raises(ValueError, match="evaluation inputs must be finite"):
        train(_net(), X, y, cfg, eval_data=(bad, y))
    with pytest.raises(ValueError, match="training inputs must have shape"):
        train(_net(), X[:, :4], y, cfg)
    with pytest.raises(ValueError, match="training inputs must have shape"):
        train(_net(), X.ravel(), y, cfg)
    with pytest.raises(ValueError, match="training targets"):
        train(_net(), X, y.astype(float), cfg)  # 1-d float "labels"
    with pytest.raises(ValueError, match="training targets labels"):
        train(_net(), X, y + 1, cfg)  # label 3 with 3 outputs
    with pytest.raises(ValueError, match="training targets"):
        train(_net(), X, np.eye(4)[y], cfg)
    with pytest.raises(ValueError, match="training targets must be finite"):
        Y = np.eye(3)[y]
        Y[0, 0] = np.nan
        train(_net(), X, Y, cfg)
    with pytest.raises(ValueError, match="^The 'config' parameter of train must be an nncore.TrainConfig"):
        train(_net(), X, y, {"eta": 0.5})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="^The 'rng' parameter of train must be a numpy.random.Generator, an int"):
        train(_net(), X, y, cfg, rng="seed")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="^The 'monitor' parameter of TrainConfig must be one of the epoch"):
        train(_net(), X, y, TrainConfig(epochs=1, batch_size=5, monitor="eval/accuracy"))


def test_nothing_is_trained_when_validation_fails():
    X, y = _data()
    net = _net()
    before = [w.copy() for w in net.weights]
    with pytest.raises(ValueError):
        train(net, X, y[:-1], TrainConfig(epochs=1, batch_size=5))
    for a, b in zip(before, net.weights):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------
# divergence
# ---------------------------------------------------------------------------


def test_huge_weights_raise_divergence_error():
    X, y = _data()
    net = _net()
    net.weights[0][...] = 1e300
    with pytest.raises(DivergenceError, match="epoch 1") as exc:
        train(net, X, y, TrainConfig(eta=0.5, epochs=5, batch_size=5))
    assert exc.value.epoch == 1
    assert isinstance(exc.value, FloatingPointError)
    assert exc.value.record is not None and exc.value.record.epoch == 1


def test_huge_eta_raises_divergence_error():
    X, y = _data()
    with pytest.raises(DivergenceError, match="epoch 1") as exc:
        train(_net(activation="relu", cost="log_likelihood"), X, y, TrainConfig(eta=1e200, epochs=5, batch_size=5))
    assert exc.value.epoch == 1


def test_divergence_at_a_later_epoch_names_that_epoch():
    # decoupled decay with eta*wd = 1e20 multiplies the weights by (1 - 1e20) every step: they grow
    # geometrically until their squares overflow, a few epochs in
    X, y = _data()
    seen = []
    with pytest.raises(DivergenceError) as exc:
        train(_net(), X, y, TrainConfig(eta=1.0, lmbda=1e20, convention="decoupled", epochs=50, batch_size=30),
              callbacks=[seen.append])
    err = exc.value
    assert err.epoch > 1
    assert err.epoch == len(seen) + 1  # the diverged epoch is not handed to callbacks
    assert f"epoch {err.epoch}" in str(err)
    assert [r.epoch for r in seen] == list(range(1, err.epoch))


# ---------------------------------------------------------------------------
# callbacks, early stopping, schedule
# ---------------------------------------------------------------------------


def test_callback_returning_true_stops_after_that_epoch():
    X, y = _data()
    seen_a, seen_b = [], []

    def stop_at_2(rec):
        seen_a.append(rec)
        return rec.epoch == 2

    res = train(_net(), X, y, TrainConfig(epochs=10, batch_size=5), callbacks=[stop_at_2, seen_b.append])
    assert res.stop_reason == "callback"
    assert [r.epoch for r in res.records] == [1, 2]
    assert seen_a == res.records and seen_b == res.records  # every callback sees every record
    # only `True` stops: truthy non-True values do not
    res = train(_net(), X, y, TrainConfig(epochs=3, batch_size=5), callbacks=[lambda rec: 1])
    assert res.stop_reason == "completed" and len(res.records) == 3


def test_callback_exception_propagates():
    X, y = _data()

    class Pruned(Exception):
        pass

    def prune(rec):
        raise Pruned(rec.epoch)

    with pytest.raises(Pruned):
        train(_net(), X, y, TrainConfig(epochs=3, batch_size=5), callbacks=[prune])


@pytest.mark.parametrize("k", [1, 3])
def test_early_stopping_when_monitor_never_improves(k):
    X, y = _data()
    Xe, ye = _data(12, seed=4)
    # with lmbda = 0 the eval penalty is exactly 0.0 every epoch: it never improves after epoch 1
    res = train(_net(), X, y, TrainConfig(epochs=20, batch_size=5, early_stopping=k, monitor="eval/penalty"),
                eval_data=(Xe, ye))
    assert res.stop_reason == "early_stopping"
    assert len(res.records) == 1 + k


def test_early_stopping_does_not_fire_while_improving():
    X, y = _data()
    # full-batch gradient descent with a small step decreases the training loss every epoch
    res = train(_net(), X, y, TrainConfig(eta=0.05, epochs=15, batch_size=30, shuffle=False, early_stopping=1,
                                          monitor="train/data_loss"))
    losses = [r.train.data for r in res.records]
    assert all(b < a for a, b in zip(losses, losses[1:]))
    assert res.stop_reason == "completed" and len(res.records) == 15


def test_accuracy_monitor_is_maximized():
    X, y = _data()
    res = train(_net(), X, y, TrainConfig(epochs=8, batch_size=5, early_stopping=2, monitor="train/accuracy"),
                rng=0)
    acc = [r.train.accuracy for r in res.records]
    # replay the rule: stop once 2 epochs in a row did not beat the best accuracy so far
    best, since, expected_len = -1.0, 0, len(acc)
    for i, a in enumerate(acc):
        if a > best:
            best, since = a, 0
        else:
            since += 1
        if since >= 2:
            expected_len = i + 1
            break
    assert len(res.records) == expected_len


def test_schedule_halves_eta_after_patience_and_stops_at_floor():
    X, y = _data()
    Xe, ye = _data(12, seed=4)
    eta = 0.8
    res = train(_net(), X, y, TrainConfig(eta=eta, epochs=30, batch_size=5, schedule_patience=2,
                                          monitor="eval/penalty", min_eta_ratio=0.25),
                eval_data=(Xe, ye))
    # epoch 1 sets the best; after epochs 3, 5, 7 (two non-improving epochs each) eta is halved;
    # the third halving gives eta/8 < eta/4: stop after epoch 7
    assert [r.eta for r in res.records] == [eta, eta, eta, eta / 2, eta / 2, eta / 4, eta / 4]
    assert res.stop_reason == "schedule_floor"


def test_schedule_eta_is_used_for_the_steps():
    """After halving, the recorded eta is the one the updates used (checked on a full-batch run)."""
    X, y = _data()
    Xe, ye = _data(12, seed=4)
    net = _net()
    snaps = [[w.copy() for w in net.weights] + [b.copy() for b in net.biases]]
    res = train(net, X, y, TrainConfig(eta=0.5, epochs=3, batch_size=30, shuffle=False, schedule_patience=1,
                                       monitor="eval/penalty"),
                eval_data=(Xe, ye), callbacks=[lambda r: snaps.append([p.copy() for p in net.weights + net.biases])])
    assert [r.eta for r in res.records] == [0.5, 0.5, 0.25]
    # replay epoch 3 from the epoch-2 weights with eta = 0.25
    ref = Network(SIZES, weights=snaps[2][:2], biases=snaps[2][2:])
    gw, gb = ref.backprop(X, np.eye(3)[y])
    np.testing.assert_allclose(net.weights[0], snaps[2][0] - 0.25 * gw[0], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(net.biases[1], snaps[2][3] - 0.25 * gb[1], rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------
# dtypes and numerical safety
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("momentum,penalty", [(0.0, "l2"), (0.5, "l1")])
def test_float32_networks_stay_float32_and_train(momentum, penalty):
    from nncore.datasets import load_digits

    d = load_digits(dtype=np.float64)
    net = Network([64, 20, 10], rng=np.random.default_rng(0), dtype="float32")
    res = train(net, d.train.X, d.train.labels, TrainConfig(eta=0.5, epochs=3, lmbda=1.0, penalty=penalty,
                                                            momentum=momentum),
                eval_data=(d.eval.X, d.eval.labels), rng=0)
    assert all(w.dtype == np.float32 for w in net.weights)
    assert all(b.dtype == np.float32 for b in net.biases)
    assert net.feedforward(d.eval.X).dtype == np.float32
    assert res.final.eval.accuracy > 0.8
    assert all(math.isfinite(v) for v in res.final.to_metrics().values())
    # the float32 run follows the float64 run closely
    net64 = Network([64, 20, 10], rng=np.random.default_rng(0))
    res64 = train(net64, d.train.X, d.train.labels, TrainConfig(eta=0.5, epochs=3, lmbda=1.0, penalty=penalty,
                                                                momentum=momentum),
                  eval_data=(d.eval.X, d.eval.labels), rng=0)
    assert res.final.train.data == pytest.approx(res64.final.train.data, rel=1e-2)


@pytest.mark.parametrize("cost", ["quadratic", "cross_entropy", "log_likelihood"])
def test_saturated_network_trains_without_warnings(cost):
    X, y = _data()
    net = _net(cost=cost)
    net.weights[0] *= 1e4  # hidden sigmoids saturate at exactly 0 / 1
    net.weights[1] *= 1e3  # and so do the outputs
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zs, acts = net.forward(X)
        res = train(net, X, y, TrainConfig(epochs=2, batch_size=5))
    z, hidden = zs[0], acts[1]
    far = np.abs(z) > 800
    assert far.mean() > 0.5
    np.testing.assert_array_equal(hidden[far], (z[far] > 0).astype(float))  # exact limits 0 and 1
    assert math.isfinite(res.final.train.total)


# ---------------------------------------------------------------------------
# learning
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_digits_with_cli_defaults_reaches_90_percent():
    from nncore.cli import build_parser, run

    res = run(build_parser().parse_args([]), out=io.StringIO())
    assert res.stop_reason == "completed"
    assert len(res.records) == 30
    assert res.network.sizes == [64, 30, 10]
    assert res.final.eval.accuracy >= 0.90


@pytest.mark.slow
def test_mnist_t10k_reaches_92_percent(mnist_t10k_dir):
    from nncore.datasets import load_mnist

    data = load_mnist(mnist_t10k_dir, n_train=8000, n_eval=2000)
    assert data.train.n == 8000 and data.eval.n == 2000
    net = Network([784, 30, 10], cost="cross_entropy", rng=np.random.default_rng(0))
    res = train(net, data.train.X, data.train.Y,
                TrainConfig(eta=0.5, epochs=30, batch_size=10, lmbda=5.0, convention="dataset"),
                eval_data=(data.eval.X, data.eval.Y), rng=0)
    assert len(res.records) == 30
    assert res.final.eval.accuracy >= 0.92
