"""The ``"sql"`` backend: read-only queries on MLflow's backend database, through MLflow's own ORM models.

Fastest by far (one small query for the trial runs, then their metrics by chunks of runs,
looked up through the ``run_uuid`` index), and safe against another MLflow's schema in two ways:

* The statements are built from MLflow's own SQLAlchemy models
  (``mlflow.store.tracking.dbmodels.models``: ``SqlExperiment``, ``SqlRun``, ``SqlTag``,
  ``SqlMetric``), so table and column names are those of the installed MLflow, and rows
  are read through SQLAlchemy (no DB-API cursor handling here).
* Before anything else the database's Alembic revision (``alembic_version``, the same
  check MLflow's own store makes) must be one of :data:`SCHEMA_REVISIONS`, the revisions
  these queries were written and tested against (MLflow 3.17.2's head). Any other
  revision raises :class:`~sweeps.query.base.Unsupported` naming it, and
  :func:`sweeps.query.history` warns and reads through ``MlflowClient`` instead (which
  works wherever the installed MLflow accepts the database, and otherwise fails with
  MLflow's own "out-of-date database schema" error: never with silently wrong data).
  Adding a revision to :data:`SCHEMA_REVISIONS` means reviewing the queries below against
  that schema; ``tests/sweeps/query/test_database.py`` fails when the installed MLflow's
  head is not in the set.

Nothing is ever written: SQLite is opened read-only (``mode=ro`` URI, ``PRAGMA query_only``;
no journal, no migration) in one read transaction (``BEGIN``: one snapshot for all
statements, so a study logging meanwhile cannot tear the result); PostgreSQL in a
``REPEATABLE READ`` read-only transaction; other databases in one transaction that is
rolled back. An experiment name that several MLflow workspaces share raises
:class:`~sweeps.query.base.Unsupported` (MLflow's client applies its own workspace scoping).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from sweeps import compat
from sweeps.compat import SCHEMA_REVISIONS, schema_revision
from sweeps.names import TAG_ROLE, TAG_TRIAL_NUMBER
from sweeps.query.base import ROLE_TRIAL, Unsupported, as_int, trial_or_missing
from sweeps.redaction import redact_url
from sweeps.query.frames import RAW_COLUMNS, empty_raw, typed_raw
from sweeps.stores import DB_SCHEMES, NotATrackingStore, read_only_connection, require_sqlite_file, scheme

__all__ = ["DB_SCHEMES", "NotATrackingStore", "SCHEMA_REVISIONS", "read_history", "require_sqlite_file", "schema_revision", "scheme"]

#: Runs per metrics query: with two bound parameters per run (its number and id) and up to
#: :data:`MAX_SQL_KEYS` keys, below SQLite's historical limit of 999 bound parameters.
RUN_CHUNK = 250
#: Longer key lists are filtered after the query instead of inside it.
MAX_SQL_KEYS = 400


# ------------------------------------------------------------------------------ connection



def check_schema(conn: Any, uri: str = "the tracking database") -> None:
    """Raise :class:`Unsupported` unless the revision is one of :data:`SCHEMA_REVISIONS`; :class:`NotATrackingStore`
    when the database has no revision at all."""
    revision = compat.schema_revision(conn)
    if revision is None:  # no Alembic revision at all: not MLflow's database (MLflow's client would create its tables)
        raise NotATrackingStore(f"{redact_url(uri)} is not an MLflow tracking database (it has no "
                                f"Alembic revision): give the tracking URI of the sweep's MLflow store")
    if not compat.schema_supported(revision, "\"sql\" history reader", "histories are read through MlflowClient"):
        import mlflow

        raise Unsupported(
            f"the MLflow database is at schema revision {revision!r}, not one this reader was written for "
            f"({', '.join(sorted(compat.SCHEMA_REVISIONS))}: MLflow {compat.MLFLOW_CHECKED}; "
            f"MLflow {mlflow.__version__} is installed)")


# ---------------------------------------------------------------------------------- reading
# The statements use the tables of MLflow's ORM models (``Model.__table__``): the installed
# MLflow's table and column names, without configuring the ORM mappers (half a second).


def _tables() -> tuple[Any, Any, Any, Any]:
    tables = compat.mlflow_sql_tables()
    if tables is None:  # logged by compat
        raise Unsupported("the installed MLflow's ORM models are not where this reader expects them")
    return tables["SqlExperiment"], tables["SqlRun"], tables["SqlTag"], tables["SqlMetric"]


def _experiment_id(conn: Any, experiment: str) -> Any | None:
    import sqlalchemy as sa

    experiments = _tables()[0]
    ids = conn.execute(sa.select(experiments.c.experiment_id).where(experiments.c.name == experiment)).scalars().all()
    if len(ids) > 1:
        raise Unsupported(f"{len(ids)} experiments are named {experiment!r} (MLflow workspaces)")
    return ids[0] if ids else None


def _trial_runs(conn: Any, experiment_id: Any) -> pd.DataFrame:
    """``run_id``, ``trial`` (-1: no valid tag) of the active trial runs of the experiment."""
    import sqlalchemy as sa
    from mlflow.entities import LifecycleStage

    _, runs, tags, _ = _tables()
    role, number = tags.alias("role"), tags.alias("num")
    stmt = (
        sa.select(runs.c.run_uuid, number.c.value)
        .select_from(runs)
        .join(role, sa.and_(role.c.run_uuid == runs.c.run_uuid, role.c.key == TAG_ROLE, role.c.value == ROLE_TRIAL))
        .outerjoin(number, sa.and_(number.c.run_uuid == runs.c.run_uuid, number.c.key == TAG_TRIAL_NUMBER))
        .where(runs.c.experiment_id == experiment_id, runs.c.lifecycle_stage == LifecycleStage.ACTIVE)
    )
    found = pd.read_sql(stmt, conn)
    found.columns = ["run_id", "tag"]
    trial = [trial_or_missing(as_int(t)) for t in found["tag"]]
    return pd.DataFrame({"run_id": found["run_id"].astype(str), "trial": pd.Series(trial, dtype="int64")})


#: Dialects whose metrics query numbers the runs in a ``WITH sel(i, run_uuid) AS (VALUES ...)``
#: table (rows then carry a small integer, not a 32-character run id: a third less to fetch);
#: others filter on ``run_uuid IN (...)``.
VALUES_DIALECTS = ("sqlite", "postgresql")


def _metrics(conn: Any, runs: pd.DataFrame, keys: list[str] | None) -> pd.DataFrame:
    """Every metric row of ``runs`` (``run_id``, ``trial``; of ``keys`` when given) in the raw
    columns, NaN restored (MLflow stores NaN as 0 with ``is_nan`` set; +/-inf as
    +/-1.7976931348623157e308, read as is)."""
    import sqlalchemy as sa

    metrics = _tables()[3]
    sql_keys = keys if keys is not None and len(keys) <= MAX_SQL_KEYS else None
    run_ids = runs["run_id"].tolist()
    ids, trials = runs["run_id"].to_numpy(object), runs["trial"].to_numpy(np.int64)
    numbered = conn.dialect.name in VALUES_DIALECTS
    nan = sa.cast(metrics.c.is_nan, sa.Integer)
    parts = []
    for start in range(0, len(run_ids), RUN_CHUNK):
        chunk = run_ids[start: start + RUN_CHUNK]
        if numbered:
            sel = (sa.values(sa.column("i", sa.Integer), sa.column("run_uuid", sa.String), name="sel")
                   .data([(start + i, rid) for i, rid in enumerate(chunk)]).cte("sel"))
            stmt = (sa.select(sel.c.i * 2 + nan, metrics.c.key, metrics.c.step, metrics.c.timestamp, metrics.c.value)
                    .select_from(sel).join(metrics, metrics.c.run_uuid == sel.c.run_uuid))
        else:
            stmt = (sa.select(metrics.c.run_uuid, nan, metrics.c.key, metrics.c.step, metrics.c.timestamp,
                              metrics.c.value).where(metrics.c.run_uuid.in_(chunk)))
        if sql_keys is not None:
            # ``key || ''``: look rows up by the run_uuid index, not by the primary key
            # (key, ...), which would scan that key's values of every run in the database
            stmt = stmt.where(metrics.c.key.concat("").in_(sql_keys))
        with _gc_paused():
            parts.append(pd.read_sql(stmt, conn))
    rows = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    if numbered:
        rows.columns = ["run_nan", "metric", "epoch", "timestamp", "value"]
        code = rows["run_nan"].to_numpy(np.int64)
        run, is_nan = code >> 1, (code & 1).astype(bool)
    else:
        rows.columns = ["run_id", "is_nan", "metric", "epoch", "timestamp", "value"]
        run = pd.Index(ids).get_indexer(rows["run_id"])
        is_nan = rows["is_nan"].to_numpy(np.int64).astype(bool)
    rows = rows.assign(run_id=ids[run], trial=trials[run], value=rows["value"].astype("float64").mask(is_nan, np.nan))
    if keys is not None and sql_keys is None:
        rows = rows[rows["metric"].isin(keys)]
    return rows.loc[:, list(RAW_COLUMNS)]


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while rows are fetched: each of the 10^5 row objects
    is a tracked container, so fetching them would start collection after collection over an
    ever larger heap (half the time of a large read); none of them can be part of a cycle."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_history(uri: str, experiment: str, keys: list[str] | None, trials: list[int] | None) -> pd.DataFrame:
    """The backend's ``read_history`` (see :mod:`sweeps.query.base`)."""
    require_sqlite_file(uri)
    with read_only_connection(uri) as conn:
        check_schema(conn, uri)
        experiment_id = _experiment_id(conn, experiment)
        if experiment_id is None:
            return empty_raw()
        runs = _trial_runs(conn, experiment_id)
        if trials is not None:
            runs = runs[runs["trial"].isin(trials)]
        if runs.empty:
            return empty_raw()
        rows = _metrics(conn, runs, keys)
    return typed_raw(rows)
