"""sweeps.compat: every Optuna or MLflow internal sweeps relies on, one pair of tests each.

For each internal: one test that exercises it on the *installed* Optuna / MLflow as sweeps relies on it (so an
upgrade that breaks it fails here, instead of sweeps silently taking the fallback), and one that forces the
fallback and checks its result and that the WARNING is logged exactly once however often it is taken.
"""

from __future__ import annotations

import inspect
import logging
import math
import re
import subprocess
import sys
import types
from typing import Any

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.study import StudyDirection
from optuna.trial import TrialState

from sweeps import compat

mlflow = pytest.importorskip("mlflow")

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(autouse=True)
def fresh(monkeypatch, caplog):
    """No fallback announced or marked broken yet in this test; compat's WARNINGs captured."""
    monkeypatch.setattr(compat, "_WARNED", set())
    monkeypatch.setattr(compat, "_BROKEN", set())
    compat._trial_signature_ok.cache_clear()
    caplog.set_level(logging.WARNING, logger="sweeps.compat")
    yield
    compat._trial_signature_ok.cache_clear()


def warned(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sweeps.compat" and r.levelno == logging.WARNING]


def sqlite_storage(scratch, name: str = "s.db") -> Any:
    from sweeps.study.storage import open_storage

    return open_storage(f"sqlite:///{scratch / name}", heartbeat=False)


# -- the helper ---------------------------------------------------------------------------------------

def test_a_fallback_is_announced_once_per_internal_at_warning_level(caplog):
    assert compat.fallback_taken("a", "why a") is True
    assert compat.fallback_taken("a", "why a, again") is False
    assert compat.fallback_taken("b", "why b") is True
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"]
    assert warned(caplog)[0].startswith("a: why a") and compat.OPTUNA_CHECKED in warned(caplog)[0]


@pytest.mark.slow
def test_importing_compat_imports_neither_optuna_nor_mlflow():
    code = "import sys, sweeps.compat; print(sorted(m for m in ('optuna', 'mlflow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- RDBStorage methods retried by name ---------------------------------------------------------------

def test_every_retried_method_exists_and_the_cache_calls_no_other_private_one(caplog):
    from optuna.storages import _cached_storage

    from sweeps.study.storage import _RETRIED_METHODS, _retrying_storage_class

    assert compat.retried_storage_methods(RDBStorage, _RETRIED_METHODS) == list(_RETRIED_METHODS)
    assert warned(caplog) == []
    # every private method Optuna's _CachedStorage calls on its backend is retried (a new one fails here)
    called = set(re.findall(r"self\._backend\.(_\w+)\(", inspect.getsource(_cached_storage._CachedStorage)))
    assert called and called <= set(compat.CACHED_BACKEND_METHODS), called - set(compat.CACHED_BACKEND_METHODS)
    retrying = _retrying_storage_class()
    for name in compat.CACHED_BACKEND_METHODS:
        assert getattr(retrying, name).__wrapped__ is getattr(RDBStorage, name), name


def test_a_renamed_private_method_is_not_retried_and_logged_once(caplog):
    renamed = type("RDBStorage", (RDBStorage,), {"_get_trials": None})  # as if Optuna renamed it
    names = ("get_trial", "_get_trials", "_create_new_trial")
    assert compat.retried_storage_methods(renamed, names) == ["get_trial", "_create_new_trial"]
    assert compat.retried_storage_methods(renamed, names) == ["get_trial", "_create_new_trial"]
    assert len(warned(caplog)) == 1 and "RDBStorage._get_trials" in warned(caplog)[0]
    assert "not retried" in warned(caplog)[0]


# -- RDBStorage.engine: SQLite's BEGIN IMMEDIATE and WAL ----------------------------------------------

def _journal_mode(scratch, name: str) -> str:
    import sqlite3

    with sqlite3.connect(scratch / name) as con:
        return con.execute("PRAGMA journal_mode").fetchone()[0]


def test_the_sqlite_storage_hooks_its_engine(scratch, caplog):
    from sqlalchemy import event

    storage = sqlite_storage(scratch)
    engine = compat.rdb_engine(storage)
    assert engine is storage.engine and event.contains(engine, "begin", _begin_listener(engine))
    assert _journal_mode(scratch, "s.db") == "wal"
    assert warned(caplog) == []


def _begin_listener(engine: Any) -> Any:
    """The ``begin`` listener sweeps' SQLite storage put on ``engine`` (it takes BEGIN IMMEDIATE)."""
    listeners = list(engine.dispatch.begin)
    assert len(listeners) == 1
    return listeners[0]


def test_an_engine_kept_elsewhere_leaves_sqlite_unhooked_but_working(scratch, monkeypatch, caplog):
    monkeypatch.setattr(compat, "RDB_ENGINE_ATTR", "sql_engine")  # as if Optuna renamed the attribute
    for name in ("a.db", "b.db"):
        storage = sqlite_storage(scratch, name)
        assert compat.rdb_engine(storage) is None
        assert list(storage.engine.dispatch.begin) == []  # no BEGIN IMMEDIATE
        assert _journal_mode(scratch, name) == "delete"
        study = optuna.create_study(storage=storage)
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert len(warned(caplog)) == 1 and "BEGIN IMMEDIATE" in warned(caplog)[0]


# -- the batched intermediate values (optuna.storages._rdb) -------------------------------------------

def _running_trials(storage: Any, n: int) -> tuple[optuna.Study, list[int]]:
    study = optuna.create_study(study_name="b", storage=storage)
    trials = [study.ask() for _ in range(n)]
    sid = storage.get_study_id_from_name("b")
    return study, [storage.get_trial_id_from_study_id_trial_number(sid, t.number) for t in trials]


def test_the_batch_writes_what_the_storage_writes_and_refuses_finished_trials(scratch, caplog):
    storage = sqlite_storage(scratch)
    study, (a, b, c) = _running_trials(storage, 3)
    assert storage.set_trial_state_values(c, TrialState.FAIL)
    write = compat.rdb_intermediate_values_writer(storage)
    assert write is not None
    refused = write([(a, 1, 0.5), (a, 2, math.inf), (b, 1, math.nan), (a, 1, 0.25), (c, 1, 1.0)])
    assert list(refused) == [c] and isinstance(refused[c], optuna.exceptions.UpdateFinishedTrialError)
    got = {t.number: t.intermediate_values for t in study.get_trials()}
    assert got[0] == {1: 0.25, 2: math.inf} and math.isnan(got[1][1]) and got[2] == {}
    assert warned(caplog) == []


def test_the_batch_is_not_used_on_an_untested_optuna_major(scratch, monkeypatch, caplog):
    storage = sqlite_storage(scratch)
    monkeypatch.setattr(compat, "BATCH_OPTUNA_MAJORS", ("4",))
    assert compat.rdb_intermediate_values_writer(storage) is None
    assert compat.rdb_intermediate_values_writer(storage) is None
    assert len(warned(caplog)) == 1 and "one transaction per value" in warned(caplog)[0]
    assert compat.rdb_intermediate_values_writer(optuna.storages.InMemoryStorage()) is None  # nothing to batch


def test_the_batch_is_not_used_where_its_internals_moved(scratch, caplog):
    from optuna.storages._rdb import storage as rdb_storage

    storage = sqlite_storage(scratch)
    with pytest.MonkeyPatch.context() as patch:
        patch.delattr(rdb_storage, "_create_scoped_session")  # as if renamed
        assert compat.rdb_intermediate_values_writer(storage) is None
    assert compat.rdb_intermediate_values_writer(storage) is None  # not tried again in this process
    assert len(warned(caplog)) == 1 and "ImportError" in warned(caplog)[0]
    # a failure at write time: tests/sweeps/engine/test_reports.py (rolled back, then value by value)


# -- optuna.Study over a stand-in storage (the population pruner's snapshot) --------------------------

class StandIn:
    """The storage calls a pruner makes, served from a list of trials; writes recorded."""

    def __init__(self, trials: list[Any]) -> None:
        self.trials = trials
        self.written: list[tuple[int, str, Any]] = []

    def get_study_id_from_name(self, name: str) -> int:
        return 7

    def get_study_directions(self, study_id: int) -> list[Any]:
        return [StudyDirection.MAXIMIZE]

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states: Any = None) -> list[Any]:
        return [t for t in self.trials if states is None or t.state in states]

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.written.append((trial_id, key, value))


def _stand_in() -> tuple[StandIn, Any]:
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    done = [create_trial(value=v, intermediate_values={1: v}, state=TrialState.COMPLETE, params={"x": v},
                         distributions={"x": FloatDistribution(0, 1)}, system_attrs={"completed_rung_0": v})
            for v in (0.8, 0.9)]
    for i, t in enumerate(done):
        t.number, t._trial_id = i, 100 + i
    running = create_trial(state=TrialState.RUNNING, intermediate_values={1: 0.1})
    running.number, running._trial_id = 2, 102
    return StandIn([*done, running]), running


def test_a_study_over_a_stand_in_storage_reads_and_writes_through_it(caplog):
    standin, running = _stand_in()
    median = optuna.pruners.MedianPruner(n_startup_trials=1)
    view = compat.snapshot_study("s", standin, optuna.samplers.RandomSampler(), median)
    assert view is not None
    assert view.get_trials(deepcopy=False) == standin.trials
    assert view.pruner.prune(view, running)  # 0.1 against a median of 0.85: from the stand-in's trials
    halving = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    assert halving.prune(view, running)  # 0.1 against rung values 0.8 and 0.9
    assert standin.written == [(102, "completed_rung_0", 0.1)]  # the pruner's write went to the stand-in
    assert warned(caplog) == []


@pytest.mark.parametrize("change", ["wrapped", "reads-elsewhere"])
def test_a_study_that_does_not_read_through_the_stand_in_is_not_used(monkeypatch, caplog, change):
    if change == "wrapped":  # as if Optuna wrapped every storage (a cache in front of it)
        real = optuna.storages.get_storage
        monkeypatch.setattr(optuna.storages, "get_storage", lambda s: compat._Uncached(real(s)))
    else:  # as if study.get_trials() no longer read storage.get_all_trials()
        monkeypatch.setattr(optuna.Study, "get_trials", lambda self, deepcopy=True, states=None: [])
    for _ in range(2):
        standin, _ = _stand_in()
        assert compat.snapshot_study("s", standin, None, optuna.pruners.MedianPruner()) is None
    assert len(warned(caplog)) == 1 and "one read per member per epoch" in warned(caplog)[0]
    # what the population pruner does then: tests/sweeps/engine/test_pruning.py (view "study")


# -- optuna.Trial(study, trial_id) and the study's cache of claimed trials ---------------------------

class RecordingSampler(optuna.samplers.RandomSampler):
    def __init__(self) -> None:
        super().__init__(seed=0)
        self.before: list[int] = []

    def before_trial(self, study: optuna.Study, trial: Any) -> None:
        self.before.append(trial.number)


def _claimable(scratch, n: int = 2) -> tuple[Any, optuna.Study, RecordingSampler]:
    storage = sqlite_storage(scratch)
    optuna.create_study(study_name="c", storage=storage)
    sampler = RecordingSampler()
    study = optuna.load_study(study_name="c", storage=storage, sampler=sampler)
    for i in range(n):
        study.enqueue_trial({"x": 0.1 * (i + 1)})
    assert len(study.get_trials(deepcopy=False)) == n  # the study's cache knows them, WAITING
    return storage, study, sampler


def test_a_claimed_trial_is_built_as_ask_builds_it_and_known_to_the_cache(scratch, caplog):
    from sweeps.study.claims import claim_trials

    storage, study, sampler = _claimable(scratch)
    trials = claim_trials(study, storage, 2)
    assert [t.number for t in trials] == [0, 1] and sampler.before == [0, 1]
    assert all(t.study is study for t in trials)  # no twin: the refresh made them known to the study's cache
    for t in trials:
        assert t.suggest_float("x", 0, 1) == pytest.approx(0.1 * (t.number + 1))  # a write through the cache
        study.tell(t, t.number)
    assert [(t.state, t.value) for t in optuna.load_study(study_name="c", storage=storage).trials] == [
        (TrialState.COMPLETE, 0.0), (TrialState.COMPLETE, 1.0)]
    assert list(inspect.signature(optuna.Trial).parameters)[:2] == ["study", "trial_id"]
    assert warned(caplog) == []


def test_a_cache_that_does_not_see_the_claimed_trials_gets_an_uncached_twin(scratch, caplog):
    from sweeps.study.claims import claim_trials

    storage, study, sampler = _claimable(scratch)
    with pytest.MonkeyPatch.context() as patch:
        # as if study.get_trials() no longer refreshed Optuna's cache (it serves what it read before)
        patch.setattr(optuna.Study, "get_trials", lambda self, deepcopy=True, states=None: [])
        for expected in (0, 1):
            (trial,) = claim_trials(study, storage, 1)
            assert trial.number == expected and trial.study is not study and sampler.before[-1] == expected
            assert trial.suggest_float("x", 0, 1) == pytest.approx(0.1 * (expected + 1))
            study.tell(trial, 0.5)  # told through the worker's own study, as the worker does
    stored = optuna.load_study(study_name="c", storage=storage).trials
    assert [(t.state, t.value, t.params) for t in stored] == [
        (TrialState.COMPLETE, 0.5, {"x": pytest.approx(0.1)}), (TrialState.COMPLETE, 0.5, {"x": pytest.approx(0.2)})]
    assert len(warned(caplog)) == 1 and "uncached twin" in warned(caplog)[0]


def test_a_trial_class_with_another_signature_is_refused_loudly(scratch, monkeypatch):
    """No fallback exists for building the trial of a claimed id: the error names the internal."""

    class Other:
        def __init__(self, study: Any, *, number: int) -> None:
            pass

    monkeypatch.setattr(optuna, "Trial", Other)
    with pytest.raises(compat.InternalUnavailable, match=r"optuna.Trial\(study, trial_id\)"):
        compat.new_trial(None, 0)


# -- MLflow: the worker's pre-import of the SQL store --------------------------------------------------

def test_the_sql_store_is_preimported(caplog):
    assert compat.preimport_mlflow_sql_store() is True
    assert compat.MLFLOW_SQL_STORE_MODULE in sys.modules
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore  # what MLflow opens sqlite:// stores with

    assert SqlAlchemyStore.__module__ == compat.MLFLOW_SQL_STORE_MODULE
    assert warned(caplog) == []


def test_a_moved_sql_store_is_not_preimported(monkeypatch, caplog):
    monkeypatch.setattr(compat, "MLFLOW_SQL_STORE_MODULE", "mlflow.store.tracking.no_such_store")
    assert compat.preimport_mlflow_sql_store() is False
    assert compat.preimport_mlflow_sql_store() is False
    assert len(warned(caplog)) == 1 and "no pre-import" in warned(caplog)[0]


# -- MLflow's ORM models and schema --------------------------------------------------------------------

#: The columns sweeps' bulk writer and "sql" reader use, per model.
COLUMNS = {
    "SqlExperiment": {"experiment_id", "name"},
    "SqlRun": {"run_uuid", "experiment_id", "lifecycle_stage", "status", "end_time"},
    "SqlTag": {"run_uuid", "key", "value"},
    "SqlMetric": {"run_uuid", "key", "value", "timestamp", "step", "is_nan"},
    "SqlLatestMetric": {"run_uuid", "key", "value", "timestamp", "step", "is_nan"},
    "SqlParam": {"run_uuid", "key", "value"},
}


def test_mlflows_orm_models_have_the_tables_and_columns_used(caplog):
    tables = compat.mlflow_sql_tables()
    assert tables is not None and set(tables) == set(COLUMNS)
    for model, columns in COLUMNS.items():
        assert columns <= set(tables[model].c.keys()), (model, columns - set(tables[model].c.keys()))
    assert {t.name for t in tables.values()} == {"experiments", "runs", "tags", "metrics", "latest_metrics", "params"}
    assert warned(caplog) == []


@pytest.mark.parametrize("change", ["module", "model"])
def test_moved_orm_models_turn_the_sql_paths_off(monkeypatch, caplog, change):
    if change == "module":
        monkeypatch.setattr(compat, "MLFLOW_MODELS_MODULE", "mlflow.store.tracking.no_such_models")
    else:
        monkeypatch.setattr(compat, "MLFLOW_SQL_MODELS", (*compat.MLFLOW_SQL_MODELS, "SqlRenamedModel"))
    assert compat.mlflow_sql_tables() is None
    assert compat.mlflow_sql_tables() is None
    assert len(warned(caplog)) == 1 and "MlflowClient" in warned(caplog)[0]
    # the bulk writer and the reader then: tests/sweeps/tracking/test_bulk_writer.py,
    # tests/sweeps/query/test_database.py


def test_the_installed_mlflow_schema_head_is_a_known_revision(tmp_path, caplog):
    from mlflow.store.db.utils import _get_latest_schema_revision
    from mlflow.tracking import MlflowClient

    from sweeps.stores import read_only_connection

    assert _get_latest_schema_revision() in compat.SCHEMA_REVISIONS
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(tracking_uri=uri).create_experiment("e")
    with read_only_connection(uri) as conn:
        revision = compat.schema_revision(conn)
    assert compat.schema_supported(revision, "test", "nothing") is True
    assert warned(caplog) == []


def test_another_schema_revision_is_logged_once_per_user(caplog):
    for _ in range(2):
        assert compat.schema_supported("0123456789ab", "bulk writer", "runs go through MlflowClient") is False
    assert compat.schema_supported(None, "reader", "read through MlflowClient") is False
    assert len(warned(caplog)) == 2
    assert "'0123456789ab'" in warned(caplog)[0] and "runs go through MlflowClient" in warned(caplog)[0]


# -- MLflow's host credentials and REST helpers --------------------------------------------------------

CREDS_ATTRS = ("host", "username", "password", "token", "verify", "auth", "client_cert_path", "server_cert_path")


def test_default_host_creds_are_the_clients_stores(monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw")
    uri = "http://127.0.0.1:1/p"
    low, high = compat.CREDS_VERIFIED
    assert low <= compat.mlflow_version() < high
    default = compat.default_host_creds(uri)
    store = compat.client_store_host_creds(mlflow.MlflowClient(tracking_uri=uri))
    assert default is not None and store is not None
    for attr in CREDS_ATTRS:
        assert getattr(default, attr) == getattr(store, attr), attr
    assert default.host == uri and default.username == "bob"
    assert warned(caplog) == []


@pytest.mark.parametrize("change", ["version", "moved"])
def test_default_host_creds_elsewhere_are_left_to_the_clients_store(monkeypatch, caplog, change):
    if change == "version":
        monkeypatch.setattr(compat, "mlflow_version", lambda: (4, 1))
    else:
        import mlflow.utils.credentials

        monkeypatch.delattr(mlflow.utils.credentials, "get_default_host_creds")
    assert compat.default_host_creds("http://127.0.0.1:1") is None
    assert compat.default_host_creds("http://127.0.0.1:1") is None
    assert len(warned(caplog)) == 1 and "MlflowClient's store" in warned(caplog)[0]


def test_a_client_without_its_store_path_has_no_host_creds(caplog):
    class Client:  # as if MLflow renamed MlflowClient._tracking_client
        _tracking = None

    assert compat.client_store_host_creds(Client()) is None
    assert compat.client_store_host_creds(Client()) is None
    assert len(warned(caplog)) == 1 and "get_host_creds" in warned(caplog)[0]


def test_mlflows_rest_helpers_take_what_the_reader_passes(caplog):
    from mlflow.utils import rest_utils

    helpers = compat.mlflow_rest_helpers()
    assert helpers == (rest_utils.http_request, rest_utils.verify_rest_response)
    http_request, verify_rest_response = helpers
    creds = compat.default_host_creds("http://127.0.0.1:1")
    inspect.signature(http_request).bind(creds, "/ajax-api/2.0/mlflow/metrics/get-history-bulk", "GET",
                                         params=[("run_id", "r")])
    inspect.signature(verify_rest_response).bind(object(), "/route")
    assert warned(caplog) == []


def test_moved_rest_helpers_turn_the_bulk_route_off(monkeypatch, caplog):
    from mlflow.utils import rest_utils

    monkeypatch.delattr(rest_utils, "verify_rest_response")
    assert compat.mlflow_rest_helpers() is None
    assert compat.mlflow_rest_helpers() is None
    assert len(warned(caplog)) == 1 and "run by run" in warned(caplog)[0]


def test_an_open_storage_pool_allows_no_overflow_and_the_fallback_keeps_it(monkeypatch, caplog, tmp_path):
    """Closing the pool's overflow works on this SQLAlchemy (the pool then waits rather than open a second
    connection); where the pool has no such limit the overflow stays, with one WARNING."""
    import sqlalchemy as sa
    from sqlalchemy.pool import QueuePool

    def engine() -> Any:
        return sa.create_engine(f"sqlite:///{tmp_path / 'x.db'}", poolclass=QueuePool, pool_size=1, max_overflow=1,
                                pool_timeout=0.2)

    kept, closed = engine(), engine()
    assert compat.close_pool_overflow(types.SimpleNamespace(engine=closed)) is True
    with kept.connect(), kept.connect():
        pass  # the overflow of one: two at once
    with closed.connect():
        with pytest.raises(sa.exc.TimeoutError):
            closed.connect()  # no second connection: it waits for the first, then times out
    kept.dispose()
    closed.dispose()
    monkeypatch.setattr(compat, "_WARNED", set())
    with caplog.at_level(logging.WARNING, logger="sweeps.compat"):
        assert compat.close_pool_overflow(types.SimpleNamespace(engine=types.SimpleNamespace(pool=object()))) is False
        assert compat.close_pool_overflow(types.SimpleNamespace(engine=types.SimpleNamespace(pool=object()))) is False
    assert sum("_max_overflow" in r.getMessage() for r in caplog.records) == 1
