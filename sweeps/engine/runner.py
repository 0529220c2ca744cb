"""The launcher: prepare a study, run it with N worker processes on this machine, report honestly.

The launching process validates everything and creates (or resumes) the study and its budget
(:mod:`sweeps.study.budget`) before any worker starts; it then starts ``workers`` processes (never
threads: NumPy training is CPU-bound), each with one BLAS thread, which take enqueued trials
until none is left (:mod:`sweeps.engine.worker`), and prepares the MLflow store and the study's parent
run while they import and load data: no worker touches MLflow before the launcher has created
the store. ``n_trials`` is the study's total: re-running a sweep resumes it and runs only what
is missing.

While the workers run, the launcher watches them:

* a worker that dies (SIGKILL, a crash) has its running trial failed at once ("lost: worker
  died ...") and retried (:mod:`sweeps.engine.reconcile`), and a replacement worker is started while
  trials are waiting (at most ``2 x workers`` replacements);
* every ``heartbeat_interval`` seconds it fails heartbeat-stale trials (a stopped worker's), so a
  study with one launcher recovers too;
* SIGINT/SIGTERM are forwarded to the workers: a worker interrupted mid-trial marks the trial
  FAIL (reason ``interrupted``) and its MLflow run KILLED, then exits; workers still alive after
  60 s are killed.

At the end it repairs what is left (:func:`sweeps.engine.reconcile.reconcile`) and closes the parent run.
:class:`SweepSummary` says what happened, including worker deaths and unreachable stores, which
the CLI turns into exit codes.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import optuna

from sweeps import names
from sweeps.config import SweepConfig
from sweeps.engine.data import load_data
from sweeps.engine.reconcile import reconcile
from sweeps.engine.worker import (EXIT_STORAGE_UNAVAILABLE, EXIT_TRACKING_REFUSED, EXIT_TRACKING_UNAVAILABLE,
                                  run_worker)
from sweeps.report.closing import close_parent
from sweeps.stores import (Locations, check_tracking_server, mlflow_http_settings, refused_message, restore_environment,
                           set_environment)
from sweeps.study import lost as repair
from sweeps.study.budget import counts_of, open_study_storage, prepare_study, study_result
from sweeps.study.samplers import build_pruner, build_sampler
from sweeps.tracking.tracker import Tracker, package_versions

_log = logging.getLogger("sweeps.runner")

BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
#: Seconds the launcher waits for interrupted workers before it kills them.
INTERRUPT_KILL_AFTER = 60.0

#: Imported in the background while the workers train, when the sweep ends with artifacts: scikit-learn's
#: forests (Optuna's parameter-importance plot fits one; importing them took ~0.8 s of the ~3 s the launcher
#: spends drawing and logging at the end). Never matplotlib: its backend is read from the environment at
#: import, and the launcher sets MPLBACKEND=Agg for its workers only.
WARM_MODULES = ("sklearn.ensemble",)


def warm_up(modules: tuple[str, ...] = WARM_MODULES) -> threading.Thread:
    """Import ``modules`` in a daemon thread at the lowest CPU priority (Linux: the thread's nice value 19), so
    that it uses a core only when the workers leave one idle; an import that fails is left to its real use."""
    import importlib

    def run() -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):  # pragma: no cover - not Linux: a normal-priority thread
            pass
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the end of the sweep imports it again and reports what fails
                pass

    thread = threading.Thread(target=run, name="sweeps-warm-up", daemon=True)
    thread.start()
    return thread


@dataclass
class SweepSummary:
    study_name: str
    counts: dict[str, int] = field(default_factory=dict)
    budget: int | None = None
    best_value: float | None = None
    best_params: dict[str, Any] | None = None
    best_trial: int | None = None
    interrupted: bool = False
    parent_run_id: str | None = None
    #: One line per worker that died abnormally (signal or crash).
    worker_deaths: list[str] = field(default_factory=list)
    #: Set when a worker stopped because the study's storage or the tracking store stayed unreachable.
    storage_unavailable: bool = False
    tracking_unavailable: bool = False
    #: The one line (:func:`sweeps.stores.refused_message`) when a worker stopped because the tracking server
    #: refused its credentials (HTTP 401/403); None otherwise.
    tracking_refused: str | None = None


# -- the parent run ------------------------------------------------------------------------

def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and prefix != "search_space":
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, (dict, list)) else value


def study_params(cfg: SweepConfig, fingerprint: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _flat("", cfg.model_dump(mode="json"), out)
    out["fingerprint"] = fingerprint
    out.update(package_versions())
    return out


@dataclass
class Prepared:
    """A study ready for workers: its name, the study, the tracker and the parent run id."""

    cfg: SweepConfig
    name: str
    study: optuna.Study
    tracker: Tracker | None
    parent_run_id: str | None


def prepare_tracking(cfg: SweepConfig, loc: Locations, name: str, study: optuna.Study,
                     storage: Any) -> tuple[Tracker, str]:
    """Create the MLflow store, experiment and parent run (or find them); close runs left RUNNING."""
    tracker = Tracker(loc.tracking_uri, loc.experiment_name(name), loc.artifact_location,
                      flush_interval=loc.flush_interval_s, outage_s=loc.tracking_outage_s)
    parent_run_id = study.user_attrs.get(names.STUDY_PARENT_RUN)
    if parent_run_id is not None:
        try:
            tracker.client.update_run(parent_run_id, status=names.RUN_RUNNING)
        except Exception:  # noqa: BLE001 - the run is gone (another tracking store): make a new one
            parent_run_id = None
    if parent_run_id is None:
        parent_run_id = tracker.study_run(name, study_params(cfg, cfg.fingerprint()))
        study.set_user_attr(names.STUDY_PARENT_RUN, parent_run_id)
    reconcile(study, storage, tracker, grace=cfg.study.heartbeat_grace, max_retries=cfg.study.max_retries)
    return tracker, parent_run_id


def _check_and_open_study(cfg: SweepConfig, loc: Locations, *, new_study: bool,
                          tracking: bool) -> tuple[str, optuna.Study, Any]:
    """Fail on unreadable data or an unreachable tracking server, then create or resume the study; return its
    name, the study and the launcher's one storage (one database connection for all the launcher does)."""
    load_data(cfg.data, cfg.seed)  # fails now (missing file, bad checksum) rather than in every worker
    if tracking:
        check_tracking_server(loc.tracking_uri, timeout=loc.request_timeout_s)
    build_sampler(cfg)  # a bad sampler or pruner option is refused before the storage is created
    build_pruner(cfg)
    storage = open_study_storage(cfg, loc.storage, role="launcher")
    name, study = prepare_study(cfg, loc.storage, new_study=new_study, storage=storage)
    return name, study, storage


def prepare(cfg: SweepConfig, loc: Locations, *, new_study: bool = False, tracking: bool = True) -> Prepared:
    """Everything that must exist before trials run: data check, study and budget, MLflow store and parent run.

    Idempotent: a second launcher (or ``sweeps prepare`` run first, as docker-compose does) finds the
    study and its parent run (the run id is a study user attribute) and reuses them.
    """
    name, study, storage = _check_and_open_study(cfg, loc, new_study=new_study, tracking=tracking)
    with mlflow_http_settings(loc.request_timeout_s):
        tracker, parent_run_id = prepare_tracking(cfg, loc, name, study, storage) if tracking else (None, None)
    return Prepared(cfg, name, study, tracker, parent_run_id)


# -- worker processes --------------------------------------------------------------------------

def _worker_entry(*args: Any) -> None:
    try:
        code = run_worker(*args)
    except KeyboardInterrupt:
        code = 130
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no interpreter teardown: nothing of MLflow's or Optuna's can block the exit


def _how_it_died(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _Workers:
    """The launcher's worker processes: start, watch, replace, signal."""

    def __init__(self, ctx: Any, args: tuple, count: int, max_replacements: int) -> None:
        self.ctx, self.args, self.count = ctx, args, count
        self.procs: list[Any] = []
        self.seen: set[int] = set()
        self.replacements_left = max_replacements
        self.host = socket.gethostname()

    def start(self, index: int) -> None:
        p = self.ctx.Process(target=_worker_entry, name=f"sweeps-worker-{index}", args=(self.args[0], self.args[1],
                             self.args[2], index, *self.args[3:]))
        p.start()
        self.procs.append(p)

    def alive(self) -> list[Any]:
        return [p for p in self.procs if p.is_alive()]

    def newly_ended(self) -> list[Any]:
        out = [p for p in self.procs if not p.is_alive() and p.pid not in self.seen]
        self.seen.update(p.pid for p in out)
        return out

    def signal_all(self, sig: int) -> None:
        for p in self.alive():
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass

    def wait(self, seconds: float) -> None:
        alive = self.alive()
        if not alive:
            return
        from multiprocessing.connection import wait

        wait([p.sentinel for p in alive], timeout=seconds)


ProgressFn = Callable[[dict[str, int], float | None, int], None]


def run_sweep(cfg: SweepConfig, loc: Locations, *, workers: int | None = None, n_trials: int | None = None,
              new_study: bool = False, tracking: bool = True, artifacts: str | bool | None = None,
              progress: ProgressFn | None = None, poll_interval: float = 1.0) -> SweepSummary:
    """Run (or resume) the study described by ``cfg`` until its budget of trials is done.

    ``artifacts``: ``best`` | ``complete`` | ``all`` | ``none`` (``True``/``False``: ``best``/``none``;
    ``None``: ``loc.trial_artifacts``; see :mod:`sweeps.stores`). MLflow's HTTP settings are bounded while it runs
    (:func:`sweeps.stores.mlflow_http_settings`); the environment is restored afterwards.
    """
    with mlflow_http_settings(loc.request_timeout_s):
        return _run_sweep(cfg, loc, workers=workers, n_trials=n_trials, new_study=new_study, tracking=tracking,
                          artifacts=artifacts, progress=progress, poll_interval=poll_interval)


def _run_sweep(cfg: SweepConfig, loc: Locations, *, workers: int | None, n_trials: int | None, new_study: bool,
               tracking: bool, artifacts: str | bool | None, progress: ProgressFn | None,
               poll_interval: float) -> SweepSummary:
    cfg = cfg.with_overrides(workers=workers, n_trials=n_trials)
    if artifacts is None or artifacts is True:
        artifacts = loc.trial_artifacts if artifacts is None else "best"
    elif artifacts is False:
        artifacts = "none"
    name, study, storage = _check_and_open_study(cfg, loc, new_study=new_study, tracking=tracking)
    summary = SweepSummary(study_name=name)
    tracker: Tracker | None = None
    parent_run_id: str | None = None
    grace, retries = cfg.study.heartbeat_grace, cfg.study.max_retries
    waiting = counts_of(study)[names.STATE_WAITING]
    n_workers = min(cfg.study.workers, waiting)

    ctx = mp.get_context("spawn")
    # inherited by the spawned workers (one BLAS thread each; PNGs, never windows), restored below
    saved_env = set_environment({**{k: "1" for k in BLAS_ENV}, "MPLBACKEND": os.environ.get("MPLBACKEND", "Agg")})
    interrupted = threading.Event()
    previous = {}
    ready, cancelled = ctx.Event(), ctx.Event()
    pool = _Workers(ctx, (cfg.model_dump(mode="json"), loc, name, cfg.study.timeout, tracking, artifacts, ready,
                          cancelled), n_workers, max_replacements=2 * max(n_workers, 1))
    dead: dict[str, str] = {}
    started = time.monotonic()

    def on_signal(signum: int, frame: Any) -> None:
        interrupted.set()
        pool.signal_all(signal.SIGTERM)

    try:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, on_signal)
        for i in range(n_workers):  # workers start (imports, data) while MLflow is prepared below
            pool.start(i)
        try:
            if tracking:
                tracker, parent_run_id = prepare_tracking(cfg, loc, name, study, storage)
                summary.parent_run_id = parent_run_id
        except BaseException:
            cancelled.set()
            ready.set()
            for p in pool.procs:
                p.join(timeout=30)
            raise
        ready.set()
        if tracking and artifacts != "none":
            warm_up()
        kill_at = None
        next_repair = time.monotonic() + cfg.study.heartbeat_interval
        while True:  # ends only after a pass in which no worker is alive: a death is always seen, its
            # trial failed and retried, and a replacement considered before the launcher gives up
            pool.wait(poll_interval)
            any_alive = bool(pool.alive())  # before the ends are collected: a later death waits for the next pass
            for p in pool.newly_ended():
                _on_worker_end(p, pool, summary, dead, interrupted.is_set(), loc.tracking_uri)
            if dead:
                repair.fail_dead_workers(study, storage, dead, retries)
            if time.monotonic() >= next_repair:
                repair.fail_lost(study, storage, grace, retries)
                next_repair = time.monotonic() + cfg.study.heartbeat_interval
            if not interrupted.is_set() and not (summary.storage_unavailable or summary.tracking_unavailable
                                                 or summary.tracking_refused):
                _replace_workers(study, pool, cfg, started)
            if progress is not None:
                _report(study, progress, cfg.study.n_trials)
            if interrupted.is_set():
                kill_at = kill_at or time.monotonic() + INTERRUPT_KILL_AFTER
                if time.monotonic() > kill_at:
                    for p in pool.alive():
                        p.kill()
            if not any_alive and not pool.alive():
                break
        for p in pool.newly_ended():
            _on_worker_end(p, pool, summary, dead, interrupted.is_set(), loc.tracking_uri)
    finally:
        restore_environment(saved_env)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    reconcile(study, storage, tracker, dead, grace=grace, max_retries=retries)
    if progress is not None:
        _report(study, progress, cfg.study.n_trials)
    result = study_result(study)
    summary.counts, summary.budget = result.counts, result.budget
    summary.best_value, summary.best_params, summary.best_trial = result.best_value, result.best_params, \
        result.best_trial
    summary.interrupted = interrupted.is_set()
    if tracker is not None and parent_run_id is not None and not summary.tracking_refused:
        try:
            if not close_parent(study, tracker, parent_run_id, result, interrupted=summary.interrupted,
                                artifacts=artifacts):
                summary.tracking_unavailable = True
        except Exception as err:  # noqa: BLE001 - a tracking store that went away at the very end
            from sweeps.tracking.tracker import is_transient

            if not is_transient(err):
                raise
            summary.tracking_unavailable = True
    return summary


def _on_worker_end(p: Any, pool: _Workers, summary: SweepSummary, dead: dict[str, str], interrupted: bool,
                   tracking_uri: str = "") -> None:
    code = p.exitcode
    if code == EXIT_TRACKING_REFUSED:
        summary.tracking_refused = refused_message(tracking_uri)
    elif code == EXIT_STORAGE_UNAVAILABLE:
        summary.storage_unavailable = True
    elif code == EXIT_TRACKING_UNAVAILABLE:
        summary.tracking_unavailable = True
    elif code not in (0, 130) and not (interrupted and code == -signal.SIGTERM):
        how = _how_it_died(code)
        dead[names.worker_name(p.pid, pool.host)] = how
        summary.worker_deaths.append(f"worker {p.name} (pid {p.pid}) {how}")


def _replace_workers(study: optuna.Study, pool: _Workers, cfg: SweepConfig, started: float) -> None:
    """Start a worker for waiting trials (retries of lost ones) when fewer than ``workers`` run."""
    if cfg.study.timeout is not None and time.monotonic() - started >= cfg.study.timeout:
        return
    missing = pool.count - len(pool.alive())
    if missing <= 0 or pool.replacements_left <= 0:
        return
    waiting = counts_of(study)[names.STATE_WAITING]
    for _ in range(min(missing, waiting, pool.replacements_left)):
        pool.replacements_left -= 1
        pool.start(len(pool.procs))


def _report(study: optuna.Study, progress: ProgressFn, total: int) -> None:
    try:
        best = study.best_value
    except ValueError:
        best = None
    progress(counts_of(study), best, total)

