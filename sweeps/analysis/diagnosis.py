"""What regularization is doing, in plain words: a trial's findings and a study's lambda scaling.

The findings themselves are :mod:`nncore.diagnostics` (pure functions of a run's epoch records);
the study analysis is :mod:`nncore.lambda_scaling`. This module feeds them from what a sweep
stored and puts their answers where people look:

* at the end of every trial (:class:`sweeps.engine.objective.Objective`), its findings go to the trial's
  MLflow run: the artifact ``diagnosis.json`` (:func:`diagnosis_document`) and one tag per finding
  code, ``sweeps.finding.<code>`` = the finding's severity (:func:`finding_tags`), so the runs
  table can filter on them (``tags.`sweeps.finding.penalty_driven_growth` = 'warning'``);
* at the end of a sweep the launcher logs the study's analysis to the parent run: ``diagnosis.md``
  (:func:`study_markdown`) and, when lambda varied with the batch size or the training-set size,
  ``lambda_scaling.png``;
* ``sweeps explain STUDY [--trial N | --run RUN_ID] [--json]`` and :func:`sweeps.query.findings`
  compute the same findings again from the stored history (:func:`explain_study`,
  :func:`explain_trial`): findings depend only on the records and the run's parameters, so they
  are the same numbers, and runs logged before diagnoses existed are explained too.

The run's parameters come from the MLflow params every trial logs (:func:`sweeps.engine.objective.trial_params`):
``n_train``, ``n_eval``, ``batch_size``, ``eta``, ``lmbda``, ``convention``, ``penalty``,
``momentum``, ``sizes``, ``cost``, ``objective.metric``, ``objective.direction``.
"""

from __future__ import annotations

import ast
import logging
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from nncore.diagnostics import SEVERITIES, Finding, RunFacts, diagnose  # SEVERITIES: most severe first
from nncore.lambda_scaling import ScalingAnalysis, lambda_scaling
from sweeps import names

_log = logging.getLogger("sweeps.diagnosis")

#: The artifact of a trial's run that holds its findings.
DIAGNOSIS_ARTIFACT = "diagnosis.json"
#: The parent run's artifacts: the study's analysis (markdown) and the lambda-scaling plot.
STUDY_REPORT = "diagnosis.md"
SCALING_PLOT = "lambda_scaling.png"


# -- a run's facts and table -------------------------------------------------------------------

def _param(params: Mapping[str, Any], key: str) -> Any:
    if key not in params or params[key] in (None, ""):
        raise ValueError(f"run parameter {key!r} is missing (got params {sorted(params)[:12]}...): "
                         "this run was not logged by a sweeps trial")
    return params[key]


def _sizes(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return None
    try:
        return tuple(int(v) for v in value)
    except (TypeError, ValueError):
        return None


def run_facts(params: Mapping[str, Any]) -> RunFacts:
    """:class:`~nncore.diagnostics.RunFacts` from a trial's params (MLflow strings or Python values).

    Raises ``ValueError`` naming the first missing parameter.
    """
    n_eval = int(float(params.get("n_eval") or 0))
    return RunFacts(
        n_train=int(float(_param(params, "n_train"))), batch_size=int(float(_param(params, "batch_size"))),
        eta=float(_param(params, "eta")), lmbda=float(params.get("lmbda") or 0.0),
        convention=str(params.get("convention") or "dataset"), penalty=str(params.get("penalty") or "l2"),
        momentum=float(params.get("momentum") or 0.0), n_eval=n_eval or None,
        sizes=_sizes(params.get("sizes")), cost=params.get("cost") or None)


def rows_table(rows: Sequence[Mapping[str, float]], epochs: Sequence[int]) -> dict[str, np.ndarray]:
    """A history as ``nncore.diagnostics`` reads it: ``epoch`` plus one array per metric key
    (NaN where an epoch lacks the key), from one metrics dict per epoch."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    table = {k: np.array([float(r.get(k, math.nan)) for r in rows]) for k in keys}
    table["epoch"] = np.asarray(epochs, dtype=float)
    return table


def frame_table(wide: Any) -> dict[str, np.ndarray]:
    """The same from one trial's rows of ``query.history(..., wide=True)`` (sorted by epoch)."""
    wide = wide.sort_values("epoch")
    skip = {"run_id", "trial"}
    return {c: wide[c].to_numpy(dtype=float) for c in wide.columns if c not in skip}


# -- what goes to MLflow -----------------------------------------------------------------------

def worst(findings: Sequence[Finding]) -> dict[str, str]:
    """``{code: the most severe severity among its findings}`` (per-layer findings share a code)."""
    out: dict[str, str] = {}
    for f in findings:
        if f.code not in out or SEVERITIES.index(f.severity) < SEVERITIES.index(out[f.code]):
            out[f.code] = f.severity
    return out


def finding_tags(findings: Sequence[Finding]) -> dict[str, str]:
    """One MLflow tag per finding code: ``sweeps.finding.<code>`` = its worst severity."""
    return {f"{names.TAG_FINDING_PREFIX}{code}": sev for code, sev in sorted(worst(findings).items())}


def diagnosis_document(trial: int, facts: RunFacts, findings: Sequence[Finding]) -> dict[str, Any]:
    """The content of ``diagnosis.json``: the trial, the facts the findings used, the findings."""
    return {"trial": trial, "facts": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(facts).items()},
            "findings": [f.to_dict() for f in findings]}


# -- explaining stored runs --------------------------------------------------------------------

@dataclass(frozen=True)
class TrialExplanation:
    """One trial's findings, with what they were computed from."""

    trial: int
    run_id: str
    state: str
    value: float | None
    facts: RunFacts
    findings: tuple[Finding, ...]
    epochs: int

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "state": self.state, "value": self.value, "epochs": self.epochs,
                **diagnosis_document(self.trial, self.facts, self.findings)}


@dataclass(frozen=True)
class StudyExplanation:
    """Every finished trial's findings, how often each code came up, and the lambda-scaling analysis."""

    study: str
    objective: str | None
    direction: str | None
    trials: tuple[TrialExplanation, ...]
    scaling: ScalingAnalysis | None
    skipped: tuple[str, ...] = field(default=())

    def code_counts(self) -> dict[str, int]:
        """Trials per finding code (a per-layer code counts once per trial)."""
        return dict(sorted(Counter(code for t in self.trials for code in {f.code for f in t.findings}).items()))

    def to_dict(self) -> dict[str, Any]:
        return {"study": self.study, "objective": self.objective, "direction": self.direction,
                "code_counts": self.code_counts(), "trials": [t.to_dict() for t in self.trials],
                "lambda_scaling": self.scaling.to_dict() if self.scaling is not None else None,
                "skipped": list(self.skipped)}


def trial_number_of(run: Any) -> int | None:
    """The trial number a run's ``sweeps.trial_number`` tag names (None without one)."""
    text = run.data.tags.get(names.TAG_TRIAL_NUMBER, "")
    return int(text) if text.isdigit() else None


def explain_run(run: Any, table: Mapping[str, np.ndarray]) -> TrialExplanation:
    params = run.data.params
    facts = run_facts(params)
    metric = params.get("objective.metric")
    value = None
    if metric and metric in table and len(table[metric]):
        last = table[metric][~np.isnan(table[metric])]
        value = float(last[-1]) if len(last) else None
    epochs = int(np.sum(table["epoch"] >= 1)) if "epoch" in table else 0
    return TrialExplanation(trial_number_of(run), run.info.run_id, run.data.tags.get(names.TAG_STATE, run.info.status),
                            value, facts, tuple(diagnose(table, facts)), epochs)


def study_scaling(trials: Sequence[TrialExplanation], *, maximize: bool) -> ScalingAnalysis | None:
    """:func:`nncore.lambda_scaling.lambda_scaling` over the COMPLETE trials with a penalty."""
    done = [t for t in trials if t.state == names.STATE_COMPLETE and t.value is not None and t.facts.penalty != "none"]
    if not done:
        return None
    return lambda_scaling([t.facts.lmbda for t in done], [t.facts.convention for t in done],
                          [t.facts.batch_size for t in done], [t.facts.n_train for t in done],
                          [t.value for t in done], maximize=maximize)


# -- the study report --------------------------------------------------------------------------

def study_markdown(exp: StudyExplanation) -> str:
    """The parent run's ``diagnosis.md``: finding counts, the best trial's findings, lambda scaling."""
    lines = [f"# Study {exp.study}: what regularization is doing", ""]
    lines.append(f"{len(exp.trials)} finished trials explained"
                 + (f" ({len(exp.skipped)} runs skipped)" if exp.skipped else "") + ".")
    counts = exp.code_counts()
    if counts:
        lines += ["", "| finding | trials |", "|---|---|", *[f"| `{c}` | {n} |" for c, n in counts.items()]]
    complete = [t for t in exp.trials if t.state == names.STATE_COMPLETE and t.value is not None]
    if complete and exp.objective:
        best = (max if exp.direction != "minimize" else min)(complete, key=lambda t: t.value)
        lines += ["", f"## The best trial ({best.trial}, {exp.objective} = {best.value:.4g})", ""]
        lines += [f"- **{f.code}** ({f.severity}{f', layer {f.layer}' if f.layer else ''}): {f.message}"
                  for f in best.findings] or ["- no findings"]
    lines += ["", "## Lambda scaling", ""]
    if exp.scaling is None:
        lines.append("Not analysed: the study did not try lambda at two or more batch sizes or training-set "
                     "sizes (with a best lambda > 0 in each).")
    else:
        s = exp.scaling
        lines += [s.message, "", "| batch_size | n_train | trials | best value | dataset | per_batch | decoupled |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {g.batch_size} | {g.n_train} | {g.n_trials} | {g.best_value:.4g} | {g.best['dataset']:.4g} | "
                  f"{g.best['per_batch']:.4g} | {g.best['decoupled']:.4g} |" for g in s.groups]
        lines += ["", "Spread of the best lambda over the groups (log10 range, decades): "
                  + ", ".join(f"{c} {v:.2f}" for c, v in s.spread.items()) + "."]
        lines += [f"- {n}" for n in s.notes]
    return "\n".join(lines) + "\n"


def diagnose_trial(number: int, history: list[dict[str, float]], epochs: list[int] | None,
             params: dict[str, Any]) -> tuple[dict[str, Any], list[Any]] | None:
    """The trial's findings (this module): ``(diagnosis.json content, findings)``.

    ``history``: every logged record (epoch 0 included), ``epochs`` their epoch numbers (default 1, 2, ...).
    Never fails the trial: a diagnosis that cannot be made is logged as a warning and skipped (None).
    """
    try:
        facts = run_facts(params)
        findings = diagnose(rows_table(history, epochs if epochs is not None else
                                             range(1, len(history) + 1)), facts)
        return diagnosis_document(number, facts, findings), findings
    except Exception as exc:  # noqa: BLE001 - a diagnosis is a reading of the trial, not part of it
        _log.warning("trial %d: no diagnosis (%s: %s)", number, type(exc).__name__, exc)
        return None
