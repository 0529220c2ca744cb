"""The tracker's buffering: what is queued reaches MLflow exactly, at the latest when the run ends."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from nncore.records import metric_names
from sweeps.stores import read_mlflow_yml, resolve_locations
from sweeps.tracking.tracker import Tracker

NAMES = metric_names(2)


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory):
    """One MLflow store for the module's trackers (creating one costs ~1.5 s), in RAM when there is one;
    every test makes runs of its own."""
    from servicekit import ram_directory

    with ram_directory(tmp_path_factory.mktemp("mlflow"), "sweeps-tracking-") as path:
        yield f"sqlite:///{path / 'mlflow.db'}"

def _epoch(e: int) -> dict[str, float]:
    return {k: e + i / 100 for i, k in enumerate(NAMES)}


def _history(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def test_metrics_wait_for_the_interval_and_all_arrive_when_the_run_ends(store_uri):
    tracker = Tracker(store_uri, "sweeps/t", flush_interval=3600)
    run_id = tracker.start_trial("parent", "t", 0, {"eta": 0.5, "lmbda": 5.0})
    epochs = 40  # 40 x 31 values: more than one log_batch may carry (1000)
    for e in range(1, epochs + 1):
        tracker.log_epoch(run_id, _epoch(e), e)
    client = tracker.client
    run = client.get_run(run_id)
    # only full batches went out so far; params travel with the first one
    sent = _history(client, run_id, NAMES[0])
    assert len(sent) < epochs
    tracker.finish(run_id, "PRUNED", "pruned at epoch 40")
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["sweeps.state"] == "PRUNED" and run.data.tags["sweeps.reason"] == "pruned at epoch 40"
    assert run.data.params == {"eta": "0.5", "lmbda": "5.0"}
    for i, key in enumerate(NAMES):
        assert _history(client, run_id, key) == {e: e + i / 100 for e in range(1, epochs + 1)}


def test_zero_interval_sends_every_epoch_at_once(store_uri):
    tracker = Tracker(store_uri, "sweeps/t", flush_interval=0)
    run_id = tracker.start_trial("parent", "t", 3, {"eta": 1.0})
    tracker.log_epoch(run_id, _epoch(1), 1)
    assert _history(tracker.client, run_id, "eval/accuracy") == {1: _epoch(1)["eval/accuracy"]}
    assert tracker.client.get_run(run_id).data.params == {"eta": "1.0"}
    tracker.log_epoch(run_id, {"eval/accuracy": math.nan}, 2)
    history = _history(tracker.client, run_id, "eval/accuracy")
    assert math.isnan(history[2])
    tracker.finish(run_id, "COMPLETE")
    assert tracker.client.get_run(run_id).info.status == "FINISHED"


@pytest.mark.parametrize("text, field", [("flush_interval_s: -1\n", "flush_interval_s"),
                                         ("trial_artifacts: some\n", "trial_artifacts"),
                                         ("tracking_url: x\n", "unknown key")])
def test_mlflow_yml_errors_name_the_field(tmp_path, text, field):
    path = tmp_path / "mlflow.yml"
    path.write_text(text)
    with pytest.raises(ValueError, match=field):
        read_mlflow_yml(path)


def test_mlflow_yml_settings_reach_the_locations(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SWEEPS_STORAGE", raising=False)
    path = tmp_path / "mlflow.yml"
    path.write_text("tracking_uri: sqlite:///x.db\nexperiment_prefix: lab/\nflush_interval_s: 0.25\n"
                    "trial_artifacts: all\n")
    loc = resolve_locations(mlflow_yml=path)
    assert (loc.tracking_uri, loc.experiment_prefix, loc.flush_interval_s, loc.trial_artifacts) == \
        ("sqlite:///x.db", "lab/", 0.25, "all")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert resolve_locations(mlflow_yml=path).tracking_uri == "sqlite:///env.db"
    assert resolve_locations(mlflow_yml=path, tracking_uri="sqlite:///flag.db").tracking_uri == "sqlite:///flag.db"
    assert resolve_locations(mlflow_yml=path).storage == "sqlite:///optuna.db"


@pytest.mark.slow  # runs `sweeps run` in a subprocess
def test_unreachable_tracking_server_fails_before_anything_is_created(sw, tmp_path):
    sw.write_config(tmp_path)
    r = sw.run_cli(["run", "cfg.yaml", "-q", "--tracking-uri", "http://127.0.0.1:9"], tmp_path)
    assert r.returncode == 3, sw.describe(r)
    assert "http://127.0.0.1:9" in r.stderr and "does not answer" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml"]
