"""Taking enqueued trials: a worker claims WAITING trials (slots or retries) and nothing else.

Optuna's ``study.ask()`` creates a new trial when nothing is WAITING, which would run over the
budget (:mod:`sweeps.study.budget`); :func:`claim_trials` takes only what is enqueued, with the same
atomic WAITING -> RUNNING change that ``ask`` uses (PostgreSQL ``SELECT ... FOR UPDATE``, SQLite with
``BEGIN IMMEDIATE``: :mod:`sweeps.study.storage`).
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

from sweeps import compat


def trial_id(storage: Any, study: optuna.Study, number: int) -> int:
    """The storage's id of trial ``number``, through the public storage API."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def claim_trial(study: optuna.Study, storage: Any, study_id: int | None = None) -> optuna.Trial | None:
    """Take one WAITING trial (a slot or a retry) for this worker, or None when none is left.

    Optuna's ``study.ask()`` creates a new trial when nothing is WAITING, which would run over the
    budget; this takes only what is enqueued, with the same atomic WAITING -> RUNNING change that
    ``ask`` uses, then builds the trial as ``ask`` does (``optuna.Trial(study, trial_id)``, which
    calls the sampler's ``before_trial``: :func:`sweeps.compat.new_trial`).
    """
    claimed = claim_trials(study, storage, 1, study_id)
    return claimed[0] if claimed else None


def claim_trials(study: optuna.Study, storage: Any, count: int, study_id: int | None = None,
                 waiting: list[Any] | None = None) -> list[optuna.Trial]:
    """Take up to ``count`` WAITING trials, lowest numbers first, as :func:`claim_trial` takes one.

    One read of the WAITING trials (or ``waiting``, such a read the caller made), one atomic WAITING ->
    RUNNING change per trial (a trial another worker took meanwhile is skipped; the list is read again
    only if that leaves fewer than ``count``), and one refresh of the study's cache for all of them.
    """
    if study_id is None:
        study_id = storage.get_study_id_from_name(study.study_name)
    taken: list[int] = []
    numbers: list[int] = []
    tried: set[int] = set()
    while len(taken) < count:
        if waiting is None:
            waiting = storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,))
        candidates = [t for t in waiting if t.number not in tried]
        waiting = None
        if not candidates:
            break
        for t in candidates:
            if len(taken) == count:
                break
            tried.add(t.number)
            tid = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            try:
                if storage.set_trial_state_values(tid, state=TrialState.RUNNING):
                    taken.append(tid)
                    numbers.append(t.number)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
    # the study reads trials through Optuna's cache of its storage: let it see the trials just taken
    study = compat.refresh_trial_cache(study, storage, numbers)
    return [compat.new_trial(study, tid) for tid in taken]
