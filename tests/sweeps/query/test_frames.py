"""sweeps.query.frames: de-duplicating, sorting and reshaping frames (pandas only, no store)."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from sweeps.query import frames

ROWS = [  # run, trial, step, key, timestamp, value
    ("b", 1, 5, "x", 10, 1.0), ("b", 1, 5, "x", 30, 3.0), ("b", 1, 5, "x", 20, 2.0),
    ("a", 1, -2**62, "x", 1, 0.5), ("a", 1, 2**62, "x", 1, 0.25), ("a", 1, 2**62, "w", 1, 9.0),
    ("c", 0, 1, "x", 5, 1.0), ("c", 0, 1, "x", 5, math.nan), ("c", 0, 1, "x", 5, 7.0),
    ("d", -1, 3, "x", 0, 4.0),
]


@pytest.mark.parametrize("order", [ROWS, ROWS[::-1]], ids=["forward", "reversed"])
def test_finish_long_latest_value_wins_and_any_step_range(order):
    """Duplicates: the latest timestamp wins (then the larger value, NaN last), whatever
    the row order; steps far apart sort the same way."""
    got = frames.finish_long(frames.raw_frame(*zip(*order)))
    assert list(got.columns) == list(frames.LONG_COLUMNS)
    assert got["trial"].dtype == np.int64 and got["epoch"].dtype == np.int64
    assert got["value"].dtype == np.float64
    assert got[["run_id", "trial", "epoch", "metric"]].values.tolist() == [
        ["d", -1, 3, "x"], ["c", 0, 1, "x"], ["a", 1, 2**62, "w"], ["a", 1, -2**62, "x"],
        ["a", 1, 2**62, "x"], ["b", 1, 5, "x"]]
    assert np.array_equal(got["value"], [4.0, math.nan, 9.0, 0.5, 0.25, 3.0], equal_nan=True)
    assert got.index.tolist() == list(range(6))


def test_raw_frame_types_and_missing_timestamps():
    raw = frames.raw_frame(["r"], [2], [1], ["train/eta"], [None], ["NaN"])
    assert list(raw.columns) == list(frames.RAW_COLUMNS)
    assert raw["timestamp"].tolist() == [0] and raw["timestamp"].dtype == np.int64
    assert math.isnan(raw["value"].iloc[0])
    empty = frames.empty_raw()
    assert empty.empty and list(empty.columns) == list(frames.RAW_COLUMNS)
    assert frames.finish_long(empty).empty


def test_to_wide_orders_columns_and_rows():
    long = frames.finish_long(frames.raw_frame(
        ["r2", "r1", "r1", "r1"], [1, 0, 0, 0], [1, 2, 1, 1], ["eval/accuracy", "train/eta", "train/eta",
                                                               "eval/accuracy"],
        [0, 0, 0, 0], [0.5, 0.25, 0.5, math.nan]))
    wide = frames.to_wide(long, None)
    assert list(wide.columns) == ["run_id", "trial", "epoch", "eval/accuracy", "train/eta"]
    assert wide[["run_id", "epoch"]].values.tolist() == [["r1", 1], ["r1", 2], ["r2", 1]]
    assert np.array_equal(wide["eval/accuracy"], [math.nan, math.nan, 0.5], equal_nan=True)
    chosen = frames.to_wide(long, ["train/eta", "nope"])
    assert list(chosen.columns) == ["run_id", "trial", "epoch", "train/eta", "nope"]
    assert chosen["nope"].isna().all() and chosen["nope"].dtype == np.float64
    empty = frames.to_wide(frames.finish_long(frames.empty_raw()), ["train/eta"])
    assert empty.empty and list(empty.columns) == ["run_id", "trial", "epoch", "train/eta"]


def _trial_rows():
    t0 = dt.datetime(2026, 1, 1, 12, 0, 0)
    return [
        {"trial": 1, "state": "PRUNED", "value": math.nan, "duration_s": 2.0, "datetime_start": t0,
         "datetime_complete": t0 + dt.timedelta(seconds=2), "mlflow_run_id": None, "reason": "pruned at epoch 3"},
        {"trial": 0, "state": "COMPLETE", "value": 0.5, "duration_s": 1.0, "datetime_start": t0,
         "datetime_complete": t0 + dt.timedelta(seconds=1), "mlflow_run_id": "r0", "reason": None},
    ]


def test_trials_frame_columns_and_types():
    df = frames.trials_frame(_trial_rows(), [{"eta": 0.1, "batch_size": 10}, {"eta": 0.2, "lmbda": 1.0}], 1)
    assert list(df.columns) == ["trial", "state", "value", "eta", "batch_size", "lmbda", *frames.TRIAL_TAIL]
    assert df["trial"].tolist() == [0, 1]  # sorted by trial
    assert df["eta"].tolist() == [0.2, 0.1]
    assert math.isnan(df.loc[0, "batch_size"]) and df.loc[1, "batch_size"] == 10
    assert df["mlflow_run_id"].tolist() == ["r0", None] and df["reason"].tolist() == [None, "pruned at epoch 3"]
    assert pd.api.types.is_datetime64_any_dtype(df["datetime_start"])
    multi = frames.trials_frame([{**r, "value_0": 1.0, "value_1": 2.0} for r in _trial_rows()], [{}, {}], 2)
    assert list(multi.columns[:5]) == ["trial", "state", "value", "value_0", "value_1"]


def test_trials_frame_refuses_a_parameter_named_like_a_column():
    with pytest.raises(ValueError, match="'state'"):
        frames.trials_frame(_trial_rows(), [{"state": 1}, {}], 1)


def test_attach_final_metrics_matches_runs_by_id_then_by_tag():
    df = frames.trials_frame(_trial_rows(), [{"eta": 0.1}, {"eta": 0.2}], 1)
    runs = pd.DataFrame({"run_id": ["r0", "r1", "stray"], "trial": [0, 1, -1],
                         "train/eta": [0.2, 0.1, 9.0], "eval/accuracy": [0.9, math.nan, 9.0]})
    got = frames.attach_final_metrics(df, runs)
    assert list(got.columns[-2:]) == ["eval/accuracy", "train/eta"]  # sorted metric keys, after the tail
    assert got["mlflow_run_id"].tolist() == ["r0", "r1"]  # trial 1 had no id: found by its tag
    assert got["train/eta"].tolist() == [0.2, 0.1] and got["eta"].tolist() == [0.2, 0.1]
    assert got.loc[0, "eval/accuracy"] == 0.9 and math.isnan(got.loc[1, "eval/accuracy"])
    # two runs tagged with the same trial: none is chosen; an unknown run id keeps its id, NaN metrics
    twice = pd.concat([runs, runs.assign(run_id="r1b").iloc[[1]]], ignore_index=True)
    df2 = df.assign(mlflow_run_id=pd.Series(["gone", None], dtype=object))
    got = frames.attach_final_metrics(df2, twice)
    assert got["mlflow_run_id"].tolist() == ["gone", None]
    assert got[["train/eta", "eval/accuracy"]].isna().all().all()


def test_attach_final_metrics_refuses_colliding_names():
    df = frames.trials_frame(_trial_rows(), [{"eta": 0.1}, {}], 1)
    with pytest.raises(ValueError, match="eta"):
        frames.attach_final_metrics(df, pd.DataFrame({"run_id": ["r0"], "trial": [0], "eta": [0.1]}))


def test_param_column_types_mlflow_text_back():
    ints = frames.param_column(pd.Series(["10", "-3", "250"], dtype=object))
    assert ints.dtype == np.int64 and ints.tolist() == [10, -3, 250]
    floats = frames.param_column(pd.Series(["0.1", "10", None, "1e-05"], dtype=object))
    assert floats.dtype == np.float64
    assert np.array_equal(floats, [0.1, 10.0, math.nan, 1e-05], equal_nan=True)
    # one absent value: an integer column cannot hold it, float64 with NaN
    assert frames.param_column(pd.Series(["10", None], dtype=object)).dtype == np.float64
    text = frames.param_column(pd.Series(["[30]", "[100, 30]", None], dtype=object))
    assert text.dtype == object and text.tolist() == ["[30]", "[100, 30]", None]
    assert frames.param_column(pd.Series(["True", "False"], dtype=object)).tolist() == ["True", "False"]


def test_attach_params_matches_by_run_and_refuses_collisions():
    frame = pd.DataFrame({"run_id": ["a", "b", "a", "z"], "trial": [0, 1, 0, 2], "epoch": [0, 0, 1, 0]})
    params = pd.DataFrame({"run_id": ["b", "a"], "lmbda": ["2.5", "0.5"], "hidden": ["[30]", "[10]"]}, dtype=object)
    got = frames.attach_params(frame, params)
    assert list(got.columns) == ["run_id", "trial", "epoch", "lmbda", "hidden"]
    assert np.array_equal(got["lmbda"], [0.5, 2.5, 0.5, math.nan], equal_nan=True)
    assert got["hidden"].tolist() == ["[10]", "[30]", "[10]", None]
    with pytest.raises(ValueError, match=r"\['epoch'\] collide"):
        frames.attach_params(frame, pd.DataFrame({"run_id": ["a"], "epoch": ["1"]}))
