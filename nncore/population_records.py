"""The end-of-epoch measurement of a population (:mod:`nncore.population`): train()'s ``_Recorder`` for K members.

Losses, accuracies, weight statistics and full-set gradient norms of every member of a
:class:`nncore.population_step._Stack`, computed with the same chunks, products and reductions as
:func:`nncore.train.train` computes them for one network, so each member's
:class:`~nncore.records.EpochRecord` equals the one ``train()`` would record (every field but ``epoch_time``).
"""

from __future__ import annotations

import numpy as np

from nncore import activations as act
from nncore.costs import output_delta, summed_loss
from nncore.records import EpochRecord, LayerStats, LossParts
from nncore.train import MEASURE_CHUNK, balance_rounding

from nncore.population_step import _Stack, fusable

__all__ = ["MEASURE_CACHE_BYTES", "MEASURE_FUSED_MEMBERS"]

#: The measurement is compute-bound and runs in blocks of members. Members whose activations for one
#: chunk (:data:`nncore.train.MEASURE_CHUNK` rows, as in train()) fit in this many bytes are measured
#: a few at a time, so that a block's arrays stay in cache (digits: one member per block was fastest) ...
MEASURE_CACHE_BYTES = 1 << 19
#: ... larger ones in blocks of this many members, with one fused first-layer product per block where
#: that rounds like the per-member ones (MNIST [784, 30, 10]: ~25% less measuring time than member
#: by member); a last, smaller block is measured without fusing (one probe per chunk shape, not per size).
MEASURE_FUSED_MEMBERS = 8

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
