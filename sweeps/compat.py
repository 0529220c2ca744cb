"""Every use of an Optuna or MLflow internal, in one place.

Optuna and MLflow change their internals (underscored names, module paths, attributes their docs
tell users not to touch, side effects) without notice. Whatever sweeps relies on beyond their public
API goes through one function or constant here, with the versions it was checked on and a fallback
that keeps sweeps correct when the installed version lacks it (slower, or with a feature off). The
first time in a process that a fallback is taken, :func:`fallback_taken` logs a WARNING (logger
``sweeps.compat``) naming the internal and the consequence. ``tests/sweeps/test_compat.py`` runs
each internal on the installed versions, so an upgrade that breaks one turns the tests red instead
of falling back silently, and forces each fallback.

Checked on Optuna 5.1.0 and MLflow 3.17.2 (:data:`OPTUNA_CHECKED`, :data:`MLFLOW_CHECKED`).

+-------------------------------------------+-----------------------+---------------+----------------------------------+
| Internal (compat's name for it)           | Used by               | Checked on    | Fallback (WARNING once a         |
|                                           |                       |               | process)                         |
+===========================================+=======================+===============+==================================+
| ``RDBStorage`` methods retried by name,   | study/storage         | Optuna 5.1.0  | a missing name is not wrapped:   |
| among them the private ones Optuna's      |                       |               | that call is not retried on a    |
| ``_CachedStorage`` calls on its backend   |                       |               | dropped connection               |
| (:data:`CACHED_BACKEND_METHODS`,          |                       |               |                                  |
| :func:`retried_storage_methods`)          |                       |               |                                  |
+-------------------------------------------+-----------------------+---------------+----------------------------------+
| ``RDBStorage.engine``, its SQLAlchemy     | study/storage:        | Optuna 5.1.0  | no hooks: trial state changes    |
| engine (:func:`rdb_engine`)               | SQLite's ``BEGIN      |               | without ``BEGIN IMMEDIATE`` (two |
|                                           | IMMEDIATE``, WAL mode |               | workers may take one enqueued    |
|                                           |                       |               | trial, the second ``tell``       |
|                                           |                       |               | fails); no WAL                   |
+-------------------------------------------+-----------------------+---------------+----------------------------------+
| ``optuna.storages._rdb``: ``models``,     | engine/reports        | Optuna 5.1.0; | one public                       |
| ``_create_scoped_session``;               |                       | guard: major  | ``set_trial_intermediate_value`` |
| ``RDBStorage.scoped_session``             |                       | 5             | per value (a transaction each);  |
| (:func:`rdb_intermediate_values_writer`)  |                       |               | a failure at write time is       |
|                                           |                       |               | rolled back and switches to it   |
+-------------------------------------------+-----------------------+---------------+----------------------------------+
| ``optuna.Study`` over a stand-in storage  | engine/pruning        | Optuna 5.1.0  | the pruner asks the study        |
| (passed through by ``get_storage``, kept  |                       |               | itself: a study read per         |
| as ``Study._storage``, read by            |                       |               | decision, as                     |
| ``get_trials``; :func:`snapshot_study`)   |                       |               | ``trial.should_prune()`` does    |
+-------------------------------------------+-----------------------+---------------+----------------------------------+
| ``optuna.Trial(study, trial_id)``         | study/claims          | Optuna 5.1.0  | none (no public way to build the |
| ("direct use not recommended";            |                       |               | trial of a claimed id): another  |
| :func:`new_trial`)                        |                       |               | signature raises                 |
|                                           |                       |               | :class:`InternalUnavailable`     |
+-------------------------------------------+-----------------------+---------------+----------------------------------+
| ``study.get_trials()`` refreshes the      | study/claims          | Optuna 5.1.0  | the claimed trials are built on  |
| trials Optuna's ``_CachedStorage`` knows  |                       |               | an uncached twin of the study    |
| (a side effect;                           |                       |               | (their storage calls go to the   |
| :func:`refresh_trial_cache`)              |                       |               | database)                        |
+-------------------------------------------+-----------------------+---------------+----------------------------------+
| MLflow's SQL store, ``sqlalchemy_store``  | engine/worker         | MLflow 3.17.2 | no pre-import: the first         |
| of ``mlflow.store.tracking``, imported    |                       |               | tracking call pays the ~0.6 s    |
| ahead of use                              |                       |               | import                           |
| (:func:`preimport_mlflow_sql_store`)      |                       |               |                                  |
+-------------------------------------------+-----------------------+---------------+----------------------------------+
| MLflow's ORM models, their ``__table__``: | tracking/bulk_writer, | MLflow 3.17.2 | bulk writer off (runs go through |
| ``mlflow.store.tracking.dbmodels.models`` | query/database        |               | ``MlflowClient``); the ``"sql"`` |
| (:func:`mlflow_sql_tables`)               |                       |               | reader is ``Unsupported``        |
|                                           |                       |               | (``MlflowClient`` reads)         |
+-------------------------------------------+-----------------------+---------------+----------------------------------+
| MLflow's database schema, its Alembic     | tracking/bulk_writer, | MLflow 3.17.2 | as the row above, for a database |
| revision (:data:`SCHEMA_REVISIONS`,       | query/database        | (its head,    | at another revision (bulk writer |
| :func:`schema_supported`)                 |                       | dc11669786a5) | off: ~10x slower tracking per    |
|                                           |                       |               | trial)                           |
+-------------------------------------------+-----------------------+---------------+----------------------------------+
| ``get_default_host_creds`` of             | query/rest            | MLflow        | the credentials of the store     |
| ``mlflow.utils.credentials``              |                       | 3.17.2;       | ``MlflowClient`` talks to (next  |
| (:func:`default_host_creds`)              |                       | guard: 3.x    | row)                             |
+-------------------------------------------+-----------------------+---------------+----------------------------------+
| ``get_host_creds`` of                     | query/rest            | MLflow 3.17.2 | none left: ``Unsupported``, the  |
| ``MlflowClient._tracking_client.store``   |                       |               | ``"http"`` reader falls back to  |
| (:func:`client_store_host_creds`)         |                       |               | the per-run API                  |
+-------------------------------------------+-----------------------+---------------+----------------------------------+
| ``mlflow.utils.rest_utils``:              | query/rest            | MLflow 3.17.2 | ``Unsupported``: the ``"http"``  |
| ``http_request``,                         |                       |               | reader falls back to the per-run |
| ``verify_rest_response``                  |                       |               | API                              |
| (:func:`mlflow_rest_helpers`)             |                       |               |                                  |
+-------------------------------------------+-----------------------+---------------+----------------------------------+
| SQLAlchemy ``QueuePool``'s overflow limit | study/storage         | SQLAlchemy    | the overflow of one stays (a     |
| (``_max_overflow``), closed once the      |                       | 2.0           | process may hold a second        |
| storage is open (:func:`close_pool_       |                       |               | connection for a moment)         |
| overflow`)                                |                       |               |                                  |
+-------------------------------------------+-----------------------+---------------+----------------------------------+

Version guards besides the tests: the batch writer only runs on the Optuna majors of
:data:`BATCH_OPTUNA_MAJORS`, MLflow's default host credentials only on the MLflow versions of
:data:`CREDS_VERIFIED`; both log the WARNING elsewhere.

Not here: the tracking *server's* bulk route (``query/rest.py``: a property of the server, not of the
installed MLflow; a server without it answers 404 and the reader falls back to the per-run API).

This module imports nothing from ``sweeps`` (the foundation of the package's layering) and imports
Optuna and MLflow inside its functions only (MLflow's import alone costs ~0.8 s).
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

_log = logging.getLogger("sweeps.compat")

#: The versions every internal below was checked on (the tests run them on the installed ones).
OPTUNA_CHECKED = "5.1.0"
MLFLOW_CHECKED = "3.17.2"

_LOCK = threading.Lock()
_WARNED: set[str] = set()  # internals whose fallback was announced in this process
_BROKEN: set[str] = set()  # internals that failed at use in this process: their fallback from now on


class InternalUnavailable(RuntimeError):
    """An internal is missing or failed when used (the installed version changed it)."""


def fallback_taken(name: str, detail: str) -> bool:
    """Log a WARNING that the fallback of internal ``name`` is taken (``detail``: why, and what it costs),
    the first time only in this process. Returns whether it was logged now."""
    with _LOCK:
        if name in _WARNED:
            return False
        _WARNED.add(name)
    _log.warning("%s: %s (an Optuna/MLflow internal that sweeps/compat.py checked on Optuna %s, MLflow %s)",
                 name, detail, OPTUNA_CHECKED, MLFLOW_CHECKED)
    return True


def _mark_broken(name: str, detail: str) -> None:
    with _LOCK:
        _BROKEN.add(name)
    fallback_taken(name, detail)


def _is_broken(name: str) -> bool:
    with _LOCK:
        return name in _BROKEN


def _optuna_version() -> str:
    import optuna

    return optuna.__version__


# ------------------------------------------------------------------------------------------ Optuna

#: The private ``RDBStorage`` methods that Optuna's ``_CachedStorage`` (which wraps every
#: ``RDBStorage`` a study uses) calls on its backend, and the heartbeat's: retried by name as well.
CACHED_BACKEND_METHODS = ("_get_stale_trial_ids", "_create_new_trial", "_get_best_trial_id", "_get_trials",
                          "_set_trial_param")


def retried_storage_methods(cls: type, names: Iterable[str]) -> list[str]:
    """The names of ``names`` that ``cls`` (Optuna's ``RDBStorage``) has, to be wrapped by name; each missing
    one (renamed by another Optuna) logs the WARNING: calls to it are not retried."""
    present = []
    for name in names:
        if callable(getattr(cls, name, None)):
            present.append(name)
        else:
            fallback_taken(f"optuna.storages.{cls.__name__}.{name}",
                           f"Optuna {_optuna_version()} has no such method: the storage calls it stood for are not "
                           f"retried on transient database errors")
    return present


#: The ``RDBStorage`` attribute holding its SQLAlchemy engine.
RDB_ENGINE_ATTR = "engine"


def rdb_engine(storage: Any) -> Any | None:
    """The SQLAlchemy engine of an ``RDBStorage`` (to hook SQLite's ``BEGIN IMMEDIATE`` and WAL mode), or None
    with the WARNING where this Optuna keeps it elsewhere."""
    from sqlalchemy.engine import Engine

    engine = getattr(storage, RDB_ENGINE_ATTR, None)
    if isinstance(engine, Engine):
        return engine
    fallback_taken(f"optuna.storages.RDBStorage.{RDB_ENGINE_ATTR}",
                   f"Optuna {_optuna_version()}'s RDBStorage has no SQLAlchemy engine there: SQLite trial state "
                   f"changes run without BEGIN IMMEDIATE (two workers may take the same enqueued trial; the second "
                   f"tell fails) and the study database keeps its journal mode (no WAL)")
    return None


#: SQLAlchemy's ``QueuePool`` keeps its overflow limit here (SQLAlchemy 2.0; no public setter).
POOL_OVERFLOW_ATTR = "_max_overflow"


def close_pool_overflow(storage: Any) -> bool:
    """Allow the storage's connection pool no overflow from now on: the process then never holds more than the
    pool's size (one). Called once an ``RDBStorage`` is open: its own opening (schema and version checks) holds
    one connection while it opens a second, so it needs an overflow of one for that moment only.

    Fallback (WARNING once): the overflow stays; a process may hold a second connection for a moment when one
    of Optuna's calls nests another (none does on Optuna 5.1 once the storage is open; tested).
    """
    engine = rdb_engine(storage)
    pool = getattr(engine, "pool", None)
    if pool is not None and isinstance(getattr(pool, POOL_OVERFLOW_ATTR, None), int):
        setattr(pool, POOL_OVERFLOW_ATTR, 0)
        return True
    fallback_taken(f"sqlalchemy QueuePool.{POOL_OVERFLOW_ATTR}",
                   "the study storage's pool keeps its overflow of one: a process may hold two database "
                   "connections for a moment (docs/deployment.md, \"Connection budget\")")
    return False


#: Optuna major versions whose RDB internals :func:`rdb_intermediate_values_writer` was tested against.
BATCH_OPTUNA_MAJORS = ("5",)
_BATCH = "optuna.storages._rdb (batched intermediate values)"

Writer = Callable[[list[tuple[int, int, float]]], dict[int, Exception]]


def rdb_intermediate_values_writer(storage: Any) -> Writer | None:
    """One-transaction writer of many intermediate values for an ``RDBStorage``, or None (use the public
    ``storage.set_trial_intermediate_value`` per value).

    None without a word for other storages (journal files, in memory: there is nothing to batch); None with
    the WARNING on an Optuna major not in :data:`BATCH_OPTUNA_MAJORS`, or whose RDB models or session
    helper moved. The writer writes the rows ``RDBStorage.set_trial_intermediate_value`` writes (its ORM
    models and stored representation) with two queries per trial instead of two per value: the trial
    (refused unless it is still running, as Optuna refuses it) and its rows at those steps (updated in
    place; new steps inserted). It returns ``{trial_id: error}`` for refused trials; the others' values
    are committed. Should an internal fail inside it (``AttributeError``, ``TypeError``: another
    Optuna), the transaction is rolled back, it raises :class:`InternalUnavailable` after the WARNING,
    and this function returns None from then on in this process.
    """
    from optuna.storages import RDBStorage

    if not isinstance(storage, RDBStorage) or _is_broken(_BATCH):
        return None
    version = _optuna_version()
    if version.split(".")[0] not in BATCH_OPTUNA_MAJORS:
        fallback_taken(_BATCH, f"not tested on Optuna {version} (majors {', '.join(BATCH_OPTUNA_MAJORS)}): "
                               f"intermediate values are written one transaction per value")
        return None
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        value_model, trial_model = models.TrialIntermediateValueModel, models.TrialModel
    except (ImportError, AttributeError) as err:
        _mark_broken(_BATCH, f"Optuna {version} moved them ({type(err).__name__}: {err}): intermediate values are "
                             f"written one transaction per value")
        return None

    def write(items: list[tuple[int, int, float]]) -> dict[int, Exception]:
        try:
            return _write_intermediate_values(storage, items, models=(trial_model, value_model),
                                              session=_create_scoped_session)
        except (AttributeError, TypeError) as err:  # rolled back by the session helper
            _mark_broken(_BATCH, f"failed on Optuna {version} ({type(err).__name__}: {err}): intermediate values "
                                 f"are written one transaction per value")
            raise InternalUnavailable(f"{_BATCH}: {type(err).__name__}: {err}") from err

    return write


def _write_intermediate_values(storage: Any, items: list[tuple[int, int, float]], *, models: tuple[Any, Any],
                               session: Any) -> dict[int, Exception]:
    import optuna

    trial_model, value_model = models
    by_trial: dict[int, dict[int, float]] = {}
    for trial_id, step, value in items:  # a step reported twice keeps its last value, as the storage does
        by_trial.setdefault(trial_id, {})[step] = value
    refused: dict[int, Exception] = {}
    with session(storage.scoped_session, True) as s:
        for trial_id, steps in by_trial.items():
            trial = trial_model.find_or_raise_by_id(trial_id, s)
            try:
                storage.check_trial_is_updatable(trial_id, trial.state)
            except optuna.exceptions.UpdateFinishedTrialError as error:
                refused[trial_id] = error
                continue
            rows = {row.step: row for row in s.query(value_model).filter(
                value_model.trial_id == trial_id, value_model.step.in_(list(steps)))}
            for step, value in steps.items():
                stored, kind = value_model.intermediate_value_to_stored_repr(value)
                row = rows.get(step)
                if row is None:
                    s.add(value_model(trial_id=trial_id, step=step, intermediate_value=stored,
                                      intermediate_value_type=kind))
                else:
                    row.intermediate_value, row.intermediate_value_type = stored, kind
    return refused


def snapshot_study(study_name: str, storage: Any, sampler: Any, pruner: Any) -> Any | None:
    """``optuna.Study`` over ``storage``, a stand-in object that serves the storage calls a pruner makes
    (``sweeps.engine.pruning``), or None with the WARNING where this Optuna would not read it through
    ``storage`` itself (it wraps or refuses the object, or ``get_trials`` no longer reads
    ``storage.get_all_trials``): the pruner then asks the study itself."""
    import optuna

    name = "optuna.Study over a stand-in storage"
    why = None
    try:
        view = optuna.Study(study_name, storage=storage, sampler=sampler, pruner=pruner)
        if getattr(view, "_storage", None) is not storage:
            why = "the study does not keep the stand-in as its storage"
        elif not _reads_through(view, storage):
            why = "study.get_trials() does not read storage.get_all_trials()"
    except (AttributeError, TypeError, ValueError) as err:
        why = f"{type(err).__name__}: {err}"
    if why is None:
        return view
    fallback_taken(name, f"Optuna {optuna.__version__}: {why}: a population's pruner reads the study for each "
                         f"decision (one read per member per epoch)")
    return None


def _reads_through(view: Any, storage: Any) -> bool:
    """Whether ``view.get_trials()`` reads ``storage.get_all_trials`` (one probe, served by the stand-in)."""
    calls: list[int] = []
    real = storage.get_all_trials
    storage.get_all_trials = lambda *a, **k: (calls.append(1), real(*a, **k))[1]
    try:
        view.get_trials(deepcopy=False)
    finally:
        del storage.get_all_trials
    return bool(calls)


@functools.cache
def _trial_signature_ok() -> bool:
    import optuna

    try:
        return list(inspect.signature(optuna.Trial).parameters)[:2] == ["study", "trial_id"]
    except (AttributeError, TypeError, ValueError):
        return False


def new_trial(study: Any, trial_id: int) -> Any:
    """``optuna.Trial(study, trial_id)``, as ``study.ask()`` builds the trial it took (it calls the sampler's
    ``before_trial``). No fallback: Optuna offers no other way to build the trial of a claimed id; on an
    Optuna whose ``Trial`` takes other arguments this raises :class:`InternalUnavailable`."""
    import optuna

    if not _trial_signature_ok():
        raise InternalUnavailable(f"optuna.Trial(study, trial_id) is not available on Optuna {optuna.__version__}: "
                                  f"sweeps cannot build the trials it claims (sweeps/compat.py, checked on "
                                  f"Optuna {OPTUNA_CHECKED})")
    return optuna.Trial(study, trial_id)


class _Uncached:
    """A storage passed to ``optuna.Study`` as is (not an ``RDBStorage``: no cache in front of it)."""

    def __init__(self, backing: Any) -> None:
        self.backing = backing

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backing, name)


def refresh_trial_cache(study: Any, storage: Any, numbers: Iterable[int]) -> Any:
    """Make the trials ``numbers``, just set RUNNING through ``storage`` (not through the study), known to the
    study's cache of its storage; the study to build those trials on.

    Optuna's ``_CachedStorage`` only accepts writes (``suggest_*``) for trials it has read, and it reads the
    study's unfinished trials again on ``study.get_trials()`` (a side effect). Where that read does not show
    them (another Optuna), the WARNING is logged and an uncached twin of the study over ``storage`` is
    returned: the trials built on it read and write the database directly (slower, the same rows).
    """
    from optuna.trial import TrialState

    wanted = set(numbers)
    if not wanted:
        return study
    seen = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    if wanted <= seen:
        return study
    seen = {t.number for t in study.get_trials(deepcopy=False)}  # finished meanwhile by another process?
    if wanted <= seen:
        return study
    import optuna

    fallback_taken("optuna _CachedStorage refresh by study.get_trials()",
                   f"Optuna {optuna.__version__} does not show trials {sorted(wanted - seen)} just claimed: they "
                   f"are built on an uncached twin of the study (their storage calls go to the database)")
    return optuna.Study(study.study_name, storage=_Uncached(storage), sampler=study.sampler, pruner=study.pruner)


# ------------------------------------------------------------------------------------------ MLflow

def mlflow_version() -> tuple[int, int]:
    """(major, minor) of the installed MLflow (``"4.0rc1"`` -> ``(4, 0)``)."""
    import mlflow

    numbers = [int(m.group()) if (m := re.match(r"\d+", part)) else 0 for part in mlflow.__version__.split(".")[:2]]
    return tuple((numbers + [0, 0])[:2])  # type: ignore[return-value]


#: The module the worker imports ahead of time (MLflow's SQL tracking store).
MLFLOW_SQL_STORE_MODULE = "mlflow.store.tracking.sqlalchemy_store"


def preimport_mlflow_sql_store() -> bool:
    """Import MLflow's SQL tracking store now (~0.6 s, while the launcher prepares); False with the WARNING
    where this MLflow keeps it elsewhere (it is then imported when first used, wherever it is)."""
    import importlib

    try:
        importlib.import_module(MLFLOW_SQL_STORE_MODULE)
        return True
    except ImportError as err:
        fallback_taken(MLFLOW_SQL_STORE_MODULE, f"not importable ({err}): no pre-import, the worker's first "
                                                f"tracking call pays MLflow's store import")
        return False


#: The module of MLflow's ORM models, and the models whose tables sweeps reads and writes.
MLFLOW_MODELS_MODULE = "mlflow.store.tracking.dbmodels.models"
MLFLOW_SQL_MODELS = ("SqlExperiment", "SqlRun", "SqlTag", "SqlMetric", "SqlLatestMetric", "SqlParam")


def mlflow_sql_tables() -> dict[str, Any] | None:
    """``{model name: its SQLAlchemy Table}`` for :data:`MLFLOW_SQL_MODELS` (the installed MLflow's table and
    column names, without configuring the ORM mappers), or None with the WARNING where this MLflow has
    moved them: the bulk writer is then off and the ``"sql"`` reader unsupported (both use ``MlflowClient``)."""
    import importlib

    try:
        module = importlib.import_module(MLFLOW_MODELS_MODULE)
        return {name: getattr(module, name).__table__ for name in MLFLOW_SQL_MODELS}
    except (ImportError, AttributeError) as err:
        fallback_taken(MLFLOW_MODELS_MODULE, f"{type(err).__name__}: {err}: bulk writes to the tracking database "
                                             f"are off and the \"sql\" history reader is unsupported (both go "
                                             f"through MlflowClient)")
        return None


#: Alembic revisions of MLflow's tracking schema the queries here were written and tested
#: against: the head of MLflow 3.17.2 (``mlflow.store.db.utils._get_latest_schema_revision()``).
SCHEMA_REVISIONS = frozenset({"dc11669786a5"})


def schema_revision(conn: Any) -> str | None:
    """The database's Alembic revision (None: no ``alembic_version`` table); several heads
    are joined by ``+``."""
    from alembic.runtime.migration import MigrationContext

    heads = MigrationContext.configure(conn).get_current_heads()
    return "+".join(sorted(heads)) if heads else None


def schema_supported(revision: str | None, user: str, consequence: str) -> bool:
    """Whether ``revision`` is one of :data:`SCHEMA_REVISIONS`; if not, the WARNING (once per ``user``) names
    it and ``consequence``."""
    if revision in SCHEMA_REVISIONS:
        return True
    fallback_taken(f"MLflow database schema ({user})",
                   f"the tracking database is at schema revision {revision!r}, not one of "
                   f"{', '.join(sorted(SCHEMA_REVISIONS))} (MLflow {MLFLOW_CHECKED}): {consequence}")
    return False


#: MLflow versions whose ``mlflow.utils.credentials.get_default_host_creds`` is known to build
#: the same credentials as the tracking client's REST store for an http(s) URI (checked on
#: 3.17.2), as ``[low, high)`` of ``(major, minor)``.
CREDS_VERIFIED = ((3, 0), (4, 0))
_CREDS = "mlflow.utils.credentials.get_default_host_creds"


def default_host_creds(uri: str) -> Any | None:
    """``get_default_host_creds(uri)`` (what MLflow's tracking REST store is built with for http(s) URIs) on
    the MLflow versions of :data:`CREDS_VERIFIED`; None with the WARNING elsewhere, or if it is gone (use
    :func:`client_store_host_creds`)."""
    low, high = CREDS_VERIFIED
    version = mlflow_version()
    if low <= version < high:
        try:
            from mlflow.utils.credentials import get_default_host_creds
        except ImportError as err:
            fallback_taken(_CREDS, f"not importable ({err}): the credentials come from MlflowClient's store")
            return None
        return get_default_host_creds(uri)
    fallback_taken(_CREDS, f"not verified on MLflow {'.'.join(map(str, version))} (verified on "
                           f"[{low[0]}.{low[1]}, {high[0]}.{high[1]})): the credentials come from MlflowClient's store")
    return None


def client_store_host_creds(client: Any) -> Any | None:
    """The ``get_host_creds()`` of the store an ``MlflowClient`` talks to (``client._tracking_client.store``,
    a private path present since MLflow 1.x); None with the WARNING where there is none."""
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    getter = getattr(store, "get_host_creds", None)
    if getter is None:
        fallback_taken("MlflowClient._tracking_client.store.get_host_creds",
                       f"missing on this MLflow (store: {type(store).__name__}): no host credentials for the "
                       f"bulk history route, which is then not used")
        return None
    return getter()


def mlflow_rest_helpers() -> tuple[Callable[..., Any], Callable[..., Any]] | None:
    """``(http_request, verify_rest_response)`` of ``mlflow.utils.rest_utils`` (MLflow's credentials, TLS,
    retries and timeouts), or None with the WARNING where they moved (the bulk history route is not used)."""
    try:
        from mlflow.utils.rest_utils import http_request, verify_rest_response
    except ImportError as err:
        fallback_taken("mlflow.utils.rest_utils", f"not importable ({err}): the bulk history route is not used "
                                                  f"(histories are read run by run through MlflowClient)")
        return None
    return http_request, verify_rest_response
