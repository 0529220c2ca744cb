"""Intermediate values of a population's trials, written to the study in batches.

A trial that reports every epoch writes one value per epoch, each in a transaction of its own
(``trial.report``: ~0.7 ms on a SQLite study in WAL mode, ~2 ms in SQLite's default journal, more over a
network); a population of K trials makes K of them per epoch. :class:`ReportBuffer` holds the values
of a population's members and writes them in one transaction at most once per ``interval_s`` (default
:data:`REPORT_FLUSH_S`), and always before a member's trial is told (Optuna's ``tell`` reads the trial
back: a pruned trial's value is its last intermediate value, and other workers' pruners compare with
completed trials' values). So the study holds every value a single trial would, at most
``interval_s`` later while the trial runs, and all of them when it ends.

The pruner does not wait for the writes: :class:`sweeps.pruning.PopulationPruner` mirrors each
member's values in its snapshot. A trial that was finished elsewhere while it trained (failed by
another process after a lost heartbeat) refuses the write; its ``UpdateFinishedTrialError`` is kept
and raised at that member's next report (or handed to its end), as ``trial.report`` would have raised
it at the report itself.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import optuna

from sweeps.study.storage import with_retries

#: Seconds between two writes of a population's pending values (they are also written before any tell).
REPORT_FLUSH_S = 1.0
#: Optuna major versions whose ``RDBStorage`` internals :func:`set_intermediate_values` was tested against.
BATCH_OPTUNA_MAJORS = ("5",)


def _batch_write(storage: Any) -> Callable[[list[tuple[int, int, float]]], dict[int, Exception]] | None:
    """One-transaction writer of many intermediate values for an ``RDBStorage``, or None where unavailable.

    Writes the rows ``RDBStorage.set_trial_intermediate_value`` writes (its ORM models and stored
    representation, internals: so only at a tested Optuna major version), with two queries per trial
    instead of two per value: the trial (refused unless it is still running, as Optuna refuses it) and
    its rows at those steps (updated in place; new steps inserted). Returns ``{trial_id: error}`` for
    refused trials; the others' values are committed.
    """
    from optuna.storages import RDBStorage

    if not isinstance(storage, RDBStorage) or optuna.__version__.split(".")[0] not in BATCH_OPTUNA_MAJORS:
        return None
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
    except ImportError:  # pragma: no cover - guarded by the version check
        return None
    value_model = models.TrialIntermediateValueModel

    def write(items: list[tuple[int, int, float]]) -> dict[int, Exception]:
        by_trial: dict[int, dict[int, float]] = {}
        for trial_id, step, value in items:  # a step reported twice keeps its last value, as the storage does
            by_trial.setdefault(trial_id, {})[step] = value
        refused: dict[int, Exception] = {}
        with _create_scoped_session(storage.scoped_session, True) as session:
            for trial_id, steps in by_trial.items():
                trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
                try:
                    storage.check_trial_is_updatable(trial_id, trial.state)
                except optuna.exceptions.UpdateFinishedTrialError as error:
                    refused[trial_id] = error
                    continue
                rows = {row.step: row for row in session.query(value_model).filter(
                    value_model.trial_id == trial_id, value_model.step.in_(list(steps)))}
                for step, value in steps.items():
                    stored, kind = value_model.intermediate_value_to_stored_repr(value)
                    row = rows.get(step)
                    if row is None:
                        session.add(value_model(trial_id=trial_id, step=step, intermediate_value=stored,
                                                intermediate_value_type=kind))
                    else:
                        row.intermediate_value, row.intermediate_value_type = stored, kind
        return refused

    return write


def set_intermediate_values(storage: Any, items: list[tuple[int, int, float]]) -> dict[int, Exception]:
    """Write ``(trial_id, step, value)`` items as ``trial.report`` would, in one transaction where possible.

    Returns ``{trial_id: error}`` for trials whose values were refused (finished trials:
    ``UpdateFinishedTrialError``); every other item is written. Transient storage errors are retried
    (:func:`sweeps.storage.with_retries`: the transaction is rolled back, so a retry writes it whole).
    Storages other than Optuna's ``RDBStorage`` (journal files, Redis) get one call per value.
    """
    write = _batch_write(storage) if items else None
    if write is not None:
        return with_retries(lambda: write(items), what="set_trial_intermediate_value (batch)")
    refused: dict[int, Exception] = {}
    for trial_id, step, value in items:
        if trial_id not in refused:
            try:
                storage.set_trial_intermediate_value(trial_id, step, value)
            except optuna.exceptions.UpdateFinishedTrialError as error:
                refused[trial_id] = error
    return refused


class ReportBuffer:
    """``trial.report(value, step)`` for the members of a population, written in batches.

    ``storage``: the study's storage (the one the worker opened it with); ``study_id`` its study's id.
    """

    def __init__(self, storage: Any, study_id: int, interval_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.storage = storage
        self.study_id = study_id
        self.interval_s = REPORT_FLUSH_S if interval_s is None else interval_s
        self.clock = clock
        self.pending: list[tuple[int, int, float]] = []  # (trial number, step, value), in report order
        self.errors: dict[int, Exception] = {}  # trial number -> why its values were refused
        self.ids: dict[int, int] = {}  # trial number -> trial id
        self.last_flush = clock()
        self.writes = 0  # transactions made (flushes that wrote something)

    def add(self, trial: optuna.Trial, value: float, step: int) -> None:
        """Queue ``trial``'s ``value`` at ``step``; write the queue if ``interval_s`` has passed since the last write.

        Raises the error that refused an earlier value of this trial (e.g. ``UpdateFinishedTrialError``).
        """
        self.raise_error(trial.number)
        self.pending.append((trial.number, int(step), float(value)))
        if self.clock() - self.last_flush >= self.interval_s:
            self.flush()
            self.raise_error(trial.number)

    def raise_error(self, number: int) -> None:
        error = self.errors.pop(number, None)
        if error is not None:
            raise error

    def error_of(self, number: int) -> Exception | None:
        """The error that refused trial ``number``'s values (once), or None."""
        return self.errors.pop(number, None)

    def flush(self) -> None:
        """Write every pending value (one transaction where the storage allows it)."""
        self.last_flush = self.clock()
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        for number, _, _ in pending:
            if number not in self.ids:
                self.ids[number] = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        refused = set_intermediate_values(self.storage, [(self.ids[n], step, value) for n, step, value in pending])
        self.writes += 1
        numbers = {tid: n for n, tid in self.ids.items()}
        for tid, error in refused.items():
            self.errors.setdefault(numbers[tid], error)
