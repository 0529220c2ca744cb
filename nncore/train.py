"""Mini-batch SGD with per-epoch records.

Before the first step, the initial network is measured as **epoch 0** (the
same measurements as step 3 below, with ``n_steps == 0``, the initial eta and
no epoch-change values; ``TrainConfig(record_initial=False)`` skips it).

One epoch ``e >= 1``:

1. The training rows are permuted with the run's ``Generator`` (unless
   ``shuffle=False``: batches then follow data order, so runs can be compared
   step by step with other implementations) and cut into batches of ``m``
   rows. **The last partial batch is kept**: if ``n % m != 0`` the epoch ends
   with one batch of ``n % m`` rows whose gradient is averaged over its own
   size (Nielsen's and scikit-learn's rule). An epoch has ``ceil(n/m)`` steps.
2. Each step (see :mod:`nncore.regularizers` for the decay rate ``d``)::

       g   = (1/m) * sum_{x in batch} dC_x/dW           (+ decay term, below)
       L2: W <- (1 - eta*d) W - eta*g                   (momentum 0)
       L1: W <- W - eta*d*sign(W) - eta*g
       with momentum mu:  v <- mu*v - eta*(g + dP/dW);  W <- W + v
       biases: b <- b - eta * (1/m) sum dC_x/db          (never decayed)

3. At the end of the epoch the losses are computed once, vectorized, over the
   whole training set and the evaluation set with the final weights, plus the
   per-layer statistics and the full-training-set gradient norms, into an
   immutable :class:`~nncore.records.EpochRecord` handed to every callback.
   Nothing else passes over the data: the per-layer norm balance (below)
   reuses the previous record's ``weight_fro``.

**Decay factor and norm balance.** The record's ``decay_factor`` is the
epoch's decay-only factor ``f``. Plain SGD (``mu = 0``), L2: every step is
``W <- (1 - eta*d) W - eta*g``, so over the epoch ``W_e = f * W_(e-1) + G`` with
``f = prod_steps (1 - eta*d)`` exactly (the last partial batch uses its own
``d`` under ``per_batch``), and ``G`` the gradient steps, each shrunk by the
decays after it. Per layer, with ``r = ||W_e||_F / ||W_(e-1)||_F``::

    decay_pull = -ln f     grad_push = ln(r / f)     decay_to_grad = decay_pull / grad_push

so ``||W_e|| = f * exp(grad_push) * ||W_(e-1)||``, and ``grad_push`` is exactly
``ln(||f W_(e-1) + G|| / ||f W_(e-1)||)``: what the gradient steps did to the
norm on top of the decay. It is set to exactly 0 when ``|ln(r/f)|`` is within
rounding, ``4 * (n_steps + sqrt(#weights)) * eps`` of the weights' dtype (a
layer whose data gradient vanishes: then ``decay_to_grad`` is ``None``).

With momentum ``mu > 0`` the decay enters the velocity,
``v <- mu v - eta (g + d W)``, and is not a per-step factor of ``W``. The record
uses the **effective factor** ``f = prod_steps (1 - eta*d/(1 - mu))``: the
steady-state heavy-ball decay (a constant force is amplified by ``1/(1 - mu)``
once the velocity has built up; without a data gradient the exact per-step
factor is the dominant root of ``x^2 - (1 + mu - eta*d) x + mu``, which is
``1 - eta*d/(1 - mu) + O((eta*d)^2)``). It is an **approximation**, off while the
velocity adjusts (it overstates the decay during the first ~``1/(1 - mu)``
steps, and lags a schedule change of eta), and the velocity carries decay
across epoch boundaries; ``decay_pull``/``grad_push`` are then approximate too (``grad_push``
absorbs the difference, and ``||W_e|| = f exp(grad_push) ||W_(e-1)||`` still
holds by construction). Under L1 the decay is not a factor: ``decay_factor``
is 1.0 and ``decay_pull``, ``grad_push``, ``decay_to_grad`` are ``None``.

A callback returning ``True`` (or ``numpy.bool_(True)``) stops training after
that epoch (at epoch 0: before any step); other truthy values do not.
Exceptions it raises propagate, which is how a tuner prunes. A non-finite loss
or weight statistic raises :class:`DivergenceError` naming the epoch (0: the
initial network) and the layer; undefined (``None``) values are never divergence.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from nncore import activations as act
from nncore.checks import check_choice, check_instance, check_int, check_real, invalid, is_int
from nncore.costs import output_delta, summed_loss
from nncore.encoding import as_targets  # noqa: F401 - also public here (nncore.train.as_targets)
from nncore.network import Network
from nncore.records import EpochRecord, LayerStats, LossParts, metric_names
from nncore.regularizers import CONVENTIONS, PENALTIES, Regularizer

Callback = Callable[[EpochRecord], "bool | None"]

#: Rows per chunk when losses and gradients are measured over a whole set.
MEASURE_CHUNK = 4096

#: Allowed ``TrainConfig.monitor_mode`` values (``None`` also: decided by the monitor's name).
MONITOR_MODES = ("max", "min")


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss or weight.

    Attributes: ``epoch`` (0: the initial network, before any step), ``layer`` (1-based weight layer whose values
    overflowed, or ``None`` if unknown), ``record`` (the epoch's record, with
    the non-finite values, or ``None``).
    """

    def __init__(self, epoch: int, layer: int | None, detail: str, record: EpochRecord | None = None) -> None:
        where = f" in layer{layer}" if layer is not None else ""
        super().__init__(f"training diverged at epoch {epoch}{where}: {detail}")
        self.epoch = epoch
        self.layer = layer
        self.detail = detail
        self.record = record


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run. Validated on construction.

    ``eta``: learning rate (> 0). ``epochs``: maximum number of epochs (>= 1).
    ``batch_size``: rows per mini-batch ``m`` (1 <= m <= n_train, checked in :func:`train`).
    ``lmbda``/``penalty``/``convention``: the weight penalty, see :mod:`nncore.regularizers`.
    ``momentum``: ``mu`` in [0, 1). ``shuffle``: permute rows every epoch.
    ``early_stopping``: stop after this many epochs without improvement of ``monitor`` (None: off).
    ``schedule_patience``: multiply eta by ``schedule_factor`` after this many epochs without
    improvement, and stop once eta < ``min_eta_ratio`` * initial eta (Nielsen's schedule; None: off).
    ``monitor``: the metric both watch; default ``eval/accuracy`` (``train/accuracy`` without an
    eval set). ``monitor_mode``: ``"max"`` or ``"min"``; ``None``: by the name (names ending in
    ``accuracy`` are maximized, others minimized). Both rules count from epoch 1 (epoch 0 is
    never the best); an epoch whose record lacks the monitored value (``None``) is skipped.
    ``track_gradients``: measure full-training-set gradient norms every epoch (costs one extra
    forward/backward pass over the training set per epoch).
    ``record_initial``: measure the initial network as epoch 0 before any step (one measuring
    pass; the callbacks see it first).

    Numbers may be of any real type (NumPy scalars included, ``bool`` refused) and are stored as
    Python ``int``/``float``. Invalid settings raise ``ValueError`` naming the field, the allowed
    values and the value got (see :mod:`nncore.checks`).
    """

    eta: float = 0.5
    epochs: int = 30
    batch_size: int = 10
    lmbda: float = 0.0
    penalty: str = "l2"
    convention: str = "dataset"
    momentum: float = 0.0
    shuffle: bool = True
    early_stopping: int | None = None
    schedule_patience: int | None = None
    schedule_factor: float = 0.5
    min_eta_ratio: float = 1.0 / 128.0
    monitor: str | None = None
    track_gradients: bool = True
    monitor_mode: str | None = None
    record_initial: bool = True

    def __post_init__(self) -> None:
        # every number is validated and stored as a Python int / float (NumPy scalars accepted)
        owner = "TrainConfig"
        fix = object.__setattr__
        fix(self, "eta", check_real(self.eta, "eta", owner, low=0.0, low_open=True))
        fix(self, "epochs", check_int(self.epochs, "epochs", owner, low=1))
        fix(self, "batch_size", check_int(self.batch_size, "batch_size", owner, low=1))
        fix(self, "lmbda", check_real(self.lmbda, "lmbda", owner, low=0.0))
        check_choice(self.penalty, "penalty", owner, PENALTIES)
        check_choice(self.convention, "convention", owner, CONVENTIONS)
        fix(self, "momentum", check_real(self.momentum, "momentum", owner, low=0.0, high=1.0, high_open=True))
        for name in ("early_stopping", "schedule_patience"):
            if getattr(self, name) is not None:
                fix(self, name, check_int(getattr(self, name), name, owner, low=1))
        fix(self, "schedule_factor", check_real(self.schedule_factor, "schedule_factor", owner, low=0.0,
                                                low_open=True, high=1.0, high_open=True))
        fix(self, "min_eta_ratio", check_real(self.min_eta_ratio, "min_eta_ratio", owner, low=0.0, low_open=True,
                                              high=1.0))
        if self.monitor is not None and not isinstance(self.monitor, str):
            raise invalid("monitor", owner, "a str naming an epoch-record metric, or None", self.monitor)
        if self.monitor_mode is not None and self.monitor_mode not in MONITOR_MODES:
            raise invalid("monitor_mode", owner, "a str among {'max', 'min'}, or None", self.monitor_mode)
        fix(self, "record_initial", bool(check_instance(self.record_initial, "record_initial", owner,
                                                        (bool, np.bool_), what="a bool")))

    @property
    def regularizer(self) -> Regularizer:
        """The weight penalty these settings describe: ``Regularizer(penalty, lmbda, convention)``."""
        return Regularizer(self.penalty, self.lmbda, self.convention)


@dataclass
class TrainResult:
    """What :func:`train` returns: the records, why training stopped, and the trained network."""

    network: Network
    records: list[EpochRecord] = field(default_factory=list)
    stop_reason: str = "completed"

    @property
    def final(self) -> EpochRecord:
        return self.records[-1]


def check_data(network: Network, X: np.ndarray, Y: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate a data set for ``network`` and return C-contiguous ``(X, Y)`` in its dtype."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != network.sizes[0]:
        raise ValueError(f"{name} inputs must have shape (n, {network.sizes[0]}), got {X.shape}")
    if len(X) == 0:
        raise ValueError(f"{name} inputs must have at least one row, got 0")
    Xc = np.ascontiguousarray(X, dtype=network.dtype)
    # a finite sum proves every entry finite (NaN and inf propagate); only then skip the full scan
    if not np.isfinite(Xc.sum(dtype=np.float64)) and not np.isfinite(Xc).all():
        bad = int(np.argwhere(~np.isfinite(Xc))[0][0])
        raise ValueError(f"{name} inputs must be finite, got NaN or inf (first in row {bad})")
    Yc = as_targets(Y, network.sizes[-1], network.dtype, name=f"{name} targets")
    if len(Yc) != len(Xc):
        raise ValueError(f"{name} inputs and targets must have the same number of rows, "
                         f"got {len(Xc)} inputs and {len(Yc)} targets")
    if not np.isfinite(Yc).all():
        raise ValueError(f"{name} targets must be finite, got NaN or inf")
    return Xc, Yc


@dataclass
class _Measure:
    data_loss: float
    accuracy: float
    grad_w: list[np.ndarray] | None
    first_bad_layer: int | None


def _measure(net: Network, X: np.ndarray, Y: np.ndarray, with_grad: bool) -> _Measure:
    """Mean data loss, accuracy and (optionally) data-loss gradients over a whole set, in chunks."""
    n = len(X)
    loss = 0.0
    correct = 0
    grads = [np.zeros(w.shape, dtype=np.float64) for w in net.weights] if with_grad else None
    bad: int | None = None
    for start in range(0, n, MEASURE_CHUNK):
        xb, yb = X[start:start + MEASURE_CHUNK], Y[start:start + MEASURE_CHUNK]
        zs, acts = net.forward(xb)
        if bad is None:
            for l, a in enumerate(acts[1:]):
                if not np.isfinite(a).all():
                    bad = l + 1
                    break
        loss += summed_loss(net.cost, zs[-1], acts[-1], yb)
        correct += int(np.count_nonzero(acts[-1].argmax(axis=1) == yb.argmax(axis=1)))
        if grads is not None:
            for g, chunk_sum in zip(grads, net.gradient_sums(acts, yb)[0]):
                g += chunk_sum
    if grads is not None:
        for g in grads:
            g /= n
    return _Measure(loss / n, correct / n, grads, bad)


class SGD:
    """One network's mini-batch SGD, with every per-step buffer allocated once.

    ``SGD(net, batch_size, regularizer, momentum).epoch(X, Y, eta, order)`` runs
    one pass over ``X`` in the row order ``order`` (``None``: data order) and
    returns the epoch's multiplicative decay factor. Batches are gathered into
    a reused ``(m, n_in)`` buffer, so nothing allocated per step or per epoch
    grows with the data set and the training set is never copied.

    Inside a step, activations and deltas are held one column per sample
    (``(n_units, m)``, Nielsen's layout): ``z = W @ a + b`` runs the skinny
    products about 10% faster in OpenBLAS than the row layout at large batches.
    """

    def __init__(self, net: Network, batch_size: int, regularizer: Regularizer, momentum: float = 0.0) -> None:
        self.net = net
        self.m = m = batch_size
        self.reg = regularizer
        self.reg_kind = regularizer.kind if regularizer.active else "none"
        self.momentum = momentum
        dt = net.dtype
        self.acts = [net.layer_activation(l) for l in range(net.n_layers)]
        self.bcol = [b[:, None] for b in net.biases]  # views: stay valid as b is updated in place
        self.wt = [w.T for w in net.weights]
        self.xb = np.empty((m, net.sizes[0]), dtype=dt)
        self.yb = np.empty((m, net.sizes[-1]), dtype=dt)
        self.a = [np.empty((s, m), dtype=dt) for s in net.sizes[1:]]
        self.d = [np.empty((s, m), dtype=dt) for s in net.sizes[1:]]
        self.t = [np.empty((s, m), dtype=dt) for s in net.sizes[1:]]
        self.gw = [np.empty_like(w) for w in net.weights]
        self.gb = [np.empty_like(b) for b in net.biases]
        self.vw = [np.zeros_like(w) for w in net.weights] if momentum else None
        self.vb = [np.zeros_like(b) for b in net.biases] if momentum else None

    def epoch(self, X: np.ndarray, Y: np.ndarray, eta: float, order: np.ndarray | None = None) -> float:
        """One pass over all rows; returns the epoch's decay factor (1.0 unless L2).

        ``prod(1 - eta*d)`` over the steps; with momentum ``mu`` the effective
        ``prod(1 - eta*d/(1 - mu))`` (an approximation, see the module doc).
        """
        n, m = len(X), self.m
        full_rate = self.reg.rate(n, m)
        gain = 1.0 / (1.0 - self.momentum)  # steady-state amplification of a constant force by momentum
        decay_factor = 1.0
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            for start in range(0, n, m):
                mb = min(m, n - start)
                rate = full_rate if mb == m else self.reg.rate(n, mb)
                if order is None:
                    xb, yb = X[start:start + mb], Y[start:start + mb]
                else:
                    idx = order[start:start + mb]
                    xb, yb = self.xb[:mb], self.yb[:mb]
                    np.take(X, idx, axis=0, out=xb, mode="clip")  # "clip": no buffered copy of out
                    np.take(Y, idx, axis=0, out=yb, mode="clip")
                self.step(xb, yb, eta, rate)
                if self.reg_kind == "l2":
                    decay_factor *= 1.0 - eta * rate * gain
        return decay_factor

    def step(self, xb: np.ndarray, yb: np.ndarray, eta: float, decay: float) -> None:
        """One SGD step on the batch ``(xb, yb)`` with decay rate ``decay`` (see module doc)."""
        net = self.net
        mb = len(xb)
        L = net.n_layers
        full = mb == self.m
        a_bufs = self.a if full else [a[:, :mb] for a in self.a]
        d_bufs = self.d if full else [d[:, :mb] for d in self.d]
        t_bufs = self.t if full else [t[:, :mb] for t in self.t]
        # forward, one column per sample: activations are computed in place over the pre-activations
        a = xb.T
        for l in range(L):
            z = a_bufs[l]
            np.matmul(net.weights[l], a, out=z)
            z += self.bcol[l]
            a = act.softmax(z, out=z, axis=0) if self.acts[l] == "softmax" else act.apply(self.acts[l], z, out=z)
        # backward; the output delta is scaled by eta/m once, so every gradient below is
        # already eta * (mean gradient): no per-layer scaling needed.
        delta = output_delta(net.cost, a, yb.T, d_bufs[L - 1], t_bufs[L - 1])
        delta *= eta / mb
        for l in range(L - 1, -1, -1):
            prev = a_bufs[l - 1] if l > 0 else xb.T
            np.matmul(delta, prev.T, out=self.gw[l])
            np.add.reduce(delta, axis=1, out=self.gb[l])
            if l > 0:
                nxt = d_bufs[l - 1]
                np.matmul(self.wt[l], delta, out=nxt)
                act.multiply_by_derivative(self.acts[l - 1], nxt, prev, t_bufs[l - 1])
                delta = nxt
        # update
        reg_kind, momentum = self.reg_kind, self.momentum
        for l in range(L):
            w, b, gw, gb = net.weights[l], net.biases[l], self.gw[l], self.gb[l]
            if self.vw is None:
                if decay:
                    if reg_kind == "l2":
                        w *= 1.0 - eta * decay
                    else:
                        w -= (eta * decay) * np.sign(w)
                w -= gw
                b -= gb
            else:
                vw, vb = self.vw[l], self.vb[l]  # type: ignore[index]
                vw *= momentum
                vw -= gw
                if decay:
                    vw -= (eta * decay) * (w if reg_kind == "l2" else np.sign(w))
                w += vw
                vb *= momentum
                vb -= gb
                b += vb


def _improved(value: float, best: float | None, maximize: bool) -> bool:
    if best is None:
        return True
    return value > best if maximize else value < best


def stops(returned: object) -> bool:
    """Whether a callback's return value asks to stop: ``True`` or ``numpy.bool_(True)`` only."""
    return returned is True or (isinstance(returned, np.bool_) and bool(returned))


def _fro(w: np.ndarray) -> float:
    """||W||_F accumulated in float64, exactly as :meth:`LayerStats.of` computes ``weight_fro``."""
    w64 = w.astype(np.float64, copy=False)
    return math.sqrt(float(np.einsum("ij,ij->", w64, w64)))


def train(
    network: Network,
    X: np.ndarray,
    Y: np.ndarray,
    config: TrainConfig,
    *,
    eval_data: tuple[np.ndarray, np.ndarray] | None = None,
    rng: np.random.Generator | int | None = None,
    callbacks: Iterable[Callback] = (),
) -> TrainResult:
    """Train ``network`` in place with mini-batch SGD; return its per-epoch records.

    ``X``: inputs ``(n, sizes[0])``; ``Y``: one-hot ``(n, sizes[-1])`` or integer labels ``(n,)``.
    ``eval_data``: optional ``(X_eval, Y_eval)`` measured every epoch (its penalty uses ``n``).
    ``rng``: Generator (or seed) for shuffling. ``callbacks``: called with each record, epoch 0
    (the initial network, unless ``config.record_initial`` is off) first; returning ``True``
    (or ``numpy.bool_(True)``) stops training.
    """
    check_instance(config, "config", "train", TrainConfig, what="an nncore.TrainConfig")
    X, Y = check_data(network, X, Y, "training")
    n = len(X)
    m = config.batch_size
    check_batch_size(m, n)
    Xe = Ye = None
    if eval_data is not None:
        Xe, Ye = check_data(network, eval_data[0], eval_data[1], "evaluation")
    rng = as_generator(rng, "train")
    callbacks = list(callbacks)
    rules = StopRules(config, network.n_layers, has_eval=Xe is not None)

    reg = config.regularizer
    sgd = SGD(network, m, reg, config.momentum)
    result = TrainResult(network=network)
    n_steps = math.ceil(n / m)
    measure = _Recorder(network, X, Y, Xe, Ye, reg, n, m, config.track_gradients)

    if config.record_initial:
        record = measure(0, rules.eta, None, None, 0, time.perf_counter())
        result.records.append(record)
        if any([stops(cb(record)) for cb in callbacks]):  # a list: every callback sees the record
            result.stop_reason = "callback"
            return result

    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        w_start = [w.copy() for w in network.weights]
        order = rng.permutation(n) if config.shuffle else None
        eta = rules.eta
        decay_factor = sgd.epoch(X, Y, eta, order)
        record = measure(epoch, eta, decay_factor, w_start, n_steps, t0)
        result.records.append(record)
        if any([stops(cb(record)) for cb in callbacks]):
            result.stop_reason = "callback"
            break
        reason = rules.judge(record)
        if reason is not None:
            result.stop_reason = reason
            break
    return result


def check_batch_size(m: int, n: int) -> None:
    """Refuse a batch size larger than the training set (``TrainConfig`` checks ``m >= 1``)."""
    if m > n:
        raise invalid("batch_size", "TrainConfig", f"an int in the range [1, {n}] for n_train={n} training rows",
                      m)


def as_generator(rng: np.random.Generator | int | None, owner: str) -> np.random.Generator:
    """``rng`` as a Generator: an int seeds a new one, ``None`` means seed 0; anything else is refused."""
    if rng is None or is_int(rng):
        return np.random.default_rng(0 if rng is None else int(rng))  # type: ignore[arg-type]
    check_instance(rng, "rng", owner, np.random.Generator, what="a numpy.random.Generator, an int seed or None")
    return rng  # type: ignore[return-value]


class StopRules:
    """The monitor-based rules of one run: early stopping and Nielsen's schedule.

    ``eta`` is the step size in effect; :meth:`judge` takes each epoch ``>= 1`` record (after the
    callbacks) and returns ``"early_stopping"``, ``"schedule_floor"`` or ``None`` (go on), lowering
    ``eta`` when the schedule says so. Construction validates ``config.monitor`` against the
    metrics a record can have (``ValueError`` naming it).
    """

    def __init__(self, config: TrainConfig, n_layers: int, *, has_eval: bool) -> None:
        monitor = config.monitor or ("eval/accuracy" if has_eval else "train/accuracy")
        if monitor not in metric_names(n_layers, has_eval=has_eval):
            needs_eval = " (eval/ metrics need eval_data)" if monitor.startswith("eval/") and not has_eval else ""
            raise invalid("monitor", "TrainConfig", "one of the epoch record's metrics, e.g. 'eval/accuracy', "
                          f"'train/total_loss', 'layer1/weight_rms'{needs_eval}", monitor)
        self.config = config
        self.monitor = monitor
        mode = config.monitor_mode
        self.maximize = mode == "max" if mode is not None else monitor.endswith("accuracy")
        self.eta = float(config.eta)
        self.best: float | None = None
        self.since_best = 0
        self.since_change = 0

    def judge(self, record: EpochRecord) -> str | None:
        config = self.config
        value = record.to_metrics().get(self.monitor)
        if value is None:  # undefined this epoch (e.g. update_ratio of an all-zero layer): not judged
            return None
        if _improved(value, self.best, self.maximize):
            self.best, self.since_best, self.since_change = value, 0, 0
        else:
            self.since_best += 1
            self.since_change += 1
        if config.early_stopping is not None and self.since_best >= config.early_stopping:
            return "early_stopping"
        if config.schedule_patience is not None and self.since_change >= config.schedule_patience:
            self.eta *= config.schedule_factor
            self.since_change = 0
            if self.eta < config.eta * config.min_eta_ratio:
                return "schedule_floor"
        return None


class _Recorder:
    """Measures the network into an :class:`EpochRecord` and checks it for divergence.

    Keeps the previous record's ``weight_fro`` per layer (the start norms of the
    next epoch: ``update_ratio`` and the norm balance need no extra pass).
    """

    def __init__(self, net: Network, X: np.ndarray, Y: np.ndarray, Xe: np.ndarray | None, Ye: np.ndarray | None,
                 reg: Regularizer, n: int, m: int, track_gradients: bool) -> None:
        self.net, self.X, self.Y, self.Xe, self.Ye = net, X, Y, Xe, Ye
        self.reg, self.n, self.m, self.track_gradients = reg, n, m, track_gradients
        self.n_weights = sum(w.size for w in net.weights)
        # the decay is a factor of W for L2 and for no decay at all; an active L1 decay is not
        self.multiplicative = not (reg.active and reg.kind == "l1")
        self.eps = float(np.finfo(net.dtype).eps)
        with np.errstate(over="ignore", invalid="ignore"):  # huge initial weights: the epoch's check reports them
            self.prev_fro = [_fro(w) for w in net.weights]  # the initial norms (used when epoch 0 is not recorded)

    def __call__(self, epoch: int, eta: float, decay_factor: float | None, w_start: Sequence[np.ndarray] | None,
                 n_steps: int, t0: float) -> EpochRecord:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            record, bad_layer = self._record(epoch, eta, decay_factor, w_start, n_steps, t0)
        error = divergence(record, bad_layer)
        if error is not None:
            raise error
        self.prev_fro = [ls.weight_fro for ls in record.layers]
        return record

    def _record(self, epoch: int, eta: float, decay_factor: float | None, w_start: Sequence[np.ndarray] | None,
                n_steps: int, t0: float) -> tuple[EpochRecord, int | None]:
        net, reg, n, m = self.net, self.reg, self.n, self.m
        penalty = reg.penalty(net.weights, n, m)
        tr = _measure(net, self.X, self.Y, self.track_gradients)
        ev = _measure(net, self.Xe, self.Ye, False) if self.Xe is not None and self.Ye is not None else None
        rate = reg.rate(n, m)
        f = decay_factor if self.multiplicative else None
        layers = []
        bad_layer = None
        for l, (w, b) in enumerate(zip(net.weights, net.biases)):
            if bad_layer is None and not (np.isfinite(w).all() and np.isfinite(b).all()):
                bad_layer = l + 1
            if tr.grad_w is not None:
                g = tr.grad_w[l] + reg.gradient(w.astype(np.float64), rate)
                grad_norm = float(np.linalg.norm(g))
            else:
                grad_norm = float("nan")
            prev = None
            ratio = None
            if w_start is not None:  # epoch >= 1: the change over the epoch
                prev = self.prev_fro[l]
                update = float(np.linalg.norm((w - w_start[l]).astype(np.float64, copy=False)))
                ratio = update / prev if prev > 0 else None
            rounding = balance_rounding(n_steps, w.size, self.eps)
            layers.append(LayerStats.of(w, b, grad_norm, ratio, n_weights=self.n_weights, prev_fro=prev,
                                        decay_factor=f if w_start is not None else None, rounding=rounding))
        if bad_layer is None:
            bad_layer = tr.first_bad_layer
        if bad_layer is None:  # weights finite but their statistics overflow (|w| near the float maximum)
            bad_layer = next((i for i, ls in enumerate(layers, start=1) if not ls.finite), None)
        record = EpochRecord(
            epoch=epoch,
            eta=eta,
            train=LossParts.of(tr.data_loss, penalty, tr.accuracy),
            eval=LossParts.of(ev.data_loss, penalty, ev.accuracy) if ev is not None else None,
            layers=tuple(layers),
            decay_factor=decay_factor,
            epoch_time=time.perf_counter() - t0,
            n_steps=n_steps,
        )
        return record, bad_layer


def balance_rounding(n_steps: int, n_weights: int, eps: float) -> float:
    """The rounding below which a layer's ``grad_push`` is set to 0: ``4 (n_steps + sqrt(#weights)) eps``."""
    return 4.0 * (n_steps + math.sqrt(n_weights)) * eps


def divergence(record: EpochRecord, bad_layer: int | None) -> DivergenceError | None:
    """The :class:`DivergenceError` for a record with a non-finite loss or weight statistic, else ``None``.

    ``grad_norm`` is not judged; undefined (``None``) values are never divergence.
    """
    values = record.to_metrics()  # None (undefined) values are not in here: never divergence
    bad_keys = [k for k, v in values.items() if not math.isfinite(v) and not k.endswith("/grad_norm")]
    if not bad_keys:
        return None
    epoch = record.epoch
    when = " (the initial network, before any step)" if epoch == 0 else ""
    return DivergenceError(epoch, bad_layer, f"non-finite values in {', '.join(bad_keys[:4])}"
                           f"{' ...' if len(bad_keys) > 4 else ''} (eta={record.eta:g}){when}", record)
