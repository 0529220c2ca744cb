"""The shared names (``sweeps.names``): reasons, attribute keys and tags that writers and readers share.

Oracles: Optuna's own retry callback and ``enqueue_trial`` (the system attributes they write),
MLflow's tag constant for parent runs and its run statuses, Optuna's trial states, and the
reason texts the repair pass and the worker write (``sweeps.repair``).
"""

from __future__ import annotations

import warnings

import optuna
import pytest
from mlflow.entities import RunStatus
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from optuna.trial import TrialState

from sweeps import names

optuna.logging.set_verbosity(optuna.logging.WARNING)

CONSTANTS = {k: v for k, v in vars(names).items() if k.isupper() and isinstance(v, str)}
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
    by_value: dict[str, list[str]] = {}
    for key, value in CONSTANTS.items():
        by_value.setdefault(value, []).append(key)
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
