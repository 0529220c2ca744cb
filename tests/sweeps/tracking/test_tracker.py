"""The tracker's buffering: what is queued reaches MLflow exactly, at the latest when the run ends."""

from __future__ import annotations

import math

import pytest
from mlflow.tracking import MlflowClient

from nncore.records import metric_names
from sweeps.tracking.tracker import MAX_BATCH_ITEMS, Tracker

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


@pytest.mark.parametrize("bulk", [False, True], ids=["log_batch", "bulk-writer"])
def test_metrics_wait_for_the_interval_and_all_arrive_when_the_run_ends(store_uri, bulk):
    tracker = Tracker(store_uri, "sweeps/t", flush_interval=3600, bulk=bulk)
    assert (tracker.bulk_writer is not None) == bulk
    run_id = tracker.start_trial("parent", "t", 0, {"eta": 0.5, "lmbda": 5.0})
    per_batch = MAX_BATCH_ITEMS // len(NAMES)  # whole epochs in one log_batch call
    epochs = 40  # 40 x 43 values: one full log_batch and some
    assert per_batch < epochs < 2 * per_batch
    for e in range(1, epochs + 1):
        tracker.log_epoch(run_id, _epoch(e), e)
    client = tracker.client
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING"
    if bulk:  # one transaction per flush: nothing goes out before the interval or the run's end
        assert _history(client, run_id, NAMES[0]) == {} and run.data.params == {}
    else:  # through the interval only a full batch went out, the params with it
        assert _history(client, run_id, NAMES[0]) == {e: float(e) for e in range(1, per_batch + 1)}
        assert run.data.params == {"eta": "0.5", "lmbda": "5.0"}
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


def test_the_roles_and_statuses_the_tracker_writes_are_the_ones_readers_search(store_uri):
    """The tracker writes a parent and a trial run; the readers' filters (``sweeps.query``) and the repair
    pass's (``running_trial_runs``) find each one by its role (``sweeps.names``), the trial run only while
    it runs."""
    from sweeps import names
    from sweeps.query.base import TRIAL_FILTER
    from sweeps.query.client import STUDY_FILTER

    tracker = Tracker(store_uri, "sweeps/roles", bulk=False)
    parent = tracker.study_run("roles", {"seed": 0})
    child = tracker.start_trial(parent, "roles", 0, {"eta": 0.5})
    tracker.log_epoch(child, {"eval/accuracy": 0.5}, 1, flush=True)

    def found(filter_string: str) -> list[str]:
        return [r.info.run_id for r in tracker.client.search_runs([tracker.experiment_id], filter_string)]

    assert found(STUDY_FILTER) == [parent] and found(TRIAL_FILTER) == [child]
    assert [r.info.run_id for r in tracker.running_trial_runs()] == [child]
    tracker.finish(child, names.STATE_COMPLETE)
    assert tracker.client.get_run(child).info.status == names.RUN_STATUS[names.STATE_COMPLETE]
    assert tracker.running_trial_runs() == []
    assert tracker.study_run("roles", {}) == parent  # resuming finds the parent by its role


def test_a_tracker_built_without_settings_uses_mlflow_ymls_defaults():
    """The worker passes ``mlflow.yml``'s settings; other callers (``sweeps train``, tests) rely on the
    tracker's own defaults, which must be the same ones."""
    import inspect

    from sweeps.stores import Locations

    defaults = inspect.signature(Tracker).parameters
    loc = Locations(storage="sqlite:///o.db", tracking_uri="sqlite:///m.db")
    assert (defaults["flush_interval"].default, defaults["outage_s"].default) == \
        (loc.flush_interval_s, loc.tracking_outage_s)


@pytest.mark.slow  # runs `sweeps run` in a subprocess
def test_unreachable_tracking_server_fails_before_anything_is_created(sw, tmp_path):
    sw.write_config(tmp_path)
    r = sw.run_cli(["run", "cfg.yaml", "-q", "--tracking-uri", "http://127.0.0.1:9"], tmp_path)
    assert r.returncode == 3, sw.describe(r)
    assert "http://127.0.0.1:9" in r.stderr and "does not answer" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml"]
