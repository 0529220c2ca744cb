"""Read sweeps back: Optuna trials joined with MLflow runs, and per-epoch histories.

The tracker writes one MLflow experiment per study (``<prefix><study_name>``,
prefix ``"sweeps/"`` by default) holding one parent run (tags
``sweeps.role=study``, ``sweeps.study``) and one child run per Optuna trial
(tags ``sweeps.role=trial``, ``sweeps.study``, ``sweeps.trial_number``,
``sweeps.state``, ``sweeps.reason``; params = hyperparameters; metrics = the
epoch-record keys of :mod:`nncore.records`, step = epoch, 1-based). The Optuna
trial carries the child run's id as user attribute ``mlflow_run_id`` and, for
pruned or failed trials, a ``reason`` user attribute.

Two entry points:

:func:`trials`
    one row per Optuna trial (state, value, params, timing, run id, reason) and,
    given a tracking URI, the final value of every MLflow metric, fetched with a
    single (paginated) ``search_runs`` for the experiment.

:func:`history`
    every logged value of every trial run at once, long or wide. Three ways to
    read it (``method``):

    ``"sql"``
        read-only SQL against MLflow's backend database (``metrics``, ``runs``,
        ``tags``, ``experiments`` tables): one small query for the trial runs,
        then their metrics (``run_uuid IN (...)``). Fastest by far, but depends
        on MLflow's schema. SQLite is read with the standard library's
        ``sqlite3`` on a ``mode=ro`` URI, in one read transaction, so nothing
        is ever written (no migrations, no journal); other databases go through
        SQLAlchemy, PostgreSQL connections set read-only; nothing is ever
        committed.
    ``"http"``
        the tracking server's bulk route used by the MLflow UI,
        ``GET /ajax-api/2.0/mlflow/metrics/get-history-bulk`` (at most 100 runs
        per request, one request per metric key and chunk of runs; never
        sampled). An answer holds at most 25,000 rows and is cut off beyond:
        a full answer is read again for the runs it may lack (answers come
        sorted by run id), and a single run with more values than that is read
        with ``MlflowClient.get_metric_history``. A server without the route
        (HTTP 404) gets the ``"api"`` method, with a warning.
    ``"api"``
        ``MlflowClient.get_metric_history`` per run per key (slow, always works).

    ``"auto"`` picks ``sql`` for database tracking URIs, ``http`` for
    ``http(s)://`` and ``api`` otherwise; when the SQL query fails because the
    schema is not the expected one it warns and falls back to ``api``.

When several values were logged for the same (run, key, step), every method
keeps the one with the latest timestamp. NaN values come back as NaN; MLflow
itself stores +/-inf as +/-1.7976931348623157e308, and that is what is read.
"""

from __future__ import annotations

import base64
import math
import os
import threading
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_PREFIX",
    "LONG_COLUMNS",
    "experiment_for",
    "history",
    "trials",
]

#: Default prefix of the MLflow experiment name of a study.
DEFAULT_PREFIX = "sweeps/"

TAG_ROLE = "sweeps.role"
TAG_TRIAL_NUMBER = "sweeps.trial_number"
ROLE_TRIAL = "trial"
ATTR_RUN_ID = "mlflow_run_id"
ATTR_REASON = "reason"

#: Columns of the long form returned by :func:`history`.
LONG_COLUMNS = ("run_id", "trial", "epoch", "metric", "value")

_TRIAL_FILTER = f"tags.`{TAG_ROLE}` = '{ROLE_TRIAL}'"
_SEARCH_PAGE = 1000
#: The get-history-bulk route accepts at most this many run ids per request ...
_HTTP_MAX_RUNS = 100
#: ... and returns at most this many rows per request (MAX_HISTORY_RESULTS in
#: MLflow's handler), cutting the rest off: an answer with exactly this many rows
#: is read again for the runs it may lack.
_HTTP_MAX_RESULTS = 25000
_HTTP_THREADS = 2  # the server answers one request at a time anyway; 2 overlaps the transfers
_DB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mssql")
_METHODS = ("auto", "sql", "http", "api")


def experiment_for(study_name: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The MLflow experiment name the tracker uses for ``study_name``."""
    return f"{prefix}{study_name}"


# --------------------------------------------------------------------------- trials


def trials(
    study_name: str,
    *,
    storage: Any,
    tracking_uri: str | None = None,
    experiment_name: str | None = None,
) -> pd.DataFrame:
    """One row per Optuna trial of ``study_name``, sorted by trial number.

    Columns: ``trial``, ``state`` (``COMPLETE``/``PRUNED``/``FAIL``/``RUNNING``/
    ``WAITING``), ``value`` (NaN when the trial has none; for a multi-objective
    study also ``value_0``, ``value_1``, ...), one column per hyperparameter named
    as in the search space (``eta``, ``lmbda``, ...; ``params.<name>`` if the name is
    one of the fixed columns), ``duration_s``,
    ``datetime_start``, ``datetime_complete``, ``mlflow_run_id``, ``reason``.

    With ``tracking_uri``, the final (last-step) value of every MLflow metric of
    the trial's run follows, one column per metric key (``eval/accuracy``, ...),
    fetched with one paginated ``search_runs`` over the experiment. A metric key
    that equals an existing column (the record's ``eta`` metric next to the
    ``eta`` hyperparameter) is named ``metrics.<key>`` instead. Runs are matched
    by the trial's ``mlflow_run_id`` user attribute, or else by the run's
    ``sweeps.trial_number`` tag (and ``mlflow_run_id`` is then filled from it).

    ``storage`` is an Optuna storage URL (RDB URL, or a journal/Redis URL as
    understood by :func:`sweeps.storage.open_storage`) or a storage object.
    """
    import optuna

    study = optuna.load_study(study_name=study_name, storage=_optuna_storage(storage))
    multi = len(study.directions) > 1
    records: list[dict[str, Any]] = []
    param_names: dict[str, None] = {}
    for t in study.get_trials(deepcopy=False):
        for name in t.params:
            param_names.setdefault(name, None)
        start, complete = t.datetime_start, t.datetime_complete
        row: dict[str, Any] = {
            "trial": t.number,
            "state": t.state.name,
            "value": (float(t.value) if (not multi and t.value is not None) else math.nan),
        }
        if multi:
            for i in range(len(study.directions)):
                row[f"value_{i}"] = float(t.values[i]) if t.values is not None else math.nan
        row["_params"] = t.params
        row["duration_s"] = (complete - start).total_seconds() if start and complete else math.nan
        row["datetime_start"] = start
        row["datetime_complete"] = complete
        row["mlflow_run_id"] = t.user_attrs.get(ATTR_RUN_ID)
        row["reason"] = t.user_attrs.get(ATTR_REASON)
        records.append(row)

    fixed = ["trial", "state", "value"]
    if multi:
        fixed += [f"value_{i}" for i in range(len(study.directions))]
    tail = ["duration_s", "datetime_start", "datetime_complete", "mlflow_run_id", "reason"]
    # a hyperparameter named like a fixed column (``value``, ``state``...) becomes ``params.<name>``
    param_cols = {p: (f"params.{p}" if p in fixed or p in tail else p) for p in param_names}
    columns = fixed + list(param_cols.values()) + tail
    rows = []
    for rec in records:
        p = rec.pop("_params")
        rows.append({**rec, **{col: p.get(name, math.nan) for name, col in param_cols.items()}})
    df = pd.DataFrame(rows, columns=columns)
    df["trial"] = df["trial"].astype("int64")
    df["value"] = df["value"].astype("float64")
    df["duration_s"] = df["duration_s"].astype("float64")
    for col in ("datetime_start", "datetime_complete"):
        df[col] = pd.to_datetime(df[col])
    for col in ("mlflow_run_id", "reason"):  # object columns: None (not NaN) when absent
        df[col] = pd.Series([rec[col] for rec in records], index=df.index, dtype=object)

    if tracking_uri is not None:
        df = _attach_final_metrics(df, study_name, tracking_uri, experiment_name)
    return df.sort_values("trial", kind="stable").reset_index(drop=True)


def _optuna_storage(storage: Any) -> Any:
    """RDB URLs and storage objects go to Optuna as they are; journal / Redis URLs
    (``journal:///path``, ``path.log``, ``redis://``) are opened the way the workers
    open them (:func:`sweeps.storage.open_storage`, without a heartbeat)."""
    if isinstance(storage, str | os.PathLike):
        text = os.fspath(storage)
        if text.startswith(("journal://", "redis://")) or (
            "://" not in text and text.endswith((".log", ".journal"))
        ):
            from sweeps.storage import open_storage

            return open_storage(text, heartbeat=False)
        return text
    return storage


def _attach_final_metrics(
    df: pd.DataFrame, study_name: str, tracking_uri: str, experiment_name: str | None
) -> pd.DataFrame:
    _require_sqlite_file(tracking_uri)
    runs = _search_trial_runs(tracking_uri, experiment_name or experiment_for(study_name))
    if runs is None:
        warnings.warn(
            f"no MLflow experiment {experiment_name or experiment_for(study_name)!r} at "
            f"{tracking_uri}: no metric columns added",
            stacklevel=3,
        )
        return df
    by_id = {r.info.run_id: r for r in runs}
    by_trial: dict[int, list[Any]] = {}
    for r in runs:
        number = _as_int(r.data.tags.get(TAG_TRIAL_NUMBER))
        if number is not None:
            by_trial.setdefault(number, []).append(r)

    run_ids = []
    for number, run_id in zip(df["trial"], df["mlflow_run_id"]):
        if not run_id or run_id not in by_id:
            candidates = by_trial.get(int(number), [])
            if not run_id and len(candidates) == 1:
                run_id = candidates[0].info.run_id
        run_ids.append(run_id if run_id else None)
    df["mlflow_run_id"] = pd.Series(run_ids, index=df.index, dtype=object)

    keys: dict[str, None] = {}
    for r in runs:
        for k in r.data.metrics:
            keys.setdefault(k, None)
    taken = set(df.columns)
    names = {k: (f"metrics.{k}" if k in taken else k) for k in sorted(keys)}
    finals = {
        names[k]: [
            float(by_id[rid].data.metrics.get(k, math.nan)) if rid in by_id else math.nan
            for rid in run_ids
        ]
        for k in names
    }
    if finals:
        df = pd.concat([df, pd.DataFrame(finals, index=df.index, dtype="float64")], axis=1)
    return df


# -------------------------------------------------------------------------- history


def history(
    study_name: str,
    *,
    tracking_uri: str,
    metrics: Sequence[str] | None = None,
    wide: bool = False,
    experiment_name: str | None = None,
    method: str = "auto",
    trials: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Per-epoch values of all trial runs of ``study_name``.

    Long form (default): columns ``run_id, trial, epoch, metric, value`` (``trial``
    and ``epoch`` int64, ``value`` float64), sorted by (trial, run_id, metric,
    epoch). ``wide=True``: one row per (run_id, trial, epoch), one float column per
    metric (in the order of ``metrics`` when given, else sorted).

    ``metrics`` restricts the keys, ``trials`` the trial numbers. Only active runs
    tagged ``sweeps.role=trial`` in the study's experiment are read (never the
    parent run). ``method`` is ``"auto"``, ``"sql"``, ``"http"`` or ``"api"``
    (see the module docstring). A missing experiment gives an empty frame.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if isinstance(metrics, str):
        metrics = [metrics]
    keys = list(dict.fromkeys(metrics)) if metrics is not None else None
    numbers = sorted({int(n) for n in trials}) if trials is not None else None
    experiment = experiment_name or experiment_for(study_name)
    _require_sqlite_file(tracking_uri)

    scheme = _scheme(tracking_uri)
    is_db = scheme in _DB_SCHEMES
    is_http = scheme in ("http", "https")
    if method == "auto":
        chosen = "sql" if is_db else "http" if is_http else "api"
    else:
        chosen = method
    if chosen == "sql" and not is_db:
        raise ValueError(f"method='sql' needs a database tracking URI, got {tracking_uri!r}")
    if chosen == "http" and not is_http:
        raise ValueError(f"method='http' needs an http(s) tracking URI, got {tracking_uri!r}")

    if chosen == "sql":
        try:
            raw = _history_sql(tracking_uri, experiment, keys, numbers)
        except Exception as exc:
            if method == "sql" or not _is_schema_error(exc):
                raise
            warnings.warn(
                f"reading MLflow's database directly failed ({type(exc).__name__}: {exc}); "
                "the schema may differ from the one expected: falling back to "
                "MlflowClient.get_metric_history (slow)",
                RuntimeWarning,
                stacklevel=2,
            )
            raw = _history_api(tracking_uri, experiment, keys, numbers)
    elif chosen == "http":
        raw = _history_http(tracking_uri, experiment, keys, numbers)
    else:
        raw = _history_api(tracking_uri, experiment, keys, numbers)

    long = _finish_long(raw)
    if not wide:
        return long
    return _to_wide(long, keys)


class _Raw(NamedTuple):
    """What the readers hand :func:`_finish_long`: the rows as equally long arrays,
    runs and metric keys as integer codes into small tables of names."""

    run: np.ndarray  # intp, index into run_ids
    run_ids: np.ndarray  # object: the distinct run ids
    trials: np.ndarray  # int64: trial number of each of run_ids (-1: no valid tag)
    key: np.ndarray  # intp, index into keys
    keys: np.ndarray  # object: the distinct metric keys
    epoch: np.ndarray  # int64
    value: np.ndarray  # float64, NaN already restored
    # int64, or None when the reader made sure that (run, key, epoch) is unique
    timestamp: np.ndarray | None


_RAW_COLUMNS = ("run_id", "trial", "epoch", "metric", "timestamp", "value")


def _objects(items: Iterable[Any]) -> np.ndarray:
    items = list(items)
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _raw_frame(
    run_id: Iterable[str],
    trial: Iterable[int],
    epoch: Iterable[int],
    metric: Iterable[str],
    timestamp: Iterable[int],
    value: Iterable[float],
) -> _Raw:
    """A :class:`_Raw` from plain per-row columns (the api and http readers)."""
    run_codes, run_ids = pd.factorize(_objects(run_id))
    key_codes, keys = pd.factorize(_objects(metric))
    per_row_trial = np.asarray(list(trial), dtype=np.int64)
    trials = np.full(len(run_ids), -1, dtype=np.int64)
    trials[run_codes] = per_row_trial  # one trial number per run
    return _Raw(
        run=run_codes, run_ids=_objects(run_ids), trials=trials,
        key=key_codes, keys=_objects(keys),
        epoch=np.asarray(list(epoch), dtype=np.int64),
        value=np.asarray(list(value), dtype=np.float64),
        timestamp=np.asarray(list(timestamp), dtype=np.int64),
    )


def _empty_raw() -> _Raw:
    nothing = np.empty(0, dtype=object)
    ints = np.empty(0, dtype=np.int64)
    return _Raw(np.empty(0, np.intp), nothing, ints, np.empty(0, np.intp), nothing, ints,
                np.empty(0, np.float64), ints)


def _sort_key(
    run: np.ndarray, key: np.ndarray, n_keys: int, epoch: np.ndarray
) -> np.ndarray | None:
    """One int64 per row ordering (run, key, epoch) like the tuple does; None if
    the ranges do not fit in 63 bits (then the caller sorts on the three columns)."""
    if not len(epoch):
        return np.empty(0, dtype=np.int64)
    lo, hi = int(epoch.min()), int(epoch.max())
    span = hi - lo + 1
    n_runs = int(run.max()) + 1
    if n_runs * max(n_keys, 1) * span >= 2**62:
        return None
    code = run.astype(np.int64) * n_keys
    code += key
    code *= span
    code += epoch
    code -= lo
    return code


def _has_duplicates(run: np.ndarray, key: np.ndarray, n_keys: int, epoch: np.ndarray) -> bool:
    """Whether some (run, key, epoch) occurs twice."""
    code = _sort_key(run, key, n_keys, epoch)
    if code is None:
        code = pd.MultiIndex.from_arrays([run, key, epoch])
        return bool(code.has_duplicates)
    if len(code) and int(code.max()) < 4 * len(code) + 1024:
        return bool(np.bincount(code).max(initial=0) > 1)  # O(n): dense codes
    return bool(pd.Index(code).has_duplicates)


def _finish_long(raw: _Raw) -> pd.DataFrame:
    """Keep the latest value per (run, key, step); sort by (trial, run_id, metric,
    epoch); exact output columns and dtypes."""
    n = len(raw.value)
    # Rank the (few) runs by (trial, run id) and the keys by name; rows are then
    # sorted on small integers only.
    by_trial = sorted(range(len(raw.run_ids)), key=lambda i: (raw.trials[i], raw.run_ids[i]))
    run_rank = np.empty(len(by_trial), dtype=np.intp)
    run_rank[by_trial] = np.arange(len(by_trial))
    by_name = sorted(range(len(raw.keys)), key=raw.keys.__getitem__)
    key_rank = np.empty(len(by_name), dtype=np.intp)
    key_rank[by_name] = np.arange(len(by_name))
    run = run_rank[raw.run] if n else np.empty(0, np.intp)
    key = key_rank[raw.key] if n else np.empty(0, np.intp)
    epoch, value = raw.epoch, raw.value

    code = _sort_key(run, key, len(by_name), epoch)
    if code is not None:
        order = np.argsort(code, kind="stable")
        sorted_code = code[order]
        dup = sorted_code[1:] == sorted_code[:-1]
    else:
        order = np.lexsort((epoch, key, run))
        r, k, e = run[order], key[order], epoch[order]
        dup = (r[1:] == r[:-1]) & (k[1:] == k[:-1]) & (e[1:] == e[:-1])
    if dup.any():
        if raw.timestamp is None:  # pragma: no cover - the readers guarantee this
            raise AssertionError("duplicate (run, key, step) rows without timestamps")
        # The last row of each (run, metric, epoch) group once sorted by timestamp
        # then value is the one logged last (latest timestamp; on a tie the larger
        # value, NaN last), whatever order the reader returned rows in.
        order = np.lexsort((value, raw.timestamp, epoch, key, run))
        r, k, e = run[order], key[order], epoch[order]
        last = np.ones(len(order), dtype=bool)
        last[:-1] = (r[1:] != r[:-1]) | (k[1:] != k[:-1]) | (e[1:] != e[:-1])
        order = order[last]
    run_names = raw.run_ids[by_trial] if len(by_trial) else raw.run_ids
    key_names = raw.keys[by_name] if len(by_name) else raw.keys
    return pd.DataFrame(
        {
            "run_id": _str_array(run_names, run[order]),
            "trial": raw.trials[by_trial][run[order]] if n else np.empty(0, np.int64),
            "epoch": epoch[order],
            "metric": _str_array(key_names, key[order]),
            "value": value[order],
        },
        columns=list(LONG_COLUMNS),
    )


_STR_DTYPE: Any = None


def _str_array(names: np.ndarray, codes: np.ndarray) -> Any:
    """``names[codes]`` as pandas' ``str`` array. With pandas' pyarrow-backed
    strings the array is decoded from a dictionary inside Arrow: converting 10^5
    Python strings one by one costs more than the whole SQL query."""
    global _STR_DTYPE
    if _STR_DTYPE is None:
        _STR_DTYPE = pd.array(np.empty(0, dtype=object), dtype=str).dtype
    if getattr(_STR_DTYPE, "storage", None) == "pyarrow" and len(codes):
        import pyarrow as pa

        dictionary = pa.DictionaryArray.from_arrays(
            pa.array(codes.astype(np.int32, copy=False)), pa.array(names, type=pa.large_string())
        )
        return pd.array(dictionary.cast(pa.large_string()), dtype=_STR_DTYPE)
    return pd.array(names.take(codes) if len(codes) else names[:0], dtype=str)


def _to_wide(long: pd.DataFrame, keys: list[str] | None) -> pd.DataFrame:
    index = ["run_id", "trial", "epoch"]
    if len(long):
        # (run, metric, epoch) is unique after _finish_long, so a plain pivot works
        # and holds only the (run, epoch) rows that exist.
        wide = long.pivot(index=index, columns="metric", values="value")
    else:
        wide = pd.DataFrame(index=pd.MultiIndex.from_arrays([[], [], []], names=index))
    columns = keys if keys is not None else sorted(map(str, wide.columns))
    wide = wide.reindex(columns=columns)
    wide.columns = pd.Index([str(c) for c in wide.columns], name=None)
    wide = wide.reset_index()
    wide = wide.astype({"run_id": str, "trial": "int64", "epoch": "int64",
                        **{c: "float64" for c in columns}})
    return wide.sort_values(["trial", "run_id", "epoch"], kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------------ sql path


def _scheme(uri: str) -> str:
    """``sqlite`` for ``sqlite:///...``, ``postgresql`` for ``postgresql+psycopg2://``, ..."""
    if "://" not in uri:
        return ""
    return uri.split("://", 1)[0].split("+", 1)[0].lower()


def _sqlite_path(uri: str) -> str | None:
    """The database file of a ``sqlite:///PATH`` URI (None for in-memory)."""
    rest = uri.split("://", 1)[1]
    path = rest[1:] if rest.startswith("/") else rest
    path = path.split("?", 1)[0]
    if path in ("", ":memory:"):
        return None
    return path


def _require_sqlite_file(uri: str) -> None:
    """Refuse to read a SQLite store that does not exist (MLflow would create one)."""
    if _scheme(uri) == "sqlite":
        path = _sqlite_path(uri)
        if path is None or not Path(path).is_file():
            raise FileNotFoundError(f"no MLflow SQLite database at {uri!r}")


# Run ids per metrics query, and metric keys filtered inside SQL: together below
# SQLite's historical limit of 999 bound parameters.
_SQL_RUN_CHUNK = 500
_SQL_MAX_KEYS = 400


def _history_sql(
    uri: str, experiment: str, keys: list[str] | None, numbers: list[int] | None
) -> _Raw:
    """Read-only SQL against MLflow's tables: first the selected trial runs (a small
    query), then the metrics of those runs (``run_uuid IN ...``, by chunks)."""
    if _scheme(uri) == "sqlite":
        return _history_sqlite(_sqlite_path(uri) or "", experiment, keys, numbers)
    return _history_sqlalchemy(uri, experiment, keys, numbers)


def _select_runs(
    rows: Iterable[tuple[str, Any]], numbers: list[int] | None
) -> tuple[list[str], np.ndarray]:
    """(run ids, trial numbers) of the trial runs, restricted to ``numbers``."""
    wanted = set(numbers) if numbers is not None else None
    run_ids: list[str] = []
    trials: list[int] = []
    for run_id, tag in rows:
        number = _as_int(tag)
        if wanted is not None and number not in wanted:
            continue
        run_ids.append(run_id)
        trials.append(_trial_or_missing(number))
    return run_ids, np.asarray(trials, dtype=np.int64)


def _sql_key_filter(keys: list[str] | None) -> list[str] | None:
    """Keys to filter in SQL (None: read every key; long lists are filtered afterwards)."""
    return keys if keys is not None and len(keys) <= _SQL_MAX_KEYS else None


def _keep_keys(raw: _Raw, keys: list[str] | None) -> _Raw:
    """Drop the rows of keys not in ``keys`` (when they could not be filtered in SQL)."""
    if keys is None or len(keys) <= _SQL_MAX_KEYS:
        return raw
    wanted = set(keys)
    keep_key = np.fromiter((k in wanted for k in raw.keys), dtype=bool, count=len(raw.keys))
    if keep_key.all():
        return raw
    rows = keep_key[raw.key]
    ts = raw.timestamp[rows] if raw.timestamp is not None else None
    return raw._replace(run=raw.run[rows], key=raw.key[rows], epoch=raw.epoch[rows],
                        value=raw.value[rows], timestamp=ts)


# -- SQLite: the standard library's sqlite3 on a read-only URI ------------------------

_SQLITE_RUNS = """
SELECT r.run_uuid, num.value
FROM runs AS r
JOIN experiments AS e ON e.experiment_id = r.experiment_id
JOIN tags AS role ON role.run_uuid = r.run_uuid AND role.key = ? AND role.value = ?
LEFT JOIN tags AS num ON num.run_uuid = r.run_uuid AND num.key = ?
WHERE e.name = ? AND r.lifecycle_stage = 'active'
"""


def _sqlite_metrics_sql(
    first: int, n_runs: int, n_keys: int | None, with_timestamp: bool
) -> str:
    """Metrics of runs ``first`` .. ``first + n_runs - 1`` (their ids bound in order).

    Each row is (2 * run number + is_nan, key, step, value[, timestamp]): the runs
    come in as a VALUES table numbering them, so a row carries a small integer
    instead of a 32-character run id, and NaN rides along in the same integer
    (every column costs a Python object per row). CROSS JOIN makes SQLite loop
    over the runs and look their metrics up by the run_uuid index; the unary +
    keeps it from using the primary key (key, ...) for the key filter instead,
    which would scan the key's values of every run in the database, per run.
    """
    values = ", ".join(f"({first + i}, ?)" for i in range(n_runs))
    sql = (
        f"WITH sel(i, run_uuid) AS (VALUES {values}) "
        "SELECT 2 * sel.i + (m.is_nan <> 0), m.key, m.step, m.value"
        + (", COALESCE(m.timestamp, 0)" if with_timestamp else "")
        + " FROM sel CROSS JOIN metrics AS m ON m.run_uuid = sel.run_uuid"
    )
    if n_keys is not None:
        sql += f" WHERE +m.key IN ({', '.join('?' * n_keys)})"
    return sql


def _history_sqlite(
    path: str, experiment: str, keys: list[str] | None, numbers: list[int] | None
) -> _Raw:
    import sqlite3

    # mode=ro: never writes (no journal, no migration); BEGIN: one snapshot for all
    # the statements, so that a study logging meanwhile cannot tear the result.
    target = "file:" + quote(os.path.abspath(path), safe="/") + "?mode=ro"
    con = sqlite3.connect(target, uri=True, isolation_level=None)
    sql, args = _SQLITE_RUNS, [TAG_ROLE, ROLE_TRIAL, TAG_TRIAL_NUMBER, experiment]
    try:
        con.execute("PRAGMA query_only = 1")
        con.execute("BEGIN")
        run_ids, trials = _select_runs(con.execute(sql, args).fetchall(), numbers)
        if not run_ids:
            return _empty_raw()
        sql_keys = _sql_key_filter(keys)

        def read(with_timestamp: bool) -> np.ndarray:
            nonlocal sql, args
            fields = [("run_nan", np.int64), ("key", object), ("step", np.int64),
                      ("value", np.float64)]
            if with_timestamp:
                fields.append(("timestamp", np.int64))
            dtype = np.dtype(fields)
            parts = []
            for start in range(0, len(run_ids), _SQL_RUN_CHUNK):
                chunk = run_ids[start : start + _SQL_RUN_CHUNK]
                n_keys = None if sql_keys is None else len(sql_keys)
                sql = _sqlite_metrics_sql(start, len(chunk), n_keys, with_timestamp)
                args = chunk + (sql_keys or [])
                # straight from the cursor into one structured array (no list of tuples)
                parts.append(np.fromiter(con.execute(sql, args), dtype=dtype))
            return parts[0] if len(parts) == 1 else np.concatenate(parts)

        rows = read(with_timestamp=False)
        key_codes, key_names = pd.factorize(rows["key"])
        run = rows["run_nan"] >> 1
        timestamp = None
        if _has_duplicates(run, key_codes, len(key_names), rows["step"]):
            # Several values at one (run, key, step): the latest timestamp wins, so
            # read again, with the timestamps, from the same snapshot.
            rows = read(with_timestamp=True)
            key_codes, key_names = pd.factorize(rows["key"])
            run = rows["run_nan"] >> 1
            timestamp = np.ascontiguousarray(rows["timestamp"])
        con.execute("ROLLBACK")
    except sqlite3.Error as err:
        from sqlalchemy.exc import DBAPIError

        # raised as SQLAlchemy would (OperationalError, ...): see _is_schema_error
        raise DBAPIError.instance(sql, args, err, sqlite3.Error) from err
    finally:
        con.close()

    value = np.ascontiguousarray(rows["value"])
    value[(rows["run_nan"] & 1).astype(bool)] = np.nan  # MLflow stores NaN as 0, is_nan set
    raw = _Raw(run=run, run_ids=_objects(run_ids), trials=trials, key=key_codes,
               keys=_objects(key_names), epoch=np.ascontiguousarray(rows["step"]), value=value,
               timestamp=timestamp)
    return _keep_keys(raw, keys)


# -- other databases (PostgreSQL, ...): SQLAlchemy, read-only transaction -------------


def _read_only_engine(uri: str):
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    return sa.create_engine(uri, poolclass=NullPool)


def _history_sqlalchemy(
    uri: str, experiment: str, keys: list[str] | None, numbers: list[int] | None
) -> _Raw:
    import sqlalchemy as sa

    md = sa.MetaData()
    metrics_t = sa.Table(
        "metrics", md,
        sa.Column("run_uuid", sa.String), sa.Column("key", sa.String),
        sa.Column("value", sa.Float), sa.Column("timestamp", sa.BigInteger),
        sa.Column("step", sa.BigInteger), sa.Column("is_nan", sa.Boolean),
    )
    runs_t = sa.Table(
        "runs", md,
        sa.Column("run_uuid", sa.String), sa.Column("experiment_id", sa.Integer),
        sa.Column("lifecycle_stage", sa.String),
    )
    tags_t = sa.Table(
        "tags", md,
        sa.Column("run_uuid", sa.String), sa.Column("key", sa.String), sa.Column("value", sa.String),
    )
    exps_t = sa.Table(
        "experiments", md, sa.Column("experiment_id", sa.Integer), sa.Column("name", sa.String)
    )
    r, e = runs_t.alias("r"), exps_t.alias("e")
    role, num = tags_t.alias("role"), tags_t.alias("num")
    runs_stmt = (
        sa.select(r.c.run_uuid, num.c.value)
        .select_from(
            r.join(e, e.c.experiment_id == r.c.experiment_id)
            .join(role, sa.and_(role.c.run_uuid == r.c.run_uuid, role.c.key == TAG_ROLE,
                                role.c.value == ROLE_TRIAL))
            .outerjoin(num, sa.and_(num.c.run_uuid == r.c.run_uuid, num.c.key == TAG_TRIAL_NUMBER))
        )
        .where(e.c.name == experiment, r.c.lifecycle_stage == "active")
    )
    m = metrics_t.alias("m")
    sql_keys = _sql_key_filter(keys)

    engine = _read_only_engine(uri)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn = conn.execution_options(postgresql_readonly=True)
            run_ids, trials = _select_runs(_fetch_all_raw(conn, runs_stmt), numbers)
            rows: list[tuple] = []
            for start in range(0, len(run_ids), _SQL_RUN_CHUNK):
                stmt = sa.select(m.c.run_uuid, m.c.key, m.c.step, m.c.value, m.c.is_nan,
                                 m.c.timestamp).where(
                    m.c.run_uuid.in_(run_ids[start : start + _SQL_RUN_CHUNK]))
                if sql_keys is not None:
                    stmt = stmt.where(m.c.key.in_(sql_keys))
                rows += _fetch_all_raw(conn, stmt)
            conn.rollback()
    finally:
        engine.dispose()

    if not rows:
        return _empty_raw()
    n = len(rows)
    position = {rid: i for i, rid in enumerate(run_ids)}
    key_codes, key_names = pd.factorize(_objects(map(itemgetter(1), rows)))
    value = np.fromiter(map(itemgetter(3), rows), dtype=np.float64, count=n)
    value[np.fromiter(map(itemgetter(4), rows), dtype=bool, count=n)] = np.nan
    raw = _Raw(
        run=np.fromiter(map(position.__getitem__, map(itemgetter(0), rows)), dtype=np.intp,
                        count=n),
        run_ids=_objects(run_ids), trials=trials, key=key_codes, keys=_objects(key_names),
        epoch=np.fromiter(map(itemgetter(2), rows), dtype=np.int64, count=n),
        value=value,
        timestamp=np.fromiter((t or 0 for t in map(itemgetter(5), rows)), dtype=np.int64, count=n),
    )
    return _keep_keys(raw, keys)


def _fetch_all_raw(conn: Any, stmt: Any) -> list[tuple]:
    """Execute ``stmt`` on the plain DB-API cursor: fetching 10^5 rows through
    SQLAlchemy's Row objects costs more than the query itself."""
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.params
    if compiled.positional:
        args: Any = tuple(params[name] for name in compiled.positiontup)
    else:
        args = params
    dbapi_error = conn.dialect.loaded_dbapi.Error
    cursor = conn.connection.cursor()
    try:
        cursor.execute(compiled.string, args)
        return cursor.fetchall()
    except dbapi_error as err:
        # wrap as SQLAlchemy would (OperationalError, ProgrammingError, ...)
        from sqlalchemy.exc import DBAPIError

        raise DBAPIError.instance(compiled.string, args, err, dbapi_error) from err
    finally:
        cursor.close()

def _is_schema_error(exc: BaseException) -> bool:
    """Errors meaning "the tables/columns are not what we expected" (not: no such file)."""
    try:
        from sqlalchemy import exc as sa_exc
    except ImportError:  # pragma: no cover
        return False
    if isinstance(exc, sa_exc.NoSuchTableError | sa_exc.NoSuchColumnError):
        return True
    if isinstance(exc, sa_exc.ProgrammingError):
        return True
    if isinstance(exc, sa_exc.OperationalError):
        text = str(exc).lower()
        return any(s in text for s in ("no such table", "no such column", "unknown column",
                                       "doesn't exist", "does not exist"))
    return False


# ------------------------------------------------------------------ MLflow client side


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _search_trial_runs(uri: str, experiment: str, client: Any = None) -> list[Any] | None:
    """All active trial runs of the experiment (one paginated search); None if no experiment."""
    client = client or _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            experiment_ids=[exp.experiment_id],
            filter_string=_TRIAL_FILTER,
            max_results=_SEARCH_PAGE,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _runs_and_keys(
    uri: str, experiment: str, keys: list[str] | None, numbers: list[int] | None, client: Any
) -> list[tuple[str, int, list[str]]]:
    """(run_id, trial, metric keys to read) for the selected trial runs."""
    runs = _search_trial_runs(uri, experiment, client) or []
    wanted = set(numbers) if numbers is not None else None
    out = []
    for r in runs:
        number = _as_int(r.data.tags.get(TAG_TRIAL_NUMBER))
        if wanted is not None and number not in wanted:
            continue
        run_keys = sorted(r.data.metrics)
        if keys is not None:
            run_keys = [k for k in keys if k in r.data.metrics]
        out.append((r.info.run_id, _trial_or_missing(number), run_keys))
    return out


def _history_api(
    uri: str, experiment: str, keys: list[str] | None, numbers: list[int] | None
) -> _Raw:
    client = _client(uri)
    cols: dict[str, list] = {c: [] for c in _RAW_COLUMNS}
    for run_id, number, run_keys in _runs_and_keys(uri, experiment, keys, numbers, client):
        for key in run_keys:
            for mt in client.get_metric_history(run_id, key):
                cols["run_id"].append(run_id)
                cols["trial"].append(number)
                cols["epoch"].append(mt.step)
                cols["metric"].append(mt.key)
                cols["timestamp"].append(mt.timestamp or 0)
                cols["value"].append(mt.value)
    return _raw_frame(*(cols[c] for c in _RAW_COLUMNS))


# ----------------------------------------------------------------------- http path


class _RouteMissing(RuntimeError):
    """The tracking server (or a proxy in front of it) does not serve the bulk route."""


class _BulkHistory:
    """Client of ``GET /ajax-api/2.0/mlflow/metrics/get-history-bulk``: every value
    (never sampled) of one metric key for up to 100 runs, at most 25,000 rows in all
    (MLflow's ``get_metric_history_bulk_handler``; the rest is cut off silently)."""

    ROUTE = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.url = uri.rstrip("/") + self.ROUTE
        self.headers = {"Accept": "application/json"}
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        if user and password:
            cred = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            self.headers["Authorization"] = f"Basic {cred}"
        elif token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.verify = os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() not in ("true", "1")
        self.timeout = float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "120"))
        self._local = threading.local()

    def _session(self):
        import requests

        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def get(self, run_ids: Sequence[str], key: str) -> list[dict]:
        """One request: the rows of ``key`` for ``run_ids`` (<= 100); when exactly
        ``_HTTP_MAX_RESULTS`` rows come back, the answer may have been cut off."""
        params: list[tuple[str, Any]] = [("run_id", rid) for rid in run_ids]
        params += [("metric_key", key), ("max_results", _HTTP_MAX_RESULTS)]
        resp = self._session().get(
            self.url, params=params, headers=self.headers, timeout=self.timeout, verify=self.verify
        )
        if resp.status_code == 404:
            raise _RouteMissing(f"GET {self.url}: HTTP 404: {resp.text[:200]}")
        if resp.status_code != 200:
            raise RuntimeError(
                f"GET {self.url} (metric {key!r}, {len(run_ids)} runs) failed: "
                f"HTTP {resp.status_code}: {resp.text[:500]}"
            )
        return resp.json().get("metrics", [])

    def complete(self, run_ids: Sequence[str], key: str) -> list[dict]:
        """Every value of ``key`` for ``run_ids`` (<= 100), re-reading cut-off answers."""
        done: list[dict] = []
        todo = [list(run_ids)]
        while todo:
            ids = todo.pop()
            rows = self.get(ids, key)
            if len(rows) < _HTTP_MAX_RESULTS:
                done += rows
                continue
            if len(ids) == 1:
                # >= 25,000 values of one run: the per-run API pages through them.
                done += self._per_run(ids[0], key)
                continue
            seen = [row["run_id"] for row in rows]
            if all(a <= b for a, b in zip(seen, seen[1:])):
                # MLflow answers sorted by run id (its SQL store and its fallback for
                # other stores both do), so only the last run seen can be cut off, and
                # runs before it are complete (or have no values).
                last = seen[-1]
                if seen[0] != last:
                    done += [row for row in rows if row["run_id"] != last]
                    rest = [rid for rid in ids if rid >= last]
                else:  # one run alone fills the answer
                    done += self._per_run(last, key)
                    rest = [rid for rid in ids if rid > last]
                if len(rest) < len(ids):
                    if rest:
                        todo.append(rest)
                    continue
            # not sorted as expected: split the runs in halves and read each again
            half = len(ids) // 2
            todo += [ids[half:], ids[:half]]
        return done

    def _per_run(self, run_id: str, key: str) -> list[dict]:
        client = _client(self.uri)
        return [{"run_id": run_id, "key": key, "step": mt.step, "timestamp": mt.timestamp,
                 "value": mt.value} for mt in client.get_metric_history(run_id, key)]


def _history_http(
    uri: str, experiment: str, keys: list[str] | None, numbers: list[int] | None
) -> _Raw:
    selected = _runs_and_keys(uri, experiment, keys, numbers, _client(uri))
    trial_of = {rid: number for rid, number, _ in selected}
    jobs: list[tuple[list[str], str]] = []
    for i in range(0, len(selected), _HTTP_MAX_RUNS):
        chunk = selected[i : i + _HTTP_MAX_RUNS]
        chunk_keys: dict[str, list[str]] = {}
        for rid, _, run_keys in chunk:
            for k in run_keys:
                chunk_keys.setdefault(k, []).append(rid)
        jobs += [(rids, k) for k, rids in chunk_keys.items()]
    bulk = _BulkHistory(uri)
    try:
        if len(jobs) > 1:
            with ThreadPoolExecutor(max_workers=_HTTP_THREADS) as pool:
                results = list(pool.map(lambda job: bulk.complete(*job), jobs))
        else:
            results = [bulk.complete(*job) for job in jobs]
    except _RouteMissing as exc:
        warnings.warn(
            f"the tracking server does not serve the bulk history route ({exc}): "
            "falling back to MlflowClient.get_metric_history (slow)",
            RuntimeWarning,
            stacklevel=3,
        )
        return _history_api(uri, experiment, keys, numbers)
    rows = [row for res in results for row in res]
    return _raw_frame(
        (r["run_id"] for r in rows),
        (trial_of[r["run_id"]] for r in rows),
        (int(r.get("step", 0)) for r in rows),
        (r["key"] for r in rows),
        (int(r.get("timestamp") or 0) for r in rows),
        (float(r.get("value", 0.0)) for r in rows),  # "NaN" / "Infinity" strings included
    )

# --------------------------------------------------------------------------- helpers


def _as_int(text: Any) -> int | None:
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return None


def _trial_or_missing(number: int | None) -> int:
    """Trial number of a run; -1 when the run has no (valid) ``sweeps.trial_number`` tag."""
    return -1 if number is None else number

