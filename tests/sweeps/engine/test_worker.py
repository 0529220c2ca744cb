"""The worker's heartbeat thread (``sweeps.engine.worker.Heartbeat``)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from servicekit import wait_until
from sqlalchemy import exc as sa_exc

from sweeps.engine.worker import Heartbeat
from sweeps.study.storage import StorageUnavailable

INTERVAL = 0.05


class FakeStorage:
    """Counts ``record_heartbeat`` calls; the calls numbered in ``fail_on`` (1-based) raise."""

    def __init__(self, interval: Any = 1, fail_on: set[int] = frozenset()) -> None:
        self.interval = interval
        self.fail_on = set(fail_on)
        self.attempts: list[tuple[int, float]] = []  # (trial id, monotonic time)
        self.recorded = 0
        self.lock = threading.Lock()

    def get_heartbeat_interval(self) -> Any:
        return self.interval

    def record_heartbeat(self, trial_id: int) -> None:
        with self.lock:
            self.attempts.append((trial_id, time.monotonic()))
            if len(self.attempts) in self.fail_on:
                raise StorageUnavailable("the study's storage failed 10 times in a row (record_heartbeat)") \
                    if len(self.attempts) % 2 else sa_exc.OperationalError("UPDATE", {}, Exception("closed"))
            self.recorded += 1


def heartbeat_threads(trial_id: int) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"heartbeat-{trial_id}"]


def test_beats_on_entry_then_every_interval_until_the_block_ends():
    storage = FakeStorage()
    entered = time.monotonic()
    with Heartbeat(storage, 17, INTERVAL) as hb:
        assert storage.recorded == 1 and hb.beats >= 1  # the first beat is recorded before the block runs
        assert storage.attempts[0][1] >= entered
        wait_until(lambda: storage.recorded >= 6, timeout=10, what="6 heartbeats")
        assert len(heartbeat_threads(17)) == 1
    after = len(storage.attempts)
    assert heartbeat_threads(17) == []  # the only thread that beats has ended: no beat can follow
    assert len(storage.attempts) == after and hb.beats == storage.recorded
    assert {tid for tid, _ in storage.attempts} == {17}
    gaps = [b - a for (_, a), (_, b) in zip(storage.attempts, storage.attempts[1:])]
    assert min(gaps) >= INTERVAL * 0.9  # every interval, not in a busy loop


def test_a_failing_storage_call_does_not_stop_the_beats():
    storage = FakeStorage(fail_on={2, 3, 4})
    with Heartbeat(storage, 5, INTERVAL) as hb:
        wait_until(lambda: storage.recorded >= 4, timeout=10, what="heartbeats after three failed ones")
        assert len(storage.attempts) >= 7
        assert heartbeat_threads(5)
    assert hb.beats == storage.recorded  # only the beats that were recorded count
    assert heartbeat_threads(5) == []


def test_a_failing_first_beat_neither_raises_nor_stops_the_thread():
    storage = FakeStorage(fail_on={1})
    with Heartbeat(storage, 9, INTERVAL) as hb:
        assert storage.recorded == 0 and hb.beats == 0
        wait_until(lambda: storage.recorded >= 2, timeout=10, what="heartbeats after a failed first one")
    assert heartbeat_threads(9) == []


def test_the_block_s_exception_propagates_and_the_thread_stops():
    storage = FakeStorage()
    with pytest.raises(RuntimeError, match="trial failed"):
        with Heartbeat(storage, 3, INTERVAL):
            raise RuntimeError("trial failed")
    assert heartbeat_threads(3) == []


def test_a_long_interval_does_not_delay_the_end_of_the_block():
    storage = FakeStorage()
    start = time.monotonic()
    with Heartbeat(storage, 4, interval=3600):
        pass
    assert time.monotonic() - start < 5  # the thread is woken, not waited out
    assert storage.recorded == 1 and heartbeat_threads(4) == []


class NoHeartbeatStorage:
    """A journal storage: no ``get_heartbeat_interval`` at all."""

    def __init__(self) -> None:
        self.calls = 0

    def record_heartbeat(self, trial_id: int) -> None:  # pragma: no cover - must not be called
        self.calls += 1


@pytest.mark.parametrize("storage", [NoHeartbeatStorage(), FakeStorage(interval=None)],
                         ids=["no-heartbeat-api", "heartbeat-disabled"])
def test_a_storage_without_heartbeats_gets_none(storage):
    with Heartbeat(storage, 1, INTERVAL) as hb:
        assert heartbeat_threads(1) == []
    assert hb.beats == 0
    assert getattr(storage, "calls", 0) == 0 and not getattr(storage, "attempts", [])


def test_one_heartbeat_thread_beats_every_trial_it_holds_until_discarded():
    storage = FakeStorage()
    with Heartbeat(storage, [21, 22, 23], INTERVAL) as hb:
        assert {tid for tid, _ in storage.attempts} == {21, 22, 23}  # every trial beats before the block runs
        assert len(heartbeat_threads(21)) == 0 and [t.name for t in threading.enumerate()].count("heartbeat-21+2") == 1
        hb.discard(22)
        seen = len(storage.attempts)
        wait_until(lambda: len(storage.attempts) >= seen + 4, timeout=10, what="beats after a discard")
        assert {tid for tid, _ in storage.attempts[seen:]} == {21, 23}
    assert not [t for t in threading.enumerate() if t.name.startswith("heartbeat-21")]


# -- populations (study.population > 1): the same trials as one at a time ------------------------------------

GRID = {"search_space": {"__replace__": True,
                         "eta": {"type": "categorical", "choices": [0.3, 1.0, 3.0]},
                         "lmbda": {"type": "categorical", "choices": [0.01, 1.0, 1.0e6]},
                         "batch_size": {"type": "categorical", "choices": [10, 25]}},
        "training": {"epochs": 4, "momentum": 0.3},
        "study": {"n_trials": 18, "sampler": {"name": "grid"}, "pruner": {"__replace__": True, "name": "none"}}}


def _nan(v: Any) -> Any:
    return "nan" if isinstance(v, float) and v != v else v


def _close(a: Any, b: Any) -> bool:
    """Equal, floats to 1e-12 relative (bit for bit unless nncore fuses a product that rounds differently)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or abs(a - b) <= 1e-12 * max(abs(a), abs(b))
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    return a == b


def _by_point(study: Any, tracker: Any) -> dict[tuple, Any]:
    """Per grid point: state, value, Optuna's values, reason, run end, every logged metric but the wall time."""
    out = {}
    for t in study.trials:
        run = t.user_attrs["mlflow_run_id"]
        epochs = [(step, {k: _nan(v) for k, v in values.items() if k != "train/epoch_time"})
                  for step, values in tracker.epochs[run]]
        out[tuple(sorted(t.params.items()))] = (t.state.name, _nan(t.value),
                                                {k: _nan(v) for k, v in t.intermediate_values.items()},
                                                t.user_attrs["reason"], tracker.ends[run], epochs)
    return out


def test_a_population_sweep_gives_the_trials_of_one_at_a_time(sw):
    """K=4 over an 18-point grid (eta x lambda x batch size, so populations split into groups by batch size;
    the members of lambda 1e6 diverge): every trial's state, value, reason, run end and every metric of
    every epoch equal those of the same sweep with population 1, to 1e-12 relative (one BLAS thread, as in a
    worker process: a threaded BLAS splits products differently by shape, which changes roundings at 1e-16)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        one, t1, _ = sw.run_in_process(GRID, 1)
        four, t4, _ = sw.run_in_process(GRID, 4)
    a, b = _by_point(one, t1), _by_point(four, t4)
    assert len(a) == 18 and a.keys() == b.keys()
    for point in a:
        assert _close(a[point], b[point]), (point, a[point], b[point])
    states = sorted(v[0] for v in a.values())
    assert "COMPLETE" in states and "PRUNED" in states, states
    assert all(v[3].startswith(("completed: 4 epochs", "diverged:")) for v in a.values())
    assert all(v[4][0] == v[0] for v in a.values())  # the run ends with the trial's state


def test_a_per_trial_batch_order_is_each_trials_own(sw):
    """batch_order per_trial: the order of each trial's own SeedSequence([seed, number]); common: one order for
    all, so two trials with the same settings but other numbers differ only by their initial weights."""
    import numpy as np

    from sweeps.config import parse_config
    from sweeps.engine.data import load_data
    from sweeps.engine.objective import BATCH_ORDER_STREAM, Objective

    for order in ("per_trial", "common"):
        cfg = parse_config(sw.merge(sw.BASE_CONFIG, {"training": {"batch_order": order}}))
        rng = Objective(cfg, load_data(cfg.data, cfg.seed), None, None).batch_rng(7)
        seq = np.random.SeedSequence([0, 7]).spawn(2)[1] if order == "per_trial" else \
            np.random.SeedSequence([0, BATCH_ORDER_STREAM])
        assert np.array_equal(rng.permutation(300), np.random.default_rng(seq).permutation(300))


def test_a_population_flushes_each_run_k_times_less_often(sw) -> None:
    from sweeps.config import parse_config
    from sweeps.engine.worker import flush_interval, population_size

    one = parse_config(sw.BASE_CONFIG)
    pop = parse_config(sw.merge(sw.BASE_CONFIG, {"study": {"population": 8}}))
    per_trial = parse_config(sw.merge(sw.BASE_CONFIG, {"study": {"population": 1},
                                                       "training": {"batch_order": "per_trial"}}))
    assert (population_size(one), population_size(pop), population_size(per_trial)) == (1, 8, 1)
    assert flush_interval(1.0, one) == 1.0 and flush_interval(0.5, pop) == 4.0 and flush_interval(0, pop) == 0


@pytest.mark.parametrize("population, waiting, workers, share", [
    (16, 16, 2, 8),    # the book recipe's 16 trials on 2 workers: 8 each, not 16 and 0
    (16, 96, 2, 16),   # plenty waiting: the whole population
    (16, 3, 2, 2),     # the end of a sweep: rounded up
    (16, 0, 2, 1),     # nothing counted (another worker was faster): still try one
    (4, 10, 1, 4),
])
def test_a_population_worker_claims_at_most_its_share_of_the_waiting_trials(population, waiting, workers, share):
    from sweeps.engine.worker import claim_share

    assert claim_share(population, waiting, workers) == share


@pytest.mark.parametrize("pruner, completed, workers, waiting, cap", [
    ({"name": "median", "options": {"n_startup_trials": 5}}, 0, 2, 96, 3),  # 5 startup trials over 2 workers
    ({"name": "median", "options": {"n_startup_trials": 5}}, 4, 2, 90, 3),
    ({"name": "median", "options": {"n_startup_trials": 5}}, 5, 2, 90, None),  # the pruner can prune: no cap
    ({"name": "median", "options": {"n_startup_trials": 5}}, 0, 2, 32, None),  # all fit in one round (16 x 2)
    ({"name": "median", "options": {}}, 0, 1, 17, 5),  # Optuna's default n_startup_trials
    ({"name": "percentile", "options": {"percentile": 25.0, "n_startup_trials": 6}}, 2, 4, 100, 2),
    ({"name": "median", "options": {"n_startup_trials": 0}}, 0, 2, 96, None),
    ({"name": "successive_halving", "options": {}}, 0, 2, 96, None),  # compares running trials' rungs
    ({"name": "none", "options": {}}, 0, 2, 96, None),
])
def test_a_population_worker_takes_only_its_share_of_the_pruners_startup_trials(sw, pruner, completed, workers,
                                                                                  waiting, cap):
    from sweeps.config import parse_config
    from sweeps.engine.worker import startup_cap

    cfg = parse_config(sw.merge(sw.BASE_CONFIG, {"study": {"workers": workers, "population": 16,
                                                           "pruner": {"__replace__": True, **pruner}}}))
    assert startup_cap(cfg, completed, waiting) == cap


def test_a_population_sweep_runs_the_startup_trials_first_and_prunes_from_the_next_population(sw):
    """Median pruner with 2 startup trials, population 4, 1 worker, 10 trials (more than one round of 4): the worker
    takes 2 trials first (they complete: nothing to compare with), then populations of 4 the pruner can stop."""
    changes = {"training": {"epochs": 6},
               "search_space": {"__replace__": True, "eta": {"type": "float", "low": 0.05, "high": 8.0, "log": True}},
               "study": {"n_trials": 10, "sampler": {"name": "random"}, "workers": 1,
                         "pruner": {"__replace__": True, "name": "median",
                                    "options": {"n_startup_trials": 2, "n_warmup_steps": 1}}}}
    sizes: list[int] = []
    from sweeps.engine.worker import _Loop

    real = _Loop.run_population

    def run_population(self: Any, trials: list) -> Any:
        sizes.append(len(trials))
        return real(self, trials)

    import unittest.mock

    with unittest.mock.patch.object(_Loop, "run_population", run_population):
        study, _, _ = sw.run_in_process(changes, 4)
    assert sizes == [2, 4, 4], sizes
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.state.name for t in trials[:2]] == ["COMPLETE", "COMPLETE"]
    pruned = [t.number for t in trials[2:] if t.user_attrs["reason"].startswith("pruned at epoch")]
    assert pruned, [t.user_attrs["reason"] for t in trials]  # the pruner's own decisions, not divergences


def test_a_population_that_loses_the_tracking_store_fails_and_retries_every_member(sw):
    """The tracking store stays down when the first member ends (its run's end cannot be delivered): that member
    and the members still training are failed "lost: tracking unavailable" with their runs queued, each is
    retried with its parameters, and the worker exits 76 (the launcher says the store is down)."""
    import copy
    import threading

    import optuna

    from sweeps import names
    from sweeps.config import parse_config
    from sweeps.engine.data import load_data
    from sweeps.engine.objective import Objective
    from sweeps.engine.worker import EXIT_TRACKING_UNAVAILABLE, _Loop
    from sweeps.stores import TrackingUnavailable
    from sweeps.study.samplers import build_pruner, build_sampler

    class DownAtFirstEnd(sw.RecordingTracker):
        def finish(self, run_id: str, state: str, reason: str = "", status: str = "", **_: Any) -> None:
            raise TrackingUnavailable("the tracking store sqlite:///x failed for 300 s: database is locked")

    raw = sw.merge(sw.BASE_CONFIG, {"search_space": {"epochs": {"type": "categorical", "choices": [2, 40]}},
                                    "study": {"n_trials": 3, "population": 3, "workers": 1,
                                              "pruner": {"__replace__": True, "name": "none"}}})
    cfg = parse_config(copy.deepcopy(raw))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name=cfg.name, storage=storage, direction=cfg.objective.direction,
                                sampler=build_sampler(cfg), pruner=build_pruner(cfg))
    for epochs in (2, 40, 40):
        study.enqueue_trial({"epochs": epochs})
    tracker = DownAtFirstEnd()
    stop = threading.Event()
    objective = Objective(cfg, load_data(cfg.data, cfg.seed), tracker, None, artifacts="none",
                          interrupt_flag=stop.is_set, names_worker=False)
    assert _Loop(cfg, study, storage, objective, tracker, stop).run(None) == EXIT_TRACKING_UNAVAILABLE
    trials = {t.number: t for t in study.trials}
    lost = [trials[n] for n in (0, 1, 2)]
    assert [t.state.name for t in lost] == ["FAIL"] * 3
    assert all(t.user_attrs[names.TRIAL_REASON].startswith(names.REASON_LOST_TRACKING) for t in lost), \
        [t.user_attrs[names.TRIAL_REASON] for t in lost]
    assert len(tracker.epochs[lost[1].user_attrs["mlflow_run_id"]]) < 41  # stopped before its 40 epochs
    retries = {t.user_attrs[names.TRIAL_RETRY_OF]: t for t in study.trials if names.TRIAL_RETRY_OF in t.user_attrs}
    assert sorted(retries) == [0, 1, 2]
    assert all(retries[n].state.name == "WAITING" and retries[n].params == trials[n].params for n in retries)
    assert [retries[n].params["epochs"] for n in (0, 1, 2)] == [2, 40, 40]


def test_a_population_member_failed_elsewhere_is_dropped_and_the_others_go_on(sw, monkeypatch):
    """A member's trial failed by another process while the population trains (its heartbeat judged lost): the
    batched write of its values is refused, the member ends as the single path ends it at ``trial.report``
    (abandoned: its run KILLED with the reason, the trial left FAIL for the repair to retry), the others finish."""
    from optuna.trial import TrialState

    from sweeps.engine.reports import ReportBuffer

    real_add = ReportBuffer.add
    failed: list[int] = []

    def add(self: ReportBuffer, trial: Any, value: float, step: int) -> None:
        if trial.number == 1 and step == 2 and not failed:
            tid = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, 1)
            self.storage.set_trial_user_attr(tid, "reason", "lost: failed by another process")
            assert self.storage.set_trial_state_values(tid, TrialState.FAIL)
            failed.append(tid)
        real_add(self, trial, value, step)

    monkeypatch.setattr(ReportBuffer, "add", add)
    changes = {"training": {"epochs": 4}, "study": {"n_trials": 4, "sampler": {"name": "random"},
                                                   "pruner": {"__replace__": True, "name": "none"}}}
    study, tracker, _ = sw.run_in_process(changes, 4)
    assert failed
    by_number = {t.number: t for t in study.trials}
    assert by_number[1].state == TrialState.FAIL and by_number[1].user_attrs["reason"].startswith("lost: failed")
    assert set(by_number[1].intermediate_values) <= {1}  # refused from epoch 2 on (epoch 1's if still queued)
    assert [step for step, _ in tracker.epochs[by_number[1].user_attrs["mlflow_run_id"]]][:3] == [0, 1, 2]
    state, reason, status = tracker.ends[by_number[1].user_attrs["mlflow_run_id"]]
    assert (state, status) == ("FAIL", "KILLED") and reason.startswith("abandoned: trial 1 was failed"), reason
    others = [t for n, t in by_number.items() if n != 1]
    assert [t.state for t in others] == [TrialState.COMPLETE] * 3
    assert all(sorted(t.intermediate_values) == [1, 2, 3, 4] for t in others)


def test_an_error_escaping_a_trial_fails_that_trial_and_the_worker_goes_on(sw):
    """Something the objective did not expect (here: a permanent MLflow error raised at a run's end) ends that
    trial FAIL with the error as its reason; the worker tells it and takes the next trial, it does not die."""



    class RefusesTrialZerosEnd(sw.RecordingTracker):
        def finish(self, run_id: str, state: str, reason: str = "", status: str = "", **kw: Any) -> None:
            if run_id == "run-0":
                raise RuntimeError("BAD_REQUEST: duplicate key value violates unique constraint metric_pk")
            super().finish(run_id, state, reason, status, **kw)

    tracker = RefusesTrialZerosEnd()
    study, loop = _loop_on_slots(sw, 2, tracker)
    assert loop.run(None) == 0
    first, second = sorted(study.trials, key=lambda t: t.number)
    assert first.state.name == "FAIL" and first.user_attrs["reason"].startswith("RuntimeError: BAD_REQUEST")
    assert second.state.name == "COMPLETE" and tracker.ends["run-1"][0] == "COMPLETE"


@pytest.mark.parametrize("where", ["epoch", "start"])
def test_a_refused_credential_stops_the_worker_at_once_and_puts_its_trial_back(sw, where, monkeypatch):
    """The tracking server answers 401 mid-sweep (a password rotated): no wait for tracking_outage_s, no trial
    failed through its own fault. The worker stops with 77 after that trial; the trial is failed with the refused
    reason and a copy of its point waits for a worker with good credentials."""

    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import UNAUTHENTICATED

    from sweeps import names
    from sweeps.engine.worker import EXIT_TRACKING_REFUSED

    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    refusal = MlflowException("API request to endpoint /api/2.0/mlflow/runs/log-batch failed with error code 401",
                              error_code=UNAUTHENTICATED)

    class Refusing(sw.RecordingTracker):
        tracking_uri = "http://127.0.0.1:5000"

        def start_trial(self, *args: Any, **kw: Any) -> str:
            if where == "start":
                raise refusal
            return super().start_trial(*args, **kw)

        def log_epoch(self, run_id: str, values: dict[str, float], step: int, **kw: Any) -> None:
            if where == "epoch" and step >= 1:
                raise refusal
            super().log_epoch(run_id, values, step, **kw)

    study, loop = _loop_on_slots(sw, 3, Refusing())
    assert loop.run(None) == EXIT_TRACKING_REFUSED
    by_state: dict[str, list] = {}
    for t in study.get_trials(deepcopy=False):
        by_state.setdefault(t.state.name, []).append(t)
    assert len(by_state["FAIL"]) == 1  # the one trial it took, and no other
    refused = by_state["FAIL"][0]
    assert refused.user_attrs["reason"].startswith(names.REASON_REFUSED)
    assert "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in refused.user_attrs["reason"]
    assert names.is_infrastructure_failure(refused.user_attrs["reason"])
    assert len(by_state["WAITING"]) == 3  # the two untouched slots and the put-back copy
    assert "COMPLETE" not in by_state


def _loop_on_slots(sw: Any, n_trials: int, tracker: Any) -> tuple[Any, Any]:
    """An in-memory study of ``n_trials`` enqueued slots (no pruner) and a worker loop on it with ``tracker``."""
    import threading

    import optuna

    from sweeps.config import parse_config
    from sweeps.engine.data import load_data
    from sweeps.engine.objective import Objective
    from sweeps.engine.worker import _Loop
    from sweeps.study.samplers import build_pruner, build_sampler

    cfg = parse_config(sw.merge(sw.BASE_CONFIG, {"study": {"n_trials": n_trials,
                                                           "pruner": {"__replace__": True, "name": "none"}}}))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name=cfg.name, storage=storage, direction=cfg.objective.direction,
                                sampler=build_sampler(cfg), pruner=build_pruner(cfg))
    for _ in range(n_trials):
        study.enqueue_trial({})
    stop = threading.Event()
    objective = Objective(cfg, load_data(cfg.data, cfg.seed), tracker, None, artifacts="none",
                          interrupt_flag=stop.is_set, names_worker=False)
    return study, _Loop(cfg, study, storage, objective, tracker, stop)
