"""The launcher's repair pass: lost trials failed and retried (:mod:`sweeps.study.lost`), then the MLflow
runs of ended trials closed.

* :func:`close_runs`: MLflow trial runs still RUNNING whose trial has ended are closed with the
  trial's state and reason (a killed worker could not do it); a second run of one trial (created by
  a request whose answer timed out, see :mod:`sweeps.tracking.tracker`) is ended KILLED and deleted.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import optuna
from optuna.trial import TrialState

from sweeps import names
from sweeps.names import run_status
from sweeps.study.lost import fail_dead_workers, fail_lost

_log = logging.getLogger("sweeps.reconcile")


def close_runs(study: optuna.Study, tracker: Any) -> int:
    """Close MLflow trial runs still RUNNING whose trial has ended (found by the trial-number tag).

    A run of an ended trial that is not the trial's own run (its ``mlflow_run_id`` names another)
    is a duplicate that never received data: it is ended KILLED, tagged ``sweeps.reason``
    "duplicate: ..." and deleted (MLflow keeps deleted runs until ``mlflow gc``; searches skip them).
    """
    from sweeps.stores import TrackingUnavailable
    from sweeps.tracking.tracker import is_transient

    closed = 0
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    try:
        runs = tracker.running_trial_runs()
    except Exception as err:  # noqa: BLE001
        if not is_transient(err):
            raise
        _log.warning("MLflow runs not repaired (tracking store unreachable): %s", err)
        return 0
    for run in runs:
        number = run.data.tags.get(names.TAG_TRIAL_NUMBER)
        trial = trials.get(int(number)) if number is not None and number.isdigit() else None
        if trial is None or not trial.state.is_finished():
            continue
        own_run = trial.user_attrs.get(names.TRIAL_RUN)
        if own_run not in (None, run.info.run_id):
            try:
                tracker.discard_run(run.info.run_id, f"{names.REASON_DUPLICATE_RUN}: a second run of trial "
                                    f"{trial.number} (a creation whose answer timed out); its run is {own_run}")
            except Exception as err:  # noqa: BLE001
                if not is_transient(err):
                    raise
                _log.warning("duplicate MLflow run %s not deleted (tracking store unreachable): %s",
                             run.info.run_id, err)
                return closed
            closed += 1
            continue
        reason = trial.user_attrs.get(names.TRIAL_REASON, "")
        if trial.state == TrialState.FAIL and not reason:
            reason = names.REASON_LOST_HEARTBEAT
        try:  # one try each: a launcher does not wait out an outage here (the next one repairs)
            tracker.finish(run.info.run_id, trial.state.name, reason, status=run_status(trial.state.name, reason),
                           should_stop=lambda: True)
        except TrackingUnavailable as err:
            _log.warning("MLflow run %s not closed (tracking store unreachable): %s", run.info.run_id, err)
            return closed
        closed += 1
    return closed


def reconcile(study: optuna.Study, storage: Any, tracker: Any = None, dead_workers: Mapping[str, str] | None = None,
              *, grace: float, max_retries: int) -> None:
    """The launcher's pass: dead workers' trials, stale and orphan trials, then the MLflow runs."""
    if dead_workers:
        fail_dead_workers(study, storage, dead_workers, max_retries)
    fail_lost(study, storage, grace, max_retries)
    if tracker is not None:
        close_runs(study, tracker)
