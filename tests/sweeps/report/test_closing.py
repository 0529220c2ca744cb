"""The study's closing report (``sweeps.report.closing``): what the parent run receives at the end of a sweep,
when it ends, and that a failing analysis never fails the sweep.

Oracle: a recording stand-in for the tracker (every call the launcher's tracker would get), and the
parent run's names as docs/vocabulary.md lists them. The report logged through a real MLflow store:
``tests/sweeps/cli/test_cli_e2e.py`` and ``tests/sweeps/query/test_explanations.py``.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
import pytest

from sweeps.report.closing import close_parent
from sweeps.study.budget import StudyResult

COUNTS = {"COMPLETE": 3, "PRUNED": 1, "FAIL": 1, "RUNNING": 0, "WAITING": 0, "RETRIED": 1}


class RecordingTracker:
    outage_s = 300.0
    tracking_uri = "sqlite:///never-opened.db"
    experiment_name = "sweeps/s"

    def __init__(self, undelivered: tuple[str, ...] = ()) -> None:
        self.undelivered = list(undelivered)
        self.metrics: list[tuple[str, dict[str, float], int, bool]] = []
        self.tags: dict[str, dict[str, Any]] = {}
        self.artifacts: list[tuple[str, str]] = []
        self.drained: list[float] = []
        self.ended: list[tuple[str, str]] = []

    def finish(self, run_id: str, state: str, reason: str = "", *, status: str | None = None, **_: Any) -> None:
        self.tags.setdefault(run_id, {})["sweeps.state"] = state
        self.ended.append((run_id, status))

    def log_epoch(self, run_id: str, metrics: dict[str, float], step: int, *, flush: bool = False) -> None:
        self.metrics.append((run_id, dict(metrics), step, flush))

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self.tags.setdefault(run_id, {}).update(tags)

    def drain(self, timeout: float) -> list[str]:
        self.drained.append(timeout)
        return self.undelivered

    def log_artifact(self, run_id: str, path: Any, artifact_path: str | None = None) -> None:
        self.artifacts.append((run_id, str(path)))


@pytest.fixture
def study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name="s", direction="maximize")


def test_the_counts_and_the_best_trial_reach_the_parent_run_before_it_ends_finished(study) -> None:
    tracker = RecordingTracker()
    result = StudyResult(dict(COUNTS), 5, best_value=0.875, best_params={"eta": 0.5, "batch_size": 10}, best_trial=2)
    assert close_parent(study, tracker, "parent", result, interrupted=False, artifacts="none") is True
    [(run_id, metrics, step, flush)] = tracker.metrics
    assert (run_id, step, flush) == ("parent", 6, True)  # step: every trial counted, sent at once
    assert metrics == {"trials_complete": 3.0, "trials_pruned": 1.0, "trials_fail": 1.0, "trials_running": 0.0,
                       "trials_waiting": 0.0, "trials_retried": 1.0, "best_value": 0.875}
    assert tracker.tags == {"parent": {"best_trial": 2, "best.eta": 0.5, "best.batch_size": 10,
                                       "sweeps.state": "FINISHED"}}
    assert tracker.drained == [30.0]  # at most 30 s of the 300 s outage limit at the very end
    assert tracker.ended == [("parent", "FINISHED")]
    assert tracker.artifacts == []  # artifacts "none": no plots, no diagnosis


def test_an_interrupted_sweep_without_a_complete_trial_ends_killed_with_counts_only(study) -> None:
    tracker = RecordingTracker()
    result = StudyResult({"COMPLETE": 0, "PRUNED": 0, "FAIL": 2}, 4)
    assert close_parent(study, tracker, "parent", result, interrupted=True, artifacts="none") is True
    assert tracker.metrics[0][1] == {"trials_complete": 0.0, "trials_pruned": 0.0, "trials_fail": 2.0}
    assert tracker.tags == {"parent": {"sweeps.state": "INTERRUPTED"}}
    assert tracker.ended == [("parent", "KILLED")]


def test_counts_the_store_did_not_take_leave_the_parent_run_open(study) -> None:
    tracker = RecordingTracker(undelivered=("parent",))
    result = StudyResult(dict(COUNTS), 5, best_value=0.5, best_params={"eta": 1.0}, best_trial=0)
    assert close_parent(study, tracker, "parent", result, interrupted=False, artifacts="best") is False
    assert tracker.ended == [] and "sweeps.state" not in tracker.tags["parent"]
    assert tracker.artifacts == []  # nothing drawn for a store that is gone


def test_a_failing_study_analysis_is_logged_and_the_run_still_ends(study, monkeypatch, caplog) -> None:
    import sweeps.query.explanations

    def unreadable(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the tracking store went away")

    monkeypatch.setattr(sweeps.query.explanations, "explain_study", unreadable)
    tracker = RecordingTracker()
    result = StudyResult({"COMPLETE": 0, "FAIL": 1}, 1)  # no best trial: no study plots to draw
    with caplog.at_level(logging.WARNING, logger="sweeps.closing"):
        assert close_parent(study, tracker, "parent", result, interrupted=False, artifacts="complete") is True
    assert "study s: no diagnosis logged (RuntimeError: the tracking store went away)" in caplog.text
    assert tracker.ended == [("parent", "FINISHED")] and tracker.tags["parent"]["sweeps.state"] == "FINISHED"
