"""sweeps.query.database: the read-only ``"sql"`` backend, its schema-revision guard and its fallback."""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("optuna")
mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric  # noqa: E402
from servicekit import pg_database  # noqa: E402
from test_reading import KEYS, TS0, Store, _values, alpha, assert_same_long, expected_long, log_trial_run, sha256  # noqa: E402,F401

from sweeps import compat, query  # noqa: E402
from sweeps.query import database  # noqa: E402

FAKE_REVISION = "0123456789ab"


def _copy(store: Store, tmp_path, revision: str | None = None) -> str:
    """A copy of the alpha store (optionally at another schema revision); its URI."""
    copy = tmp_path / "copy.db"
    shutil.copy(store.path, copy)
    if revision is not None:
        with sqlite3.connect(copy) as con:
            con.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    return f"sqlite:///{copy}"


def test_known_revisions_include_the_installed_mlflow_head():
    """Fails when MLflow is upgraded to a new schema: review the queries, then add the revision."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    assert _get_latest_schema_revision() in database.SCHEMA_REVISIONS, (
        f"MLflow {mlflow.__version__}'s schema head is not in sweeps.compat.SCHEMA_REVISIONS")


def test_schema_revision_of_a_store(alpha, tmp_path):
    with database.read_only_connection(alpha.uri) as conn:
        assert database.schema_revision(conn) in database.SCHEMA_REVISIONS
        database.check_schema(conn)
    with database.read_only_connection(_copy(alpha, tmp_path, FAKE_REVISION)) as conn:
        assert database.schema_revision(conn) == FAKE_REVISION
        with pytest.raises(database.Unsupported, match=FAKE_REVISION):
            database.check_schema(conn)


@pytest.mark.parametrize("method", ["auto", "sql"])
def test_unknown_revision_falls_back_to_the_api_with_the_same_frame(alpha, tmp_path, monkeypatch, method):
    """A database at a revision this reader was not written for (here: as if a newer MLflow, whose
    head is that revision, were installed) is read through MlflowClient, with a warning naming it."""
    import mlflow.store.db.utils

    uri = _copy(alpha, tmp_path, FAKE_REVISION)
    monkeypatch.setattr(mlflow.store.db.utils, "_get_latest_schema_revision", lambda: FAKE_REVISION)
    with pytest.warns(RuntimeWarning, match=f"schema revision '{FAKE_REVISION}'.*falling back"):
        got = query.history("alpha", tracking_uri=uri, method=method)
    pd.testing.assert_frame_equal(got, query.history("alpha", tracking_uri=alpha.uri, method="sql"))
    assert_same_long(got, expected_long(alpha))


def test_unknown_revision_is_logged_once(alpha, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(compat, "_WARNED", set())
    with database.read_only_connection(_copy(alpha, tmp_path, FAKE_REVISION)) as conn:
        with caplog.at_level("WARNING", logger="sweeps.compat"):
            for _ in range(2):
                with pytest.raises(database.Unsupported):
                    database.check_schema(conn)
    warned = [r.getMessage() for r in caplog.records if r.name == "sweeps.compat"]
    assert len(warned) == 1 and FAKE_REVISION in warned[0] and "MlflowClient" in warned[0]


def test_mlflow_without_its_orm_models_is_read_through_the_api(alpha, monkeypatch, caplog):
    """Where the installed MLflow moved its ORM models (compat logs it once), the "sql" reader is unsupported and
    the history comes through MlflowClient, the same frame."""
    monkeypatch.setattr(compat, "_WARNED", set())
    monkeypatch.setattr(compat, "MLFLOW_MODELS_MODULE", "mlflow.store.tracking.no_such_models")
    with caplog.at_level("WARNING", logger="sweeps.compat"):
        with pytest.warns(RuntimeWarning, match="ORM models.*falling back"):
            got = query.history("alpha", tracking_uri=alpha.uri, method="sql")
    assert_same_long(got, expected_long(alpha))
    assert len([r for r in caplog.records if r.name == "sweeps.compat"]) == 1


def test_unknown_revision_is_never_read_by_sql(alpha, tmp_path, monkeypatch):
    """When the installed MLflow refuses that revision too, the API route fails with MLflow's own
    error after the warning: never silently wrong data."""
    uri = _copy(alpha, tmp_path, FAKE_REVISION)
    queried = []
    monkeypatch.setattr(database, "_metrics", lambda *a: queried.append(a))
    with pytest.warns(RuntimeWarning, match=FAKE_REVISION):
        with pytest.raises(mlflow.exceptions.MlflowException, match="out-of-date database schema"):
            query.history("alpha", tracking_uri=uri, method="sql")
    assert not queried


def test_missing_alembic_table_is_not_a_tracking_store_and_nothing_is_created(alpha, tmp_path):
    """No revision at all: not MLflow's database. Refused, not read through MlflowClient (which would create
    MLflow's tables in it)."""
    uri = _copy(alpha, tmp_path)
    with sqlite3.connect(uri.removeprefix("sqlite:///")) as con:
        con.execute("DROP TABLE alembic_version")
        tables = sorted(r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    with pytest.raises(database.NotATrackingStore, match="is not an MLflow tracking database"):
        database.read_history(uri, "sweeps/alpha", None, None)
    with pytest.raises(database.NotATrackingStore):
        query.history("alpha", tracking_uri=uri, experiment_name="sweeps/alpha")  # no fallback either
    with sqlite3.connect(uri.removeprefix("sqlite:///")) as con:
        assert sorted(r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")) == tables


def test_altered_schema_at_a_known_revision_fails_loudly(alpha, tmp_path):
    import sqlalchemy.exc

    uri = _copy(alpha, tmp_path)
    with sqlite3.connect(uri.removeprefix("sqlite:///")) as con:
        con.execute("ALTER TABLE metrics RENAME COLUMN is_nan TO nan_flag")
    # pandas' read_sql wraps SQLAlchemy's error (its __cause__)
    with pytest.raises(pd.errors.DatabaseError, match="no such column: metrics.is_nan") as info:
        query.history("alpha", tracking_uri=uri, method="sql")
    assert isinstance(info.value.__cause__, sqlalchemy.exc.OperationalError)


def test_experiment_name_in_two_workspaces_is_unsupported(alpha, tmp_path):
    uri = _copy(alpha, tmp_path)
    with sqlite3.connect(uri.removeprefix("sqlite:///")) as con:
        con.execute("INSERT INTO experiments (experiment_id, name, workspace, lifecycle_stage) "
                    "VALUES (999, 'sweeps/alpha', 'elsewhere', 'active')")
    with pytest.raises(database.Unsupported, match="workspaces"):
        database.read_history(uri, "sweeps/alpha", None, None)


def test_reading_never_writes(alpha):
    import sqlalchemy as sa
    import sqlalchemy.exc

    before = sha256(alpha.path)
    with database.read_only_connection(alpha.uri) as conn:
        with pytest.raises(sqlalchemy.exc.OperationalError, match="readonly|read-only|query_only"):
            conn.execute(sa.text("CREATE TABLE scratch (x INTEGER)"))
    database.read_history(alpha.uri, "sweeps/alpha", None, None)
    assert sha256(alpha.path) == before
    assert not list(alpha.path.parent.glob("mlflow.db-*"))


def test_by_chunks_of_runs_and_long_key_lists(alpha, monkeypatch):
    """Runs are read by chunks and long key lists filtered after the query (both to stay
    under SQLite's bound-parameter limit): same result."""
    monkeypatch.setattr(database, "RUN_CHUNK", 2)
    assert_same_long(query.history("alpha", tracking_uri=alpha.uri, method="sql"), expected_long(alpha))
    monkeypatch.setattr(database, "MAX_SQL_KEYS", 1)
    keys = ["eval/accuracy", "train/eta", "nope"]
    got = query.history("alpha", tracking_uri=alpha.uri, method="sql", metrics=keys)
    assert_same_long(got, expected_long(alpha, keys=keys))


def test_run_uuid_in_form_gives_the_same_rows(alpha, monkeypatch):
    """Dialects without ``WITH ... AS (VALUES ...)`` (MySQL, SQL Server) filter ``run_uuid IN (...)``."""
    numbered = database.read_history(alpha.uri, "sweeps/alpha", None, None)
    monkeypatch.setattr(database, "VALUES_DIALECTS", ())
    plain = database.read_history(alpha.uri, "sweeps/alpha", None, None)
    pd.testing.assert_frame_equal(query.frames.finish_long(plain), query.frames.finish_long(numbered))
    assert_same_long(query.frames.finish_long(plain), expected_long(alpha))


@pytest.mark.services
def test_history_sql_on_postgresql(tmp_path):
    with pg_database("sweeps_test_query") as uri:
        store = Store(uri=uri, path=tmp_path / "unused")
        client = MlflowClient(tracking_uri=uri)
        rng = np.random.default_rng(11)
        exp = client.create_experiment("sweeps/pg", artifact_location=str(tmp_path / "artifacts"))
        parent = client.create_run(exp, tags={"sweeps.role": "study", "sweeps.study": "pg"})
        client.log_batch(parent.info.run_id, metrics=[Metric("train/eta", 1.0, TS0, 1)])
        for n in range(4):
            rid = log_trial_run(client, store, exp, parent.info.run_id, "pg", n, 3, KEYS, rng,
                                {"eta": 0.1}, nan_at=[("train/eta", 2)] if n == 1 else [])
        v = float(_values(rng, 1)[0])  # a later second value at the same step wins
        client.log_batch(rid, metrics=[Metric("train/eta", v, TS0 + 10_000_000, 1)])
        store.oracle[(rid, "train/eta", 1)] = v

        via_sql = query.history("pg", tracking_uri=uri)  # auto -> sql
        assert_same_long(via_sql, expected_long(store))
        pd.testing.assert_frame_equal(via_sql, query.history("pg", tracking_uri=uri, method="api"))
        sel = query.history("pg", tracking_uri=uri, method="sql", metrics=["train/eta"], trials=[1, 3])
        assert_same_long(sel, expected_long(store, keys=["train/eta"], trials={1, 3}))
        with database.read_only_connection(uri) as conn:
            assert database.schema_revision(conn) in database.SCHEMA_REVISIONS
        client._tracking_client.store.engine.dispose()  # let the database be dropped
