"""Where studies and runs live: the Optuna storage and the MLflow tracking location.

Precedence, highest first:

* Optuna storage: ``--storage`` flag > ``SWEEPS_STORAGE`` env > ``study.storage`` in the
  sweep YAML > ``sqlite:///optuna.db`` (in the working directory).
* MLflow: ``--tracking-uri`` flag > ``MLFLOW_TRACKING_URI`` env > ``tracking_uri`` in
  ``mlflow.yml`` > ``sqlite:///mlflow.db`` (in the working directory). ``mlflow.yml`` also
  sets ``experiment_prefix`` (default ``sweeps/``: the study ``digits`` logs to the
  experiment ``sweeps/digits``), ``artifact_location`` (default: MLflow's own,
  ``./mlruns`` for a local store), ``flush_interval_s`` (metrics are sent to MLflow at most this
  often per run; default 1.0) and ``trial_artifacts`` (``complete``: network files for every trial
  with a network, loss and layer-norm PNGs for completed trials (default); ``all``: PNGs for pruned
  trials too; ``none``).

Optuna storage URLs: any SQLAlchemy URL (``sqlite:///optuna.db``,
``postgresql+psycopg2://user@host/db``) opens an ``RDBStorage`` with a heartbeat, so a
killed worker's trial is failed (and its MLflow run closed) when a worker next asks
for a trial; a path ending in ``.log`` / ``.journal`` or ``journal:///path`` opens a
``JournalStorage`` file (no heartbeat); ``redis://`` a Redis journal.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEFAULT_STORAGE = "sqlite:///optuna.db"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_PREFIX = "sweeps/"
MLFLOW_YML = "mlflow.yml"
TRIAL_ARTIFACTS = ("complete", "all", "none")

#: Seconds between a running trial's heartbeats, and after which a silent trial is failed.
HEARTBEAT_INTERVAL = 10
HEARTBEAT_GRACE = 60

#: Bounded retries against a tracking server (MLflow's defaults block ~4 min per call).
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


@dataclass(frozen=True)
class Locations:
    """Resolved locations for one sweep (plain strings: they travel to worker processes)."""

    storage: str
    tracking_uri: str
    experiment_prefix: str = DEFAULT_PREFIX
    artifact_location: str | None = None
    flush_interval_s: float = 1.0
    trial_artifacts: str = "complete"

    def experiment_name(self, study_name: str) -> str:
        return f"{self.experiment_prefix}{study_name}"


def read_mlflow_yml(path: str | Path | None = None) -> dict[str, Any]:
    """Read ``mlflow.yml`` (``tracking_uri``, ``experiment_prefix``, ``artifact_location``); {} if absent."""
    p = Path(path) if path is not None else Path(MLFLOW_YML)
    if not p.is_file():
        if path is not None:
            raise ValueError(f"mlflow config {p} does not exist")
        return {}
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{p}: the top level must be a mapping, got {type(data).__name__}")
    allowed = {"tracking_uri", "experiment_prefix", "artifact_location", "flush_interval_s", "trial_artifacts"}
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"{p}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    interval = data.get("flush_interval_s", 1.0)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 <= interval < 3600:
        raise ValueError(f"{p}: flush_interval_s must be a number of seconds in [0, 3600), got {interval!r}")
    if data.get("trial_artifacts", "complete") not in TRIAL_ARTIFACTS:
        raise ValueError(f"{p}: trial_artifacts must be one of {list(TRIAL_ARTIFACTS)}, "
                         f"got {data['trial_artifacts']!r}")
    return data


def resolve_locations(
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    config_storage: str | None = None,
    mlflow_yml: str | Path | None = None,
) -> Locations:
    """Apply the precedence rules in the module docstring."""
    yml = read_mlflow_yml(mlflow_yml)
    return Locations(
        storage=storage or os.environ.get("SWEEPS_STORAGE") or config_storage or DEFAULT_STORAGE,
        tracking_uri=tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or yml.get("tracking_uri")
        or DEFAULT_TRACKING_URI,
        experiment_prefix=yml.get("experiment_prefix", DEFAULT_PREFIX),
        artifact_location=yml.get("artifact_location"),
        flush_interval_s=float(yml.get("flush_interval_s", 1.0)),
        trial_artifacts=yml.get("trial_artifacts", "complete"),
    )


def open_storage(url: str, *, heartbeat: bool = True) -> Any:
    """Open an Optuna storage for ``url`` with the settings that make it safe for several workers."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend, JournalRedisBackend

    if url.startswith("journal://"):
        return JournalStorage(JournalFileBackend(url[len("journal://"):]))
    if url.endswith((".log", ".journal")) and "://" not in url:
        return JournalStorage(JournalFileBackend(url))
    if url.startswith("redis://"):
        return JournalStorage(JournalRedisBackend(url))
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 30}}
    elif url.startswith(("postgresql", "mysql")):
        engine_kwargs = {"pool_pre_ping": True}
    kwargs: dict[str, Any] = {"engine_kwargs": engine_kwargs}
    if heartbeat:
        kwargs.update(heartbeat_interval=HEARTBEAT_INTERVAL, grace_period=HEARTBEAT_GRACE)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
            return (_sqlite_storage_class() if url.startswith("sqlite") else RDBStorage)(url, **kwargs)
    except Exception as err:  # noqa: BLE001 - re-raised with the URL named
        raise ValueError(f"cannot open Optuna storage {url!r}: {err}") from err


_IMMEDIATE = threading.local()


def _sqlite_storage_class() -> type:
    """An ``RDBStorage`` whose trial state changes run in a ``BEGIN IMMEDIATE`` transaction on SQLite.

    Optuna hands out an enqueued trial by reading it ``WAITING`` (``SELECT ... FOR UPDATE``) and
    setting it ``RUNNING``. SQLite ignores ``FOR UPDATE`` and pysqlite begins the transaction only at
    the ``UPDATE``, so two workers could both read ``WAITING`` and run the same trial twice (the
    second ``tell`` then fails: "Cannot tell a COMPLETE trial"). Taking SQLite's write lock before
    that read makes the check-and-set atomic. Only state changes do it (they write anyway), so reads
    elsewhere keep running beside a writer. PostgreSQL honours ``FOR UPDATE`` and the journal
    storages lock their file or key: they need nothing of this.
    """
    from optuna.storages import RDBStorage
    from sqlalchemy import event

    def _begin(conn: Any) -> None:
        if getattr(_IMMEDIATE, "on", False):
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # pysqlite sees the open transaction and adds none

    class SQLiteRDBStorage(RDBStorage):
        def __init__(self, url: str, **kwargs: Any) -> None:
            super().__init__(url, **kwargs)
            event.listen(self.engine, "begin", _begin)

        def set_trial_state_values(self, trial_id: int, state: Any, values: Any = None) -> bool:
            _IMMEDIATE.on = True
            try:
                return super().set_trial_state_values(trial_id, state, values)
            finally:
                _IMMEDIATE.on = False

    return SQLiteRDBStorage


def bound_mlflow_http_retries() -> None:
    """Set bounded MLflow HTTP retry/timeout defaults unless the user set them; quiet MLflow's INFO logs."""
    for key, value in MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


class TrackingUnavailable(OSError):
    """The MLflow tracking server does not answer."""


def check_tracking_server(tracking_uri: str, timeout: float = 5.0) -> None:
    """For an ``http(s)://`` tracking URI, require ``GET /health`` to answer before anything is created."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            if resp.status == 200:
                return
            detail = f"HTTP {resp.status}"
    except urllib.error.HTTPError as err:
        detail = f"HTTP {err.code}"
    except (OSError, ValueError) as err:
        detail = str(getattr(err, "reason", err))
    raise TrackingUnavailable(f"the MLflow tracking server {tracking_uri} does not answer ({url}: {detail}); "
                              f"start it, or pass --tracking-uri / set MLFLOW_TRACKING_URI")
