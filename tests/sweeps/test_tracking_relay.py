"""The tracking relay: a worker's Tracker in a process of its own, with the same results and guarantees."""

from __future__ import annotations

import math

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sweeps.tracking import Tracker, TrackingUnavailable
from sweeps.tracking_relay import TrackingRelay, use_relay


def test_use_relay_only_where_each_worker_has_a_spare_core() -> None:
    assert use_relay("auto", workers=1, cores=2) and use_relay("auto", workers=4, cores=8)
    assert not use_relay("auto", workers=2, cores=2) and not use_relay("auto", workers=1, cores=1)
    assert use_relay("on", workers=8, cores=1) and not use_relay("off", workers=1, cores=64)
    with pytest.raises(ValueError, match=r"tracking_process must be one of \['auto', 'on', 'off'\], got 'yes'"):
        use_relay("yes", workers=1)


def _log_trial(tracker, number: int, epochs: int) -> str:
    run = tracker.start_trial("", "s", number, {"eta": 0.5, "number": number})
    for e in range(epochs):
        tracker.log_epoch(run, {"train/loss": 1.0 / (e + 1), "eval/accuracy": e / epochs, "odd": math.nan}, e)
    tracker.queue_tags(run, {"sweeps.finding.x": "warning"})
    return run


def _values(client: MlflowClient, run_id: str) -> dict:
    run = client.get_run(run_id)
    history = {k: [(m.step, m.value if not math.isnan(m.value) else "nan")
                   for m in sorted(client.get_metric_history(run_id, k), key=lambda m: m.step)]
               for k in run.data.metrics}
    tags = {k: v for k, v in run.data.tags.items() if k.startswith("sweeps.") and k != "sweeps.attempt"}
    return {"history": history, "params": run.data.params, "tags": tags, "status": run.info.status}


@pytest.mark.slow  # spawns a relay process (MLflow's import: seconds)
def test_relay_stores_what_an_in_process_tracker_stores(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    local = Tracker(uri, "e", flush_interval=0.0)
    relay = TrackingRelay(uri, "e", flush_interval=0.0).started()
    try:
        assert relay.experiment_id == local.experiment_id and relay.outage_s == local.outage_s
        runs = []
        for tracker, number in ((local, 0), (relay, 1)):
            run = _log_trial(tracker, number, 12)
            tracker.finish(run, "COMPLETE", "completed: 12 epochs")
            runs.append(run)
        client = MlflowClient(tracking_uri=uri)
        # finish() returned: everything logged before it has been delivered
        got = [_values(client, r) for r in runs]
        for g in got:  # the two runs differ only by their trial number
            g["params"].pop("number"), g["tags"].pop("sweeps.trial_number")
        assert got[0] == got[1]
        assert len(got[1]["history"]["train/loss"]) == 12 and got[1]["status"] == "FINISHED"
        with pytest.raises(MlflowException):  # errors come back as themselves
            relay.finish("0" * 32, "COMPLETE", "no such run")
    finally:
        relay.close()


@pytest.mark.slow  # spawns a relay process (MLflow's import: seconds)
def test_a_killed_worker_s_queued_epochs_are_delivered_by_the_relay(tmp_path) -> None:
    """The worker's end of the pipe closes without a finish (the worker was killed): the relay drains."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    relay = TrackingRelay(uri, "e", flush_interval=3600.0).started()  # nothing is flushed before the end
    run = _log_trial(relay, 0, 7)
    relay._conn.close()  # as a SIGKILL of the worker does
    relay._proc.join(60)
    assert relay._proc.exitcode == 0
    history = MlflowClient(tracking_uri=uri).get_metric_history(run, "train/loss")
    assert sorted(m.step for m in history) == list(range(7))


@pytest.mark.slow  # spawns a relay process (MLflow's import: seconds)
def test_an_unreachable_tracking_server_is_reported_as_in_process(services, monkeypatch) -> None:
    from sweeps.storage import _mlflow_http_values

    for key, value in _mlflow_http_values(2.0, worker=True).items():  # as a worker sets them for its relay
        monkeypatch.setenv(key, value)
    port = services.free_port()  # nothing listens there
    relay = TrackingRelay(f"http://127.0.0.1:{port}", "e", outage_s=0.5)
    try:
        with pytest.raises(TrackingUnavailable, match="failed for"):
            relay.started()
    finally:
        relay.close(timeout=10)
    assert relay._proc.exitcode == 0


@pytest.mark.slow
def test_a_sweep_logs_the_same_metrics_with_and_without_the_relay(sw, tmp_path) -> None:
    """One worker, the same seed: identical histories whether MLflow writes run in the worker or a relay."""
    import dataclasses

    from sweeps import query
    from sweeps.config import parse_config
    from sweeps.runner import run_sweep
    from sweeps.storage import Locations

    cfg = parse_config(sw.merge(sw.BASE_CONFIG, {"study": {"n_trials": 3, "workers": 1, "population": 3}}))
    frames = {}
    for mode in ("on", "off"):
        d = tmp_path / mode
        d.mkdir()
        loc = Locations(storage=f"sqlite:///{d}/optuna.db", tracking_uri=f"sqlite:///{d}/mlflow.db",
                        artifact_location=str(d / "mlruns"), tracking_process=mode)
        summary = run_sweep(cfg, loc, workers=1, artifacts="none")
        assert sum(summary.counts.values()) == 3
        frame = query.history(cfg.name, tracking_uri=loc.tracking_uri)
        frame = frame[frame["metric"] != "train/epoch_time"]  # wall-clock seconds: the only measured value
        frames[mode] = frame.drop(columns=["run_id"]).sort_values(["trial", "metric", "epoch"]).reset_index(drop=True)
    assert len(frames["on"]) > 0
    import pandas as pd

    pd.testing.assert_frame_equal(frames["on"], frames["off"])
