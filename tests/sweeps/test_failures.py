"""Failure paths through the ``sweeps`` CLI: divergence, exceptions, SIGTERM, a SIGKILLed worker.

Afterwards nothing may be RUNNING, in Optuna or in MLflow, and finished trials must be intact.
Every test runs ``sweeps run`` in a subprocess (which spawns workers): the module is ``slow``. What the
launcher repairs afterwards, in process, is tested in ``engine/test_reconcile.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import optuna
import pytest

pytestmark = pytest.mark.slow

RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
NO_PRUNER = {"name": "none", "options": {"__replace__": True}}

#: sigmoid + quadratic cost with L2 (lmbda 1) and eta 1e8: the weight decay factor per step is
#: 1 - eta*lmbda/n ~ -3e5, so the weights overflow in the first epoch (nncore.DivergenceError).
DIVERGING = {"network": {"activation": "sigmoid", "cost": "quadratic"},
             "training": {"eta": 1e8, "lmbda": 1.0, "penalty": "l2"},
             "search_space": {"__replace__": True},
             "study": {"n_trials": 2, "pruner": NO_PRUNER}}

#: batch_size 400 > n_train 300 raises ValueError inside the objective; the grid runs every choice once.
RAISING = {"search_space": {"__replace__": True,
                            "batch_size": {"type": "categorical", "choices": [10, 400, 25, 50]}},
           "study": {"n_trials": 4, "sampler": {"name": "grid"}, "pruner": NO_PRUNER}}

#: Trials long enough to be interrupted mid-training.
LONG = {"training": {"epochs": 3000},
        "search_space": {"epochs": {"type": "categorical", "choices": [2, 3000]}},
        "study": {"pruner": NO_PRUNER}}


def trial_runs(sw, directory: Path, name: str = "tiny") -> tuple[Any, dict[str, Any]]:
    """(parent run, {mlflow run id: trial run})."""
    parents, children = sw.split_runs(sw.experiment_runs(directory, f"sweeps/{name}"))
    assert len(parents) == 1, parents
    return parents[0], {r.info.run_id: r for r in children}


def assert_nothing_running(sw, directory: Path) -> None:
    study = sw.load_study(directory)
    assert not [t.number for t in study.trials if t.state.name == "RUNNING"]
    runs = sw.experiment_runs(directory, "sweeps/tiny")
    assert not [(r.info.run_id, r.data.tags.get("sweeps.role")) for r in runs if r.info.status == "RUNNING"]


@pytest.fixture(scope="module")
def bad_sweeps(sw, tmp_path_factory) -> dict[str, Any]:
    """The diverging and the raising sweep, run at the same time in two directories."""
    dirs = {"diverge": tmp_path_factory.mktemp("diverge"), "raise": tmp_path_factory.mktemp("raise")}
    sw.write_config(dirs["diverge"], DIVERGING)
    sw.write_config(dirs["raise"], RAISING)
    procs = {k: subprocess.Popen(sw.sweeps_cmd("run", "cfg.yaml", "-q", "--no-artifacts"), cwd=d,
                                 env=sw.clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, d in dirs.items()}
    out = {}
    for k, p in procs.items():
        stdout, stderr = p.communicate(timeout=240)
        out[k] = (p.returncode, stdout, stderr, dirs[k])
    return out


def test_divergence_prunes_every_trial(sw, bad_sweeps) -> None:
    rc, stdout, stderr, d = bad_sweeps["diverge"]
    # no trial completes -> exit 1 (cli.py: EXIT_NO_COMPLETE)
    assert rc == 1, f"{rc}\n{stdout}\n{stderr}"
    assert "0 complete, 2 pruned, 0 failed" in stdout
    study = sw.load_study(d)
    assert len(study.trials) == 2
    parent, runs = trial_runs(sw, d)
    client = sw.mlflow_client(d)
    for t in study.trials:
        assert t.state.name == "PRUNED"
        assert t.user_attrs["reason"].startswith("diverged"), t.user_attrs
        assert "epoch 1" in t.user_attrs["reason"]
        run = runs[t.user_attrs["mlflow_run_id"]]
        assert run.info.status == "KILLED"
        assert "diverged" in run.data.tags["sweeps.reason"]
        assert run.data.tags["sweeps.state"] == "PRUNED"
        # the diverged epoch's record is logged (it was never reported to Optuna)
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/total_loss")) == [0, 1]
        assert t.intermediate_values == {}
    assert parent.info.status == "FINISHED"
    assert "best_value" not in parent.data.metrics
    assert_nothing_running(sw, d)


def test_exception_in_a_trial_fails_only_that_trial(sw, bad_sweeps) -> None:
    rc, stdout, stderr, d = bad_sweeps["raise"]
    assert rc == 0, f"{rc}\n{stdout}\n{stderr}"
    study = sw.load_study(d)
    assert sorted(t.params["batch_size"] for t in study.trials) == [10, 25, 50, 400]
    _, runs = trial_runs(sw, d)
    assert len(runs) == 4
    for t in study.trials:
        run = runs[t.user_attrs["mlflow_run_id"]]
        if t.params["batch_size"] == 400:
            assert t.state.name == "FAIL"
            assert t.user_attrs["reason"].startswith("ValueError: batch_size must be <= n_train=300"), t.user_attrs
            assert run.info.status == "FAILED"
            assert run.data.tags["sweeps.reason"] == t.user_attrs["reason"]
            failed_number = t.number
        else:
            assert t.state.name == "COMPLETE", (t.number, t.state, t.user_attrs)
            assert run.info.status == "FINISHED"
            assert len(t.intermediate_values) == 3
    assert failed_number < max(t.number for t in study.trials), "the sweep should go on after the failure"
    assert_nothing_running(sw, d)


# -- signals -----------------------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry))
    return out


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def worker_pids(launcher: int) -> list[int]:
    return [p for p in _descendants(launcher)
            if "multiprocessing.spawn" in _cmdline(p) and "resource_tracker" not in _cmdline(p)]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        for pid in worker_pids(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.kill()
        proc.wait(timeout=30)


def _log(d: Path) -> str:
    p = d / "launcher.log"
    return p.read_text(errors="replace")[-6000:] if p.exists() else ""


def _prepare_long_study(sw, d: Path, epochs: list[int], workers: int, n_trials: int, *, population: int = 1,
                        only_epochs_searched: bool = False) -> None:
    """Write the config and pre-create its study with enqueued trials (the epochs of each).

    ``only_epochs_searched``: the search space holds ``epochs`` alone (every trial one structure)."""
    space = {"search_space": {"__replace__": True, **LONG["search_space"]}} if only_epochs_searched else {}
    sw.write_config(d, {**LONG, **space, "study": {**LONG["study"], "workers": workers, "n_trials": n_trials,
                                                   "population": population}})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="tiny", storage=f"sqlite:///{d / 'optuna.db'}", direction="maximize")
    for e in epochs:
        study.enqueue_trial({"epochs": e})


def test_sigterm_interrupts_running_trials_and_keeps_finished_ones(sw, tmp_path: Path) -> None:
    # trial 0 takes 2 epochs and completes; trials 1 and 2 take 3000 and are interrupted
    _prepare_long_study(sw, tmp_path, [2, 3000, 3000], workers=2, n_trials=6)
    proc = sw.popen_cli(["run", "cfg.yaml", "-q", "--no-artifacts"], tmp_path)
    try:
        def ready() -> Any:
            trials = sw.load_study(tmp_path).trials
            done = [t for t in trials if t.state.name == "COMPLETE"]
            running = [t for t in trials if t.state.name == "RUNNING" and t.intermediate_values]
            return (running[0].number, len(running[0].intermediate_values)) if done and running else None

        number, epochs = sw.wait_for(ready, 90, "a COMPLETE trial and a RUNNING trial with a logged epoch",
                                     proc=proc)

        def one_more_epoch() -> bool:  # the trial is in its training loop, past its first report
            return len(sw.load_study(tmp_path).trials[number].intermediate_values) > epochs

        sw.wait_for(one_more_epoch, 60, f"trial {number} to report epoch {epochs + 1}", proc=proc)
        os.kill(proc.pid, signal.SIGTERM)
        rc = proc.wait(timeout=90)
    finally:
        _stop(proc)
    log = _log(tmp_path)
    assert rc == 130, log
    assert "interrupted" in log
    study = sw.load_study(tmp_path)
    parent, runs = trial_runs(sw, tmp_path)
    assert parent.info.status == "KILLED"
    states = {t.number: t.state.name for t in study.trials}
    assert states[0] == "COMPLETE", states
    # every trial run names its trial; the trial names its run unless the signal came while the
    # run was being created (then the launcher closed the run, found by its trial-number tag)
    by_trial: dict[int, Any] = {}
    for r in runs.values():
        number = int(r.data.tags["sweeps.trial_number"])
        assert number not in by_trial, f"two runs for trial {number}"
        by_trial[number] = r
    for t in study.trials:
        if "mlflow_run_id" in t.user_attrs:
            assert by_trial[t.number].info.run_id == t.user_attrs["mlflow_run_id"]
    assert set(by_trial) <= set(states), (by_trial, states)
    interrupted = 0
    for t in study.trials:
        assert t.state.name in ("COMPLETE", "FAIL", "WAITING"), (t.number, t.state)
        run = by_trial.get(t.number)
        if t.state.name == "COMPLETE":
            assert t.params["epochs"] == 2 and len(t.intermediate_values) == 2
            assert run.info.status == "FINISHED"
        elif t.state.name == "FAIL":
            interrupted += 1
            assert "interrupted" in t.user_attrs.get("reason", ""), t.user_attrs
            if run is not None:
                assert run.info.status == "KILLED"
                assert "interrupted" in run.data.tags["sweeps.reason"]
                assert t.params["epochs"] == 3000 and len(t.intermediate_values) < 3000
                if "training started" not in t.user_attrs["reason"]:  # the signal came while the run was set up
                    assert len(t.intermediate_values) >= 1, t.user_attrs
    assert interrupted >= 1
    assert_retried_with_its_point(study)
    assert_nothing_running(sw, tmp_path)
    assert not worker_pids(proc.pid)


def assert_retried_with_its_point(study: optuna.Study) -> None:
    """Every trial stopped by the signal (FAIL "interrupted") was put back: a WAITING copy with its parameters, and
    the stopped trial no longer counts (``counts_of``: RETRIED, not FAIL)."""
    from sweeps.study.budget import counts_of

    trials = study.trials
    stopped = [t for t in trials if t.state.name == "FAIL"]
    assert stopped and all(t.user_attrs["reason"].startswith("interrupted") for t in stopped), \
        [t.user_attrs for t in stopped]
    for t in stopped:
        [copy] = [r for r in trials if r.user_attrs.get("retry_of") == t.number]
        assert copy.state.name == "WAITING" and copy.params == t.params, (copy.state, copy.params, t.params)
    counts = counts_of(study)
    assert counts["FAIL"] == 0 and counts["RETRIED"] == len(stopped), counts


def test_a_sigtermed_trial_is_retried_and_the_resumed_study_counts_exactly_n_trials(sw, tmp_path: Path) -> None:
    """A scheduler's stop (SIGTERM) loses no point: the running trial ends FAIL "interrupted" (run KILLED) with a
    WAITING copy of its parameters; resuming the sweep runs that copy, and the study ends with exactly n_trials
    counted trials, all COMPLETE, the stopped one not among them."""
    _prepare_long_study(sw, tmp_path, [2, 3000], workers=1, n_trials=2)
    proc = sw.popen_cli(["run", "cfg.yaml", "-q", "--no-artifacts"], tmp_path)
    try:
        def long_one_running() -> Any:
            running = [t for t in sw.load_study(tmp_path).trials if t.state.name == "RUNNING"]
            return running[0] if running and running[0].params.get("epochs") == 3000 \
                and len(running[0].intermediate_values) >= 2 else None

        stopped = sw.wait_for(long_one_running, 90, "the 3000-epoch trial past epoch 2", interval=0.05, proc=proc)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=90) == 130, _log(tmp_path)
    finally:
        _stop(proc)
    assert_retried_with_its_point(sw.load_study(tmp_path))
    resumed = sw.run_cli(["run", "cfg.yaml", "-q", "--no-artifacts"], tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    from sweeps.study.budget import counts_of

    study = sw.load_study(tmp_path)
    counts = counts_of(study)
    assert counts["COMPLETE"] == 2 and counts["RETRIED"] == 1 and counts["FAIL"] == counts["WAITING"] == 0, counts
    [copy] = [t for t in study.trials if t.user_attrs.get("retry_of") == stopped.number]
    assert copy.state.name == "COMPLETE" and copy.params == stopped.params
    assert len(copy.intermediate_values) == 3000
    assert_nothing_running(sw, tmp_path)


def test_killed_worker_fails_its_trial_retries_it_and_reports_it(sw, tmp_path: Path) -> None:
    """SIGKILL of the only worker: its trial FAILs "lost: worker died", its run is closed, the trial
    is retried with the same parameters by a replacement worker, and the launcher exits 4."""
    sw.write_config(tmp_path, {"training": {"epochs": 400},
                               "search_space": {"epochs": {"type": "categorical", "choices": [2, 400]}},
                               "study": {"pruner": NO_PRUNER, "workers": 1, "n_trials": 2}})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'optuna.db'}", direction="maximize")
    study.enqueue_trial({"epochs": 400})
    study.enqueue_trial({"epochs": 2})
    proc = sw.popen_cli(["run", "cfg.yaml", "-q", "--no-artifacts"], tmp_path)
    try:
        def running_trial() -> Any:
            trials = [t for t in sw.load_study(tmp_path).trials if t.state.name == "RUNNING"]
            return trials[0] if trials and trials[0].intermediate_values else None

        trial = sw.wait_for(running_trial, 90, "a RUNNING trial with a logged epoch", interval=0.05,
                            proc=proc)
        [worker] = sw.wait_for(lambda: worker_pids(proc.pid), 10, "the worker process")
        assert trial.user_attrs["worker"].endswith(f":{worker}")
        os.kill(worker, signal.SIGKILL)
        rc = proc.wait(timeout=120)
    finally:
        _stop(proc)
    log = _log(tmp_path)
    assert rc == 4, log  # a worker died: reported, although the budget was finished by its replacement
    assert "killed by SIGKILL" in log and "retried" in log
    study = sw.load_study(tmp_path)
    trials = {t.number: t for t in study.trials}
    t = trials[trial.number]
    assert t.state.name == "FAIL"
    assert t.user_attrs["reason"].startswith("lost: worker died"), t.user_attrs
    [retry] = [r for r in trials.values() if r.user_attrs.get("retry_of") == t.number]
    assert retry.state.name == "COMPLETE" and retry.params == t.params
    assert retry.system_attrs["retry_history"] == [t.number]
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == t.number
    assert [x.state.name for x in trials.values()].count("COMPLETE") == 2  # the budget: 2 trials that count
    parent, runs = trial_runs(sw, tmp_path)
    run = runs[t.user_attrs["mlflow_run_id"]]
    assert run.info.status == "FAILED"
    assert run.data.tags["sweeps.reason"] == t.user_attrs["reason"]
    assert runs[retry.user_attrs["mlflow_run_id"]].info.status == "FINISHED"
    assert parent.info.status != "RUNNING"
    assert_nothing_running(sw, tmp_path)


# -- populations (study.population > 1) ---------------------------------------------------------------------

def test_sigterm_to_a_population_worker_fails_every_running_member(sw, tmp_path: Path) -> None:
    """One worker runs a population of 3: the 2-epoch member completes (told while the others train), then
    SIGTERM: both 3000-epoch members FAIL "interrupted", their runs KILLED, each put back as a WAITING copy;
    nothing is left RUNNING."""
    _prepare_long_study(sw, tmp_path, [2, 3000, 3000], workers=1, n_trials=3, population=3, only_epochs_searched=True)
    proc = sw.popen_cli(["run", "cfg.yaml", "-q", "--no-artifacts"], tmp_path)
    try:
        def ready() -> Any:
            trials = sw.load_study(tmp_path).trials
            done = [t for t in trials if t.state.name == "COMPLETE"]
            running = [t for t in trials if t.state.name == "RUNNING" and len(t.intermediate_values) >= 4]
            return done and len(running) == 2

        sw.wait_for(ready, 90, "a COMPLETE member and two RUNNING members past epoch 4", proc=proc)
        os.kill(proc.pid, signal.SIGTERM)
        rc = proc.wait(timeout=90)
    finally:
        _stop(proc)
    log = _log(tmp_path)
    assert rc == 130, log
    study = sw.load_study(tmp_path)
    _, runs = trial_runs(sw, tmp_path)
    by_trial = {int(r.data.tags["sweeps.trial_number"]): r for r in runs.values()}
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "FAIL", "FAIL", "WAITING", "WAITING"], states  # the two stopped, put back
    workers = {t.user_attrs["worker"] for t in study.trials if t.state.name != "WAITING"}
    assert len(workers) == 1  # one worker held all three
    assert_retried_with_its_point(study)
    for t in study.trials:
        if t.state.name == "WAITING":
            continue
        run = by_trial[t.number]
        if t.state.name == "COMPLETE":
            assert t.params["epochs"] == 2 and run.info.status == "FINISHED"
            assert t.user_attrs["reason"] == "completed: 2 epochs (completed)"
        else:
            assert t.user_attrs["reason"].startswith("interrupted"), t.user_attrs
            assert run.info.status == "KILLED" and run.data.tags["sweeps.reason"] == t.user_attrs["reason"]
            assert len(t.intermediate_values) >= 4
    assert_nothing_running(sw, tmp_path)
    assert not worker_pids(proc.pid)


def test_a_killed_population_worker_s_trials_are_all_failed_and_retried(sw, tmp_path: Path) -> None:
    """SIGKILL of a worker running a population of 3 (two 400-epoch members, one 2-epoch member that completed):
    the launcher fails both running members "lost: worker died", closes their runs, retries them with the same
    parameters; the budget ends with exactly 3 counted trials, all COMPLETE; exit 4."""
    sw.write_config(tmp_path, {"training": {"epochs": 400},
                               "search_space": {"__replace__": True,
                                                "epochs": {"type": "categorical", "choices": [2, 400]},
                                                "eta": {"type": "float", "low": 0.1, "high": 1.0}},
                               "study": {"pruner": NO_PRUNER, "workers": 1, "n_trials": 3, "population": 3}})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'optuna.db'}", direction="maximize")
    for e, eta in ((400, 0.2), (2, 0.3), (400, 0.4)):
        study.enqueue_trial({"epochs": e, "eta": eta})
    proc = sw.popen_cli(["run", "cfg.yaml", "-q", "--no-artifacts"], tmp_path)
    try:
        def running() -> Any:
            trials = sw.load_study(tmp_path).trials
            live = [t for t in trials if t.state.name == "RUNNING" and t.intermediate_values]
            return live if len(live) == 2 and any(t.state.name == "COMPLETE" for t in trials) else None

        live = sw.wait_for(running, 90, "two RUNNING members with a logged epoch and a COMPLETE one", proc=proc)
        [worker] = sw.wait_for(lambda: worker_pids(proc.pid), 10, "the worker process")
        assert all(t.user_attrs["worker"].endswith(f":{worker}") for t in live)
        os.kill(worker, signal.SIGKILL)
        rc = proc.wait(timeout=120)
    finally:
        _stop(proc)
    log = _log(tmp_path)
    assert rc == 4, log
    study = sw.load_study(tmp_path)
    trials = {t.number: t for t in study.trials}
    _, runs = trial_runs(sw, tmp_path)
    for t in live:
        lost = trials[t.number]
        assert lost.state.name == "FAIL" and lost.user_attrs["reason"].startswith("lost: worker died"), lost.user_attrs
        assert runs[lost.user_attrs["mlflow_run_id"]].info.status == "FAILED"
        [retry] = [r for r in trials.values() if r.user_attrs.get("retry_of") == t.number]
        assert retry.state.name == "COMPLETE" and retry.params == lost.params
        assert runs[retry.user_attrs["mlflow_run_id"]].info.status == "FINISHED"
    from sweeps.study.budget import counts_of

    counts = counts_of(study)
    assert counts["COMPLETE"] == 3 and counts["RETRIED"] == 2 and counts["FAIL"] == 0, counts
    assert_nothing_running(sw, tmp_path)
