"""Repair: no trial stays RUNNING, every FAIL has a reason, every lost trial is retried.

A trial is *lost* when it ended through no fault of its own: its worker was killed, stopped
past the heartbeat grace, or cut off from the storage or the tracking server. Lost trials end
FAIL with a reason that starts with ``lost:`` and are **retried**: a copy with the same parameters
is enqueued (WAITING) and run by the next free worker, at most ``study.max_retries`` times per
chain. The lost trial then no longer counts towards ``n_trials`` (:func:`sweeps.study.budget.counts_of`).
The copy carries Optuna's retry attributes (``failed_trial``, ``retry_history``, as
``RetryHeartbeatStaleTrialCallback`` writes them) and the user attribute ``retry_of``.

Who finds lost trials:

* Optuna's heartbeat (:func:`optuna.storages.fail_stale_trials`, called by every worker before it
  takes a trial and by the launcher while it waits): a RUNNING trial whose heartbeat is older than
  the grace is failed; its reason is the one every running trial holds
  (:data:`sweeps.names.REASON_LOST_HEARTBEAT`); the storage's stale-trial callback,
  :class:`RetryLostTrial`, enqueues the retry;
* :func:`fail_orphans`: a RUNNING trial without a ``worker`` attribute (a sweeps worker writes it
  right after taking a trial and before its first heartbeat, so such a trial never had one: its
  worker died in between, and Optuna's heartbeat check skips trials without a heartbeat) is failed
  once it is older than the grace. Trials of a sweeps study are run by sweeps workers only;
* :func:`fail_dead_workers`: the launcher fails at once the RUNNING trials of its workers that
  died (it knows their exit codes);
* :func:`close_runs`: MLflow trial runs still RUNNING whose trial has ended are closed with the
  trial's state and reason (a killed worker could not do it); a second run of one trial (created by
  a request whose answer timed out, see :mod:`sweeps.tracking.tracker`) is ended KILLED and deleted.

Only the process whose ``RUNNING -> FAIL`` change succeeds enqueues the retry: the storage makes
that change once, so two repairers never retry one trial twice.
"""

from __future__ import annotations

import datetime
import logging
import warnings
from typing import Any, Mapping

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeps import names
from sweeps.study.claims import trial_id

_log = logging.getLogger("sweeps.repair")


def retry_trial(study: optuna.Study, trial: FrozenTrial, max_retries: int) -> int | None:
    """Enqueue a copy of lost ``trial`` (same parameters); return its number, None past ``max_retries``.

    Like Optuna's ``RetryHeartbeatStaleTrialCallback`` (same system attributes), but the copy does
    not inherit the lost attempt's user attributes (its run id, worker, reason).
    """
    history = [*trial.system_attrs.get(names.SYS_RETRY_HISTORY, []), trial.number]
    if len(history) > max_retries:
        _log.warning("trial %d lost; not retried: %d retries already (study.max_retries)", trial.number,
                     len(history) - 1)
        return None
    system_attrs = {**trial.system_attrs, names.SYS_FAILED_TRIAL: history[0], names.SYS_RETRY_HISTORY: history}
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs={names.TRIAL_RETRY_OF: trial.number}, system_attrs=system_attrs))
    _log.warning("trial %d lost (%s); retried with the same parameters", trial.number,
                 trial.user_attrs.get(names.TRIAL_REASON, "no reason"))
    return study.get_trials(deepcopy=False)[-1].number


class RetryLostTrial:
    """The storage's ``heartbeat_stale_trial_callback``: retry each heartbeat-stale trial."""

    def __init__(self, max_retries: int) -> None:
        self.max_retries = max_retries

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        retry_trial(study, trial, self.max_retries)


def fail_lost_trial(study: optuna.Study, storage: Any, trial: FrozenTrial, reason: str, max_retries: int) -> bool:
    """Set ``reason`` on RUNNING ``trial``, fail it, and retry it; False if it ended meanwhile."""
    tid = trial_id(storage, study, trial.number)
    try:
        storage.set_trial_user_attr(tid, names.TRIAL_REASON, reason)
        if not storage.set_trial_state_values(tid, TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # its worker (or another repairer) ended it first
    retry_trial(study, storage.get_trial(tid), max_retries)
    return True


def fail_stale(study: optuna.Study) -> None:
    """Optuna's heartbeat check (the storage's callback retries what it fails)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def fail_orphans(study: optuna.Study, storage: Any, grace: float, max_retries: int,
                 now: datetime.datetime | None = None) -> list[int]:
    """Fail (and retry) RUNNING trials that no worker ever started, once older than ``grace`` s."""
    now = now or datetime.datetime.now()
    failed = []
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):  # one query
        if names.TRIAL_WORKER in t.user_attrs or t.datetime_start is None:
            continue
        if (now - t.datetime_start).total_seconds() > grace and \
                fail_lost_trial(study, storage, t, names.REASON_LOST_BEFORE_START, max_retries):
            failed.append(t.number)
    return failed


def fail_dead_workers(study: optuna.Study, storage: Any, dead: Mapping[str, str], max_retries: int) -> list[int]:
    """Fail (and retry) the RUNNING trials of dead workers: ``dead`` maps ``host:pid`` to how it died."""
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        how = dead.get(t.user_attrs.get(names.TRIAL_WORKER, ""))
        if how is not None and fail_lost_trial(study, storage, t, f"{names.REASON_LOST_WORKER_DIED} ({how})",
                                               max_retries):
            failed.append(t.number)
    return failed


def fail_lost(study: optuna.Study, storage: Any, grace: float, max_retries: int) -> None:
    """Everything a worker checks before it takes a trial: heartbeat-stale trials and orphans."""
    fail_stale(study)  # a no-op on journal storages (no heartbeat): their lost trials are failed by the launcher
    fail_orphans(study, storage, grace, max_retries)


