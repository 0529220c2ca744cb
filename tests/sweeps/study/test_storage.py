"""The study's storage (``sweeps.study.storage``): which errors are retried, how, and which storage a URL opens."""

from __future__ import annotations

import logging
import os
import time
import warnings
from typing import Any

import optuna
import pytest
from optuna.exceptions import StorageInternalError
from optuna.storages import JournalStorage, RDBStorage
from optuna.trial import TrialState
from servicekit import BackendTerminator, database_name, pg_database
from sqlalchemy import event
from sqlalchemy import exc as sa_exc

from sweeps.study import storage as storage_module
from sweeps.study.storage import (
    POOL_OVERFLOW,
    POOL_SIZE,
    POOL_TIMEOUT_S,
    STORAGE_MAX_DELAY,
    STORAGE_RETRIES,
    StorageUnavailable,
    is_full,
    is_transient,
    open_storage,
    with_retries,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")



def operational(msg: str = "server closed the connection unexpectedly") -> sa_exc.OperationalError:
    return sa_exc.OperationalError("SELECT 1", {}, Exception(msg))


def wrapped(cause: BaseException) -> StorageInternalError:
    """What RDBStorage raises: a StorageInternalError raised ``from`` the SQLAlchemy error."""
    try:
        raise StorageInternalError("An exception is raised during the commit.") from cause
    except StorageInternalError as err:
        return err


def implicitly_chained(cause: BaseException) -> RuntimeError:
    try:
        try:
            raise cause
        except type(cause):
            raise RuntimeError("while handling it")  # noqa: B904 - the implicit __context__ is the point
    except RuntimeError as err:
        return err


# -- is_transient ---------------------------------------------------------------------------------

@pytest.mark.parametrize("err, transient", [
    (operational(), True),
    (sa_exc.InterfaceError("SELECT 1", {}, Exception("connection already closed")), True),
    (sa_exc.IntegrityError("INSERT", {}, Exception("duplicate key value violates unique constraint")), False),
    (sa_exc.DBAPIError("SELECT 1", {}, Exception("terminating connection"), connection_invalidated=True), True),
    (sa_exc.DBAPIError("SELECT 1", {}, Exception("syntax error")), False),
    (wrapped(operational("database is locked")), True),
    (wrapped(sa_exc.InterfaceError("SELECT 1", {}, Exception("closed"))), True),
    (wrapped(sa_exc.IntegrityError("INSERT", {}, Exception("unique"))), False),
    (StorageInternalError("no cause"), False),
    (implicitly_chained(operational()), True),
    (ValueError("bad value"), False),
    (optuna.exceptions.UpdateFinishedTrialError("finished"), False),
], ids=["operational", "interface", "integrity", "invalidated", "dbapi", "wrapped-operational",
        "wrapped-interface", "wrapped-integrity", "bare-internal", "context", "value", "finished"])
def test_is_transient(err, transient):
    assert is_transient(err) is transient


# -- with_retries ---------------------------------------------------------------------------------

class Flaky:
    """Fails with ``errors`` (one per call) before returning ``result``."""

    def __init__(self, errors: list[BaseException], result: Any = "ok") -> None:
        self.errors, self.result, self.calls = list(errors), result, 0

    def __call__(self) -> Any:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


def expected_delays(n: int) -> list[float]:
    """0.1, 0.2, 0.4, ... capped at STORAGE_MAX_DELAY (the module docstring)."""
    out, delay = [], 0.1
    for _ in range(n):
        out.append(min(delay, STORAGE_MAX_DELAY))
        delay *= 2
    return out


@pytest.mark.parametrize("failures", [1, 3, STORAGE_RETRIES])
def test_transient_failures_are_retried_with_exponential_back_off(failures):
    slept: list[float] = []
    call = Flaky([wrapped(operational()) for _ in range(failures)], result=42)
    assert with_retries(call, what="test", sleep=slept.append) == 42
    assert call.calls == failures + 1
    assert slept == pytest.approx(expected_delays(failures))
    if failures == STORAGE_RETRIES:
        assert max(slept) == STORAGE_MAX_DELAY and sum(slept) < 30


def test_storage_unavailable_after_the_retry_budget():
    slept: list[float] = []
    errors = [operational(f"attempt {i}") for i in range(STORAGE_RETRIES + 1)]
    last = errors[-1]
    call = Flaky(errors)
    with pytest.raises(StorageUnavailable, match=r"creating a trial") as err:
        with_retries(call, what="creating a trial", sleep=slept.append)
    assert call.calls == STORAGE_RETRIES + 1
    assert slept == pytest.approx(expected_delays(STORAGE_RETRIES))
    assert err.value.__cause__ is last
    assert isinstance(err.value, OSError)
    few = Flaky([operational()] * 5)
    with pytest.raises(StorageUnavailable):
        with_retries(few, what="x", retries=2, sleep=lambda s: None)
    assert few.calls == 3


FULL = ["FATAL:  sorry, too many clients already",
        "FATAL:  remaining connection slots are reserved for roles with the SUPERUSER attribute",
        "ERROR:  no more connections allowed (max_client_conn)"]  # PostgreSQL 15/16 and PgBouncer's words


@pytest.mark.parametrize("message", FULL)
def test_a_full_database_is_waited_for_without_using_up_the_retries(message):
    """A database with no connection left is full, not down: the call waits (back-off capped at
    STORAGE_MAX_DELAY) as long as it stays full, here 3 x the retry budget, and then goes through."""
    slept: list[float] = []
    full = 3 * (STORAGE_RETRIES + 1)
    call = Flaky([wrapped(operational(message)) for _ in range(full)] + [operational()], result=7)
    clock = iter(range(10_000)).__next__  # one second a look: far below the full-wait limit
    assert with_retries(call, what="claiming a trial", sleep=slept.append, clock=clock) == 7
    assert call.calls == full + 2
    assert max(slept) == STORAGE_MAX_DELAY and len(slept) == full + 1
    assert is_full(wrapped(operational(message))) and not is_full(operational())


def test_a_database_full_for_longer_than_the_wait_is_unavailable():
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    call = Flaky([operational(FULL[0])] * 10_000)
    with pytest.raises(StorageUnavailable, match="too many clients"):
        with_retries(call, what="x", sleep=sleep, clock=lambda: now[0], full_wait_s=60)
    assert 60 <= now[0] < 60 + STORAGE_MAX_DELAY * (STORAGE_RETRIES + 2)  # the wait, then the normal budget


def test_a_busy_process_connection_is_transient():
    """The process's connection busy past POOL_TIMEOUT_S is retried, not fatal."""
    assert is_transient(wrapped(sa_exc.TimeoutError("QueuePool limit of size 1 overflow 0 reached")))


def test_server_databases_get_a_pool_of_one_named_connection(monkeypatch):
    """The engine a PostgreSQL storage gets: one connection (a second only while Optuna creates its schema in a
    new database), pre-pinged, named."""
    seen: dict[str, Any] = {}

    def fake_create(cls: type, url: str, kwargs: dict[str, Any], attempts: int = 5) -> Any:
        seen.update(kwargs["engine_kwargs"])
        checked = kwargs.get("skip_compatibility_check", False)
        assert checked == kwargs.get("skip_table_creation", False)
        return "storage"

    monkeypatch.setattr(storage_module, "_create", fake_create)
    assert open_storage("postgresql+psycopg2://u@127.0.0.1:1/db", role="worker 3") == "storage"
    assert (seen["pool_size"], seen["max_overflow"], seen["pool_timeout"], seen["pool_pre_ping"]) == \
        (POOL_SIZE, POOL_OVERFLOW, POOL_TIMEOUT_S, True) and (POOL_SIZE, POOL_OVERFLOW) == (1, 1)
    name = seen["connect_args"]["application_name"]
    assert name.startswith("sweeps worker 3 ") and name.endswith(f":{os.getpid()}") and len(name) <= 63
    seen.clear()
    open_storage("postgresql+psycopg2://u@127.0.0.1:1/db?application_name=mine")
    assert "application_name" not in seen["connect_args"]  # the URL's own name wins
    seen.clear()
    open_storage("postgresql+psycopg2://u@127.0.0.1:1/db", role="worker 0", schema_checked=True)
    assert seen["max_overflow"] == 0  # a worker opens on one connection: its launcher checked Optuna's tables


@pytest.mark.services
@pytest.mark.slow
def test_a_worker_and_its_heartbeat_thread_hold_one_connection():
    """A worker's storage used by its loop and by a heartbeat thread at once: PostgreSQL sees one connection
    of that process (pg_stat_activity, by application_name), and every call of both threads went through."""
    import threading

    from servicekit import pg_admin_query

    with pg_database() as url:
        launcher = open_storage(url, role="launcher")  # creates and checks Optuna's tables, as a launcher does
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
        optuna.create_study(study_name="one", storage=launcher, direction="maximize")
        launcher.engine.dispose()
        storage = open_storage(url, heartbeat_interval=1, heartbeat_grace=60, role="worker 0", schema_checked=True)
        study = optuna.load_study(study_name="one", storage=storage)
        trial = study.ask()
        tid = storage.get_trial_id_from_study_id_trial_number(study._study_id, trial.number)
        stop, beats, peak = threading.Event(), [0], [0]

        def beat() -> None:
            while not stop.is_set():
                storage.record_heartbeat(tid)
                beats[0] += 1

        thread = threading.Thread(target=beat)
        thread.start()
        try:
            for step in range(60):
                trial.report(float(step), step)
                rows = pg_admin_query("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                                      "AND application_name LIKE 'sweeps worker 0 %%'", (database_name(url),))
                peak[0] = max(peak[0], rows[0][0])
        finally:
            stop.set()
            thread.join()
        study.tell(trial, 1.0)
        storage.engine.dispose()
    assert beats[0] > 10, beats  # the heartbeat thread ran alongside
    assert peak[0] == 1, peak


@pytest.mark.parametrize("error", [ValueError("bad"), sa_exc.IntegrityError("INSERT", {}, Exception("unique")),
                                   optuna.exceptions.UpdateFinishedTrialError("finished")])
def test_a_permanent_error_is_raised_at_once(error):
    slept: list[float] = []
    call = Flaky([error, error])
    with pytest.raises(type(error)) as err:
        with_retries(call, what="x", sleep=slept.append)
    assert err.value is error and call.calls == 1 and slept == []


def test_a_permanent_error_after_transient_ones_stops_the_retries():
    slept: list[float] = []
    call = Flaky([operational(), operational(), ValueError("now a real error")])
    with pytest.raises(ValueError, match="real error"):
        with_retries(call, what="x", sleep=slept.append)
    assert call.calls == 3 and slept == pytest.approx(expected_delays(2))


# -- open_storage ---------------------------------------------------------------------------------

def _lost(study, trial) -> None:  # pragma: no cover - only its identity matters
    pass


def test_sqlite_url_opens_the_retrying_begin_immediate_storage(scratch):
    url = f"sqlite:///{scratch / 'o.db'}"
    storage = open_storage(url, heartbeat_interval=7, heartbeat_grace=30, stale_trial_callback=_lost)
    assert isinstance(storage, RDBStorage)
    assert type(storage).__name__ == "SQLiteRDBStorage"
    assert type(storage).__mro__[1].__name__ == "RetryingRDBStorage"
    assert storage.get_heartbeat_interval() == 7 and storage.grace_period == 30
    assert storage.get_heartbeat_stale_trial_callback() is _lost
    assert open_storage(url, heartbeat=False).get_heartbeat_interval() is None

    statements: list[str] = []
    event.listen(storage.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *a: statements.append(statement.strip().upper()))
    study = optuna.create_study(study_name="s", storage=storage)
    study.enqueue_trial({})
    statements.clear()
    study.get_trials()
    storage.get_all_trials(study._study_id, states=(TrialState.WAITING,))
    assert "BEGIN IMMEDIATE" not in statements  # reads do not take the write lock
    tid = storage.get_trial_id_from_study_id_trial_number(study._study_id, 0)
    assert storage.set_trial_state_values(tid, TrialState.RUNNING)
    assert statements.count("BEGIN IMMEDIATE") == 1  # the WAITING -> RUNNING check-and-set does
    # an update refused inside the transaction does not leave the flag on for later reads
    assert storage.set_trial_state_values(tid, TrialState.COMPLETE, [1.0])
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_state_values(tid, TrialState.FAIL)
    statements.clear()
    storage.get_all_trials(study._study_id)
    assert "BEGIN IMMEDIATE" not in statements


def test_non_sqlite_rdb_urls_get_the_retrying_class_without_begin_immediate():
    from sweeps.study.storage import _retrying_storage_class

    cls = _retrying_storage_class()
    assert issubclass(cls, RDBStorage)
    # every database call of a storage is retried: the wrapper, not RDBStorage's own method
    for name in ("create_new_trial", "set_trial_state_values", "get_all_trials", "record_heartbeat",
                 "_get_stale_trial_ids", "set_trial_user_attr", "get_trial"):
        assert getattr(cls, name) is not getattr(RDBStorage, name), name
        assert getattr(cls, name).__wrapped__ is getattr(RDBStorage, name)


@pytest.mark.parametrize("form", ["journal", "log", "journal-suffix"])
def test_journal_urls_open_a_journal_file(scratch, form):
    path = scratch / ("study.journal" if form == "journal-suffix" else "study.log")
    url = f"journal://{path}" if form == "journal" else str(path)
    storage = open_storage(url)
    assert isinstance(storage, JournalStorage)
    study = optuna.create_study(study_name="j", storage=storage)
    study.enqueue_trial({"x": 1.0})
    assert path.is_file() and path.stat().st_size > 0
    assert len(optuna.load_study(study_name="j", storage=open_storage(url)).trials) == 1


@pytest.mark.parametrize("url", ["not-a-storage-url", "nosuchdialect://host/db"])
def test_a_bad_url_is_a_value_error_naming_it(url):
    with pytest.raises(ValueError, match="cannot open Optuna storage") as err:
        open_storage(url)
    assert repr(url) in str(err.value)
    assert not isinstance(err.value, StorageUnavailable)


# -- the Study's own calls go through the retries --------------------------------------------------

class FailNextStatements:
    """Makes the next ``n`` statements on ``engine`` fail as a dropped connection would."""

    def __init__(self, engine: Any) -> None:
        self.left, self.injected = 0, 0
        event.listen(engine, "before_cursor_execute", self._before)

    def arm(self, n: int = 1) -> None:
        self.left = n

    def _before(self, conn, cursor, statement, *args) -> None:
        if self.left > 0:
            self.left -= 1
            self.injected += 1
            raise operational("server closed the connection unexpectedly (injected)")


def _get_trials(study: optuna.Study) -> Any:
    return len(study.get_trials())


def _ask(study: optuna.Study) -> Any:
    return study.ask().number


def _suggest(study: optuna.Study) -> Any:
    trial = study.ask()
    return lambda: trial.suggest_float("x", 0.0, 1.0)  # the second step is the one under test


def _best_trial(study: optuna.Study) -> Any:
    return study.best_trial.number


@pytest.mark.parametrize("operation", [_get_trials, _ask, _suggest, _best_trial],
                         ids=["get_trials", "ask", "suggest", "best_trial"])
def test_a_transient_error_in_a_study_operation_is_retried(scratch, operation):
    """``optuna.Study`` wraps an RDBStorage in ``_CachedStorage``, which calls the storage's private
    ``_get_trials``, ``_create_new_trial``, ``_set_trial_param`` and ``_get_best_trial_id``: a dropped
    connection there must be retried like any other storage call, not raised out of ``ask``/``suggest``."""
    storage = open_storage(f"sqlite:///{scratch / 'o.db'}", heartbeat=False)
    study = optuna.create_study(study_name="s", storage=storage)
    first = study.ask()
    study.tell(first, first.suggest_float("x", 0.0, 1.0))
    step = operation(study) if operation is _suggest else (lambda: operation(study))
    faults = FailNextStatements(storage.engine)
    faults.arm(1)
    result = step()
    assert faults.injected == 1
    if operation is _get_trials:
        assert result == 1
    elif operation is _ask:
        assert result == 1 and [t.state for t in study.get_trials()] == [TrialState.COMPLETE, TrialState.RUNNING]
    elif operation is _suggest:
        assert 0.0 <= result <= 1.0 and study.get_trials()[1].params == {"x": result}
    else:
        assert result == 0


# -- PostgreSQL with its backends killed ----------------------------------------------------------

@pytest.mark.services
@pytest.mark.slow
def test_ask_tell_and_heartbeats_survive_killed_backends():
    cycles = 120  # ~0.1-0.15 s a cycle on a busy 2-CPU machine (about 50 statements each)
    with pg_database() as url:
        storage = open_storage(url, heartbeat_interval=1, heartbeat_grace=60)
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
        study = optuna.create_study(study_name="pg", storage=storage, direction="maximize")
        told: dict[int, float] = {}
        start = time.monotonic()
        with BackendTerminator(database_name(url), interval=0.1, duration=6) as killer:
            for _ in range(cycles):
                trial = study.ask()
                x = trial.suggest_float("x", 0.0, 1.0)
                storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study._study_id,
                                                                                          trial.number))
                trial.report(x, 1)
                study.tell(trial, x)
                told[trial.number] = x
            killer.stop()
        elapsed = time.monotonic() - start
        assert killer.error is None, killer.error
        assert killer.terminated > 0, "no backend was terminated: the test exercised nothing"
        trials = optuna.load_study(study_name="pg", storage=url).trials
        storage.engine.dispose()
    assert len(told) == cycles
    assert {t.number: t.state for t in trials} == {n: TrialState.COMPLETE for n in told}
    assert {t.number: t.value for t in trials} == told
    assert all(t.intermediate_values == {1: t.value} for t in trials)
    assert elapsed < 60, f"{cycles} cycles took {elapsed:.0f} s"


def test_every_retried_method_exists_on_this_optuna():
    """The wrapper retries these by name (some are RDBStorage internals that Optuna's cache calls): on an
    Optuna that renamed one, this fails here rather than leaving that call unretried."""
    from optuna.storages import RDBStorage

    from sweeps.study.storage import _RETRIED_METHODS

    assert [m for m in _RETRIED_METHODS if not hasattr(RDBStorage, m)] == []


# -- PostgreSQL: a worker stopped inside a transaction --------------------------------------------

def test_idle_in_transaction_timeout_is_at_least_5_s_and_follows_the_heartbeat():
    from sweeps.study.storage import idle_in_transaction_timeout

    assert idle_in_transaction_timeout(1) == 5.0 and idle_in_transaction_timeout(20) == 20.0


@pytest.mark.services
@pytest.mark.slow
def test_a_worker_stopped_inside_a_transaction_does_not_block_the_repair_of_its_trial():
    """The stopped worker: a connection of its storage that wrote an intermediate value (the trial's
    row is then locked FOR KEY SHARE) and issues nothing more, as if SIGSTOPped before its commit.
    Failing the trial (FOR UPDATE on that row) waits for it without the server-side timeout; with it,
    PostgreSQL ends the idle session after idle_in_transaction_timeout(interval) seconds."""
    import threading

    import sqlalchemy as sa

    from sweeps.study.storage import idle_in_transaction_timeout

    warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
    with pg_database() as url:
        worker = open_storage(url, heartbeat_interval=1, heartbeat_grace=2)
        study = optuna.create_study(study_name="stopped", storage=worker)
        tid = worker.get_trial_id_from_study_id_trial_number(study._study_id, study.ask().number)
        conn = worker.engine.connect()
        tx = conn.begin()
        conn.execute(sa.text("INSERT INTO trial_intermediate_values (trial_id, step, intermediate_value, "
                             "intermediate_value_type) VALUES (:t, 1, 0.5, 'FINITE')"), {"t": tid})
        repairer = open_storage(url, heartbeat_interval=1, heartbeat_grace=2)
        failed = threading.Event()

        def repair() -> None:
            repairer.set_trial_state_values(tid, TrialState.FAIL)
            failed.set()

        started = time.monotonic()
        threading.Thread(target=repair, daemon=True).start()
        try:
            assert failed.wait(idle_in_transaction_timeout(1) + 20), "the repair waited for the stopped worker"
            waited = time.monotonic() - started
            assert waited >= 1.0, "the trial's row was not locked: the test exercised nothing"
            assert repairer.get_trial(tid).state == TrialState.FAIL
        finally:
            try:
                tx.rollback()
            except Exception:  # noqa: BLE001 - the server ended this session: that is the point
                pass
            conn.close()
            worker.engine.dispose()
            repairer.engine.dispose()


def test_sqlite_study_database_runs_in_wal_mode_and_a_killed_writer_loses_nothing_committed(scratch):
    import subprocess
    import sys

    url = f"sqlite:///{scratch / 'wal.db'}"
    storage = open_storage(url, heartbeat=False)
    with storage.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    optuna.create_study(study_name="w", storage=storage)
    code = ("import os, optuna; from sweeps.study.storage import open_storage; "
            f"s = optuna.load_study(study_name='w', storage=open_storage({url!r}, heartbeat=False)); "
            "t = s.ask(); [t.report(float(k), k) for k in range(5)]; os.kill(os.getpid(), 9)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    (trial,) = optuna.load_study(study_name="w", storage=open_storage(url, heartbeat=False)).get_trials()
    assert trial.intermediate_values == {k: float(k) for k in range(5)}
    memory = open_storage("sqlite://", heartbeat=False)  # no file: nothing to switch
    with memory.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "memory"


def test_sqlite_journal_delete_switches_a_wal_database_back_and_a_bad_value_is_refused(scratch, monkeypatch,
                                                                                        caplog):
    url = f"sqlite:///{scratch / 'nfs.db'}"
    first = open_storage(url, heartbeat=False)  # WAL by default
    monkeypatch.setenv("SWEEPS_SQLITE_JOURNAL", "delete")
    held = first.engine.connect()  # another process has the file open (in a read)
    held.exec_driver_sql("BEGIN")
    held.exec_driver_sql("SELECT count(*) FROM studies").scalar()
    with caplog.at_level(logging.WARNING, logger="sweeps.storage"):
        second = open_storage(url, heartbeat=False)
        with second.engine.connect() as conn:  # the mode is kept, after a short wait
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000  # the store's own again
    assert "keeps its journal mode" in caplog.text
    held.close()
    for other in (first, second):  # the last one with the file open is the one that switches it back
        other.engine.dispose()
    storage = open_storage(url, heartbeat=False)
    with storage.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "delete"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL, SQLite's default
    optuna.create_study(study_name="d", storage=storage).ask().report(1.0, 1)
    assert not (scratch / "nfs.db-wal").exists()
    monkeypatch.setenv("SWEEPS_SQLITE_JOURNAL", "memory")
    with pytest.raises(ValueError, match=r"SWEEPS_SQLITE_JOURNAL must be one of wal, delete; got 'memory'"):
        open_storage(url, heartbeat=False)
