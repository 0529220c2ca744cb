"""A population of claimed trials (``sweeps.engine.population``): every member told as soon as it ends, with the
end it would have alone; a signal or a lost tracking store ends the members not yet told."""

from __future__ import annotations

import copy
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from sweeps.config import parse_config
from sweeps.engine.data import load_data
from sweeps.engine.objective import Objective
from sweeps.engine.outcome import Kind, TrialEnd
from sweeps.engine.population import Population
from sweeps.stores import TrackingUnavailable
from sweeps.study.claims import claim_trials
from sweeps.study.samplers import build_pruner, build_sampler


def _setup(sw: Any, epochs: list[int], tracker: Any, *, stop: bool = False, changes: dict | None = None,
           batch_sizes: list[int] | None = None) -> tuple:
    """One study, ``len(epochs)`` trials enqueued with those epochs (and batch sizes), all claimed."""
    batch_sizes = batch_sizes or [10] * len(epochs)
    raw = sw.merge(sw.BASE_CONFIG, {"search_space": {
        "__replace__": True, "epochs": {"type": "categorical", "choices": sorted(set(epochs))},
        "batch_size": {"type": "categorical", "choices": sorted(set(batch_sizes))}},
        "study": {"n_trials": len(epochs), "population": len(epochs), "pruner": {"__replace__": True, "name": "none"}},
        **(changes or {})})
    cfg = parse_config(copy.deepcopy(raw))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name=cfg.name, storage=storage, direction=cfg.objective.direction,
                                sampler=build_sampler(cfg), pruner=build_pruner(cfg))
    for e, m in zip(epochs, batch_sizes):
        study.enqueue_trial({"epochs": e, "batch_size": m})
    objective = Objective(cfg, load_data(cfg.data, cfg.seed), tracker, None, artifacts="none",
                          interrupt_flag=lambda: stop, names_worker=False)
    trials = claim_trials(study, storage, len(epochs))
    told: list[tuple[int, TrialEnd]] = []

    def tell(trial: optuna.Trial, end: TrialEnd) -> tuple[TrialEnd, Any]:
        told.append((trial.number, end))
        frozen = study.tell(trial, end.value, state=TrialState[end.state]) if end.state else None
        return end, frozen

    return Population(objective, trials, tell, storage), study, told


def test_members_are_told_as_they_end_shortest_first_each_with_its_own_end(sw) -> None:
    tracker = sw.RecordingTracker()
    population, study, told = _setup(sw, [4, 2, 3], tracker)
    ends = population.run()
    assert [number for number, _ in told] == [1, 2, 0]  # 2 epochs, then 3, then 4
    assert sorted(ends) == [0, 1, 2] and all(end.kind == Kind.COMPLETE for end in ends.values())
    for trial in study.trials:
        run = trial.user_attrs["mlflow_run_id"]
        assert trial.state == TrialState.COMPLETE
        assert trial.value == ends[trial.number].value == tracker.epochs[run][-1][1]["eval/accuracy"]
        assert trial.user_attrs["reason"] == ends[trial.number].reason == tracker.ends[run][1]
        assert tracker.ends[run][2] == "FINISHED"


def test_a_signal_before_the_start_ends_every_member_interrupted_untrained(sw) -> None:
    tracker = sw.RecordingTracker()
    population, study, told = _setup(sw, [2, 2], tracker, stop=True)
    ends = population.run()
    assert {end.kind for end in ends.values()} == {Kind.INTERRUPTED} and len(told) == 2
    assert all(t.user_attrs["reason"] == "interrupted before the trial started" for t in study.trials)
    assert all(t.state == TrialState.FAIL for t in study.trials)
    assert tracker.epochs == {}  # no run was started


def test_a_member_that_cannot_be_set_up_fails_and_the_others_train(sw) -> None:
    """batch_size 50 with 30 training rows: that member fails at setup, as it would alone."""
    tracker = sw.RecordingTracker()
    changes = {"data": {"source": "digits", "n_train": 30, "n_eval": 20}}
    population, study, told = _setup(sw, [2, 2], tracker, changes=changes, batch_sizes=[50, 10])
    ends = population.run()
    assert ends[0].kind == Kind.FAILED and "batch_size must be <= n_train=30" in ends[0].reason
    assert ends[1].kind == Kind.COMPLETE
    assert [number for number, _ in told] == [0, 1]


@pytest.mark.parametrize("population_size", [3])
def test_a_lost_tracking_store_ends_the_untold_members_with_the_same_lost_reason(sw, population_size) -> None:
    class DownAtFirstEnd(sw.RecordingTracker):
        def finish(self, run_id: str, state: str, reason: str = "", status: str = "", **_: Any) -> None:
            raise TrackingUnavailable("the tracking store sqlite:///x failed for 300 s: database is locked")

    tracker = DownAtFirstEnd()
    population, study, told = _setup(sw, [2, 40, 40][:population_size], tracker)
    ends = population.run()
    assert {end.kind for end in ends.values()} == {Kind.TRACKING}
    assert len({end.reason for end in ends.values()}) == 1
    assert [number for number, _ in told] == [0, 1, 2]
    assert len(tracker.epochs[study.trials[1].user_attrs["mlflow_run_id"]]) < 41  # stopped before its 40 epochs
