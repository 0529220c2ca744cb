"""How a trial ends (``sweeps.engine.outcome``): one pure classification of what its training produced."""

from __future__ import annotations

import types

import optuna
import pytest

import nncore
from sweeps import names
from sweeps.engine.outcome import (
    Interrupted,
    Kind,
    TrackingLost,
    TrialAbandoned,
    TrialEnd,
    abandoned,
    end_of,
    final_value,
    reason_of,
    tracking_lost,
)

METRIC = "eval/accuracy"
HISTORY = [{METRIC: 0.5}, {METRIC: 0.75}]
DONE = types.SimpleNamespace(stop_reason="completed")  # what end_of reads of a TrainResult


def test_a_finished_training_is_complete_with_its_last_epochs_value() -> None:
    end = end_of(DONE, HISTORY, METRIC)
    assert (end.kind, end.value, end.reason) == (Kind.COMPLETE, 0.75, "completed: 2 epochs (completed)")
    assert (end.state, end.run_status, end.keeps_network) == ("COMPLETE", "FINISHED", True)
    assert end.for_optuna() == 0.75


@pytest.mark.parametrize("history, why", [([], "no epoch was trained"), ([{"train/total_loss": 1.0}],
                                                                         "has no value of 'eval/accuracy'")])
def test_a_training_without_the_objective_value_fails_naming_why(history, why) -> None:
    end = end_of(DONE, history, METRIC)
    assert end.kind == Kind.FAILED and end.reason.startswith("ValueError: ") and why in end.reason
    assert (end.state, end.run_status) == ("FAIL", "FAILED")
    with pytest.raises(ValueError, match=why):
        end.for_optuna()


def test_the_pruner_prunes_and_the_run_is_killed_keeping_its_network() -> None:
    end = end_of(optuna.TrialPruned("pruned at epoch 3 (eval/accuracy=0.1)"), HISTORY, METRIC)
    assert (end.kind, end.reason, end.state, end.run_status) == (Kind.PRUNED, "pruned at epoch 3 (eval/accuracy=0.1)",
                                                                 "PRUNED", "KILLED")
    assert end.keeps_network and end.value is None
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 3"):
        end.for_optuna()


def test_a_diverged_training_is_pruned_so_samplers_learn_and_its_network_is_dropped() -> None:
    err = nncore.DivergenceError(4, 2, "loss is nan")
    end = end_of(err, HISTORY, METRIC)
    assert end.kind == Kind.PRUNED and end.reason == f"diverged: {err}" and end.state == "PRUNED"
    assert not end.keeps_network
    with pytest.raises(optuna.TrialPruned) as raised:
        end.for_optuna()
    assert raised.value.__cause__ is err


@pytest.mark.parametrize("signal_text, reason", [("signal SIGTERM", "interrupted (signal SIGTERM)"),
                                                 ("", "interrupted")])
def test_a_signal_fails_the_trial_and_kills_its_run(signal_text, reason) -> None:
    err = Interrupted(signal_text)
    end = end_of(err, HISTORY, METRIC)
    assert (end.kind, end.reason, end.state, end.run_status) == (Kind.INTERRUPTED, reason, "FAIL", "KILLED")
    assert not end.keeps_network
    with pytest.raises(Interrupted) as raised:
        end.for_optuna()
    assert raised.value is err


@pytest.mark.parametrize("err", [optuna.exceptions.UpdateFinishedTrialError("finished"), TrialAbandoned("gone")])
def test_a_trial_finished_elsewhere_is_abandoned_nothing_told(err) -> None:
    end = end_of(err, HISTORY, METRIC, number=7)
    assert end.kind == Kind.ABANDONED and end.state is None and end.run_status == "KILLED"
    assert end.reason.startswith(f"{names.REASON_ABANDONED}: trial 7 was failed while this worker was not heard")
    assert end == abandoned(7)
    with pytest.raises(TrialAbandoned):
        end.for_optuna()


def test_a_lost_tracking_store_fails_the_trial_with_a_lost_reason_so_it_is_retried() -> None:
    end = end_of(TrackingLost(f"{names.REASON_LOST_TRACKING}: down"), HISTORY, METRIC)
    assert (end.kind, end.state, end.run_status) == (Kind.TRACKING, "FAIL", "FAILED")
    assert names.is_infrastructure_failure(end.reason)
    made = tracking_lost("down")
    assert (made.kind, made.reason) == (Kind.TRACKING, end.reason)
    with pytest.raises(TrackingLost, match="down"):
        made.for_optuna()


class _Refused(Exception):
    """What MLflow raises for an HTTP 401/403 (its error_code), without importing MLflow."""

    def __init__(self, code: str) -> None:
        super().__init__(f"API request failed with error code {401 if code == 'UNAUTHENTICATED' else 403}")
        self.error_code = code


@pytest.mark.parametrize("code, says", [("UNAUTHENTICATED", "MLFLOW_TRACKING_USERNAME"),
                                        ("PERMISSION_DENIED", "HTTP 403")])
def test_refused_credentials_put_the_trial_back_and_name_the_variable(code, says, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    end = end_of(_Refused(code), HISTORY, METRIC, tracking_uri="http://u:OutcomeCanary1@h:5000")
    says = "the tracking URI" if code == "UNAUTHENTICATED" else says  # credentials in the URI itself
    assert (end.kind, end.state, end.run_status) == (Kind.REFUSED, "FAIL", "FAILED")
    assert end.retried and names.is_infrastructure_failure(end.reason)
    assert end.reason.startswith(names.REASON_REFUSED) and says in end.reason
    assert "OutcomeCanary1" not in end.reason and "http://u:***@h:5000" in end.reason
    with pytest.raises(TrackingLost):
        end.for_optuna()


def test_a_reason_never_holds_a_password(monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "EnvCanary77")
    err = RuntimeError("could not reach postgresql://u:UrlCanary55@db/x as u with EnvCanary77")
    end = end_of(err, HISTORY, METRIC)
    assert end.kind == Kind.FAILED
    assert "UrlCanary55" not in end.reason and "EnvCanary77" not in end.reason
    assert end.reason == "RuntimeError: could not reach postgresql://u:***@db/x as u with ***"


@pytest.mark.parametrize("err, reason", [(RuntimeError("boom"), "RuntimeError: boom"), (KeyError(), "KeyError")])
def test_any_other_exception_fails_the_trial_with_its_type_and_message(err, reason) -> None:
    end = end_of(err, HISTORY, METRIC)
    assert (end.kind, end.reason, end.error) == (Kind.FAILED, reason, err)
    assert reason_of(err) == reason
    with pytest.raises(type(err)) as raised:
        end.for_optuna()
    assert raised.value is err


@pytest.mark.parametrize("kind", list(Kind))
def test_every_kind_maps_to_the_run_status_that_names_gives_its_state_and_reason(kind) -> None:
    """The two maps (state per kind, status per state and reason) agree: only interrupted and abandoned runs end
    KILLED outside PRUNED, and only a complete trial's run ends FINISHED."""
    reasons = {Kind.INTERRUPTED: "interrupted", Kind.ABANDONED: "abandoned: x", Kind.TRACKING: "lost: tracking",
               Kind.REFUSED: names.REASON_REFUSED}
    end = TrialEnd(kind, reasons.get(kind, "x"), value=1.0 if kind == Kind.COMPLETE else None)
    expected = {Kind.COMPLETE: "FINISHED", Kind.PRUNED: "KILLED", Kind.FAILED: "FAILED", Kind.INTERRUPTED: "KILLED",
                Kind.TRACKING: "FAILED", Kind.REFUSED: "FAILED", Kind.ABANDONED: "KILLED"}
    assert end.run_status == expected[kind]


def test_final_value_reads_the_last_reported_epoch() -> None:
    assert final_value(HISTORY, METRIC) == 0.75
    with pytest.raises(ValueError, match="no epoch was trained"):
        final_value([], METRIC)
