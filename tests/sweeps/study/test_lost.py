"""Lost trials (``sweeps.study.lost``): they end FAIL with a reason and are retried, at most max_retries times."""

from __future__ import annotations

import datetime
import types
from typing import Any

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from servicekit import wait_until

from sweeps import names
from sweeps.study.claims import claim_trial, trial_id
from sweeps.study.lost import RetryLostTrial, fail_dead_workers, fail_lost, fail_lost_trial, fail_orphans, retry_trial
from sweeps.study.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture
def url(scratch):
    """A fresh SQLite database, in RAM when there is one."""
    return f"sqlite:///{scratch / 'optuna.db'}"

def new_study(url: str, slots: int, **storage_kwargs: Any) -> tuple[optuna.Study, Any]:
    storage = open_storage(url, **storage_kwargs)
    study = optuna.create_study(study_name="r", storage=storage, direction="maximize")
    for _ in range(slots):
        study.enqueue_trial({})
    return study, storage


def study_cfg() -> Any:
    """A valid sweep config whose study settings the worker loop reads."""
    from sweeps.config import parse_config

    return parse_config({"name": "r", "study": {"heartbeat_interval": 60, "heartbeat_grace": 120}}, source="test")


def frozen(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    return study.get_trials(deepcopy=True)[number]


def claim_and_sample(study: optuna.Study, storage: Any) -> tuple[int, dict[str, Any]]:
    trial = claim_trial(study, storage)
    assert trial is not None
    trial.suggest_float("eta", 0.01, 10.0, log=True)
    trial.suggest_int("epochs", 1, 30)
    trial.suggest_categorical("hidden", ["[10]", "[20, 10]"])
    return trial.number, dict(trial.params)


def fail(study: optuna.Study, storage: Any, number: int, reason: str = names.REASON_LOST_WORKER_DIED) -> None:
    tid = trial_id(storage, study, number)
    storage.set_trial_user_attr(tid, names.TRIAL_REASON, reason)
    storage.set_trial_user_attr(tid, names.TRIAL_WORKER, "host:1")
    storage.set_trial_user_attr(tid, names.TRIAL_RUN, "run-of-the-lost-attempt")
    assert storage.set_trial_state_values(tid, TrialState.FAIL)


# -- retry_trial ----------------------------------------------------------------------------------

def test_retry_copies_the_point_and_records_its_history(url):
    study, storage = new_study(url, 1, heartbeat=False)
    number, params = claim_and_sample(study, storage)
    fail(study, storage, number)
    lost = frozen(study, number)
    retry = retry_trial(study, lost, max_retries=3)
    trials = study.get_trials(deepcopy=True)
    assert retry == len(trials) - 1 == 1
    copy = trials[retry]
    assert copy.state == TrialState.WAITING
    assert copy.params == params and copy.distributions == lost.distributions
    # the copy's own user attributes: not the lost attempt's run, worker or reason
    assert copy.user_attrs == {names.TRIAL_RETRY_OF: number}
    assert copy.system_attrs[names.SYS_FAILED_TRIAL] == number
    assert copy.system_attrs[names.SYS_RETRY_HISTORY] == [number]
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(copy) == number
    assert RetryHeartbeatStaleTrialCallback.retry_history(copy) == [number]
    # the lost trial is left as it was
    assert frozen(study, number).state == TrialState.FAIL
    assert frozen(study, number).user_attrs[names.TRIAL_REASON] == names.REASON_LOST_WORKER_DIED

    # the worker that takes the retry gets the same point from every suggest call
    again = claim_trial(study, storage)
    assert again.number == retry
    assert again.suggest_float("eta", 0.01, 10.0, log=True) == params["eta"]
    assert again.suggest_int("epochs", 1, 30) == params["epochs"]
    assert again.suggest_categorical("hidden", ["[10]", "[20, 10]"]) == params["hidden"]


@pytest.mark.parametrize("max_retries", [0, 1, 3])
def test_a_retry_chain_stops_after_max_retries(url, max_retries):
    study, storage = new_study(url, 1, heartbeat=False)
    first, params = claim_and_sample(study, storage)
    chain = [first]
    while True:
        fail(study, storage, chain[-1])
        retry = retry_trial(study, frozen(study, chain[-1]), max_retries)
        if retry is None:
            break
        assert frozen(study, retry).system_attrs[names.SYS_RETRY_HISTORY] == chain
        assert frozen(study, retry).system_attrs[names.SYS_FAILED_TRIAL] == first
        assert frozen(study, retry).user_attrs[names.TRIAL_RETRY_OF] == chain[-1]
        taken = claim_trial(study, storage)
        assert taken is not None and taken.number == retry
        chain.append(retry)
        assert len(chain) <= max_retries + 1, "retried past max_retries"
    assert len(chain) == max_retries + 1  # the first attempt and max_retries retries
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == max_retries + 1
    assert all(t.state == TrialState.FAIL and t.params == params for t in trials)
    # Optuna's own callback with max_retry=max_retries would stop at the same place
    last = trials[-1]
    assert len(RetryHeartbeatStaleTrialCallback.retry_history(last)) == max_retries


# -- fail_lost_trial ------------------------------------------------------------------------------

@pytest.mark.parametrize("end", [TrialState.COMPLETE, TrialState.FAIL])
def test_fail_lost_trial_leaves_a_trial_that_ended_meanwhile(url, end):
    study, storage = new_study(url, 1, heartbeat=False)
    number, _ = claim_and_sample(study, storage)
    seen_running = frozen(study, number)
    tid = trial_id(storage, study, number)
    storage.set_trial_user_attr(tid, names.TRIAL_REASON, "its own reason")
    storage.set_trial_state_values(tid, end, [1.0] if end == TrialState.COMPLETE else None)
    assert fail_lost_trial(study, storage, seen_running, names.REASON_LOST_WORKER_DIED, 3) is False
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 1  # no retry
    assert trials[0].state == end and trials[0].user_attrs[names.TRIAL_REASON] == "its own reason"


def test_fail_lost_trial_fails_and_retries_a_running_trial(url):
    study, storage = new_study(url, 1, heartbeat=False)
    number, params = claim_and_sample(study, storage)
    assert fail_lost_trial(study, storage, frozen(study, number), names.REASON_LOST_STORAGE, 3) is True
    lost, copy = study.get_trials(deepcopy=False)
    assert lost.state == TrialState.FAIL and lost.user_attrs[names.TRIAL_REASON] == names.REASON_LOST_STORAGE
    assert copy.state == TrialState.WAITING and copy.params == params
    assert copy.user_attrs[names.TRIAL_RETRY_OF] == number
    # a second repairer that saw the same RUNNING trial does nothing
    assert fail_lost_trial(study, storage, frozen(study, number), names.REASON_LOST_STORAGE, 3) is False
    assert len(study.get_trials(deepcopy=False)) == 2


# -- fail_orphans ---------------------------------------------------------------------------------

def test_fail_orphans_fails_only_old_trials_no_worker_started(url):
    study, storage = new_study(url, 3, heartbeat=False)
    orphan = claim_trial(study, storage).number
    started = claim_trial(study, storage).number
    storage.set_trial_user_attr(trial_id(storage, study, started), names.TRIAL_WORKER, "host:42")
    grace = 120.0
    latest_start = max(t.datetime_start for t in study.get_trials(states=(TrialState.RUNNING,)))
    earliest_start = min(t.datetime_start for t in study.get_trials(states=(TrialState.RUNNING,)))

    young = earliest_start + datetime.timedelta(seconds=grace / 2)
    assert fail_orphans(study, storage, grace, 3, now=young) == []
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING, TrialState.RUNNING, TrialState.WAITING]

    old = latest_start + datetime.timedelta(seconds=grace + 1)
    assert fail_orphans(study, storage, grace, 3, now=old) == [orphan]
    trials = study.get_trials()
    assert trials[orphan].state == TrialState.FAIL
    assert trials[orphan].user_attrs[names.TRIAL_REASON] == names.REASON_LOST_BEFORE_START
    assert names.is_infrastructure_failure(trials[orphan].user_attrs[names.TRIAL_REASON])
    assert trials[started].state == TrialState.RUNNING  # a worker started it: the heartbeat's business
    assert trials[2].state == TrialState.WAITING  # a slot nobody took is no orphan
    retries = [t for t in trials if t.user_attrs.get(names.TRIAL_RETRY_OF) == orphan]
    assert len(retries) == 1 and retries[0].state == TrialState.WAITING
    assert fail_orphans(study, storage, grace, 3, now=old) == []  # once


def test_a_sweeps_worker_names_itself_before_its_first_heartbeat(url):
    """The orphan rule rests on this order: ``worker`` and the reason are written before the first heartbeat,
    so a trial without ``worker`` never had a heartbeat (its worker died right after taking it)."""
    from sweeps.engine.worker import _Loop

    study, storage = new_study(url, 1, heartbeat_interval=60, heartbeat_grace=120)
    order: list[str] = []
    real_set, real_beat = storage.set_trial_user_attr, storage.record_heartbeat
    storage.set_trial_user_attr = lambda tid, key, value: (order.append(key), real_set(tid, key, value))[1]
    storage.record_heartbeat = lambda tid: (order.append("heartbeat"), real_beat(tid))[1]

    from sweeps.engine.outcome import Kind, TrialEnd

    objective = types.SimpleNamespace(run=lambda trial: TrialEnd(Kind.FAILED, "Stop"))  # a trial that fails at once
    loop = _Loop.__new__(_Loop)
    loop.cfg, loop.study, loop.storage, loop.objective, loop.tracker = study_cfg(), study, storage, objective, None
    trial = claim_trial(study, storage)
    loop.run_trial(trial)
    assert order.index(names.TRIAL_WORKER) < order.index("heartbeat")
    assert order.index(names.TRIAL_REASON) < order.index("heartbeat")


# -- the heartbeat path ---------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("worker_attr", [True], ids=["worker-named"])
def test_a_trial_whose_heartbeat_stops_is_failed_with_the_heartbeat_reason_and_retried(url, worker_attr):
    """The trial got its name, its reason and a heartbeat (in that order, as a sweeps worker does), then its
    worker went silent: the heartbeat check fails it with the heartbeat's reason and it is retried."""
    study, storage = new_study(url, 1, heartbeat_interval=1, heartbeat_grace=2,
                               stale_trial_callback=RetryLostTrial(3))
    number, params = claim_and_sample(study, storage)
    tid = trial_id(storage, study, number)
    # what a worker does when it starts a trial (sweeps.engine.worker / sweeps.engine.objective): the reason it keeps
    # if it is lost, its heartbeat, its name
    storage.set_trial_user_attr(tid, names.TRIAL_REASON, names.REASON_LOST_HEARTBEAT)
    storage.record_heartbeat(tid)
    if worker_attr:
        storage.set_trial_user_attr(tid, names.TRIAL_WORKER, "host:4242")
    # the worker goes silent; another worker's repair pass finds the trial once the grace has passed

    def failed() -> bool:
        fail_lost(study, storage, 2, 3)
        return storage.get_trial(tid).state == TrialState.FAIL

    wait_until(failed, timeout=15, what="the heartbeat-stale trial to be failed", interval=0.2)
    trials = study.get_trials(deepcopy=False)
    assert trials[number].user_attrs[names.TRIAL_REASON] == names.REASON_LOST_HEARTBEAT
    retries = [t for t in trials if t.number != number]
    assert len(retries) == 1
    retry = retries[0]
    assert retry.state == TrialState.WAITING and retry.params == params
    assert retry.user_attrs == {names.TRIAL_RETRY_OF: number}
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == number
    fail_lost(study, storage, 2, 3)  # another pass: nothing more to do
    assert len(study.get_trials(deepcopy=False)) == 2


# -- fail_dead_workers ----------------------------------------------------------------------------

def test_fail_dead_workers_fails_only_the_dead_workers_trials(url):
    study, storage = new_study(url, 2, heartbeat=False)
    a, b = claim_trial(study, storage).number, claim_trial(study, storage).number
    storage.set_trial_user_attr(trial_id(storage, study, a), names.TRIAL_WORKER, "h:1")
    storage.set_trial_user_attr(trial_id(storage, study, b), names.TRIAL_WORKER, "h:2")
    assert fail_dead_workers(study, storage, {"h:1": "killed by SIGKILL"}, 3) == [a]
    trials = study.get_trials()
    assert trials[a].state == TrialState.FAIL and trials[b].state == TrialState.RUNNING
    assert trials[a].user_attrs[names.TRIAL_REASON] == f"{names.REASON_LOST_WORKER_DIED} (killed by SIGKILL)"
    assert [t.user_attrs.get(names.TRIAL_RETRY_OF) for t in trials[2:]] == [a]
