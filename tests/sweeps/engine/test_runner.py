"""The launcher (``sweeps.engine.runner``), in process: how it reads worker ends, when it replaces workers,
what it logs on the parent run, what it prepares; and one real ``run_sweep`` (slow: spawns a worker).

Oracles: the worker exit codes the CLI documents (0 done, 130 interrupted, 75 storage and 76
tracking unavailable), ``signal.Signals`` names, a fake process pool that records what was
started, Optuna studies built here (their WAITING trials), the config's own nested dump for the
flattened parameters, and the study reloaded from its storage after a sweep.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import signal
import time
from typing import Any

import mlflow
import numpy
import optuna
import pytest

from nncore.datasets import DatasetError
from sweeps import names
from sweeps.config import parse_config
from sweeps.engine import runner
from sweeps.stores import Locations

optuna.logging.set_verbosity(optuna.logging.WARNING)

#: A tiny digits sweep (2 epochs, no pruner) for the parts that touch a study.
CONFIG: dict[str, Any] = {
    "name": "tiny",
    "seed": 0,
    "data": {"source": "digits", "n_train": 200, "n_eval": 50},
    "network": {"hidden": [10]},
    "training": {"epochs": 2, "eta": 0.5, "batch_size": 10, "lmbda": 0.1},
    "objective": {"metric": "eval/accuracy", "direction": "maximize"},
    "search_space": {"eta": {"type": "float", "low": 0.1, "high": 2.0, "log": True},
                     "hidden": {"type": "categorical", "choices": [[10], [20, 10]]}},
    "study": {"n_trials": 3, "sampler": {"name": "random"},
              "pruner": {"name": "median", "options": {"n_startup_trials": 1}}, "workers": 2},
}


def make_cfg(**study: Any):
    data = copy.deepcopy(CONFIG)
    data["study"].update(study)
    return parse_config(data)



# -- fakes for the worker pool -----------------------------------------------------------------

class FakeProcess:
    _pids = itertools.count(50_000)

    def __init__(self, target: Any = None, name: str = "sweeps-worker-0", args: tuple = (),
                 exitcode: int | None = None) -> None:
        self.target, self.name, self.args, self.exitcode = target, name, args, exitcode
        self.pid = next(self._pids)
        self.started = False
        self.running = False

    def start(self) -> None:
        self.started = self.running = True

    def is_alive(self) -> bool:
        return self.running

    def end(self, code: int) -> None:
        self.running, self.exitcode = False, code


class FakeContext:
    def __init__(self) -> None:
        self.created: list[FakeProcess] = []

    def Process(self, target: Any, name: str, args: tuple) -> FakeProcess:  # noqa: N802 - multiprocessing's name
        p = FakeProcess(target, name, args)
        self.created.append(p)
        return p


ARGS = ("cfg-json", "loc", "study-name", 30.0, True, "none", "ready", "cancelled")


def make_pool(count: int = 2, max_replacements: int = 4) -> runner._Workers:
    return runner._Workers(FakeContext(), ARGS, count, max_replacements=max_replacements)


def waiting_study(n_waiting: int, n_done: int = 0) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for i in range(n_done):
        study.add_trial(optuna.trial.create_trial(value=float(i), state=optuna.trial.TrialState.COMPLETE))
    for _ in range(n_waiting):
        study.enqueue_trial({})
    return study


# -- how a worker ended ------------------------------------------------------------------------

@pytest.mark.parametrize("code, text", [
    (None, "still running"),
    (0, "exit code 0"),
    (1, "exit code 1"),
    (75, "exit code 75"),
    (-9, "killed by SIGKILL"),
    (-15, "killed by SIGTERM"),
    (-11, "killed by SIGSEGV"),
    (-200, "killed by signal 200"),  # not a signal Python knows
])
def test_how_it_died(code, text):
    assert runner._how_it_died(code) == text


def _end(code: int, interrupted: bool = False) -> tuple[runner.SweepSummary, dict[str, str], FakeProcess, Any]:
    pool = make_pool()
    pool.start(0)
    [p] = pool.procs
    p.end(code)
    summary, dead = runner.SweepSummary("tiny"), {}
    runner._on_worker_end(p, pool, summary, dead, interrupted)
    return summary, dead, p, pool


@pytest.mark.parametrize("code, interrupted", [(0, False), (130, False), (0, True), (130, True),
                                               (-signal.SIGTERM, True)],
                         ids=["done", "interrupted-130", "done-while-interrupted", "130-while-interrupted",
                              "sigterm-while-interrupted"])
def test_a_normal_end_is_no_death(code, interrupted):
    summary, dead, _, _ = _end(code, interrupted)
    assert dead == {} and summary.worker_deaths == []
    assert not summary.storage_unavailable and not summary.tracking_unavailable


@pytest.mark.parametrize("code, flag", [(75, "storage_unavailable"), (76, "tracking_unavailable")])
def test_the_unavailable_exit_codes_set_their_flag_and_are_no_death(code, flag):
    summary, dead, _, _ = _end(code)
    assert getattr(summary, flag) is True
    other = ({"storage_unavailable", "tracking_unavailable"} - {flag}).pop()
    assert getattr(summary, other) is False
    assert dead == {} and summary.worker_deaths == []


@pytest.mark.parametrize("lost, flag", [("storage", "storage_unavailable"), ("tracking", "tracking_unavailable")])
def test_a_worker_that_cannot_reach_a_store_exits_with_the_code_the_launcher_reads_as_that_store(monkeypatch, lost,
                                                                                                 flag):
    """``run_worker`` itself (its stores replaced by ones that fail as a lost store does): its exit code, read by
    the launcher, sets that store's flag and no other, and is no death."""
    import logging
    from types import SimpleNamespace

    from sweeps.engine import worker
    from sweeps.stores import TrackingUnavailable
    from sweeps.study.storage import StorageUnavailable

    def failing(err: Exception) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            raise err
        return call

    monkeypatch.setattr(worker, "bound_mlflow_http_retries", lambda *a, **k: None)  # this process' environment
    monkeypatch.setattr(logging, "basicConfig", lambda **k: None)
    if lost == "storage":
        monkeypatch.setattr(worker, "open_study_storage", failing(StorageUnavailable("failed for 20 s")))
    else:
        monkeypatch.setattr(worker, "open_study_storage", lambda cfg, url, **_: None)
        monkeypatch.setattr(worker, "load", lambda cfg, storage, name: SimpleNamespace(user_attrs={}))
        monkeypatch.setattr(worker, "load_data", lambda data, seed: None)
        monkeypatch.setattr(worker, "Tracker", failing(TrackingUnavailable("failed for 300 s")))
    loc = Locations(storage="sqlite://", tracking_uri="http://127.0.0.1:9")
    code = worker.run_worker(copy.deepcopy(CONFIG), loc, "tiny")
    summary, dead, _, _ = _end(code)
    assert getattr(summary, flag) is True
    other = ({"storage_unavailable", "tracking_unavailable"} - {flag}).pop()
    assert getattr(summary, other) is False
    assert dead == {} and summary.worker_deaths == []


@pytest.mark.parametrize("code, interrupted, how", [
    (1, False, "exit code 1"),
    (2, True, "exit code 2"),
    (-signal.SIGKILL, False, "killed by SIGKILL"),
    (-signal.SIGKILL, True, "killed by SIGKILL"),  # killed after the interrupt grace: its trial is lost
    (-signal.SIGTERM, False, "killed by SIGTERM"),  # a SIGTERM the launcher did not send
    (-signal.SIGSEGV, False, "killed by SIGSEGV"),
])
def test_other_ends_are_deaths_keyed_by_host_and_pid(code, interrupted, how):
    summary, dead, p, pool = _end(code, interrupted)
    assert dead == {f"{pool.host}:{p.pid}": how}
    assert summary.worker_deaths == [f"worker sweeps-worker-0 (pid {p.pid}) {how}"]
    assert not summary.storage_unavailable and not summary.tracking_unavailable


def test_the_dead_map_key_is_what_a_worker_writes_on_its_trials(monkeypatch):
    """``repair.fail_dead_workers`` matches ``dead`` against the ``worker`` attribute (``host:pid``)."""
    from sweeps.names import worker_name

    pool = make_pool()
    pool.start(0)
    [p] = pool.procs
    p.pid = os.getpid()
    p.end(-9)
    dead: dict[str, str] = {}
    runner._on_worker_end(p, pool, runner.SweepSummary("tiny"), dead, False)
    assert list(dead) == [worker_name()]


def test_newly_ended_reports_each_ended_worker_once():
    pool = make_pool(count=3)
    for i in range(3):
        pool.start(i)
    a, b, c = pool.procs
    assert pool.newly_ended() == []
    a.end(0)
    assert pool.newly_ended() == [a]
    assert pool.newly_ended() == []
    b.end(1)
    c.end(-9)
    assert pool.newly_ended() == [b, c]
    assert pool.alive() == [] and pool.newly_ended() == []


def test_start_passes_the_worker_index_after_the_study_name():
    pool = make_pool()
    pool.start(5)
    [p] = pool.procs
    assert p.started and p.name == "sweeps-worker-5" and p.target is runner._worker_entry
    assert p.args == (*ARGS[:3], 5, *ARGS[3:])


# -- replacing workers ---------------------------------------------------------------------------

def _replace(pool: runner._Workers, study: optuna.Study, started: float | None = None, timeout: float | None = None
             ) -> list[FakeProcess]:
    before = len(pool.procs)
    cfg = make_cfg(timeout=timeout)
    runner._replace_workers(study, pool, cfg, time.monotonic() if started is None else started)
    return pool.procs[before:]


def test_replacements_fill_the_missing_workers_while_trials_wait():
    pool = make_pool(count=2, max_replacements=4)
    pool.start(0)
    pool.start(1)
    pool.procs[0].end(-9)
    pool.procs[1].end(-9)
    new = _replace(pool, waiting_study(3))
    assert len(new) == 2 and all(p.started for p in new)
    assert [p.name for p in new] == ["sweeps-worker-2", "sweeps-worker-3"]  # numbering goes on
    assert [p.args[3] for p in new] == [2, 3]
    assert pool.replacements_left == 2
    assert len(pool.alive()) == 2
    assert _replace(pool, waiting_study(3)) == []  # the pool is full again


def test_no_more_replacements_than_waiting_trials():
    pool = make_pool(count=3, max_replacements=6)
    new = _replace(pool, waiting_study(1, n_done=4))
    assert len(new) == 1 and pool.replacements_left == 5


def test_no_replacement_when_nothing_waits():
    pool = make_pool(count=2)
    assert _replace(pool, waiting_study(0, n_done=3)) == []
    assert pool.replacements_left == 4


def test_no_replacement_while_the_pool_is_full():
    pool = make_pool(count=1)
    pool.start(0)
    assert _replace(pool, waiting_study(5)) == []
    assert pool.replacements_left == 4


def test_replacements_stop_at_the_limit():
    pool = make_pool(count=2, max_replacements=3)
    study = waiting_study(10)
    started = 0
    for _ in range(4):  # each round: every worker died
        for p in pool.alive():
            p.end(-9)
        started += len(_replace(pool, study))
    # round 1 starts 2, round 2 the 1 left, rounds 3 and 4 none
    assert started == 3 and pool.replacements_left == 0
    assert len(pool.procs) == 3 and pool.alive() == []


def test_no_replacement_after_the_study_timeout():
    pool = make_pool(count=2)
    assert _replace(pool, waiting_study(4), started=time.monotonic() - 60, timeout=30) == []
    assert pool.replacements_left == 4
    assert len(_replace(pool, waiting_study(4), started=time.monotonic(), timeout=30)) == 2


# -- the parent run's parameters -----------------------------------------------------------------

def _leaves(value: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(value, dict) and path != ("search_space",):
        out: dict[tuple[str, ...], Any] = {}
        for k, v in value.items():
            out.update(_leaves(v, (*path, k)))
        return out
    return {path: value}


def test_study_params_are_the_config_flattened_with_dotted_keys():
    cfg = make_cfg()
    params = runner.study_params(cfg, "f" * 64)
    assert params["fingerprint"] == "f" * 64
    assert params["name"] == "tiny" and params["seed"] == 0
    assert params["data.source"] == "digits" and params["data.n_train"] == 200
    assert params["training.eta"] == 0.5 and params["training.epochs"] == 2
    assert params["network.hidden"] == "[10]"  # lists as JSON text
    assert params["study.sampler.name"] == "random"
    assert params["study.pruner.options.n_startup_trials"] == 1
    assert params["study.timeout"] is None
    assert json.loads(params["search_space"]) == cfg.model_dump(mode="json")["search_space"]
    assert params["version.optuna"] == optuna.__version__ and params["version.mlflow"] == mlflow.__version__
    assert params["version.numpy"] == numpy.__version__


def test_study_params_hold_every_leaf_of_the_config_and_nothing_else():
    cfg = make_cfg()
    params = runner.study_params(cfg, "x")
    leaves = _leaves(cfg.model_dump(mode="json"))
    config_keys = {k for k in params if k != "fingerprint" and not k.startswith("version.")}
    assert config_keys == {".".join(path) for path in leaves}
    for path, value in leaves.items():
        got = params[".".join(path)]
        assert got == (json.dumps(value) if isinstance(value, (list, dict)) else value), path
    assert all(v is None or isinstance(v, (str, int, float, bool)) for v in params.values())


# -- prepare -----------------------------------------------------------------------------------

def test_prepare_without_tracking_creates_the_study_and_its_budget_once(scratch):
    cfg = make_cfg(n_trials=3)
    loc = Locations(storage=f"sqlite:///{scratch / 'optuna.db'}", tracking_uri=f"sqlite:///{scratch / 'mlflow.db'}")
    prep = runner.prepare(cfg, loc, tracking=False)
    assert (prep.name, prep.tracker, prep.parent_run_id) == ("tiny", None, None)
    study = optuna.load_study(study_name="tiny", storage=loc.storage)
    assert [t.state.name for t in study.trials] == ["WAITING"] * 3
    assert study.user_attrs[names.STUDY_N_TRIALS] == 3
    assert study.user_attrs[names.STUDY_FINGERPRINT] == cfg.fingerprint()
    again = runner.prepare(cfg, loc, tracking=False)  # a second launcher: same study, nothing added
    assert again.name == "tiny"
    assert len(optuna.load_study(study_name="tiny", storage=loc.storage).trials) == 3
    assert not (scratch / "mlflow.db").exists()


def test_prepare_checks_the_data_before_it_creates_a_study(scratch):
    data = copy.deepcopy(CONFIG)
    data["data"] = {"source": "mnist", "path": str(scratch / "no-such-dir"), "n_train": 100, "n_eval": 10}
    cfg = parse_config(data)
    loc = Locations(storage=f"sqlite:///{scratch / 'optuna.db'}", tracking_uri=f"sqlite:///{scratch / 'mlflow.db'}")
    with pytest.raises(DatasetError):
        runner.prepare(cfg, loc, tracking=False)
    assert list(scratch.iterdir()) == []


def test_report_passes_counts_best_and_total():
    calls: list[tuple] = []
    study = waiting_study(2)
    runner._report(study, lambda *a: calls.append(a), 5)
    assert calls[-1] == ({"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, "RUNNING": 0, "WAITING": 2, "RETRIED": 0}, None, 5)
    study.add_trial(optuna.trial.create_trial(value=0.25, state=optuna.trial.TrialState.COMPLETE))
    study.add_trial(optuna.trial.create_trial(value=0.75, state=optuna.trial.TrialState.COMPLETE))
    runner._report(study, lambda *a: calls.append(a), 5)
    counts, best, total = calls[-1]
    assert counts["COMPLETE"] == 2 and counts["WAITING"] == 2 and best == 0.75 and total == 5


# -- one real sweep (spawns a worker process) --------------------------------------------------------

@pytest.mark.slow
def test_run_sweep_with_one_worker_runs_the_budget_and_restores_the_launcher(scratch, monkeypatch):
    cfg = make_cfg(n_trials=2, workers=1, pruner={"name": "none"})
    loc = Locations(storage=f"sqlite:///{scratch / 'optuna.db'}", tracking_uri=f"sqlite:///{scratch / 'mlflow.db'}")
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    handler_before = signal.getsignal(signal.SIGTERM)
    progress: list[tuple] = []

    summary = runner.run_sweep(cfg, loc, tracking=False, progress=lambda *a: progress.append(a),
                               poll_interval=0.2)

    study = optuna.load_study(study_name="tiny", storage=loc.storage)
    trials = study.trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert all(len(t.intermediate_values) == 2 for t in trials)
    assert all(set(t.params) == {"eta", "hidden"} for t in trials)
    assert summary.counts == {"COMPLETE": 2, "PRUNED": 0, "FAIL": 0, "RUNNING": 0, "WAITING": 0, "RETRIED": 0}
    assert summary.budget == 2
    best = max(trials, key=lambda t: t.value)
    assert (summary.best_value, summary.best_trial, summary.best_params) == (best.value, best.number, best.params)
    workers = {t.user_attrs[names.TRIAL_WORKER] for t in trials}
    assert len(workers) == 1 and not workers.pop().endswith(f":{os.getpid()}"), "trials run in a worker process"
    assert summary.worker_deaths == [] and not summary.interrupted
    assert not summary.storage_unavailable and not summary.tracking_unavailable
    assert summary.parent_run_id is None and not (scratch / "mlflow.db").exists()
    assert progress and progress[-1] == (summary.counts, summary.best_value, 2)
    # the launcher's process is as it was: BLAS variables, matplotlib's backend, signal handlers
    assert os.environ["OMP_NUM_THREADS"] == "7" and "OPENBLAS_NUM_THREADS" not in os.environ
    assert "MPLBACKEND" not in os.environ
    assert signal.getsignal(signal.SIGTERM) is handler_before


def test_warm_up_imports_in_a_background_thread_at_the_lowest_priority(tmp_path):
    """The launcher's warm-up: the modules end up imported, by a daemon thread of nice 19 (the workers keep the
    cores), and a module that cannot be imported is skipped without an error. In a fresh interpreter, so that
    the module is not imported yet."""
    import subprocess
    import sys

    (tmp_path / "probe_mod.py").write_text(
        "import os, threading\n"
        "NICE = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())\n"
        "THREAD = threading.current_thread().name\n"
        "DAEMON = threading.current_thread().daemon\n")
    code = ("import os, sys; sys.path.insert(0, sys.argv[1]); from sweeps.engine.runner import warm_up; "
            "assert 'probe_mod' not in sys.modules; "
            "t = warm_up(('no_such_module_xyz', 'probe_mod')); t.join(60); assert not t.is_alive(); "
            "import probe_mod; print(probe_mod.NICE - os.getpriority(os.PRIO_PROCESS, 0), probe_mod.THREAD, "
            "probe_mod.DAEMON, 'no_such_module_xyz' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    raised, name, daemon, bogus = out.stdout.split()
    assert int(raised) > 0 and name == "sweeps-warm-up" and daemon == "True" and bogus == "False"
