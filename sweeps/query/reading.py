"""The two readers of a sweep (the public API is :mod:`sweeps.query`): :func:`trials` (Optuna trials joined
with their MLflow runs) and :func:`history` (every logged value of every trial run, through one of three
backends).
"""


from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

import pandas as pd

from sweeps.names import EXPERIMENT_PREFIX, TRIAL_REASON, TRIAL_RUN
from sweeps.query import client, database, rest
from sweeps.query.base import HistoryReader, Unsupported
from sweeps.query.frames import attach_final_metrics, attach_params, finish_long, to_wide, trials_frame
from sweeps.redaction import redact, redact_url
from sweeps.stores import (DB_SCHEMES, HISTORY_METHODS, experiment_prefix, is_journal, journal_storage,
                           require_sqlite_file, scheme)

#: Default prefix of the MLflow experiment name of a study (when ``mlflow.yml`` sets none).
DEFAULT_PREFIX = EXPERIMENT_PREFIX

#: The backends, by ``method`` name.
READERS: dict[str, HistoryReader] = {"sql": database.read_history, "http": rest.read_history,
                                     "api": client.read_history}
#: The ``method`` values: ``"auto"`` and the backends (defined in :mod:`sweeps.stores`, which the CLI
#: imports without pandas).
METHODS = HISTORY_METHODS


def experiment_for(study_name: str, prefix: str | None = None) -> str:
    """The MLflow experiment name the tracker uses for ``study_name``.

    ``prefix`` None: the one the CLI uses, the ``experiment_prefix`` of ``mlflow.yml`` in the working
    directory, else :data:`DEFAULT_PREFIX` (:func:`sweeps.stores.experiment_prefix`). Every function
    here that takes ``experiment_name`` uses this when it is not given.
    """
    return f"{experiment_prefix() if prefix is None else prefix}{study_name}"


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
    the trial's run follows, one column per metric key (``eval/accuracy``,
    ``train/eta``, ...), fetched with one paginated ``search_runs`` over the
    experiment. Runs are matched by the trial's ``mlflow_run_id`` user attribute,
    or else by the run's ``sweeps.trial_number`` tag (and ``mlflow_run_id`` is then
    filled from it).

    ``storage`` is an Optuna storage URL (RDB URL, or a journal/Redis URL as
    understood by :func:`sweeps.study.storage.open_storage`) or a storage object.
    """
    import optuna

    study = optuna.load_study(study_name=study_name, storage=_optuna_storage(storage))
    n_values = len(study.directions)
    rows, params = [], []
    for t in study.get_trials(deepcopy=False):
        start, complete = t.datetime_start, t.datetime_complete
        row: dict[str, Any] = {"trial": t.number, "state": t.state.name,
                               "value": float(t.value) if n_values == 1 and t.value is not None else math.nan}
        if n_values > 1:
            row.update({f"value_{i}": float(t.values[i]) if t.values is not None else math.nan
                        for i in range(n_values)})
        row.update(duration_s=(complete - start).total_seconds() if start and complete else math.nan,
                   datetime_start=start, datetime_complete=complete,
                   mlflow_run_id=t.user_attrs.get(TRIAL_RUN), reason=t.user_attrs.get(TRIAL_REASON))
        rows.append(row)
        params.append(t.params)
    df = trials_frame(rows, params, n_values)
    if tracking_uri is not None:
        experiment = experiment_name or experiment_for(study_name)
        require_sqlite_file(tracking_uri)
        runs = client.search_trial_runs(tracking_uri, experiment)
        if runs is None:
            warnings.warn(f"no MLflow experiment {experiment!r} at {redact_url(tracking_uri)}: no metric columns added",
                          stacklevel=2)
        else:
            df = attach_final_metrics(df, client.final_metrics(runs))
    return df


def _optuna_storage(storage: Any) -> Any:
    """RDB URLs and storage objects go to Optuna as they are; journal / Redis URLs
    (``journal:///path``, ``path.log``, ``redis://``) are opened the way the workers
    open them (:func:`sweeps.stores.journal_storage`)."""
    if isinstance(storage, str | os.PathLike):
        text = os.fspath(storage)
        return journal_storage(text) if is_journal(text) else text
    return storage


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
    params: bool | Sequence[str] = False,
) -> pd.DataFrame:
    """Per-epoch values of all trial runs of ``study_name``.

    Long form (default): columns ``run_id, trial, epoch, metric, value`` (``trial``
    and ``epoch`` int64, ``value`` float64), sorted by (trial, run_id, metric,
    epoch). ``wide=True``: one row per (run_id, trial, epoch), one float column per
    metric (in the order of ``metrics`` when given, else sorted). ``epoch`` is the
    MLflow step: 0 is the initial network (before any step), 1 the first trained epoch.

    ``params`` adds the trial's parameters, one column each after the frame's own, named
    by their bare names (``eta``, ``lmbda``, ``batch_size``; ``docs/vocabulary.md``) and
    read from the run's MLflow params: ``True`` the parameters the study searched (its
    ``search_space``, as logged on the study's parent run: the parameter columns of
    :func:`trials`; without a parent run, every searchable setting the runs logged), a
    sequence the MLflow params of those names (any logged param: ``"lmbda_as_per_batch"``,
    ``"n_train"``, ...). Numbers come back as int64 / float64, other values as text
    (``hidden``: ``"[30]"``); a run without the param has NaN / None.

    ``metrics`` restricts the keys, ``trials`` the trial numbers. Only active runs
    tagged ``sweeps.role=trial`` in the study's experiment are read (never the
    parent run). ``method`` is ``"auto"``, ``"sql"``, ``"http"`` or ``"api"``
    (see the module docstring). A missing experiment gives an empty frame.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if isinstance(metrics, str):
        metrics = [metrics]
    if isinstance(params, str):
        params = [params]
    if not isinstance(params, bool) and not (isinstance(params, Sequence)
                                             and all(isinstance(p, str) for p in params)):
        raise ValueError(f"params must be a bool or a sequence of parameter names, got {params!r}")
    keys = list(dict.fromkeys(metrics)) if metrics is not None else None
    numbers = sorted({int(n) for n in trials}) if trials is not None else None
    experiment = experiment_name or experiment_for(study_name)
    require_sqlite_file(tracking_uri)
    chosen = _choose(method, tracking_uri)
    try:
        raw = READERS[chosen](tracking_uri, experiment, keys, numbers)
    except Unsupported as why:
        warnings.warn(f"method {chosen!r} cannot read {redact_url(tracking_uri)}: {redact(why)}; falling back to "
                      "MlflowClient.get_metric_history per run (slow)", RuntimeWarning, stacklevel=2)
        raw = READERS["api"](tracking_uri, experiment, keys, numbers)
    long = finish_long(raw)
    frame = to_wide(long, keys) if wide else long
    if params is False:
        return frame
    return attach_params(frame, _trial_params(tracking_uri, experiment, params))


def _trial_params(uri: str, experiment: str, params: bool | Sequence[str]) -> pd.DataFrame:
    """``run_id`` and the selected MLflow params of every trial run of ``experiment`` (text)."""
    mlflow_client = client.make_client(uri)
    runs = client.search_trial_runs(uri, experiment, mlflow_client) or []
    if params is True:
        names = client.searched_names(uri, experiment, mlflow_client)
        if names is None:
            from sweeps.config import SEARCHABLE

            logged = {k for r in runs for k in r.data.params}
            names = [k for k in SEARCHABLE if k in logged]
    else:
        names = list(dict.fromkeys(params))  # type: ignore[arg-type]
    return client.run_params(runs, names)


def _choose(method: str, uri: str) -> str:
    """The backend for ``method`` and the URI's scheme; ValueError when they do not fit."""
    kind = scheme(uri)
    is_db, is_http = kind in DB_SCHEMES, kind in ("http", "https")
    if method == "auto":
        return "sql" if is_db else "http" if is_http else "api"
    if method == "sql" and not is_db:
        raise ValueError(f"method='sql' needs a database tracking URI, got {redact_url(uri)!r}")
    if method == "http" and not is_http:
        raise ValueError(f"method='http' needs an http(s) tracking URI, got {redact_url(uri)!r}")
    return method


# --------------------------------------------------------------------------- findings

#: The columns of :func:`findings`.
