"""Diagnostics of one training run: plain-language findings computed from its history.

Pure functions over the per-epoch metrics of a run (:mod:`nncore.records`) and a few
facts the records do not hold (:class:`RunFacts`: set sizes, step size, lambda and its
convention). Nothing is trained or re-evaluated here: every finding depends only on the
history and the facts, so it can be recomputed from MLflow metrics as well as from the
records of :func:`nncore.train.train`.

``history`` is either a sequence of :class:`~nncore.records.EpochRecord` or a mapping
``metric key -> per-epoch values`` with an ``"epoch"`` key (a pandas wide frame with an
``epoch`` column works too: only ``key in history`` and ``history[key]`` are used). Rows
are sorted by epoch; epoch 0 (the network before any step) is used when present but never
required. A missing key, ``None`` or any non-number is NaN ("absent"). Derived keys
(``train/penalty_share``, ``layerN/decay_to_grad``, ``layerN/rms_vs_fan_in``, ...) are
used when present and recomputed from the basic keys (``train/total_loss``,
``train/data_loss``, ``train/penalty``, ``layerN/weight_fro``, ``layerN/weight_rms``,
``train/decay_factor``) otherwise.

Findings (:data:`CODES`; the thresholds are constants of :mod:`nncore.findings`, where the eight checks live,
also readable here as ``nncore.diagnostics.<NAME>``; codes, :class:`Finding`, :class:`RunFacts` and the
history view are in :mod:`nncore.run_history`):

=====================  ===============  ==============================================================
code                   severity         fires when (thresholds: the constants named)
=====================  ===============  ==============================================================
step_too_large         warning          the train data loss oscillates (OSCILLATION_*) or ends
                                        DIVERGENCE_FACTOR times above its lowest value
decay_dominates        warning          a layer's weight RMS fell COLLAPSE_FACTOR-fold and accuracy is
                                        within CHANCE_MARGIN of chance 1/sizes[-1] (needs sizes)
penalty_driven_growth  notice           a total (train or eval) ended GROWTH_MIN_RISE above its lowest
                                        value, GROWTH_MIN_EPOCHS+ epochs later, while its data loss fell
overfitting            notice           after the best eval epoch the train data loss fell and the
                                        train/eval gap widened (OVERFIT_*)
decay_negligible       notice           penalty / train total < NEGLIGIBLE_SHARE in every epoch
denominator_trap       info / notice    a penalty, n_eval known, n_train/n_eval off 1 by TRAP_MIN_FACTOR:
                                        the eval total with the penalty divided by n_eval (network2.py);
                                        notice when that total would rise while accuracy improves
norm_equilibrium       info             per layer: decay pull / gradient push over EQUILIBRIUM_WINDOW
                                        epochs, RMS direction, RMS against 1/sqrt(n_in), 1/sqrt(N)
lambda_conventions     info             a penalty: lmbda in the three conventions, and what the same
                                        per-step decay needs at LAMBDA_SCENARIOS
=====================  ===============  ==============================================================

Severity: ``warning``: training went wrong (the result is probably unusable);
``notice``: a pattern that changes how the curves should be read or which epoch to keep;
``info``: reference facts about the run. :func:`diagnose` orders findings by severity
(warning first), then code, then layer.

Imports only NumPy, the standard library and nncore modules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nncore.checks import check_instance
from nncore.findings import (  # noqa: F401 - the thresholds, as nncore.diagnostics.<NAME>
    STRENGTH_NAMES, GROWTH_MIN_RISE, GROWTH_MIN_EPOCHS, TRAP_MIN_FACTOR, EQUILIBRIUM_WINDOW,
    EQUILIBRIUM_MIN_EPOCHS, EQUILIBRIUM_TOLERANCE, DIRECTION_TOLERANCE, COLLAPSE_FACTOR, CHANCE_MARGIN,
    NEGLIGIBLE_SHARE, LAMBDA_SCENARIOS, OVERFIT_MIN_EPOCHS, OVERFIT_MIN_ACC_WIDENING, OVERFIT_MIN_LOSS_WIDENING,
    OSCILLATION_WINDOW, OSCILLATION_MIN_EPOCHS, OSCILLATION_MIN_REVERSALS, OSCILLATION_MIN_AMPLITUDE,
    DIVERGENCE_FACTOR,
    CHECKS,
)
from nncore.records import EpochRecord
from nncore.run_history import (  # noqa: F401 - the codes, as nncore.diagnostics.<CODE>
    CODES, DECAY_DOMINATES, DECAY_NEGLIGIBLE, DENOMINATOR_TRAP, LAMBDA_CONVENTIONS, NORM_EQUILIBRIUM, OVERFITTING,
    PENALTY_DRIVEN_GROWTH, SEVERITIES, STEP_TOO_LARGE, Finding, RunFacts, _History, history_table,
)

__all__ = [
    "CODES", "SEVERITIES", "Finding", "RunFacts", "diagnose", "history_table", "summarize",
]


def diagnose(history: Sequence[EpochRecord] | Mapping[str, Sequence[float]], facts: RunFacts) -> list[Finding]:
    """Every finding about one run, most severe first (then by code, then layer).

    ``history``: the run's records, or a mapping ``metric key -> per-epoch values`` with an
    ``"epoch"`` key (see the module docstring). ``facts``: a :class:`RunFacts`.

    Raises ``ValueError`` for a ``facts`` that is not a ``RunFacts`` or a malformed history
    (no ``epoch`` key, repeated epochs, columns of another length).
    """
    check_instance(facts, "facts", "diagnose", RunFacts, what="an nncore.diagnostics.RunFacts")
    h = _History(history, facts)
    findings = [x for check in CHECKS for x in check(h)]
    if any(x.code == DECAY_DOMINATES for x in findings):  # a net at chance level is not overfitting
        findings = [x for x in findings if x.code != OVERFITTING]
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(findings, key=lambda x: (rank[x.severity], x.code, x.layer or 0))


def summarize(findings: Sequence[Finding]) -> str:
    """Plain text, one line per finding: ``[severity] code (layerN): message``."""
    if not findings:
        return "No findings."
    lines = []
    for x in findings:
        where = f" (layer{x.layer})" if x.layer is not None else ""
        lines.append(f"[{x.severity}] {x.code}{where}: {x.message}")
    return "\n".join(lines)
