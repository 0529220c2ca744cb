"""sweeps.query against real stores: an MLflow SQLite store and an Optuna SQLite study.

The data is written with ``MlflowClient`` in the tracker's layout (parent run per
study, one child run per trial, one ``log_batch`` per epoch) from random values
that the tests keep as the oracle: every read path must return exactly them.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

optuna = pytest.importorskip("optuna")
mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402

from sweeps import query  # noqa: E402

KEYS = ["train/total_loss", "eval/accuracy", "layer1/weight_fro", "eta"]
TS0 = 1_700_000_000_000

# (epochs logged, Optuna state, reason, sets the mlflow_run_id user attr)
ALPHA_TRIALS = [
    (6, "COMPLETE", None, True),
    (3, "PRUNED", "pruned at epoch 3", True),
    (6, "COMPLETE", None, True),
    (2, "FAIL", "non-finite loss at epoch 2", True),
    (6, "COMPLETE", None, False),  # the attr is missing: matched by the trial-number tag
    (2, "RUNNING", None, True),
]


@dataclass
class Store:
    uri: str
    path: Path
    oracle: dict[tuple[str, str, int], float] = field(default_factory=dict)  # (run, key, epoch)
    trial_of: dict[str, int] = field(default_factory=dict)  # run id -> trial number
    epochs_of: dict[str, int] = field(default_factory=dict)
    params_of: dict[int, dict] = field(default_factory=dict)
    optuna_uri: str = ""


def _values(rng: np.random.Generator, n: int) -> np.ndarray:
    """Full-precision float64 values over many magnitudes (exact round trips are not trivial)."""
    return rng.normal(size=n) * 10.0 ** rng.integers(-6, 6, size=n)


def log_trial_run(client, store: Store, exp_id: str, parent_id: str, study: str, number: int,
                  epochs: int, keys: list[str], rng, params: dict, *, nan_at=()) -> str:
    run = client.create_run(exp_id, run_name=f"trial-{number:04d}", tags={
        "mlflow.parentRunId": parent_id, "sweeps.role": "trial", "sweeps.study": study,
        "sweeps.trial_number": str(number)})
    rid = run.info.run_id
    client.log_batch(rid, params=[Param(k, str(v)) for k, v in params.items()])
    for epoch in range(1, epochs + 1):
        vals = _values(rng, len(keys))
        for key, epoch_nan in nan_at:
            if epoch_nan == epoch and key in keys:
                vals[keys.index(key)] = math.nan
        client.log_batch(rid, metrics=[Metric(k, float(v), TS0 + 1000 * epoch, epoch)
                                       for k, v in zip(keys, vals)])
        for k, v in zip(keys, vals):
            store.oracle[(rid, k, epoch)] = float(v)
    store.trial_of[rid] = number
    store.epochs_of[rid] = epochs
    return rid


@pytest.fixture(scope="module")
def alpha(tmp_path_factory) -> Store:
    tmp = tmp_path_factory.mktemp("query")
    store = Store(uri=f"sqlite:///{tmp}/mlflow.db", path=tmp / "mlflow.db",
                  optuna_uri=f"sqlite:///{tmp}/optuna.db")
    client = MlflowClient(tracking_uri=store.uri)
    rng = np.random.default_rng(20240601)

    exp_id = client.create_experiment("sweeps/alpha", artifact_location=str(tmp / "artifacts"))
    parent = client.create_run(exp_id, run_name="alpha",
                               tags={"sweeps.role": "study", "sweeps.study": "alpha"})
    parent_id = parent.info.run_id
    # The parent run has metrics too: they must never show up.
    client.log_batch(parent_id, metrics=[Metric("eval/accuracy", 0.99, TS0, 1)])

    study = optuna.create_study(study_name="alpha", storage=store.optuna_uri, direction="minimize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    dists = {"eta": optuna.distributions.FloatDistribution(1e-3, 1.0, log=True),
             "lmbda": optuna.distributions.FloatDistribution(0.0, 10.0),
             "batch_size": optuna.distributions.CategoricalDistribution([10, 100, 1000])}
    for epochs, state, reason, set_attr in ALPHA_TRIALS:
        trial = study.ask(dists)
        number = trial.number
        nan_at = [("eval/accuracy", 2)] if number == 0 else []
        if number == 2:  # NaN at the final epoch: the final value is NaN too
            nan_at = [("eval/accuracy", epochs), ("train/total_loss", 1)]
        rid = log_trial_run(client, store, exp_id, parent_id, "alpha", number, epochs, KEYS, rng,
                            trial.params, nan_at=nan_at)
        store.params_of[number] = dict(trial.params)
        if number == 0:
            # A second value for (run, key, epoch 2), logged later: the later one wins.
            v = float(_values(rng, 1)[0])
            client.log_batch(rid, metrics=[Metric("train/total_loss", v, TS0 + 10_000_000, 2)])
            store.oracle[(rid, "train/total_loss", 2)] = v
        if set_attr:
            trial.set_user_attr("mlflow_run_id", rid)
        if reason:
            trial.set_user_attr("reason", reason)
        if state != "RUNNING":
            client.log_batch(rid, tags=[RunTag("sweeps.state", state),
                                        RunTag("sweeps.reason", reason or "")])
            client.set_terminated(rid, {"COMPLETE": "FINISHED", "PRUNED": "KILLED",
                                        "FAIL": "FAILED"}[state])
        if state == "COMPLETE":
            study.tell(trial, store.oracle[(rid, "train/total_loss", epochs)])
        elif state == "PRUNED":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif state == "FAIL":
            study.tell(trial, state=optuna.trial.TrialState.FAIL)

    # Noise that must be excluded: a deleted trial run, a run without the role tag,
    # and another study's experiment with its own trial runs.
    dead = client.create_run(exp_id, tags={"sweeps.role": "trial", "sweeps.trial_number": "99"})
    client.log_batch(dead.info.run_id, metrics=[Metric("eval/accuracy", 1.0, TS0, 1)])
    client.delete_run(dead.info.run_id)
    stray = client.create_run(exp_id, tags={"sweeps.trial_number": "98"})
    client.log_batch(stray.info.run_id, metrics=[Metric("eval/accuracy", 1.0, TS0, 1)])
    other = Store(uri=store.uri, path=store.path)
    beta_exp = client.create_experiment("sweeps/beta")
    beta_parent = client.create_run(beta_exp, tags={"sweeps.role": "study", "sweeps.study": "beta"})
    for n in range(3):
        log_trial_run(client, other, beta_exp, beta_parent.info.run_id, "beta", n, 4, KEYS, rng,
                      {"eta": 0.1})
    return store


def expected_long(store: Store, keys=None, trials=None) -> pd.DataFrame:
    rows = [(rid, store.trial_of[rid], epoch, key, value)
            for (rid, key, epoch), value in store.oracle.items()
            if (keys is None or key in keys) and (trials is None or store.trial_of[rid] in trials)]
    df = pd.DataFrame(rows, columns=list(query.LONG_COLUMNS))
    return df.sort_values(["trial", "metric", "epoch"], kind="stable").reset_index(drop=True)


def assert_same_long(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(query.LONG_COLUMNS)
    assert len(got) == len(want)
    assert got["trial"].dtype == np.int64 and got["epoch"].dtype == np.int64
    assert got["value"].dtype == np.float64
    for col in ("run_id", "metric"):
        assert got[col].tolist() == want[col].tolist(), col
    for col in ("trial", "epoch"):
        assert np.array_equal(got[col].to_numpy(), want[col].to_numpy()), col
    g, w = got["value"].to_numpy(np.float64), want["value"].to_numpy(np.float64)
    assert np.array_equal(np.isnan(g), np.isnan(w))
    assert np.array_equal(g, w, equal_nan=True)  # exact ==, not approximately


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- history


def test_experiment_for():
    assert query.experiment_for("alpha") == "sweeps/alpha"
    assert query.experiment_for("alpha", prefix="x-") == "x-alpha"


@pytest.mark.parametrize("method", ["sql", "api", "auto"])
def test_history_returns_exactly_the_logged_values(alpha, method):
    before = sha256(alpha.path)
    got = query.history("alpha", tracking_uri=alpha.uri, method=method)
    assert_same_long(got, expected_long(alpha))
    # sorted by (trial, metric, epoch); trials of other studies, the parent run,
    # deleted runs and untagged runs are excluded
    assert got.equals(got.sort_values(["trial", "metric", "epoch"], kind="stable"))
    assert set(got["trial"]) == set(range(len(ALPHA_TRIALS)))
    assert got["value"].isna().sum() == 3
    if method == "sql":
        assert sha256(alpha.path) == before  # read-only: the database file is untouched
        assert not list(alpha.path.parent.glob("mlflow.db-*"))


def test_history_sql_equals_api(alpha):
    a = query.history("alpha", tracking_uri=alpha.uri, method="sql")
    b = query.history("alpha", tracking_uri=alpha.uri, method="api")
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("method", ["sql", "api"])
def test_history_filters_metrics_and_trials(alpha, method):
    keys = ["eval/accuracy", "eta"]
    got = query.history("alpha", tracking_uri=alpha.uri, metrics=keys, method=method)
    assert set(got["metric"]) == set(keys)
    assert_same_long(got, expected_long(alpha, keys=keys))
    got = query.history("alpha", tracking_uri=alpha.uri, metrics=["eta"], trials=[1, 3],
                        method=method)
    assert_same_long(got, expected_long(alpha, keys=["eta"], trials={1, 3}))
    assert query.history("alpha", tracking_uri=alpha.uri, metrics=["nope"], method=method).empty


@pytest.mark.parametrize("method", ["sql", "api"])
def test_history_wide(alpha, method):
    got = query.history("alpha", tracking_uri=alpha.uri, wide=True, method=method)
    n_rows = sum(alpha.epochs_of.values())
    assert got.shape == (n_rows, 3 + len(KEYS))
    assert list(got.columns[:3]) == ["run_id", "trial", "epoch"]
    assert sorted(got.columns[3:]) == sorted(KEYS)
    assert got["trial"].dtype == np.int64 and got["epoch"].dtype == np.int64
    for row in got.itertuples(index=False):
        rec = row._asdict()
        assert alpha.trial_of[row.run_id] == row.trial
        for i, key in enumerate(got.columns[3:]):
            want = alpha.oracle[(row.run_id, key, row.epoch)]
            have = row[3 + i]
            assert (math.isnan(want) and math.isnan(have)) or have == want, (rec, key)
    sel = query.history("alpha", tracking_uri=alpha.uri, wide=True, metrics=["eta", "eval/accuracy"],
                        method=method)
    assert list(sel.columns) == ["run_id", "trial", "epoch", "eta", "eval/accuracy"]
    assert len(sel) == n_rows


def test_history_missing_experiment_is_empty(alpha):
    got = query.history("nope", tracking_uri=alpha.uri, method="sql")
    assert got.empty and list(got.columns) == list(query.LONG_COLUMNS)
    got = query.history("nope", tracking_uri=alpha.uri, method="api")
    assert got.empty and list(got.columns) == list(query.LONG_COLUMNS)
    got = query.history("alpha", experiment_name="sweeps/beta", tracking_uri=alpha.uri,
                        method="sql", metrics=["eta"])
    assert sorted(set(got["trial"])) == [0, 1, 2] and len(got) == 12


def test_history_refuses_missing_sqlite_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        query.history("alpha", tracking_uri=f"sqlite:///{tmp_path}/absent.db")
    assert not (tmp_path / "absent.db").exists()


def test_auto_falls_back_to_api_when_the_schema_differs(alpha, monkeypatch):
    import sqlalchemy.exc

    def broken(*args, **kwargs):
        raise sqlalchemy.exc.OperationalError("SELECT ...", {}, Exception("no such column: m.is_nan"))

    monkeypatch.setattr(query, "_history_sql", broken)
    with pytest.warns(RuntimeWarning, match="falling back"):
        got = query.history("alpha", tracking_uri=alpha.uri, method="auto", metrics=["eta"])
    assert_same_long(got, expected_long(alpha, keys=["eta"]))
    with pytest.raises(sqlalchemy.exc.OperationalError):
        query.history("alpha", tracking_uri=alpha.uri, method="sql")


def test_sql_schema_errors_are_recognised(alpha, tmp_path):
    import sqlite3

    import sqlalchemy.exc

    copy = tmp_path / "old.db"
    shutil.copy(alpha.path, copy)
    with sqlite3.connect(copy) as con:
        con.execute("ALTER TABLE metrics RENAME COLUMN is_nan TO nan_flag")
    with pytest.raises(sqlalchemy.exc.OperationalError) as info:
        query.history("alpha", tracking_uri=f"sqlite:///{copy}", method="sql")
    assert query._is_schema_error(info.value)


def test_history_rejects_bad_method(alpha):
    with pytest.raises(ValueError):
        query.history("alpha", tracking_uri=alpha.uri, method="bulk")
    with pytest.raises(ValueError):
        query.history("alpha", tracking_uri=alpha.uri, method="http")


def test_history_sql_by_chunks_of_runs_and_keys(alpha, monkeypatch):
    """Runs are read by chunks and long key lists filtered after the query (both to
    stay under SQLite's bound-parameter limit): same result."""
    monkeypatch.setattr(query, "_SQL_RUN_CHUNK", 2)
    assert_same_long(query.history("alpha", tracking_uri=alpha.uri, method="sql"),
                     expected_long(alpha))
    monkeypatch.setattr(query, "_SQL_MAX_KEYS", 1)
    keys = ["eval/accuracy", "eta", "nope"]
    got = query.history("alpha", tracking_uri=alpha.uri, method="sql", metrics=keys)
    assert_same_long(got, expected_long(alpha, keys=keys))


def test_finish_long_latest_value_wins_and_any_step_range():
    """Duplicates: the latest timestamp wins (then the larger value, NaN last), whatever
    the row order; steps far apart (no packed int64 sort key) sort the same way."""
    big = 2**62
    rows = [  # run, trial, step, key, timestamp, value
        ("b", 1, 5, "x", 10, 1.0), ("b", 1, 5, "x", 30, 3.0), ("b", 1, 5, "x", 20, 2.0),
        ("a", 1, -big, "x", 1, 0.5), ("a", 1, big, "x", 1, 0.25), ("a", 1, big, "w", 1, 9.0),
        ("c", 0, 1, "x", 5, 1.0), ("c", 0, 1, "x", 5, math.nan), ("c", 0, 1, "x", 5, 7.0),
        ("d", -1, 3, "x", 0, 4.0),
    ]
    for order in (rows, rows[::-1]):
        got = query._finish_long(query._raw_frame(*zip(*order)))
        assert list(got.columns) == list(query.LONG_COLUMNS)
        assert got["trial"].dtype == np.int64 and got["epoch"].dtype == np.int64
        assert got[["run_id", "trial", "epoch", "metric"]].values.tolist() == [
            ["d", -1, 3, "x"], ["c", 0, 1, "x"], ["a", 1, big, "w"], ["a", 1, -big, "x"],
            ["a", 1, big, "x"], ["b", 1, 5, "x"]]
        assert np.array_equal(got["value"], [4.0, math.nan, 9.0, 0.5, 0.25, 3.0], equal_nan=True)


# ---------------------------------------------------------------------------- trials


def test_trials_one_row_per_trial_with_final_metrics(alpha):
    df = query.trials("alpha", storage=alpha.optuna_uri, tracking_uri=alpha.uri)
    assert df["trial"].tolist() == list(range(len(ALPHA_TRIALS)))
    head = ["trial", "state", "value", "eta", "lmbda", "batch_size", "duration_s",
            "datetime_start", "datetime_complete", "mlflow_run_id", "reason"]
    assert list(df.columns[: len(head)]) == head
    # the record's "eta" metric collides with the "eta" hyperparameter
    assert sorted(df.columns[len(head):]) == sorted(
        ["train/total_loss", "eval/accuracy", "layer1/weight_fro", "metrics.eta"])
    run_of = {n: rid for rid, n in alpha.trial_of.items()}
    for row in df.to_dict("records"):
        n = row["trial"]
        epochs, state, reason, _ = ALPHA_TRIALS[n]
        rid = run_of[n]
        assert row["state"] == state
        assert row["mlflow_run_id"] == rid
        assert row["reason"] == reason
        assert {k: row[k] for k in ("eta", "lmbda", "batch_size")} == alpha.params_of[n]
        if state == "COMPLETE":
            assert row["value"] == alpha.oracle[(rid, "train/total_loss", epochs)]
            assert row["duration_s"] >= 0
        else:
            assert math.isnan(row["value"])
        if state == "RUNNING":
            assert pd.isna(row["datetime_complete"]) and math.isnan(row["duration_s"])
        for key in KEYS:
            col = "metrics.eta" if key == "eta" else key
            want = alpha.oracle[(rid, key, epochs)]
            assert (math.isnan(want) and math.isnan(row[col])) or row[col] == want, (n, key)
    assert math.isnan(df.loc[2, "eval/accuracy"])  # NaN at the last epoch


def test_trials_calls_search_runs_once(alpha, monkeypatch):
    calls = []
    original = MlflowClient.search_runs

    def counting(self, *args, **kwargs):
        calls.append(kwargs.get("experiment_ids", args[:1]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "search_runs", counting)
    query.trials("alpha", storage=alpha.optuna_uri, tracking_uri=alpha.uri)
    assert len(calls) == 1


def test_trials_without_tracking_and_with_storage_object(alpha):
    storage = optuna.storages.RDBStorage(alpha.optuna_uri)
    df = query.trials("alpha", storage=storage)
    assert len(df) == len(ALPHA_TRIALS)
    assert df.columns[-1] == "reason"
    assert df["state"].tolist() == [s for _, s, _, _ in ALPHA_TRIALS]
    assert df["mlflow_run_id"].isna().sum() == 1  # the trial without the attr


# ------------------------------------------------------------------------------ http

N_HTTP_RUNS, N_HTTP_EPOCHS, HTTP_KEYS, LONG_STEPS = 120, 3, ["eval/accuracy", "train/total_loss"], 2600


@pytest.fixture(scope="module")
def served(tmp_path_factory, services):
    """A real ``mlflow server`` over a SQLite store holding 120 trial runs (+ a long run)."""
    exe = shutil.which("mlflow", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                       os.environ.get("PATH", "")]))
    if exe is None:
        pytest.skip("the `mlflow` executable is not installed: cannot start a tracking server")
    tmp = tmp_path_factory.mktemp("served")
    store = Store(uri=f"sqlite:///{tmp}/mlflow.db", path=tmp / "mlflow.db")
    client = MlflowClient(tracking_uri=store.uri)  # creates (migrates) the store first
    rng = np.random.default_rng(7)
    exp = client.create_experiment("sweeps/wide", artifact_location=str(tmp / "artifacts"))
    parent = client.create_run(exp, tags={"sweeps.role": "study", "sweeps.study": "wide"})
    for n in range(N_HTTP_RUNS):
        log_trial_run(client, store, exp, parent.info.run_id, "wide", n, N_HTTP_EPOCHS, HTTP_KEYS,
                      rng, {"eta": 0.5}, nan_at=[("eval/accuracy", 2)] if n % 17 == 0 else [])
    # More steps than the UI's bulk-interval route returns per run (2500, sampled): all
    # must come back.
    long_store = Store(uri=store.uri, path=store.path)
    exp_long = client.create_experiment("sweeps/long", artifact_location=str(tmp / "artifacts"))
    run = client.create_run(exp_long, tags={"sweeps.role": "trial", "sweeps.trial_number": "0"})
    vals = _values(rng, LONG_STEPS)
    metrics = [Metric("train/total_loss", float(v), TS0 + i, i + 1) for i, v in enumerate(vals)]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run.info.run_id, metrics=metrics[i:i + 1000])
    long_store.oracle = {(run.info.run_id, "train/total_loss", i + 1): float(v)
                         for i, v in enumerate(vals)}
    long_store.trial_of = {run.info.run_id: 0}

    port = services.free_port()
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    cmd = [exe, "server", "--backend-store-uri", store.uri, "--artifacts-destination", str(tmp / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with services.serve(cmd, port, tmp / "server.log", cwd=tmp, env=env, timeout=60) as (url, _):
        yield url, store, long_store


@pytest.mark.services
def test_history_http_equals_sql_equals_logged(served, monkeypatch):
    url, store, long_store = served
    requests_made = []
    original_get = query._BulkHistory.get

    def counting_get(self, run_ids, key):
        requests_made.append((len(run_ids), key))
        return original_get(self, run_ids, key)

    monkeypatch.setattr(query._BulkHistory, "get", counting_get)
    want = expected_long(store)
    via_http = query.history("wide", tracking_uri=url, method="http")
    # 120 runs -> chunks of 100 and 20, one request per key and chunk
    assert sorted(requests_made) == sorted((n, k) for n in (100, 20) for k in HTTP_KEYS)
    via_auto = query.history("wide", tracking_uri=url)  # auto -> http for http URIs
    via_sql = query.history("wide", tracking_uri=store.uri, method="sql")
    assert len(want) == N_HTTP_RUNS * N_HTTP_EPOCHS * len(HTTP_KEYS)
    assert_same_long(via_http, want)
    assert_same_long(via_sql, want)
    pd.testing.assert_frame_equal(via_http, via_sql)
    pd.testing.assert_frame_equal(via_auto, via_http)
    sel = query.history("wide", tracking_uri=url, method="http", metrics=["eval/accuracy"],
                        trials=range(100, 120))
    assert_same_long(sel, expected_long(store, keys=["eval/accuracy"], trials=set(range(100, 120))))

    requests_made.clear()
    got = query.history("long", tracking_uri=url, method="http")
    # more values than the bulk-interval route returns per run (2500, sampled):
    # get-history-bulk returns them all, in one request
    assert len(got) == LONG_STEPS
    assert requests_made == [(1, "train/total_loss")]
    assert_same_long(got, expected_long(long_store))


@pytest.mark.services
@pytest.mark.parametrize("sorted_answers", [True, False])
def test_history_http_rereads_cut_off_answers(served, monkeypatch, sorted_answers):
    """Answers cut off at the row cap are read again until complete: from the last
    run seen when the server answers sorted by run id, else by halves; a single run
    over the cap through the per-run API."""
    url, store, long_store = served
    cap = 100
    monkeypatch.setattr(query, "_HTTP_MAX_RESULTS", cap)  # also the max_results sent
    requests_made, per_run = [], []
    original_get, original_per_run = query._BulkHistory.get, query._BulkHistory._per_run

    def get(self, run_ids, key):
        rows = original_get(self, run_ids, key)
        assert len(rows) <= cap  # the server honours max_results
        requests_made.append((len(run_ids), key, len(rows)))
        return rows if sorted_answers else rows[::-1]  # reversed: no longer sorted by run

    def counting_per_run(self, run_id, key):
        per_run.append((run_id, key))
        return original_per_run(self, run_id, key)

    monkeypatch.setattr(query._BulkHistory, "get", get)
    monkeypatch.setattr(query._BulkHistory, "_per_run", counting_per_run)
    got = query.history("wide", tracking_uri=url, method="http")
    assert_same_long(got, expected_long(store))
    pd.testing.assert_frame_equal(got, query.history("wide", tracking_uri=store.uri, method="sql"))
    assert any(n == cap for _, _, n in requests_made)  # some answers were cut off ...
    assert not per_run  # ... and every run has fewer values than the cap
    if sorted_answers:
        # 100 runs x 3 values at 100 rows per answer: 33 complete runs per request
        # (the last run seen may be cut off), so 4 requests per key for that chunk
        per_key = [n for n, k, _ in requests_made if k == HTTP_KEYS[0]]
        assert sorted(per_key) == sorted([100, 67, 34, 1, 20])

    requests_made.clear()
    got = query.history("long", tracking_uri=url, method="http")
    assert_same_long(got, expected_long(long_store))
    assert requests_made == [(1, "train/total_loss", cap)]
    assert [key for _, key in per_run] == ["train/total_loss"]


@pytest.mark.services
def test_history_http_falls_back_to_api_without_the_route(served, monkeypatch):
    url, store, _ = served
    monkeypatch.setattr(query._BulkHistory, "ROUTE", "/ajax-api/2.0/mlflow/metrics/no-such-route")
    with pytest.warns(RuntimeWarning, match="falling back"):
        got = query.history("wide", tracking_uri=url, method="http", metrics=["eval/accuracy"],
                            trials=range(10))
    assert_same_long(got, expected_long(store, keys=["eval/accuracy"], trials=set(range(10))))


def test_http_client_sends_basic_auth(monkeypatch):
    import base64

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret:x")
    bulk = query._BulkHistory("http://127.0.0.1:1/prefix/")
    assert bulk.url == "http://127.0.0.1:1/prefix/ajax-api/2.0/mlflow/metrics/get-history-bulk"
    assert bulk.headers["Authorization"] == "Basic " + base64.b64encode(b"alice:s3cret:x").decode()


# -------------------------------------------------------------------------- postgres

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"


@pytest.fixture
def pg_tracking_uri():
    """A fresh PostgreSQL database for an MLflow store (dropped afterwards)."""
    import uuid

    def unavailable(reason: str):
        if os.environ.get("SWEEPS_REQUIRE_SERVICES") == "1":
            pytest.fail(f"SWEEPS_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)

    try:
        import psycopg2
    except ImportError:
        unavailable("psycopg2 is not installed (pip install -e '.[test]')")
    try:
        admin = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres",
                                 connect_timeout=3)
    except Exception as err:  # noqa: BLE001
        unavailable(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} as {PG_USER}: {err}")
    admin.autocommit = True
    name = f"sweeps_test_query_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.mark.services
def test_history_sql_on_postgresql(pg_tracking_uri, tmp_path):
    store = Store(uri=pg_tracking_uri, path=tmp_path / "unused")
    client = MlflowClient(tracking_uri=pg_tracking_uri)
    rng = np.random.default_rng(11)
    exp = client.create_experiment("sweeps/pg", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(exp, tags={"sweeps.role": "study", "sweeps.study": "pg"})
    client.log_batch(parent.info.run_id, metrics=[Metric("eta", 1.0, TS0, 1)])
    for n in range(4):
        rid = log_trial_run(client, store, exp, parent.info.run_id, "pg", n, 3, KEYS, rng,
                            {"eta": 0.1}, nan_at=[("eta", 2)] if n == 1 else [])
    v = float(_values(rng, 1)[0])  # a later second value at the same step wins
    client.log_batch(rid, metrics=[Metric("eta", v, TS0 + 10_000_000, 1)])
    store.oracle[(rid, "eta", 1)] = v

    via_sql = query.history("pg", tracking_uri=pg_tracking_uri)  # auto -> sql
    assert_same_long(via_sql, expected_long(store))
    pd.testing.assert_frame_equal(via_sql, query.history("pg", tracking_uri=pg_tracking_uri,
                                                         method="api"))
    sel = query.history("pg", tracking_uri=pg_tracking_uri, method="sql", metrics=["eta"],
                        trials=[1, 3])
    assert_same_long(sel, expected_long(store, keys=["eta"], trials={1, 3}))
