"""sweeps.query's public readers (``sweeps/query/reading.py``, re-exported by ``sweeps.query``) against real stores: an MLflow SQLite
store and an Optuna SQLite study.

The data is written with ``MlflowClient`` in the tracker's layout (parent run per
study, one child run per trial, one ``log_batch`` per epoch) from random values
that the tests keep as the oracle: every read path must return exactly them.

The fixtures and helpers here (``alpha``, ``Store``, ``log_trial_run``, ``expected_long``,
``assert_same_long``) are shared with the per-backend modules ``test_database.py``,
``test_rest.py`` and ``test_client.py``.
"""

from __future__ import annotations

import hashlib
import math
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

# "train/eta" is the record's step size; the "eta" hyperparameter sits next to it in trials()
KEYS = ["train/total_loss", "eval/accuracy", "layer1/weight_fro", "train/eta"]
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
def alpha(request, tmp_path_factory) -> Store:
    """Built once per test session (kept on the session: the query modules import this fixture, and
    pytest may import this module twice) and only read by the tests."""
    store = getattr(request.session, "_sweeps_alpha_store", None)
    if store is None:
        store = _build_alpha(tmp_path_factory)
        request.session._sweeps_alpha_store = store
    return store


def _build_alpha(tmp_path_factory) -> Store:
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


def test_experiment_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no mlflow.yml here
    assert query.experiment_for("alpha") == f"{query.DEFAULT_PREFIX}alpha" == "sweeps/alpha"
    assert query.experiment_for("alpha", prefix="x-") == "x-alpha"


def test_experiment_for_takes_the_prefix_of_mlflow_yml_as_the_cli_does(tmp_path, monkeypatch):
    from sweeps.stores import resolve_locations

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlflow.yml").write_text("experiment_prefix: lab/\n")
    assert query.experiment_for("alpha") == resolve_locations().experiment_name("alpha") == "lab/alpha"
    assert query.experiment_for("alpha", prefix="x-") == "x-alpha"


def test_public_names():
    assert set(query.__all__) >= {"DEFAULT_PREFIX", "LONG_COLUMNS", "experiment_for", "history", "trials"}
    assert query.LONG_COLUMNS == ("run_id", "trial", "epoch", "metric", "value")
    assert set(query.READERS) == {"sql", "http", "api"} and query.METHODS == ("auto", *query.READERS)


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
    keys = ["eval/accuracy", "train/eta"]
    got = query.history("alpha", tracking_uri=alpha.uri, metrics=keys, method=method)
    assert set(got["metric"]) == set(keys)
    assert_same_long(got, expected_long(alpha, keys=keys))
    got = query.history("alpha", tracking_uri=alpha.uri, metrics=["train/eta"], trials=[1, 3],
                        method=method)
    assert_same_long(got, expected_long(alpha, keys=["train/eta"], trials={1, 3}))
    assert query.history("alpha", tracking_uri=alpha.uri, metrics=["nope"], method=method).empty
    # a bare "eta" is a hyperparameter name, never a metric key
    assert query.history("alpha", tracking_uri=alpha.uri, metrics="eta", method=method).empty


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
    sel = query.history("alpha", tracking_uri=alpha.uri, wide=True, metrics=["train/eta", "eval/accuracy"],
                        method=method)
    assert list(sel.columns) == ["run_id", "trial", "epoch", "train/eta", "eval/accuracy"]
    assert len(sel) == n_rows


def test_history_missing_experiment_is_empty(alpha):
    got = query.history("nope", tracking_uri=alpha.uri, method="sql")
    assert got.empty and list(got.columns) == list(query.LONG_COLUMNS)
    got = query.history("nope", tracking_uri=alpha.uri, method="api")
    assert got.empty and list(got.columns) == list(query.LONG_COLUMNS)
    wide = query.history("nope", tracking_uri=alpha.uri, method="sql", wide=True, metrics=["train/eta"])
    assert wide.empty and list(wide.columns) == ["run_id", "trial", "epoch", "train/eta"]
    got = query.history("alpha", experiment_name="sweeps/beta", tracking_uri=alpha.uri,
                        method="sql", metrics=["train/eta"])
    assert sorted(set(got["trial"])) == [0, 1, 2] and len(got) == 12


def test_history_refuses_missing_sqlite_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        query.history("alpha", tracking_uri=f"sqlite:///{tmp_path}/absent.db")
    assert not (tmp_path / "absent.db").exists()


def test_history_rejects_bad_method(alpha):
    with pytest.raises(ValueError):
        query.history("alpha", tracking_uri=alpha.uri, method="bulk")
    with pytest.raises(ValueError):
        query.history("alpha", tracking_uri=alpha.uri, method="http")
    with pytest.raises(ValueError):
        query.history("alpha", tracking_uri="http://127.0.0.1:1", method="sql")


def test_unsupported_backend_warns_and_reads_through_the_api(alpha, monkeypatch):
    """Whatever backend cannot serve a store (:class:`Unsupported`) hands over to the per-run API."""
    def unsupported(*args):
        raise query.Unsupported("a reason the warning names")

    monkeypatch.setitem(query.READERS, "sql", unsupported)
    with pytest.warns(RuntimeWarning, match="a reason the warning names.*falling back"):
        got = query.history("alpha", tracking_uri=alpha.uri, method="sql", metrics=["train/eta"])
    assert_same_long(got, expected_long(alpha, keys=["train/eta"]))


# ---------------------------------------------------------------------------- trials


def test_trials_one_row_per_trial_with_final_metrics(alpha):
    df = query.trials("alpha", storage=alpha.optuna_uri, tracking_uri=alpha.uri)
    assert df["trial"].tolist() == list(range(len(ALPHA_TRIALS)))
    head = ["trial", "state", "value", "eta", "lmbda", "batch_size", "duration_s",
            "datetime_start", "datetime_complete", "mlflow_run_id", "reason"]
    assert list(df.columns[: len(head)]) == head
    # one vocabulary: parameters are bare names, metrics their slash-prefixed keys; no prefixing
    assert sorted(df.columns[len(head):]) == sorted(KEYS)
    assert not any(c.startswith(("metrics.", "params.")) for c in df.columns)
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
            want = alpha.oracle[(rid, key, epochs)]
            assert (math.isnan(want) and math.isnan(row[key])) or row[key] == want, (n, key)
    assert math.isnan(df.loc[2, "eval/accuracy"])  # NaN at the last epoch
    assert df["trial"].dtype == np.int64 and df["value"].dtype == np.float64
    assert df["mlflow_run_id"].dtype == object and df["reason"].dtype == object


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
    assert df["reason"].tolist()[:2] == [None, "pruned at epoch 3"]


def test_trials_missing_experiment_warns(alpha):
    with pytest.warns(UserWarning, match="no MLflow experiment"):
        df = query.trials("alpha", storage=alpha.optuna_uri, tracking_uri=alpha.uri,
                          experiment_name="sweeps/none")
    assert df.columns[-1] == "reason"


# ---------------------------------------------------------------------- history(params=...)


@pytest.mark.parametrize("method", ["sql", "api"])
@pytest.mark.parametrize("wide", [False, True])
def test_history_params_adds_each_trial_s_parameters(alpha, method, wide):
    """Oracle: the parameters each trial was given (``alpha.params_of``). The alpha parent run logs no
    search space, so ``params=True`` gives the searchable settings the runs logged."""
    plain = query.history("alpha", tracking_uri=alpha.uri, method=method, wide=wide)
    got = query.history("alpha", tracking_uri=alpha.uri, method=method, wide=wide, params=True)
    assert list(got.columns) == [*plain.columns, "eta", "lmbda", "batch_size"]  # appended, bare names
    pd.testing.assert_frame_equal(got[list(plain.columns)], plain)  # nothing else changes
    assert got["eta"].dtype == np.float64 and got["lmbda"].dtype == np.float64
    assert got["batch_size"].dtype == np.int64
    for row in got.to_dict("records"):
        assert {k: row[k] for k in ("eta", "lmbda", "batch_size")} == alpha.params_of[row["trial"]]


def test_history_params_by_name_and_absent_ones(alpha):
    got = query.history("alpha", tracking_uri=alpha.uri, metrics=["train/eta"], params=["lmbda", "nope"])
    assert list(got.columns) == [*query.LONG_COLUMNS, "lmbda", "nope"]
    assert got["nope"].isna().all()
    assert got["lmbda"].tolist() == [alpha.params_of[n]["lmbda"] for n in got["trial"]]
    assert query.history("alpha", tracking_uri=alpha.uri, params="lmbda", metrics=["train/eta"]).equals(
        got.drop(columns="nope"))
    with pytest.raises(ValueError, match="collide with the history frame's own columns"):
        query.history("alpha", tracking_uri=alpha.uri, params=["trial"])
    with pytest.raises(ValueError, match="params must be a bool or a sequence"):
        query.history("alpha", tracking_uri=alpha.uri, params=1)


@pytest.mark.slow  # builds an MLflow store of its own (1-2.5 s): out of the fast lane
def test_history_params_true_are_the_study_s_searched_parameters(tmp_path):
    """A sweeps store: the parent run logs the search space (``sweeps.engine.runner.study_params``); the trial runs
    log every setting, searched or fixed, as text. params=True adds the searched ones, typed back."""
    import json

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("sweeps/gamma")
    space = {"lmbda": {"type": "float", "low": 0.01, "high": 10.0}, "hidden": {"type": "categorical",
                                                                            "choices": [[30], [100]]}}
    parent = client.create_run(exp, tags={"sweeps.role": "study", "sweeps.study": "gamma"})
    client.log_batch(parent.info.run_id, params=[Param("search_space", json.dumps(space))])
    given = {0: (0.125, "[30]"), 1: (3.5, "[100]")}
    for n, (lmbda, hidden) in given.items():
        run = client.create_run(exp, tags={"sweeps.role": "trial", "sweeps.trial_number": str(n)})
        logged = {"eta": 0.5, "lmbda": lmbda, "hidden": hidden, "batch_size": 10}
        client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in logged.items()],
                         metrics=[Metric("eval/accuracy", 0.1 * e, TS0 + e, e) for e in (0, 1, 2)])
    got = query.history("gamma", tracking_uri=uri, params=True)
    assert list(got.columns) == [*query.LONG_COLUMNS, "lmbda", "hidden"]  # not the fixed eta, batch_size
    assert got["epoch"].tolist() == [0, 1, 2, 0, 1, 2]  # epoch 0 (the initial network) is a row like the others
    assert got["lmbda"].dtype == np.float64 and got["hidden"].dtype == object
    assert [(r["lmbda"], r["hidden"]) for r in got.to_dict("records")] == [given[n] for n in got["trial"]]


@pytest.mark.slow  # builds an MLflow store of its own (1-2.5 s): out of the fast lane
def test_without_experiment_name_a_study_is_found_under_the_prefix_of_mlflow_yml(tmp_path, monkeypatch):
    """A study logged under ``mlflow.yml``'s ``experiment_prefix`` is read by ``trials``, ``history`` and
    ``explain_study`` called without ``experiment_name``, as by the CLI (not under the default prefix,
    where another study of the same name lives)."""
    from sweeps.query.explanations import explain_study

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlflow.yml").write_text("experiment_prefix: lab/\n")
    store = Store(uri=f"sqlite:///{tmp_path}/mlflow.db", path=tmp_path / "mlflow.db",
                  optuna_uri=f"sqlite:///{tmp_path}/optuna.db")
    decoy = Store(uri=store.uri, path=store.path)
    client = MlflowClient(tracking_uri=store.uri)
    rng = np.random.default_rng(7)
    study = optuna.create_study(study_name="gamma", storage=store.optuna_uri)
    eta = optuna.distributions.FloatDistribution(1e-3, 1.0, log=True)
    for target, experiment in ((decoy, "sweeps/gamma"), (store, "lab/gamma")):
        exp_id = client.create_experiment(experiment)
        parent = client.create_run(exp_id, tags={"sweeps.role": "study", "sweeps.study": "gamma"})
        for number in range(2):
            params = {"eta": 0.1, "batch_size": 10, "n_train": 100}
            rid = log_trial_run(client, target, exp_id, parent.info.run_id, "gamma", number, 3, KEYS, rng, params)
            client.log_batch(rid, tags=[RunTag("sweeps.state", "COMPLETE")])
            client.set_terminated(rid, "FINISHED")
            if target is store:
                trial = study.ask({"eta": eta})
                trial.set_user_attr("mlflow_run_id", rid)
                study.tell(trial, 0.5)
    assert_same_long(query.history("gamma", tracking_uri=store.uri), expected_long(store))
    frame = query.trials("gamma", storage=store.optuna_uri, tracking_uri=store.uri)
    final = {rid: store.oracle[(rid, "eval/accuracy", 3)] for rid in store.trial_of}
    assert dict(zip(frame["mlflow_run_id"], frame["eval/accuracy"])) == final
    exp = explain_study("gamma", tracking_uri=store.uri)
    assert sorted(t.run_id for t in exp.trials) == sorted(store.trial_of) and not exp.skipped
