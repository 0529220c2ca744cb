"""EpochRecord contents against quantities recomputed in the test from the network's weights."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nncore import Network, TrainConfig, metric_names, train
from nncore.records import EPOCH_CHANGE_FIELDS, LayerStats, LossParts, norm_balance

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
    assert [r.epoch for r in res.records] == [0, 1, 2, 3, 4]  # epoch 0: the initial network
    for rec in res.records:
        for parts in (rec.train, rec.eval):
            assert parts.total == parts.data + parts.penalty
        m = rec.to_metrics()
        for p in ("train", "eval"):
            assert m[f"{p}/total_loss"] == m[f"{p}/data_loss"] + m[f"{p}/penalty"]
            assert m[f"{p}/penalty_share"] == m[f"{p}/penalty"] / m[f"{p}/total_loss"]
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
    assert [r.epoch for r in res.records] == [0, 1, 2, 3]


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
    snapshots = {}  # epoch -> the weights its record describes
    res = train(net, X_TRAIN, Y_TRAIN, TrainConfig(eta=0.5, epochs=3, batch_size=8, lmbda=1.0), rng=0,
                callbacks=[lambda rec: snapshots.update({rec.epoch: [w.copy() for w in net.weights]})])
    assert sorted(snapshots) == [0, 1, 2, 3]
    assert all(stats.update_ratio is None for stats in res.records[0].layers)  # no epoch before epoch 0
    for rec in res.records[1:]:
        for l, stats in enumerate(rec.layers):
            start, end = snapshots[rec.epoch - 1][l], snapshots[rec.epoch][l]
            expected = np.linalg.norm(end - start) / np.linalg.norm(start)
            assert expected > 0
            assert stats.update_ratio == pytest.approx(expected, rel=1e-10)


def test_metric_keys():
    res = train(_net(), X_TRAIN, Y_TRAIN, TrainConfig(epochs=2, batch_size=8, lmbda=1.0), eval_data=(X_EVAL, Y_EVAL),
                rng=0)
    names = metric_names(len(SIZES) - 1)
    absent_at_0 = ["train/decay_factor"] + [f"layer{i}/{k}" for i in (1, 2, 3) for k in EPOCH_CHANGE_FIELDS]
    assert EPOCH_CHANGE_FIELDS == ("update_ratio", "decay_pull", "grad_push", "decay_to_grad")
    for rec in res.records:
        m = rec.to_metrics()
        # epoch >= 1 has every key of metric_names; epoch 0 lacks the epoch-change values (omitted, not NaN)
        assert list(m) == (names if rec.epoch >= 1 else [k for k in names if k not in absent_at_0])
        assert all(isinstance(v, float) for v in m.values())
        assert (m["train/eta"], m.get("train/decay_factor"), m["train/epoch_time"]) == (
            rec.eta, rec.decay_factor, rec.epoch_time)
    assert res.records[0].decay_factor is None
    assert len(metric_names(3)) == 10 + 3 * 15 + 3
    # every key has a group prefix with a slash (parameter names never do): docs/vocabulary.md
    assert all(k.split("/", 1)[0] in ("train", "eval", "layer1", "layer2", "layer3") for k in metric_names(3))
    assert metric_names(1)[-3:] == ["train/eta", "train/decay_factor", "train/epoch_time"]
    assert metric_names(1)[:5] == ["train/total_loss", "train/data_loss", "train/penalty", "train/accuracy",
                                   "train/penalty_share"]
    assert metric_names(1)[10:] == [f"layer1/{k}" for k in (
        "weight_fro", "weight_l1", "weight_max_abs", "weight_mean", "weight_var", "weight_rms", "weight_sum",
        "bias_norm", "grad_norm", "update_ratio", "decay_pull", "grad_push", "decay_to_grad", "rms_vs_fan_in",
        "rms_vs_n_weights")] + ["train/eta", "train/decay_factor", "train/epoch_time"]
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


# ---------------------------------------------------------------------------
# epoch 0: the initial network, measured before any step
# ---------------------------------------------------------------------------


def test_epoch_0_measures_the_initial_network():
    lmbda, m = 3.0, 8
    net = _net()
    init = net.copy()
    seen = []
    res = train(net, X_TRAIN, Y_TRAIN, TrainConfig(eta=0.4, epochs=2, batch_size=m, lmbda=lmbda),
                eval_data=(X_EVAL, Y_EVAL), rng=0, callbacks=[seen.append])
    rec = res.records[0]
    assert seen[0] is rec  # callbacks see epoch 0 first
    assert (rec.epoch, rec.n_steps, rec.eta, rec.decay_factor) == (0, 0, 0.4, None)
    assert rec.epoch_time > 0
    penalty = lmbda / (2 * N_TRAIN) * sum(float(np.sum(w * w)) for w in init.weights)
    assert rec.train.penalty == rec.eval.penalty == pytest.approx(penalty, rel=1e-12)
    assert rec.train.data == pytest.approx(init.data_loss(X_TRAIN, _onehot(Y_TRAIN)), rel=1e-12)
    assert rec.eval.data == pytest.approx(init.data_loss(X_EVAL, _onehot(Y_EVAL)), rel=1e-12)
    assert rec.train.accuracy == np.mean(init.predict(X_TRAIN) == Y_TRAIN)
    assert rec.eval.accuracy == np.mean(init.predict(X_EVAL) == Y_EVAL)
    gw, _ = init.backprop(X_TRAIN, _onehot(Y_TRAIN))
    for stats, w, g in zip(rec.layers, init.weights, gw):
        assert stats.weight_fro == pytest.approx(np.linalg.norm(w), rel=1e-12)
        assert stats.grad_norm == pytest.approx(np.linalg.norm(g + lmbda / N_TRAIN * w), rel=1e-10)
        assert (stats.update_ratio, stats.decay_pull, stats.grad_push, stats.decay_to_grad) == (None,) * 4
        assert stats.rms_vs_fan_in == pytest.approx(np.sqrt(np.mean(w**2)) * np.sqrt(w.shape[1]), rel=1e-12)
    # the network did train afterwards, from these weights
    assert res.final.train.data < rec.train.data


def test_record_initial_false_changes_nothing_but_epoch_0():
    cfg = dict(eta=0.5, epochs=3, batch_size=8, lmbda=1.0)
    net_a, net_b = _net(), _net()
    a = train(net_a, X_TRAIN, Y_TRAIN, TrainConfig(**cfg), eval_data=(X_EVAL, Y_EVAL), rng=3)
    b = train(net_b, X_TRAIN, Y_TRAIN, TrainConfig(**cfg, record_initial=False), eval_data=(X_EVAL, Y_EVAL), rng=3)
    assert [r.epoch for r in a.records] == [0, 1, 2, 3]
    assert [r.epoch for r in b.records] == [1, 2, 3]
    assert _metrics(b) == _metrics(a)[1:]  # epoch 1's balance uses the initial norms either way
    for wa, wb in zip(net_a.weights, net_b.weights):
        np.testing.assert_array_equal(wa, wb)


def test_epoch_0_with_a_stopping_callback_trains_nothing():
    net = _net()
    before = [w.copy() for w in net.weights]
    res = train(net, X_TRAIN, Y_TRAIN, TrainConfig(epochs=3, batch_size=8), rng=0,
                callbacks=[lambda rec: rec.epoch == 0])
    assert res.stop_reason == "callback" and [r.epoch for r in res.records] == [0]
    for a, b in zip(before, net.weights):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------
# penalty share and reference scales
# ---------------------------------------------------------------------------


def test_penalty_share_by_hand():
    assert LossParts.of(3.0, 1.0, 0.5).penalty_share == 0.25
    assert LossParts.of(2.0, 0.0, 0.5).penalty_share == 0.0
    assert LossParts.of(0.0, 0.0, 1.0).penalty_share == 0.0  # total 0: defined as 0, not NaN
    lmbda = 4.0
    net = _net()
    res = train(net, X_TRAIN, Y_TRAIN, TrainConfig(eta=0.5, epochs=2, batch_size=8, lmbda=lmbda),
                eval_data=(X_EVAL, Y_EVAL), rng=0)
    penalty = lmbda / (2 * N_TRAIN) * sum(float(np.sum(w * w)) for w in net.weights)
    m = res.final.to_metrics()
    for X, y, p in ((X_TRAIN, Y_TRAIN, "train"), (X_EVAL, Y_EVAL, "eval")):
        data = net.data_loss(X, _onehot(y))
        assert m[f"{p}/penalty_share"] == pytest.approx(penalty / (data + penalty), rel=1e-10)
    assert 0 < m["eval/penalty_share"] < 1 and m["train/penalty_share"] != m["eval/penalty_share"]


def test_reference_scales_by_hand():
    # W = [[3, 4]]: rms = 5/sqrt(2); n_in = 2 -> rms*sqrt(2) = 5; N = 8 weights -> rms*sqrt(8) = 10
    stats = LayerStats.of(np.array([[3.0, 4.0]]), np.zeros(1), 0.0, None, n_weights=8)
    assert stats.weight_rms == pytest.approx(5 / math.sqrt(2), rel=1e-15)
    assert stats.rms_vs_fan_in == pytest.approx(5.0, rel=1e-15)
    assert stats.rms_vs_n_weights == pytest.approx(10.0, rel=1e-15)
    assert LayerStats.of(np.array([[3.0, 4.0]]), np.zeros(1), 0.0).rms_vs_n_weights == pytest.approx(5.0)
    net = _net()
    res = train(net, X_TRAIN, Y_TRAIN, TrainConfig(eta=0.5, epochs=1, batch_size=8), rng=0)
    n_weights = 6 * 7 + 7 * 5 + 5 * 3  # 92: all layers, biases excluded
    for stats, w in zip(res.final.layers, net.weights):
        rms = np.sqrt(np.mean(w**2))
        assert stats.rms_vs_fan_in == pytest.approx(rms * np.sqrt(w.shape[1]), rel=1e-12)
        assert stats.rms_vs_n_weights == pytest.approx(rms * np.sqrt(n_weights), rel=1e-12)


# ---------------------------------------------------------------------------
# decay pull against gradient push
# ---------------------------------------------------------------------------


def test_norm_balance_by_hand():
    ln2 = math.log(2.0)
    assert norm_balance(1.0, 1.0, 0.5) == (ln2, ln2, 1.0)  # the norm stayed: equilibrium
    pull, push, ratio = norm_balance(1.0, 2.0, 0.5)  # grew x2 despite halving: push = ln 4
    assert (pull, push, ratio) == (ln2, pytest.approx(2 * ln2), pytest.approx(0.5))
    pull, push, ratio = norm_balance(1.0, 0.25, 0.5)  # shrank x4: the gradient steps shrank it too
    assert (pull, push, ratio) == (ln2, pytest.approx(-ln2), pytest.approx(-1.0))
    assert norm_balance(2.0, 1.0, 0.5) == (ln2, 0.0, None)  # decay alone: no push, ratio undefined
    assert norm_balance(1.0, 1.0 + 1e-15, 1.0, rounding=1e-12) == (0.0, 0.0, None)  # within rounding: 0
    assert norm_balance(1.0, 3.0, 1.0) == (0.0, pytest.approx(math.log(3.0)), 0.0)  # no decay: ratio 0
    assert norm_balance(1.0, 0.5, 1.0)[2] == 0.0 and math.copysign(1, norm_balance(1.0, 0.5, 1.0)[2]) == 1
    assert norm_balance(None, 1.0, 0.5) == (ln2, None, None)  # epoch 0 has no start norm
    assert norm_balance(0.0, 1.0, 0.5) == (ln2, None, None)  # from all-zero weights
    assert norm_balance(1.0, 0.0, 0.5) == (ln2, None, None)  # to all-zero weights
    assert norm_balance(1.0, 1.0, None) == (None, None, None)  # L1 / epoch 0: no factor
    assert norm_balance(1.0, 1.0, 0.0) == norm_balance(1.0, 1.0, -0.5) == (None, None, None)


def _replay_plain_sgd(W, B, X, Y, eta, d, m):
    """The epoch's steps in data order, written out: W <- (1 - eta*d) W - eta * mean grad.

    Also returns ``G``, the gradient steps alone, each shrunk by the decays after it
    (``G <- (1 - eta*d) G - eta * mean grad``, from 0).
    """
    W, B = [w.copy() for w in W], [b.copy() for b in B]
    G = [np.zeros_like(w) for w in W]
    for start in range(0, len(X), m):
        ref = Network(SIZES, weights=W, biases=B)
        gw, gb = ref.backprop(X[start:start + m], Y[start:start + m])
        W = [(1 - eta * d) * w - eta * g for w, g in zip(W, gw)]
        G = [(1 - eta * d) * acc - eta * g for acc, g in zip(G, gw)]
        B = [b - eta * g for b, g in zip(B, gb)]
    return W, B, G


def test_decay_pull_and_grad_push_are_exact_for_plain_sgd():
    eta, lmbda, m, epochs = 0.5, 6.0, 8, 2
    net = _net()
    W, B = [w.copy() for w in net.weights], [b.copy() for b in net.biases]
    res = train(net, X_TRAIN, Y_TRAIN, TrainConfig(eta=eta, epochs=epochs, batch_size=m, lmbda=lmbda, shuffle=False),
                rng=0)
    d = lmbda / N_TRAIN
    f = (1 - eta * d) ** (N_TRAIN // m)  # 5 steps, each multiplies W by (1 - eta*d)
    for rec in res.records[1:]:
        W_next, B, Gs = _replay_plain_sgd(W, B, X_TRAIN, _onehot(Y_TRAIN), eta, d, m)
        assert rec.decay_factor == pytest.approx(f, rel=1e-14)
        for stats, w0, w1, G in zip(rec.layers, W, W_next, Gs):
            n0, n1 = np.linalg.norm(w0), np.linalg.norm(w1)
            np.testing.assert_allclose(w1, f * w0 + G, rtol=1e-12, atol=1e-15)  # W_e = f W_(e-1) + G: exact split
            assert stats.weight_fro == pytest.approx(n1, rel=1e-12)
            assert stats.decay_pull == pytest.approx(-math.log(f), rel=1e-13)
            # the gradient steps' own effect on the norm: ln(||f W0 + G|| / ||f W0||)
            assert stats.grad_push == pytest.approx(math.log(np.linalg.norm(f * w0 + G) / (f * n0)), rel=1e-9)
            assert n1 == pytest.approx(f * math.exp(stats.grad_push) * n0, rel=1e-12)
            assert stats.decay_to_grad == pytest.approx(stats.decay_pull / stats.grad_push, rel=1e-15)
            assert abs(stats.grad_push) > 1e-6  # the data gradient is really there
        W = W_next
    np.testing.assert_allclose(net.weights[0], W[0], rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_zero_data_gradient_leaves_decay_alone(dtype):
    """All-zero inputs: dC/dW = delta @ x^T = 0 for a one-layer net, so W_e = f * W_(e-1) exactly
    (up to rounding): grad_push is 0, decay_to_grad undefined, the norm shrinks by f."""
    n, m, eta, lmbda = 12, 4, 0.5, 3.0
    net = Network([4, 3], rng=np.random.default_rng(2), dtype=dtype)
    res = train(net, np.zeros((n, 4)), np.arange(n) % 3, TrainConfig(eta=eta, epochs=4, batch_size=m, lmbda=lmbda),
                rng=0)
    f = (1 - eta * lmbda / n) ** (n // m)
    for prev, rec in zip(res.records, res.records[1:]):
        (stats,) = rec.layers
        assert stats.decay_pull == pytest.approx(-math.log(f), rel=1e-12)
        assert stats.grad_push == 0.0
        assert stats.decay_to_grad is None
        assert "layer1/decay_to_grad" not in rec.to_metrics() and "layer1/grad_push" in rec.to_metrics()
        assert stats.weight_fro == pytest.approx(f * prev.layers[0].weight_fro, rel=1e-6 if dtype == np.float32
                                                 else 1e-14)
        assert stats.decay_pull > 0.1  # the decay is large, not negligible


def test_without_penalty_decay_pull_is_zero_and_the_push_is_the_norm_change():
    net = _net()
    res = train(net, X_TRAIN, Y_TRAIN, TrainConfig(eta=0.5, epochs=2, batch_size=8), rng=0)
    for prev, rec in zip(res.records, res.records[1:]):
        assert rec.decay_factor == 1.0
        for s0, s1 in zip(prev.layers, rec.layers):
            assert s1.decay_pull == 0.0
            assert s1.grad_push == pytest.approx(math.log(s1.weight_fro / s0.weight_fro), rel=1e-12)
            assert s1.decay_to_grad == 0.0


def test_l1_has_no_decay_factor_split():
    res = train(_net(), X_TRAIN, Y_TRAIN, TrainConfig(eta=0.5, epochs=2, batch_size=8, lmbda=2.0, penalty="l1"),
                rng=0)
    for rec in res.records[1:]:
        m = rec.to_metrics()
        assert m["train/decay_factor"] == 1.0 and m["layer1/update_ratio"] > 0
        for i in (1, 2, 3):
            assert not {f"layer{i}/decay_pull", f"layer{i}/grad_push", f"layer{i}/decay_to_grad"} & set(m)
