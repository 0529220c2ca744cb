"""A study's findings computed again from what it stored: the trial runs and their histories, read back
through :mod:`sweeps.query`, diagnosed by :mod:`sweeps.analysis.diagnosis` (``sweeps explain``,
:func:`sweeps.query.findings`, the launcher's closing report).
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from sweeps.analysis.diagnosis import (
    StudyExplanation,
    TrialExplanation,
    explain_run,
    frame_table,
    study_scaling,
    trial_number_of,
)
from sweeps.names import RUN_RUNNING
from sweeps.query.client import search_trial_runs
from sweeps.query.reading import experiment_for, history
from sweeps.redaction import redact_url


def study_trial_runs(study_name: str, tracking_uri: str, experiment_name: str | None) -> list[Any]:
    """Every trial run of ``study_name`` in MLflow (``LookupError`` when its experiment does not exist).

    ``experiment_name`` None: :func:`sweeps.query.experiment_for` (``mlflow.yml``'s prefix, as the CLI).
    """

    experiment = experiment_name or experiment_for(study_name)
    runs = search_trial_runs(tracking_uri, experiment)
    if runs is None:
        raise LookupError(f"no MLflow experiment {experiment!r} at {redact_url(tracking_uri)}")
    return runs


def explain_trial(study_name: str, *, tracking_uri: str, trial: int | None = None, run_id: str | None = None,
                  experiment_name: str | None = None, method: str = "auto") -> TrialExplanation:
    """The findings of one trial of ``study_name`` (by ``trial`` number or by MLflow ``run_id``).

    Raises ``LookupError`` when no such run exists, ``ValueError`` when neither or both are given.
    """

    if (trial is None) == (run_id is None):
        raise ValueError(f"explain_trial: give exactly one of trial or run_id, got trial={trial!r}, run_id={run_id!r}")
    experiment_name = experiment_name or experiment_for(study_name)
    runs = study_trial_runs(study_name, tracking_uri, experiment_name)
    match = [r for r in runs if (r.info.run_id == run_id if run_id is not None else trial_number_of(r) == trial)]
    if not match:
        what = f"run {run_id}" if run_id is not None else f"trial {trial}"
        raise LookupError(f"study {study_name!r} has no {what} in MLflow at {redact_url(tracking_uri)}")
    run = match[0]
    wide = history(study_name, tracking_uri=tracking_uri, experiment_name=experiment_name, wide=True,
                         method=method, trials=[trial_number_of(run)])
    wide = wide[wide["run_id"] == run.info.run_id]
    return explain_run(run, frame_table(wide))


def explain_study(study_name: str, *, tracking_uri: str, experiment_name: str | None = None,
                  method: str = "auto") -> StudyExplanation:
    """Findings of every finished trial run of ``study_name`` and the study's lambda scaling.

    One history read for the whole study. Runs still RUNNING are skipped; so are runs whose params
    lack what the findings need (named in ``skipped``). The scaling analysis uses COMPLETE trials,
    their objective's final value and direction (the params ``objective.metric`` /
    ``objective.direction``), and is ``None`` unless at least two (batch_size, n_train) groups
    have a best lambda > 0.
    """

    experiment_name = experiment_name or experiment_for(study_name)
    runs = [r for r in study_trial_runs(study_name, tracking_uri, experiment_name) if r.info.status != RUN_RUNNING]
    wide = history(study_name, tracking_uri=tracking_uri, experiment_name=experiment_name, wide=True,
                         method=method)
    by_run = {rid: frame for rid, frame in wide.groupby("run_id")} if len(wide) else {}
    explained, skipped = [], []
    for run in sorted(runs, key=lambda r: (trial_number_of(r) is None, trial_number_of(r) or 0)):
        frame = by_run.get(run.info.run_id)
        if frame is None or trial_number_of(run) is None:
            skipped.append(f"run {run.info.run_id}: no epochs logged")
            continue
        try:
            explained.append(explain_run(run, frame_table(frame)))
        except ValueError as err:
            skipped.append(f"trial {trial_number_of(run)}: {err}")
    objective = next((r.data.params.get("objective.metric") for r in runs), None)
    direction = next((r.data.params.get("objective.direction") for r in runs), None)
    return StudyExplanation(study_name, objective, direction, tuple(explained),
                            study_scaling(explained, maximize=direction != "minimize"), tuple(skipped))


FINDING_COLUMNS = ["trial", "run_id", "state", "code", "severity", "layer", "message", "evidence"]


def findings(study_name: str, *, tracking_uri: str, experiment_name: str | None = None,
             method: str = "auto") -> pd.DataFrame:
    """One row per finding per finished trial of ``study_name`` (:func:`explain_study`).

    Columns: ``trial``, ``run_id``, ``state``, ``code``, ``severity`` (``warning``/``notice``/``info``),
    ``layer`` (nullable Int64: the 1-based weight layer of per-layer findings), ``message`` (one
    sentence with the run's numbers) and ``evidence`` (JSON text). Sorted by trial, then as the
    findings are ordered (most severe first). The findings are computed from the stored history and
    the runs' params (one history read): the same as each run's ``diagnosis.json``.
    """
    exp = explain_study(study_name, tracking_uri=tracking_uri, experiment_name=experiment_name, method=method)
    rows = [{"trial": t.trial, "run_id": t.run_id, "state": t.state, "code": f.code, "severity": f.severity,
             "layer": f.layer, "message": f.message, "evidence": json.dumps(f.to_dict()["evidence"])}
            for t in exp.trials for f in t.findings]
    df = pd.DataFrame(rows, columns=FINDING_COLUMNS)
    return df.astype({"trial": "int64", "layer": "Int64"})
