"""A run's history and facts as the findings read them (:mod:`nncore.diagnostics`): codes, severities,
:class:`Finding`, :class:`RunFacts`, :func:`history_table` and the history view the checks use.

Imports only NumPy, the standard library and nncore modules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nncore.checks import (
    check_choice, check_int, check_int_sequence, check_real, invalid, is_real,
)
from nncore.costs import COSTS
from nncore.records import EpochRecord
from nncore.regularizers import CONVENTIONS, PENALTIES, decay_rate

__all__ = ["CODES", "SEVERITIES", "Finding", "RunFacts", "history_table"]

# -- codes and severities ---------------------------------------------------------------

STEP_TOO_LARGE = "step_too_large"
DECAY_DOMINATES = "decay_dominates"
PENALTY_DRIVEN_GROWTH = "penalty_driven_growth"
OVERFITTING = "overfitting"
DECAY_NEGLIGIBLE = "decay_negligible"
DENOMINATOR_TRAP = "denominator_trap"
NORM_EQUILIBRIUM = "norm_equilibrium"
LAMBDA_CONVENTIONS = "lambda_conventions"


#: Every finding code, in the order of the table in the module docstring.
CODES = (STEP_TOO_LARGE, DECAY_DOMINATES, PENALTY_DRIVEN_GROWTH, OVERFITTING, DECAY_NEGLIGIBLE,
         DENOMINATOR_TRAP, NORM_EQUILIBRIUM, LAMBDA_CONVENTIONS)

#: Severities, most severe first (the sort order of :func:`diagnose`).
SEVERITIES = ("warning", "notice", "info")

# -- public types -------------------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    """One diagnosis: a stable ``code`` (one of :data:`CODES`), a ``severity`` (one of
    :data:`SEVERITIES`), one plain sentence with the run's own numbers, and the evidence
    (epochs and values; JSON-serialisable: plain ``float``/``int``/``str``/``bool``/``None``,
    lists and dicts; non-finite numbers become ``None``). ``layer`` is the 1-based weight
    layer of a per-layer finding, else ``None``.
    """

    code: str
    severity: str
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict, hash=False)
    layer: int | None = None

    def __post_init__(self) -> None:
        check_choice(self.code, "code", "Finding", CODES)
        check_choice(self.severity, "severity", "Finding", SEVERITIES)
        object.__setattr__(self, "evidence", _plain(dict(self.evidence)))

    def to_dict(self) -> dict:
        """``{"code", "severity", "message", "evidence", "layer"}`` (JSON-serialisable)."""
        return {"code": self.code, "severity": self.severity, "message": self.message,
                "evidence": _plain(dict(self.evidence)), "layer": self.layer}


@dataclass(frozen=True)
class RunFacts:
    """What the records do not hold.

    ``n_train`` (>= 1) and ``batch_size`` (in [1, n_train]): the training-set and
    mini-batch sizes; ``eta`` (> 0) the configured learning rate; ``lmbda`` (>= 0) the
    regularization strength under ``convention`` (one of :data:`nncore.CONVENTIONS`);
    ``penalty`` one of :data:`nncore.PENALTIES`; ``momentum`` in [0, 1); ``n_eval`` the
    evaluation-set size (None: unknown); ``sizes`` all layer sizes, input to output (None:
    unknown; needed for chance accuracy and the reference scales when the ``rms_vs_*``
    keys are absent); ``cost`` one of :data:`nncore.costs.COSTS` or None.

    Raises ``ValueError`` naming the field, the allowed values and the value got.
    """

    n_train: int
    batch_size: int
    eta: float
    lmbda: float
    convention: str = "dataset"
    penalty: str = "l2"
    momentum: float = 0.0
    n_eval: int | None = None
    sizes: Sequence[int] | None = None
    cost: str | None = None

    def __post_init__(self) -> None:
        owner = "RunFacts"
        fix = object.__setattr__
        n = check_int(self.n_train, "n_train", owner, low=1)
        fix(self, "n_train", n)
        fix(self, "batch_size", check_int(self.batch_size, "batch_size", owner, low=1, high=n))
        fix(self, "eta", check_real(self.eta, "eta", owner, low=0.0, low_open=True))
        fix(self, "lmbda", check_real(self.lmbda, "lmbda", owner, low=0.0))
        check_choice(self.convention, "convention", owner, CONVENTIONS)
        check_choice(self.penalty, "penalty", owner, PENALTIES)
        fix(self, "momentum", check_real(self.momentum, "momentum", owner, low=0.0, high=1.0, high_open=True))
        if self.n_eval is not None:
            fix(self, "n_eval", check_int(self.n_eval, "n_eval", owner, low=1))
        if self.sizes is not None:
            fix(self, "sizes", tuple(check_int_sequence(self.sizes, "sizes", owner, min_len=2, low=1)))
        if self.cost is not None:
            check_choice(self.cost, "cost", owner, COSTS)

    @property
    def active(self) -> bool:
        """Whether a penalty is applied (``penalty != "none"`` and ``lmbda > 0``)."""
        return self.penalty != "none" and self.lmbda > 0

    @property
    def decay_rate(self) -> float:
        """The per-step decay rate ``d`` (0 when no penalty is applied)."""
        if not self.active:
            return 0.0
        return decay_rate(self.lmbda, self.convention, n_train=self.n_train, batch_size=self.batch_size)


# -- history access -------------------------------------------------------------------------

def history_table(records: Sequence[EpochRecord]) -> dict[str, np.ndarray]:
    """Columns of a run's records: ``"epoch"`` plus every metric key any record has.

    Each value is a float64 array aligned with ``"epoch"`` (in the records' order), NaN
    where a record lacks the key (e.g. ``train/decay_factor`` at epoch 0). Keys appear in
    first-seen order.

    Raises ``ValueError`` when ``records`` is not a sequence of ``EpochRecord``.
    """
    if isinstance(records, (str, bytes, Mapping)) or not isinstance(records, Sequence) or not all(
            isinstance(r, EpochRecord) for r in records):
        raise invalid("records", "history_table", "a sequence of nncore.EpochRecord", records)
    rows = [r.to_metrics() for r in records]
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    table = {"epoch": np.array([float(r.epoch) for r in records], dtype=np.float64)}
    for key in keys:
        table[key] = np.array([_num(row.get(key)) for row in rows], dtype=np.float64)
    return table


def _num(value: Any) -> float:
    """A float, or NaN for ``None`` and anything that is not a real number."""
    if value is None or isinstance(value, (bool, np.bool_, str, bytes)):
        return math.nan
    if is_real(value):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class _History:
    """Aligned float columns of a history, sorted by epoch; absent keys read as NaN."""

    def __init__(self, history: Any, facts: RunFacts) -> None:
        owner = "diagnose"
        if isinstance(history, Sequence) and not isinstance(history, (str, bytes)):
            if not all(isinstance(r, EpochRecord) for r in history):
                raise invalid("history", owner, "a sequence of nncore.EpochRecord or a mapping of metric keys to "
                              "per-epoch values with an 'epoch' key", history)
            self._source: Any = history_table(history)
        else:
            try:
                ok = "epoch" in history
            except TypeError:
                ok = False
            if not ok:
                raise invalid("history", owner, "a sequence of nncore.EpochRecord or a mapping of metric keys "
                              "to per-epoch values with an 'epoch' key", history)
            self._source = history
        epochs = self._raw("epoch")
        if not np.all(np.isfinite(epochs)) or np.any(epochs != np.round(epochs)) or np.any(epochs < 0):
            raise invalid("history", owner, "a history whose 'epoch' values are ints >= 0", epochs.tolist())
        if len(np.unique(epochs)) != len(epochs):
            raise invalid("history", owner, "a history of one run (each epoch once)", epochs.tolist())
        self._order = np.argsort(epochs, kind="stable")
        self.epochs = epochs[self._order].astype(np.int64)
        self.n = len(self.epochs)
        self.facts = facts
        if facts.sizes is not None:
            self.n_layers = len(facts.sizes) - 1
        else:
            self.n_layers = 0
            while any(f"layer{self.n_layers + 1}/{k}" in self._source for k in ("weight_fro", "weight_rms")):
                self.n_layers += 1
        self._cache: dict[str, np.ndarray] = {}

    def _raw(self, key: str) -> np.ndarray:
        values = self._source[key]
        try:
            seq = list(values)
        except TypeError as exc:
            raise invalid("history", "diagnose", f"per-epoch values under {key!r}", values) from exc
        out = np.array([_num(v) for v in seq], dtype=np.float64)
        if key != "epoch" and len(out) != self.n:
            raise invalid("history", "diagnose", f"{self.n} values under {key!r} (one per epoch)", values)
        return out

    def has(self, key: str) -> bool:
        return bool(np.any(np.isfinite(self.get(key))))

    def get(self, key: str) -> np.ndarray:
        """The column (a copy), NaN where absent."""
        if key not in self._cache:
            if key in self._source:
                self._cache[key] = self._raw(key)[self._order]
            else:
                self._cache[key] = np.full(self.n, np.nan)
        return self._cache[key].copy()

    # -- basic quantities, with fallbacks ----------------------------------------------------

    def loss(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(total, data, penalty)`` of ``split``, each filled from the other two where absent."""
        total, data, pen = (self.get(f"{split}/{k}") for k in ("total_loss", "data_loss", "penalty"))
        # NaN is "absent"; an infinite recorded value is kept (a diverged loss)
        if split == "eval":  # the penalty uses n_train: the same for every set
            pen = np.where(np.isnan(pen), self.get("train/penalty"), pen)
        with np.errstate(invalid="ignore"):
            total = np.where(np.isnan(total), data + pen, total)
            data = np.where(np.isnan(data), total - pen, data)
            pen = np.where(np.isnan(pen), total - data, pen)
        return total, data, pen

    def penalty_share(self, split: str) -> np.ndarray:
        share = self.get(f"{split}/penalty_share")
        total, _, pen = self.loss(split)
        with np.errstate(divide="ignore", invalid="ignore"):
            computed = np.where(total == 0, 0.0, pen / total)
        return np.where(np.isfinite(share), share, computed)

    def n_weights(self, layer: int) -> int | None:
        sizes = self.facts.sizes
        return None if sizes is None else sizes[layer - 1] * sizes[layer]

    def rms(self, layer: int) -> np.ndarray:
        rms = self.get(f"layer{layer}/weight_rms")
        nw = self.n_weights(layer)
        if nw is not None:
            rms = np.where(np.isfinite(rms), rms, self.get(f"layer{layer}/weight_fro") / math.sqrt(nw))
        return rms

    def fro(self, layer: int) -> np.ndarray:
        fro = self.get(f"layer{layer}/weight_fro")
        nw = self.n_weights(layer)
        if nw is not None:
            fro = np.where(np.isfinite(fro), fro, self.get(f"layer{layer}/weight_rms") * math.sqrt(nw))
        return fro

    def sq_norm_sum(self) -> np.ndarray:
        """sum_l ||W_l||_F^2 per epoch (NaN when a layer's norm is absent)."""
        total = np.zeros(self.n)
        for layer in range(1, self.n_layers + 1):
            total = total + self.fro(layer) ** 2
        return total if self.n_layers else np.full(self.n, np.nan)

    def accuracy(self) -> tuple[str, np.ndarray]:
        """``("eval", ...)`` when eval accuracy is recorded, else ``("train", ...)``."""
        if self.has("eval/accuracy"):
            return "eval", self.get("eval/accuracy")
        return "train", self.get("train/accuracy")


# -- formatting and JSON ------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    """``value`` with NumPy types turned into Python ones and non-finite floats into None."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    return value
