"""Population training: K networks of one architecture trained at once, each exactly as :func:`train` would.

    results = train_population(networks, X, Y, configs, eval_data=(Xe, Ye), rng=seed, callbacks=per_member)

``networks`` are K distinct :class:`~nncore.network.Network` objects with the same ``sizes``,
``activation``, ``cost`` and ``dtype``; ``configs`` is one :class:`~nncore.train.TrainConfig` per
member (or one for all) with the same ``batch_size`` and ``shuffle``. Everything else may differ
per member: the initial weights, ``eta``, ``lmbda``, ``penalty``, ``convention``, ``momentum``,
``epochs``, early stopping, the schedule, ``monitor``/``monitor_mode``, ``track_gradients``,
``record_initial``. ``callbacks`` is ``None`` or one iterable of callbacks per member.

The result is a list in member order: a :class:`~nncore.train.TrainResult` for a member that ended
normally (``stop_reason`` as :func:`train` sets it), or the ``Exception`` that ended it: a
:class:`~nncore.train.DivergenceError`, or whatever one of its callbacks raised (how a tuner prunes).
A member's end never stops the others. ``KeyboardInterrupt``/``SystemExit`` are not caught.

**What equals what.** A member's records, its ``stop_reason`` and its trained weights are those of
``train(network_copy, X, Y, config, eval_data=..., rng=<a Generator seeded like the shared one>)``:
the same epoch-0 record, the same values in every field but ``epoch_time``, through the same
callbacks, in the same order. All members see **one batch order**: the shared ``rng`` draws one
permutation per epoch (exactly what :func:`train` draws from a Generator seeded the same way), so a
member trained alone with that seed sees the same batches. On this machine's NumPy/OpenBLAS the
arithmetic of every step and measurement is done in the same order as :func:`train` does it, so the
results are bit for bit equal (the tests check this for every cost, activation, penalty, convention,
momentum, a partial last batch, members ending at different epochs, float64 and float32). A BLAS
that rounds a product differently would make them differ at rounding level: the tests bound that
(forced) case by 1e-12 relative over a few epochs at stable step sizes. **Long runs at large eta are
chaotic**: SGD then amplifies a 1e-15 difference to O(1) after tens of epochs (measured on digits:
a 1e-15 change of the initial weights gives 3e-3 relative difference after 30 epochs at eta 3, 1 at
eta 5, 2e-15 at eta 0.5), so there only bitwise-equal arithmetic keeps the runs identical.

**How.** Weights are stacked ``(K, out, in)``; every step gathers the batch once for all members;
products run as stacked ``np.matmul`` calls (one BLAS call per member and layer, with the same
arguments as train()'s, inside one NumPy call); a product whose input is the shared batch becomes
one ``(K*out, in)`` product only where this BLAS rounds that exactly like the per-member ones and it
is faster (checked once per shape by :func:`fusable`). Per-member ``eta``, decay and momentum are
vectors in the weights' dtype (rounded as train() rounds its Python floats); members are kept
grouped by (momentum, penalty), so a small layer's update is a few whole-array operations per group,
and a large one (>= :data:`LOOP_ELEMENTS` weights) is updated member by member from a gradient
computed just before into a cache-resident scratch. The end-of-epoch measurement (losses,
accuracies, weight statistics, full-set gradient norms) runs stacked too, in the same chunks and with
the same products as train()'s. Members that end are removed from the stack (compacted away); the
last one left runs :class:`nncore.train.SGD` itself. Each member's ``Network`` holds its current
weights whenever its callbacks run and when it ends (callbacks must not modify them: changes are not
seen by the training). ``epoch_time`` is the member's share of the population's wall-clock time for
that epoch (the epoch's time divided by the number of members in it).

**When it pays.** Stacking removes NumPy's per-call overhead, which decides the speed of small
networks at small batches; it does not reduce the arithmetic. The end-of-epoch measurement over
the whole training set (losses, and with ``track_gradients`` a full backward pass) costs the same per
member as in train(), so it bounds the gain (see docs/core.md, "Population training").
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Callable, Iterable, Sequence

import numpy as np

from nncore.checks import check_instance, invalid
from nncore.network import Network
from nncore.population_records import _Recorder
from nncore.population_step import _group_key, _Stack, fusable  # noqa: F401 - fusable: public here too
from nncore.records import EpochRecord
from nncore.train import (Callback, StopRules, TrainConfig, TrainResult, as_generator, check_batch_size, check_data,
                          divergence, stops)

__all__ = ["NETWORK_FIELDS", "CONFIG_FIELDS", "population_key", "train_population", "fusable"]

#: Network attributes every member of a population shares.
NETWORK_FIELDS = ("sizes", "activation", "cost", "dtype")
#: TrainConfig fields every member of a population shares (one batch order, one batch size).
CONFIG_FIELDS = ("batch_size", "shuffle")


def population_key(network: Network, config: TrainConfig) -> tuple:
    """What must agree for two trainings to share a population: ``(sizes, activation, cost, dtype, batch_size,
    shuffle)``. Group trials by this key and train each group with :func:`train_population`."""
    return (tuple(network.sizes), network.activation, network.cost, network.dtype.name, config.batch_size,
            config.shuffle)


def _shown(value: object) -> str:
    if isinstance(value, np.dtype):
        return value.name
    return repr(list(value)) if isinstance(value, (list, tuple)) else repr(value)


def _check_members(networks: list[Network], configs: list[TrainConfig]) -> None:
    checks = ((networks, NETWORK_FIELDS, "network {}", "one architecture per population"),
              (configs, CONFIG_FIELDS, "TrainConfig.{}", "one batch size and one batch order per population"))
    for members, fields, name, why in checks:
        for field in fields:
            first = getattr(members[0], field)
            for i, member in enumerate(members[1:], start=1):
                value = getattr(member, field)
                if value != first:
                    raise ValueError(f"train_population: every member must have the same {name.format(field)} ({why}); "
                                     f"got {_shown(first)} (member 0) and {_shown(value)} (member {i})")


# ---------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------


def train_population(
    networks: Sequence[Network],
    X: np.ndarray,
    Y: np.ndarray,
    configs: TrainConfig | Sequence[TrainConfig],
    *,
    eval_data: tuple[np.ndarray, np.ndarray] | None = None,
    rng: np.random.Generator | int | None = None,
    callbacks: Sequence[Iterable[Callback]] | None = None,
    on_end: Callable[[int, TrainResult | Exception], None] | None = None,
) -> list[TrainResult | Exception]:
    """Train every network in place, at once; return one result per member, in member order.

    ``networks``: K distinct Networks with the same sizes, activation, cost and dtype.
    ``configs``: one TrainConfig per member, or one for all; ``batch_size`` and ``shuffle`` must agree.
    ``X``, ``Y``, ``eval_data``: as for :func:`~nncore.train.train`, shared by all members.
    ``rng``: the Generator (or seed; ``None``: 0) that draws the one batch order of every epoch.
    ``callbacks``: ``None`` or one iterable of callbacks per member, called with that member's records
    exactly as :func:`~nncore.train.train` calls them.
    ``on_end``: ``None`` or ``on_end(i, result)``, called once per member as soon as its end is decided
    (after its last record went through its callbacks; members ending in one epoch in member order),
    with the item that the returned list will hold for it; the member's Network then holds its final
    weights. A tuner tells a trial's outcome from here without waiting for the rest of the population.
    What it raises propagates out of ``train_population`` (the population stops there).

    Returns a list whose item ``i`` is member ``i``'s :class:`~nncore.train.TrainResult` or the
    ``Exception`` that ended it (its :class:`~nncore.train.DivergenceError`, or what one of its callbacks
    raised). Raises ``ValueError`` (before any work) for invalid arguments, naming the field and the
    values got, e.g. two members with different ``sizes``.
    """
    owner = "train_population"
    if isinstance(networks, Network) or not isinstance(networks, Sequence):
        raise invalid("networks", owner, "a sequence of nncore.Network objects", networks)
    networks = list(networks)
    if not networks:
        raise invalid("networks", owner, "a non-empty sequence of nncore.Network objects", networks)
    for net in networks:
        check_instance(net, "networks", owner, Network, what="a sequence of nncore.Network objects")
    if len({id(net) for net in networks}) != len(networks):
        raise invalid("networks", owner, "distinct Network objects (each member trains its own network)",
                      networks)
    K = len(networks)
    if isinstance(configs, TrainConfig):
        configs = [configs] * K
    elif not isinstance(configs, Sequence) or len(configs) != K:
        raise invalid("configs", owner, f"a TrainConfig or a sequence of {K} TrainConfigs (one per network)",
                      configs)
    configs = list(configs)
    for cfg in configs:
        check_instance(cfg, "configs", owner, TrainConfig, what="a TrainConfig or a sequence of TrainConfigs")
    if callbacks is None:
        member_callbacks: list[list[Callback]] = [[] for _ in range(K)]
    else:
        if isinstance(callbacks, (str, bytes)) or not isinstance(callbacks, Sequence) or len(callbacks) != K:
            raise invalid("callbacks", owner, f"None or a sequence of {K} iterables of callbacks (one per network)",
                          callbacks)
        member_callbacks = [list(cbs) for cbs in callbacks]
    if on_end is not None and not callable(on_end):
        raise invalid("on_end", owner, "None or a callable on_end(member_index, result)", on_end)
    _check_members(networks, configs)

    net0 = networks[0]
    X, Y = check_data(net0, X, Y, "training")
    n = len(X)
    m = configs[0].batch_size
    check_batch_size(m, n)
    Xe = Ye = None
    if eval_data is not None:
        Xe, Ye = check_data(net0, eval_data[0], eval_data[1], "evaluation")
    rng = as_generator(rng, owner)
    rules = [StopRules(cfg, net0.n_layers, has_eval=Xe is not None) for cfg in configs]

    results: list[TrainResult | Exception] = [TrainResult(network=net) for net in networks]
    ended = [False] * K
    n_steps = math.ceil(n / m)
    order_keys = sorted(range(K), key=lambda k: _group_key(configs[k]))  # stable: member order within a group
    stack = _Stack(order_keys, networks, configs, n, m)
    recorder = _Recorder(X, Y, Xe, Ye, n, m, net0.dtype)
    with np.errstate(over="ignore", invalid="ignore"):  # huge initial weights: the epoch's check reports them
        squares = recorder.squares(stack)  # the initial norms (used when epoch 0 is not recorded)
    prev_fro = {k: [math.sqrt(sq[p]) for sq in squares] for p, k in enumerate(stack.members)}

    def decide(k: int, record: EpochRecord, bad_layer: int | None, epoch: int) -> None:
        """Divergence, callbacks, stopping rules and the epoch budget of member k, as train() orders them."""
        error = divergence(record, bad_layer)
        if error is not None:
            results[k], ended[k] = error, True
            return
        prev_fro[k] = [ls.weight_fro for ls in record.layers]
        result = results[k]
        assert isinstance(result, TrainResult)
        result.records.append(record)
        try:
            stop = any([stops(cb(record)) for cb in member_callbacks[k]])  # a list: every callback sees it
        except Exception as exc:  # the member's end (e.g. a tuner pruning it); the others go on
            results[k], ended[k] = exc, True
            return
        if stop:
            result.stop_reason, ended[k] = "callback", True
            return
        if epoch == 0:
            return
        reason = rules[k].judge(record)
        if reason is not None:
            result.stop_reason, ended[k] = reason, True
        elif epoch == configs[k].epochs:
            ended[k] = True  # "completed"

    def handle(k: int, record: EpochRecord, bad_layer: int | None, epoch: int) -> None:
        decide(k, record, bad_layer, epoch)
        if ended[k] and on_end is not None:
            on_end(k, results[k])

    def compact() -> bool:
        keep = [p for p, k in enumerate(stack.members) if not ended[k]]
        if not keep:
            return False
        stack.keep(keep)
        return True

    if any(cfg.record_initial for cfg in configs):
        t0 = time.perf_counter()
        measured = recorder(stack, 0, [rules[k].eta for k in stack.members], None, None, None, 0,
                            [configs[k].track_gradients for k in stack.members])
        share = (time.perf_counter() - t0) / stack.size
        for k, (record, bad_layer) in sorted(zip(stack.members, measured), key=lambda item: item[0]):
            if configs[k].record_initial:
                handle(k, _timed(record, share), bad_layer, 0)
        if not compact():
            return results

    xbuf = np.empty((m, net0.sizes[0]), dtype=net0.dtype)
    ybuf = np.empty((m, net0.sizes[-1]), dtype=net0.dtype)
    shuffle = configs[0].shuffle
    epoch = 0
    while True:
        epoch += 1
        t0 = time.perf_counter()
        w_start = [w.copy() for w in stack.W]
        order = rng.permutation(n) if shuffle else None
        eta_list = [rules[k].eta for k in stack.members]
        eta = np.array(eta_list, dtype=np.float64)
        decay_factor = stack.epoch(X, Y, eta, order, xbuf, ybuf)
        stack.write_back()
        measured = recorder(stack, epoch, eta_list, decay_factor, w_start, [prev_fro[k] for k in stack.members],
                            n_steps, [configs[k].track_gradients for k in stack.members])
        share = (time.perf_counter() - t0) / stack.size
        for k, (record, bad_layer) in sorted(zip(stack.members, measured), key=lambda item: item[0]):
            handle(k, _timed(record, share), bad_layer, epoch)
        if not compact():
            return results


def _timed(record: EpochRecord, seconds: float) -> EpochRecord:
    return replace(record, epoch_time=seconds)

