"""The per-epoch record: the one place where metric names are defined.

:meth:`EpochRecord.to_metrics` flattens a record into ``{name: float}`` with
slash-separated names, which become the MLflow metric keys unchanged::

    train/total_loss  train/data_loss  train/penalty  train/accuracy  train/penalty_share
    eval/total_loss   eval/data_loss   eval/penalty   eval/accuracy   eval/penalty_share
    layer1/weight_fro layer1/weight_l1 layer1/weight_max_abs layer1/weight_mean
    layer1/weight_var layer1/weight_rms layer1/weight_sum layer1/bias_norm
    layer1/grad_norm  layer1/update_ratio
    layer1/decay_pull layer1/grad_push layer1/decay_to_grad
    layer1/rms_vs_fan_in layer1/rms_vs_n_weights     (layer2/..., one block per weight layer)
    train/eta         train/decay_factor      train/epoch_time

Every key has a group prefix with a slash (``train/``, ``eval/``, ``layerN/``), and no
hyperparameter name has one, so metric keys and parameter names never collide (the
record's ``train/eta``, the step size in effect that epoch, next to the ``eta``
hyperparameter; see ``docs/vocabulary.md``).

Layers are numbered from 1: ``layer1`` is the weight matrix between the input
and the first hidden layer. Epochs are numbered from 0: **epoch 0** is the
initial network, measured before any step (``n_steps == 0``); epoch ``e >= 1``
is the record after the ``e``-th pass over the training set. The same number is
the MLflow step (Optuna's intermediate values start at epoch 1).

**Undefined values are** ``None`` **and omitted** from :meth:`EpochRecord.to_metrics`
(never NaN, never taken as divergence). At epoch 0 there is no epoch to describe,
so ``train/decay_factor`` and every layer's ``update_ratio``, ``decay_pull``,
``grad_push`` and ``decay_to_grad`` are absent; later records omit a value only
where its formula is undefined (see :class:`LayerStats`). :func:`metric_names`
lists the keys of an epoch ``>= 1`` record in which every value is defined.
(``grad_norm`` is the exception to the rule: NaN, and kept, when gradient
tracking is off.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

#: Per-layer fields that describe the change over an epoch: ``None`` (absent) at epoch 0.
EPOCH_CHANGE_FIELDS = ("update_ratio", "decay_pull", "grad_push", "decay_to_grad")


@dataclass(frozen=True)
class LossParts:
    """Loss of one evaluated set: ``total == data + penalty`` exactly.

    ``data`` is the mean per-sample cost over the set; ``penalty`` uses the
    training-set size (so it is the same for every set evaluated with the same
    weights); ``accuracy`` is the fraction of rows whose argmax matches.
    ``penalty_share`` (derived) is ``penalty / total``, 0.0 when ``total == 0``.
    """

    total: float
    data: float
    penalty: float
    accuracy: float

    @classmethod
    def of(cls, data: float, penalty: float, accuracy: float) -> "LossParts":
        return cls(total=data + penalty, data=data, penalty=penalty, accuracy=accuracy)

    @property
    def penalty_share(self) -> float:
        """``penalty / total``: the fraction of the total loss that is the weight penalty (0.0 if total is 0)."""
        return self.penalty / self.total if self.total != 0 else 0.0


def norm_balance(prev_fro: float | None, fro: float, decay_factor: float | None, *, rounding: float = 0.0
                 ) -> tuple[float | None, float | None, float | None]:
    """``(decay_pull, grad_push, decay_to_grad)`` of one layer over one epoch.

    ``f = decay_factor`` (the decay-only factor of the epoch), ``r = fro / prev_fro``
    (``||W_e||_F / ||W_(e-1)||_F``)::

        decay_pull    = -ln f
        grad_push     = ln(r / f)          so that  ||W_e|| = f * exp(grad_push) * ||W_(e-1)||
        decay_to_grad = decay_pull / grad_push

    ``decay_pull`` is ``None`` when ``f`` is ``None`` (epoch 0, L1 penalty) or ``f <= 0``;
    ``grad_push`` is ``None`` when ``decay_pull`` is, or ``prev_fro`` is ``None`` or 0,
    or ``fro`` is 0; ``decay_to_grad`` is ``None`` when either is ``None`` or
    ``grad_push == 0``. ``grad_push`` is set to exactly 0.0 when
    ``|ln(r/f)| <= rounding`` (the norm changed by the decay alone, up to rounding).
    """
    if decay_factor is None or not decay_factor > 0:
        return None, None, None
    pull = -math.log(decay_factor) + 0.0  # + 0.0: -0.0 -> 0.0 when f == 1
    if prev_fro is None or not prev_fro > 0 or not fro > 0:
        return pull, None, None
    push = math.log(fro) - math.log(prev_fro) + pull  # ln r - ln f, without forming r/f (no overflow)
    if abs(push) <= rounding:
        push = 0.0
    ratio = pull / push + 0.0 if push != 0 else None
    return pull, push, ratio


@dataclass(frozen=True)
class LayerStats:
    """Statistics of one weight layer ``W`` (``n_out x n_in``) at the end of an epoch.

    Weights: ``weight_fro`` = ||W||_F, ``weight_l1`` = sum |w|, ``weight_max_abs`` = max |w|,
    ``weight_mean``/``weight_var`` = mean and (population) variance of the entries,
    ``weight_rms`` = sqrt(mean w^2) = ||W||_F / sqrt(#weights), ``weight_sum`` = sum w,
    ``bias_norm`` = ||b||_2.

    Reference scales (Nielsen's "weights tail off near 1/sqrt(n)" exercise):
    ``rms_vs_fan_in`` = weight_rms / (1/sqrt(n_in)) = weight_rms * sqrt(n_in) (1 for the
    default N(0, 1/n_in) init, in expectation); ``rms_vs_n_weights`` = weight_rms * sqrt(N),
    N = the total number of weights of the network (all layers, biases excluded).

    Gradient: ``grad_norm`` = ||dC/dW||_F of the total loss (data loss over the whole
    training set + penalty) at the record's weights (NaN when gradient tracking is off).

    Change over the epoch (``None`` at epoch 0; see :func:`norm_balance`):
    ``update_ratio`` = ||W_e - W_(e-1)||_F / ||W_(e-1)||_F (``None`` when ||W_(e-1)|| = 0);
    ``decay_pull`` = -ln f, f = the epoch's decay-only factor (the record's ``decay_factor``;
    ``None`` under an active L1 penalty, whose decay is not a factor);
    ``grad_push`` = ln(r/f), r = ||W_e||_F / ||W_(e-1)||_F;
    ``decay_to_grad`` = decay_pull / grad_push: 1 at norm equilibrium, > 1 the weights
    shrink, 0 <= x < 1 they grow, negative: the gradient steps shrink the norm too.
    Exact for plain SGD (momentum 0); with momentum f is an effective factor and
    the split an approximation (see :mod:`nncore.train`).
    """

    weight_fro: float
    weight_l1: float
    weight_max_abs: float
    weight_mean: float
    weight_var: float
    weight_rms: float
    weight_sum: float
    bias_norm: float
    grad_norm: float
    update_ratio: float | None
    decay_pull: float | None
    grad_push: float | None
    decay_to_grad: float | None
    rms_vs_fan_in: float
    rms_vs_n_weights: float

    @classmethod
    def of(cls, w: np.ndarray, b: np.ndarray, grad_norm: float, update_ratio: float | None = None, *,
           n_weights: int | None = None, prev_fro: float | None = None, decay_factor: float | None = None,
           rounding: float = 0.0) -> "LayerStats":
        """Statistics of ``(w, b)``, accumulated in float64.

        ``n_weights``: N of ``rms_vs_n_weights`` (default ``w.size``: a one-layer network).
        ``prev_fro`` (||W_(e-1)||_F), ``decay_factor`` (f) and ``rounding``: see
        :func:`norm_balance` (``None``: epoch 0, the balance is absent).
        """
        w64 = w.astype(np.float64, copy=False)
        return cls.from_sums(
            sq=float(np.einsum("ij,ij->", w64, w64)), total=float(w64.sum()), l1=float(np.abs(w64).sum()),
            max_abs=float(np.abs(w64).max()), bias_norm=float(np.linalg.norm(b.astype(np.float64, copy=False))),
            shape=w.shape, grad_norm=grad_norm, update_ratio=update_ratio, n_weights=n_weights, prev_fro=prev_fro,
            decay_factor=decay_factor, rounding=rounding)

    @classmethod
    def from_sums(cls, *, sq: float, total: float, l1: float, max_abs: float, bias_norm: float,
                  shape: tuple[int, int], grad_norm: float, update_ratio: float | None = None,
                  n_weights: int | None = None, prev_fro: float | None = None, decay_factor: float | None = None,
                  rounding: float = 0.0) -> "LayerStats":
        """The statistics from the float64 reductions of a ``shape`` weight matrix (what :meth:`of` computes).

        ``sq`` = sum w^2, ``total`` = sum w, ``l1`` = sum |w|, ``max_abs`` = max |w|, ``bias_norm`` = ||b||_2;
        the other arguments as in :meth:`of`. Lets a caller that holds many layers (e.g.
        :mod:`nncore.population`) compute the reductions in one vectorized pass.
        """
        size = shape[0] * shape[1]
        mean = total / size
        fro = math.sqrt(sq)
        rms = math.sqrt(sq / size)
        pull, push, ratio = norm_balance(prev_fro, fro, decay_factor, rounding=rounding)
        return cls(
            weight_fro=fro,
            weight_l1=l1,
            weight_max_abs=max_abs,
            weight_mean=mean,
            weight_var=max(sq / size - mean * mean, 0.0),
            weight_rms=rms,
            weight_sum=total,
            bias_norm=bias_norm,
            grad_norm=grad_norm,
            update_ratio=update_ratio,
            decay_pull=pull,
            grad_push=push,
            decay_to_grad=ratio,
            rms_vs_fan_in=rms * math.sqrt(shape[1]),
            rms_vs_n_weights=rms * math.sqrt(size if n_weights is None else n_weights),
        )

    @property
    def finite(self) -> bool:
        """Whether every defined value except ``grad_norm`` is finite."""
        values = (getattr(self, f.name) for f in fields(self) if f.name != "grad_norm")
        return all(v is None or math.isfinite(v) for v in values)


@dataclass(frozen=True)
class EpochRecord:
    """Everything measured after one epoch (epoch 0: the initial network). Immutable; handed to every callback.

    ``decay_factor`` is the product over the epoch's steps of the multiplicative
    weight decay ``(1 - eta*decay_rate)`` actually applied (1.0 without L2; see
    :mod:`nncore.regularizers`); with momentum ``mu > 0`` it is the effective
    factor ``prod(1 - eta*decay_rate/(1 - mu))`` (see :mod:`nncore.train`);
    ``None`` at epoch 0. ``eta`` is the learning rate used during the epoch (it
    changes under a schedule; at epoch 0 the initial one). ``epoch_time`` is
    wall-clock seconds for the epoch, SGD and measurement included (at epoch 0
    the measurement alone). ``n_steps`` is the number of SGD steps (0 at epoch 0).
    """

    epoch: int
    eta: float
    train: LossParts
    eval: LossParts | None
    layers: tuple[LayerStats, ...]
    decay_factor: float | None
    epoch_time: float
    n_steps: int

    def to_metrics(self) -> dict[str, float]:
        """Flat ``{name: float}`` with the stable names listed in the module docstring; ``None`` values omitted."""
        out: dict[str, float] = {}
        for prefix, parts in (("train", self.train), ("eval", self.eval)):
            if parts is None:
                continue
            out[f"{prefix}/total_loss"] = parts.total
            out[f"{prefix}/data_loss"] = parts.data
            out[f"{prefix}/penalty"] = parts.penalty
            out[f"{prefix}/accuracy"] = parts.accuracy
            out[f"{prefix}/penalty_share"] = parts.penalty_share
        for i, layer in enumerate(self.layers, start=1):
            for f in fields(layer):
                value = getattr(layer, f.name)
                if value is not None:
                    out[f"layer{i}/{f.name}"] = value
        out["train/eta"] = self.eta
        if self.decay_factor is not None:
            out["train/decay_factor"] = self.decay_factor
        out["train/epoch_time"] = self.epoch_time
        return out


def metric_names(n_layers: int, *, has_eval: bool = True) -> list[str]:
    """The metric keys of an epoch ``>= 1`` record of a network with ``n_layers`` weight layers, in order.

    A record holds a subset of these: epoch 0 lacks ``train/decay_factor`` and the
    per-layer :data:`EPOCH_CHANGE_FIELDS`; a later record lacks a value whose
    formula is undefined there (e.g. ``decay_pull`` under L1). Every key a record
    can produce is in this list.
    """
    names = [f"{p}/{k}" for p in (("train", "eval") if has_eval else ("train",))
             for k in ("total_loss", "data_loss", "penalty", "accuracy", "penalty_share")]
    names += [f"layer{i}/{f.name}" for i in range(1, n_layers + 1) for f in fields(LayerStats)]
    return names + ["train/eta", "train/decay_factor", "train/epoch_time"]
