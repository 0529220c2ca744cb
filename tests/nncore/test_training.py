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


@pytest.mark.parametrize("value", ["maximize", "MAX", "", 1, True])
def test_config_monitor_mode_must_be_max_min_or_none(value):
    with pytest.raises(ValueError, match=r"^The 'monitor_mode' parameter of TrainConfig must be a str among "
                                         r"\{'max', 'min'\}, or None\. Got .* instead\.$"):
        TrainConfig(monitor_mode=value)  # type: ignore[arg-type]
    assert [TrainConfig(monitor_mode=v).monitor_mode for v in ("max", "min", None)] == ["max", "min", None]


def test_config_record_initial_must_be_a_bool():
    with pytest.raises(ValueError, match=r"^The 'record_initial' parameter of TrainConfig must be a bool\. "
                                         r"Got 1 instead\.$"):
        TrainConfig(record_initial=1)  # type: ignore[arg-type]
    assert TrainConfig(record_initial=np.bool_(False)).record_initial is False
    assert TrainConfig().record_initial is True


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


@pytest.mark.parametrize("record_initial,epoch", [(True, 0), (False, 1)])
def test_huge_weights_raise_divergence_error(record_initial, epoch):
    X, y = _data()
    net = _net()
    net.weights[0][...] = 1e300
    seen = []
    with pytest.raises(DivergenceError, match=f"epoch {epoch} in layer1") as exc:
        train(net, X, y, TrainConfig(eta=0.5, epochs=5, batch_size=5, record_initial=record_initial),
              callbacks=[seen.append])
    assert exc.value.epoch == epoch and exc.value.layer == 1
    assert isinstance(exc.value, FloatingPointError)
    assert exc.value.record is not None and exc.value.record.epoch == epoch
    assert seen == []
    assert ("before any step" in str(exc.value)) == (epoch == 0)


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
    assert err.epoch == len(seen)  # epochs 0 .. err.epoch - 1 were; the diverged epoch is not handed to callbacks
    assert f"epoch {err.epoch}" in str(err)
    assert [r.epoch for r in seen] == list(range(0, err.epoch))


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
    assert [r.epoch for r in res.records] == [0, 1, 2]
    assert seen_a == res.records and seen_b == res.records  # every callback sees every record, epoch 0 first
    # only `True` (or numpy.bool_(True)) stops: other truthy values do not
    res = train(_net(), X, y, TrainConfig(epochs=3, batch_size=5), callbacks=[lambda rec: 1])
    assert res.stop_reason == "completed" and [r.epoch for r in res.records] == [0, 1, 2, 3]
    res = train(_net(), X, y, TrainConfig(epochs=3, batch_size=5), callbacks=[lambda rec: np.bool_(False)])
    assert res.stop_reason == "completed" and len(res.records) == 4


def test_callback_returning_numpy_true_stops():
    """E.g. ``lambda rec: rec.to_metrics()["train/accuracy"] > np.float64(0.5)`` returns numpy.bool_."""
    X, y = _data()
    seen = []
    res = train(_net(), X, y, TrainConfig(epochs=10, batch_size=5),
                callbacks=[lambda rec: np.int64(rec.epoch) >= 2, seen.append])
    assert res.stop_reason == "callback"
    assert [r.epoch for r in res.records] == [0, 1, 2] and seen == res.records


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
    # (epoch 0 is never the best: the count starts at epoch 1)
    res = train(_net(), X, y, TrainConfig(epochs=20, batch_size=5, early_stopping=k, monitor="eval/penalty"),
                eval_data=(Xe, ye))
    assert res.stop_reason == "early_stopping"
    assert [r.epoch for r in res.records] == list(range(0, 2 + k))


def test_early_stopping_does_not_fire_while_improving():
    X, y = _data()
    # full-batch gradient descent with a small step decreases the training loss every epoch
    res = train(_net(), X, y, TrainConfig(eta=0.05, epochs=15, batch_size=30, shuffle=False, early_stopping=1,
                                          monitor="train/data_loss"))
    losses = [r.train.data for r in res.records]
    assert all(b < a for a, b in zip(losses, losses[1:]))
    assert res.stop_reason == "completed" and res.final.epoch == 15


def test_accuracy_monitor_is_maximized():
    X, y = _data()
    res = train(_net(), X, y, TrainConfig(epochs=8, batch_size=5, early_stopping=2, monitor="train/accuracy"),
                rng=0)
    acc = [r.train.accuracy for r in res.records if r.epoch >= 1]
    # replay the rule: stop once 2 epochs in a row did not beat the best accuracy so far (from epoch 1)
    best, since, expected_len = -1.0, 0, len(acc)
    for i, a in enumerate(acc):
        if a > best:
            best, since = a, 0
        else:
            since += 1
        if since >= 2:
            expected_len = i + 1
            break
    assert len(res.records) == 1 + expected_len


def test_monitor_mode_overrides_the_name_rule():
    X, y = _data()
    cfg = dict(eta=0.05, epochs=10, batch_size=30, shuffle=False, early_stopping=1, monitor="train/data_loss")
    # the loss falls every epoch (see above): minimized it always improves, maximized never after epoch 1
    assert train(_net(), X, y, TrainConfig(**cfg)).stop_reason == "completed"
    assert train(_net(), X, y, TrainConfig(**cfg, monitor_mode="min")).stop_reason == "completed"
    res = train(_net(), X, y, TrainConfig(**cfg, monitor_mode="max"))
    assert res.stop_reason == "early_stopping" and res.final.epoch == 2
    # and an accuracy can be minimized
    res = train(_net(), X, y, TrainConfig(epochs=8, batch_size=5, early_stopping=2, monitor="train/accuracy",
                                          monitor_mode="min"), rng=0)
    acc = [r.train.accuracy for r in res.records if r.epoch >= 1]
    best, since = math.inf, 0
    for i, a in enumerate(acc, start=1):
        best, since = (a, 0) if a < best else (best, since + 1)
        if since >= 2:
            break
    assert res.final.epoch == i


def test_an_undefined_monitor_value_is_not_judged():
    """Under L1 ``layer1/decay_pull`` is undefined (absent): early stopping never counts those epochs."""
    X, y = _data()
    res = train(_net(), X, y, TrainConfig(epochs=4, batch_size=5, lmbda=1.0, penalty="l1", early_stopping=1,
                                          monitor="layer1/decay_pull", monitor_mode="max"))
    assert res.stop_reason == "completed" and res.final.epoch == 4


def test_schedule_halves_eta_after_patience_and_stops_at_floor():
    X, y = _data()
    Xe, ye = _data(12, seed=4)
    eta = 0.8
    res = train(_net(), X, y, TrainConfig(eta=eta, epochs=30, batch_size=5, schedule_patience=2,
                                          monitor="eval/penalty", min_eta_ratio=0.25),
                eval_data=(Xe, ye))
    # epoch 1 sets the best; after epochs 3, 5, 7 (two non-improving epochs each) eta is halved;
    # the third halving gives eta/8 < eta/4: stop after epoch 7. Epoch 0 records the initial eta.
    assert [r.eta for r in res.records] == [eta, eta, eta, eta, eta / 2, eta / 2, eta / 4, eta / 4]
    assert res.final.epoch == 7
    assert res.stop_reason == "schedule_floor"


def test_schedule_eta_is_used_for_the_steps():
    """After halving, the recorded eta is the one the updates used (checked on a full-batch run)."""
    X, y = _data()
    Xe, ye = _data(12, seed=4)
    net = _net()
    snaps = []  # snaps[e]: the parameters after epoch e (snaps[0]: the initial ones)
    res = train(net, X, y, TrainConfig(eta=0.5, epochs=3, batch_size=30, shuffle=False, schedule_patience=1,
                                       monitor="eval/penalty"),
                eval_data=(Xe, ye), callbacks=[lambda r: snaps.append([p.copy() for p in net.weights + net.biases])])
    assert [r.eta for r in res.records] == [0.5, 0.5, 0.5, 0.25]
    # replay epoch 3 from the epoch-2 weights with eta = 0.25
    ref = Network(SIZES, weights=snaps[2][:2], biases=snaps[2][2:])
    gw, gb = ref.backprop(X, np.eye(3)[y])
    np.testing.assert_allclose(net.weights[0], snaps[2][0] - 0.25 * gw[0], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(net.biases[1], snaps[2][3] - 0.25 * gb[1], rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------
# dtypes and numerical safety
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_all_zero_initial_weights_train_without_divergence(momentum):
    """||W_start|| = 0: update_ratio and the norm balance are undefined (None, absent), not inf."""
    X, y = _data()
    net = Network(SIZES, weights=[np.zeros((8, 5)), np.zeros((3, 8))], biases=[np.zeros(8), np.zeros(3)])
    res = train(net, X, y, TrainConfig(eta=0.5, epochs=3, batch_size=5, lmbda=1.0, momentum=momentum), rng=0)
    assert res.stop_reason == "completed" and res.final.epoch == 3
    first = res.records[1]
    for stats in first.layers:
        assert stats.weight_fro > 0  # the weights moved off zero
        assert (stats.update_ratio, stats.grad_push, stats.decay_to_grad) == (None, None, None)
        assert stats.decay_pull is not None and stats.decay_pull > 0
    m = first.to_metrics()
    assert "layer1/update_ratio" not in m and all(math.isfinite(v) for v in m.values())
    assert all(s.update_ratio is not None and math.isfinite(s.update_ratio) for s in res.final.layers)
    assert res.records[0].layers[0].weight_fro == 0.0 and res.records[0].layers[0].rms_vs_fan_in == 0.0


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
    assert [r.epoch for r in res.records] == list(range(31))  # epoch 0 + 30 epochs
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
    assert res.final.epoch == 30 and len(res.records) == 31  # epoch 0 + 30 epochs
    assert res.final.eval.accuracy >= 0.92
