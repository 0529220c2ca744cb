"""The stacked SGD step of a population (:mod:`nncore.population`): K members' weights as one array.

:class:`_Stack` holds the active members' weights, biases and velocities stacked ``(K, out, in)``, in a
fixed order grouped by (momentum, penalty), with their per-member constants; :class:`_Block` runs
:class:`nncore.train.SGD`'s step for a block of them with the same floating-point operations in the same
order (so every member's weights are those of ``train()``, bit for bit on a BLAS that rounds the
stacked products like the single ones). :func:`fusable` decides where one ``(K*out, in)`` product may
replace K ``(out, in)`` ones (only where this BLAS rounds it identically, and it is faster).
"""

from __future__ import annotations

import math
import time

import numpy as np

from nncore import activations as act
from nncore.costs import output_delta
from nncore.network import Network
from nncore.train import SGD, TrainConfig

__all__ = ["fusable", "LOOP_ELEMENTS", "STEP_BYTES"]

#: A layer with at least this many weights per member is updated member by member with scalar factors
#: (cache-resident operations, ~3x faster per element than a per-member factor broadcast over the stack);
#: smaller layers in one broadcast operation per group (fewer calls).
LOOP_ELEMENTS = 2048

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
