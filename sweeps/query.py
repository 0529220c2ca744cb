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
        one read-only SQL query against MLflow's backend database (``metrics``,
        ``runs``, ``tags``, ``experiments`` tables). Fastest by far, but depends
        on MLflow's schema. SQLite is opened with ``mode=ro`` so nothing is
        ever written (no migrations, no journal); PostgreSQL connections are
        set read-only; nothing is ever committed.
    ``"http"``
        the tracking server's bulk route used by the MLflow UI,
        ``GET /ajax-api/2.0/mlflow/metrics/get-history-bulk-interval`` (at most
        100 runs per request, one request per metric key and chunk).
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
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

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
#: The bulk-interval route accepts at most this many run ids per request ...
_HTTP_MAX_RUNS = 100
#: ... and returns at most this many values per run (evenly *sampled* when a run
#: has more: first and last kept). A run that comes back with exactly this many
#: rows may be sampled, so it is re-read in smaller step windows.
_HTTP_MAX_RESULTS = 2500
_HTTP_THREADS = 4
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
    as in the search space (``eta``, ``lmbda``, ...), ``duration_s``,
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
    params = [p for p in param_names if p not in fixed and p not in tail]
    columns = fixed + params + tail
    rows = []
    for rec in records:
        p = rec.pop("_params")
        rows.append({**rec, **{name: p.get(name, math.nan) for name in params}})
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


# Raw frames handed from the readers to _finish_long have the columns
# run_id (str), trial (int64), epoch (int64), metric (str), timestamp (int64),
# value (float64, NaN already restored).
_RAW_COLUMNS = ("run_id", "trial", "epoch", "metric", "timestamp", "value")


def _raw_frame(
    run_id: Iterable[str],
    trial: Iterable[int],
    epoch: Iterable[int],
    metric: Iterable[str],
    timestamp: Iterable[int],
    value: Iterable[float],
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_id": pd.Series(list(run_id), dtype=object),
            "trial": np.asarray(list(trial), dtype=np.int64),
            "epoch": np.asarray(list(epoch), dtype=np.int64),
            "metric": pd.Series(list(metric), dtype=object),
            "timestamp": np.asarray(list(timestamp), dtype=np.int64),
            "value": np.asarray(list(value), dtype=np.float64),
        }
    )


def _finish_long(raw: pd.DataFrame) -> pd.DataFrame:
    """Keep the latest value per (run, key, step); sort; exact output columns and dtypes."""
    if len(raw):
        # Last timestamp wins; on equal timestamps the larger value (NaN last) wins,
        # so the result does not depend on the order a reader returned rows in.
        raw = raw.sort_values(["run_id", "metric", "epoch", "timestamp", "value"], kind="stable")
        raw = raw.drop_duplicates(["run_id", "metric", "epoch"], keep="last")
        raw = raw.sort_values(["trial", "run_id", "metric", "epoch"], kind="stable")
    return pd.DataFrame(
        {
            "run_id": raw["run_id"].astype(str).to_numpy(),
            "trial": raw["trial"].to_numpy(dtype=np.int64),
            "epoch": raw["epoch"].to_numpy(dtype=np.int64),
            "metric": raw["metric"].astype(str).to_numpy(),
            "value": raw["value"].to_numpy(dtype=np.float64),
        }
    ).astype({"run_id": str, "metric": str})


def _to_wide(long: pd.DataFrame, keys: list[str] | None) -> pd.DataFrame:
    index = ["run_id", "trial", "epoch"]
    if len(long):
        wide = long.pivot_table(
            index=index, columns="metric", values="value", aggfunc="first", dropna=False, sort=True
        )
        # pivot_table drops all-NaN rows/columns with dropna; we asked it not to, but
        # it would also build the full cartesian product of the index levels: keep
        # only combinations that exist.
        present = pd.MultiIndex.from_frame(long[index].drop_duplicates())
        wide = wide.reindex(present)
    else:
        wide = pd.DataFrame(index=pd.MultiIndex.from_arrays([[], [], []], names=index))
    columns = keys if keys is not None else sorted(map(str, wide.columns))
    wide = wide.reindex(columns=columns)
    wide.columns = pd.Index([str(c) for c in wide.columns], name=None)
    wide = wide.reset_index()
    wide = wide.astype({"trial": "int64", "epoch": "int64", **{c: "float64" for c in columns}})
    wide["run_id"] = wide["run_id"].astype(str)
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


def _read_only_engine(uri: str):
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    if _scheme(uri) == "sqlite":
        path = os.path.abspath(_sqlite_path(uri) or "")
        url = sa.engine.URL.create(
            "sqlite+pysqlite",
            database="file:" + quote(path, safe="/"),
            query={"mode": "ro", "uri": "true"},
        )
        return sa.create_engine(url, poolclass=NullPool)
    return sa.create_engine(uri, poolclass=NullPool)


def _history_sql(
    uri: str, experiment: str, keys: list[str] | None, numbers: list[int] | None
) -> pd.DataFrame:
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
        sa.Column("lifecycle_stage", sa.String), sa.Column("status", sa.String),
    )
    tags_t = sa.Table(
        "tags", md,
        sa.Column("run_uuid", sa.String), sa.Column("key", sa.String), sa.Column("value", sa.String),
    )
    exps_t = sa.Table(
        "experiments", md, sa.Column("experiment_id", sa.Integer), sa.Column("name", sa.String)
    )
    m, r, e = metrics_t.alias("m"), runs_t.alias("r"), exps_t.alias("e")
    role, num = tags_t.alias("role"), tags_t.alias("num")
    stmt = (
        sa.select(
            m.c.run_uuid, num.c.value.label("trial"), m.c.step, m.c.key,
            m.c.timestamp, m.c.value, m.c.is_nan,
        )
        .select_from(
            m.join(r, r.c.run_uuid == m.c.run_uuid)
            .join(e, e.c.experiment_id == r.c.experiment_id)
            .join(
                role,
                sa.and_(role.c.run_uuid == r.c.run_uuid, role.c.key == TAG_ROLE,
                        role.c.value == ROLE_TRIAL),
            )
            .outerjoin(num, sa.and_(num.c.run_uuid == r.c.run_uuid, num.c.key == TAG_TRIAL_NUMBER))
        )
        .where(e.c.name == experiment, r.c.lifecycle_stage == "active")
    )
    if keys is not None:
        stmt = stmt.where(m.c.key.in_(keys))
    if numbers is not None:
        stmt = stmt.where(num.c.value.in_([str(n) for n in numbers]))

    engine = _read_only_engine(uri)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn = conn.execution_options(postgresql_readonly=True)
            rows = conn.execute(stmt).fetchall()
            conn.rollback()
    finally:
        engine.dispose()

    if not rows:
        return _raw_frame([], [], [], [], [], [])
    run_id, trial_s, step, key, ts, value, is_nan = zip(*rows)
    trial_map = {s: _as_int(s) for s in set(trial_s)}
    values = np.asarray(value, dtype=np.float64)
    values[np.asarray(is_nan, dtype=bool)] = np.nan
    return pd.DataFrame(
        {
            "run_id": pd.Series(run_id, dtype=object),
            "trial": np.fromiter((_trial_or_missing(trial_map[s]) for s in trial_s),
                                 dtype=np.int64, count=len(trial_s)),
            "epoch": np.asarray(step, dtype=np.int64),
            "metric": pd.Series(key, dtype=object),
            "timestamp": np.asarray([t if t is not None else 0 for t in ts], dtype=np.int64),
            "value": values,
        }
    )


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
) -> pd.DataFrame:
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


class _BulkHistory:
    """Client of ``/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval``."""

    def __init__(self, uri: str) -> None:
        self.url = uri.rstrip("/") + "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval"
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

    def get(self, run_ids: Sequence[str], key: str, window: tuple[int, int] | None = None) -> list[dict]:
        params: list[tuple[str, Any]] = [("run_ids", rid) for rid in run_ids]
        params += [("metric_key", key), ("max_results", _HTTP_MAX_RESULTS)]
        if window is not None:
            params += [("start_step", window[0]), ("end_step", window[1])]
        resp = self._session().get(
            self.url, params=params, headers=self.headers, timeout=self.timeout, verify=self.verify
        )
        if resp.status_code != 200:
            raise RuntimeError(
                f"GET {self.url} (metric {key!r}, {len(run_ids)} runs) failed: "
                f"HTTP {resp.status_code}: {resp.text[:500]}"
            )
        return resp.json().get("metrics", [])

    def complete(self, run_ids: Sequence[str], key: str) -> list[dict]:
        """Every value of ``key`` for ``run_ids`` (<= 100), re-reading sampled runs by windows."""
        rows = self.get(run_ids, key)
        return self._refine(rows, key, None)

    def _refine(self, rows: list[dict], key: str, window: tuple[int, int] | None) -> list[dict]:
        per_run: dict[str, list[dict]] = {}
        for row in rows:
            per_run.setdefault(row["run_id"], []).append(row)
        done: list[dict] = []
        full: list[str] = []
        for rid, rr in per_run.items():
            if len(rr) >= _HTTP_MAX_RESULTS:
                full.append(rid)
            else:
                done.extend(rr)
        if not full:
            return done
        # The server sampled these runs (it keeps the first and last rows): split
        # the step range in two and read each half, recursively.
        steps = [int(r.get("step", 0)) for rid in full for r in per_run[rid]]
        lo, hi = (min(steps), max(steps)) if window is None else window
        if lo >= hi:
            # >= 2500 values at one single step: only the per-run API returns all.
            return done + self._single_step(full, key, lo)
        mid = (lo + hi) // 2
        for half in ((lo, mid), (mid + 1, hi)):
            done += self._refine(self.get(full, key, half), key, half)
        return done

    def _single_step(self, run_ids: list[str], key: str, step: int) -> list[dict]:
        client = _client(self.url.split("/ajax-api/")[0])
        out = []
        for rid in run_ids:
            for mt in client.get_metric_history(rid, key):
                if mt.step == step:
                    out.append({"run_id": rid, "key": key, "step": mt.step,
                                "timestamp": mt.timestamp, "value": mt.value})
        return out


def _history_http(
    uri: str, experiment: str, keys: list[str] | None, numbers: list[int] | None
) -> pd.DataFrame:
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
    if len(jobs) > 1:
        with ThreadPoolExecutor(max_workers=_HTTP_THREADS) as pool:
            results = list(pool.map(lambda job: bulk.complete(*job), jobs))
    else:
        results = [bulk.complete(*job) for job in jobs]
    rows = [row for res in results for row in res]
    return _raw_frame(
        (r["run_id"] for r in rows),
        (trial_of[r["run_id"]] for r in rows),
        (int(r.get("step", 0)) for r in rows),
        (r["key"] for r in rows),
        (int(r.get("timestamp", 0)) for r in rows),
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

