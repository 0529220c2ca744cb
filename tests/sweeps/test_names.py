"""The shared names (``sweeps.names``): reasons, attribute keys and tags that writers and readers share.

Oracles: Optuna's own retry callback and ``enqueue_trial`` (the system attributes they write),
MLflow's tag constant for parent runs and its run statuses, Optuna's trial states, the
reason texts the repair pass and the worker write (``sweeps.study.lost``). That the roles and statuses
the tracker writes are the ones the readers search: ``tests/sweeps/tracking/test_tracker.py``.
"""

from __future__ import annotations

import os
import warnings

import optuna
import pytest
from mlflow.entities import RunStatus
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from optuna.trial import TrialState

from sweeps import names

optuna.logging.set_verbosity(optuna.logging.WARNING)

CONSTANTS = {k: v for k, v in vars(names).items() if k.isupper() and isinstance(v, str)}
#: Values of other vocabularies (Optuna states, MLflow run statuses, the parent run's state): they may
#: spell alike across vocabularies (the state RUNNING, the status RUNNING), never within one.
VALUE_VOCABULARIES = ("STATE_", "COUNT_", "RUN_", "PARENT_")
LOST_REASONS = {k: v for k, v in CONSTANTS.items() if k.startswith("REASON_LOST_")}


def test_the_lost_reasons_are_the_ones_named_lost():
    assert set(LOST_REASONS) == {"REASON_LOST_HEARTBEAT", "REASON_LOST_BEFORE_START", "REASON_LOST_WORKER_DIED",
                                 "REASON_LOST_TRACKING", "REASON_LOST_STORAGE"}


@pytest.mark.parametrize("key", sorted(LOST_REASONS))
def test_every_retried_reason_starts_with_lost_and_is_an_infrastructure_failure(key):
    reason = LOST_REASONS[key]
    assert reason.startswith(names.REASON_LOST + ":"), reason
    assert names.is_infrastructure_failure(reason)
    # with the detail the writers append (repair: " (killed by SIGKILL)", objective: ": <error>")
    assert names.is_infrastructure_failure(f"{reason} (killed by SIGKILL)")
    assert names.is_infrastructure_failure(f"{reason}: HTTP 503")


def test_the_interrupted_reason_is_not_a_lost_one():
    assert not names.REASON_INTERRUPTED.startswith(names.REASON_LOST)
    assert not names.REASON_LOST.startswith(names.REASON_INTERRUPTED)
    assert not names.is_infrastructure_failure(names.REASON_INTERRUPTED)
    assert not names.is_infrastructure_failure("interrupted (signal SIGTERM) before training started")


@pytest.mark.parametrize("reason", [None, "", "diverged at epoch 1: weights overflowed", "pruned at epoch 3",
                                    "ValueError: batch_size must be <= n_train=300, got 400",
                                    "abandoned: trial 4 was failed while this worker was not heard from",
                                    "worker lost: not at the start", "Lost: capitalised"])
def test_other_reasons_are_not_infrastructure_failures(reason):
    assert names.is_infrastructure_failure(reason) is False


def test_no_two_names_share_a_value():
    by_value: dict[tuple[str, str], list[str]] = {}
    for key, value in CONSTANTS.items():
        vocabulary = next((p for p in VALUE_VOCABULARIES if key.startswith(p)), "names")
        if vocabulary in ("STATE_", "COUNT_"):
            vocabulary = "counts"  # the keys of one counts dict
        by_value.setdefault((vocabulary, value), []).append(key)
    assert {v: ks for v, ks in by_value.items() if len(ks) > 1} == {}


def test_the_retry_keys_are_optunas_own():
    """A study retried by Optuna's callback reads like one retried by sweeps (and the reverse)."""
    study = optuna.create_study()
    study.enqueue_trial({"x": 0.5})
    assert names.SYS_FIXED_PARAMS in study.get_trials()[0].system_attrs
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    failed = study.get_trials(deepcopy=False)[trial.number]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback()(study, failed)
    retry = study.get_trials()[-1]
    assert retry.system_attrs[names.SYS_FAILED_TRIAL] == trial.number
    assert retry.system_attrs[names.SYS_RETRY_HISTORY] == [trial.number]


def test_the_parent_tag_is_mlflows():
    assert names.TAG_PARENT == MLFLOW_PARENT_RUN_ID


def test_run_status_maps_every_finished_optuna_state_to_an_mlflow_status():
    finished = {s.name for s in TrialState if s.is_finished()}
    assert set(names.RUN_STATUS) == finished
    assert all(RunStatus.from_string(v) is not None for v in names.RUN_STATUS.values())
    assert names.RUN_STATUS["COMPLETE"] == "FINISHED" and names.RUN_STATUS["FAIL"] == "FAILED"


def test_the_state_names_are_optunas_and_the_statuses_mlflows():
    states = {v for k, v in CONSTANTS.items() if k.startswith("STATE_")}
    assert states <= {s.name for s in TrialState}
    assert {names.STATE_COMPLETE, names.STATE_PRUNED, names.STATE_FAIL, names.STATE_RUNNING,
            names.STATE_WAITING} == states
    assert names.COUNT_RETRIED not in {s.name for s in TrialState}  # a count of its own, never a state
    for key in (k for k in CONSTANTS if k.startswith("RUN_")):
        assert RunStatus.to_string(RunStatus.from_string(CONSTANTS[key])) == CONSTANTS[key], key


@pytest.mark.parametrize("state", [s for s in TrialState if s.is_finished()], ids=lambda s: s.name)
def test_run_status_ends_every_finished_trials_run(state):
    """Every finished state and every kind of reason gives a terminal MLflow status."""
    for reason in ("", names.REASON_LOST_HEARTBEAT, f"{names.REASON_INTERRUPTED} (signal SIGTERM)",
                   f"{names.REASON_ABANDONED}: trial 3 was failed elsewhere", "pruned at epoch 2"):
        status = names.run_status(state.name, reason)
        assert RunStatus.is_terminated(RunStatus.from_string(status)), (state, reason)
    assert names.run_status(state.name, f"{names.REASON_INTERRUPTED} (signal SIGINT)") == names.RUN_KILLED
    assert names.run_status(state.name, names.REASON_LOST_WORKER_DIED) == names.RUN_STATUS[state.name]


@pytest.mark.parametrize("state, reason, status", [
    ("COMPLETE", "", "FINISHED"),
    ("PRUNED", "pruned at epoch 3", "KILLED"),
    ("FAIL", "DivergenceError: weights overflowed", "FAILED"),
    ("FAIL", names.REASON_LOST_HEARTBEAT, "FAILED"),
    ("FAIL", names.REASON_LOST_TRACKING, "FAILED"),
    ("FAIL", "interrupted (signal SIGTERM)", "KILLED"),
    ("FAIL", "abandoned: the trial was failed elsewhere", "KILLED"),
    ("RUNNING", "", "FAILED"),
])
def test_run_status(state, reason, status):
    assert names.run_status(state, reason) == status


def test_the_parent_runs_end_is_terminal_and_says_whether_it_was_interrupted():
    (done_state, done_status), (stopped_state, stopped_status) = names.parent_state(False), names.parent_state(True)
    assert done_state != stopped_state
    for status in (done_status, stopped_status):
        assert RunStatus.is_terminated(RunStatus.from_string(status))
    assert (done_status, stopped_status) == (names.RUN_FINISHED, names.RUN_KILLED)


def test_the_parent_runs_metrics_are_one_per_count_of_the_sweep():
    """``trials_<state>`` comes from the keys of ``counts_of``: one metric per count, none a trial's metric."""
    from nncore.records import metric_names
    from sweeps.study.budget import counts_of

    study = optuna.create_study()
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
        trial = study.ask()
        study.tell(trial, 1.0 if state == TrialState.COMPLETE else None, state=state)
    study.ask()
    study.enqueue_trial({})
    counts = counts_of(study)
    assert all(counts[s] == 1 for s in (names.STATE_COMPLETE, names.STATE_PRUNED, names.STATE_FAIL,
                                        names.STATE_RUNNING, names.STATE_WAITING))
    metrics = [names.trials_metric(k) for k in counts]
    assert len(set(metrics)) == len(counts)
    assert names.trials_metric(names.STATE_COMPLETE) == "trials_complete"  # what docs and dashboards read
    trial_metrics = set(metric_names(3))
    assert not (set(metrics) | {names.METRIC_BEST_VALUE}) & trial_metrics


def test_the_best_param_tags_are_one_per_parameter_and_no_sweeps_tag():
    from sweeps.config import SEARCHABLE

    tags = {names.best_param_tag(p) for p in SEARCHABLE}
    assert len(tags) == len(SEARCHABLE) and names.TAG_BEST_TRIAL not in tags
    assert not {t for t in tags if t.startswith(("sweeps.", "mlflow."))}


def test_worker_name_is_host_and_pid_of_this_process_by_default():
    assert names.worker_name(4242, "node-7") == "node-7:4242"
    host, pid = names.worker_name().rsplit(":", 1)
    assert int(pid) == os.getpid() and names.worker_name(host=host) == names.worker_name()

