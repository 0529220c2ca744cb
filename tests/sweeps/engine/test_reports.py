"""sweeps.engine.reports: a population's intermediate values, written in batches.

Oracle: the same values reported with ``trial.report`` into a second study (what the single-trial path stores),
on the SQLite study storage (one transaction per flush) and on storages without the batch (journal file, an
unknown Optuna version: one call per value).
"""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import event

from sweeps import compat
from sweeps.engine.reports import ReportBuffer, set_intermediate_values
from sweeps.study.storage import open_storage

VALUES = [0.5, 0.25, math.nan, math.inf, -math.inf, 1e-300]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _studies(storage: Any) -> tuple[optuna.Study, optuna.Study]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return (optuna.create_study(study_name="buffered", storage=storage),
            optuna.create_study(study_name="reported", storage=storage))


def _study_id(storage: Any, study: optuna.Study) -> int:
    return storage.get_study_id_from_name(study.study_name)


def _commits(storage: Any) -> list[int]:
    seen: list[int] = []
    event.listen(storage.engine, "commit", lambda conn: seen.append(1))
    return seen


def _values(study: optuna.Study) -> list[dict[int, float]]:
    return [{k: ("nan" if math.isnan(v) else v) for k, v in t.intermediate_values.items()} for t in study.get_trials()]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def study_url(request, scratch):
    """A study database URL: SQLite in the scratch directory, or a fresh PostgreSQL database (dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{scratch / 'r.db'}"
        return
    from servicekit import pg_database

    with pg_database("sweeps_test_reports") as url:
        yield url


def test_values_wait_for_the_interval_then_go_in_one_transaction_as_trial_report_stores_them(study_url) -> None:
    storage = open_storage(study_url, heartbeat=False)
    buffered, reported = _studies(storage)
    members, oracle = [buffered.ask() for _ in range(4)], [reported.ask() for _ in range(4)]
    clock = Clock()
    buf = ReportBuffer(storage, _study_id(storage, buffered), interval_s=1.0, clock=clock)
    commits = _commits(storage)
    for step, value in enumerate(VALUES[:3], start=1):
        for i, (trial, twin) in enumerate(zip(members, oracle)):
            buf.add(trial, value + i, step)
            twin.report(value + i, step)
        clock.now += 0.3  # three epochs within the second: nothing written yet
    assert [t.intermediate_values for t in buffered.get_trials()] == [{}] * 4
    buf.ids = {t.number: storage.get_trial_id_from_study_id_trial_number(_study_id(storage, buffered), t.number)
               for t in members}  # known ids (the buffer looks each up once): only the writes commit below
    clock.now += 0.2
    for step, value in enumerate(VALUES[3:], start=4):
        for i, (trial, twin) in enumerate(zip(members, oracle)):
            commits.clear()
            buf.add(trial, value + i, step)  # the first of these passes the second: the queue goes
            if (step, i) == (4, 0):
                assert len(commits) == 1 and buf.writes == 1  # 4 members x 3 steps + 1 value in one transaction
                assert len(buffered.get_trials()[3].intermediate_values) == 3
            else:
                assert commits == []
            twin.report(value + i, step)
    assert len(buffered.get_trials()[0].intermediate_values) == 4
    buf.flush()  # before a tell: the rest
    assert _values(buffered) == _values(reported)
    assert buf.pending == [] and buf.errors == {}


def test_a_trial_finished_elsewhere_keeps_its_error_and_the_others_values_go_in(study_url) -> None:
    storage = open_storage(study_url, heartbeat=False)
    study, _ = _studies(storage)
    a, b, c = (study.ask() for _ in range(3))
    buf = ReportBuffer(storage, _study_id(storage, study), interval_s=60.0, clock=Clock())
    for trial in (a, b, c):
        buf.add(trial, 0.1 * trial.number, 1)
    bid = storage.get_trial_id_from_study_id_trial_number(_study_id(storage, study), b.number)
    storage.set_trial_user_attr(bid, "reason", "lost: failed by the repair")
    assert storage.set_trial_state_values(bid, TrialState.FAIL)  # another process failed b
    buf.flush()
    trials = {t.number: t for t in study.get_trials()}
    assert trials[a.number].intermediate_values == {1: 0.0} and trials[c.number].intermediate_values == {1: 0.2}
    assert trials[b.number].intermediate_values == {} and trials[b.number].state == TrialState.FAIL
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        buf.add(b, 0.5, 2)  # as trial.report would have raised it
    buf.add(a, 0.3, 2)  # the others go on
    buf.add(b, 0.5, 2)
    buf.flush()
    assert isinstance(buf.error_of(b.number), optuna.exceptions.UpdateFinishedTrialError)  # what its end is told
    assert buf.error_of(b.number) is None and buf.error_of(a.number) is None
    assert study.get_trials()[a.number].intermediate_values == {1: 0.0, 2: 0.3}


@pytest.mark.parametrize("kind", ["journal", "unknown-optuna"])
def test_storages_without_the_batch_get_one_call_per_value(scratch, monkeypatch, caplog, kind: str) -> None:
    monkeypatch.setattr(compat, "_WARNED", set())
    if kind == "journal":
        storage = open_storage(f"journal://{scratch / 'j.log'}")
    else:
        storage = open_storage(f"sqlite:///{scratch / 'u.db'}", heartbeat=False)
        monkeypatch.setattr(compat, "BATCH_OPTUNA_MAJORS", ())
    with caplog.at_level("WARNING", logger="sweeps.compat"):
        assert compat.rdb_intermediate_values_writer(storage) is None
    # an RDB storage on an untested Optuna says so; a journal has nothing to batch
    assert len(caplog.records) == (0 if kind == "journal" else 1)
    calls: list[tuple] = []
    real = storage.set_trial_intermediate_value
    monkeypatch.setattr(storage, "set_trial_intermediate_value", lambda *a: (calls.append(a), real(*a))[1])
    buffered, reported = _studies(storage)
    members, oracle = [buffered.ask() for _ in range(2)], [reported.ask() for _ in range(2)]
    sid = _study_id(storage, buffered)
    items = []
    for step, value in enumerate(VALUES, start=1):
        for trial, twin in zip(members, oracle):
            items.append((storage.get_trial_id_from_study_id_trial_number(sid, trial.number), step, value))
            twin.report(value, step)
    calls.clear()
    assert set_intermediate_values(storage, items) == {}
    assert len(calls) == len(items)
    assert _values(buffered) == _values(reported)


def test_the_batch_writer_is_used_on_sqlite_at_a_tested_optuna_version(scratch) -> None:
    storage = open_storage(f"sqlite:///{scratch / 'b.db'}", heartbeat=False)
    assert optuna.__version__.split(".")[0] in compat.BATCH_OPTUNA_MAJORS
    assert compat.rdb_intermediate_values_writer(storage) is not None


def test_a_batch_reads_each_trial_once_and_a_step_written_again_keeps_its_last_value(study_url) -> None:
    storage = open_storage(study_url, heartbeat=False)
    buffered, reported = _studies(storage)
    members, oracle = [buffered.ask() for _ in range(3)], [reported.ask() for _ in range(3)]
    sid = _study_id(storage, buffered)
    ids = [storage.get_trial_id_from_study_id_trial_number(sid, t.number) for t in members]
    twin_ids = [storage.get_trial_id_from_study_id_trial_number(_study_id(storage, reported), t.number)
                for t in oracle]
    statements: list[str] = []
    event.listen(storage.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *a: statements.append(statement.split()[0].upper()))
    items = [(tid, step, 0.1 * step + tid) for step in range(1, 11) for tid in ids]
    assert set_intermediate_values(storage, items) == {}
    assert statements.count("SELECT") <= 2 * len(ids)  # not two per value (30 values here)
    again = [(ids[0], 3, -1.0), (ids[0], 3, 7.5), (ids[1], 11, math.nan)]  # a step again: its last value wins
    assert set_intermediate_values(storage, again) == {}
    for (tid, step, value), twin in zip(items + again, twin_ids * 10 + [twin_ids[0], twin_ids[0], twin_ids[1]]):
        storage.set_trial_intermediate_value(twin, step, value)  # what the storage itself keeps
    assert _values(buffered) == _values(reported)
    assert buffered.get_trials()[0].intermediate_values[3] == 7.5


def test_a_batch_that_fails_on_optuna_internals_is_rolled_back_and_written_value_by_value(scratch, monkeypatch,
                                                                                            caplog) -> None:
    """An Optuna whose RDB internals differ at write time (here: the stored representation of a value is gone
    half-way through the batch): the batch is rolled back, the WARNING logged once, every value written through the
    public ``set_trial_intermediate_value``, and the batch is not tried again in this process."""
    from optuna.storages._rdb import models

    monkeypatch.setattr(compat, "_WARNED", set())
    monkeypatch.setattr(compat, "_BROKEN", set())
    storage = open_storage(f"sqlite:///{scratch / 'f.db'}", heartbeat=False)
    buffered, reported = _studies(storage)
    members, oracle = [buffered.ask() for _ in range(2)], [reported.ask() for _ in range(2)]
    sid = _study_id(storage, buffered)
    ids = [storage.get_trial_id_from_study_id_trial_number(sid, t.number) for t in members]
    in_batch: list[int] = []
    real_repr = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr
    real_write = compat._write_intermediate_values

    def stored_repr(value: float) -> Any:
        if in_batch and len(in_batch) > 1:  # the batch's second value on: as if renamed
            raise AttributeError("intermediate_value_to_stored_repr")
        in_batch and in_batch.append(1)
        return real_repr(value)

    def batch(*args: Any, **kwargs: Any) -> Any:
        in_batch.append(1)
        try:
            return real_write(*args, **kwargs)
        finally:
            in_batch.clear()

    monkeypatch.setattr(models.TrialIntermediateValueModel, "intermediate_value_to_stored_repr", stored_repr)
    monkeypatch.setattr(compat, "_write_intermediate_values", batch)
    commits = _commits(storage)
    items = [(tid, step, value) for step, value in enumerate(VALUES, start=1) for tid in ids]
    with caplog.at_level("WARNING", logger="sweeps.compat"):
        assert set_intermediate_values(storage, items) == {}
        assert len(commits) == len(items)  # the batch's first value was rolled back; then one per value
        assert compat.rdb_intermediate_values_writer(storage) is None  # no batch from now on
        assert set_intermediate_values(storage, [(ids[0], 99, 1.0)]) == {}
    for step, value in enumerate(VALUES, start=1):  # the oracle: what trial.report stores
        for twin in oracle:
            twin.report(value, step)
    oracle[0].report(1.0, 99)
    assert _values(buffered) == _values(reported)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "one transaction per value" in warnings[0].getMessage()
