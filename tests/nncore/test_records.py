"""EpochRecord contents against quantities recomputed in the test from the network's weights."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nncore import Network, TrainConfig, metric_names, train

SIZES = [6, 7, 5, 3]


def _data(n, seed):
    rng = np.random.default_rng(seed)
    X = rng.random((n, SIZES[0]))
    labels = rng.integers(0, SIZES[-1], size=n)
    return X, labels


def _net(seed=0, **kw):
    return Network(SIZES, rng=np.random.default_rng(seed), **kw)


def _onehot(labels):
    return np.eye(SIZES[-1])[labels]


N_TRAIN = 40
X_TRAIN, Y_TRAIN = _data(N_TRAIN, 1)
X_EVAL, Y_EVAL = _data(17, 2)


@pytest.mark.parametrize("penalty,convention,lmbda", [("l2", "dataset", 3.0), ("l1", "per_batch", 0.5),
                                                      ("l2", "decoupled", 0.01), ("none", "dataset", 0.0)])
def test_total_is_data_plus_penalty_exactly(penalty, convention, lmbda):
    res = train(_net(), X_TRAIN, Y_TRAIN,
                TrainConfig(eta=0.5, epochs=4, batch_size=8, lmbda=lmbda, penalty=penalty, convention=convention),
                eval_data=(X_EVAL, Y_EVAL), rng=0)
    assert len(res.records) == 4
    for rec in res.records:
        for parts in (rec.train, rec.eval):
            assert parts.total == parts.data + parts.penalty
        m = rec.to_metrics()
        for p in ("train", "eval"):
            assert m[f"{p}/total_loss"] == m[f"{p}/data_loss"] + m[f"{p}/penalty"]
        assert rec.train.penalty == rec.eval.penalty
        if penalty != "none":
            assert rec.train.penalty > 0
        else:
            assert rec.train.penalty == 0.0


def test_losses_and_accuracy_match_network():
    net = _net()
    res = train(net, X_TRAIN, Y_TRAIN, TrainConfig(eta=0.5, epochs=3, batch_size=8, lmbda=2.0),
                eval_data=(X_EVAL, Y_EVAL), rng=0)
    rec = res.final
    assert rec.train.data == pytest.approx(net.data_loss(X_TRAIN, _onehot(Y_TRAIN)), rel=1e-12)
    assert rec.eval.data == pytest.approx(net.data_loss(X_EVAL, _onehot(Y_EVAL)), rel=1e-12)
    assert rec.train.accuracy == np.mean(net.predict(X_TRAIN) == Y_TRAIN)
    assert rec.eval.accuracy == np.mean(net.predict(X_EVAL) == Y_EVAL)
    assert [r.epoch for r in res.records] == [1, 2, 3]


def test_eval_penalty_does_not_depend_on_eval_set_size():
    lmbda = 4.0
    penalties = []
    for n_eval, seed in ((5, 3), (33, 4)):
        net = _net()
        Xe, Ye = _data(n_eval, seed)
        res = train(net, X_TRAIN, Y_TRAIN, TrainConfig(eta=0.5, epochs=3, batch_size=10, lmbda=lmbda),
                    eval_data=(Xe, Ye), rng=0)
        expected = lmbda / (2 * N_TRAIN) * sum(float(np.sum(w * w)) for w in net.weights)
        assert res.final.eval.penalty == pytest.approx(expected, rel=1e-12)
        assert res.final.train.penalty == res.final.eval.penalty
        penalties.append(res.final.eval.penalty)
    assert penalties[0] == penalties[1]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_layer_stats_match_numpy(dtype):
    net = _net(dtype=dtype)
    res = train(net, X_TRAIN, Y_TRAIN, TrainConfig(eta=0.5, epochs=2, batch_size=8, lmbda=1.0),
                eval_data=(X_EVAL, Y_EVAL), rng=0)
    rel = 1e-12
    assert len(res.final.layers) == net.n_layers
    for stats, w, b in zip(res.final.layers, net.weights, net.biases):
        w = w.astype(np.float64)
        b = b.astype(np.float64)
        assert stats.weight_fro == pytest.approx(np.linalg.norm(w, "fro"), rel=rel)
        assert stats.weight_l1 == pytest.approx(np.abs(w).sum(), rel=rel)
        assert stats.weight_max_abs == np.abs(w).max()
        assert stats.weight_mean == pytest.approx(w.mean(), rel=1e-10, abs=1e-15)
        assert stats.weight_var == pytest.approx(w.var(), rel=1e-10)
        assert stats.weight_rms == pytest.approx(np.sqrt(np.mean(w**2)), rel=rel)
        assert stats.weight_sum == pytest.approx(w.sum(), rel=1e-10, abs=1e-14)
        assert stats.bias_norm == pytest.approx(np.linalg.norm(b), rel=rel)


@pytest.mark.parametrize("penalty,convention", [("l2", "dataset"), ("l1", "dataset"), ("l2", "per_batch")])
def test_grad_norm_is_full_set_gradient_of_total_loss(penalty, convention):
    lmbda, m = 3.0, 8
    net = _net()
    res = train(net, X_TRAIN, Y_TRAIN,
                TrainConfig(eta=0.5, epochs=2, batch_size=m, lmbda=lmbda, penalty=penalty, convention=convention),
                rng=0)
    gw, _ = net.backprop(X_TRAIN, _onehot(Y_TRAIN))
    d = lmbda / N_TRAIN if convention == "dataset" else lmbda / m
    for l, stats in enumerate(res.final.layers):
        w = net.weights[l]
        g = gw[l] + d * (w if penalty == "l2" else np.sign(w))
        assert stats.grad_norm == pytest.approx(np.linalg.norm(g), rel=1e-10)
        # the penalty part is really in there
        assert stats.grad_norm != pytest.approx(np.linalg.norm(gw[l]), rel=1e-6)


def test_grad_norm_is_nan_without_tracking():
    res = train(_net(), X_TRAIN, Y_TRAIN, TrainConfig(epochs=1, batch_size=8, track_gradients=False), rng=0)
    assert all(math.isnan(s.grad_norm) for s in res.final.layers)
    assert all(math.isfinite(s.weight_fro) for s in res.final.layers)


def test_update_ratio_over_each_epoch():
    net = _net()
    snapshots = [[w.copy() for w in net.weights]]
    res = train(net, X_TRAIN, Y_TRAIN, TrainConfig(eta=0.5, epochs=3, batch_size=8, lmbda=1.0), rng=0,
                callbacks=[lambda rec: snapshots.append([w.copy() for w in net.weights])])
    assert len(snapshots) == 4
    for e, rec in enumerate(res.records):
        for l, stats in enumerate(rec.layers):
            start, end = snapshots[e][l], snapshots[e + 1][l]
            expected = np.linalg.norm(end - start) / np.linalg.norm(start)
            assert expected > 0
            assert stats.update_ratio == pytest.approx(expected, rel=1e-10)


def test_metric_keys():
    res = train(_net(), X_TRAIN, Y_TRAIN, TrainConfig(epochs=2, batch_size=8), eval_data=(X_EVAL, Y_EVAL), rng=0)
    for rec in res.records:
        m = rec.to_metrics()
        assert list(m) == metric_names(len(SIZES) - 1)
        assert all(isinstance(v, float) for v in m.values())
        assert (m["train/eta"], m["train/decay_factor"], m["train/epoch_time"]) == (
            rec.eta, rec.decay_factor, rec.epoch_time)
    assert len(metric_names(3)) == 8 + 3 * 10 + 3
    # every key has a group prefix with a slash (parameter names never do): docs/vocabulary.md
    assert all(k.split("/", 1)[0] in ("train", "eval", "layer1", "layer2", "layer3") for k in metric_names(3))
    assert metric_names(1)[-3:] == ["train/eta", "train/decay_factor", "train/epoch_time"]
    res = train(_net(), X_TRAIN, Y_TRAIN, TrainConfig(epochs=1, batch_size=8), rng=0)
    assert list(res.final.to_metrics()) == metric_names(3, has_eval=False)
    assert res.final.eval is None


def _metrics(res):
    out = []
    for rec in res.records:
        m = rec.to_metrics()
        del m["train/epoch_time"]
        out.append(m)
    return out


def _run(init_seed, rng, shuffle=True, epochs=3):
    net = _net(init_seed)
    res = train(net, X_TRAIN, Y_TRAIN, TrainConfig(eta=0.5, epochs=epochs, batch_size=8, lmbda=1.0, shuffle=shuffle),
                eval_data=(X_EVAL, Y_EVAL), rng=rng)
    return net, res


def test_same_seed_gives_identical_records():
    net_a, a = _run(0, 5)
    net_b, b = _run(0, np.random.default_rng(5))  # an int seed and the same Generator are equivalent
    assert _metrics(a) == _metrics(b)
    for wa, wb in zip(net_a.weights, net_b.weights):
        np.testing.assert_array_equal(wa, wb)


def test_different_seed_gives_different_records():
    _, a = _run(0, 5)
    _, b = _run(0, 6)  # different shuffling only
    _, c = _run(1, 5)  # different initial weights only
    assert _metrics(a) != _metrics(b)
    assert _metrics(a) != _metrics(c)
    assert a.final.train.data != b.final.train.data
    assert a.final.train.data != c.final.train.data


def test_shuffle_false_does_not_depend_on_rng_seed():
    _, a = _run(0, 5, shuffle=False)
    _, b = _run(0, 123, shuffle=False)
    assert _metrics(a) == _metrics(b)
    _, c = _run(0, 5, shuffle=True)
    assert _metrics(a) != _metrics(c)


def test_records_are_immutable():
    _, res = _run(0, 0, epochs=1)
    with pytest.raises(AttributeError):
        res.final.eta = 1.0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        res.final.train.total = 0.0  # type: ignore[misc]
