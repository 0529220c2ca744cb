"""The launcher's reconciliation after its workers end (``sweeps.engine.reconcile``): orphan and duplicate runs
closed, dead workers' trials failed and retried, live ones left alone."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from sweeps.study.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture
def url(scratch):
    """A fresh SQLite database, in RAM when there is one."""
    return f"sqlite:///{scratch / 'optuna.db'}"


# -- reconcile (the launcher's pass after its workers end) ------------------------------------------

def test_reconcile_closes_orphan_runs_and_fails_dead_workers_trials(url) -> None:
    """What the launcher repairs after its workers end: runs found by their trial-number tag."""
    from sweeps.engine.reconcile import reconcile
    from sweeps.tracking.tracker import Tracker

    storage = open_storage(url)
    study = optuna.create_study(study_name="r", storage=storage)
    mlflow_db = Path(url.removeprefix("sqlite:///")).with_name("mlflow.db")  # beside the study: in RAM if it is
    tracker = Tracker(f"sqlite:///{mlflow_db}", "sweeps/r", flush_interval=0)
    # trial 0: interrupted while its run was created (the run id never reached the trial)
    t0 = study.ask()
    orphan = tracker.start_trial("parent", "r", t0.number, {"eta": 0.5})
    t0.set_user_attr("reason", "interrupted (signal SIGTERM) before training started")
    study.tell(t0, state=optuna.trial.TrialState.FAIL)
    # trial 1: its worker was SIGKILLed mid-trial (still RUNNING, run RUNNING)
    t1 = study.ask()
    t1.suggest_float("eta", 0.1, 1.0)
    t1.set_user_attr("worker", "host:4242")
    killed = tracker.start_trial("parent", "r", t1.number, {"eta": 0.5})
    t1.set_user_attr("mlflow_run_id", killed)
    # trial 2: still running in a live worker: left alone
    t2 = study.ask()
    t2.set_user_attr("worker", "host:1")
    alive = tracker.start_trial("parent", "r", t2.number, {"eta": 0.5})
    # trial 3: completed; a hung server also carried out an earlier creation of its run
    t3 = study.ask()
    duplicate = tracker.start_trial("parent", "r", t3.number, {"eta": 0.5})
    own = tracker.start_trial("parent", "r", t3.number, {"eta": 0.5})
    t3.set_user_attr("mlflow_run_id", own)
    tracker.finish(own, "COMPLETE", "completed: 1 epoch")
    study.tell(t3, 1.0)

    reconcile(study, storage, tracker, {"host:4242": "killed by SIGKILL"}, grace=60, max_retries=3)
    trials = {t.number: t for t in study.trials}
    assert trials[1].state.name == "FAIL" and trials[1].user_attrs["reason"] == \
        "lost: worker died while running the trial (killed by SIGKILL)"
    assert trials[2].state.name == "RUNNING"
    [retry] = [t for t in trials.values() if t.user_attrs.get("retry_of") == 1]
    assert retry.state.name == "WAITING" and retry.params == trials[1].params
    runs = {r: tracker.client.get_run(r) for r in (orphan, killed, alive)}
    assert runs[orphan].info.status == "KILLED"
    assert runs[orphan].data.tags["sweeps.reason"].startswith("interrupted")
    assert runs[killed].info.status == "FAILED" and "worker died" in runs[killed].data.tags["sweeps.reason"]
    assert runs[alive].info.status == "RUNNING"
    ghost = tracker.client.get_run(duplicate)
    assert ghost.info.status == "KILLED" and ghost.info.lifecycle_stage == "deleted"
    assert ghost.data.tags["sweeps.reason"].startswith("duplicate") and own in ghost.data.tags["sweeps.reason"]
    kept = tracker.client.get_run(own)
    assert kept.info.status == "FINISHED" and kept.info.lifecycle_stage == "active"
    trial_runs = tracker.client.search_runs([tracker.experiment_id], f"tags.`sweeps.trial_number` = '{t3.number}'")
    assert [r.info.run_id for r in trial_runs] == [own]
