"""Population training: every member's records, stop reason and weights equal train()'s, bit for bit."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from nncore import DivergenceError, Network, TrainConfig, train
from nncore import population_records as records
from nncore import population_step as step
from nncore.population import population_key, train_population

SIZES = [6, 7, 4]
N_TRAIN = 53  # batch 5: ten full batches and a partial last one of 3 rows


def _data(n=N_TRAIN, n_in=SIZES[0], n_out=SIZES[-1], seed=5):
    rng = np.random.default_rng(seed)
    X, y = rng.random((n, n_in)), rng.integers(0, n_out, n)
    Xe, ye = rng.random((11, n_in)), rng.integers(0, n_out, 11)
    return X, y, (Xe, ye)


def _nets(k, sizes=SIZES, **kw):
    return [Network(sizes, rng=np.random.default_rng(100 + i), **kw) for i in range(k)]


def _metrics(result):
    """A result's records as comparable values: every metric but the wall-clock time (NaN as "nan", so that
    an untracked grad_norm compares equal), plus the record's fields."""
    return [({k: "nan" if v != v else v for k, v in r.to_metrics().items() if k != "train/epoch_time"},
             r.epoch, r.eta, r.n_steps) for r in result.records]


def _alone(networks, X, y, configs, eval_data, seed, callbacks=None):
    """What train() gives for each member trained alone on a copy of its network: (outcome, network copy)."""
    out = []
    for i, (net, cfg) in enumerate(zip(networks, configs)):
        copy = net.copy()
        try:
            res = train(copy, X, y, cfg, eval_data=eval_data, rng=seed,
                        callbacks=callbacks[i] if callbacks else ())
        except Exception as exc:  # noqa: BLE001 - the member's end, compared below
            res = exc
        out.append((res, copy))
    return out


def _same_network(a, b):
    return (all(np.array_equal(x, y, equal_nan=True) for x, y in zip(a.weights, b.weights))
            and all(np.array_equal(x, y, equal_nan=True) for x, y in zip(a.biases, b.biases)))


def _assert_identical(alone, got, networks):
    assert len(got) == len(alone)
    for i, ((ref, ref_net), res, net) in enumerate(zip(alone, got, networks)):
        if isinstance(ref, Exception):
            assert type(res) is type(ref), f"member {i}: {res!r} instead of {ref!r}"
            assert str(res) == str(ref)
            if isinstance(ref, DivergenceError):
                assert (res.epoch, res.layer) == (ref.epoch, ref.layer)
        else:
            assert not isinstance(res, Exception), f"member {i} ended with {res!r}"
            assert res.network is net
            assert res.stop_reason == ref.stop_reason, f"member {i}"
            assert _metrics(res) == _metrics(ref), f"member {i}: records differ"
        assert _same_network(net, ref_net), f"member {i}: weights differ"


def _run(networks, X, y, configs, eval_data, seed=3, callbacks=None):
    alone = _alone(networks, X, y, configs, eval_data, seed, callbacks)
    got = train_population(networks, X, y, configs, eval_data=eval_data, rng=seed, callbacks=callbacks)
    _assert_identical(alone, got, networks)
    return got


def _all_settings(epochs=4):
    """One member per penalty x convention x momentum (18), stable step sizes."""
    return [TrainConfig(eta=0.3, epochs=epochs, batch_size=5, lmbda=2.0, penalty=pen, convention=conv, momentum=mu)
            for pen in ("none", "l2", "l1") for conv in ("dataset", "per_batch", "decoupled") for mu in (0.0, 0.6)]


# ---------------------------------------------------------------------------
# exactness: bit for bit against train()
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("cost", ["quadratic", "cross_entropy", "log_likelihood"])
def test_every_member_equals_train_bit_for_bit(cost, activation, dtype):
    X, y, ev = _data()
    nets = _nets(18, activation=activation, cost=cost, dtype=dtype)
    got = _run(nets, X, y, _all_settings(), ev)
    assert all(r.stop_reason == "completed" and len(r.records) == 5 for r in got)
    assert all(r.records[-1].n_steps == 11 for r in got)  # ceil(53 / 5): the partial batch is a step


@pytest.mark.parametrize("patch", [
    {"LOOP_ELEMENTS": 0},                       # every layer updated member by member (scalar factors)
    {"STEP_BYTES": 1},                          # SGD in blocks of two members
    {"MEASURE_CACHE_BYTES": 1, "MEASURE_FUSED_MEMBERS": 3},  # measured in blocks of three (+ a remainder)
    {"MEASURE_CACHE_BYTES": 1 << 30},           # all members measured in one block
])
def test_every_code_path_equals_train_bit_for_bit(monkeypatch, patch):
    for name, value in patch.items():
        monkeypatch.setattr(step if hasattr(step, name) else records, name, value)
    X, y, ev = _data()
    _run(_nets(18, activation="tanh"), X, y, _all_settings(epochs=3), ev)


def test_forced_fused_products_stay_within_1e_12_at_stable_step_sizes(monkeypatch):
    # a BLAS may round one (K*out, in) product differently from K (out, in) ones; fusing is only used
    # where it does not, but even forced it stays at rounding level over a few stable epochs
    for module in (step, records):  # the SGD step's and the measurement's products
        monkeypatch.setattr(module, "fusable", lambda *a, **k: True)
    monkeypatch.setattr(records, "MEASURE_CACHE_BYTES", 1)
    monkeypatch.setattr(records, "MEASURE_FUSED_MEMBERS", 4)
    X, y, ev = _data(n=200, n_in=40, n_out=5)
    sizes = [40, 12, 5]
    configs = [TrainConfig(eta=0.5, epochs=4, batch_size=10, lmbda=1.0, momentum=mu) for mu in (0.0, 0.5) * 3]
    nets = _nets(6, sizes=sizes)
    alone = _alone(nets, X, y, configs, ev, 3)
    got = train_population(nets, X, y, configs, eval_data=ev, rng=3)
    worst = 0.0
    for (ref, ref_net), res, net in zip(alone, got, nets):
        for (a, *_), (b, *_) in zip(_metrics(ref), _metrics(res)):
            assert a.keys() == b.keys()
            for key in a:
                # grad_push, decay_to_grad: logs and ratios of small differences, not judged
                if key.endswith(("grad_push", "decay_to_grad")):
                    continue
                worst = max(worst, abs(a[key] - b[key]) / max(abs(a[key]), 1e-300))
        for w_ref, w in zip(ref_net.weights, net.weights):
            worst = max(worst, float(np.max(np.abs(w - w_ref)) / np.max(np.abs(w_ref))))
    assert worst <= 1e-12


@pytest.mark.parametrize("sizes,n,m,k,epochs", [
    ([64, 30, 10], 301, 10, 5, 2),     # digits-like: small-matrix BLAS kernels, broadcast updates
    ([784, 30, 10], 605, 10, 3, 2),    # MNIST-like: member-by-member updates from a cache-resident gradient
    ([784, 30, 10], 2010, 100, 9, 1),  # fused products where exact, a measurement block of 8 and a remainder
])
def test_real_shapes_equal_train_bit_for_bit(sizes, n, m, k, epochs):
    # the benchmark's shapes (random data, n % m != 0), half the members with momentum
    rng = np.random.default_rng(0)
    X, y = rng.random((n, sizes[0])), rng.integers(0, 10, n)
    ev = (rng.random((97, sizes[0])), rng.integers(0, 10, 97))
    configs = [TrainConfig(eta=float(eta), lmbda=3.0, batch_size=m, epochs=epochs, momentum=0.5 * (i % 2))
               for i, eta in enumerate(np.linspace(0.1, 1.0, k))]
    _run(_nets(k, sizes=sizes), X, y, configs, ev, seed=11)


def test_a_population_of_one_is_train():
    X, y, ev = _data()
    for cfg in (TrainConfig(eta=0.4, epochs=3, batch_size=5, lmbda=1.0),
                TrainConfig(eta=0.2, epochs=3, batch_size=5, momentum=0.9, penalty="l1", lmbda=1.0)):
        _run(_nets(1), X, y, [cfg], ev)


def test_data_order_shuffle_off_and_a_generator_as_rng():
    X, y, ev = _data()
    configs = [TrainConfig(eta=0.3, epochs=3, batch_size=5, shuffle=False, lmbda=float(i)) for i in range(3)]
    _run(_nets(3), X, y, configs, ev)
    configs = [TrainConfig(eta=0.3, epochs=3, batch_size=5, lmbda=float(i)) for i in range(3)]
    nets = _nets(3)
    alone = []
    for net, cfg in zip(nets, configs):  # each alone with a Generator seeded like the population's
        copy = net.copy()
        alone.append((train(copy, X, y, cfg, eval_data=ev, rng=np.random.default_rng(9)), copy))
    got = train_population(nets, X, y, configs, eval_data=ev, rng=np.random.default_rng(9))
    _assert_identical(alone, got, nets)


def test_one_config_for_all_members_and_no_eval_set():
    X, y, _ = _data()
    nets = _nets(4)
    cfg = TrainConfig(eta=0.3, epochs=2, batch_size=5, lmbda=1.0)
    alone = _alone(nets, X, y, [cfg] * 4, None, 0)
    got = train_population(nets, X, y, cfg, rng=0)
    _assert_identical(alone, got, nets)
    assert got[0].records[-1].eval is None


# ---------------------------------------------------------------------------
# members end independently
# ---------------------------------------------------------------------------


class Pruned(Exception):
    pass


def _stop_at(epoch):
    return lambda record: record.epoch == epoch


def _prune_at(epoch):
    def callback(record):
        if record.epoch == epoch:
            raise Pruned(f"pruned at epoch {epoch}")
    return callback


def test_members_end_at_different_epochs_for_every_reason_and_the_others_go_on():
    X, y, ev = _data()
    base = dict(eta=0.3, batch_size=5, lmbda=2.0)
    configs = [
        TrainConfig(epochs=1, **base),                                          # budget 1
        TrainConfig(epochs=6, momentum=0.6, **base),                            # budget 6, the last one left
        TrainConfig(epochs=30, early_stopping=1, monitor="eval/total_loss", eta=3.0, batch_size=5),  # early stop
        TrainConfig(epochs=30, schedule_patience=1, min_eta_ratio=0.25, eta=3.0, batch_size=5),      # schedule
        TrainConfig(epochs=5, **base),                                          # callback True at epoch 2
        TrainConfig(epochs=5, momentum=0.3, penalty="l1", **base),              # pruned (raises) at epoch 3
        TrainConfig(epochs=5, **base),                                          # callback True at epoch 0
        TrainConfig(eta=1.0, lmbda=5e4, convention="decoupled", epochs=50, batch_size=5),  # diverges later on
        TrainConfig(epochs=3, record_initial=False, track_gradients=False, **base),
        TrainConfig(epochs=4, monitor="train/total_loss", monitor_mode="min", schedule_patience=1, **base),
    ]
    callbacks = [[] for _ in configs]
    callbacks[4] = [_stop_at(2)]
    callbacks[5] = [_prune_at(3)]
    callbacks[6] = [_stop_at(0)]
    nets = _nets(len(configs))
    got = _run(nets, X, y, configs, ev, callbacks=callbacks)
    reasons = [r if isinstance(r, Exception) else r.stop_reason for r in got]
    assert reasons[0] == reasons[1] == reasons[8] == "completed"
    assert reasons[2] == "early_stopping" and reasons[3] == "schedule_floor"
    assert reasons[4] == reasons[6] == "callback"
    assert isinstance(reasons[5], Pruned) and str(reasons[5]) == "pruned at epoch 3"
    assert isinstance(reasons[7], DivergenceError) and reasons[7].epoch > 1
    assert [len(got[i].records) for i in (0, 1, 4, 6, 8)] == [2, 7, 3, 1, 3]
    assert [r.epoch for r in got[8].records] == [1, 2, 3] and math.isnan(got[8].records[0].layers[0].grad_norm)


def test_a_diverging_initial_network_is_that_members_divergence_error_at_epoch_0():
    X, y, ev = _data()
    nets = _nets(3)
    nets[1].weights[0][...] = 1e300
    configs = [TrainConfig(eta=0.3, epochs=2, batch_size=5)] * 3
    got = _run(nets, X, y, configs, ev)
    assert isinstance(got[1], DivergenceError) and got[1].epoch == 0 and got[1].layer == 1
    assert got[0].stop_reason == got[2].stop_reason == "completed"


def test_callbacks_see_each_record_once_in_order_and_the_members_current_weights():
    X, y, ev = _data()
    configs = [TrainConfig(eta=0.3, epochs=e, batch_size=5, lmbda=1.0, momentum=0.5 * (e % 2)) for e in (2, 3, 4)]

    def watchers(nets):
        seen = [[] for _ in nets]

        def watch(i):
            def callback(record):
                seen[i].append((record.epoch, [w.copy() for w in nets[i].weights]))
            return callback
        return seen, [[watch(i)] for i in range(len(nets))]

    nets = _nets(3)
    copies = [n.copy() for n in nets]
    seen_alone, cbs_alone = watchers(copies)
    for net, cfg, cbs in zip(copies, configs, cbs_alone):
        train(net, X, y, cfg, eval_data=ev, rng=3, callbacks=cbs)
    seen, cbs = watchers(nets)
    train_population(nets, X, y, configs, eval_data=ev, rng=3, callbacks=cbs)
    for a, b in zip(seen_alone, seen):
        assert [e for e, _ in a] == [e for e, _ in b] == list(range(len(a)))
        assert all(all(np.array_equal(x, z) for x, z in zip(wa, wb)) for (_, wa), (_, wb) in zip(a, b))


def test_on_end_is_called_once_per_member_as_soon_as_it_ends_with_its_result():
    """A tuner tells each trial when its member ends: after the member's last callback, before the epochs of the
    members still training, with the item the returned list holds, the member's final weights in its Network."""
    X, y, ev = _data()
    configs = [TrainConfig(eta=0.3, epochs=e, batch_size=5) for e in (3, 1, 2)]
    configs.append(TrainConfig(eta=1.0, lmbda=5e4, convention="decoupled", epochs=50, batch_size=5))  # diverges
    events = []
    nets = _nets(len(configs))

    def watch(i):
        def callback(record):
            events.append(("epoch", i, record.epoch))
        return [callback]

    ends = {}

    def on_end(i, result):
        events.append(("end", i, None))
        ends[i] = (result, [w.copy() for w in nets[i].weights])

    got = train_population(nets, X, y, configs, eval_data=ev, rng=3, callbacks=[watch(i) for i in range(4)],
                           on_end=on_end)
    assert sorted(ends) == [0, 1, 2, 3] and [e for e in events if e[0] == "end"].__len__() == 4
    for i, (result, weights) in ends.items():
        assert result is got[i]
        assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(weights, nets[i].weights))
    assert isinstance(got[3], DivergenceError)
    # member 1 ends at epoch 1 before member 2's epoch 2; member 2 ends before member 0's epoch 3
    assert events.index(("end", 1, None)) < events.index(("epoch", 2, 2))
    assert events.index(("end", 2, None)) < events.index(("epoch", 0, 3))
    assert events.index(("epoch", 1, 1)) < events.index(("end", 1, None))
    with pytest.raises(ValueError, match="on_end"):
        train_population(_nets(2), X, y, configs[:2], on_end="no")


def test_an_exception_of_on_end_stops_the_population():
    X, y, ev = _data()

    def on_end(i, result):
        raise RuntimeError(f"member {i}")

    with pytest.raises(RuntimeError, match="member 1"):
        train_population(_nets(3), X, y, [TrainConfig(eta=0.3, epochs=e, batch_size=5) for e in (3, 1, 2)],
                         eval_data=ev, rng=3, on_end=on_end)


def test_epoch_time_is_the_members_share_of_the_epoch():
    X, y, ev = _data()
    got = train_population(_nets(4), X, y, TrainConfig(eta=0.3, epochs=2, batch_size=5), eval_data=ev)
    for epoch in range(3):
        times = {r.records[epoch].epoch_time for r in got}
        assert len(times) == 1 and next(iter(times)) > 0


def test_keyboard_interrupt_is_not_a_members_result():
    X, y, ev = _data()

    def interrupt(record):
        if record.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_population(_nets(2), X, y, TrainConfig(eta=0.3, epochs=3, batch_size=5), eval_data=ev,
                         callbacks=[[], [interrupt]])


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("field,kw,shown", [
    ("sizes", {"sizes": [6, 8, 4]}, "[6, 7, 4] (member 0) and [6, 8, 4] (member 2)"),
    ("activation", {"activation": "relu"}, "'sigmoid' (member 0) and 'relu' (member 2)"),
    ("cost", {"cost": "quadratic"}, "'cross_entropy' (member 0) and 'quadratic' (member 2)"),
    ("dtype", {"dtype": "float32"}, "float64 (member 0) and float32 (member 2)"),
])
def test_members_of_another_architecture_are_refused_naming_the_field_and_values(field, kw, shown):
    X, y, _ = _data()
    nets = _nets(2) + [Network(kw.pop("sizes", SIZES), rng=np.random.default_rng(0), **kw)]
    with pytest.raises(ValueError, match=rf"same network {field} .*; got {re.escape(shown)}$"):
        train_population(nets, X, y, TrainConfig(batch_size=5))


@pytest.mark.parametrize("field,other,shown", [
    ("batch_size", {"batch_size": 7}, "5 (member 0) and 7 (member 1)"),
    ("shuffle", {"shuffle": False}, "True (member 0) and False (member 1)"),
])
def test_configs_with_another_batch_size_or_order_are_refused(field, other, shown):
    X, y, _ = _data()
    configs = [TrainConfig(batch_size=5), TrainConfig(**{"batch_size": 5, **other})]
    with pytest.raises(ValueError, match=rf"same TrainConfig\.{field} .*; got {re.escape(shown)}$"):
        train_population(_nets(2), X, y, configs)


def test_bad_arguments_are_refused_before_any_work():
    X, y, _ = _data()
    nets = _nets(2)
    before = [w.copy() for w in nets[0].weights]
    cfg = TrainConfig(batch_size=5)
    with pytest.raises(ValueError, match="'networks' parameter of train_population must be distinct"):
        train_population([nets[0], nets[0]], X, y, cfg)
    with pytest.raises(ValueError, match="'networks' parameter of train_population must be a non-empty"):
        train_population([], X, y, cfg)
    with pytest.raises(ValueError, match="'networks' parameter of train_population must be a sequence"):
        train_population(nets[0], X, y, cfg)
    with pytest.raises(ValueError, match="'configs' parameter of train_population must be a TrainConfig or a "
                                         "sequence of 2 TrainConfigs"):
        train_population(nets, X, y, [cfg])
    with pytest.raises(ValueError, match="'callbacks' parameter of train_population must be None or a sequence of 2"):
        train_population(nets, X, y, cfg, callbacks=[[]])
    with pytest.raises(ValueError, match="'monitor' parameter of TrainConfig"):
        train_population(nets, X, y, [cfg, TrainConfig(batch_size=5, monitor="eval/accuracy")])
    with pytest.raises(ValueError, match="'batch_size' parameter of TrainConfig"):
        train_population(nets, X[:4], y[:4], cfg)
    with pytest.raises(ValueError, match="'rng' parameter of train_population"):
        train_population(nets, X, y, cfg, rng="seed")  # type: ignore[arg-type]
    assert all(np.array_equal(a, b) for a, b in zip(before, nets[0].weights))


def test_population_key_is_what_must_agree():
    a = Network(SIZES, rng=np.random.default_rng(0))
    b = Network(SIZES, rng=np.random.default_rng(1), init="xavier")
    assert population_key(a, TrainConfig(batch_size=5, eta=0.1)) == population_key(b, TrainConfig(batch_size=5,
                                                                                                  lmbda=3.0))
    assert population_key(a, TrainConfig(batch_size=5)) != population_key(a, TrainConfig(batch_size=6))
    assert population_key(a, TrainConfig()) == ((6, 7, 4), "sigmoid", "cross_entropy", "float64", 10, True)
