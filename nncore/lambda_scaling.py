"""How lambda should scale with the training-set size and the batch size, read off a study.

The question: a study trained the same network at several lambdas for each of several batch sizes
``m`` and/or training-set sizes ``n``. In each such *group* (one ``(m, n)`` pair) one lambda did
best. Written in the three conventions of :mod:`nncore.regularizers` (same per-step decay rate
``decay_rate``; ``dataset: lmbda = decay_rate*n``, ``per_batch: alpha = decay_rate*m``,
``decoupled: wd = decay_rate``), which convention's optimum stays the same from group to group?

That convention is the one to keep fixed when ``m`` or ``n`` changes. Its *spread* is measured in
log space: the range ``max - min`` of ``log10(best lambda)`` over the groups, in decades (0: the
same optimum everywhere; 1: a factor of 10 apart). Conventions whose spread is within
:data:`TIE_DECADES` of the smallest are reported together (when only ``n`` varies, ``per_batch``
and ``decoupled`` differ by the constant factor ``m`` and always tie).

The best lambda of a group is only as fine as the lambdas tried there: a grid with factor-2 steps
cannot show a spread below ``log10(2) = 0.3`` decades between groups whose true optima differ.
The analysis says how many trials each group had, and notes each group whose best lambda is the
lowest or the highest it tried (the optimum may lie outside the range: widen it). Groups whose best trial has lambda 0 (no
decay) have no position in log space and are left out, with a note.

Pure NumPy; the sweeps package feeds it from a study's trials (:mod:`sweeps.diagnostics`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from nncore.checks import check_choice
from nncore.regularizers import CONVENTIONS, decay_rate

#: Conventions whose log10 spread is within this many decades of the smallest tie for "steadiest".
TIE_DECADES = 0.05


@dataclass(frozen=True)
class GroupOptimum:
    """The best trial of one ``(batch_size, n_train)`` group: its lambda in every convention."""

    batch_size: int
    n_train: int
    n_trials: int
    best_value: float
    best: dict[str, float]  # convention -> lambda with the same decay_rate
    decay_rate: float
    at_edge: str | None = None  # "lowest" / "highest": the best is an end of the lambdas this group tried

    def to_dict(self) -> dict:
        return {"batch_size": self.batch_size, "n_train": self.n_train, "n_trials": self.n_trials,
                "best_value": self.best_value, "decay_rate": self.decay_rate, "at_edge": self.at_edge, **{f"best_{c}": v
                                                                                  for c, v in self.best.items()}}


@dataclass(frozen=True)
class ScalingAnalysis:
    """What :func:`lambda_scaling` found: the groups' optima, each convention's spread, the steadiest."""

    varies: tuple[str, ...]  # "batch_size" and/or "n_train": what changes between groups
    groups: tuple[GroupOptimum, ...]
    spread: dict[str, float]  # convention -> range of log10(best lambda) over groups, in decades
    steadiest: tuple[str, ...]  # conventions within TIE_DECADES of the smallest spread
    message: str
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        return {"varies": list(self.varies), "groups": [g.to_dict() for g in self.groups],
                "spread_decades": dict(self.spread), "steadiest": list(self.steadiest), "message": self.message,
                "notes": list(self.notes)}


def _as_1d(name: str, values: Sequence, n: int | None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"lambda_scaling: {name} must be one-dimensional, got shape {arr.shape}")
    if n is not None and len(arr) != n:
        raise ValueError(f"lambda_scaling: {name} must have one entry per trial ({n}), got {len(arr)}")
    return arr


def lambda_scaling(lmbda: Sequence[float], convention: Sequence[str] | str, batch_size: Sequence[int],
                   n_train: Sequence[int], value: Sequence[float], *, maximize: bool) -> ScalingAnalysis | None:
    """Best lambda per ``(batch_size, n_train)`` group, in the three conventions, and the steadiest one.

    One entry per finished trial: its ``lmbda`` in its own ``convention`` (one name for all, or one
    per trial), its ``batch_size``, ``n_train`` and objective ``value`` (``maximize``: higher is
    better). Trials with a non-finite value are ignored. Returns ``None`` when fewer than two groups
    have a best lambda > 0 (nothing varies, so there is nothing to compare).

    Raises:
        ValueError: arrays of different lengths, an unknown convention, a batch size or n_train < 1,
            a batch size larger than its n_train, a negative lambda.
    """
    lam = _as_1d("lmbda", lmbda, None).astype(float)
    n = len(lam)
    conv = np.full(n, convention, dtype=object) if isinstance(convention, str) else \
        _as_1d("convention", convention, n).astype(object)
    m = _as_1d("batch_size", batch_size, n).astype(np.int64)
    nt = _as_1d("n_train", n_train, n).astype(np.int64)
    val = _as_1d("value", value, n).astype(float)
    for c in set(conv.tolist()):
        check_choice(c, "convention", "lambda_scaling", CONVENTIONS)
    if (m < 1).any() or (nt < 1).any():
        raise ValueError("lambda_scaling: batch_size and n_train must be >= 1, got "
                         f"min batch_size={m.min() if n else None}, min n_train={nt.min() if n else None}")
    if (m > nt).any():
        i = int(np.argmax(m > nt))
        raise ValueError(f"lambda_scaling: batch_size must be <= n_train, got batch_size={m[i]} for n_train={nt[i]}")
    if (lam < 0).any() or not np.isfinite(lam).all():
        raise ValueError(f"lambda_scaling: lmbda must be finite and >= 0, got {lam[(lam < 0) | ~np.isfinite(lam)][0]}")

    ok = np.isfinite(val)
    groups: list[GroupOptimum] = []
    notes: list[str] = []
    for key in sorted({(int(a), int(b)) for a, b in zip(m[ok], nt[ok])}):
        sel = np.flatnonzero(ok & (m == key[0]) & (nt == key[1]))
        i = sel[np.argmax(val[sel]) if maximize else np.argmin(val[sel])]
        rate = decay_rate(float(lam[i]), str(conv[i]), n_train=key[1], batch_size=key[0])
        if rate <= 0:
            notes.append(f"batch_size={key[0]}, n_train={key[1]}: the best trial had lambda 0 (left out)")
            continue
        best = {"dataset": rate * key[1], "per_batch": rate * key[0], "decoupled": rate}
        tried = sorted({decay_rate(float(lam[j]), str(conv[j]), n_train=key[1], batch_size=key[0]) for j in sel})
        edge = None
        if len(tried) > 1 and math.isclose(rate, tried[0], rel_tol=1e-12):
            edge = "lowest"
        elif len(tried) > 1 and math.isclose(rate, tried[-1], rel_tol=1e-12):
            edge = "highest"
        if edge is not None:
            notes.append(f"batch_size={key[0]}, n_train={key[1]}: the best lambda is the {edge} tried "
                         f"(the optimum may lie {'below' if edge == 'lowest' else 'above'} the range)")
        groups.append(GroupOptimum(key[0], key[1], len(sel), float(val[i]), best, rate, edge))
    if len(groups) < 2:
        return None
    varies = tuple(name for name, vals in (("batch_size", {g.batch_size for g in groups}),
                                           ("n_train", {g.n_train for g in groups})) if len(vals) > 1)
    spread = {c: float(np.ptp([math.log10(g.best[c]) for g in groups])) for c in CONVENTIONS}
    low = min(spread.values())
    steadiest = tuple(c for c in CONVENTIONS if spread[c] <= low + TIE_DECADES)
    return ScalingAnalysis(varies, tuple(groups), spread, steadiest, _message(varies, groups, spread, steadiest),
                           tuple(notes))


def _message(varies: tuple[str, ...], groups: list[GroupOptimum], spread: dict[str, float],
             steadiest: tuple[str, ...]) -> str:
    what = " and ".join(varies)
    names = " and ".join(steadiest)
    others = ", ".join(f"{c} {spread[c]:.2f}" for c in CONVENTIONS if c not in steadiest)
    c0 = steadiest[0]
    values = ", ".join(f"{g.best[c0]:.3g}" for g in groups)
    keep = f"keep {c0} lambda fixed when {what} change{'' if len(varies) > 1 else 's'}" if len(steadiest) < len(CONVENTIONS) else \
        "the groups do not tell the conventions apart"
    return (f"Across {len(groups)} groups of {what}, the best lambda moved least in the {names} convention"
            f"{'s' if len(steadiest) > 1 else ''} ({spread[c0]:.2f} decades: {values}; "
            f"{others or 'no other convention'} decades): {keep}.")
