"""The study's Optuna storage, opened so that many workers can share it: heartbeats, retried transient
database errors, SQLite's write lock taken for trial state changes, SQLite in WAL mode.

Which URL opens which storage: :mod:`sweeps.stores`.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import warnings
from typing import Any

from sweeps import compat, names
from sweeps.redaction import first_line, redact_url
from sweeps.stores import CONNECT_TIMEOUT_S, is_journal, journal_storage

_log = logging.getLogger("sweeps.storage")

#: Default seconds between a running trial's heartbeats, and after which a silent trial is failed
#: (YAML ``study.heartbeat_interval`` / ``study.heartbeat_grace``). Heartbeats come from a thread,
#: not from epochs, so multi-minute epochs need no longer values; the grace is how long a lost
#: worker's trial waits before it is failed and retried.
from sweeps.config import HEARTBEAT_GRACE, HEARTBEAT_INTERVAL  # noqa: E402 - defined with the YAML fields


def idle_in_transaction_timeout(heartbeat_interval: float) -> float:
    """Seconds after which PostgreSQL ends a sweeps connection idle inside a transaction: max(5, interval).

    A worker stopped (SIGSTOP, a suspended laptop) in the middle of a storage call keeps its
    transaction and its row locks: inserting an intermediate value locks the trial's row (FOR KEY
    SHARE), and the repair that fails the stale trial (``SELECT ... FOR UPDATE``) would wait for
    it until the worker wakes up. No sweeps transaction waits on Python work for seconds, so the
    server may end such a session (its transaction rolls back; the woken worker's storage call fails
    transiently and is retried, see :class:`RetryingRDBStorage`). Set through the connection's
    ``options`` unless the URL sets ``options`` itself.
    """
    return max(5.0, float(heartbeat_interval))


#: Connections one process holds to the study's database (PostgreSQL, MySQL): one. The storage's calls are
#: serialized within the process (a worker's loop and its heartbeat thread take turns on one lock; every
#: transaction is short), so one connection serves them all. The connection budget of a fleet is then one
#: per worker and one per launcher (docs/deployment.md, "Connection budget").
POOL_SIZE = 1
#: One more connection may open while the storage is being opened (Optuna's schema and version checks hold one
#: connection while they open a second); it is closed at once, and the overflow is then closed for good
#: (:func:`sweeps.compat.close_pool_overflow`): from then on the process never holds more than one.
POOL_OVERFLOW = 1
#: Seconds a call waits for the process's connection; past that it fails transiently and is retried.
POOL_TIMEOUT_S = 30.0


def application_name(role: str) -> str:
    """``sweeps <role> <host>:<pid>``: how a connection introduces itself to PostgreSQL (``pg_stat_activity``
    shows who holds which connection; PgBouncer passes it on). At most 63 characters, PostgreSQL's limit."""
    return f"sweeps {role} {names.worker_name()}"[:63]


def open_storage(url: str, *, heartbeat: bool = True, heartbeat_interval: int = HEARTBEAT_INTERVAL,
                 heartbeat_grace: int = HEARTBEAT_GRACE, stale_trial_callback: Any = None,
                 role: str = "client", schema_checked: bool = False, reader: bool = False) -> Any:
    """Open an Optuna storage for ``url`` with the settings that make it safe for several workers.

    RDB storages (SQLite, PostgreSQL, MySQL) get Optuna's heartbeat (``heartbeat_interval`` and
    ``heartbeat_grace`` seconds; a RUNNING trial without a heartbeat for longer than the grace is
    failed by :func:`optuna.storages.fail_stale_trials`, which then calls ``stale_trial_callback``)
    and retry transient database errors (see :class:`RetryingRDBStorage`). PostgreSQL connections
    end a transaction left idle for :func:`idle_in_transaction_timeout` seconds (a stopped worker's
    locks would otherwise block the repair of its trial).

    ``schema_checked``: this machine's launcher opened the storage already, creating Optuna's tables and checking
    their version against this Optuna (a worker): the storage opens without doing it again (Optuna's own
    ``skip_table_creation`` and ``skip_compatibility_check``), on one connection; the check nests a second.

    Server databases (PostgreSQL, MySQL): the process holds :data:`POOL_SIZE` connection (its threads take
    turns on the storage's ``call_lock``; :data:`POOL_OVERFLOW`), checked before use (``pool_pre_ping``); PostgreSQL
    connections carry ``application_name`` = :func:`application_name` of ``role`` (``worker``, ``launcher``,
    ...). Through PgBouncer in transaction mode this works as is (no prepared statements, no session state
    between transactions; PgBouncer must ignore the ``options`` startup parameter: docs/deployment.md).
    A PostgreSQL connection gives up after :data:`CONNECT_TIMEOUT_S` (libpq's ``connect_timeout``) unless the
    URL sets one.

    ``reader`` (the reading commands): opening is retried :data:`READER_RETRIES` times, not
    :data:`STORAGE_RETRIES` (~20 s), and Optuna's tables are not created: a database without them is
    refused as not a study database, and a SQLite file keeps its journal mode: nothing is written. A database that
    refuses the login, or does not exist, is not retried. Failing: :class:`StorageUnavailable` (the database failed, an ``OSError``) or ``ValueError``
    (the URL is not one Optuna can open); both name the URL with its password masked.
    """
    import optuna

    if is_journal(url):
        return journal_storage(url)
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 30}}
    elif url.startswith(("postgresql", "mysql")):
        engine_kwargs = {"pool_pre_ping": True, "pool_size": POOL_SIZE, "max_overflow": POOL_OVERFLOW,
                         "pool_timeout": POOL_TIMEOUT_S}
        if url.startswith("postgresql"):
            connect_args: dict[str, Any] = {}
            if "application_name=" not in url:
                connect_args["application_name"] = application_name(role)
            if "options=" not in url:
                ms = int(1000 * idle_in_transaction_timeout(heartbeat_interval))
                connect_args["options"] = f"-c idle_in_transaction_session_timeout={ms}"
            if "connect_timeout=" not in url:
                connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
            engine_kwargs["connect_args"] = connect_args
    kwargs: dict[str, Any] = {"engine_kwargs": engine_kwargs}
    if reader:
        kwargs.update(skip_table_creation=True)
    if schema_checked:
        kwargs.update(skip_table_creation=True, skip_compatibility_check=True)
        if "max_overflow" in engine_kwargs:
            engine_kwargs["max_overflow"] = 0  # nothing nests a second connection now
    if heartbeat:
        kwargs.update(heartbeat_interval=heartbeat_interval, grace_period=heartbeat_grace,
                      heartbeat_stale_trial_callback=stale_trial_callback)
    if url.startswith("sqlite"):
        sqlite_journal()  # a bad $SWEEPS_SQLITE_JOURNAL is refused before anything is opened
    # A reader changes no trial state and leaves a SQLite file's journal mode as it is (no switch to WAL: the file is
    # not modified).
    cls = _sqlite_storage_class() if url.startswith("sqlite") and not reader else _retrying_storage_class()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
            storage = with_retries(lambda: _create(cls, url, kwargs), what=f"opening {redact_url(url)}",
                                   retries=READER_RETRIES if reader else STORAGE_RETRIES)
    except StorageUnavailable:
        raise
    except Exception as err:  # noqa: BLE001 - re-raised with the URL named
        from sqlalchemy import exc as sa_exc

        if reader and _no_table(err):
            raise StorageUnavailable(f"{redact_url(url)} is not an Optuna study database (it has no Optuna tables: "
                                     f"{_first_line(err)})") from err
        if isinstance(err, sa_exc.DBAPIError) or isinstance(err.__cause__, sa_exc.DBAPIError):
            raise StorageUnavailable(f"cannot open the Optuna storage {redact_url(url)}: "
                                     f"{_first_line(err)}") from err
        raise ValueError(f"cannot open Optuna storage {redact_url(url)!r}: {_first_line(err)}") from err
    if "max_overflow" in engine_kwargs:
        compat.close_pool_overflow(storage)  # open: from now on one connection, never two
    return storage


def _no_table(err: BaseException) -> bool:
    text = f"{err} {err.__cause__ or ''}".lower()
    return "no such table" in text or ("relation" in text and "does not exist" in text)


def _create(cls: type, url: str, kwargs: dict[str, Any], attempts: int = 5) -> Any:
    """``cls(url, **kwargs)``; on a fresh database two processes can race to create Optuna's schema
    (PostgreSQL: "duplicate key value violates unique constraint pg_type_typname_nsp_index"): the
    loser tries again and finds the schema there."""
    from sqlalchemy import exc as sa_exc

    for attempt in range(attempts):
        try:
            return cls(url, **kwargs)
        except (sa_exc.IntegrityError, sa_exc.ProgrammingError) as err:
            if attempt == attempts - 1 or not ("already exists" in str(err) or "duplicate key" in str(err)):
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


class StorageUnavailable(OSError):
    """The study's storage kept failing with transient errors for the whole retry budget."""


#: Transient storage errors are retried this many times, waiting 0.1, 0.2, 0.4, ... (at most
#: ``STORAGE_MAX_DELAY``) seconds between tries: about 20 s in all before :class:`StorageUnavailable`.
STORAGE_RETRIES = 9
#: ... and this many times when a reading command opens the storage (about 0.3 s in all).
READER_RETRIES = 2
STORAGE_MAX_DELAY = 5.0
#: A database that refuses a connection because it has none left (PostgreSQL's ``max_connections``,
#: PgBouncer's ``max_client_conn``) is not down: it is full. A worker then waits and tries again, every
#: ``STORAGE_MAX_DELAY`` s at most, for up to this many seconds before :class:`StorageUnavailable` (others
#: finish and free theirs; a worker never quits a study with work left because the database was full).
STORAGE_FULL_WAIT_S = 600.0
#: What PostgreSQL and PgBouncer say when they have no connection left.
FULL_MESSAGES = ("too many clients", "remaining connection slots are reserved", "no more connections allowed",
                 "too many connections")


def is_transient(err: BaseException) -> bool:
    """A dropped or refused database connection, a lock timeout: worth another try.

    RDBStorage wraps SQLAlchemy errors in ``StorageInternalError``; what counts is the cause:
    ``OperationalError`` / ``InterfaceError`` (the server closed the connection, terminated the
    backend, is restarting, or SQLite is locked) or any DBAPI error that invalidated the connection.
    An ``IntegrityError`` or a bad value is not transient.
    """
    from sqlalchemy import exc as sa_exc

    if is_permanent(err):
        return False
    seen = 0
    while err is not None and seen < 5:
        if isinstance(err, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
            return True  # TimeoutError: the process's connection stayed busy for POOL_TIMEOUT_S
        if isinstance(err, sa_exc.DBAPIError) and err.connection_invalidated:
            return True
        if isinstance(err, sa_exc.IntegrityError):
            return False
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
        seen += 1
    return False


#: What a database says when no retry can cure it: it refuses the login, has no such database, role or table
#: (not a study database), or the file is not a database at all.
PERMANENT_MESSAGES = ("password authentication failed", "no password supplied", "does not exist",
                      "pg_hba.conf", "authentication failed", "no such table", "file is not a database")


def is_permanent(err: BaseException) -> bool:
    """The database refused the login, lacks the database, role or tables, or is not a database."""
    text = " ".join(str(e) for e in (err, err.__cause__, err.__context__) if e is not None).lower()
    return any(message in text for message in PERMANENT_MESSAGES)


def is_full(err: BaseException) -> bool:
    """The database refused a connection because it has none left (:data:`FULL_MESSAGES`)."""
    text = " ".join(str(e) for e in (err, err.__cause__, err.__context__) if e is not None).lower()
    return any(message in text for message in FULL_MESSAGES)


def with_retries(call: Any, *, what: str, retries: int = STORAGE_RETRIES, sleep: Any = time.sleep,
                 full_wait_s: float = STORAGE_FULL_WAIT_S, clock: Any = time.monotonic) -> Any:
    """``call()``, retried on transient storage errors with exponential back-off; a full database (no
    connection left) is waited for up to ``full_wait_s`` seconds without using up the ``retries``."""
    delay = 0.1
    attempt = 0
    full_since: float | None = None
    while True:
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - filtered just below
            if not is_transient(err):
                raise
            if is_full(err):
                full_since = clock() if full_since is None else full_since
                if clock() - full_since < full_wait_s:
                    _log.warning("the study's database has no connection left (%s); waiting %.1f s: %s", what,
                                 delay, _first_line(err))
                    sleep(delay)
                    delay = min(delay * 2, STORAGE_MAX_DELAY)
                    continue
            attempt += 1
            if attempt > retries:
                raise StorageUnavailable(f"the study's storage failed {retries + 1} times in a row ({what}): "
                                         f"{_first_line(err)}") from err
            _log.log(logging.WARNING if attempt >= 3 else logging.DEBUG,  # one dropped connection is routine
                     "storage error (%s), try %d of %d in %.1f s: %s", what, attempt, retries + 1, delay,
                     _first_line(err))
            sleep(delay)
            delay = min(delay * 2, STORAGE_MAX_DELAY)


def _first_line(err: BaseException) -> str:
    """The one line of a storage error, masked: its cause's (Optuna wraps SQLAlchemy's errors)."""
    return first_line(err.__cause__ or err)


#: The ``BaseStorage`` / ``BaseHeartbeat`` methods that talk to the database (all retried), and the private
#: ones Optuna's _CachedStorage (which wraps every RDBStorage a study uses) calls on its backend
#: (:data:`sweeps.compat.CACHED_BACKEND_METHODS`; a name this Optuna lacks is logged, see
#: :func:`sweeps.compat.retried_storage_methods`).
_RETRIED_METHODS = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_trial_user_attrs", "get_trial_system_attrs", "get_all_studies", "create_new_trial", "set_trial_param",
    "get_trial_param", "set_trial_state_values", "set_trial_intermediate_value", "set_trial_user_attr",
    "set_trial_system_attr", "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials",
    "get_best_trial", "record_heartbeat",
) + compat.CACHED_BACKEND_METHODS


def _retrying(name: str, method: Any) -> Any:
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self.call_lock:  # one call at a time per process: one connection serves its threads
            return with_retries(lambda: method(self, *args, **kwargs), what=name)

    return wrapper


def _init_with_lock(init: Any) -> Any:
    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        #: Held by every storage call (reentrant: Optuna's cache calls the backend inside a call); code that uses
        #: the storage's session directly takes it too (:mod:`sweeps.engine.reports`).
        self.call_lock = threading.RLock()
        try:
            init(self, *args, **kwargs)
        except BaseException:
            engine = getattr(self, "engine", None)  # a failed opening (the database is full, a dropped
            if engine is not None:                  # connection) closes what it opened before it is retried
                engine.dispose()
            raise

    return __init__


@functools.lru_cache(maxsize=None)
def _retrying_storage_class() -> type:
    """``RDBStorage`` whose database calls are retried on transient errors (:func:`with_retries`).

    A dropped connection (a restarted or failed-over PostgreSQL, a terminated backend, a network
    blip) otherwise raises out of ``study.ask``/``tell``/``report`` and kills the worker.
    ``pool_pre_ping`` replaces connections that died while idle; this covers the ones that die
    during a call. Retrying a write whose commit reached the server but whose answer was lost is
    safe for state changes (the worker reads the outcome back) and, for trial creation, can leave
    one orphan RUNNING trial, which the repair pass fails and retries (:mod:`sweeps.study.lost`).
    """
    from optuna.storages import RDBStorage

    methods = {name: _retrying(name, getattr(RDBStorage, name))
               for name in compat.retried_storage_methods(RDBStorage, _RETRIED_METHODS)}
    methods["__init__"] = _init_with_lock(RDBStorage.__init__)
    return type("RetryingRDBStorage", (RDBStorage,), methods)


_IMMEDIATE = threading.local()

#: SQLite study databases run in write-ahead-log mode (readers never wait for the writer, one fsync
#: per commit) with ``synchronous=NORMAL`` (no fsync per commit; checkpoints still sync): a commit
#: took ~1.9 ms in the default rollback journal, ~0.7 ms so (measured: ``trial.report`` on this
#: machine), and a sweep makes a few dozen per trial (reports, heartbeats, attributes, ask, tell).
#: A killed process loses nothing committed; an operating-system crash or power cut can undo the
#: last transactions (SQLite's documented trade-off for WAL + NORMAL).
SQLITE_JOURNAL_MODE = "WAL"
SQLITE_SYNCHRONOUS = "NORMAL"
#: The environment variable that chooses the SQLite study database's journal, and its values: ``wal`` (the
#: default, above) or ``delete`` (SQLite's default rollback journal with ``synchronous=FULL``: for a database on
#: a network file system, where SQLite's WAL mode does not work; a database in WAL mode is switched back).
SQLITE_JOURNAL_ENV = "SWEEPS_SQLITE_JOURNAL"
SQLITE_JOURNALS = ("wal", "delete")


def sqlite_journal() -> str:
    """The SQLite study journal chosen by ``$SWEEPS_SQLITE_JOURNAL`` (default ``wal``); a bad value is refused."""
    value = os.environ.get(SQLITE_JOURNAL_ENV, "wal").strip().lower() or "wal"
    if value not in SQLITE_JOURNALS:
        raise ValueError(f"{SQLITE_JOURNAL_ENV} must be one of {', '.join(SQLITE_JOURNALS)}; "
                         f"got {os.environ.get(SQLITE_JOURNAL_ENV)!r}")
    return value


@functools.lru_cache(maxsize=None)
def _sqlite_storage_class() -> type:
    """A retrying ``RDBStorage`` whose trial state changes run in a ``BEGIN IMMEDIATE`` transaction on SQLite.

    Optuna hands out an enqueued trial by reading it ``WAITING`` (``SELECT ... FOR UPDATE``) and
    setting it ``RUNNING``. SQLite ignores ``FOR UPDATE`` and pysqlite begins the transaction only at
    the ``UPDATE``, so two workers could both read ``WAITING`` and run the same trial twice (the
    second ``tell`` then fails: "Cannot tell a COMPLETE trial"). Taking SQLite's write lock before
    that read makes the check-and-set atomic. Only state changes do it (they write anyway), so reads
    elsewhere keep running beside a writer. PostgreSQL honours ``FOR UPDATE`` and the journal
    storages lock their file or key: they need nothing of this.

    A database file is switched to WAL mode and its connections use ``synchronous=NORMAL``
    (:data:`SQLITE_JOURNAL_MODE`, :data:`SQLITE_SYNCHRONOUS`), unless ``$SWEEPS_SQLITE_JOURNAL`` is ``delete``.
    """
    from sqlalchemy import event
    from sqlalchemy import exc as sa_exc

    def _begin(conn: Any) -> None:
        if getattr(_IMMEDIATE, "on", False):
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # pysqlite sees the open transaction and adds none

    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}")

    base = _retrying_storage_class()

    class SQLiteRDBStorage(base):  # type: ignore[valid-type, misc]
        def __init__(self, url: str, **kwargs: Any) -> None:
            super().__init__(url, **kwargs)
            engine = compat.rdb_engine(self)
            if engine is None:  # another Optuna: no hooks (logged)
                return
            event.listen(engine, "begin", _begin)
            if engine.url.database not in (None, "", ":memory:"):
                wal = sqlite_journal() == "wal"
                mode = SQLITE_JOURNAL_MODE if wal else "DELETE"
                engine.dispose()  # its own pooled connections would count as others when leaving WAL
                try:
                    with engine.connect() as conn:  # persistent: the file stays in this mode
                        conn.exec_driver_sql("PRAGMA busy_timeout=1000")  # not the 30 s of a busy store
                        conn.exec_driver_sql(f"PRAGMA journal_mode={mode}")
                except sa_exc.OperationalError as err:  # leaving WAL needs the only connection to the file
                    _log.warning("the study database %s keeps its journal mode (%s while another process has it "
                                 "open: %s)", engine.url.database, mode, err.orig)
                if wal:
                    event.listen(engine, "connect", _connect)
                engine.dispose()  # no connection keeps the short busy timeout; new ones get the listener

        def set_trial_state_values(self, trial_id: int, state: Any, values: Any = None) -> bool:
            _IMMEDIATE.on = True
            try:
                return super().set_trial_state_values(trial_id, state, values)
            finally:
                _IMMEDIATE.on = False

    return SQLiteRDBStorage


