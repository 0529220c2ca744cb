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

from nncore import activations as act
from nncore.checks import check_instance, invalid
from nncore.costs import output_delta, summed_loss
from nncore.network import Network
from nncore.records import EpochRecord, LayerStats, LossParts
from nncore.train import (MEASURE_CHUNK, SGD, Callback, StopRules, TrainConfig, TrainResult,
                          as_generator, balance_rounding, check_batch_size, check_data, divergence, stops)

__all__ = ["NETWORK_FIELDS", "CONFIG_FIELDS", "population_key", "train_population", "fusable"]

#: Network attributes every member of a population shares.
NETWORK_FIELDS = ("sizes", "activation", "cost", "dtype")
#: TrainConfig fields every member of a population shares (one batch order, one batch size).
CONFIG_FIELDS = ("batch_size", "shuffle")

#: The measurement is compute-bound and runs in blocks of members. Members whose activations for one
#: chunk (:data:`nncore.train.MEASURE_CHUNK` rows, as in train()) fit in this many bytes are measured
#: a few at a time, so that a block's arrays stay in cache (digits: one member per block was fastest) ...
MEASURE_CACHE_BYTES = 1 << 19
#: ... larger ones in blocks of this many members, with one fused first-layer product per block where
#: that rounds like the per-member ones (MNIST [784, 30, 10]: ~25% less measuring time than member
#: by member); a last, smaller block is measured without fusing (one probe per chunk shape, not per size).
MEASURE_FUSED_MEMBERS = 8


#: A layer with at least this many weights per member is updated member by member with scalar factors
#: (cache-resident operations, ~3x faster per element than a per-member factor broadcast over the stack);
#: smaller layers in one broadcast operation per group (fewer calls).
LOOP_ELEMENTS = 2048


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
# fused products: one (K*out, in) product where it rounds like K (out, in) ones
# ---------------------------------------------------------------------------


def fusable(kind: str, k: int, rows: int, n_in: int, cols: int, dtype: np.dtype, *, timed: bool = True) -> bool:
    """Whether one fused product of ``k`` members rounds bit for bit like ``k`` per-member ones (and is faster).

    ``kind="forward"``: ``W (k, rows, n_in) @ x.T`` with ``x (cols, n_in)`` as one ``(k*rows, n_in) @ x.T``;
    ``kind="gradient"``: ``d (k, rows, cols) @ x`` as one ``(k*rows, cols) @ x``. BLAS libraries choose
    their kernels by shape (OpenBLAS has a separate small-matrix kernel, which rounds differently),
    not by values, so one product of random numbers of that shape tells. ``timed``: also require the
    fused product to be faster (best of three runs each). The answers are cached for the process.
    """
    if kind == "gradient":
        # Not fused: a step using the fused gradient was seen to differ from train() by 1 ulp (digits
        # [64, 10, 10], batch 25, momentum 0.3, K=2) although the probe's products were bitwise equal;
        # until that is understood, exactness wins over the speed-up.
        return False
    key = (kind, k, rows, n_in, cols, np.dtype(dtype).name, timed)
    if key not in _FUSABLE:
        _FUSABLE[key] = k > 1 and _probe(kind, k, rows, n_in, cols, np.dtype(dtype), timed)
    return _FUSABLE[key]


_FUSABLE: dict[tuple, bool] = {}


def _probe(kind: str, k: int, rows: int, n_in: int, cols: int, dtype: np.dtype, timed: bool) -> bool:
    rng = np.random.default_rng(20240917)
    block = rng.standard_normal((rows, n_in if kind == "forward" else cols)).astype(dtype)
    x = rng.standard_normal((cols, n_in)).astype(dtype)
    stacked = np.ascontiguousarray(np.tile(block, (k, 1, 1)) * np.arange(1, k + 1, dtype=dtype)[:, None, None])
    if kind == "forward":
        one = np.empty((k, rows, cols), dtype=dtype)
        fused = np.empty((k * rows, cols), dtype=dtype)

        def per_member() -> None:
            np.matmul(stacked, x.T, out=one)

        def together() -> None:
            np.matmul(stacked.reshape(k * rows, n_in), x.T, out=fused)
    else:
        one = np.empty((k, rows, n_in), dtype=dtype)
        fused = np.empty((k * rows, n_in), dtype=dtype)

        def per_member() -> None:
            np.matmul(stacked, x, out=one)

        def together() -> None:
            np.matmul(stacked.reshape(k * rows, cols), x, out=fused)
    per_member()
    together()
    if not np.array_equal(one.reshape(fused.shape), fused):
        return False
    return not timed or _best_time(together) < _best_time(per_member)


def _best_time(fn, repeats: int = 3) -> float:
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# ---------------------------------------------------------------------------
# the stack: weights, velocities and per-member constants of the members still training
# ---------------------------------------------------------------------------


class _Stack:
    """The active members' parameters, stacked in a fixed order (grouped by momentum and penalty).

    The SGD steps run block by block (:class:`_Block`: a few members whose weights and gradients fit
    in cache together). With one member left the stack's arrays are views of that member's own
    Network arrays and its epochs run :class:`nncore.train.SGD` itself: a population of one is
    train()'s loop.
    """

    def __init__(self, members: list[int], networks: list[Network], configs: list[TrainConfig], n: int,
                 m: int) -> None:
        self.members = members
        self.networks = networks
        self.configs = configs
        self.n, self.m = n, m
        net = networks[members[0]]
        self.dtype = net.dtype
        self.sizes = net.sizes
        self.acts = [net.layer_activation(l) for l in range(net.n_layers)]
        self.cost = net.cost
        self.W = [np.stack([networks[k].weights[l] for k in members]) for l in range(net.n_layers)]
        self.B = [np.stack([networks[k].biases[l] for k in members]) for l in range(net.n_layers)]
        self.V = [np.zeros_like(w) for w in self.W]
        self.VB = [np.zeros_like(b) for b in self.B]
        self.single: SGD | None = None
        self._derive()

    @property
    def size(self) -> int:
        return len(self.members)

    def _derive(self) -> None:
        """Per-member constants, groups and blocks for the current members."""
        cfgs = [self.configs[k] for k in self.members]
        regs = [c.regularizer for c in cfgs]
        n, m = self.n, self.m
        last = n % m
        self.mu = np.array([c.momentum for c in cfgs], dtype=np.float64)
        self.gain = 1.0 / (1.0 - self.mu)
        self.rate_full = np.array([r.rate(n, m) for r in regs], dtype=np.float64)
        self.rate_last = np.array([r.rate(n, last) if last else r.rate(n, m) for r in regs], dtype=np.float64)
        self.l2_decay = np.array([r.active and r.kind == "l2" for r in regs])
        self.regs = regs
        # contiguous groups of one (momentum?, penalty kind, active?) each
        self.groups: list[tuple[slice, bool, str, str]] = []
        start = 0
        for p in range(1, len(cfgs) + 1):
            if p == len(cfgs) or _group_key(cfgs[p]) != _group_key(cfgs[start]):
                reg = regs[start]
                decay_kind = reg.kind if reg.active else "none"
                self.groups.append((slice(start, p), cfgs[start].momentum > 0, decay_kind, reg.kind))
                start = p
        if self.size == 1:
            self._become_single()
            return
        K = self.size
        hot = self.dtype.itemsize * sum(w[0].size for w in self.W) * (3 if self.mu.any() else 2)
        n_blocks = math.ceil(K / max(2, STEP_BYTES // max(hot, 1)))
        per = math.ceil(K / n_blocks)
        self.blocks = [_Block(self, b0, min(K, b0 + per)) for b0 in range(0, K, per)]

    def _become_single(self) -> None:
        """One member left: train it with train()'s own SGD, on its Network's arrays."""
        k = self.members[0]
        net = self.networks[k]
        self.write_back()
        sgd = SGD(net, self.m, self.regs[0], self.configs[k].momentum)
        if sgd.vw is not None and sgd.vb is not None:  # the velocity carries over
            for l in range(len(self.W)):
                np.copyto(sgd.vw[l], self.V[l][0])
                np.copyto(sgd.vb[l], self.VB[l][0])
        self.W = [w[None] for w in net.weights]
        self.B = [b[None] for b in net.biases]
        self.single = sgd

    def keep(self, positions: list[int]) -> None:
        """Keep only the members at these stack positions (in order): the others stop costing work."""
        if len(positions) == self.size:
            return
        idx = np.asarray(positions, dtype=np.intp)
        self.members = [self.members[p] for p in positions]
        for arrays in (self.W, self.B, self.V, self.VB):
            arrays[:] = [np.ascontiguousarray(a[idx]) for a in arrays]
        self._derive()

    def write_back(self) -> None:
        """Copy every member's current weights and biases into its Network (in place, like train())."""
        if self.single is not None:
            return  # the stack's arrays are the network's
        for p, k in enumerate(self.members):
            net = self.networks[k]
            for l in range(len(self.W)):
                np.copyto(net.weights[l], self.W[l][p])
                np.copyto(net.biases[l], self.B[l][p])

    def epoch(self, X: np.ndarray, Y: np.ndarray, eta: np.ndarray, order: np.ndarray | None,
              xbuf: np.ndarray, ybuf: np.ndarray) -> np.ndarray:
        """One pass over all rows for every member; returns the members' decay factors (see train.SGD.epoch)."""
        if self.single is not None:
            return np.array([self.single.epoch(X, Y, float(eta[0]), order)], dtype=np.float64)
        n, m = self.n, self.m
        last = n % m
        full = [blk.constants(eta, m, self.rate_full, materialize=True) for blk in self.blocks]
        part = [blk.constants(eta, last, self.rate_last) for blk in self.blocks] if last else full
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            for start in range(0, n, m):
                mb = min(m, n - start)
                if order is None:
                    xb, yb = X[start:start + mb], Y[start:start + mb]
                else:
                    idx = order[start:start + mb]
                    xb, yb = xbuf[:mb], ybuf[:mb]
                    np.take(X, idx, axis=0, out=xb, mode="clip")  # one gather for every member
                    np.take(Y, idx, axis=0, out=yb, mode="clip")
                for blk, constants in zip(self.blocks, full if mb == m else part):
                    blk.step(xb, yb, constants)
        # the decay factor, multiplied step by step exactly as SGD.epoch does (the same rounding)
        factor = np.ones(self.size, dtype=np.float64)
        if self.l2_decay.any():
            x_full = 1.0 - eta * self.rate_full * self.gain
            for _ in range(n // m):
                factor *= x_full
            if last:
                factor *= 1.0 - eta * self.rate_last * self.gain
            factor[~self.l2_decay] = 1.0
        return factor


#: Bytes of weights and gradients (and velocities) one SGD block may hold: a larger population is stepped
#: in blocks of members. Since large layers are updated member by member from a cache-resident gradient,
#: one block for everyone was fastest on digits and MNIST [784, 30, 10] (K <= 64); this only bounds huge ones.
STEP_BYTES = 1 << 26


class _Block:
    """SGD.step for members ``[b0, b1)`` of a stack: the same operations on stacked arrays (views)."""

    def __init__(self, stack: _Stack, b0: int, b1: int) -> None:
        self.b0, self.b1 = b0, b1
        self.K = K = b1 - b0
        self.m = m = stack.m
        self.cost, self.acts = stack.cost, stack.acts
        dt, sizes = stack.dtype, stack.sizes
        self.dtype = dt
        sl = slice(b0, b1)
        self.W = [w[sl] for w in stack.W]
        self.B = [b[sl] for b in stack.B]
        V = [v[sl] for v in stack.V]
        VB = [vb[sl] for vb in stack.VB]
        self.bcol = [b[:, :, None] for b in self.B]
        self.wt = [w.transpose(0, 2, 1) for w in self.W]
        self.a = [np.empty((K, s, m), dtype=dt) for s in sizes[1:]]
        self.d = [np.empty((K, s, m), dtype=dt) for s in sizes[1:]]
        self.t = [np.empty((K, s, m), dtype=dt) for s in sizes[1:]]
        self.gw = [np.empty_like(w) for w in self.W]
        self.gb = [np.empty_like(b) for b in self.B]
        s0, n_in = sizes[1], sizes[0]
        self.loop = [w[0].size >= LOOP_ELEMENTS for w in self.W]
        self.fuse_forward = fusable("forward", K, s0, n_in, m, dt)
        self.fuse_gradient = not self.loop[0] and fusable("gradient", K, s0, n_in, m, dt)
        self.w0_flat = self.W[0].reshape(K * s0, n_in)
        self.a0_flat = self.a[0].reshape(K * s0, m)
        self.gw0_flat = self.gw[0].reshape(K * s0, n_in)
        self.d0_flat = self.d[0].reshape(K * s0, m)
        self.out_delta_flat = self.d[-1].reshape(K, -1)
        # the stack's groups within this block, as local slices
        self.groups = []
        for g, momentum, decay_kind, kind in stack.groups:
            lo, hi = max(g.start, b0), min(g.stop, b1)
            if lo < hi:
                self.groups.append((slice(lo - b0, hi - b0), slice(lo, hi), momentum, decay_kind))
        # per group and layer, flat (members, entries) views for the update
        flat = [(w.reshape(K, -1), b, gw.reshape(K, -1), gb, v.reshape(K, -1), vb)
                for w, b, gw, gb, v, vb in zip(self.W, self.B, self.gw, self.gb, V, VB)]
        self.group_views = [[tuple(x[g] for x in layer) for layer in flat] for g, *_ in self.groups]
        self.scratch = np.empty(self.W[0][0].size, dtype=dt)
        self.mu = stack.mu

    def constants(self, eta: np.ndarray, mb: int, rate: np.ndarray, materialize: bool = False) -> tuple:
        """Per-member scalars of one step, in the weights' dtype, as SGD.step rounds its Python floats.

        ``materialize``: spell the per-member factors of the small layers' updates out as whole
        arrays (a broadcast (k, 1) factor is ~1.6x slower per element in NumPy than an array one).
        """
        dt = self.dtype
        sl = slice(self.b0, self.b1)
        scale = (eta[sl] / mb).astype(dt)
        coef = eta * rate
        per_group = []
        for (_, g, momentum, decay_kind), views in zip(self.groups, self.group_views):
            factor, c, mu = 1.0 - coef[g], coef[g], self.mu[g]  # the L2 factor 1 - eta*d (no momentum), eta*d
            fv, cv, mv = factor.astype(dt)[:, None], c.astype(dt)[:, None], mu.astype(dt)[:, None]
            vectors = []
            for l, (w, *_) in enumerate(views):
                if self.loop[l]:
                    vectors.append(None)
                    continue
                fl, ml = fv, mv
                if materialize and not momentum and decay_kind == "l2":
                    fl = np.ascontiguousarray(np.broadcast_to(fv, w.shape))
                if materialize and momentum:
                    ml = np.ascontiguousarray(np.broadcast_to(mv, w.shape))
                vectors.append((fl, cv, ml, mv))
            per_group.append((vectors, (factor.tolist(), c.tolist(), mu.tolist())))  # floats: SGD.step's scalars
        return scale[:, None], scale[:, None, None], per_group

    def step(self, xb: np.ndarray, yb: np.ndarray, constants: tuple) -> None:
        """SGD.step for every member of the block."""
        scale_flat, scale, per_group = constants
        mb = len(xb)
        L = len(self.W)
        full = mb == self.m
        a_bufs = self.a if full else [a[:, :, :mb] for a in self.a]
        d_bufs = self.d if full else [d[:, :, :mb] for d in self.d]
        t_bufs = self.t if full else [t[:, :, :mb] for t in self.t]
        W, acts = self.W, self.acts
        # forward, one column per sample
        a = xb.T
        for l in range(L):
            z = a_bufs[l]
            if l == 0 and full and self.fuse_forward:
                np.matmul(self.w0_flat, a, out=self.a0_flat)
            else:
                np.matmul(W[l], a, out=z)
            z += self.bcol[l]
            a = act.softmax(z, out=z, axis=1) if acts[l] == "softmax" else act.apply(acts[l], z, out=z)
        delta = output_delta(self.cost, a, yb.T, d_bufs[L - 1], t_bufs[L - 1])
        if full:
            self.out_delta_flat *= scale_flat
        else:
            delta *= scale
        for l in range(L - 1, -1, -1):
            if l > 0:
                prev = a_bufs[l - 1]
                np.matmul(delta, prev.transpose(0, 2, 1), out=self.gw[l])
            elif self.loop[0]:
                first_delta = delta  # large first layer: each member's gradient right before its update, below
            elif full and self.fuse_gradient:
                np.matmul(self.d0_flat, xb, out=self.gw0_flat)  # delta is self.d[0] here
            else:
                np.matmul(delta, xb, out=self.gw[0])
            np.add.reduce(delta, axis=2, out=self.gb[l])
            if l > 0:
                nxt = d_bufs[l - 1]
                np.matmul(self.wt[l], delta, out=nxt)
                act.multiply_by_derivative(acts[l - 1], nxt, prev, t_bufs[l - 1])
                delta = nxt
        # update, one group of (momentum?, penalty) at a time
        for (g, _, momentum, decay_kind), (vectors, scalars), views in zip(self.groups, per_group, self.group_views):
            for l, (w, b, gw, gb, vw, vb) in enumerate(views):
                if self.loop[l]:  # large layers: each member's own scalar operations (as SGD.step)
                    for p, (factor, coef, mu) in enumerate(zip(*scalars)):
                        if l == 0:  # its gradient, computed into a scratch that stays in cache
                            gw_p = self.scratch
                            np.matmul(first_delta[g][p], xb, out=gw_p.reshape(self.W[0].shape[1:]))
                        else:
                            gw_p = gw[p]
                        _update(w[p], b[p], gw_p, gb[p], vw[p], vb[p], momentum, decay_kind, factor, coef, mu)
                else:  # small layers: one operation for the group
                    _update(w, b, gw, gb, vw, vb, momentum, decay_kind, *vectors[l])


def _update(w: np.ndarray, b: np.ndarray, gw: np.ndarray, gb: np.ndarray, vw: np.ndarray, vb: np.ndarray,
            momentum: bool, decay_kind: str, factor, coef, mu, mu_b=None) -> None:
    """SGD.step's update (the same operations), for one member (scalars) or a group (per-member columns)."""
    if not momentum:
        if decay_kind == "l2":
            w *= factor
        elif decay_kind == "l1":
            w -= coef * np.sign(w)
        w -= gw
        b -= gb
    else:
        vw *= mu
        vw -= gw
        if decay_kind == "l2":
            vw -= coef * w
        elif decay_kind == "l1":
            vw -= coef * np.sign(w)
        w += vw
        vb *= mu if mu_b is None else mu_b
        vb -= gb
        b += vb


def _group_key(config: TrainConfig) -> tuple:
    reg = config.regularizer
    return (config.momentum > 0, reg.kind, reg.active)


# ---------------------------------------------------------------------------
# measurement: train()'s _Recorder for every member at once
# ---------------------------------------------------------------------------


class _SetMeasure:
    """Per-member data loss, accuracy, first non-finite layer and (optionally) gradient sums over one set."""

    def __init__(self, k: int) -> None:
        self.loss = [0.0] * k
        self.correct = np.zeros(k, dtype=np.int64)
        self.bad: list[int | None] = [None] * k
        self.grads: list[np.ndarray] | None = None


def _measure_set(stack: _Stack, X: np.ndarray, Y: np.ndarray, with_grad: bool) -> _SetMeasure:
    """What ``train._measure`` computes, for every member of the stack, with the same chunks and products."""
    K, n, L = stack.size, len(X), len(stack.W)
    out = _SetMeasure(K)
    if with_grad:
        out.grads = [np.zeros(w.shape, dtype=np.float64) for w in stack.W]
    per_member = sum(stack.sizes[1:]) * min(n, MEASURE_CHUNK) * stack.dtype.itemsize  # bytes of activations
    large = per_member > MEASURE_CACHE_BYTES
    block = MEASURE_FUSED_MEMBERS if large else max(1, MEASURE_CACHE_BYTES // per_member)
    for b0 in range(0, K, block):
        b1 = min(K, b0 + block)
        W = [w[b0:b1] for w in stack.W]
        B = [b[b0:b1, :, None] for b in stack.B]
        for start in range(0, n, MEASURE_CHUNK):
            xb, yb = X[start:start + MEASURE_CHUNK], Y[start:start + MEASURE_CHUNK]
            # forward: train's (w @ a.T).T per member is the transposed view of a stacked (out, rows) slice
            acts: list[np.ndarray] = []  # (k, units, rows), C order; acts[l].transpose(0, 2, 1) is train's acts[l+1]
            a_cols = xb.T
            z = None
            for l in range(L):
                if l == 0 and large and b1 - b0 == block and fusable("forward", block, stack.sizes[1], stack.sizes[0],
                                                                     len(xb), stack.dtype, timed=False):
                    z = np.matmul(W[0].reshape(-1, stack.sizes[0]), a_cols).reshape(b1 - b0, stack.sizes[1], -1)
                else:
                    z = np.matmul(W[l], a_cols)
                z += B[l]
                a_cols = act.softmax(z, axis=1) if stack.acts[l] == "softmax" else act.apply(stack.acts[l], z)
                acts.append(a_cols)
            finite = [np.isfinite(a).all(axis=(1, 2)) for a in acts]
            for i in range(b1 - b0):
                p = b0 + i
                if out.bad[p] is None:
                    out.bad[p] = next((l + 1 for l in range(L) if not finite[l][i]), None)
                out.loss[p] += summed_loss(stack.cost, z[i].T, acts[-1][i].T, yb)
            labels = yb.argmax(axis=1)
            out.correct[b0:b1] += np.count_nonzero(acts[-1].argmax(axis=1) == labels, axis=1)
            if out.grads is not None:
                # gradient_sums, per member: delta (rows, out) F-ordered, as train's empty_like(acts[-1])
                d_cols = np.empty_like(acts[-1])
                output_delta(stack.cost, acts[-1], yb.T, d_cols, np.empty_like(d_cols))
                d_rows = d_cols.transpose(0, 2, 1)
                for l in range(L - 1, -1, -1):
                    prev_rows = acts[l - 1].transpose(0, 2, 1) if l > 0 else xb
                    out.grads[l][b0:b1] += np.matmul(d_rows.transpose(0, 2, 1), prev_rows)
                    if l > 0:
                        d_rows = np.matmul(d_rows, W[l])
                        act.multiply_by_derivative(stack.acts[l - 1], d_rows, prev_rows, np.empty_like(d_rows))
    if out.grads is not None:
        for g in out.grads:
            g /= n
    return out


def _dots(a: np.ndarray) -> np.ndarray:
    """Per member ``x.dot(x)`` of the flattened slices (the BLAS dot of ``np.linalg.norm``), as float64."""
    flat = a.reshape(a.shape[0], -1)
    return np.matmul(flat[:, None, :], flat[:, :, None])[:, 0, 0]


class _Recorder:
    """train()'s ``_Recorder`` for a stack: one EpochRecord (and first bad layer) per member."""

    def __init__(self, X: np.ndarray, Y: np.ndarray, Xe: np.ndarray | None, Ye: np.ndarray | None, n: int,
                 m: int, dtype: np.dtype) -> None:
        self.X, self.Y, self.Xe, self.Ye, self.n, self.m = X, Y, Xe, Ye, n, m
        self.eps = float(np.finfo(dtype).eps)

    def squares(self, stack: _Stack) -> list[list[float]]:
        """Per layer, per member ``einsum("ij,ij->", w64, w64)`` exactly as LayerStats.of computes it."""
        out = []
        for w in stack.W:
            w64 = w.astype(np.float64, copy=False)
            out.append([float(np.einsum("ij,ij->", w64[p], w64[p])) for p in range(stack.size)])
        return out

    def __call__(self, stack: _Stack, epoch: int, eta: list[float], decay_factor: np.ndarray | None,
                 w_start: list[np.ndarray] | None, prev_fro: list[list[float]] | None, n_steps: int,
                 track: list[bool]) -> list[tuple[EpochRecord, int | None]]:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            return self._records(stack, epoch, eta, decay_factor, w_start, prev_fro, n_steps, track)

    def _records(self, stack: _Stack, epoch: int, eta: list[float], decay_factor: np.ndarray | None,
                 w_start: list[np.ndarray] | None, prev_fro: list[list[float]] | None, n_steps: int,
                 track: list[bool]) -> list[tuple[EpochRecord, int | None]]:
        K, n, m, L = stack.size, self.n, self.m, len(stack.W)
        tr = _measure_set(stack, self.X, self.Y, any(track))
        ev = _measure_set(stack, self.Xe, self.Ye, False) if self.Xe is not None and self.Ye is not None else None
        sq = self.squares(stack)
        n_weights = sum(w[0].size for w in stack.W)
        layer_values = []  # per layer: dict of per-member arrays
        for l, (w, b) in enumerate(zip(stack.W, stack.B)):
            w64 = w.astype(np.float64, copy=False)
            flat = w64.reshape(K, -1)
            absw = np.abs(flat)
            values = {
                "total": flat.sum(axis=1), "l1": absw.sum(axis=1), "max_abs": absw.max(axis=1),
                "bias_norm": np.sqrt(_dots(b.astype(np.float64, copy=False))),
                "finite": np.isfinite(flat).all(axis=1) & np.isfinite(b).all(axis=1),
            }
            if tr.grads is not None:
                g = tr.grads[l]
                for sl, _, _, kind in stack.groups:  # + Regularizer.gradient(w64, rate), by penalty kind
                    if kind == "l2":
                        g[sl] += stack.rate_full[sl][:, None, None] * w64[sl]
                    elif kind == "l1":
                        g[sl] += stack.rate_full[sl][:, None, None] * np.sign(w64[sl])
                values["grad_norm"] = np.sqrt(_dots(g))
            if w_start is not None:
                values["update"] = np.sqrt(_dots((w - w_start[l]).astype(np.float64, copy=False)))
            layer_values.append(values)
        out = []
        n_eval = len(self.Xe) if self.Xe is not None else 0
        for p in range(K):
            reg = stack.regs[p]
            rate = reg.rate(n, m)
            if rate == 0.0:
                penalty = 0.0
            elif reg.kind == "l2":
                penalty = 0.5 * rate * sum(sq[l][p] for l in range(L))
            else:
                penalty = rate * sum(float(layer_values[l]["l1"][p]) for l in range(L))
            multiplicative = not (reg.active and reg.kind == "l1")
            df = float(decay_factor[p]) if decay_factor is not None else None
            f = df if multiplicative else None
            layers = []
            bad_layer = None
            for l, w in enumerate(stack.W):
                v = layer_values[l]
                if bad_layer is None and not v["finite"][p]:
                    bad_layer = l + 1
                grad_norm = float(v["grad_norm"][p]) if "grad_norm" in v and track[p] else float("nan")
                prev = ratio = None
                if w_start is not None:
                    prev = prev_fro[p][l]  # type: ignore[index]
                    update = float(v["update"][p])
                    ratio = update / prev if prev > 0 else None
                shape = w.shape[1:]
                rounding = balance_rounding(n_steps, shape[0] * shape[1], self.eps)
                layers.append(LayerStats.from_sums(
                    sq=sq[l][p], total=float(v["total"][p]), l1=float(v["l1"][p]), max_abs=float(v["max_abs"][p]),
                    bias_norm=float(v["bias_norm"][p]), shape=shape, grad_norm=grad_norm, update_ratio=ratio,
                    n_weights=n_weights, prev_fro=prev, decay_factor=f if w_start is not None else None,
                    rounding=rounding))
            if bad_layer is None:
                bad_layer = tr.bad[p]
            if bad_layer is None:
                bad_layer = next((i for i, ls in enumerate(layers, start=1) if not ls.finite), None)
            record = EpochRecord(
                epoch=epoch,
                eta=eta[p],
                train=LossParts.of(tr.loss[p] / n, penalty, int(tr.correct[p]) / n),
                eval=(LossParts.of(ev.loss[p] / n_eval, penalty, int(ev.correct[p]) / n_eval)
                      if ev is not None else None),
                layers=tuple(layers),
                decay_factor=df,
                epoch_time=0.0,  # set by the caller: the member's share of the epoch's wall-clock time
                n_steps=n_steps,
            )
            out.append((record, bad_layer))
        return out


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

