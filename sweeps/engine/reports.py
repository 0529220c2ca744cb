"""Intermediate values of a population's trials, written to the study in batches.

A trial that reports every epoch writes one value per epoch, each in a transaction of its own
(``trial.report``: ~0.7 ms on a SQLite study in WAL mode, ~2 ms in SQLite's default journal, more over a
network); a population of K trials makes K of them per epoch. :class:`ReportBuffer` holds the values
of a population's members and writes them in one transaction at most once per ``interval_s`` (default
:data:`REPORT_FLUSH_S`), and always before a member's trial is told (Optuna's ``tell`` reads the trial
back: a pruned trial's value is its last intermediate value, and other workers' pruners compare with
completed trials' values). So the study holds every value a single trial would, at most
``interval_s`` later while the trial runs, and all of them when it ends.

The pruner does not wait for the writes: :class:`sweeps.engine.pruning.PopulationPruner` mirrors each
member's values in its snapshot. A trial that was finished elsewhere while it trained (failed by
another process after a lost heartbeat) refuses the write; its ``UpdateFinishedTrialError`` is kept
and raised at that member's next report (or handed to its end), as ``trial.report`` would have raised
it at the report itself.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable

import optuna

from sweeps import compat
from sweeps.study.storage import with_retries

#: Seconds between two writes of a population's pending values (they are also written before any tell).
REPORT_FLUSH_S = 1.0


def set_intermediate_values(storage: Any, items: list[tuple[int, int, float]]) -> dict[int, Exception]:
    """Write ``(trial_id, step, value)`` items as ``trial.report`` would, in one transaction where possible.

    Returns ``{trial_id: error}`` for trials whose values were refused (finished trials:
    ``UpdateFinishedTrialError``); every other item is written. Transient storage errors are retried
    (:func:`sweeps.study.storage.with_retries`: the transaction is rolled back, so a retry writes it whole).
    Storages other than Optuna's ``RDBStorage`` (journal files, Redis) get one call per value, and so does an
    ``RDBStorage`` whose internals the batch cannot use (:func:`sweeps.compat.rdb_intermediate_values_writer`:
    another Optuna; a batch that fails on them is rolled back and written value by value).
    """
    write = compat.rdb_intermediate_values_writer(storage) if items else None
    if write is not None:
        try:
            with getattr(storage, "call_lock", contextlib.nullcontext()):  # the storage's one connection
                return with_retries(lambda: write(items), what="set_trial_intermediate_value (batch)")
        except compat.InternalUnavailable:
            pass  # rolled back, WARNING logged: every value the public way below
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
