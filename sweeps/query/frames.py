"""Building, de-duplicating and sorting the frames :mod:`sweeps.query` returns, with pandas' own
operations (``sort_values``, ``drop_duplicates``, ``pivot``, ``merge``).

* :func:`raw_frame` / :func:`empty_raw`: the raw rows a backend hands back (:data:`RAW_COLUMNS`).
* :func:`finish_long`: the latest value per (run, metric, epoch), sorted, with exact dtypes.
* :func:`to_wide`: one row per (run, epoch), one column per metric.
* :func:`trials_frame` / :func:`attach_final_metrics`: the frame of :func:`sweeps.query.trials`.
* :func:`attach_params`: a history frame with the trial's parameters (``history(params=...)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from sweeps.query.base import RAW_COLUMNS

__all__ = ["LONG_COLUMNS", "RAW_COLUMNS", "attach_final_metrics", "attach_params", "empty_raw", "finish_long",
           "param_column", "raw_frame", "to_wide", "trials_frame"]

#: Columns of the long form returned by :func:`sweeps.query.history`.
LONG_COLUMNS = ("run_id", "trial", "epoch", "metric", "value")

#: Columns of :func:`sweeps.query.trials` after the parameters (before the final metrics).
TRIAL_TAIL = ("duration_s", "datetime_start", "datetime_complete", "mlflow_run_id", "reason")

_RAW_DTYPES = {"run_id": str, "trial": "int64", "epoch": "int64", "metric": str, "timestamp": "int64",
               "value": "float64"}


def raw_frame(
    run_id: Iterable[str],
    trial: Iterable[int],
    epoch: Iterable[int],
    metric: Iterable[str],
    timestamp: Iterable[int | None],
    value: Iterable[float],
) -> pd.DataFrame:
    """A raw frame (:data:`RAW_COLUMNS`, exact dtypes) from per-row columns; a missing
    timestamp counts as 0."""
    df = pd.DataFrame({"run_id": list(run_id), "trial": list(trial), "epoch": list(epoch),
                       "metric": list(metric), "timestamp": list(timestamp), "value": list(value)},
                      columns=list(RAW_COLUMNS))
    return typed_raw(df)


def typed_raw(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` (the raw columns) with the raw dtypes; a missing timestamp counts as 0."""
    df = df.astype({"timestamp": "float64"}) if df["timestamp"].hasnans else df
    return df.fillna({"timestamp": 0}).astype(_RAW_DTYPES)


def empty_raw() -> pd.DataFrame:
    return raw_frame([], [], [], [], [], [])


def finish_long(raw: pd.DataFrame) -> pd.DataFrame:
    """The long form of :func:`sweeps.query.history` from a backend's raw rows.

    Of several values of one (run, metric, epoch) the one logged last wins: the latest
    timestamp, on a tie the larger value, NaN last (so the result does not depend on the
    order the backend returned rows in). Sorted by (trial, run_id, metric, epoch);
    columns :data:`LONG_COLUMNS`; ``trial`` and ``epoch`` int64, ``value`` float64.
    """
    raw = typed_raw(raw)
    order = ["trial", "run_id", "metric", "epoch", "timestamp", "value"]
    # One sort puts every (run, metric, epoch) group together, its latest value last.
    ordered = raw.sort_values(order, kind="stable", na_position="last")
    latest = ordered.drop_duplicates(["run_id", "metric", "epoch"], keep="last")
    return latest.loc[:, list(LONG_COLUMNS)].reset_index(drop=True)


def to_wide(long: pd.DataFrame, keys: Sequence[str] | None) -> pd.DataFrame:
    """One row per (run_id, trial, epoch) that has a value, one float column per metric:
    the order of ``keys`` when given (missing ones all NaN), else sorted by name."""
    index = ["run_id", "trial", "epoch"]
    # (run, metric, epoch) is unique after finish_long: a plain pivot, no aggregation.
    wide = long.pivot(index=index, columns="metric", values="value")
    columns = list(keys) if keys is not None else sorted(map(str, wide.columns))
    wide = wide.reindex(columns=columns)
    wide.columns = pd.Index([str(c) for c in wide.columns], name=None)
    wide = wide.reset_index().astype({"run_id": str, "trial": "int64", "epoch": "int64",
                                      **dict.fromkeys(columns, "float64")})
    return wide.sort_values(["trial", "run_id", "epoch"], kind="stable").reset_index(drop=True)


def trials_frame(rows: Sequence[Mapping[str, Any]], params: Sequence[Mapping[str, Any]],
                 n_values: int) -> pd.DataFrame:
    """The frame of :func:`sweeps.query.trials` without final metrics.

    ``rows``: one mapping per trial with ``trial``, ``state``, ``value`` (and ``value_0``...
    for ``n_values`` > 1 objectives) and :data:`TRIAL_TAIL`; ``params``: each trial's
    hyperparameters. Columns: the fixed ones, then the parameters in order of first
    appearance (NaN where a trial has none), then :data:`TRIAL_TAIL`.
    """
    fixed = ["trial", "state", "value"] + [f"value_{i}" for i in range(n_values if n_values > 1 else 0)]
    head = pd.DataFrame(list(rows), columns=[*fixed, *TRIAL_TAIL])
    param_frame = pd.DataFrame.from_records(list(params), index=head.index)
    clash = set(param_frame.columns) & set(head.columns)
    if clash:  # parameter names never contain "/" nor equal a fixed column (docs/vocabulary.md)
        raise ValueError(f"hyperparameter names {sorted(clash)} collide with the trials frame's own columns")
    df = pd.concat([head[fixed], param_frame, head[list(TRIAL_TAIL)]], axis=1)
    df = df.astype({"trial": "int64", "value": "float64", "duration_s": "float64",
                    **{f"value_{i}": "float64" for i in range(n_values if n_values > 1 else 0)}})
    for col in ("datetime_start", "datetime_complete"):
        df[col] = pd.to_datetime(df[col])
    for col in ("mlflow_run_id", "reason"):  # object columns: None (not NaN) when absent
        df[col] = df[col].astype(object).where(df[col].notna(), None)
    return df.sort_values("trial", kind="stable").reset_index(drop=True)


def attach_final_metrics(df: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """``df`` (:func:`trials_frame`) with one float column per metric key of ``runs``.

    ``runs``: one row per trial run with ``run_id``, ``trial`` (-1: no valid tag) and one
    column per metric key (the run's final value). A trial's run is the one named by its
    ``mlflow_run_id``, else the only run tagged with its number (``mlflow_run_id`` is
    then filled in). Metric keys contain a ``/`` and parameter names never do, so the
    columns cannot collide.
    """
    metric_cols = sorted(c for c in runs.columns if c not in ("run_id", "trial"))
    clash = set(metric_cols) & set(df.columns)
    if clash:
        raise ValueError(f"metric keys {sorted(clash)} collide with the trials frame's columns")
    # trials without a run id: the single run tagged with their number (none if several are)
    tagged = runs.loc[runs["trial"] >= 0, ["trial", "run_id"]].drop_duplicates("trial", keep=False)
    by_tag = df[["trial"]].merge(tagged, on="trial", how="left")["run_id"].to_numpy()
    run_id = df["mlflow_run_id"].where(df["mlflow_run_id"].notna(), by_tag)
    df = df.assign(mlflow_run_id=run_id.astype(object).where(run_id.notna(), None))
    if not metric_cols:
        return df
    # a run id that names no trial run of the experiment gets NaN metrics (and keeps its id)
    values = runs.set_index("run_id")[metric_cols].astype("float64").reindex(df["mlflow_run_id"].to_numpy())
    values.index = df.index
    return pd.concat([df, values], axis=1)


def param_column(text: pd.Series) -> pd.Series:
    """An MLflow param column (text) typed back: int64 when every value is an integer, float64 when
    every value is a number (NaN where a run lacks the param), else the text itself (``"[30]"``,
    ``"sigmoid"``; None where missing)."""
    present = text.notna()
    numbers = pd.to_numeric(text.where(present), errors="coerce")
    if not numbers[present].notna().all():
        return text.astype(object).where(present, None)
    if present.all() and text.astype(str).str.fullmatch(r"[+-]?\d+").all():
        return numbers.astype("int64")
    return numbers.astype("float64")


def attach_params(frame: pd.DataFrame, params: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (a history frame, long or wide) with one column per parameter of ``params``
    (``run_id`` and one text column per MLflow param, :func:`sweeps.query.client.run_params`),
    appended after the frame's own columns, matched by ``run_id`` and typed by :func:`param_column`.
    Parameter columns are bare names (``docs/vocabulary.md``); a name equal to one of the frame's
    columns is a ValueError.
    """
    names = [c for c in params.columns if c != "run_id"]
    clash = set(names) & set(frame.columns)
    if clash:
        raise ValueError(f"parameter names {sorted(clash)} collide with the history frame's own columns")
    by_run = params.drop_duplicates("run_id").set_index("run_id")
    out = frame.copy()
    for name in names:
        column = by_run[name].reindex(frame["run_id"].to_numpy())
        column.index = frame.index
        out[name] = param_column(column.astype(object))
    return out
