"""Where the two stores live and how their databases are reached: the study's Optuna storage URL and MLflow's
tracking URI, resolved once into :class:`Locations`; ``mlflow.yml``; URL schemes and SQLite files; pool-less
SQLite engines and read-only connections; MLflow's bounded HTTP settings; the tracking server's health check.

Everything here is shared by the writers (:mod:`sweeps.study`, :mod:`sweeps.tracking`) and the readers
(:mod:`sweeps.query`), which never import each other.

Precedence, highest first:

* Optuna storage: ``--storage`` flag > ``SWEEPS_STORAGE`` env > ``study.storage`` in the
  sweep YAML > ``sqlite:///optuna.db`` (in the working directory).
* MLflow: ``--tracking-uri`` flag > ``MLFLOW_TRACKING_URI`` env > ``tracking_uri`` in
  ``mlflow.yml`` > ``sqlite:///mlflow.db`` (in the working directory). ``mlflow.yml`` also
  sets ``experiment_prefix`` (default ``sweeps/``: the study ``digits`` logs to the
  experiment ``sweeps/digits``), ``artifact_location`` (default: MLflow's own,
  ``./mlruns`` for a local store), ``flush_interval_s`` (metrics are sent to MLflow at most this
  often per run; default 1.0) and ``trial_artifacts`` (``best``, the default: network files and
  ``diagnosis.json`` for every trial with a network, and the loss and layer-norm PNGs of the study's
  best trial, drawn by the launcher at the end (:mod:`sweeps.report.trial_plots`; ``sweeps plots`` draws more
  on demand); ``complete``: PNGs for every completed trial, drawn by the workers; ``all``: for pruned
  trials too; ``none``: no artifacts).

Optuna storage URLs (opened by :func:`sweeps.study.storage.open_storage`): any SQLAlchemy URL
(``sqlite:///optuna.db``, ``postgresql+psycopg2://user@host/db``) opens an ``RDBStorage`` with a heartbeat,
so a killed worker's trial is failed (and its MLflow run closed) when a worker next asks for a trial; a
path ending in ``.log`` / ``.journal`` or ``journal:///path`` opens a ``JournalStorage`` file (no
heartbeat); ``redis://`` a Redis journal.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from sweeps.names import EXPERIMENT_PREFIX

DEFAULT_STORAGE = "sqlite:///optuna.db"


DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


#: The default ``experiment_prefix`` (defined in :mod:`sweeps.names`).
DEFAULT_PREFIX = EXPERIMENT_PREFIX


MLFLOW_YML = "mlflow.yml"


TRIAL_ARTIFACTS = ("best", "complete", "all", "none")

#: How :mod:`sweeps.query` reads histories (its ``METHODS``, the CLI's ``--method``): ``auto`` picks one of
#: the backends that follow (``sweeps.query.READERS``) by the tracking URI's scheme.
HISTORY_METHODS = ("auto", "sql", "http", "api")

#: The defaults of the other ``mlflow.yml`` keys (the module docstring; ``docs/configuration.md``).
FLUSH_INTERVAL_S = 1.0
DEFAULT_TRIAL_ARTIFACTS = "best"
REQUEST_TIMEOUT_S = 10.0
TRACKING_OUTAGE_S = 300.0
#: Seconds a new PostgreSQL connection may take (libpq's ``connect_timeout``) unless the URL sets one: a host that
#: does not answer (a firewall that drops packets) fails after this, instead of the operating system's minutes.
CONNECT_TIMEOUT_S = 10


#: MLflow HTTP settings for the launcher's own calls (prepare, repair, the parent run); workers
#: send with no MLflow-side retry (the tracker retries, see :mod:`sweeps.tracking.tracker`). MLflow's own
#: defaults block ~4 minutes per call against a dead server and ~20 against a hung one.
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # an int for MLflow
}


@dataclass(frozen=True)
class Locations:
    """Resolved locations for one sweep (plain strings: they travel to worker processes)."""

    storage: str
    tracking_uri: str
    experiment_prefix: str = DEFAULT_PREFIX
    artifact_location: str | None = None
    flush_interval_s: float = FLUSH_INTERVAL_S
    trial_artifacts: str = DEFAULT_TRIAL_ARTIFACTS
    request_timeout_s: float = REQUEST_TIMEOUT_S
    tracking_outage_s: float = TRACKING_OUTAGE_S

    def experiment_name(self, study_name: str) -> str:
        return f"{self.experiment_prefix}{study_name}"


#: The keys ``mlflow.yml`` may hold: the fields of :class:`Locations` but ``storage``.
MLFLOW_YML_KEYS = tuple(f.name for f in fields(Locations) if f.name != "storage")


def read_mlflow_yml(path: str | Path | None = None) -> dict[str, Any]:
    """Read ``mlflow.yml`` (``tracking_uri``, ``experiment_prefix``, ``artifact_location``); {} if absent."""
    p = Path(path) if path is not None else Path(MLFLOW_YML)
    if not p.is_file():
        if path is not None:
            raise ValueError(f"mlflow config {p} does not exist")
        return {}
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read mlflow config {p}: {getattr(err, 'strerror', None) or err}") from None
    except yaml.YAMLError as err:
        from sweeps.config import _yaml_problem

        raise ValueError(f"invalid YAML in {p}: {_yaml_problem(err)}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{p}: the top level must be a mapping, got {type(data).__name__}")
    allowed = set(MLFLOW_YML_KEYS)
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"{p}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    interval = data.get("flush_interval_s", FLUSH_INTERVAL_S)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 <= interval < 3600:
        raise ValueError(f"{p}: flush_interval_s must be a number of seconds in [0, 3600), got {interval!r}")
    for key, low, high in (("request_timeout_s", 0.1, 3600), ("tracking_outage_s", 0, 7 * 86400)):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not low <= value <= high):
            raise ValueError(f"{p}: {key} must be a number of seconds in [{low}, {high}], got {value!r}")
    if data.get("trial_artifacts", DEFAULT_TRIAL_ARTIFACTS) not in TRIAL_ARTIFACTS:
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
    """Apply the precedence rules in the module docstring (a key absent from ``mlflow.yml``: the
    default of its :class:`Locations` field)."""
    yml = read_mlflow_yml(mlflow_yml)
    seconds = ("flush_interval_s", "request_timeout_s", "tracking_outage_s")
    settings = {key: float(yml[key]) if key in seconds else yml[key]
                for key in MLFLOW_YML_KEYS if key != "tracking_uri" and key in yml}
    return Locations(
        storage=storage or os.environ.get("SWEEPS_STORAGE") or config_storage or DEFAULT_STORAGE,
        tracking_uri=tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or yml.get("tracking_uri")
        or DEFAULT_TRACKING_URI,
        **settings,
    )


def experiment_prefix(mlflow_yml: str | Path | None = None) -> str:
    """The ``experiment_prefix`` the CLI uses: ``mlflow.yml``'s (the file ``mlflow_yml``, else
    ``./mlflow.yml`` when present), else :data:`DEFAULT_PREFIX`."""
    return resolve_locations(mlflow_yml=mlflow_yml).experiment_prefix


def _mlflow_http_values(request_timeout_s: float, worker: bool) -> dict[str, str]:
    # MLflow reads its timeout as whole seconds (an int): a fraction is rounded up, at least 1 s
    values = dict(MLFLOW_HTTP_DEFAULTS, MLFLOW_HTTP_REQUEST_TIMEOUT=str(max(1, math.ceil(request_timeout_s))))
    values = {k: os.environ.get(k, v) for k, v in values.items()}  # the user's settings win
    if worker:  # the tracker retries, with its own back-off, without blocking training
        values["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        # MLflow prints a "View run" line per ended run: one per trial, in every worker
        values["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = os.environ.get("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT",
                                                                         "true")
    return values


def bound_mlflow_http_retries(request_timeout_s: float = REQUEST_TIMEOUT_S, *, worker: bool = False) -> None:
    """Bound MLflow's HTTP retries and timeout for the whole process (unless the user set them).

    For worker processes, which are ours: MLflow reads these only from the environment.
    ``worker``: no MLflow-side retries at all (also when the launcher set some), since the worker's
    tracker retries on its own schedule. Library callers use :func:`mlflow_http_settings`.
    """
    os.environ.update(_mlflow_http_values(request_timeout_s, worker))


@contextlib.contextmanager
def mlflow_http_settings(request_timeout_s: float = REQUEST_TIMEOUT_S) -> Iterator[None]:
    """Bounded MLflow HTTP retries and timeout inside the block; the environment is restored after it.

    MLflow's defaults block ~4 minutes per call against a dead server and ~20 against a hung one.
    Processes started inside the block (the workers) inherit the settings.
    """
    saved = set_environment(_mlflow_http_values(request_timeout_s, worker=False))
    try:
        yield
    finally:
        restore_environment(saved)


def set_environment(values: dict[str, str]) -> dict[str, str | None]:
    """Set ``values`` in ``os.environ``; return what they replaced (None: unset) for :func:`restore_environment`."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    return saved


def restore_environment(saved: dict[str, str | None]) -> None:
    """Put back what :func:`set_environment` replaced (unsetting what was unset)."""
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


class TrackingUnavailable(OSError):
    """The MLflow tracking server does not answer."""


#: MLflow's error codes for an HTTP 401 (no or wrong credentials) and 403 (a user without the permission).
REFUSED_CODES = ("UNAUTHENTICATED", "PERMISSION_DENIED")


def refused_credentials(err: BaseException | None) -> bool:
    """Whether ``err`` (or an exception it was raised from) is the tracking server refusing the request's
    credentials: HTTP 401 or 403, MLflow's ``UNAUTHENTICATED`` / ``PERMISSION_DENIED``. Another try cannot
    cure it: it is never retried as an outage."""
    seen = 0
    while err is not None and seen < 5:
        if getattr(err, "error_code", None) in REFUSED_CODES:
            return True
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status in (401, 403):
            return True
        err = err.__cause__ or err.__context__
        seen += 1
    return False


def refused_message(tracking_uri: str, err: BaseException | None = None, environ: Any = None) -> str:
    """The one line for a refused credential: which variable to set (a 401), or which user lacks a permission
    (a 403). Names the tracking URI with its password masked, never a password."""
    from sweeps.redaction import redact_url

    env = os.environ if environ is None else environ
    user = env.get("MLFLOW_TRACKING_USERNAME")
    where = f"the MLflow tracking server {redact_url(tracking_uri)}"
    if getattr(err, "error_code", None) == "PERMISSION_DENIED" \
            or getattr(getattr(err, "response", None), "status_code", None) == 403:
        return (f"{where} refused user {user!r} the permission it needs (HTTP 403): ask its admin to grant it, "
                f"or set MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD to a user that has it")
    from sweeps.redaction import url_password

    if not user and url_password(tracking_uri):
        return f"{where} refused the credentials in the tracking URI (HTTP 401): check the user and password there"
    if env.get("MLFLOW_TRACKING_TOKEN"):
        return f"{where} refused the token in MLFLOW_TRACKING_TOKEN (HTTP 401): set a valid one"
    if not user:
        return (f"{where} asks for credentials (HTTP 401): set MLFLOW_TRACKING_USERNAME and "
                f"MLFLOW_TRACKING_PASSWORD")
    return (f"{where} refused the password of MLFLOW_TRACKING_USERNAME={user!r} (HTTP 401): check "
            f"MLFLOW_TRACKING_PASSWORD")


def check_tracking_server(tracking_uri: str, timeout: float = 5.0) -> None:
    """For an ``http(s)://`` tracking URI, require ``GET /health`` to answer before anything is created."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(tracking_uri.rstrip("/"))  # /health needs no credentials: none in the request's URL
    url = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1])) + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            if resp.status == 200:
                return
            detail = f"HTTP {resp.status}"
    except urllib.error.HTTPError as err:
        detail = f"HTTP {err.code}"
    except (OSError, ValueError) as err:
        detail = str(getattr(err, "reason", err))
    from sweeps.redaction import redact

    raise TrackingUnavailable(f"the MLflow tracking server {redact(tracking_uri)} does not answer ({redact(url)}: "
                              f"{redact(detail)}); "
                              f"start it, or pass --tracking-uri / set MLFLOW_TRACKING_URI")


#: URI schemes (before any ``+driver``) of MLflow's database stores.
DB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mssql")


def scheme(uri: str) -> str:
    """``sqlite`` for ``sqlite:///...``, ``postgresql`` for ``postgresql+psycopg2://``, ..."""
    if "://" not in uri:
        return ""
    return uri.split("://", 1)[0].split("+", 1)[0].lower()


def sqlite_path(uri: str) -> str | None:
    """The database file of a ``sqlite:///PATH`` URI (None for in-memory)."""
    rest = uri.split("://", 1)[1]
    path = (rest[1:] if rest.startswith("/") else rest).split("?", 1)[0]
    return None if path in ("", ":memory:") else path


def require_sqlite_file(uri: str) -> None:
    """Refuse to read a SQLite store that does not exist (MLflow would create one)."""
    if scheme(uri) == "sqlite":
        path = sqlite_path(uri)
        if path is None or not Path(path).is_file():
            raise FileNotFoundError(f"no MLflow SQLite database at {uri!r}")  # a SQLite URI holds no password


class NotATrackingStore(OSError):
    """The database holds no MLflow tracking store (a wrong URI), or is no database at all: nothing is read, nothing
    is created."""


#: The tracking URI schemes MLflow's client opens (besides those of installed ``mlflow.tracking_store`` plugins):
#: a directory (no scheme, ``file``), a database (:data:`DB_SCHEMES`), a server, Databricks.
TRACKING_SCHEMES = ("", "file", "http", "https", *DB_SCHEMES, "databricks", "databricks-uc", "uc")


def check_tracking_scheme(tracking_uri: str) -> None:
    """``ValueError`` naming the URI (password masked) and the schemes MLflow opens, for a scheme it does not."""
    kind = scheme(tracking_uri)
    if kind in TRACKING_SCHEMES:
        return
    from importlib.metadata import entry_points

    if kind in {ep.name for ep in entry_points(group="mlflow.tracking_store")}:
        return
    from sweeps.redaction import redact_url

    raise ValueError(f"unsupported tracking URI {redact_url(tracking_uri)!r} (scheme {kind!r}): give one of "
                     f"{', '.join(s + '://' for s in TRACKING_SCHEMES if s)} or a directory")


def require_tracking_store(tracking_uri: str, *, reader: bool = True) -> None:
    """Refuse a database tracking URI that MLflow's client would create or change, or could not open.

    ``reader`` (the reading commands, ``sweeps ui``): a SQLite file that does not exist is refused
    (``FileNotFoundError``) and so is a database without MLflow's tables (:class:`NotATrackingStore`: MLflow's
    client would create its tables in it). Always: a SQLite file that is not a database
    (:class:`NotATrackingStore`), a database that cannot be reached (:class:`TrackingUnavailable`). Checked on a
    read-only connection (:func:`read_only_connection`); URIs of servers and directories are not checked here.
    """
    from sweeps.redaction import first_line, redact_url

    kind = scheme(tracking_uri)
    if kind not in DB_SCHEMES:
        return
    if kind == "sqlite":
        path = sqlite_path(tracking_uri)
        if path is None or not Path(path).is_file():
            if not reader:
                return  # MLflow creates it
            raise FileNotFoundError(f"no MLflow SQLite database at {tracking_uri!r} (the file {path or ':memory:'} "
                                    f"does not exist); give --tracking-uri or MLFLOW_TRACKING_URI, or run from the "
                                    f"directory where 'sweeps run' created it")
    elif not reader:
        return  # a server database: the writers open it themselves (and create MLflow's tables in a new one)
    from sqlalchemy import exc as sa_exc

    from sweeps import compat

    try:
        with read_only_connection(tracking_uri) as conn:
            revision = compat.schema_revision(conn)
    except sa_exc.SQLAlchemyError as err:
        text = first_line(err.orig if isinstance(err, sa_exc.DBAPIError) else err)
        if "file is not a database" in text:
            raise NotATrackingStore(f"{redact_url(tracking_uri)} is not an MLflow tracking database ({text}): "
                                    f"give the tracking URI of the sweep's MLflow store") from err
        raise TrackingUnavailable(f"cannot read the MLflow tracking database {redact_url(tracking_uri)}: "
                                  f"{text}") from err
    if revision is None and reader:  # MLflow's client would create its tables in it
        raise NotATrackingStore(f"{redact_url(tracking_uri)} is not an MLflow tracking database (it has no MLflow "
                                f"tables): give the tracking URI of the sweep's MLflow store")


def sqlite_engine(database: str, *, pragma: str, begin: str, uri: bool = False, timeout: float = 5.0) -> Any:
    """A SQLAlchemy engine over pysqlite, without a pool, whose transactions start with ``begin``
    (``BEGIN``, ``BEGIN IMMEDIATE``) and whose connections run ``pragma`` first.

    SQLAlchemy's recipe for pysqlite transactions: ``isolation_level=None`` so that the driver
    emits no BEGIN of its own, and a ``begin`` listener that emits ours. ``uri``: ``database`` is a
    ``file:`` URI (``?mode=ro``); ``timeout``: the busy timeout in seconds.
    """
    import sqlite3

    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    def connect() -> sqlite3.Connection:
        con = sqlite3.connect(database, uri=uri, timeout=timeout, isolation_level=None, check_same_thread=False)
        con.execute(pragma)
        return con

    engine = sa.create_engine("sqlite://", creator=connect, poolclass=NullPool)
    sa.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql(begin))
    return engine


@contextlib.contextmanager
def read_only_connection(uri: str) -> Iterator[Any]:
    """A SQLAlchemy connection inside one read-only transaction, rolled back at the end."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    kind = scheme(uri)
    if kind == "sqlite":
        target = "file:" + quote(os.path.abspath(sqlite_path(uri) or ""), safe="/") + "?mode=ro"
        engine = sqlite_engine(target, uri=True, pragma="PRAGMA query_only = 1", begin="BEGIN")
        options: dict[str, Any] = {}
    elif kind in ("postgresql", "postgres"):
        # libpq waits for a host that does not answer as long as the operating system does: give up sooner
        connect = {} if "connect_timeout=" in uri else {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
        engine = sa.create_engine(uri, poolclass=NullPool, **connect)
        options = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
    else:
        engine = sa.create_engine(uri, poolclass=NullPool)
        options = {}
    try:
        with engine.connect() as conn:
            if options:
                conn = conn.execution_options(**options)
            tx = conn.begin()
            try:
                yield conn
            finally:
                tx.rollback()
    finally:
        engine.dispose()


def is_journal(url: str) -> bool:
    """Whether ``url`` names an Optuna journal storage: ``journal:///path``, a path ending in ``.log`` /
    ``.journal``, or ``redis://`` (every other URL is a SQLAlchemy database URL)."""
    return url.startswith(("journal://", "redis://")) or ("://" not in url and url.endswith((".log", ".journal")))


def journal_storage(url: str) -> Any:
    """The Optuna ``JournalStorage`` of a journal URL (:func:`is_journal`): a file, or a Redis journal."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalRedisBackend

    if url.startswith("redis://"):
        return JournalStorage(JournalRedisBackend(url))
    return JournalStorage(JournalFileBackend(url[len("journal://"):] if url.startswith("journal://") else url))
