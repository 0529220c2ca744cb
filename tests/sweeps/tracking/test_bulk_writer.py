"""The bulk writer stores exactly what MLflow's client stores (the oracle)."""

from __future__ import annotations

import math
import time

import pytest
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sweeps import compat
from sweeps.tracking import bulk_writer as mw
from sweeps.tracking.bulk_writer import BulkWriter, sanitize


@pytest.fixture()
def store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("e")
    writer = BulkWriter.for_uri(uri)
    assert writer is not None
    yield client, exp, writer
    writer.close()


def _stored(client: MlflowClient, run_id: str) -> tuple[dict, dict]:
    """Every stored value (key -> sorted (step, timestamp, value)) and the run's latest metrics."""
    run = client.get_run(run_id)
    history = {}
    for key in run.data.metrics:
        rows = client.get_metric_history(run_id, key)
        history[key] = sorted((m.step, m.timestamp, "nan" if math.isnan(m.value) else m.value) for m in rows)
    latest = {k: ("nan" if math.isnan(v) else v) for k, v in run.data.metrics.items()}
    return history, latest


def _batches():
    ts = int(time.time() * 1000)
    first = [Metric(f"m{k}", float(k * e) / 7, ts, e) for e in range(5) for k in range(6)]
    odd = [Metric("m1", float("nan"), ts + 1, 5), Metric("m2", float("inf"), ts + 1, 5),
           Metric("m3", float("-inf"), ts + 1, 5), Metric("m4", 2.5, ts, 2),  # an older step: latest unchanged
           Metric("m5", 9.0, ts + 2, 4), Metric("m5", 8.0, ts + 2, 4),  # equal step and time: the larger wins
           Metric("fresh", 1.0, ts, 0)]
    return [first, odd, first[:10]]  # the last one is a resend: stored once


def test_bulk_rows_equal_log_batch_rows(store):
    client, exp, writer = store
    a = client.create_run(exp).info.run_id
    b = client.create_run(exp).info.run_id
    for batch in _batches():
        client.log_batch(a, metrics=batch)
        writer.write(b, batch)
    hist_a, latest_a = _stored(client, a)
    hist_b, latest_b = _stored(client, b)
    assert hist_b == hist_a
    assert latest_b == latest_a
    assert latest_b["m2"] == mw.MAX_FLOAT and latest_b["m3"] == -mw.MAX_FLOAT and latest_b["m1"] == "nan"
    assert latest_b["m5"] == 9.0
    assert len(hist_b["m0"]) == 5  # the resent rows are not duplicated


def test_params_tags_and_end_equal_the_client_s(store):
    from mlflow.entities import Param, RunTag

    client, exp, writer = store
    a = client.create_run(exp, run_name="same").info.run_id
    b = client.create_run(exp, run_name="same").info.run_id
    params = [Param("eta", "0.5"), Param("sizes", "[64, 30, 10]")]
    tags = [RunTag("sweeps.state", "RUNNING"), RunTag("sweeps.state", "COMPLETE"), RunTag("x", "1")]
    client.log_batch(a, params=params, tags=tags[:1])
    client.log_batch(a, params=params[:1], tags=tags[1:])  # a param resent with its value: accepted
    client.set_terminated(a, status="KILLED", end_time=1234)
    writer.write(b, params=params, tags=tags[:1])
    writer.write(b, params=params[:1], tags=tags[1:], status="KILLED", end_time=1234)
    ra, rb = client.get_run(a), client.get_run(b)
    assert rb.data.params == ra.data.params and rb.data.tags == ra.data.tags and rb.data.tags["sweeps.state"] == "COMPLETE"
    assert (rb.info.status, rb.info.end_time) == (ra.info.status, ra.info.end_time) == ("KILLED", 1234)
    with pytest.raises(MlflowException) as ours:
        writer.write(b, params=[Param("eta", "0.7")])
    with pytest.raises(MlflowException) as theirs:
        client.log_batch(a, params=[Param("eta", "0.7")])
    assert ours.value.error_code == theirs.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "Changing param values is not allowed" in str(ours.value)
    assert client.get_run(b).data.params["eta"] == "0.5"  # the refused send wrote nothing
    assert not BulkWriter.handles(["mlflow.runName"]) and BulkWriter.handles(["sweeps.state"])
    with pytest.raises(MlflowException):
        writer.write(b, tags=[RunTag("mlflow.runName", "x")])


def test_deleted_or_missing_run_is_refused_like_mlflow(store):
    client, exp, writer = store
    run = client.create_run(exp).info.run_id
    client.delete_run(run)
    batch = [Metric("x", 1.0, 0, 0)]
    with pytest.raises(MlflowException) as ours:
        writer.write(run, batch)
    with pytest.raises(MlflowException) as theirs:
        client.log_batch(run, metrics=batch)
    assert ours.value.error_code == theirs.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException) as missing:
        writer.write("0" * 32, batch)
    assert missing.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_unknown_schema_revision_or_store_kind_falls_back(tmp_path, monkeypatch, caplog):
    """Another MLflow schema: no writer, and a WARNING (once a process) naming the revision and the cost."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(tracking_uri=uri).create_experiment("e")
    monkeypatch.setattr(compat, "_WARNED", set())
    monkeypatch.setattr(compat, "SCHEMA_REVISIONS", frozenset({"not-this-one"}))
    with caplog.at_level("INFO", logger="sweeps"):
        assert BulkWriter.for_uri(uri) is None
        assert BulkWriter.for_uri(uri) is None
    warned = [r.getMessage() for r in caplog.records if r.name == "sweeps.compat"]
    assert len(warned) == 1, warned
    assert "'dc11669786a5'" in warned[0] and "MlflowClient" in warned[0] and "10x slower" in warned[0], warned
    assert BulkWriter.for_uri("http://127.0.0.1:5000") is None
    assert BulkWriter.for_uri(f"sqlite:///{tmp_path}/absent.db") is None


def test_mlflow_without_its_orm_models_gets_no_writer(tmp_path, monkeypatch, caplog):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(tracking_uri=uri).create_experiment("e")
    monkeypatch.setattr(compat, "_WARNED", set())
    monkeypatch.setattr(compat, "MLFLOW_MODELS_MODULE", "mlflow.store.tracking.no_such_models")
    with caplog.at_level("WARNING", logger="sweeps.compat"):
        assert BulkWriter.for_uri(uri) is None
    assert [r.levelname for r in caplog.records if r.name == "sweeps.compat"] == ["WARNING"]


def test_tracker_without_a_writer_stores_the_same(tmp_path, monkeypatch):
    """The fallback path (``log_batch``) and the bulk path give the same run."""
    from sweeps.tracking.tracker import Tracker

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    runs = {}
    for bulk in (True, False):
        tracker = Tracker(uri, "e", flush_interval=0.0, bulk=bulk)
        assert (tracker.bulk_writer is not None) is bulk
        run = tracker.start_trial("", "s", 0, {"eta": 0.5})
        for epoch in range(3):
            tracker.log_epoch(run, {"loss": 1.0 / (epoch + 1), "acc": epoch / 3}, epoch)
        tracker.finish(run, "COMPLETE", "completed: 3 epochs")
        runs[bulk] = run
    client = MlflowClient(tracking_uri=uri)
    got = {}
    for bulk, run in runs.items():
        history, latest = _stored(client, run)
        got[bulk] = ({k: [(step, value) for step, _, value in rows] for k, rows in history.items()}, latest)
    assert got[True] == got[False]  # the same values at the same steps (each measured at its own time)
    bulk, plain = client.get_run(runs[True]), client.get_run(runs[False])
    assert bulk.data.params == plain.data.params and bulk.data.params["eta"] == "0.5"
    skip = {"sweeps.attempt"}  # a token of its own per run
    assert {k: v for k, v in bulk.data.tags.items() if k not in skip} == \
        {k: v for k, v in plain.data.tags.items() if k not in skip}
    assert bulk.data.tags["sweeps.state"] == "COMPLETE" and bulk.data.tags["sweeps.reason"] == "completed: 3 epochs"
    assert bulk.info.status == plain.info.status == "FINISHED"
    assert bulk.info.end_time >= bulk.info.start_time


def test_sanitize_matches_mlflow():
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for v in (0.0, -1.5, float("nan"), float("inf"), float("-inf"), 1e308):
        assert sanitize(v) == tuple(SqlAlchemyStore.sanitize_metric_value(None, v))


@pytest.mark.services
def test_bulk_rows_equal_log_batch_rows_on_postgresql():
    from servicekit import pg_database

    with pg_database("sweeps_test_writer") as uri:
        client = MlflowClient(tracking_uri=uri)
        exp = client.create_experiment("e")
        writer = BulkWriter.for_uri(uri)
        assert writer is not None
        try:
            a = client.create_run(exp).info.run_id
            b = client.create_run(exp).info.run_id
            for batch in _batches():
                client.log_batch(a, metrics=batch)
                writer.write(b, batch)
            assert _stored(client, b) == _stored(client, a)
        finally:
            writer.close()
            client._tracking_client.store.engine.dispose()  # let the database be dropped


def test_a_locked_store_keeps_the_metrics_queued_until_it_is_free(tmp_path, monkeypatch):
    """A write lock held by another process fails the batch (transient); nothing is lost or doubled."""
    import sqlite3

    from sweeps.tracking.tracker import Tracker

    monkeypatch.setattr(mw, "SQLITE_BUSY_TIMEOUT_S", 0.05)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, "e", flush_interval=0.0)
    assert tracker.bulk_writer is not None
    run = tracker.start_trial("", "s", 0, {})
    tracker.log_epoch(run, {"loss": 1.0}, 1)  # delivered
    holder = sqlite3.connect(f"{tmp_path}/mlflow.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        tracker.log_epoch(run, {"loss": 0.5}, 2)
        assert tracker.pending_runs() == [run]  # the lock made the try fail; the epoch stays queued
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    tracker._retry_at = float("-inf")  # skip the back-off instead of waiting it out
    assert tracker.flush(run)
    tracker.finish(run, "COMPLETE", "done")
    history = MlflowClient(tracking_uri=uri).get_metric_history(run, "loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 1.0), (2, 0.5)]
