"""Bulk writes to MLflow's database store: a run's queued data in one transaction, not one ORM object per value.

Why: MLflow's SQL store (``MlflowClient.log_batch``) builds a SQLAlchemy ORM object for each metric
value and flushes them through the unit of work, ~0.1 ms a value on this project's machines (128 ms
for the 1,333 values of a 30-epoch digits trial, 43 metrics x 31 epochs: longer than that trial's
training in a population), and each call opens several sessions and commits (a ``log_batch`` four,
a trial about a dozen). :class:`BulkWriter` stores the same rows with SQLAlchemy Core in one
transaction per send: a trial's metrics in ~10 ms, its params with its first send and its tags and
end with its last (``benchmarks/bench_sweep.py``; figures in ``docs/performance.md``).

The rows are exactly those MLflow's client stores (tested against it, value for value):

* ``metrics``: ``(run_uuid, key, value, timestamp, step, is_nan)``; NaN is stored as ``value = 0``
  with ``is_nan`` true, +-inf as +-``1.7976931348623157e308`` (MLflow's ``sanitize_metric_value``);
  a row already stored (same key, timestamp, step, value and ``is_nan``) is skipped, so a batch sent
  twice (its answer was lost) is stored once, as with MLflow;
* ``latest_metrics``: per key, the value with the greatest ``(step, timestamp, value)`` among the
  stored one and the batch's, the first of equals kept (MLflow's ``_update_latest_metrics_if_necessary``);
* ``params``: inserted; a param already stored with the same value is skipped, with another value
  refused (``MlflowException(INVALID_PARAMETER_VALUE)``, "Changing param values is not allowed");
* ``tags``: inserted or overwritten (MLflow's ``set_tag``); keys under ``mlflow.`` (which MLflow
  treats specially, e.g. the run name) are not accepted here: :meth:`BulkWriter.handles` says no and
  the tracker sends them with the client;
* the run's end: ``status`` and ``end_time`` (milliseconds), as ``set_terminated`` sets them;
* the run must exist and be active (``lifecycle_stage = 'active'``): otherwise ``MlflowException``
  (``RESOURCE_DOES_NOT_EXIST`` / ``INVALID_PARAMETER_VALUE``), as MLflow raises (permanent errors for
  the tracker).

All of a send is one transaction (SQLite: ``BEGIN IMMEDIATE``, busy timeout 20 s as MLflow's own;
a lock held longer fails the send with ``OperationalError``, a transient error that the tracker keeps
queued). Table and column names come from MLflow's own models (``SqlMetric``, ``SqlLatestMetric``,
``SqlParam``, ``SqlTag``, ``SqlRun``).

Guard (this writes into MLflow's schema, an internal): :meth:`BulkWriter.for_uri` returns a writer
only for ``sqlite`` and ``postgresql`` URIs whose Alembic revision is one of
:data:`sweeps.compat.SCHEMA_REVISIONS` (the revisions the statements were written and tested
against) and only where the installed MLflow has the ORM models named above
(:func:`sweeps.compat.mlflow_sql_tables`); anywhere else (another MLflow schema, MySQL, an HTTP
tracking server) it returns None and the tracker uses MLflow's client, the public API. Another schema
or MLflow (not MySQL, not a server) is logged as a WARNING, once: every trial is then about 10x
slower to track.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from sweeps import compat
from sweeps.stores import read_only_connection, require_sqlite_file, scheme, sqlite_engine, sqlite_path

_log = logging.getLogger("sweeps.bulk_writer")

__all__ = ["BulkWriter", "SUPPORTED_SCHEMES", "sanitize"]

#: Database kinds (URI schemes without the ``+driver``) the bulk statements are written for.
SUPPORTED_SCHEMES = ("sqlite", "postgresql", "postgres")
#: How MLflow stores +-inf (SQL has no infinity): the largest finite float64.
MAX_FLOAT = 1.7976931348623157e308
#: SQLite busy timeout in seconds (MLflow's store sets ``PRAGMA busy_timeout = 20000``).
SQLITE_BUSY_TIMEOUT_S = 20.0


def sanitize(value: float) -> tuple[bool, float]:
    """``(is_nan, stored value)`` of a metric value, MLflow's rule: NaN -> ``(True, 0)``, +-inf -> +-MAX_FLOAT."""
    if math.isnan(value):
        return True, 0.0
    if math.isinf(value):
        return False, MAX_FLOAT if value > 0 else -MAX_FLOAT
    return False, float(value)


class BulkWriter:
    """Writes a run's metrics, params, tags and end straight into the tracking database (module docstring)."""

    def __init__(self, engine: Any, kind: str, tables: dict[str, Any] | None = None) -> None:
        tables = tables or compat.mlflow_sql_tables()
        if tables is None:
            raise RuntimeError("the installed MLflow's ORM models are unavailable (sweeps.compat.mlflow_sql_tables)")
        self._engine = engine
        self._kind = kind
        self._metrics = tables["SqlMetric"]
        self._latest = tables["SqlLatestMetric"]
        self._runs = tables["SqlRun"]
        self._params = tables["SqlParam"]
        self._tags = tables["SqlTag"]
        if kind == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        self._insert = insert

    @classmethod
    def for_uri(cls, tracking_uri: str) -> "BulkWriter | None":
        """A writer for ``tracking_uri``, or None where the bulk path does not apply (use ``log_batch``)."""
        kind = scheme(tracking_uri)
        if kind not in SUPPORTED_SCHEMES:
            return None
        try:
            require_sqlite_file(tracking_uri)  # an in-memory store is private to MLflow's own engine
            with read_only_connection(tracking_uri) as conn:  # the revision is read without a write lock
                revision = compat.schema_revision(conn)
            if not compat.schema_supported(revision, "bulk writer", "bulk writes are off, runs are written through "
                                           "MlflowClient (about 10x slower per trial)"):
                return None
            tables = compat.mlflow_sql_tables()
            if tables is None:  # logged by compat
                return None
            engine = _engine(tracking_uri, kind)
        except Exception as err:  # noqa: BLE001 - no bulk path, the public API still works
            _log.info("bulk writes off for %s (%s: %s)", tracking_uri, type(err).__name__, err)
            return None
        return cls(engine, "sqlite" if kind == "sqlite" else "postgresql", tables)

    @staticmethod
    def handles(tags: Any) -> bool:
        """Whether these tag keys may be written here (not ``mlflow.*``: MLflow's client treats those)."""
        return not any(str(k).startswith("mlflow.") for k in tags)

    def write(self, run_id: str, metrics: Sequence[Any] = (), *, params: Sequence[Any] = (),
              tags: Sequence[Any] = (), status: str | None = None, end_time: int | None = None) -> None:
        """Store ``metrics`` (``mlflow.entities.Metric``), ``params`` (``Param``), ``tags`` (``RunTag``) and, with
        ``status``, the run's end (``end_time`` in ms, default now) in one transaction, as MLflow's client would.
        Raises ``MlflowException`` for a missing or deleted run, a changed param or an ``mlflow.*`` tag."""
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST

        if not self.handles(t.key for t in tags):
            raise MlflowException("mlflow.* tags go through MlflowClient", INVALID_PARAMETER_VALUE)
        rows = []
        latest: dict[str, dict[str, Any]] = {}
        for m in metrics:
            is_nan, value = sanitize(float(m.value))
            row = {"run_uuid": run_id, "key": m.key, "value": value, "timestamp": int(m.timestamp),
                   "step": int(m.step or 0), "is_nan": is_nan}
            rows.append(row)
            old = latest.get(m.key)
            if old is None or (row["step"], row["timestamp"], row["value"]) > (old["step"], old["timestamp"],
                                                                                 old["value"]):
                latest[m.key] = row
        import sqlalchemy as sa

        with self._engine.begin() as conn:
            stage = conn.execute(sa.select(self._runs.c.lifecycle_stage)
                                 .where(self._runs.c.run_uuid == run_id)).scalar_one_or_none()
            if stage != "active":
                if stage is None:
                    raise MlflowException(f"Run with id={run_id} not found", RESOURCE_DOES_NOT_EXIST)
                raise MlflowException(f"The run {run_id} must be in the 'active' state. Current state is {stage}.",
                                      INVALID_PARAMETER_VALUE)
            if params:
                self._write_params(conn, run_id, params)
            if rows:
                self._write_metrics(conn, run_id, rows, latest)
            if tags:
                values = {t.key: t.value for t in tags}  # the last value of a key wins, as with set_tag
                stmt = self._insert(self._tags)
                conn.execute(stmt.on_conflict_do_update(index_elements=[self._tags.c.key, self._tags.c.run_uuid],
                                                        set_={"value": stmt.excluded.value}),
                             [{"run_uuid": run_id, "key": k, "value": v} for k, v in values.items()])
            if status is not None:
                import time

                conn.execute(self._runs.update().where(self._runs.c.run_uuid == run_id).values(
                    status=status, end_time=int(time.time() * 1000) if end_time is None else int(end_time)))

    def _write_params(self, conn: Any, run_id: str, params: Sequence[Any]) -> None:
        import sqlalchemy as sa
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        pt = self._params
        stored = dict(conn.execute(sa.select(pt.c.key, pt.c.value).where(pt.c.run_uuid == run_id)).all())
        new: dict[str, str] = {}
        changed = []
        for p in params:
            old = stored.get(p.key, new.get(p.key))
            if old is None:
                new[p.key] = str(p.value)
            elif old != str(p.value):
                changed.append({"key": p.key, "old_value": old, "new_value": str(p.value)})
        if changed:
            raise MlflowException(f"Changing param values is not allowed. Params were already logged='{changed}' "
                                  f"for run ID='{run_id}'.", INVALID_PARAMETER_VALUE)
        if new:
            conn.execute(sa.insert(pt), [{"run_uuid": run_id, "key": k, "value": v} for k, v in new.items()])

    def _write_metrics(self, conn: Any, run_id: str, rows: list[dict[str, Any]],
                       latest: dict[str, dict[str, Any]]) -> None:
        import sqlalchemy as sa

        conn.execute(self._insert(self._metrics).on_conflict_do_nothing(), rows)
        lt = self._latest
        stored = {r.key: r for r in conn.execute(
            sa.select(lt.c.key, lt.c.value, lt.c.timestamp, lt.c.step)
            .where(lt.c.run_uuid == run_id, lt.c.key.in_(sorted(latest))))}
        new = [row for key, row in latest.items() if key not in stored]
        newer = [row for key, row in latest.items() if key in stored
                 and (row["step"], row["timestamp"], row["value"]) > (stored[key].step, stored[key].timestamp or 0,
                                                                      stored[key].value)]
        if new:
            conn.execute(sa.insert(lt), new)
        if newer:
            conn.execute(lt.update().where(lt.c.run_uuid == sa.bindparam("b_run"), lt.c.key == sa.bindparam("b_key"))
                         .values(value=sa.bindparam("value"), timestamp=sa.bindparam("timestamp"),
                                 step=sa.bindparam("step"), is_nan=sa.bindparam("is_nan")),
                         [{"b_run": r["run_uuid"], "b_key": r["key"], "value": r["value"],
                           "timestamp": r["timestamp"], "step": r["step"], "is_nan": r["is_nan"]} for r in newer])

    def close(self) -> None:
        self._engine.dispose()


def _engine(uri: str, kind: str) -> Any:
    """A SQLAlchemy engine for the bulk writes (SQLite: ``BEGIN IMMEDIATE`` transactions, no pool)."""
    if kind == "sqlite":
        return sqlite_engine(sqlite_path(uri) or "", pragma="PRAGMA foreign_keys = ON", begin="BEGIN IMMEDIATE",
                             timeout=SQLITE_BUSY_TIMEOUT_S)  # BEGIN IMMEDIATE: the write lock at once
    import sqlalchemy as sa

    return sa.create_engine(uri, pool_pre_ping=True, pool_size=1, max_overflow=0)  # one connection a tracker
