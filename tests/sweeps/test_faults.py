"""Faults injected into real sweeps: PostgreSQL study, a real ``mlflow server``, several launchers.

Every test ends with the sweep-end invariant (:func:`assert_sweep_invariant`): no trial RUNNING or
WAITING; exactly ``n_trials`` finished trials that count (lost trials that were retried do not);
every FAIL trial has a reason; at most one MLflow child run per trial attempt, one for every trial
that trained, none RUNNING, each with ``sweeps.state`` and ``sweeps.reason``; every completed trial
has every metric at every epoch; the counted trials' parameters are pairwise distinct.

Needs PostgreSQL on 127.0.0.1:5432 (skipped with a reason without it; a failure with
``SWEEPS_REQUIRE_SERVICES=1``, as in CI). Marked ``slow``: ``pytest -m "not slow"`` skips them.
Timings measured here are printed (``-s``) and collected in docs/sweeps.md (the faults table).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from servicekit import (
    BackendTerminator,
    MlflowServer,
    StallingProxy,
    database_name,
    pg_database,
    process_tree,
    wait_until,
)

from nncore.records import metric_names

pytestmark = [pytest.mark.slow, pytest.mark.services]

optuna = pytest.importorskip("optuna")
BIN = Path(sys.executable).parent
N_METRICS = len(metric_names(2))  # keys of every epoch >= 1 of a net with one hidden layer


# -- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tracking(tmp_path_factory) -> Any:
    """One ``mlflow server`` on a PostgreSQL backend store for the module; (server, backend URL)."""
    tmp = tmp_path_factory.mktemp("mlflow")
    with pg_database("sweeps_faults_mlflow") as backend:
        with MlflowServer(backend, tmp / "artifacts", tmp / "server.log") as server:  # started on enter
            yield server, backend


@pytest.fixture
def study_db() -> Any:
    with pg_database("sweeps_faults_optuna") as url:
        yield url


def config(name: str, *, n_trials: int, epochs: int, workers: int = 2, sampler: str = "random",
           n_train: int = 1500, search_space: dict | None = None, study: dict | None = None) -> dict:
    return {
        "name": name, "seed": 7,
        "data": {"source": "digits", "n_train": n_train, "n_eval": 297},
        "network": {"hidden": [10]},
        "training": {"epochs": epochs, "eta": 0.5, "batch_size": 10, "lmbda": 1.0},
        "objective": {"metric": "eval/accuracy", "direction": "maximize"},
        "search_space": search_space or {"eta": {"type": "float", "low": 0.05, "high": 2.0, "log": True},
                                         "lmbda": {"type": "float", "low": 0.01, "high": 5.0, "log": True}},
        "study": {"n_trials": n_trials, "sampler": {"name": sampler}, "pruner": {"name": "none"}, "workers": workers,
                  "heartbeat_interval": 1, "heartbeat_grace": 4, **(study or {})},
    }


class Sweep:
    """A sweep's files and launchers in one directory (a "machine"), talking to the shared services."""

    def __init__(self, root: Path, cfg: dict, storage: str, tracking_uri: str | None,
                 mlflow_yml: dict | None = None) -> None:
        self.root, self.cfg, self.storage, self.tracking_uri = root, cfg, storage, tracking_uri
        self.name = cfg["name"]
        self.path = root / "sweep.yaml"
        self.path.write_text(yaml.safe_dump(cfg))
        (root / "mlflow.yml").write_text(yaml.safe_dump({"flush_interval_s": 0.5, "request_timeout_s": 2,
                                                         "tracking_outage_s": 120, **(mlflow_yml or {})}))
        self.procs: list[subprocess.Popen] = []

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SWEEPS_"))}
        env.update(SWEEPS_STORAGE=self.storage, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
        if self.tracking_uri:
            env["MLFLOW_TRACKING_URI"] = self.tracking_uri
        return env

    def launch(self, *args: str, tag: str = "") -> subprocess.Popen:
        cwd = self.root / f"machine{len(self.procs)}{tag}"
        cwd.mkdir()
        (cwd / "mlflow.yml").write_text((self.root / "mlflow.yml").read_text())
        log = open(cwd / "launcher.log", "w")  # noqa: SIM115 - closed when the process is reaped
        extra = [] if self.tracking_uri else ["--no-tracking"]
        proc = subprocess.Popen([str(BIN / "sweeps"), "run", str(self.path), "-q", "--no-artifacts", *extra, *args],
                                cwd=cwd, env=self.env(), stdout=log, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        proc.log_path = cwd / "launcher.log"  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def log(self, proc: subprocess.Popen) -> str:
        return proc.log_path.read_text(errors="replace")[-6000:]  # type: ignore[attr-defined]

    def wait(self, proc: subprocess.Popen, timeout: float = 240) -> int:
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"launcher still running after {timeout} s:\n{self.log(proc)}")

    def kill_all(self) -> None:
        for proc in self.procs:
            for pid in [proc.pid, *process_tree(proc.pid)]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait(timeout=30)

    def study(self) -> Any:
        """The study, read through one storage without a connection pool: the tests poll this many times a
        second, and an engine per call (a URL passed to ``load_study``) kept a PostgreSQL connection each
        until garbage collection, enough to exhaust the server's ``max_connections`` in a long wait."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if getattr(self, "_storage", None) is None:
            from sqlalchemy.pool import NullPool

            self._storage = optuna.storages.RDBStorage(self.storage, engine_kwargs={"poolclass": NullPool})
        return optuna.load_study(study_name=self.name, storage=self._storage)

    def workers(self, proc: subprocess.Popen) -> list[int]:
        out = []
        for pid in process_tree(proc.pid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"multiprocessing.spawn" in cmd and b"resource_tracker" not in cmd:
                out.append(pid)
        return out

    def trial_in_state(self, number: int, state: str) -> Any:
        """Trial ``number`` if it is in ``state`` now, else None."""
        return next((t for t in self.study().trials if t.number == number and t.state.name == state), None)

    def victim(self) -> tuple[Any, int]:
        """A trial running with 2 epochs reported, and the PID of the worker that runs it."""
        trial = wait_until(lambda: next(iter(self.running_with_epochs(2)), None), 90, "a running trial")
        return trial, int(trial.user_attrs["worker"].rsplit(":", 1)[1])

    def running_with_epochs(self, min_epochs: int = 1) -> list[Any]:
        """RUNNING trials with at least ``min_epochs`` reported ([] while the launcher creates the study)."""
        try:
            study = self.study()
        except KeyError:  # "Record does not exist": not created yet
            return []
        return [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                if len(t.intermediate_values) >= min_epochs]


@pytest.fixture
def sweeps_dir(tmp_path: Path) -> Any:
    made: list[Sweep] = []

    def make(*args: Any, **kwargs: Any) -> Sweep:
        root = tmp_path / f"sweep{len(made)}"
        root.mkdir()
        sweep = Sweep(root, *args, **kwargs)
        made.append(sweep)
        return sweep

    yield make
    for sweep in made:
        sweep.kill_all()


# -- the invariant ------------------------------------------------------------------------------

def assert_sweep_invariant(sweep: Sweep, n_trials: int, *, backend: str | None, distinct: bool = True) -> dict:
    """The sweep-end invariant (module docstring); returns facts for the test to report."""
    from sweeps import names
    from sweeps.study.budget import retried_numbers

    study = sweep.study()
    trials = study.get_trials(deepcopy=False)
    states = {t.number: t.state.name for t in trials}
    assert not [n for n, s in states.items() if s in ("RUNNING", "WAITING")], states
    retried = retried_numbers(trials)
    counted = [t for t in trials if t.number not in retried]
    assert len(counted) == n_trials, (len(counted), states, sorted(retried))
    for t in trials:
        if t.state.name == "FAIL":
            assert t.user_attrs.get(names.TRIAL_REASON), (t.number, t.user_attrs)
        if t.number in retried:
            reason = t.user_attrs["reason"]  # lost to a fault, or stopped by a signal: never the trial's own end
            assert t.state.name == "FAIL" and (names.is_infrastructure_failure(reason)
                                               or reason.startswith(names.REASON_INTERRUPTED)), (t.number, t.user_attrs)
    if distinct:
        points = [tuple(sorted(t.params.items())) for t in counted]
        assert len(set(points)) == len(points), "two counted trials share their parameters"
    facts = {"trials": len(trials), "retried": len(retried), "failed": sum(s == "FAIL" for s in states.values())}
    if backend is None:
        return facts
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=backend)
    exp = client.get_experiment_by_name(f"sweeps/{sweep.name}")
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    children = [r for r in runs if r.data.tags.get(names.TAG_ROLE) == "trial"]
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"], "a run is still RUNNING"
    by_trial: dict[int, Any] = {}
    for r in children:
        number = int(r.data.tags[names.TAG_TRIAL_NUMBER])
        assert number not in by_trial, f"two runs for trial {number}"
        assert number in states, number
        by_trial[number] = r
        assert r.data.tags.get(names.TAG_STATE) and r.data.tags.get(names.TAG_REASON), (number, r.data.tags)
    for t in trials:
        run_id = t.user_attrs.get(names.TRIAL_RUN)
        if t.state.name in ("COMPLETE", "PRUNED"):
            assert run_id is not None and by_trial[t.number].info.run_id == run_id
        if run_id is not None:
            assert by_trial[t.number].info.run_id == run_id
            assert by_trial[t.number].data.tags[names.TAG_STATE] == t.state.name, (t.number, t.state)
    from sweeps import query

    hist = query.history(sweep.name, tracking_uri=backend, experiment_name=f"sweeps/{sweep.name}", method="sql")
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    for t in complete:
        epochs = len(t.intermediate_values)
        rows = hist[hist["trial"] == t.number]
        trained = rows[rows["epoch"] >= 1]  # epoch 0 (the initial weights) holds only the keys defined there
        assert len(trained) == N_METRICS * epochs, (t.number, len(trained), epochs)
        assert set(rows["epoch"]) == set(range(0, epochs + 1))
        acc = trained[trained["metric"] == "eval/accuracy"].set_index("epoch")["value"].to_dict()
        assert acc == pytest.approx(t.intermediate_values)
    facts["longest_gap_s"] = _longest_epoch_gap(client, [by_trial[t.number].info.run_id for t in complete])
    return facts


def _longest_epoch_gap(client: Any, run_ids: list[str]) -> float:
    """Longest wait between two consecutive epochs of one run, from the metrics' own timestamps."""
    gap = 0.0
    for run_id in run_ids:
        stamps = sorted(m.timestamp for m in client.get_metric_history(run_id, "eval/accuracy"))
        gap = max([gap, *((b - a) / 1000 for a, b in zip(stamps, stamps[1:]))])
    return gap


def report(what: str, **facts: Any) -> None:
    print(f"\n[fault] {what}: " + ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in facts.items()))


# -- every trial is a new point -------------------------------------------------------------------

@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_two_launchers_of_two_workers_draw_distinct_points(sweeps_dir, study_db, tracking, sampler) -> None:
    server, backend = tracking
    n = 12
    sweep = sweeps_dir(config(f"distinct-{sampler}", n_trials=n, epochs=2, n_train=300, sampler=sampler,
                              study={"sampler": {"name": sampler, "options": {"n_startup_trials": 4}}
                                     if sampler == "tpe" else {"name": sampler}}), study_db, server.url)
    launchers = [sweep.launch("--workers", "2") for _ in range(2)]
    codes = [sweep.wait(p) for p in launchers]
    assert codes == [0, 0], [sweep.log(p) for p in launchers]
    facts = assert_sweep_invariant(sweep, n, backend=backend)
    assert facts["retried"] == 0
    workers = {t.user_attrs["worker"] for t in sweep.study().trials}
    assert len(workers) >= 3, workers  # the trials really were spread over the launchers' workers


def test_grid_runs_every_point_once_with_several_launchers(sweeps_dir, study_db) -> None:
    grid = {"eta": {"type": "categorical", "choices": [0.5, 1.0]},
            "lmbda": {"type": "categorical", "choices": [0.1, 1.0, 5.0, 10.0]}}
    sweep = sweeps_dir(config("grid8", n_trials=20, epochs=2, n_train=300, sampler="grid", search_space=grid),
                       study_db, None)
    launchers = [sweep.launch("--workers", "3"), sweep.launch("--workers", "1")]
    assert [sweep.wait(p) for p in launchers] == [0, 0], [sweep.log(p) for p in launchers]
    assert_sweep_invariant(sweep, 8, backend=None)  # n_trials 20 > 8 points: the budget is the grid
    points = sorted((t.params["eta"], t.params["lmbda"]) for t in sweep.study().trials)
    assert points == sorted((e, lm) for e in (0.5, 1.0) for lm in (0.1, 1.0, 5.0, 10.0))


def test_resume_adds_new_points(sweeps_dir, study_db) -> None:
    sweep = sweeps_dir(config("resume", n_trials=4, epochs=2, n_train=300, workers=2), study_db, None)
    assert sweep.wait(sweep.launch()) == 0
    first = {tuple(sorted(t.params.items())) for t in sweep.study().trials}
    p = sweep.launch("--n-trials", "8")
    assert sweep.wait(p) == 0, sweep.log(p)
    assert_sweep_invariant(sweep, 8, backend=None)
    later = {tuple(sorted(t.params.items())) for t in sweep.study().trials} - first
    assert len(later) == 4


# -- faults ---------------------------------------------------------------------------------------

def test_sigkill_of_a_worker(sweeps_dir, study_db, tracking) -> None:
    server, backend = tracking
    n = 6
    sweep = sweeps_dir(config("sigkill", n_trials=n, epochs=60), study_db, server.url)
    proc = sweep.launch()
    trial, victim = sweep.victim()
    assert victim in sweep.workers(proc)
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    failed = wait_until(lambda: sweep.trial_in_state(trial.number, "FAIL"), 30, "the killed worker's trial to fail")
    recovery = time.monotonic() - killed_at
    code = sweep.wait(proc)
    assert code == 4, sweep.log(proc)  # reported: a worker died
    assert "killed by SIGKILL" in sweep.log(proc)
    assert failed.user_attrs["reason"].startswith("lost: worker died")
    facts = assert_sweep_invariant(sweep, n, backend=backend)
    assert facts["retried"] == 1
    report("SIGKILL of a worker", lost=0, repeated=0, retried=facts["retried"], fault_to_fail_s=recovery)


def test_sigstop_past_the_grace_then_sigcont(sweeps_dir, study_db, tracking) -> None:
    server, backend = tracking
    n = 6
    sweep = sweeps_dir(config("sigstop", n_trials=n, epochs=80), study_db, server.url)
    proc = sweep.launch()
    trial, victim = sweep.victim()
    stopped_at = time.monotonic()
    os.kill(victim, signal.SIGSTOP)
    try:
        failed = wait_until(lambda: sweep.trial_in_state(trial.number, "FAIL"), 60,
                            "the stopped worker's trial to be failed by the heartbeat")
        recovery = time.monotonic() - stopped_at
    finally:
        os.kill(victim, signal.SIGCONT)
    code = sweep.wait(proc)
    assert code == 0, sweep.log(proc)  # the stopped worker went on: nothing died
    assert "dropped" in sweep.log(proc)
    assert failed.user_attrs["reason"] == "lost: its worker stopped sending heartbeats for longer than the grace " \
                                          "period (killed, stopped, or cut off from the study's storage)"
    facts = assert_sweep_invariant(sweep, n, backend=backend)
    assert facts["retried"] == 1
    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri=backend).get_run(failed.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["sweeps.reason"].startswith("abandoned")
    report("SIGSTOP past the grace", lost=0, repeated=0, retried=facts["retried"], fault_to_fail_s=recovery)


def test_tracking_server_killed_and_restarted(sweeps_dir, study_db, tracking) -> None:
    server, backend = tracking
    n = 8
    sweep = sweeps_dir(config("server-down", n_trials=n, epochs=100), study_db, server.url)
    proc = sweep.launch()
    wait_until(lambda: sweep.running_with_epochs(2), 90, "running trials")
    down_at = time.monotonic()
    server.kill()
    wait_until(lambda: time.monotonic() - down_at > 5, 30, "5 s of outage")
    server.restart()
    outage = time.monotonic() - down_at
    code = sweep.wait(proc)
    assert code == 0, sweep.log(proc)
    facts = assert_sweep_invariant(sweep, n, backend=backend)
    assert facts["failed"] == 0, "an outage shorter than tracking_outage_s fails no trial"
    report("tracking server killed and restarted", outage_s=outage, lost=0, failed=facts["failed"],
           longest_epoch_gap_s=facts["longest_gap_s"])


def test_hung_tracking_server(sweeps_dir, study_db, tracking) -> None:
    server, backend = tracking
    n = 8
    with StallingProxy("127.0.0.1", server.port) as proxy:
        sweep = sweeps_dir(config("server-hung", n_trials=n, epochs=100), study_db, proxy.url,
                           mlflow_yml={"request_timeout_s": 2})
        proc = sweep.launch()
        wait_until(lambda: sweep.running_with_epochs(2), 90, "running trials")
        proxy.stall()
        stalled_at = time.monotonic()
        wait_until(lambda: time.monotonic() - stalled_at > 15, 30, "15 s of a hung server")
        proxy.resume()
        code = sweep.wait(proc)
    assert code == 0, sweep.log(proc)
    facts = assert_sweep_invariant(sweep, n, backend=backend)
    assert facts["failed"] == 0
    # a hung server costs one request timeout (2 s) per try, not the 15 s it hung (nor MLflow's minutes)
    assert facts["longest_gap_s"] < 9.0, facts
    report("hung tracking server (15 s)", lost=0, failed=facts["failed"], longest_epoch_gap_s=facts["longest_gap_s"])


def test_postgres_backends_terminated_for_15_s(sweeps_dir, study_db, tracking) -> None:
    server, backend = tracking
    n = 10
    sweep = sweeps_dir(config("pg-drops", n_trials=n, epochs=60), study_db, server.url)
    proc = sweep.launch()
    wait_until(lambda: sweep.running_with_epochs(1), 90, "running trials")
    with BackendTerminator(database_name(study_db), interval=0.25, duration=15.0) as killer:
        killer.join()
    assert killer.terminated > 10 and killer.error is None, (killer.terminated, killer.error)
    code = sweep.wait(proc)
    assert code == 0, sweep.log(proc)
    facts = assert_sweep_invariant(sweep, n, backend=backend)
    report("PostgreSQL backends terminated every 0.25 s for 15 s", backends_terminated=killer.terminated,
           retried=facts["retried"], failed=facts["failed"])


def test_sigterm_of_a_launcher_then_resume(sweeps_dir, study_db, tracking) -> None:
    server, backend = tracking
    n = 6
    sweep = sweeps_dir(config("sigterm", n_trials=n, epochs=80), study_db, server.url)
    proc = sweep.launch()
    wait_until(lambda: sweep.running_with_epochs(2), 90, "running trials")
    os.kill(proc.pid, signal.SIGTERM)
    assert sweep.wait(proc, 90) == 130, sweep.log(proc)
    study = sweep.study()
    interrupted = [t for t in study.trials if t.state.name == "FAIL"]
    assert interrupted and all(t.user_attrs["reason"].startswith("interrupted") for t in interrupted)
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=backend)
    for t in interrupted:
        if "mlflow_run_id" in t.user_attrs:
            assert client.get_run(t.user_attrs["mlflow_run_id"]).info.status == "KILLED"
    resumed = sweep.launch()
    assert sweep.wait(resumed) == 0, sweep.log(resumed)
    facts = assert_sweep_invariant(sweep, n, backend=backend)
    assert facts["retried"] == len(interrupted)  # each stopped trial's point was put back and run on resume
