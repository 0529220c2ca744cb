"""The tracker's durable outbox (``sweeps.tracking.tracker.Tracker``) through a tracking-store outage.

The MLflow client is a fake that enforces MLflow's batch limits, records every call with the
(injected) clock, and fails with a transient or a permanent ``MlflowException`` while told to.
Oracles: the epochs the test logged (values, steps, wall-clock timestamps it set) and the back-off
schedule the module docstring specifies (0.5, 1, 2, ... up to 5 s after tries refused at once, up to
30 s after tries that timed out).
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST

import sweeps.tracking.tracker as tracking
from sweeps.stores import TrackingUnavailable
from sweeps.tracking.tracker import (
    MAX_BACKOFF,
    MAX_BACKOFF_FAST,
    MAX_BATCH_ITEMS,
    MAX_BATCH_PARAMS,
    Tracker,
    is_transient,
)

EPOCH_KEYS = ("eval/accuracy", "eval/data_loss", "train/total_loss")


class Clock:
    """Monotonic clock and sleep for the tracker; ``wall`` is what ``time.time()`` returns to it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.wall = 1_700_000_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += seconds

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.slept.append(seconds)
        self.advance(seconds)


@dataclass
class FakeRun:
    metrics: list[tuple[str, float, int, int]] = field(default_factory=list)  # key, value, timestamp, step
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    status: str = "RUNNING"
    order: list[str] = field(default_factory=list)  # what arrived, in order ("metrics", "tags", "status")


class FakeClient:
    """The part of ``MlflowClient`` the tracker uses."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.runs: dict[str, FakeRun] = {}
        self.calls: list[tuple[str, float]] = []  # (method, clock time)
        self.fail_with: str | None = None  # an MLflow error code to fail every call with
        self.duration: list[float] = []  # seconds each next call takes (clock time), consumed in order
        self.created_experiments: list[str] = []
        self.lose_answers = 0  # the next create_run calls that create their run but time out

    # -- plumbing
    def _enter(self, method: str) -> None:
        self.calls.append((method, self.clock.now))
        if self.duration:
            self.clock.advance(self.duration.pop(0))
        if self.fail_with is not None:
            raise MlflowException(f"{method}: tracking store unavailable", error_code=self.fail_with)

    def calls_to(self, method: str) -> list[float]:
        return [t for m, t in self.calls if m == method]

    # -- MlflowClient
    def get_experiment_by_name(self, name: str) -> None:
        return None

    def create_experiment(self, name: str, artifact_location: str | None = None) -> str:
        self.created_experiments.append(name)
        return "1"

    def create_run(self, experiment_id: str, run_name: str | None = None, tags: dict | None = None) -> Any:
        self._enter("create_run")
        run_id = f"run{len(self.runs)}"
        self.runs[run_id] = FakeRun(tags=dict(tags or {}))
        if self.lose_answers:  # the server did the work; the answer never came back
            self.lose_answers -= 1
            raise TimeoutError("read timed out")
        return types.SimpleNamespace(info=types.SimpleNamespace(run_id=run_id))

    def search_runs(self, experiment_ids: list[str], filter_string: str = "", max_results: int = 1000) -> list:
        self._enter("search_runs")
        key, _, value = filter_string.partition(" = ")
        key, value = key.removeprefix("tags.").strip("`"), value.strip("'")
        return [types.SimpleNamespace(info=types.SimpleNamespace(run_id=r))
                for r, run in self.runs.items() if run.tags.get(key) == value][:max_results]

    def log_batch(self, run_id: str, metrics=(), params=(), tags=()) -> None:
        self._enter("log_batch")
        metrics, params, tags = list(metrics), list(params), list(tags)
        if len(metrics) + len(params) + len(tags) > MAX_BATCH_ITEMS or len(params) > MAX_BATCH_PARAMS \
                or len(tags) > MAX_BATCH_PARAMS:
            raise MlflowException("batch over MLflow's limits", error_code=INVALID_PARAMETER_VALUE)
        run = self.runs[run_id]
        if run.status != "RUNNING":
            raise MlflowException(f"run {run_id} is not active", error_code=INVALID_PARAMETER_VALUE)
        run.metrics.extend((m.key, m.value, m.timestamp, m.step) for m in metrics)
        for p in params:
            assert p.key not in run.params, f"param {p.key} logged twice"
            run.params[p.key] = p.value
        run.tags.update({t.key: t.value for t in tags})
        run.order.extend(kind for kind, items in (("metrics", metrics), ("params", params), ("tags", tags))
                         if items)

    def set_terminated(self, run_id: str, status: str | None = None) -> None:
        self._enter("set_terminated")
        self.runs[run_id].status = status or "FINISHED"
        self.runs[run_id].order.append("status")


@pytest.fixture
def env(monkeypatch):
    """(tracker factory, clock, fake client): the tracker's MLflow client and its clocks are fakes."""
    clock = Clock()
    client = FakeClient(clock)
    monkeypatch.setattr(tracking, "MlflowClient", lambda tracking_uri=None: client)
    monkeypatch.setattr(tracking, "time", types.SimpleNamespace(time=lambda: clock.wall, monotonic=clock,
                                                                sleep=clock.sleep))

    def make(**kwargs: Any) -> Tracker:
        kwargs.setdefault("flush_interval", 0)
        kwargs.setdefault("outage_s", 60)
        return Tracker("http://tracking.invalid", "sweeps/t", clock=clock, sleep=clock.sleep, **kwargs)

    return make, clock, client


def epoch(e: int) -> dict[str, float]:
    return {k: e + i / 10 for i, k in enumerate(EPOCH_KEYS)}


def expected_metrics(logged: list[tuple[int, float]]) -> list[tuple[str, float, int, int]]:
    """What MLflow must hold: every metric of every epoch, in order, stamped with its wall time."""
    return [(k, v, int(wall * 1000), e) for e, wall in logged for k, v in epoch(e).items()]


def backoff(k: int, timed_out: bool = False) -> float:
    """The wait after the k-th failure in a row (the module docstring: 0.5, 1, 2, ... up to 5 s after a
    try refused at once, up to 30 s after one that timed out)."""
    return min(MAX_BACKOFF if timed_out else MAX_BACKOFF_FAST, 0.5 * 2 ** (k - 1))


# -- is_transient ---------------------------------------------------------------------------------

@pytest.mark.parametrize("err, transient", [
    (MlflowException("boom", error_code=INTERNAL_ERROR), True),
    (MlflowException("unavailable", error_code="TEMPORARILY_UNAVAILABLE"), True),
    (MlflowException("bad", error_code=INVALID_PARAMETER_VALUE), False),
    (MlflowException("gone", error_code=RESOURCE_DOES_NOT_EXIST), False),
    (ConnectionRefusedError(111, "refused"), True),
    (TimeoutError("read timed out"), True),
    (ValueError("bad value"), False),
])
def test_is_transient(err, transient):
    assert is_transient(err) is transient


def test_requests_errors_are_transient():
    import requests  # a dependency of MLflow

    assert is_transient(requests.exceptions.ConnectionError("reset"))
    assert is_transient(requests.exceptions.ReadTimeout("timeout"))


# -- through an outage ----------------------------------------------------------------------------

def test_an_outage_during_training_loses_nothing_and_respects_the_back_off(env):
    make, clock, client = env
    tracker = make()
    run_id = tracker.start_trial("parent", "t", 0, {"eta": 0.5, "lmbda": 2.0})
    client.fail_with = INTERNAL_ERROR  # the store goes down
    logged: list[tuple[int, float]] = []
    step_s, down_epochs, epochs = 0.3, 60, 150
    # the oracle of when the tracker may try: at the first epoch past the back-off after each failure
    expected_tries: list[float] = []
    retry_at, failures = float("-inf"), 0
    for e in range(1, epochs + 1):
        clock.advance(step_s)
        if e == down_epochs + 1:
            client.fail_with = None  # the store is back
        logged.append((e, clock.wall))
        if clock.now >= retry_at:
            expected_tries.append(clock.now)
            if client.fail_with is not None:
                failures += 1
                retry_at = clock.now + backoff(failures)
            else:
                retry_at = float("-inf")
        tracker.log_epoch(run_id, epoch(e), e)  # never raises for a transient failure
        assert not clock.slept, "log_epoch waited"
    assert client.fail_with is None and expected_tries[-1] == clock.now  # delivered before the end
    assert client.calls_to("log_batch") == pytest.approx(expected_tries)
    assert failures >= 6  # the schedule really backed off: 0.5, 1, 2, 4, 5, 5 s...
    run = client.runs[run_id]
    assert run.metrics == expected_metrics(logged)  # each once, in order, with the time it was measured
    assert run.params == {"eta": "0.5", "lmbda": "2.0"}
    assert tracker.pending_runs() == []
    tracker.finish(run_id, "COMPLETE")
    assert run.status == "FINISHED" and run.tags["sweeps.state"] == "COMPLETE"
    assert run.metrics == expected_metrics(logged)


def test_a_long_outage_queues_more_than_a_batch_and_delivers_it_in_allowed_batches(env):
    make, clock, client = env
    tracker = make(flush_interval=0.5)
    params = {f"p{i:03d}": i for i in range(150)}  # more params than one batch may carry
    run_id = tracker.start_trial("parent", "t", 1, params)
    client.fail_with = INTERNAL_ERROR
    logged = []
    many = {f"layer{i}/weight_rms": float(i) for i in range(1, 41)}  # 40 metrics an epoch

    def metrics_of(e: int) -> dict[str, float]:
        return {**epoch(e), **{k: v + e for k, v in many.items()}}

    for e in range(1, 61):  # 60 x 43 = 2580 metrics queued
        clock.advance(0.05)
        logged.append((e, clock.wall))
        tracker.log_epoch(run_id, metrics_of(e), e)
    client.fail_with = None
    tracker.finish(run_id, "PRUNED", "pruned at epoch 60")
    run = client.runs[run_id]
    assert run.metrics == [(k, v, int(wall * 1000), e) for e, wall in logged for k, v in metrics_of(e).items()]
    assert run.params == {k: str(v) for k, v in params.items()}
    assert run.tags["sweeps.state"] == "PRUNED" and run.tags["sweeps.reason"] == "pruned at epoch 60"
    assert run.status == "KILLED"
    assert run.order[-2:] == ["tags", "status"]  # the end tags travel with the last batch, then the status


def test_finish_gives_up_after_the_outage_limit_and_drain_delivers_later(env):
    make, clock, client = env
    tracker = make(outage_s=45)
    run_id = tracker.start_trial("parent", "t", 2, {"eta": 1.0})
    logged = []
    for e in range(1, 4):
        clock.advance(1)
        logged.append((e, clock.wall))
        tracker.log_epoch(run_id, epoch(e), e)
    assert len(client.runs[run_id].metrics) == 3 * len(EPOCH_KEYS)
    client.fail_with = INTERNAL_ERROR
    clock.advance(1)
    logged.append((4, clock.wall))
    tracker.log_epoch(run_id, epoch(4), 4)
    start = clock.now
    with pytest.raises(TrackingUnavailable, match="45 s"):
        tracker.finish(run_id, "FAIL", "DivergenceError: overflow")
    waited = clock.now - start
    assert 45 <= waited <= 45 + MAX_BACKOFF_FAST
    # the first wait is what is left of the back-off after log_epoch's failed try, then 1, 2, 4, 5, 5... s
    assert clock.slept[:-1] == pytest.approx([backoff(k) for k in range(1, len(clock.slept))])
    assert clock.slept[-1] <= backoff(len(clock.slept))  # the last one cut short by the outage limit
    assert tracker.pending_runs() == [run_id]
    run = client.runs[run_id]
    assert run.status == "RUNNING" and "sweeps.state" not in run.tags

    assert tracker.drain(10) == [run_id]  # still down: nothing lost, nothing sent
    client.fail_with = None
    assert tracker.drain(120) == []
    assert tracker.pending_runs() == []
    assert run.status == "FAILED"
    assert run.tags["sweeps.state"] == "FAIL" and run.tags["sweeps.reason"] == "DivergenceError: overflow"
    assert run.metrics == expected_metrics(logged)
    assert run.params == {"eta": "1.0"}


def test_finish_with_should_stop_tries_once(env):
    make, clock, client = env
    tracker = make()
    run_id = tracker.start_trial("parent", "t", 3, {})
    client.fail_with = INTERNAL_ERROR
    with pytest.raises(TrackingUnavailable):
        tracker.finish(run_id, "COMPLETE", should_stop=lambda: True)
    assert len(client.calls_to("log_batch")) == 1 and clock.slept == []
    assert tracker.pending_runs() == [run_id]


def test_start_trial_waits_out_a_short_outage_and_gives_up_on_a_long_one(env):
    make, clock, client = env
    tracker = make(outage_s=20)
    client.fail_with = INTERNAL_ERROR

    def recover_after_three(seconds: float) -> None:
        Clock.sleep(clock, seconds)
        if len(clock.slept) == 3:
            client.fail_with = None

    tracker._sleep = recover_after_three
    run_id = tracker.start_trial("parent", "t", 4, {"eta": 2.0})
    assert client.runs[run_id].tags["sweeps.trial_number"] == "4"
    assert clock.slept == pytest.approx([backoff(1), backoff(2), backoff(3)])
    assert [m for m, _ in client.calls] == ["create_run", *["search_runs"] * 3, "create_run"]  # 4 tries

    tracker._sleep = clock.sleep
    client.fail_with = INTERNAL_ERROR
    before = len(client.runs)
    start = clock.now
    with pytest.raises(TrackingUnavailable, match="creating the run of trial 5"):
        tracker.start_trial("parent", "t", 5, {"eta": 2.0})
    assert 20 <= clock.now - start <= 20 + MAX_BACKOFF
    assert len(client.runs) == before


def test_a_run_created_by_a_request_whose_answer_was_lost_is_found_not_created_again(env):
    make, clock, client = env
    tracker = make()
    client.lose_answers = 2
    run_id = tracker.start_trial("parent", "t", 6, {"eta": 2.0})
    assert list(client.runs) == ["run0"] and run_id == "run0"  # one run, found by its attempt token
    assert len(client.calls_to("create_run")) == 1 and len(client.calls_to("search_runs")) == 1
    other = tracker.start_trial("parent", "t", 7, {"eta": 2.0})  # a token is one creation's, not the trial's
    assert other == "run1" and client.runs["run0"].tags["sweeps.attempt"] != client.runs["run1"].tags[
        "sweeps.attempt"]
    tracker.finish(run_id, "COMPLETE")
    assert client.runs["run0"].params == {"eta": "2.0"} and client.runs["run0"].status == "FINISHED"


def test_a_failed_lookup_leads_to_a_new_creation(env):
    make, clock, client = env
    tracker = make()
    client.fail_with = INTERNAL_ERROR  # refused before anything was created

    def recover_after_two(seconds: float) -> None:
        Clock.sleep(clock, seconds)
        if len(clock.slept) == 2:
            client.fail_with = None

    tracker._sleep = recover_after_two
    run_id = tracker.start_trial("parent", "t", 8, {})
    assert list(client.runs) == [run_id]
    assert [m for m, _ in client.calls] == ["create_run", "search_runs", "search_runs", "create_run"]


def test_retry_pending_tries_once_and_delivers_every_run_when_back(env):
    make, clock, client = env
    tracker = make()
    runs = [tracker.start_trial("parent", "t", n, {"n": n}) for n in range(3)]
    client.fail_with = INTERNAL_ERROR
    for n, run_id in enumerate(runs):
        tracker.log_epoch(run_id, epoch(n + 1), n + 1)
    assert sorted(tracker.pending_runs()) == sorted(runs)
    clock.advance(MAX_BACKOFF)
    tries = len(client.calls)
    tracker.retry_pending()  # one try, no wait, no exception
    assert len(client.calls) == tries + 1 and clock.slept == []
    tracker.retry_pending()  # in the back-off now: no call at all
    assert len(client.calls) == tries + 1
    client.fail_with = None
    clock.advance(MAX_BACKOFF)
    tracker.retry_pending()
    assert tracker.pending_runs() == []
    assert [len(client.runs[r].metrics) for r in runs] == [len(EPOCH_KEYS)] * 3
    assert [client.runs[r].params for r in runs] == [{"n": "0"}, {"n": "1"}, {"n": "2"}]


@pytest.mark.parametrize("call_s, timed_out", [(0.0, False), (10.0, True)], ids=["refused", "timed-out"])
def test_the_back_off_grows_to_5_s_after_refused_tries_and_to_30_s_after_timeouts(env, call_s, timed_out):
    make, clock, client = env
    tracker = make(outage_s=600)
    run_id = tracker.start_trial("parent", "t", 9, {})
    client.fail_with = INTERNAL_ERROR
    client.duration = [call_s] * 100  # every try takes this long before it fails
    with pytest.raises(TrackingUnavailable):
        tracker.finish(run_id, "COMPLETE")
    assert clock.slept[:9] == pytest.approx([backoff(k, timed_out) for k in range(1, 10)])
    assert max(clock.slept) == (MAX_BACKOFF if timed_out else MAX_BACKOFF_FAST)
    assert tracker.longest_call_s == pytest.approx(call_s)


# -- permanent errors -----------------------------------------------------------------------------

def test_a_permanent_error_raises_at_once(env):
    make, clock, client = env
    tracker = make()
    run_id = tracker.start_trial("parent", "t", 6, {"eta": 0.5})
    client.fail_with = INVALID_PARAMETER_VALUE
    with pytest.raises(MlflowException) as err:
        tracker.log_epoch(run_id, epoch(1), 1)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    calls = len(client.calls)
    with pytest.raises(MlflowException):
        tracker.finish(run_id, "COMPLETE")
    assert len(client.calls) == calls + 1 and clock.slept == []
    with pytest.raises(MlflowException):
        tracker.start_trial("parent", "t", 7, {})
    assert clock.slept == []


# -- longest_call_s -------------------------------------------------------------------------------

def test_longest_call_is_recorded_also_for_failed_calls(env):
    make, clock, client = env
    tracker = make()
    client.duration = [0.2]
    run_id = tracker.start_trial("parent", "t", 8, {})
    assert tracker.longest_call_s == pytest.approx(0.2)
    client.duration = [1.5, 0.3]
    tracker.log_epoch(run_id, epoch(1), 1)
    clock.advance(1)
    tracker.log_epoch(run_id, epoch(2), 2)
    assert tracker.longest_call_s == pytest.approx(1.5)
    client.fail_with = INTERNAL_ERROR
    client.duration = [9.5]  # a hung server: the call times out after 9.5 s
    clock.advance(1)
    tracker.log_epoch(run_id, epoch(3), 3)
    assert tracker.longest_call_s == pytest.approx(9.5)


def test_queued_tags_go_out_with_the_runs_end_through_an_outage(env):
    make, clock, client = env
    tracker = make()
    run_id = tracker.start_trial("parent", "t", 9, {})
    client.fail_with = INTERNAL_ERROR
    tracker.queue_tags(run_id, {"sweeps.finding.decay_negligible": "notice"})
    assert tracker.pending_runs() == [run_id]

    def recover(seconds: float) -> None:
        Clock.sleep(clock, seconds)
        client.fail_with = None

    tracker._sleep = recover
    tracker.finish(run_id, "COMPLETE", "completed: 3 epochs")
    run = client.runs[run_id]
    assert run.tags["sweeps.finding.decay_negligible"] == "notice" and run.tags["sweeps.state"] == "COMPLETE"
    assert run.status == "FINISHED" and tracker.pending_runs() == []
