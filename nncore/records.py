"""The per-epoch record: the one place where metric names are defined.

:meth:`EpochRecord.to_metrics` flattens a record into ``{name: float}`` with
slash-separated names, which become the MLflow metric keys unchanged::

    train/total_loss  train/data_loss  train/penalty  train/accuracy
    eval/total_loss   eval/data_loss   eval/penalty   eval/accuracy
    layer1/weight_fro layer1/weight_l1 layer1/weight_max_abs layer1/weight_mean
    layer1/weight_var layer1/weight_rms layer1/weight_sum layer1/bias_norm
    layer1/grad_norm  layer1/update_ratio     (layer2/..., one block per weight layer)
    train/eta         train/decay_factor      train/epoch_time

Every key has a group prefix with a slash (``train/``, ``eval/``, ``layerN/``), and no
hyperparameter name has one, so metric keys and parameter names never collide (the
record's ``train/eta``, the step size in effect that epoch, next to the ``eta``
hyperparameter; see ``docs/vocabulary.md``).

Layers are numbered from 1: ``layer1`` is the weight matrix between the input
and the first hidden layer. Epochs are numbered from 1 (the record after the
first pass over the training set); the same number is the Optuna step and the
MLflow step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np


@dataclass(frozen=True)
class LossParts:
    """Loss of one evaluated set: ``total == data + penalty`` exactly.

    ``data`` is the mean per-sample cost over the set; ``penalty`` uses the
    training-set size (so it is the same for every set evaluated with the same
    weights); ``accuracy`` is the fraction of rows whose argmax matches.
    """

    total: float
    data: float
    penalty: float
    accuracy: float

    @classmethod
    def of(cls, data: float, penalty: float, accuracy: float) -> "LossParts":
        return cls(total=data + penalty, data=data, penalty=penalty, accuracy=accuracy)


@dataclass(frozen=True)
class LayerStats:
    """Statistics of one weight layer at the end of an epoch.

    ``weight_fro`` = ||W||_F, ``weight_l1`` = sum |w|, ``weight_max_abs`` = max |w|,
    ``weight_mean``/``weight_var`` = mean and (population) variance of the entries,
    ``weight_rms`` = sqrt(mean w^2) = ||W||_F / sqrt(#weights), ``weight_sum`` = sum w,
    ``bias_norm`` = ||b||_2, ``grad_norm`` = ||dC/dW||_F of the total loss (data loss
    over the whole training set + penalty) at the epoch's final weights (NaN when
    gradient tracking is off), ``update_ratio`` = ||W_end - W_start||_F / ||W_start||_F
    over the epoch.
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
    update_ratio: float

    @classmethod
    def of(cls, w: np.ndarray, b: np.ndarray, grad_norm: float, update_ratio: float) -> "LayerStats":
        w64 = w.astype(np.float64, copy=False)
        sq = float(np.einsum("ij,ij->", w64, w64))
        total = float(w64.sum())
        mean = total / w64.size
        return cls(
            weight_fro=math.sqrt(sq),
            weight_l1=float(np.abs(w64).sum()),
            weight_max_abs=float(np.abs(w64).max()),
            weight_mean=mean,
            weight_var=max(sq / w64.size - mean * mean, 0.0),
            weight_rms=math.sqrt(sq / w64.size),
            weight_sum=total,
            bias_norm=float(np.linalg.norm(b.astype(np.float64, copy=False))),
            grad_norm=grad_norm,
            update_ratio=update_ratio,
        )

    @property
    def finite(self) -> bool:
        return all(math.isfinite(getattr(self, f.name)) for f in fields(self) if f.name != "grad_norm")


@dataclass(frozen=True)
class EpochRecord:
    """Everything measured after one epoch. Immutable; handed to every callback.

    ``decay_factor`` is the product over the epoch's steps of the multiplicative
    weight decay ``(1 - eta*decay_rate)`` actually applied (1.0 without L2; see
    :mod:`nncore.regularizers`). ``eta`` is the learning rate used during the
    epoch (it changes under a schedule). ``epoch_time`` is wall-clock seconds for
    the epoch, SGD and measurement included.
    """

    epoch: int
    eta: float
    train: LossParts
    eval: LossParts | None
    layers: tuple[LayerStats, ...]
    decay_factor: float
    epoch_time: float
    n_steps: int

    def to_metrics(self) -> dict[str, float]:
        """Flat ``{name: float}`` with the stable names listed in the module docstring."""
        out: dict[str, float] = {}
        for prefix, parts in (("train", self.train), ("eval", self.eval)):
            if parts is None:
                continue
            out[f"{prefix}/total_loss"] = parts.total
            out[f"{prefix}/data_loss"] = parts.data
            out[f"{prefix}/penalty"] = parts.penalty
            out[f"{prefix}/accuracy"] = parts.accuracy
        for i, layer in enumerate(self.layers, start=1):
            for name, value in asdict(layer).items():
                out[f"layer{i}/{name}"] = value
        out["train/eta"] = self.eta
        out["train/decay_factor"] = self.decay_factor
        out["train/epoch_time"] = self.epoch_time
        return out


def metric_names(n_layers: int, *, has_eval: bool = True) -> list[str]:
    """The metric keys a record of a network with ``n_layers`` weight layers produces."""
    names = [f"{p}/{k}" for p in (("train", "eval") if has_eval else ("train",))
             for k in ("total_loss", "data_loss", "penalty", "accuracy")]
    names += [f"layer{i}/{f.name}" for i in range(1, n_layers + 1) for f in fields(LayerStats)]
    return names + ["train/eta", "train/decay_factor", "train/epoch_time"]
